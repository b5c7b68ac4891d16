"""The tf.data pipelines training reads: shuffled or class-balanced batches, augmented, optionally
re-saved as JPEG and label-mixed, prefetched; and the plain batches of validation."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from .patients import GROUPS, MIXING_REFUSAL, unknown as unknown_rows
from .recipe import augmenter, mixer

if TYPE_CHECKING:
    from .run_config import TrainConfig


def steps_per_epoch(n_images: int, cfg: TrainConfig) -> int:
    """Whole batches per epoch (the last, partial one is dropped)."""
    return max(1, n_images // cfg.batch_size)


def training_dataset(pixels, labels, n_classes, cfg: TrainConfig, patients=None) -> tf.data.Dataset:
    """Shuffled (or class-balanced) batches with augmentation, prefetched, repeated for ever (an epoch is
    steps_per_epoch batches).

    With `patients` (one-hot rows, skin_core.patients), each batch's input is {"image", "patient"} and a
    share cfg.patient_dropout of each field is hidden as "unknown", so the model learns to answer without it.
    """
    onehot = np.eye(n_classes, dtype=np.float32)[labels]
    inputs = pixels if patients is None else {"image": pixels, "patient": patients}
    if cfg.balance == "sampling":
        per_class = [tf.data.Dataset.from_tensor_slices((_rows(inputs, labels == c), onehot[labels == c]))
                     .shuffle(4096, seed=cfg.seed + c).repeat() for c in range(n_classes) if (labels == c).any()]
        ds = tf.data.Dataset.sample_from_datasets(per_class, seed=cfg.seed)
    else:
        ds = tf.data.Dataset.from_tensor_slices((inputs, onehot)).shuffle(len(labels), seed=cfg.seed).repeat()
    ds = ds.batch(cfg.batch_size, drop_remainder=True)
    ds = ds.map(_on_images(lambda x: tf.cast(x, tf.float32)), num_parallel_calls=tf.data.AUTOTUNE)
    if cfg.augment:
        augment = augmenter(cfg.seed, cfg.photometric)
        ds = ds.map(_on_images(lambda x: augment(x, training=True)), num_parallel_calls=tf.data.AUTOTUNE)
    if cfg.low_detail > 0:
        ds = ds.map(_on_images(lambda x: lower_detail_of_some(x, cfg.seed + 10, cfg.low_detail, cfg.low_detail_side)),
                    num_parallel_calls=tf.data.AUTOTUNE)
    if cfg.compression:
        ds = ds.map(_on_images(lambda x: compress_some(x, cfg.seed + 8)), num_parallel_calls=tf.data.AUTOTUNE)
    if patients is not None:
        share, share_all = cfg.patient_dropout, cfg.patient_dropout_all
        ds = ds.map(lambda x, y: ({**x, "patient": hide_all_of_some(hide_some(x["patient"], cfg.seed + 9, share),
                                                                    cfg.seed + 12, share_all)}, y),
                    num_parallel_calls=tf.data.AUTOTUNE)
    mixing = mixer(cfg.mix, cfg.seed + 7)
    if mixing is not None:
        if patients is not None:
            raise ValueError(MIXING_REFUSAL)

        def mix(x, y):
            mixed = mixing({"images": x, "labels": y}, training=True)
            return mixed["images"], mixed["labels"]
        ds = ds.map(mix, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.prefetch(tf.data.AUTOTUNE)


def _rows(inputs, chosen):
    return {k: v[chosen] for k, v in inputs.items()} if isinstance(inputs, dict) else inputs[chosen]


def _on_images(change):
    """A map over (inputs, labels) batches that changes only the photos, with or without patient details."""
    def apply(x, y):
        return ({**x, "image": change(x["image"])} if isinstance(x, dict) else change(x)), y
    return apply


def hide_some(patients: tf.Tensor, seed: int, share: float) -> tf.Tensor:
    """Set each field (age, sex, body site) of a random `share` of the rows to its "unknown" column."""
    if share <= 0:
        return patients
    parts = []
    for i, (start, stop) in enumerate(GROUPS.values()):
        group = patients[:, start:stop]
        hidden = tf.random.uniform([tf.shape(patients)[0], 1], seed=seed + i) < share
        unknown = tf.one_hot(stop - start - 1, stop - start, dtype=patients.dtype)[None]
        parts.append(tf.where(hidden, unknown, group))
    return tf.concat(parts, axis=1)


def hide_all_of_some(patients: tf.Tensor, seed: int, share: float) -> tf.Tensor:
    """Set every field of a random `share` of the rows to "unknown" at once.

    Hiding each field on its own (hide_some, 25%) hides all three together in under 2% of the photos, so the
    network learns its photo logits beside informative details almost always; a photo sent without any is
    then answered by a combination it has rarely been trained as."""
    if share <= 0:
        return patients
    hidden = tf.random.uniform([tf.shape(patients)[0], 1], seed=seed) < share
    return tf.where(hidden, tf.constant(unknown_rows(1), patients.dtype), patients)


def lower_detail_of_some(images: tf.Tensor, seed: int, share: float, side: int) -> tf.Tensor:
    """Bring a random `share` of a batch down to `side` x `side` pixels of detail and back to its size.

    A model learning from small copies (BCN20000 and MSK at 84 px, upsampled to the input size) beside
    sharp ones could tell the sources apart by their sharpness and learn each site's class mix instead of
    the lesions; blurring some sharp photos the same way takes that cue away and teaches it to read
    low-detail photos of every kind. Photos already at that detail are hardly changed.
    """
    size = tf.shape(images)[1:3]
    small = tf.image.resize(images, [side, side], method="area")
    back = tf.image.resize(small, size, method="bilinear")
    chosen = tf.random.uniform([tf.shape(images)[0], 1, 1, 1], seed=seed) < share
    return tf.where(chosen, back, images)


def compress_some(images: tf.Tensor, seed: int, share: float = 0.5, qualities: tuple[int, int] = (30, 95)) -> tf.Tensor:
    """Re-save a random `share` of a batch (0-255 floats) as JPEG at a random quality in `qualities`.

    Photos reach the app as phone, web and e-mail copies with JPEG blocking and ringing, which the
    robustness report shows the models lose most to (quality 40); HAM10000's copies are all one quality.
    Applied after the geometric and colour changes, as a real re-save would be (label mixing, if any,
    comes after it).
    """
    batch = tf.shape(images)[0]
    quality = tf.random.uniform([batch], qualities[0], qualities[1] + 1, dtype=tf.int32, seed=seed)
    chosen = tf.random.uniform([batch], seed=seed + 1) < share

    def resave(image, jpeg_quality):
        pixels = tf.saturate_cast(tf.round(image), tf.uint8)
        return tf.cast(tf.image.adjust_jpeg_quality(pixels, jpeg_quality), image.dtype)

    # only the chosen photos pay for an encode and decode
    return tf.map_fn(lambda args: tf.cond(args[2], lambda: resave(args[0], args[1]), lambda: args[0]),
                     (images, quality, chosen), fn_output_signature=tf.TensorSpec(images.shape[1:], images.dtype))


def eval_dataset(pixels, labels, n_classes, batch_size, patients=None) -> tf.data.Dataset:
    onehot = np.eye(n_classes, dtype=np.float32)[labels]
    inputs = pixels if patients is None else {"image": pixels, "patient": patients}
    return (tf.data.Dataset.from_tensor_slices((inputs, onehot)).batch(batch_size)
            .map(_on_images(lambda x: tf.cast(x, tf.float32))).cache().prefetch(tf.data.AUTOTUNE))
