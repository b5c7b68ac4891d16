"""Fine-tuning MobileNet V1 on a dataset and writing the result as a bundle.

The flow: read and check the dataset -> decode every image once through images.prepare -> split by
lesion (copies of one photo under two lesion ids kept on one side, which needs the pixels) -> tf.data
(shuffle, balance, batch, augment, prefetch) -> phase 1 trains the head on a frozen body -> phase 2
fine-tunes the whole network with a cosine schedule and early stopping -> the best epoch on the
validation split is kept -> temperature and melanoma threshold are fitted on the validation split ->
the untouched test split is evaluated -> bundle.
"""
from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass, fields as dataclass_fields, replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import keras
import tensorflow as tf

from . import __version__, bundle as bundles, calibration, cancellation, copies, data, evaluation, resume, splits
from . import familiarity as familiarity_model
from . import patients as patient_details
from .cancellation import StopWhenCancelled, stop_if_requested
from .classes import CLASS_CODES
from .model import (COLOUR_LAYER, LOGITS_LAYER, MEMBER_PREFIX, PATIENT_GAIN, PATIENT_LOGITS_LAYER, build_model,
                    describe, is_ensemble, member_weights, set_trainable_from, with_patient_head)
from .pipelines import eval_dataset, steps_per_epoch, training_dataset
from .evaluation import HEADLINE
from .options import BALANCE_CHOICES
from .predict import Predictor
from .progress import ProgressCallback, ProgressLog
from .recipe import BestWeights, class_weights, compile_model, phase_learning_rate, phases, training_loss
from .run_config import TrainConfig


PATH_SETTINGS = ("data", "out", "weights", "init_bundle", "split_from", "progress_file", "checkpoint")
"""Settings naming files or folders on the machine that trained: a bundle records only their last name."""


def recorded_settings(cfg: TrainConfig) -> dict:
    """The settings a manifest keeps: paths cut to their last name, so a shared bundle names no one's folders."""
    settings = asdict(cfg)
    for key in PATH_SETTINGS:
        if isinstance(settings[key], list):
            settings[key] = [Path(v).name for v in settings[key]]
        elif settings[key] not in (None, "imagenet"):
            settings[key] = Path(settings[key]).name
    return settings


def data_name(cfg: TrainConfig) -> str:
    """The datasets' folder names, for messages and the manifest ("ham10000 + isic2019_bcn_msk")."""
    return " + ".join(root.name for root in data.as_roots(cfg.data))


def distribution_strategy(name: str) -> tf.distribute.Strategy:
    """One replica per GPU (mirrored), per worker in TF_CONFIG (multiworker), or the default.

    Without GPUs, `mirrored` uses every logical CPU device (see train.py --logical-cpus).
    """
    if name == "mirrored":
        if not tf.config.list_logical_devices("GPU") and len(tf.config.list_logical_devices("CPU")) > 1:
            return tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


