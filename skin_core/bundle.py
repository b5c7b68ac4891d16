"""A trained model on disk: model.keras + manifest.json + its reports, saved and loaded as one.

Training writes a bundle; everything else reads one. The manifest carries what serving needs to
prepare inputs exactly as training did (input size, detail cap, class order, temperature,
thresholds) and the sha256 of every file, so a changed or swapped file is refused at load.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import keras
import numpy as np

from . import model as _model  # registers the custom layers a saved model may hold
from .copies import SEEN_FILE, SeenPhotos
from .familiarity import FAMILIARITY_FILE, Familiarity
from .jsonfiles import read_json_object, replace_file, replace_json, sync_to_disk
from .manifest import FORMAT_VERSION, MODEL_FILE, Manifest, ManifestError, completed, from_json
from .patients import PATIENT_FILE, PatientHead

MANIFEST_FILE = "manifest.json"
HISTORY_FILE = "history.csv"
EVALUATION_FILE = "evaluation.json"
SPLIT_FILE = "split.csv"
CARD_FILE = "MODEL_CARD.md"
CHECKED_FILES = (MODEL_FILE, HISTORY_FILE, EVALUATION_FILE, SPLIT_FILE, FAMILIARITY_FILE, PATIENT_FILE, SEEN_FILE)


class BundleError(ValueError):
    """A bundle that cannot be loaded or saved, with the reason."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Bundle:
    path: Path
    manifest: Manifest          # completed on creation (skin_core.manifest): every section present
    model: keras.Model
    familiarity: Familiarity | None = None    # how unlike the training images a photo is (None: not fitted)
    patient_head: PatientHead | None = None   # what age, sex and body site add (None: the photo alone)
    seen: SeenPhotos | None = None            # fingerprints of the photos it learnt from (None: not kept)

    def __post_init__(self):
        self.manifest = completed(self.manifest, Path(self.path).name)

    @property
    def classes(self) -> list[str]:
        return list(self.manifest["classes"])

    @property
    def input_size(self) -> int:
        return int(self.manifest["input_size"])

    @property
    def detail_side(self) -> int | None:
        return self.manifest["preprocessing"]["detail_side"]

    @property
    def temperature(self) -> float:
        return float(self.manifest["calibration"]["temperature"])

    @property
    def logit_bias(self):
        """tau * log(prior) added to the logits before the temperature (zeros when not fitted)."""
        calibration = self.manifest["calibration"]
        if not calibration["log_prior"]:
            return np.zeros(len(self.classes), np.float32)
        return (calibration["prior_shift"] * np.asarray(calibration["log_prior"])).astype(np.float32)

    @property
    def test_time_augmentation(self) -> str:
        """The views each answer averages (options.TTA_VIEW_NAMES)."""
        return self.manifest["test_time_augmentation"]

    @property
    def thresholds(self) -> dict[str, float]:
        return dict(self.manifest["thresholds"])

    @property
    def name(self) -> str:
        return self.manifest["name"]


def read_manifest(path) -> Manifest:
    """The manifest alone (cheap: no model load), checked and completed (skin_core.manifest.from_json)."""
    path = Path(path)
    manifest_path = path / MANIFEST_FILE
    if not path.exists():
        restore_interrupted_replacement(path)
    if not manifest_path.is_file():
        raise BundleError(f"{path} is not a model bundle: {MANIFEST_FILE} is missing.")
    try:
        manifest = read_json_object(manifest_path)
    except ValueError as exc:
        raise BundleError(f"{path}: {exc}.") from None
    try:
        return from_json(manifest, path.name)
    except ManifestError as exc:
        raise BundleError(str(exc)) from None


def verify_files(path: Path, manifest: dict) -> None:
    """Every file the manifest lists exists and has the recorded sha256."""
    for name, expected in manifest["files"].items():
        file = path / name
        if not file.is_file():
            raise BundleError(f"{path.name}: {name} is missing.")
        if sha256_file(file) != expected:
            raise BundleError(f"{path.name}: {name} does not match its manifest checksum (changed or corrupted).")


