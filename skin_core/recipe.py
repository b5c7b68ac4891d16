"""The training recipe shared by every backend: augmentation, class balancing, optimiser, metrics
and best-epoch selection. Keras only (no TensorFlow import), so the same recipe runs under the
TensorFlow backend here and under JAX on a GPU machine.
"""
from __future__ import annotations

import math

import keras
import numpy as np
from sklearn.utils.class_weight import compute_class_weight


class BestWeights(keras.callbacks.Callback):
    """Keep the weights of the best validation epoch across all phases."""

    def __init__(self, monitor: str = "val_macro_f1"):
        super().__init__()
        self.monitor, self.best, self.weights, self.best_epoch = monitor, -math.inf, None, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is not None and value > self.best:
            self.best, self.weights, self.best_epoch = float(value), self.model.get_weights(), epoch + 1


def augmenter(seed: int) -> keras.Sequential:
    """The paper's augmentation: rotation, horizontal and vertical flips, zoom; training only."""
    return keras.Sequential([
        keras.layers.RandomFlip("horizontal_and_vertical", seed=seed),
        keras.layers.RandomRotation(0.5, fill_mode="reflect", seed=seed + 1),
        keras.layers.RandomZoom((-0.2, 0.1), fill_mode="reflect", seed=seed + 2),
        keras.layers.RandomBrightness(0.1, value_range=(0, 255), seed=seed + 3),
        keras.layers.RandomContrast(0.1, value_range=(0, 255), seed=seed + 4),
    ], name="augmentation")


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> dict[int, float] | None:
    if mode not in ("weights", "sqrt_weights"):
        return None
    weights = compute_class_weight("balanced", classes=np.arange(n_classes), y=labels)
    if mode == "sqrt_weights":
        weights = np.sqrt(weights)
    weights = weights / np.average(weights, weights=np.bincount(labels, minlength=n_classes))
    return {i: float(w) for i, w in enumerate(weights)}


def compile_model(model, lr, weight_decay: float, label_smoothing: float):
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy"),
                 keras.metrics.TopKCategoricalAccuracy(k=2, name="top2"),
                 keras.metrics.TopKCategoricalAccuracy(k=3, name="top3"),
                 keras.metrics.F1Score(average="macro", name="macro_f1")])
