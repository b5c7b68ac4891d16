"""The Predictor: a loaded bundle ready to answer, with calibration and Grad-CAM built in, and the served
forward pass it runs (make_forward: test-time views, logits and Grad-CAM maps in one traced call; the
patient's details and the calibration are added to the logits after it, in one place, Predictor.calibrated).

It is created once per process (the app caches it) and its functions have a fixed input signature,
so each is traced once; the single-image path is warmed up at load, so a user's first upload is as
fast as the next one.

Grad-CAM weights each channel of the last convolutional block by the mean gradient of a class
logit with respect to it. Between that block and the logits there is only pooling and a dense
layer, so that gradient is the dense kernel itself and the maps of all classes come without a
backward pass, in the same call: the page can switch the explained class without another pass.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import partial

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from scipy.special import softmax

from . import copies, images, patients as patient_details
from .bundle import Bundle, load_bundle
from .model import LAST_CONV_LAYER, LOGITS_LAYER, POOL_LAYER, is_ensemble
from .options import TTA_VIEW_NAMES, TTA_VIEWS


def views(images, tta: str) -> list:
    """The picture and its extra views (options.TTA_VIEW_NAMES), each its own batch of the same size."""
    return [_VIEW_OPERATIONS[name](images) for name in TTA_VIEW_NAMES[tta]]


def _turn(batch, quarters: int):
    """A batch (b, h, w, c) turned counter-clockwise by quarters x 90 degrees, as tf.image.rot90 does, but
    by slicing and transposing only: rot90's shape checks add conditionals that slow the traced graph."""
    quarters %= 4
    if quarters == 1:
        return tf.transpose(batch, [0, 2, 1, 3])[:, ::-1]
    if quarters == 2:
        return batch[:, ::-1, ::-1]
    if quarters == 3:
        return tf.transpose(batch, [0, 2, 1, 3])[:, :, ::-1]
    return batch


def _flip_left_right(batch):
    return batch[:, :, ::-1]


def _flip_up_down(batch):
    return batch[:, ::-1]


# named functions, not lambdas: AutoGraph cannot read the source of several lambdas on one line and warns
_VIEW_OPERATIONS = {"identity": partial(_turn, quarters=0), "rot90": partial(_turn, quarters=1),
                    "rot180": partial(_turn, quarters=2), "rot270": partial(_turn, quarters=3),
                    "flip_left_right": _flip_left_right, "flip_up_down": _flip_up_down}


def _features(features_model, images, tta: str, side_by_side: bool):
    """Last-block features of every view, stacked along the batch: (views * b, h, w, k).

    For one network the views go through it as two calls: independent calls run side by side on the
    CPU's cores, so on 2 cores two views cost about 1.5 single passes instead of 2. Four views go as two
    pairs: as fast as four calls, and two traced networks instead of four shorten the start-up warm-up.
    An ensemble's networks already run side by side (`side_by_side`), so its views go as one batch in one
    call: as fast, and half the tracing at start-up (about 1 s for two MobileNets).
    """
    parts = views(images, tta)
    if side_by_side:
        parts = [tf.concat(parts, axis=0)]
    elif len(parts) == 4:
        parts = [tf.concat(parts[:2], axis=0), tf.concat(parts[2:], axis=0)]
    return tf.concat([features_model(part, training=False) for part in parts], axis=0)


def _mean_of_views(values, tta: str, spatial: bool):
    """Average the views' results, undoing each view's turn or flip first for spatial maps."""
    if tta == "none":
        return values
    parts = tf.split(values, TTA_VIEWS[tta], axis=0)
    if spatial and tta == "half_turn":
        parts[1] = parts[1][:, ::-1, ::-1]
    elif spatial and tta == "quarter_turns":
        parts = [parts[0]] + [_turn(part, 4 - k) for k, part in zip((1, 2, 3), parts[1:])]
    elif spatial:
        parts = [parts[0], parts[1][:, :, ::-1], parts[2][:, ::-1], parts[3][:, ::-1, ::-1]]
    return tf.add_n(parts) / float(len(parts))