def load_bundle(path) -> Bundle:
    """Load and check a bundle; raise BundleError naming the problem."""
    path = Path(path)
    manifest = read_manifest(path)
    verify_files(path, manifest)
    try:
        model = keras.saving.load_model(path / MODEL_FILE, compile=False, safe_mode=True)
    except Exception as exc:
        raise BundleError(f"{path.name}: {MODEL_FILE} cannot be loaded safely ({type(exc).__name__}: {str(exc)[:200]}).") from None
    if any(type(layer).__name__ == "Lambda" for layer in model.layers):
        raise BundleError(f"{path.name}: the model contains a Lambda layer, which is not allowed.")
    outputs, size = model.output_shape[-1], manifest["input_size"]
    if outputs != len(manifest["classes"]):
        raise BundleError(f"{path.name}: the model has {outputs} outputs but the manifest lists "
                          f"{len(manifest['classes'])} classes.")
    if tuple(model.input_shape[1:3]) != (size, size):
        raise BundleError(f"{path.name}: the model takes {model.input_shape[1:3]} inputs, the manifest says {size}.")
    missing = {_model.LAST_CONV_LAYER, _model.POOL_LAYER, _model.LOGITS_LAYER} - {layer.name for layer in model.layers}
    if missing:   # the predictor reads them for the answer and its Grad-CAM map
        raise BundleError(f"{path.name}: the model has no layer named {', '.join(sorted(missing))}; "
                          "it is not a MobileNet built by this project.")
    familiarity = _optional_part(path, manifest, FAMILIARITY_FILE, Familiarity.load)
    patient_head = _optional_part(path, manifest, PATIENT_FILE, PatientHead.load)
    if patient_head is not None and patient_head.classes != list(manifest["classes"]):
        raise BundleError(f"{path.name}: {PATIENT_FILE} lists other classes than the manifest.")
    seen = _optional_part(path, manifest, SEEN_FILE, SeenPhotos.load)
    return Bundle(path=path, manifest=manifest, model=model, familiarity=familiarity, patient_head=patient_head,
                  seen=seen)


def _optional_part(path: Path, manifest: dict, name: str, load):
    """A part only some bundles have (the familiarity model, the patient head, the seen photos), loaded if the
    manifest lists it."""
    if name not in manifest["files"]:
        return None
    try:
        return load(path / name)
    except (OSError, ValueError, KeyError) as exc:
        raise BundleError(f"{path.name}: {name} cannot be read ({exc}).") from None


def inside_bundle(path) -> bool:
    """Whether `path` lies in a model bundle's folder: only training and the bundle's own report writers
    (robustness, familiarity, saved evaluations) write there (a file written over one of its checked files
    would leave a bundle that no longer loads)."""
    return any((folder / MANIFEST_FILE).is_file() for folder in Path(path).resolve().parents)


def shares_split(first: Path, second: Path) -> bool:
    """Whether two bundle folders hold out exactly the same images (identical split.csv files): only then
    are their validation and test figures a like-for-like comparison, and their weights averageable."""
    files = [Path(folder) / SPLIT_FILE for folder in (first, second)]
    return all(f.is_file() for f in files) and files[0].read_bytes() == files[1].read_bytes()


def require_one_split(bundles: list[Bundle]) -> None:
    """Bundles combined into one model (a soup, an ensemble) must come from the same dataset and split, or one
    may have learnt from another's validation or test lesions; raise BundleError otherwise."""
    first = bundles[0]
    for other in bundles[1:]:
        if other.manifest["dataset"]["fingerprint"] != first.manifest["dataset"]["fingerprint"] or \
                not shares_split(first.path, other.path):
            raise BundleError(f"{other.path.name} was not trained on the same dataset and split as {first.path.name}, "
                              "so one may have learnt from the other's validation or test lesions.")


def weight_soup(bundles: list[Bundle]) -> keras.Model:
    """The first bundle's model holding the mean of all the bundles' weights (Wortsman et al. 2022).

    Averaging only makes sense for fine-tunes of one architecture on one split; anything else is
    refused, so a soup's held-out figures stay honest. Layers without weights (the optional colour
    constancy) are not compared: the soup is served with the first bundle's graph.
    """
    first = bundles[0]
    if len(bundles) > 1 and any(bundle.patient_head is not None for bundle in bundles):
        raise BundleError("bundles that read the patient's age, sex and body site cannot be averaged (each network "
                          "learnt its own share of what those details tell)")
    require_one_split(bundles)
    for other in bundles[1:]:
        if [w.shape for w in other.model.weights] != [w.shape for w in first.model.weights]:
            raise BundleError(f"{other.path.name} does not share {first.path.name}'s architecture.")
    if len(bundles) > 1:
        weight_sets = [bundle.model.get_weights() for bundle in bundles]
        first.model.set_weights([np.mean(layer, axis=0) for layer in zip(*weight_sets)])
    return first.model


