"""The Predictor: a loaded bundle ready to answer, with calibration and Grad-CAM built in.

It is created once per process (the app caches it) and its functions have a fixed input signature,
so each is traced once; the single-image path is warmed up at load, so a user's first upload is as
fast as the next one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import tensorflow as tf
from scipy.special import softmax

from . import explain, images, patients as patient_details
from .bundle import Bundle, load_bundle
from .model import POOL_LAYER


@dataclass
class Analysis:
    """One image's result: calibrated probabilities and a Grad-CAM map per class."""
    classes: list[str]
    probabilities: np.ndarray     # (classes,)
    cams: np.ndarray              # (h, w, classes), each in [0, 1]
    model_input: np.ndarray       # the (size, size, 3) uint8 picture the model saw
    decoded: images.DecodedImage
    distance: float | None = None    # from the training images in feature space (None: the bundle has no
    distance_limit: float | None = None   # familiarity model); above the limit the photo is unlike them
    patient: dict | None = None      # the age, sex and body site the answer used (None: the photo alone)

    def ranked(self) -> list[tuple[str, float]]:
        order = np.argsort(self.probabilities)[::-1]
        return [(self.classes[i], float(self.probabilities[i])) for i in order]

    def as_dict(self) -> dict:
        return {c: round(float(p), 6) for c, p in zip(self.classes, self.probabilities)}

    def cam(self, code: str) -> np.ndarray:
        return self.cams[..., self.classes.index(code)]


class Predictor:
    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.classes = bundle.classes
        self.input_size = bundle.input_size
        self.detail_side = bundle.detail_side
        self.temperature = bundle.temperature
        self.logit_bias = bundle.logit_bias
        self.tta = bundle.manifest.get("test_time_augmentation", "none")
        self.familiarity = bundle.familiarity
        self.patient_head = bundle.patient_head   # None: the model reads the photo alone
        self._feature_width = int(bundle.model.get_layer(POOL_LAYER).output.shape[-1])
        self._logits, self._with_cams = explain.make_forward(bundle.model, self.temperature, self.logit_bias,
                                                             self.tta)
        # warm up the path a single upload takes; the batch path (evaluation) traces on its first call
        self._with_cams(tf.zeros((1, self.input_size, self.input_size, 3), tf.float32))

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

    def photo_logits_and_features(self, pixels: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """The network's own logits (no patient push) and pooled features: one pass that with_patients can
        then complete with and without the patients' details."""
        batches = [self._logits(tf.convert_to_tensor(pixels[i:i + batch_size], tf.float32))
                   for i in range(0, len(pixels), batch_size)]
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

    def evaluate(self, dataset_root, *, skip_bad: bool = False, on_progress=None, leave_out_seen: bool = True) -> dict:
        """The evaluation report of this model on a labelled dataset folder (either layout), without the
        images and lesions its split.csv says it trained or was tuned on (unless `leave_out_seen` is off:
        then it is a check of the code, not of the model)."""
        from . import data, evaluation
        from .bundle import SPLIT_FILE
        dataset = data.load_dataset(dataset_root, skip_bad=skip_bad, classes=self.classes, every_class=False)
        table, seen = dataset.table, 0
        split_csv = self.bundle.path / SPLIT_FILE
        split_known = split_csv.is_file()
        if leave_out_seen and split_known:
            try:
                table, seen = data.leave_out_seen(table, split_csv)
            except data.DatasetError as exc:
                raise data.DatasetError(f"This model's {SPLIT_FILE} cannot be read ({exc}), so the images it "
                                        "trained on cannot be left out.") from None
            if table.empty:
                raise data.DatasetError(f"All {seen} images of this dataset, or their lesions, were used to train or "
                                        "tune this model, so none of them can test it. Its own held-out test split "
                                        "is what the Evaluation page shows.")
        arrays = data.read_images(table, self.input_size, self.detail_side, skip_bad=skip_bad,
                                  on_progress=on_progress)
        labels = arrays.table["dx"].map({c: i for i, c in enumerate(self.classes)}).to_numpy()
        rows = patient_details.read(dataset_root, arrays.table["image_id"]) if self.patient_head else None
        report = evaluation.build_report(labels, self.probabilities(arrays.pixels, patients=rows), self.classes,
                                         groups=arrays.table["lesion_id"], image_ids=arrays.table["image_id"],
                                         thresholds=self.bundle.thresholds)
        report.update(dataset=str(dataset_root), model=self.bundle.name, skipped=dataset.skipped + arrays.unreadable,
                      left_out_seen=seen, split_known=split_known and leave_out_seen,
                      lesions_named=bool((arrays.table["lesion_id"] != arrays.table["image_id"]).any()))
        return report

    def analyse(self, decoded: images.DecodedImage, patient: dict | None = None) -> Analysis:
        """One photo's answer; `patient` is patients.check's row (age, sex, localization), or None."""
        model_input = self.prepare(decoded.rgb)
        probs, logits, cams, pooled = self._with_cams(tf.convert_to_tensor(model_input[None], tf.float32))
        if self.patient_head is not None:     # the maps stay the photo's: the push does not depend on it
            rows = None if patient is None else pd.DataFrame([patient])
            probs = self.calibrated(self.with_patients(logits.numpy(), rows))
        distance = limit = None
        if self.familiarity is not None:
            distance, limit = float(self.familiarity.distance(pooled.numpy())[0]), self.familiarity.threshold
        used = patient if self.patient_head is not None and patient is not None else None
        return Analysis(self.classes, np.asarray(probs)[0].astype(np.float64), cams.numpy()[0], model_input, decoded,
                        distance, limit, used)

    def analyse_bytes(self, data: bytes, patient: dict | None = None) -> Analysis:
        return self.analyse(images.decode(data), patient)
