"""One photo's result as a record: the report the Diagnose page offers for download and the line
`python -m skin_core predict` prints, built in one place so that both say the same things."""
from __future__ import annotations

from datetime import datetime, timezone

from . import NOTICE, quality
from .bundle import MODEL_FILE, Bundle
from .predict import Analysis


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


def lesion_report(label: str, analysis: Analysis, bundle: Bundle, found=None) -> dict:
    """Probabilities, the top three, every finding and the model that answered, ready for JSON; `found` is
    findings() already computed for this analysis (the page shows them too), else they are computed here."""
    answer, photo = found if found is not None else findings(analysis, bundle.thresholds)
    probabilities = dict(zip(analysis.classes, map(float, analysis.probabilities)))
    return {
        "image": label,
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": bundle.name,
        "model_created": bundle.manifest["created"],
        "model_checksum": bundle.manifest["files"].get(MODEL_FILE),
        "probabilities": analysis.as_dict(),
        "top": analysis.ranked()[0][0],
        "top3": analysis.ranked()[:3],
        "thresholds": bundle.thresholds,
        "at_or_above_threshold": {code: probabilities[code] >= limit for code, limit in bundle.thresholds.items()
                                  if code in probabilities},
        "photo": {"format": analysis.decoded.source_format,       # as the file holds it, before any reduction
                  "size": list(analysis.decoded.source_size or analysis.decoded.size),
                  "notes": analysis.decoded.notes},
        "patient": analysis.patient,          # None: answered from the photo alone
        "model_reads_patient": bundle.patient_head is not None,
        "findings": [{"about": "answer", "code": f.code, "message": f.message} for f in answer]
        + [{"about": "photo", "code": f.code, "message": f.message} for f in photo],
        "notice": NOTICE,
    }