def inference_copy(model: keras.Model) -> keras.Model:
    """The same architecture and weights with no optimizer state, for a small bundle."""
    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    return clean


def store_at_half_precision(model_file: Path) -> None:
    """Rewrite a saved .keras file with its float32 weights stored as float16, compressed.

    Two networks at float32 take 26 MB, over what a committed bundle may weigh. Loading casts the stored values
    back into the model's float32 variables (Keras assigns each saved array to its variable), so the model
    computes in float32 as before. An ensemble's weights are rounded to float16 values when it is built
    (model.ensemble_of), so storing them here loses nothing and the figures measured before writing hold.
    """
    with zipfile.ZipFile(model_file) as saved:
        parts = {name: saved.read(name) for name in saved.namelist()}
    weights_name = next(name for name in parts if name.endswith(".weights.h5"))
    halved = io.BytesIO()
    with h5py.File(io.BytesIO(parts[weights_name]), "r") as source, h5py.File(halved, "w") as target:
        _copy_attributes(source, target)

        def copy(name, item):
            if isinstance(item, h5py.Dataset):
                values = item[()]
                target.create_dataset(name, data=values.astype(np.float16) if values.dtype == np.float32 else values)
            else:
                target.require_group(name)
            _copy_attributes(item, target[name])

        source.visititems(copy)
    parts[weights_name] = halved.getvalue()
    with zipfile.ZipFile(model_file, "w", compression=zipfile.ZIP_DEFLATED) as rewritten:
        for name, content in parts.items():
            rewritten.writestr(name, content)


def _copy_attributes(source, target) -> None:
    for key, value in source.attrs.items():
        target.attrs[key] = value


def write_bundle(target, model: keras.Model, manifest: dict, *, history=None, evaluation=None,
                 split=None, card: str | None = None, familiarity: Familiarity | None = None,
                 patient_head: PatientHead | None = None, seen: SeenPhotos | None = None) -> Path:
    """Write a complete bundle into a temporary folder beside `target`, then move it into place.

    A crash at any point leaves either no bundle or the previous one, never half of one.
    """
    target = Path(target)
    restore_interrupted_replacement(target)
    problem = output_problem(target)
    if problem:
        raise BundleError(problem)
    staging = target.parent / f".{target.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        staging.mkdir()
        inference_copy(model).save(staging / MODEL_FILE)
        if _model.is_ensemble(model):
            store_at_half_precision(staging / MODEL_FILE)
        if history is not None:
            history.to_csv(staging / HISTORY_FILE, index_label="epoch")
        if evaluation is not None:
            with open(staging / EVALUATION_FILE, "w") as handle:
                json.dump(evaluation, handle)
        if split is not None:
            split.to_csv(staging / SPLIT_FILE, index=False)
        if familiarity is not None:
            familiarity.save(staging / FAMILIARITY_FILE)
        if patient_head is not None:
            patient_head.save(staging / PATIENT_FILE)
        if seen is not None:
            seen.save(staging / SEEN_FILE)
        files = {name: sha256_file(staging / name) for name in CHECKED_FILES if (staging / name).is_file()}
        manifest = {**manifest, "format_version": FORMAT_VERSION, "files": files}
        with open(staging / MANIFEST_FILE, "w") as handle:
            json.dump(manifest, handle, indent=2)
        if card is not None:
            (staging / CARD_FILE).write_text(card)
        for written in staging.iterdir():     # on the disk before the bundle is in place (the caller then
            sync_to_disk(written)             # deletes the training checkpoint it could be rebuilt from)
        sync_to_disk(staging)
        _swap_into_place(staging, target)
        sync_to_disk(target.parent)
    except BaseException as exc:   # a cancelled run or Ctrl-C cleans up too
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise BundleError(f"Could not write the bundle to {target}: {exc.strerror or exc}.") from None
        raise
    return target


