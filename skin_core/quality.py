"""Measurable reasons to distrust a prediction: the photo looks unlike the training dermoscopy (its
quality here; its content in the model's feature space, skin_core.familiarity), or the model itself is
unsure. Each check is simple enough to explain on the page.

The photo thresholds sit at or below the 1st percentile of the HAM10000 development images, so real
dermoscopy rarely trips them (measured on every fourth development image: 1.7% flagged in all, 1.2% by
the focus check, whose threshold is the 1st percentile by construction).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from . import familiarity
from .classes import MALIGNANT_CODES
from .images import centre_square

MIN_SHORT_SIDE = 120          # HAM10000 copies here are 200x150; far smaller has little detail
MAX_ASPECT = 2.0              # dermatoscope photos are close to 4:3 or square
MIN_CONTRAST = 7.0            # grey-level standard deviation below this is a nearly blank image
MIN_COLOURFULNESS = 4.0       # mean |R-G|+|R-B| below this is a grey-scale picture
DARK, BRIGHT = 25.0, 235.0    # mean grey level outside this range: badly exposed
MIN_SHARPNESS = 11.5          # Laplacian variance at FOCUS_SIDE: the 1st percentile of 1,001 development photos
FOCUS_SIDE = 100              # (every 8th). Judged below the copies' 150 px, a photo enlarged 4x scores within 5%
                              # of itself; a 2-pixel Gaussian blur puts 97% of the photos below, 1 pixel 18%
MIN_SKIN_SHARE = 0.15         # share of pixels where red is at least blue, as in skin under a dermatoscope
UNCERTAIN_TOP = 0.50          # top probability below this ...
UNCERTAIN_MARGIN = 0.15       # ... or a top-2 margin below this: "uncertain"
MALIGNANT_GROUP_HIGH = 0.50
STATISTICS_PIXELS = 60_000    # the colour and exposure statistics are read from at most this many pixels


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian (Pech-Pacheco et al. 2000) of the centre square seen at FOCUS_SIDE pixels.

    Measured below the detail of the training copies, so a large upload and a 200x150 copy of it score
    alike; low means out of focus (or too little detail to judge)."""
    square = Image.fromarray(centre_square(rgb)).convert("L")
    grey = np.asarray(square.resize((FOCUS_SIDE, FOCUS_SIDE), Image.Resampling.BILINEAR), dtype=np.float32)
    return float(ndimage.laplace(grey).var())


@dataclass(frozen=True)
class Finding:
    code: str
    message: str


def image_findings(rgb: np.ndarray) -> list[Finding]:
    """Checks on the photo alone, before trusting any model output."""
    height, width = rgb.shape[:2]
    pixels = rgb.reshape(-1, 3)
    # a regular subsample of at most STATISTICS_PIXELS (about twice a 200x150 training copy) keeps the checks fast
    # on large photos, where a mean or share over every pixel took most of their time; taken before the float copy
    pixels = pixels[:: -(-len(pixels) // STATISTICS_PIXELS)].astype(np.float32)
    r, g, b = pixels.T
    grey = (r + g + b) / 3
    findings = []
    if min(height, width) < MIN_SHORT_SIDE:
        findings.append(Finding("small", f"The photo is only {width}x{height} pixels: it was enlarged for the "
                                         f"model, and with so little detail the answer is less reliable (the sharpest "
                                         f"training photos have {MIN_SHORT_SIDE} pixels or more on the short side)."))
    aspect = max(height, width) / min(height, width)
    if aspect > MAX_ASPECT:
        findings.append(Finding("aspect", f"The photo is {aspect:.1f} times wider than high (or the reverse); "
                                          "dermoscopy photos are close to square, and only the centre square is used."))
    contrast = grey.std()
    if contrast < MIN_CONTRAST:
        findings.append(Finding("uniform", "The photo is nearly uniform: there is no visible lesion."))
    colourfulness = (np.abs(r - g) + np.abs(r - b)).mean()
    if colourfulness < MIN_COLOURFULNESS:
        findings.append(Finding("greyscale", "The photo has no colour; the model learned from colour dermoscopy."))
    level = grey.mean()
    if level < DARK or level > BRIGHT:
        findings.append(Finding("exposure", f"The photo is very {'dark' if level < DARK else 'bright'} "
                                            f"(mean level {level:.0f} of 255)."))
    focus = sharpness(rgb) if min(height, width) >= MIN_SHORT_SIDE and contrast >= MIN_CONTRAST else None
    if focus is not None and focus < MIN_SHARPNESS:
        findings.append(Finding("blur", f"The photo looks out of focus (sharpness {focus:.1f}; 99% of the training "
                                        f"photos score above {MIN_SHARPNESS}). Blur changes the model's answers "
                                        "(Evaluation, Robustness)."))
    skin_share = float((r >= b).mean())
    if colourfulness >= MIN_COLOURFULNESS and skin_share < MIN_SKIN_SHARE:
        findings.append(Finding("colour", f"Only {skin_share:.0%} of the pixels have skin-like colours; "
                                          "this may not be a photo of skin."))
    return findings


def prediction_findings(classes: list[str], probabilities: np.ndarray, thresholds: dict[str, float]) -> list[Finding]:
    """Flags from the calibrated probabilities: uncertainty, the melanoma threshold, the malignant group."""
    probs = dict(zip(classes, map(float, probabilities)))
    ranked = sorted(probs.values(), reverse=True)
    findings = []
    if ranked[0] < UNCERTAIN_TOP or ranked[0] - ranked[1] < UNCERTAIN_MARGIN:
        findings.append(Finding("uncertain", f"Uncertain: the top class has {ranked[0]:.0%} and leads the next by "
                                             f"{ranked[0] - ranked[1]:.0%}. Read the top three together."))
    if "mel" in probs and "mel" in thresholds and probs["mel"] >= thresholds["mel"]:
        findings.append(Finding("melanoma", f"Melanoma probability {probs['mel']:.1%} is at or above the model's "
                                            f"melanoma threshold ({thresholds['mel']:.1%})."))
    malignant = sum(probs.get(c, 0.0) for c in MALIGNANT_CODES)
    if malignant >= MALIGNANT_GROUP_HIGH:
        findings.append(Finding("malignant", f"The malignant group (melanoma, basal cell carcinoma, actinic keratosis) "
                                             f"totals {malignant:.0%}."))
    return findings


def familiarity_findings(distance: float | None, limit: float | None) -> list[Finding]:
    """A flag when the model's features of the photo lie farther from its training images than those of
    nearly all held-out dermoscopy photos (skin_core.familiarity); nothing when the bundle cannot tell."""
    if distance is None or limit is None or not familiarity.unlike(distance, limit):
        return []
    return [Finding("unfamiliar", "The model finds this photo unlike the images it learned from: in its feature "
                                  "space it lies farther from them than 99% of held-out dermoscopy photos do. It may "
                                  "not be a dermoscopic photo of a skin lesion, and the probabilities may mean little.")]
