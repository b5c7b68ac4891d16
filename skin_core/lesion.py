"""Several photos of one lesion answered as one.

A dermatologist often takes two or three dermoscopic photos of a lesion. Their answers are combined as the
test-time views of one photo are: the mean of the photos' logits, calibrated as one photo's are. On the
default's HAM10000 validation photos of lesions photographed more than once, that scored balanced accuracy +
macro F1 1.517 against 1.477 for each photo answered alone, and ahead of averaging the photos' probabilities
(run 60 in docs/experiments.md). It is offered only when the user says the photos show one lesion: averaging
photos of different lesions would answer for none of them.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import quality
from .predict import Analysis, Answer, Predictor

SMALLEST = 2


@dataclass
class LesionAnswer(Answer):
    """The combined answer for the photos named in `photos`, in the order given."""
    photos: list[str]


def combine(predictor: Predictor, photos: list[tuple[str, Analysis]]) -> LesionAnswer:
    """One answer for several (label, analysis) pairs of one lesion, all answered by `predictor` with the same
    patient details (the Diagnose page takes one patient at a time)."""
    if len(photos) < SMALLEST:
        raise ValueError(f"A combined answer needs at least {SMALLEST} photos of the lesion; {len(photos)} given.")
    if len({repr(analysis.patient) for _, analysis in photos}) > 1:
        raise ValueError("The photos were answered with different patient details, so they are not one lesion's.")
    logits = np.mean([analysis.logits for _, analysis in photos], axis=0)
    return LesionAnswer(list(predictor.classes), predictor.calibrated(logits[None])[0].astype(np.float64),
                        [label for label, _ in photos])


def findings(answer: LesionAnswer, photos: list[tuple[str, Analysis]], thresholds: dict[str, float],
             photo_findings: list[list[quality.Finding]]) -> list[quality.Finding]:
    """The combined answer's own flags (uncertainty, the melanoma threshold, the malignant group), then a note
    naming the photos that were flagged on their own, whose answers are part of this one."""
    found = quality.prediction_findings(answer.classes, answer.probabilities, thresholds)
    doubtful = [label for (label, _), flags in zip(photos, photo_findings) if flags]
    copies = [label for label, analysis in photos if analysis.copy_of]
    if doubtful:
        found.append(quality.Finding("photos", f"{_listed(doubtful)} {'looks' if len(doubtful) == 1 else 'look'} "
                                               "unlike the dermoscopy images the model learned from (its own "
                                               "answer says why); leave such photos out if they are not good "
                                               "views of the lesion."))
    if copies:
        found.append(quality.Finding("seen", f"{_listed(copies)} {'is a copy' if len(copies) == 1 else 'are copies'} "
                                             "of photos the model was trained or tuned on."))
    return found


def _listed(labels: list[str]) -> str:
    quoted = [f"'{label}'" for label in labels]
    return quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " and " + quoted[-1]