def make_forward(model: keras.Model, tta: str):
    """Two traced functions over uint8-valued float batches: (logits, pooled) and (logits, cams, pooled),
    where pooled are the features the dense head reads (for skin_core.familiarity). The logits are the
    photo's alone, uncalibrated. With test-time views (see TTA_VIEWS; a dermoscopy photo has no preferred
    orientation), logits, maps and pooled features are the mean over the views, still in one traced call.
    """
    if tta not in TTA_VIEWS:
        raise ValueError(f"Unknown test-time augmentation {tta!r}; expected one of {', '.join(TTA_VIEWS)}.")
    size = model.input_shape[1]
    spec = [tf.TensorSpec((None, size, size, 3), tf.float32)]
    features_model = keras.Model(model.input, model.get_layer(LAST_CONV_LAYER).output)
    side_by_side = is_ensemble(model)
    pool, dense = model.get_layer(POOL_LAYER), model.get_layer(LOGITS_LAYER)

    @tf.function(input_signature=spec)
    def logits_only(images):
        pooled = pool(_features(features_model, images, tta, side_by_side))
        return _mean_of_views(dense(pooled), tta, spatial=False), _mean_of_views(pooled, tta, spatial=False)

    @tf.function(input_signature=spec)
    def with_cams(images):
        features = _features(features_model, images, tta, side_by_side)
        pooled = pool(features)
        logits = dense(pooled)
        # Grad-CAM's channel weights are the spatial mean of d logit_c / d features. Behind global average
        # pooling and a dense layer that gradient is kernel[k, c] / (h * w) at every position, so the maps
        # are relu(features . kernel) up to a positive factor that the normalisation below removes: exact
        # Grad-CAM without a backward pass (tests/test_explain.py checks it against GradientTape).
        cams = tf.nn.relu(tf.einsum("bhwk,kc->bhwc", features, dense.kernel.value))
        logits, cams = _mean_of_views(logits, tta, spatial=False), _mean_of_views(cams, tta, spatial=True)
        peak = tf.reduce_max(cams, axis=[1, 2], keepdims=True)
        cams = tf.math.divide_no_nan(cams, peak)                    # each class map in [0, 1]
        return logits, cams, _mean_of_views(pooled, tta, spatial=False)

    return logits_only, with_cams


@dataclass
class Answer:
    """Calibrated probabilities over the classes, ranked: one photo's (Analysis) or one lesion's (lesion)."""
    classes: list[str]
    probabilities: np.ndarray     # (classes,)

    def ranked(self) -> list[tuple[str, float]]:
        order = np.argsort(self.probabilities)[::-1]
        return [(self.classes[i], float(self.probabilities[i])) for i in order]

    def as_dict(self) -> dict:
        return {c: round(float(p), 6) for c, p in zip(self.classes, self.probabilities)}


@dataclass
class Analysis(Answer):
    """One image's result: calibrated probabilities and a Grad-CAM map per class."""
    cams: np.ndarray              # (h, w, classes), each in [0, 1]
    model_input: np.ndarray       # the (size, size, 3) uint8 picture the model saw
    decoded: images.DecodedImage
    distance: float | None = None    # from the training images in feature space (None: the bundle has no
    distance_limit: float | None = None   # familiarity model); above the limit the photo is unlike them
    patient: dict | None = None      # the age, sex and body site the answer used (None: the photo alone)
    copy_of: str | None = None       # the image id of a photo the model learnt from that this one is a copy of
    logits: np.ndarray | None = None  # (classes,) before calibration, patient push included: what the
                                      # probabilities are calibrated from, and what several photos average (lesion)

    def cam(self, code: str) -> np.ndarray:
        return self.cams[..., self.classes.index(code)]


