"""The training recipe shared by every backend: augmentation, class balancing, optimiser, metrics
and best-epoch selection. Keras only (no TensorFlow import), so the same recipe runs under the
TensorFlow backend here and under PyTorch on a GPU machine (scripts/train_gpu.py).
"""
from __future__ import annotations

import math

import keras
import numpy as np
from PIL import Image
from sklearn.utils.class_weight import compute_class_weight

from . import calibration, images
from .options import MIX_CHOICES


class BestWeights(keras.callbacks.Callback):
    """Keep the weights of the best validation epoch across all phases."""

    def __init__(self, monitor: str = "val_macro_f1"):
        super().__init__()
        self.monitor, self.best, self.weights, self.best_epoch = monitor, -math.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best, self.weights, self.best_epoch = float(value), self.model.get_weights(), epoch + 1


class RandomFlipRotateZoom(keras.layers.Layer):
    """Random flips, rotation and zoom resampled once, as one affine map per image.

    The same distribution as RandomFlip("horizontal_and_vertical"), RandomRotation(rotation) and
    RandomZoom(zoom) in a row, at a third of the cost and with one interpolation instead of two:
    on a 2-core CPU that time comes straight out of training. `rotation` is a fraction of a full
    turn either way; `zoom` bounds are Keras's (negative zooms in).
    """

    def __init__(self, rotation: float = 0.5, zoom: tuple[float, float] = (-0.2, 0.1), fill_mode: str = "reflect",
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rotation, self.zoom, self.fill_mode, self.seed = rotation, tuple(zoom), fill_mode, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images, training=True):
        if not training:
            return images
        ops = keras.ops
        batch = ops.shape(images)[0]
        height, width = ops.cast(ops.shape(images)[1], "float32"), ops.cast(ops.shape(images)[2], "float32")
        angle = keras.random.uniform((batch,), -self.rotation * 2 * math.pi, self.rotation * 2 * math.pi,
                                     seed=self.seed_generator)
        scale = 1.0 + keras.random.uniform((batch,), self.zoom[0], self.zoom[1], seed=self.seed_generator)
        flip_x = ops.where(keras.random.uniform((batch,), seed=self.seed_generator) < 0.5, -1.0, 1.0)
        flip_y = ops.where(keras.random.uniform((batch,), seed=self.seed_generator) < 0.5, -1.0, 1.0)
        cos, sin = ops.cos(angle) * scale, ops.sin(angle) * scale
        # output pixel p samples the input at centre + scale * R(angle) * F * (p - centre)
        a0, a1, b0, b1 = cos * flip_x, -sin * flip_y, sin * flip_x, cos * flip_y
        cx, cy = (width - 1) / 2, (height - 1) / 2
        a2, b2 = cx - a0 * cx - a1 * cy, cy - b0 * cx - b1 * cy
        zeros = ops.zeros_like(a0)
        transform = ops.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        return keras.ops.image.affine_transform(images, transform, interpolation="bilinear", fill_mode=self.fill_mode)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rotation": self.rotation, "zoom": self.zoom, "fill_mode": self.fill_mode,
                "seed": self.seed}


def augmenter(seed: int, photometric: bool = False) -> keras.Sequential:
    """The paper's augmentation: rotation, horizontal and vertical flips, zoom; training only.

    `photometric` adds what differs between dermatoscopes and cameras rather than between lesions:
    wider brightness and contrast changes, saturation from paler to stronger colour, and sharpness from
    softer to crisper (0.5 leaves an image unchanged in Keras's saturation and sharpness layers).
    """
    light = 0.2 if photometric else 0.1
    layers = [
        RandomFlipRotateZoom(rotation=0.5, zoom=(-0.2, 0.1), fill_mode="reflect", seed=seed),
        keras.layers.RandomBrightness(light, value_range=(0, 255), seed=seed + 3),
        keras.layers.RandomContrast(light, value_range=(0, 255), seed=seed + 4),
    ]
    if photometric:
        layers += [keras.layers.RandomSaturation((0.3, 0.7), value_range=(0, 255), seed=seed + 5),
                   keras.layers.RandomSharpness((0.25, 0.75), value_range=(0, 255), seed=seed + 6)]
    return keras.Sequential(layers, name="augmentation")


