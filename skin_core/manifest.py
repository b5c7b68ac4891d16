"""A bundle's manifest.json: its schema in one place, checked and completed once when it is read.

Training writes the manifest; everything else reads it through `from_json`, which refuses an unknown format
version or a manifest missing what serving needs, and fills the optional sections a bundle may lack (an
older training run, a re-finished soup) with their neutral values. Readers can then index it directly
instead of each guessing its own default.
"""
from __future__ import annotations

from typing import TypedDict

from .options import TTA_VIEWS

FORMAT_VERSION = 1
MODEL_FILE = "model.keras"


class Calibration(TypedDict, total=False):
    temperature: float          # divides the logits (temperature scaling, fitted on validation)
    prior_shift: float          # tau: tau * log_prior is added to the logits first (0: none)
    log_prior: list[float] | None   # the training split's class frequencies, logged


class Manifest(TypedDict, total=False):
    format_version: int
    name: str
    created: str | None
    classes: list[str]          # the model's output order
    input_size: int
    alpha: float
    preprocessing: dict         # crop, detail_side (the detail cap), resize, scale, colour constancy, low detail
    files: dict[str, str]       # file name -> sha256, checked at load
    test_time_augmentation: str  # one of options.TTA_VIEWS
    calibration: Calibration
    thresholds: dict[str, float]   # class code -> decision threshold (melanoma's, set on validation)
    training: dict              # the run's settings (paths cut to their last name) and how fitting went
    dataset: dict               # name, layout, fingerprint, counts, sources
    split: dict
    validation: dict | None     # headline figures on the validation split
    test: dict | None           # headline figures on the held-out test split (per source too)
    patients: dict | None       # what the patient head reads, when the model has one
    familiarity: dict | None    # the "unlike the training images" model's description


REQUIRED = ("classes", "input_size", "preprocessing", "files")
NEUTRAL = {"created": None, "alpha": None, "files": {}, "test_time_augmentation": "none", "thresholds": {}, "training": {}, "dataset": {},
           "split": {}, "validation": None, "test": None, "patients": None, "familiarity": None, "seen_photos": None}
NEUTRAL_CALIBRATION = {"temperature": 1.0, "prior_shift": 0.0, "log_prior": None}


class ManifestError(ValueError):
    """A manifest this code cannot serve from, with the reason."""


def from_json(record: dict, where: str) -> Manifest:
    """The manifest in `record` (a bundle's parsed manifest.json), checked and completed; `where` names the
    bundle in messages. Raises ManifestError."""
    version = record.get("format_version")
    if version != FORMAT_VERSION:
        raise ManifestError(f"{where}: unknown bundle format version {version!r} (this code reads {FORMAT_VERSION}).")
    for key in REQUIRED:
        if key not in record:
            raise ManifestError(f"{where}: the manifest has no '{key}'.")
    if MODEL_FILE not in record["files"]:
        raise ManifestError(f"{where}: the manifest does not list {MODEL_FILE}.")
    manifest = completed(record, where)
    if manifest["test_time_augmentation"] not in TTA_VIEWS:
        raise ManifestError(f"{where}: unknown test-time views {manifest['test_time_augmentation']!r} "
                            f"(one of {', '.join(TTA_VIEWS)}).")
    return manifest


def completed(record: dict, where: str) -> Manifest:
    """The manifest with every optional section present (its neutral value where `record` lacks it): what
    from_json returns, and what a bundle being finished (not yet written, so not yet checked) holds."""
    manifest = {**NEUTRAL, **record}
    manifest["name"] = record.get("name") or where
    manifest["calibration"] = {**NEUTRAL_CALIBRATION, **(record.get("calibration") or {})}
    manifest["preprocessing"] = {"detail_side": None, **(record.get("preprocessing") or {})}
    return manifest


def network_label(manifest: Manifest) -> str:
    """The network in a few words, for the sidebar: one MobileNet, or an ensemble of several side by side."""
    single = f"MobileNet V1 α={manifest['alpha']}"
    members = manifest["training"].get("ensemble_of")
    return f"{len(members)} × {single} (ensemble)" if members else single