class Predictor:
    """A bundle made ready to answer: its forward pass traced once, with the bundle's calibration and views.
    What the bundle says (classes, input size, ...) is read through it, never copied; a bundle's manifest is
    not changed after a Predictor is made from it (the traced pass holds its calibration and views)."""

    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self._feature_width = int(bundle.model.get_layer(POOL_LAYER).output.shape[-1])
        self._logits, self._with_cams = make_forward(bundle.model, bundle.test_time_augmentation)
        # warm up the path a single upload takes; the batch path (evaluation) traces on its first call
        self._with_cams(tf.zeros((1, self.input_size, self.input_size, 3), tf.float32))

    classes = property(lambda self: self.bundle.classes)
    input_size = property(lambda self: self.bundle.input_size)
    detail_side = property(lambda self: self.bundle.detail_side)
    temperature = property(lambda self: self.bundle.temperature)
    logit_bias = property(lambda self: self.bundle.logit_bias)
    tta = property(lambda self: self.bundle.test_time_augmentation)
    familiarity = property(lambda self: self.bundle.familiarity)
    patient_head = property(lambda self: self.bundle.patient_head)   # None: the model reads the photo alone

    @classmethod
    def from_path(cls, path) -> "Predictor":
        return cls(load_bundle(path))

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        return images.prepare(rgb, self.input_size, self.detail_side)

    def logits(self, pixels: np.ndarray, batch_size: int = 64, *, patients=None) -> np.ndarray:
        """Uncalibrated logits for prepared uint8 pictures (n, size, size, 3); see logits_and_features."""
        return self.logits_and_features(pixels, batch_size, patients=patients)[0]

    def logits_and_features(self, pixels: np.ndarray, batch_size: int = 64, *,
                            patients=None) -> tuple[np.ndarray, np.ndarray]:
        """Uncalibrated logits and the pooled features the head reads, for prepared uint8 pictures.

        `patients`: a table of age, sex and localization, one row per picture (None: nothing known); a model
        with a patient head adds their push to the logits, a photo-only model ignores them.
        """
        logits, features = self.photo_logits_and_features(pixels, batch_size)
        return self.with_patients(logits, patients), features

    def photo_logits_and_features(self, pixels: np.ndarray, batch_size: int = 64,
                                  on_batch=None) -> tuple[np.ndarray, np.ndarray]:
        """The network's own logits (no patient push) and pooled features: one pass that with_patients can
        then complete with and without the patients' details. `on_batch(done, total)` follows it."""
        batches = []
        for i in range(0, len(pixels), batch_size):
            batches.append(self._logits(tf.convert_to_tensor(pixels[i:i + batch_size], tf.float32)))
            if on_batch:
                on_batch(min(i + batch_size, len(pixels)), len(pixels))
        if not batches:
            return np.zeros((0, len(self.classes)), np.float32), np.zeros((0, self._feature_width), np.float32)
        return (np.concatenate([logits.numpy() for logits, _ in batches]),
                np.concatenate([pooled.numpy() for _, pooled in batches]))

    def with_patients(self, photo_logits: np.ndarray, patients=None) -> np.ndarray:
        """The photo's logits plus the patient head's push (unchanged for a photo-only model)."""
        if self.patient_head is None:
            return photo_logits
        return photo_logits + self.patient_head.logits(patients, len(photo_logits))

    def probabilities(self, pixels: np.ndarray, batch_size: int = 64, *, patients=None) -> np.ndarray:
        """Calibrated probabilities for prepared pictures: the numbers evaluation reports."""
        return self.calibrated(self.logits(pixels, batch_size, patients=patients))

    def probabilities_given_and_alone(self, pixels: np.ndarray, patients,
                                      on_batch=None) -> tuple[np.ndarray, np.ndarray | None]:
        """Calibrated probabilities with each picture's details and, for a model that reads them, with none (what a
        photo sent without them is answered): one pass over the pictures."""
        photo_logits, _ = self.photo_logits_and_features(pixels, on_batch=on_batch)
        alone = self.calibrated(self.with_patients(photo_logits)) if self.patient_head is not None else None
        return self.calibrated(self.with_patients(photo_logits, patients)), alone

    def calibrated_logits(self, logits: np.ndarray) -> np.ndarray:
        """The logits the calibrated probabilities are the softmax of: logit bias added, temperature applied."""
        return (logits + self.logit_bias) / self.temperature

    def calibrated(self, logits: np.ndarray) -> np.ndarray:
        return softmax(self.calibrated_logits(logits), axis=-1)

    def probabilities_and_distances(self, pixels: np.ndarray, batch_size: int = 64, *, patients=None):
        """Calibrated probabilities and each picture's distance from the training images in feature space
        (None without a familiarity model), in one pass."""
        logits, features = self.logits_and_features(pixels, batch_size, patients=patients)
        distances = self.familiarity.distance(features) if self.familiarity is not None else None
        return self.calibrated(logits), distances

    def evaluate(self, dataset_root, *, skip_bad: bool = False, skip_other_labels: bool = False, on_progress=None,
                 on_stage=None, on_scoring=None, leave_out_seen: bool = True) -> dict:
        """The evaluation report of this model on a labelled dataset folder (any layout data reads), without the
        images and lesions its split.csv says it trained or was tuned on (unless `leave_out_seen` is off:
        then it is a check of the code, not of the model). `on_progress(done, total)` follows the reading of the
        images, `on_stage(text)` names each later step and `on_scoring(done, total)` follows the longest, so a
        page can say what the wait is for."""
        say = on_stage or (lambda text: None)
        from . import data, evaluation, splits
        from .bundle import SPLIT_FILE
        dataset = data.load_dataset(dataset_root, skip_bad=skip_bad, classes=self.classes, every_class=False,
                                    skip_other_labels=skip_other_labels)
        table, seen = dataset.table, 0
        split_csv = self.bundle.path / SPLIT_FILE
        split_known = split_csv.is_file()
        if leave_out_seen and split_known:
            try:
                table, seen = splits.leave_out_seen(table, split_csv)
            except data.DatasetError as exc:
                raise data.DatasetError(f"This model's {SPLIT_FILE} cannot be read ({exc}), so the images it "
                                        "trained on cannot be left out.") from None
            if table.empty:
                raise data.DatasetError(f"All {seen} images of this dataset, or their lesions, were used to train or "
                                        "tune this model, so none of them can test it. Its own held-out test split "
                                        "is what the Evaluation page shows.")
        arrays = data.read_images(table, self.input_size, self.detail_side, skip_bad=skip_bad,
                                  on_progress=on_progress)
        copies_left_out = 0
        if leave_out_seen and self.bundle.seen is not None:   # the same photos under other names
            say(f"Looking for copies of the photos this model learnt from among {len(arrays.table)} images")
            arrays, copies_left_out = _without_copies(arrays, self.bundle.seen)
            if arrays.table.empty:
                raise data.DatasetError(f"All {seen + copies_left_out} images of this dataset are photos this model "
                                        "was trained or tuned on (some under other names), so none of them can "
                                        "test it.")
        labels = arrays.table["dx"].map({c: i for i, c in enumerate(self.classes)}).to_numpy()
        rows = patient_details.read(dataset_root, arrays.table["image_id"]) if self.patient_head else None
        say(f"Scoring {len(arrays.table)} images with the model")
        probs, alone = self.probabilities_given_and_alone(arrays.pixels, rows, on_batch=on_scoring)
        # a photo filed twice under two lesion ids is one lesion to the intervals, which resample lesions
        say("Looking for photos filed twice in this dataset")
        lesions = copies.copy_groups(arrays.table["lesion_id"], arrays.pixels)
        scored = dict(groups=lesions, image_ids=arrays.table["image_id"], thresholds=self.bundle.thresholds)
        report = evaluation.build_report(labels, probs, self.classes, **scored)
        report.update(dataset=str(dataset_root), model=self.bundle.name, skipped=dataset.skipped + arrays.unreadable,
                      left_out_seen=seen, left_out_copies=copies_left_out,
                      split_known=split_known and leave_out_seen,
                      lesions_named=bool((arrays.table["lesion_id"] != arrays.table["image_id"]).any()),
                      lesions_joined_by_copies=copies.lesions_joined(arrays.table["lesion_id"], lesions))
        if rows is not None:
            known = patient_details.coverage(rows)
            report["patient_details"] = {"known": known, "unrecognised": patient_details.unrecognised(rows)}
            if any(known.values()):        # else the figures above are already the photos' alone
                report["photo_only"] = evaluation.manifest_test_figures(
                    evaluation.build_report(labels, alone, self.classes, **scored))
        return report

    def analyse(self, decoded: images.DecodedImage, patient: dict | None = None) -> Analysis:
        """One photo's answer; `patient` is patients.check's row (age, sex, localization), or None."""
        model_input = self.prepare(decoded.rgb)
        logits, cams, pooled = self._with_cams(tf.convert_to_tensor(model_input[None], tf.float32))
        logits = logits.numpy()
        if self.patient_head is not None:     # the maps stay the photo's: the push does not depend on it
            logits = self.with_patients(logits, None if patient is None else pd.DataFrame([patient]))
        probs = self.calibrated(logits)
        distance = limit = None
        if self.familiarity is not None:
            distance, limit = float(self.familiarity.distance(pooled.numpy())[0]), self.familiarity.threshold
        used = patient if self.patient_head is not None and patient is not None else None
        copy_of = self.bundle.seen.copied(model_input[None])[0] if self.bundle.seen is not None else None
        return Analysis(self.classes, np.asarray(probs)[0].astype(np.float64), cams.numpy()[0], model_input, decoded,
                        distance, limit, used, copy_of, logits[0].astype(np.float64))

    def analyse_bytes(self, data: bytes, patient: dict | None = None) -> Analysis:
        return self.analyse(images.decode(data), patient)


def _without_copies(arrays, seen) -> tuple:
    """The images that are not copies of a photo the model learnt from, and how many were left out."""
    kept = np.array([match is None for match in seen.copied(arrays.pixels)], bool)
    if kept.all():
        return arrays, 0
    kept_rows = arrays.table[kept].reset_index(drop=True)
    return replace(arrays, table=kept_rows, pixels=arrays.pixels[kept]), int((~kept).sum())