class JpegResavedBatches(keras.utils.PyDataset):
    """Shuffled batches of in-memory training arrays with a share of each batch's photos re-saved as
    JPEG at a random quality, as train.py's --compression does in tf.data, for scripts/train_gpu.py,
    which has no TensorFlow. There the augmentation layers run inside the model, so the re-saving
    comes before the flips, turns and zoom (train.py re-saves after them)."""

    def __init__(self, pixels: np.ndarray, targets: np.ndarray, batch_size: int, seed: int, share: float = 0.5,
                 qualities: tuple[int, int] = (30, 95), **kwargs):
        super().__init__(**kwargs)
        self.pixels, self.targets, self.batch_size, self.seed = pixels, targets, batch_size, seed
        self.share, self.qualities, self.epoch = share, qualities, 0
        self.order = self._order()

    def __len__(self) -> int:
        return -(-len(self.targets) // self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        rng = np.random.default_rng((self.seed, self.epoch, index))    # the same draws whichever worker asks
        batch = self.pixels[rows]                     # a copy (fancy indexing): the originals stay
        for k in np.flatnonzero(rng.random(len(rows)) < self.share):
            quality = int(rng.integers(self.qualities[0], self.qualities[1] + 1))
            photo = Image.fromarray(np.clip(batch[k], 0, 255).astype(np.uint8))
            batch[k] = np.asarray(images.jpeg_resaved(photo, quality), dtype=batch.dtype)
        return batch, self.targets[rows]

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()

    def _order(self) -> np.ndarray:
        return np.random.default_rng((self.seed, self.epoch)).permutation(len(self.targets))


def mixer(mode: str, seed: int) -> keras.layers.Layer | None:
    """Batch-level label mixing (MixUp or CutMix), a regulariser for a small, imbalanced set that the
    network otherwise memorises; labels are mixed in proportion, so they must be one-hot or soft."""
    if mode not in MIX_CHOICES:
        raise ValueError(f"mix must be one of {MIX_CHOICES}")
    if mode == "mixup":
        return keras.layers.MixUp(alpha=0.2, seed=seed)
    if mode == "cutmix":
        return keras.layers.CutMix(factor=1.0, seed=seed)
    return None


@keras.saving.register_keras_serializable(package="skin_core")
class LogitAdjustedCrossEntropy(keras.losses.Loss):
    """Cross-entropy on the logits shifted by log(class prior) (Menon et al., "Long-tail learning via logit
    adjustment", ICLR 2021).

    A rare class must beat a common one by the log of their frequency ratio during training, so the model's
    own (unshifted) outputs come out balanced across classes, with no loss weights to inflate the few rare
    photos' gradients. Takes the model's probabilities (log-softmax of the logits, up to a constant), as
    Keras's own cross-entropy does, clipped the same way.
    """

    def __init__(self, log_prior, label_smoothing: float = 0.0, name: str = "logit_adjusted_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.log_prior, self.label_smoothing = [float(v) for v in log_prior], float(label_smoothing)

    def call(self, y_true, y_pred):
        log_probabilities = keras.ops.log(keras.ops.clip(y_pred, keras.config.epsilon(), 1.0))
        adjusted = keras.ops.log_softmax(log_probabilities + keras.ops.convert_to_tensor(self.log_prior), axis=-1)
        targets = y_true * (1.0 - self.label_smoothing) + self.label_smoothing / len(self.log_prior)
        return -keras.ops.sum(targets * adjusted, axis=-1)

    def get_config(self):
        return {**super().get_config(), "log_prior": self.log_prior, "label_smoothing": self.label_smoothing}


def training_loss(labels: np.ndarray, n_classes: int, mode: str, label_smoothing: float) -> keras.losses.Loss:
    """The loss for a balancing mode: logit-adjusted for `logit_adjusted`, else plain cross-entropy (loss
    weights, if any, come from class_weights)."""
    if mode == "logit_adjusted":      # the same prior the finishing step's prior shift uses
        return LogitAdjustedCrossEntropy(calibration.log_prior(labels, n_classes), label_smoothing)
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    if mode not in ("weights", "sqrt_weights"):
        return None
    weights = compute_class_weight("balanced", classes=np.arange(n_classes), y=labels)
    if mode == "sqrt_weights":
        weights = np.sqrt(weights)
    weights = weights / np.average(weights, weights=np.bincount(labels, minlength=n_classes))
    return {i: float(w) for i, w in enumerate(weights)}


def phases(head_epochs: int, epochs: int, fine_tune_fraction: float, head_lr: float, lr: float) -> list[tuple]:
    """The two training phases as (name, first epoch, last epoch, trainable share of the body, peak
    learning rate): the head alone on a frozen body, then fine-tuning; a phase with no epochs is left out."""
    head_epochs = min(head_epochs, epochs)
    plan = [("head", 0, head_epochs, 0.0, head_lr), ("fine-tune", head_epochs, epochs, fine_tune_fraction, lr)]
    return [phase for phase in plan if phase[2] > phase[1]]


def phase_learning_rate(phase: str, lr: float, steps_per_epoch: int, epochs: int):
    """A constant rate for the head; for fine-tuning, one warm-up epoch up to lr, then cosine decay that
    reaches zero at the phase's last step (Keras counts the decay steps after the warm-up)."""
    if phase == "head":
        return lr
    return keras.optimizers.schedules.CosineDecay(lr * 0.1, decay_steps=steps_per_epoch * max(epochs - 1, 1),
                                                  warmup_target=lr, warmup_steps=steps_per_epoch)


def compile_model(model, lr, weight_decay: float, loss: keras.losses.Loss):
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay),
        loss=loss,
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(k=2, name="top2"),
                 keras.metrics.TopKCategoricalAccuracy(k=3, name="top3"),
                 keras.metrics.F1Score(average="macro", name="macro_f1")])