@dataclass
class Prepared:
    """A dataset read, split and decoded: what fitting and finishing both need."""
    dataset: data.Dataset
    arrays: data.ImageArrays
    labels: np.ndarray
    parts: dict[str, np.ndarray]
    detail_side: int | None
    classes: list[str]
    split_info: dict                  # how the split was made, for the manifest
    patient_rows: pd.DataFrame | None = None   # age, sex, localization per row of the table (cfg.patients)

    @property
    def table(self) -> pd.DataFrame:
        return self.arrays.table

    def subset(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        return self.arrays.pixels[self.parts[name]], self.labels_of(name)

    def labels_of(self, name: str) -> np.ndarray:
        """The labels alone: subset() copies the pixels too (hundreds of MB for the training split)."""
        return self.labels[self.parts[name]]

    def patients_of(self, name: str) -> pd.DataFrame | None:
        """The subset's age, sex and localization rows (None when the run does not read them)."""
        if self.patient_rows is None:
            return None
        return self.patient_rows[self.parts[name]].reset_index(drop=True)

    def encoded_patients_of(self, name: str) -> np.ndarray | None:
        rows = self.patients_of(name)
        return None if rows is None else patient_details.encode(rows)


def prepare(cfg: TrainConfig, log: ProgressLog, split_csv: str | Path | None = None) -> Prepared:
    """Read and check the dataset, decode it once at the model's input size, split it by lesion.

    The split is derived from the seed, or read from `split_csv` (default: the split.csv of
    cfg.split_from), so that runs differing only in training randomness share validation and test.
    """
    taken_from = None
    if split_csv is None and cfg.split_from:
        split_csv, taken_from = Path(cfg.split_from) / bundles.SPLIT_FILE, Path(cfg.split_from).name
    if split_csv is not None and not Path(split_csv).is_file():      # checked before the slow image reading
        raise ValueError(f"No split file at {split_csv}: a reused split must come from a bundle folder that "
                         f"holds {bundles.SPLIT_FILE}.")
    dataset = data.load_datasets(cfg.data, skip_bad=cfg.skip_bad, skip_other_labels=cfg.skip_other_labels)
    classes = list(CLASS_CODES)
    detail_side = cfg.detail_side
    if detail_side == -1:     # the sharpest source's detail: smaller photos are upsampled, not the others blurred
        detail_side = max(_median_short_side(rows) for _, rows in dataset.table.groupby("source"))
        detail_side = detail_side if detail_side < cfg.img_size else None
    sources = dataset.table["source"].value_counts(sort=False)
    log.event("dataset", f"Dataset: {len(dataset.table)} images ({dataset.layout} layout), "
              f"{dataset.table['lesion_id'].nunique()} lesions"
              + (" (" + ", ".join(f"{k} {n}" for k, n in sources.items()) + ")" if len(sources) > 1 else "")
              + f"; reading at {cfg.img_size}px" + (f" (detail cap {detail_side}px)" if detail_side else ""),
              counts=dataset.counts())
    arrays = data.read_images(dataset.table, cfg.img_size, detail_side, skip_bad=cfg.skip_bad, workers=cfg.workers,
                              on_progress=lambda i, n: log.event("reading", None, done=i, total=n))
    table = arrays.table
    joined = {}
    table["subset"], per_source = splits.split_by_source(
        table, test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction, seed=cfg.seed, split_csv=split_csv,
        groups_of=_copy_grouping(arrays.pixels, joined, log) if cfg.copy_groups else None)
    if split_csv is None:
        split_info = {"method": SPLIT_METHOD if cfg.copy_groups else LESION_SPLIT_METHOD, "seed": cfg.seed,
                      "test_fraction": cfg.test_fraction, "val_fraction": cfg.val_fraction}
    else:
        split_info = _split_info_of(Path(split_csv), taken_from, set(sources.index))
    if joined:
        split_info["lesions_joined_by_copies"] = joined
    if len(per_source) > 1:
        split_info["by_source"] = per_source
    if cfg.init_bundle:
        _refuse_test_leak(cfg.init_bundle, table)
    labels = table["dx"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    parts = {name: (table["subset"] == name).to_numpy() for name in ("train", "val", "test")}
    sizes = {k: int(v.sum()) for k, v in parts.items()}
    log.event("split", "Split by lesion: " + ", ".join(f"{k} {n}" for k, n in sizes.items()), sizes=sizes)
    # the shares obtained: whole folds of StratifiedGroupKFold, so 0.15 asked can come out as 0.16
    split_info.update(sizes=sizes, shares={k: round(n / max(len(table), 1), 3) for k, n in sizes.items()},
                      file=bundles.SPLIT_FILE)
    patient_rows = None
    if cfg.patients:
        patient_rows, known = patient_details.read_known(cfg.data, table["image_id"])
        log.event("patients", "Patient details known: " + ", ".join(f"{k} {v:.0%}" for k, v in known.items()),
                  known=known)
    return Prepared(dataset, arrays, labels, parts, detail_side, classes, split_info, patient_rows)


LESION_SPLIT_METHOD = "StratifiedGroupKFold by dx, grouped by lesion_id (test fold, then val fold), within each source"
SPLIT_METHOD = LESION_SPLIT_METHOD + ("; lesions sharing a copy of one photo under two lesion ids then moved to "
                                      "one side (train before val before test)")


def _copy_grouping(pixels: np.ndarray, joined: dict, log: ProgressLog):
    """groups_of for splits.split_by_source: a source's lesions joined by copies of one photo (copies.copy_groups),
    counted by source in `joined` and reported, so that no held-out photo is a copy of one the model learns from."""
    def groups_of(rows: pd.DataFrame) -> pd.Series:
        source = rows["source"].iat[0]
        log.event("split_copies", f"Looking for copies of one photo under two lesion ids among the {len(rows)} "
                  f"photos of {source}")
        groups = pd.Series(copies.copy_groups(rows["lesion_id"], pixels[rows.index.to_numpy()]), index=rows.index)
        moved = copies.lesions_joined(rows["lesion_id"], groups)
        if moved:
            joined[source] = moved
            log.event("split_copies", f"Lesions with a photo copied from another lesion id in {source}: {moved}, "
                      "each kept on one side of the split with the lesion it copies", source=source, count=moved)
        return groups
    return groups_of


def _split_info_of(split_csv: Path, taken_from: str | None, sources) -> dict:
    """The recorded description of a reused split (from its bundle's manifest), of the `sources` this run read
    alone, and where it was taken from."""
    beside_a_bundle = (split_csv.parent / bundles.MANIFEST_FILE).is_file()
    recorded = bundles.read_manifest(split_csv.parent).get("split", {}) if beside_a_bundle else {}
    info = {k: v for k, v in recorded.items() if k not in ("sizes", "shares", "file")} or \
        {"method": "read from a split file"}
    for per_source in ("by_source", "lesions_joined_by_copies"):      # what it says of sources not read here goes
        kept = {source: v for source, v in (info.pop(per_source, None) or {}).items() if source in sources}
        if kept and (per_source != "by_source" or len(sources) > 1):
            info[per_source] = kept
    if taken_from:
        info.setdefault("taken_from", taken_from)
    return info


def fit(cfg: TrainConfig, prep: Prepared, log: ProgressLog) -> tuple[keras.Model, pd.DataFrame, dict]:
    """Phase 1 trains the head on a frozen body, phase 2 fine-tunes; returns the best epoch's model.

    With cfg.checkpoint, the run's state is saved after every epoch and a run started again with
    the same settings continues from its last finished epoch (see resume.py).
    """
    strategy = distribution_strategy(cfg.strategy)
    replicas = strategy.num_replicas_in_sync
    run_cfg = cfg if replicas == 1 else _scaled(cfg, replicas)
    n_classes = len(prep.classes)
    steps = steps_per_epoch(len(prep.labels_of("train")), run_cfg)
    # the data's fingerprint (image ids, labels, file bytes): a label corrected or a photo replaced between
    # attempts must not be continued on weights fitted to the old ones
    checkpoint = resume.Checkpoint(cfg.checkpoint, {**asdict(cfg), "replicas": replicas, "steps_per_epoch": steps,
                                                    "data_fingerprint": prep.arrays.fingerprint},
                                   splits.split_digest(prep.table)) if cfg.checkpoint else None
    state = (checkpoint.load() if checkpoint else None) or resume.FitState()
    if state.epoch:      # a fresh random stream for the epochs left, not a replay of the first ones
        run_cfg = replace(run_cfg, seed=cfg.seed + 1000 * state.epoch)
        keras.utils.set_random_seed(run_cfg.seed)
    train_ds = training_dataset(*prep.subset("train"), n_classes, run_cfg, prep.encoded_patients_of("train"))
    val_ds = eval_dataset(*prep.subset("val"), n_classes, run_cfg.batch_size, prep.encoded_patients_of("val"))
    train_labels = prep.labels_of("train")
    weights = class_weights(train_labels, n_classes, cfg.balance)
    loss = training_loss(train_labels, n_classes, cfg.balance, cfg.label_smoothing)
    with strategy.scope():
        photo_model, start_head = _initial_model(cfg, n_classes)
        # with patient details, the fitted model adds their push; it shares every layer with the photo model
        model = with_patient_head(photo_model, len(patient_details.FEATURES)) if cfg.patients else photo_model
        if cfg.patients and start_head is not None:      # a starting bundle's head goes on from where it was
            model.get_layer(PATIENT_LOGITS_LAYER).set_weights([start_head.weights / PATIENT_GAIN])
    best = BestWeights("val_macro_f1")
    if state.epoch:
        with strategy.scope():
            best.weights = checkpoint.restore_weights(model)
        best.best = -math.inf if state.best is None else state.best
        best.best_epoch = state.best_epoch
        state.resumed_at.append(state.epoch)
        log.event("resume", f"Continuing from the end of epoch {state.epoch} saved in {cfg.checkpoint}"
                  + (" (fitting had finished)" if state.finished else ""), epoch=state.epoch)
    for phase, first, last, fraction, lr in phases(cfg.head_epochs, cfg.epochs, cfg.fine_tune_fraction,
                                                   run_cfg.head_lr, run_cfg.lr):
        if state.finished or last <= state.epoch:
            continue
        with strategy.scope():
            set_trainable_from(photo_model, fraction)
            compile_model(model, phase_learning_rate(phase, lr, steps, last - first), cfg.weight_decay, loss)
            if state.epoch > first:          # stopped inside this phase: its optimizer goes on too
                checkpoint.restore_optimizer(model)
        log.event("phase", f"Phase {phase}: epochs {first + 1}-{last}, learning rate {lr:g}, "
                  f"trainable share of the body {fraction:.0%}", phase=phase)
        early_stopping = None if phase == "head" else resume.ResumableEarlyStopping(
            "val_macro_f1", mode="max", patience=cfg.patience, start_from_epoch=cfg.patience_from,
            resume=state.early_stopping)
        callbacks = [StopWhenCancelled(), ProgressCallback(log, phase, cfg.epochs, steps, run_cfg.batch_size), best]
        callbacks += [early_stopping] if early_stopping else []
        callbacks.append(resume.EpochRecorder(state, phase, best, checkpoint, early_stopping))
        model.fit(train_ds, validation_data=val_ds, epochs=last, initial_epoch=max(first, state.epoch),
                  steps_per_epoch=steps, class_weight=weights, callbacks=callbacks, verbose=0)
    if checkpoint and not state.finished:
        state.finished = True
        checkpoint.save(state, model, best.weights)
    if best.weights is not None:
        model.set_weights(best.weights)
    return model, state.history_frame(), {
        "best_epoch": best.best_epoch, "best_val_macro_f1": best.best, "replicas": replicas,
        "global_batch_size": run_cfg.batch_size, "global_lr": run_cfg.lr, "backend": keras.backend.backend(),
        "machine": machine(), **({"resumed_at_epochs": state.resumed_at} if state.resumed_at else {})}


def machine() -> str:
    """What the fitting ran on, for the model card's wall time: the CPU cores, and GPUs if TensorFlow sees any."""
    gpus = len(tf.config.list_physical_devices("GPU"))
    return f"{os.cpu_count()} CPU cores" + (f" and {gpus} GPU{'s' if gpus > 1 else ''}" if gpus else "")


def finish(cfg: TrainConfig, prep: Prepared, model: keras.Model, history: pd.DataFrame, fit_info: dict,
           log: ProgressLog, started: float, patient_head: patient_details.PatientHead | None = None,
           learnt_from: tuple[Path, ...] = ()) -> Path:
    """Calibrate and set the melanoma threshold on validation, evaluate on test, write the bundle.

    A model fitted with a patient head is split here into the photo model and the head (or `patient_head`
    comes with weights finished again); every figure is then computed with the patients' details.
    `learnt_from`: the split.csv files of bundles whose weights this model holds beyond cfg.init_bundle (a
    re-finished bundle, an ensemble's members): their images count as seen in the bundle's split too.
    """
    model, fitted_head = split_patient_head(model, prep.classes)
    patient_head = patient_head or fitted_head
    if patient_head is not None and prep.patient_rows is None:
        raise ValueError("This model reads the patient's age, sex and body site; finish it with --patients.")
    manifest = {**_description(cfg, prep, fit_info), "architecture": describe(model)}
    predictor, val_features = _tune_on_validation(cfg, prep, model, patient_head, manifest, log)
    log.event("familiarity", "Measuring where the training images lie in the model's feature space")
    familiarity = fit_familiarity(predictor, prep.subset("train")[0], val_features)
    manifest["familiarity"] = familiarity.description()
    report = _test_report(cfg, prep, predictor, manifest, log)
    split = _recorded_split(cfg, prep.table, learnt_from)
    seen = seen_photos(prep, split)
    manifest["seen_photos"] = {**seen.description(), "test_copies": test_copies(prep, seen, log)}
    manifest["training"]["seconds"] = round(time.time() - started, 1)
    stop_if_requested()          # a cancel lost while the evaluation's steps were traced
    cancellation.TOO_LATE.set()  # from here the run completes: a cancel now would leave a bundle reported cancelled
    out = bundles.write_bundle(cfg.out, model, manifest, history=history, evaluation=report, split=split,
                               familiarity=familiarity, patient_head=patient_head, seen=seen)
    if cfg.checkpoint:   # the bundle holds everything now; gone before "done", which tells watchers the run is over
        resume.discard(cfg.checkpoint)
    log.event("done", f"Bundle written to {out} ({manifest['training']['seconds'] / 60:.1f} min)", bundle=str(out))
    return out


def _description(cfg: TrainConfig, prep: Prepared, fit_info: dict) -> dict:
    """The manifest's account of the model and its data, before anything is measured."""
    settings, table = recorded_settings(cfg), prep.table
    return {
        "name": cfg.name or Path(cfg.out).name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "classes": prep.classes,
        "input_size": cfg.img_size,
        "alpha": cfg.alpha,
        "preprocessing": {"crop": "centre square", "detail_side": prep.detail_side, "resize": "bilinear (Pillow)",
                          "scale": "x / 127.5 - 1, inside the model (layer scale_to_unit)",
                          "colour_constancy": ("shades of grey (p=6) to a fixed reference illuminant, inside the "
                                               "model (layer colour_constancy)") if cfg.colour_constancy else None,
                          "colour": "RGB, EXIF-upright, transparency on white",
                          "trained_on_low_detail": ({"share": cfg.low_detail, "side": cfg.low_detail_side}
                                                    if cfg.low_detail else None)},
        "weights_source": " + ".join(fit_info.get("ensemble_of", [])) or settings["init_bundle"] or settings["weights"],
        "dataset": {"root": data_name(cfg), "layout": prep.dataset.layout, "fingerprint": prep.arrays.fingerprint,
                    "n_images": int(len(table)), "n_lesions": int(table["lesion_id"].nunique()),
                    "counts": prep.dataset.counts(), "skipped": prep.dataset.skipped + prep.arrays.unreadable,
                    "sources": _source_counts(table)},
        "split": prep.split_info,
        "seed": cfg.seed,
        "training": {**settings, **fit_info, "seconds": None},
        "versions": _versions(),
    }


def _tune_on_validation(cfg: TrainConfig, prep: Prepared, model: keras.Model,
                        patient_head: patient_details.PatientHead | None, manifest: dict,
                        log: ProgressLog) -> tuple[Predictor, np.ndarray]:
    """Everything fitted on the validation split: test-time views, prior shift and temperature, the melanoma
    threshold; the manifest records them with the validation figures. Returns the predictor the app will
    use (calibration included) and the validation images' pooled features."""
    classes = prep.classes
    log.event("calibrate", "Fitting temperature and melanoma threshold on the validation split")
    staged = bundles.Bundle(path=Path(cfg.out), manifest={**manifest, "calibration": {"temperature": 1.0}},
                            model=model, patient_head=patient_head)
    val_pixels, val_labels = prep.subset("val")
    val_patients = prep.patients_of("val")
    val_groups = prep.table["lesion_id"].to_numpy()[prep.parts["val"]]
    manifest["test_time_augmentation"] = _choose_tta(cfg, staged, val_pixels, val_labels, val_groups, log,
                                                     val_patients)
    staged.manifest["test_time_augmentation"] = manifest["test_time_augmentation"]
    predictor = Predictor(staged)
    log_prior = calibration.log_prior(prep.labels_of("train"), len(classes))
    val_photo_logits, val_features = predictor.photo_logits_and_features(val_pixels)
    val_logits = predictor.with_patients(val_photo_logits, val_patients)
    shift = calibration.fit_prior_shift(val_logits, val_labels, log_prior) if cfg.balance != "none" else \
        {"prior_shift": 0.0, "log_prior": log_prior.tolist()}
    bias = shift["prior_shift"] * log_prior     # the logit bias the bundle's predictor applies
    manifest["calibration"] = {**calibration.fit_temperature(val_logits + bias, val_labels), **shift}
    # from here on, every probability comes from the predictor the app will use, calibration included
    predictor = Predictor(bundles.Bundle(path=Path(cfg.out), manifest=dict(manifest), model=model,
                                         patient_head=patient_head))
    val_probs = predictor.calibrated(val_logits)
    manifest["thresholds"] = {"mel": evaluation.threshold_for_sensitivity(val_labels, val_probs, classes.index("mel"),
                                                                          cfg.mel_sensitivity)}
    val_report = evaluation.build_report(val_labels, val_probs, classes,
                                         groups=prep.table.loc[prep.parts["val"], "lesion_id"],
                                         thresholds=manifest["thresholds"], bootstrap_rounds=0)
    manifest["validation"] = {k: val_report[k] for k in HEADLINE + ("operating_points",)}
    if patient_head is not None:    # the same model and calibration when nothing about the patient is given
        photo_only = evaluation.build_report(val_labels, predictor.calibrated(predictor.with_patients(val_photo_logits)),
                                             classes, thresholds=manifest["thresholds"], bootstrap_rounds=0)
        manifest["patients"] = {"features": patient_details.FEATURES, "dropout": cfg.patient_dropout,
                                "known_in_training": patient_details.coverage(prep.patients_of("train")),
                                "validation_photo_only": {k: photo_only[k] for k in HEADLINE}}
    return predictor, val_features


def _test_report(cfg: TrainConfig, prep: Prepared, predictor: Predictor, manifest: dict,
                 log: ProgressLog) -> dict | None:
    """The held-out test split's report (per source too when there are several), its headline figures
    copied into the manifest; None when the split has no test images."""
    if not prep.parts["test"].any():
        return None
    log.event("evaluate", "Evaluating the held-out test split")
    test_pixels, test_labels = prep.subset("test")
    test_probs, photo_only = predictor.probabilities_given_and_alone(test_pixels, prep.patients_of("test"))
    report = evaluation.test_split_report(test_labels, test_probs, prep.classes, prep.table[prep.parts["test"]],
                                          manifest["thresholds"], "held-out test split of " + data_name(cfg),
                                          photo_only_probs=photo_only)
    manifest["test"] = evaluation.manifest_test_figures(report)
    for line in evaluation.summary_lines(report):
        log.event("summary", line)
    return report


def _recorded_split(cfg: TrainConfig, table: pd.DataFrame, learnt_from: tuple[Path, ...] = ()) -> pd.DataFrame:
    """The split.csv rows: every image's subset, and what the starting model (and the bundles in
    `learnt_from`) learnt from beyond this run's datasets (it counts as seen too)."""
    split = table[["image_id", "lesion_id", "dx", "subset"] + (["source"] if table["source"].nunique() > 1 else [])]
    starts = ([Path(cfg.init_bundle) / bundles.SPLIT_FILE] if cfg.init_bundle else []) + list(learnt_from)
    for starting_split in starts:
        split = splits.with_inherited_rows(split, starting_split)
    return split


def seen_photos(prep: Prepared, split: pd.DataFrame) -> copies.SeenPhotos:
    """The fingerprints of this run's photos that the bundle's split marks as trained or tuned on (its starting
    model's too, where they are among this run's datasets), for finding copies of them under other names."""
    learnt = split.loc[split["subset"].isin(["train", "val"]), "image_id"]
    rows = np.flatnonzero(prep.table["image_id"].isin(learnt).to_numpy())
    return copies.SeenPhotos.of(prep.table["image_id"].to_numpy()[rows], (prep.arrays.pixels[i] for i in rows))


def test_copies(prep: Prepared, seen: copies.SeenPhotos, log: ProgressLog) -> list[dict]:
    """The test photos that are copies of photos the model learnt from under another lesion id (collections hold
    a few twice), each with the photo it copies: recorded, so that a reader of the test figures knows."""
    rows = np.flatnonzero(prep.parts["test"])
    found = seen.copied(prep.arrays.pixels[i] for i in rows)
    listed = [{"image_id": str(prep.table["image_id"].iat[i]), "copy_of": match}
              for i, match in zip(rows, found) if match is not None]
    if listed:
        log.event("copies", f"{len(listed)} of the {len(rows)} test photos are copies of photos the model learnt "
                  "from, under other lesion ids (the manifest lists them)", count=len(listed))
    return listed


def split_patient_head(model: keras.Model, classes: list[str]) -> tuple[keras.Model, patient_details.PatientHead | None]:
    """The photo model inside a model fitted with a patient head (model.with_patient_head), and that head's
    weights; a photo-only model comes back as it is, with None."""
    if PATIENT_LOGITS_LAYER not in {layer.name for layer in model.layers}:
        return model, None
    # the photo model's own softmax lies outside the fitted graph; it has no weights, so a new one is the same
    probabilities = keras.layers.Activation("softmax", name="probabilities", dtype="float32")(
        model.get_layer(LOGITS_LAYER).output)
    photo = keras.Model(model.get_layer("image").output, probabilities, name=model.name.removesuffix("_patient"))
    kernel = model.get_layer(PATIENT_LOGITS_LAYER).get_weights()[0]
    return photo, patient_details.PatientHead(kernel * PATIENT_GAIN, list(classes))


def fit_familiarity(predictor: Predictor, train_pixels: np.ndarray,
                    val_features: np.ndarray) -> familiarity_model.Familiarity:
    """The familiarity model of a finished network: its sampled training images' pooled features (the
    photos as stored, through the served test-time views) against the validation images' for the threshold.
    Training and scripts/fit_familiarity.py both fit it here, so their references and thresholds agree."""
    sampled = train_pixels[familiarity_model.reference_rows(len(train_pixels))]
    return familiarity_model.fit(predictor.logits_and_features(sampled)[1], val_features)




def _source_counts(table: pd.DataFrame) -> dict:
    """Images per class and subset of each source, for the manifest (empty for a single dataset)."""
    if table["source"].nunique() < 2:
        return {}
    return {source: {"n_images": int(len(rows)), "n_lesions": int(rows["lesion_id"].nunique()),
                     "counts": {c: int(n) for c, n in rows["dx"].value_counts().reindex(CLASS_CODES, fill_value=0).items()},
                     "subsets": {k: int(n) for k, n in rows["subset"].value_counts().items()}}
            for source, rows in table.groupby("source", sort=False)}


def train(cfg: TrainConfig) -> Path:
    """Run a complete training and write the bundle to cfg.out; returns its path."""
    keras.utils.set_random_seed(cfg.seed)
    if cfg.balance not in BALANCE_CHOICES:
        raise ValueError(f"balance must be one of {BALANCE_CHOICES}")
    if cfg.patients and cfg.mix != "none":
        raise ValueError(patient_details.MIXING_REFUSAL)
    if not 0 <= cfg.patient_dropout < 1:
        raise ValueError(f"patient_dropout is a share of the training rows, in [0, 1), got {cfg.patient_dropout}.")
    log = ProgressLog(cfg.progress_file)
    started = time.time()
    log.event("start", f"Training {cfg.name or Path(cfg.out).name} on {data_name(cfg)}", config=asdict(cfg))
    prep = prepare(cfg, log)
    model, history, info = fit(cfg, prep, log)
    return finish(cfg, prep, model, history, info, log, started)


def recorded_config(source: bundles.Bundle, data_roots, out: str, name: str) -> TrainConfig:
    """The settings a bundle was trained with, for finishing its weights again (scripts/refinish.py,
    scripts/ensemble.py) on `data_roots` into `out`: the run's own files and names (its progress log,
    checkpoint, machine) are not the new bundle's, and its starting bundle was checked for leaks when it
    trained (the manifest keeps only that bundle's name)."""
    recorded = source.manifest["training"]
    fields = {f.name for f in dataclass_fields(TrainConfig)}
    kept = {k: v for k, v in recorded.items()
            if k in fields and k not in resume.FREE_SETTINGS and k not in ("data", "init_bundle", "init_member")}
    config = TrainConfig(**kept, data=data_roots, out=out, name=name)
    config.detail_side = source.detail_side
    return config


def prepare_as_recorded(cfg: TrainConfig, log: ProgressLog, split_csv: str | Path | None,
                        expected_fingerprint: str | None) -> Prepared:
    """`prepare`, refusing a dataset whose fingerprint differs from the one the weights were trained on (when
    known): a re-finished bundle or an ensemble must be tuned and tested on the very images its split names."""
    prep = prepare(cfg, log, split_csv)
    if expected_fingerprint and prep.arrays.fingerprint != expected_fingerprint:
        raise ValueError("The dataset differs from the one these weights were trained on (fingerprint mismatch); "
                         "validation and test would not be the held-out lesions.")
    return prep


def finish_from_weights(cfg: TrainConfig, weights_file: str, history_csv: str | None, fit_info: dict,
                        expected_fingerprint: str | None = None, split_csv: str | Path | None = None,
                        patient_head: patient_details.PatientHead | None = None) -> Path:
    """Make a bundle from weights trained elsewhere (scripts/train_gpu.py) or re-finished (scripts/refinish.py).

    The dataset is re-read and re-split with the same seed (or `split_csv`, a bundle's recorded split),
    so validation and test are the same lesions the training run held out: weights from elsewhere are
    checked by the split digest in `fit_info` (the same training and validation images), a re-finished
    bundle also by `expected_fingerprint` (the very same images, labels and bytes).
    """
    log = ProgressLog(cfg.progress_file)
    started = time.time()
    prep = prepare_as_recorded(cfg, log, split_csv, expected_fingerprint)
    if fit_info.get("split_digest") and splits.split_digest(prep.table) != fit_info["split_digest"]:
        raise ValueError("These weights were trained and validated on other images than this dataset and seed give "
                         "(split digest mismatch), so its test split could hold images they were fitted on.")
    model = build_model(len(prep.classes), cfg.img_size, cfg.alpha, weights=None, dropout=cfg.dropout,
                        colour_constancy=cfg.colour_constancy)
    model.load_weights(weights_file)
    history = pd.read_csv(history_csv, index_col="epoch") if history_csv else None   # a soup has none of its own
    # a re-finished bundle's split also lists what its weights learnt from other datasets: still seen
    return finish(cfg, prep, model, history, fit_info, log, started, patient_head,
                  learnt_from=(Path(split_csv),) if split_csv else ())


def _choose_tta(cfg: TrainConfig, staged: bundles.Bundle, pixels, labels, groups, log: ProgressLog,
                patients=None) -> str:
    """The test-time views, chosen on validation (balanced accuracy + macro F1).

    The half turn (2 views) is kept when it scores higher than one view. The four quarter turns cost
    twice as much again, so they must be clearly better than that choice: ahead in 90% of paired lesion
    resamples (on the default model they were: 1.458 against 1.407, docs/experiments.md run 17).
    """
    if cfg.tta != "auto":
        return cfg.tta
    predictions, scores = {}, {}
    for mode in ("none", "half_turn", "quarter_turns"):
        staged.manifest["test_time_augmentation"] = mode
        predictions[mode] = Predictor(staged).logits(pixels, patients=patients).argmax(1)
        scores[mode] = calibration.selection_score(labels, predictions[mode])
    chosen = "half_turn" if scores["half_turn"] > scores["none"] else "none"
    if calibration.clearly_better(labels, groups, predictions["quarter_turns"], predictions[chosen]):
        chosen = "quarter_turns"
    log.event("tta", "Test-time views on validation: " + ", ".join(f"{m} {v:.4f}" for m, v in scores.items()) +
              f"; using {chosen}", scores=scores)
    return chosen


def _initial_model(cfg: TrainConfig, n_classes: int) -> tuple[keras.Model, patient_details.PatientHead | None]:
    """The photo model to fit, from the starting weights or bundle, and that bundle's patient head (if any)."""
    model = build_model(n_classes, cfg.img_size, cfg.alpha, weights=None if cfg.init_bundle else cfg.weights,
                        dropout=cfg.dropout, colour_constancy=cfg.colour_constancy)
    if cfg.init_bundle:
        source = bundles.load_bundle(cfg.init_bundle)
        if is_ensemble(source.model) != bool(cfg.init_member):
            raise ValueError(
                f"The starting bundle {Path(cfg.init_bundle).name} holds several networks side by side (an "
                "ensemble): name the one to continue with --init-member N." if is_ensemble(source.model) else
                f"--init-member picks a network of an ensemble; {Path(cfg.init_bundle).name} holds one network.")
        if source.input_size != cfg.img_size or source.manifest["alpha"] != cfg.alpha:
            raise ValueError(f"The starting bundle is alpha {source.manifest['alpha']} at "
                             f"{source.input_size}px; set --alpha and --img-size to match.")
        if not cfg.init_member:
            model.set_weights(source.model.get_weights())
            return model, source.patient_head
        return member_of(source, cfg.init_member, model)
    return model, None


def member_of(source: bundles.Bundle, index: int, network: keras.Model | None = None
              ) -> tuple[keras.Model, patient_details.PatientHead | None]:
    """An ensemble bundle's `index`th network as a model of its own, with its patient head: what `--init-member`
    continues and `scripts/ensemble.py BUNDLE:N` joins with other networks. `network` is the model to fill (one
    train.py built); without it, one of the member's own shape is built. Ensembles joined before their networks'
    own logits biases and patient heads were recorded give the ensemble's means instead (one constant per class
    off, which fitting relearns)."""
    def recorded(key):
        values = source.manifest["training"].get(key) or []
        return values[index - 1] if 1 <= index <= len(values) else None
    weights = member_weights(source.model, index, recorded("member_biases"))   # refuses a network it lacks
    if network is None:
        member = source.model.get_layer(f"{MEMBER_PREFIX}{index}")
        network = build_model(len(source.classes), source.input_size, source.manifest["alpha"], weights=None,
                              dropout=0.0, colour_constancy=COLOUR_LAYER in {layer.name for layer in member.layers})
    network.set_weights(weights)
    head = recorded("member_patient_heads")
    if source.patient_head is None or head is None:
        return network, source.patient_head
    return network, patient_details.PatientHead(np.asarray(head, np.float32), list(source.patient_head.classes))


def _refuse_test_leak(init_bundle: str, table: pd.DataFrame) -> None:
    """A run that starts from a bundle must not test on images that bundle was fitted or tuned on."""
    problem = splits.held_out_leak(Path(init_bundle) / bundles.SPLIT_FILE, table)
    if problem:
        raise ValueError(problem + " Use the dataset, --seed, --test-fraction and --val-fraction the starting "
                         "bundle used, or --split-from it, so the test figures stay honest.")


def _scaled(cfg: TrainConfig, replicas: int) -> TrainConfig:
    """The global batch grows with the replicas, and the learning rates with it (linear scaling)."""
    return replace(cfg, batch_size=cfg.batch_size * replicas, lr=cfg.lr * replicas, head_lr=cfg.head_lr * replicas)


def _median_short_side(table: pd.DataFrame, sample: int = 200) -> int:
    from PIL import Image
    paths = table["path"].sample(min(sample, len(table)), random_state=0)
    sides = []
    for path in paths:
        try:
            with Image.open(path) as image:
                sides.append(min(image.size))
        except (OSError, Image.DecompressionBombError):    # read_images names or skips these
            continue
    return int(np.median(sides)) if sides else 10_000


def _versions() -> dict:
    import sklearn
    return {"skin_core": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "scikit-learn": sklearn.__version__, "python": platform.python_version()}
