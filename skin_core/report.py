"""One photo's result as a record: the report the Diagnose page offers for download and the line
`python -m skin_core predict` prints, built in one place so that both say the same things."""
from __future__ import annotations

from datetime import datetime, timezone

from . import NOTICE, quality
from .bundle import MODEL_FILE, Bundle
from .lesion import LesionAnswer
from .predict import Analysis, Answer


def findings(analysis: Analysis, thresholds: dict[str, float]) -> tuple[list[quality.Finding], list[quality.Finding]]:
    """Reasons to read the answer with care (uncertainty, the melanoma threshold, the malignant group, a photo
    the model learnt from), then reasons to distrust the photo itself (its quality, and how unlike the training
    images it is)."""
    answer = quality.prediction_findings(analysis.classes, analysis.probabilities, thresholds)
    if analysis.copy_of:
        answer.append(quality.Finding("seen", f"This photo matches {analysis.copy_of}, one of the photos this model "
                                              "was trained or tuned on (the same picture, perhaps resized, recoloured, "
                                              "flipped or turned, whatever its name): its answer shows how the model "
                                              "works, not how good it is."))
    photo = quality.image_findings(analysis.decoded.rgb) + \
        quality.familiarity_findings(analysis.distance, analysis.distance_limit)
    return answer, photo


def lesion_report(label: str, analysis: Analysis, bundle: Bundle, found) -> dict:
    """Probabilities, the top three, every finding and the model that answered, ready for JSON; `found` is
    findings() of this analysis, computed once by the caller, which shows them too."""
    answer, photo = found
    return {
        "image": label,
        **_answered(analysis, bundle),
        "photo": {"format": analysis.decoded.source_format,       # as the file holds it, before any reduction
                  "size": list(analysis.decoded.source_size or analysis.decoded.size),
                  "notes": analysis.decoded.notes},
        "patient": analysis.patient,          # None: answered from the photo alone
        "model_reads_patient": bundle.patient_head is not None,
        "findings": [{"about": "answer", "code": f.code, "message": f.message} for f in answer]
        + [{"about": "photo", "code": f.code, "message": f.message} for f in photo],
        "notice": NOTICE,
    }


def combined_report(answer: LesionAnswer, patient: dict | None, bundle: Bundle,
                    found: list[quality.Finding]) -> dict:
    """The combined answer for several photos of one lesion (skin_core.lesion), in the same terms as one photo's
    record; each photo's own record is downloaded beside it."""
    return {
        "images": answer.photos,
        "combined_as": "one lesion: the mean of the photos' logits, calibrated as one photo's answer is",
        **_answered(answer, bundle),
        "patient": patient,
        "model_reads_patient": bundle.patient_head is not None,
        "findings": [{"about": "answer", "code": f.code, "message": f.message} for f in found],
        "notice": NOTICE,
    }


def _answered(answer: Answer, bundle: Bundle) -> dict:
    """What any answer's record says: when, which model, the probabilities and how they stand to the thresholds."""
    probabilities = dict(zip(answer.classes, map(float, answer.probabilities)))
    ranked = answer.ranked()
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": bundle.name,
        "model_created": bundle.manifest["created"],
        "model_checksum": bundle.manifest["files"].get(MODEL_FILE),
        "probabilities": answer.as_dict(),
        "top": ranked[0][0],
        "top3": ranked[:3],
        "thresholds": bundle.thresholds,
        "at_or_above_threshold": {code: probabilities[code] >= limit for code, limit in bundle.thresholds.items()
                                  if code in probabilities},
    }