def output_problem(target) -> str | None:
    """Why a bundle cannot be written to `target` (None if it can), checked before hours of training: only a
    new or empty folder, or an earlier bundle (which is replaced whole), may be a bundle's place; anything
    else there is never deleted. Creates the parent folder and tries a file in it."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        return f"{target} is a file, not a folder for a model bundle."
    if target.is_dir() and not (target / MANIFEST_FILE).is_file() and any(target.iterdir()):
        return (f"{target} already holds files and is not a model bundle; write the bundle to a new folder "
                "(an earlier bundle there would be replaced, anything else is never deleted).")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        probe = target.parent / f".{target.name}.write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        return f"A bundle cannot be written beside {target}: {exc.strerror or exc}."
    return None


SWAP_SECONDS = 5.0
"""A bundle retired this recently may be in the middle of a live replacement (another process between
_swap_into_place's two renames), so it is not put back yet."""


def restore_interrupted_replacement(target) -> None:
    """Put back the previous bundle if a process was killed between _swap_into_place's two renames, which
    leaves it under its retired name and nothing at `target`: a bundle is never lost. A reader never takes
    a bundle back from a writer still replacing it (SWAP_SECONDS), and one that loses a race to put it back
    leaves it to the other."""
    target = Path(target)
    if target.exists():
        return
    retired = [folder for folder in target.parent.glob(f".{target.name}.old-*") if (folder / MANIFEST_FILE).is_file()]
    if not retired:
        return
    newest = max(retired, key=lambda folder: folder.stat().st_mtime)
    try:
        if time.time() - newest.stat().st_ctime >= SWAP_SECONDS:     # a rename sets ctime: when it was retired
            newest.rename(target)
    except OSError:
        pass                     # another process put it back or replaced it meanwhile


def _swap_into_place(staging: Path, target: Path) -> None:
    if not target.exists():
        staging.rename(target)
        return
    retired = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
    target.rename(retired)
    try:
        staging.rename(target)
    except BaseException:
        if not target.exists():   # put the previous bundle back: never no bundle where there was one
            retired.rename(target)
        raise
    shutil.rmtree(retired, ignore_errors=True)


def dataset_report_file(dataset_folder: str) -> str:
    """The file name an evaluation on another dataset is saved under beside a bundle: the dataset folder's
    name (letters and digits only, so it can never name a file outside the bundle) and a short digest of
    its full path, so that evaluating the same folder again replaces its report while two folders of the
    same name (two copies called "test") keep one each."""
    folder = Path(str(dataset_folder).rstrip("/") or "/").expanduser().resolve()
    stem = "".join(ch if ch.isalnum() else "_" for ch in folder.name)[:40] or "dataset"
    return f"evaluation-{stem}-{hashlib.sha256(str(folder).encode()).hexdigest()[:8]}.json"


def dataset_reports(path) -> tuple[dict[str, dict], list[str]]:
    """The evaluations on other datasets saved beside a bundle ({file name: report}, in file-name
    order), and the names of those that cannot be read (named, not fatal)."""
    reports, damaged = {}, []
    for file in sorted(Path(path).glob("evaluation-*.json")):
        try:
            report = read_json_object(file)
            if "confusion_matrix" not in report:
                raise ValueError("not an evaluation report")
        except (ValueError, OSError):
            damaged.append(file.name)
        else:
            reports[file.name] = report
    return reports, damaged


def add_familiarity(path, familiarity: Familiarity, description: dict) -> None:
    """Give an existing bundle its familiarity model (bundles trained before it existed)."""
    _add_part(path, FAMILIARITY_FILE, familiarity.save, "familiarity", description,
              "a familiarity model; re-finish the bundle (scripts/refinish.py) to fit another")


def add_seen_photos(path, seen: SeenPhotos) -> None:
    """Give an existing bundle the fingerprints of the photos it learnt from (bundles trained before they were kept)."""
    _add_part(path, SEEN_FILE, seen.save, "seen_photos", seen.description(), "the fingerprints of its photos")


def _add_part(path, name: str, save, section: str, description: dict, what_it_has: str) -> None:
    """Write an optional part beside an existing bundle's files; it counts only once the manifest, replaced in
    one step, lists it with its checksum. A bundle that has the part is refused: replacing a listed file and then
    the manifest is two steps, and a stop between them would leave a bundle that no longer loads."""
    path = Path(path)
    manifest = read_manifest(path)
    if name in manifest["files"]:
        raise BundleError(f"{path.name} already has {what_it_has}.")
    replace_file(path / name, save, binary=True)
    manifest["files"] = {**manifest["files"], name: sha256_file(path / name)}
    manifest[section] = description
    replace_json(path / MANIFEST_FILE, manifest, indent=2)


def update_report(path, name: str, report: dict) -> None:
    """Add or replace a report file beside a bundle (e.g. an evaluation on another dataset)."""
    replace_json(Path(path) / name, report)
