"""The seven HAM10000 diagnostic classes, in the order every model in this project uses.

The order is part of a bundle's manifest; this list is only the default for new models.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class LesionClass:
    code: str
    name: str
    malignant: bool
    description: str


CLASSES = (
    LesionClass("akiec", "Actinic keratosis / intraepithelial carcinoma", True,
                "Sun-damage lesions (actinic keratoses and Bowen's disease) that can progress to "
                "squamous cell carcinoma; usually treated locally."),
    LesionClass("bcc", "Basal cell carcinoma", True,
                "The most common skin cancer; grows slowly and rarely spreads, but destroys tissue "
                "locally if left untreated."),
    LesionClass("bkl", "Benign keratosis-like lesion", False,
                "Seborrhoeic keratoses, solar lentigines and lichen-planus-like keratoses: common, "
                "harmless growths that can mimic melanoma."),
    LesionClass("df", "Dermatofibroma", False,
                "A firm, harmless nodule of the skin's connective tissue, often on the legs."),
    LesionClass("mel", "Melanoma", True,
                "A malignant tumour of pigment cells; can spread early, so a suspicious lesion needs "
                "prompt assessment by a dermatologist."),
    LesionClass("nv", "Melanocytic nevus", False,
                "A common mole: a benign proliferation of pigment cells, by far the most frequent "
                "lesion in HAM10000."),
    LesionClass("vasc", "Vascular lesion", False,
                "Cherry angiomas, angiokeratomas, pyogenic granulomas and haemorrhage: lesions of "
                "blood vessels, almost always benign."),
)

CLASS_CODES = tuple(c.code for c in CLASSES)
BY_CODE = {c.code: c for c in CLASSES}
MALIGNANT_CODES = tuple(c.code for c in CLASSES if c.malignant)


def full_name(code: str) -> str:
    """The clinical name of a class code, or the code itself for a class we do not know."""
    return BY_CODE[code].name if code in BY_CODE else code
