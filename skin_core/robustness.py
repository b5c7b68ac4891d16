"""How a model's held-out figures move when the photographs change the way real uploads differ.

HAM10000's images come from a few dermatoscopes, framed by the same people; a clinician's upload may be
sharper, framed tighter, turned, recompressed, lit or coloured differently. Each condition here alters
the decoded picture (before the model's own preparation) with one Pillow operation, so the report says
how much each kind of difference costs, and how often the top diagnosis changes.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter
from sklearn.metrics import balanced_accuracy_score, f1_score

from . import images

ROBUSTNESS_FILE = "robustness.json"   # written beside a bundle by scripts/robustness.py


@dataclass(frozen=True)
class Condition:
    name: str
    description: str
    alter: Callable[[Image.Image], Image.Image]


def _sharper_crop(image: Image.Image) -> Image.Image:
    """The centre square as a 224x224 crop, upsampled and sharpened: what a sharper camera sends."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    square = image.crop((left, top, left + side, top + side)).resize((224, 224), Image.Resampling.LANCZOS)
    return square.filter(ImageFilter.UnsharpMask(radius=2, percent=80, threshold=2))


def _zoom(factor: float) -> Callable[[Image.Image], Image.Image]:
    def alter(image: Image.Image) -> Image.Image:
        width, height = round(image.width / factor), round(image.height / factor)
        left, top = (image.width - width) // 2, (image.height - height) // 2
        return image.crop((left, top, left + width, top + height))
    return alter


CONDITIONS = (
    Condition("as stored", "the held-out photographs unchanged", lambda image: image),
    Condition("sharper 224x224 crop", "centre square upsampled to 224x224 (Lanczos) and sharpened", _sharper_crop),
    Condition("framed tighter", "central 80% of each side (1.25x zoom)", _zoom(1.25)),
    Condition("quarter turn", "rotated by 90 degrees", lambda image: image.transpose(Image.Transpose.ROTATE_90)),
    Condition("JPEG quality 40", "re-encoded as a low-quality JPEG", lambda image: images.jpeg_resaved(image, 40)),
    Condition("darker", "brightness x0.8", lambda image: ImageEnhance.Brightness(image).enhance(0.8)),
    Condition("brighter", "brightness x1.2", lambda image: ImageEnhance.Brightness(image).enhance(1.2)),
    Condition("paler colour", "saturation x0.7", lambda image: ImageEnhance.Color(image).enhance(0.7)),
    Condition("slightly blurred", "Gaussian blur, radius 1 pixel", lambda image: image.filter(ImageFilter.GaussianBlur(1))),
)


def prepared(pictures: list[np.ndarray], condition: Condition, input_size: int, detail_side: int | None) -> np.ndarray:
    """The model inputs of decoded RGB pictures after one condition, through the served preparation."""
    return np.stack([images.prepare(np.asarray(condition.alter(Image.fromarray(rgb)).convert("RGB")),
                                    input_size, detail_side) for rgb in pictures])


def report(predictor, pictures: list[np.ndarray], y_true: np.ndarray, conditions=CONDITIONS,
           patient_rows=None) -> list[dict]:
    """One row per condition: accuracy, balanced accuracy, macro F1, melanoma recall at the bundle's
    threshold, and the share of photographs whose top diagnosis differs from the first condition's
    (the unaltered photographs, in CONDITIONS), and the share the familiarity check flags as unlike the
    training images (when the bundle has one). `patient_rows`: the patients' details, for a model that reads
    them (only the photos are altered)."""
    y_true = np.asarray(y_true, dtype=int)
    labels = list(range(len(predictor.classes)))
    mel = predictor.classes.index("mel") if "mel" in predictor.classes else None
    threshold = predictor.bundle.thresholds.get("mel")
    rows, reference = [], None
    for condition in conditions:
        probs, distances = predictor.probabilities_and_distances(
            prepared(pictures, condition, predictor.input_size, predictor.detail_side), patients=patient_rows)
        pred = probs.argmax(axis=1)
        reference = pred if reference is None else reference
        row = {"condition": condition.name, "description": condition.description, "n": int(len(y_true)),
               "accuracy": float((pred == y_true).mean()),
               "balanced_accuracy": float(balanced_accuracy_score(y_true, pred)),
               "macro_f1": float(f1_score(y_true, pred, labels=labels, average="macro", zero_division=0)),
               "top_diagnosis_changed": float((pred != reference).mean())}
        if mel is not None and threshold is not None and (y_true == mel).any():
            row["mel_recall_at_threshold"] = float((probs[y_true == mel, mel] >= threshold).mean())
        if distances is not None:
            row["flagged_unfamiliar"] = float(predictor.familiarity.unlike(distances).mean())
        rows.append(row)
    return rows


def markdown_table(rows: list[dict]) -> list[str]:
    """The report as markdown table lines, for the console and the model card."""
    flagged = all("flagged_unfamiliar" in row for row in rows)
    lines = ["| condition | accuracy | balanced accuracy | macro F1 | melanoma recall at threshold | top diagnosis changed |"
             + (" flagged as unlike the training images |" if flagged else ""),
             "|---|---|---|---|---|---|" + ("---|" if flagged else "")]
    for row in rows:
        mel = row.get("mel_recall_at_threshold")
        lines.append(f"| {row['condition']} ({row['description']}) | {row['accuracy']:.3f} | "
                     f"{row['balanced_accuracy']:.3f} | {row['macro_f1']:.3f} | "
                     f"{'' if mel is None else f'{mel:.3f}'} | {row['top_diagnosis_changed']:.1%} |"
                     + (f" {row['flagged_unfamiliar']:.1%} |" if flagged else ""))
    return lines
