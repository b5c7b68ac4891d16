"""The training recipe's augmentation and class balancing, on real pixels."""
import io

import numpy as np
import pytest
from PIL import Image

from skin_core import data, images
from skin_core.recipe import (JpegResavedBatches, LogitAdjustedCrossEntropy, RandomFlipRotateZoom, augmenter,
                              class_weights, mixer, phase_learning_rate, training_loss)
from conftest import SAMPLE


@pytest.fixture(scope="module")
def pictures():
    table = data.load_dataset(SAMPLE).table.head(8)
    return np.stack([images.prepare(images.load_file(p).rgb, 64, None) for p in table["path"]]).astype(np.float32)


def test_without_rotation_or_zoom_every_output_is_one_of_the_four_flips(pictures):
    layer = RandomFlipRotateZoom(rotation=0.0, zoom=(0.0, 0.0), seed=3)
    batch = np.concatenate([pictures] * 8)
    out = np.asarray(layer(batch, training=True))
    seen = set()
    for source, result in zip(batch, out):
        views = {"same": source, "left-right": source[:, ::-1], "up-down": source[::-1], "both": source[::-1, ::-1]}
        matches = [name for name, view in views.items() if np.abs(result - view).max() < 1e-3]
        assert matches, "an output is not a flip of its input"
        seen.add(matches[0])
    assert seen == {"same", "left-right", "up-down", "both"}


def test_rotation_moves_pixels_in_training_only(pictures):
    rotate = RandomFlipRotateZoom(rotation=0.25, zoom=(0.0, 0.0), seed=0)
    out = np.asarray(rotate(pictures, training=True))
    assert out.shape == pictures.shape and np.isfinite(out).all()
    assert not np.allclose(out, pictures)
    # a rotation about the centre with reflected borders keeps each picture's overall colour
    np.testing.assert_allclose(out.mean(axis=(1, 2)), pictures.mean(axis=(1, 2)), atol=10)
    np.testing.assert_array_equal(np.asarray(rotate(pictures, training=False)), pictures)


def test_zooming_in_keeps_the_picture_centre(pictures):
    zoom_in = RandomFlipRotateZoom(rotation=0.0, zoom=(-0.5, -0.5), seed=1)
    out = np.asarray(zoom_in(pictures, training=True))
    centre = slice(28, 36)
    # the centre pixels stay near the centre (up to a flip), so the central patch keeps its mean colour
    np.testing.assert_allclose(out[:, centre, centre].mean(axis=(1, 2)), pictures[:, centre, centre].mean(axis=(1, 2)),
                               atol=12)


def test_the_training_augmenter_keeps_shape_and_range_and_changes_every_picture_in_training_only(pictures):
    out = np.asarray(augmenter(0)(pictures, training=True))
    assert out.shape == pictures.shape
    assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3
    changed = np.abs(out - pictures).reshape(len(pictures), -1).mean(axis=1)
    assert (changed > 1.0).all(), changed
    np.testing.assert_allclose(np.asarray(augmenter(0)(pictures, training=False)), pictures, atol=1e-3)


def test_the_fine_tuning_rate_warms_up_for_one_epoch_and_decays_to_zero_by_the_last_step():
    steps, epochs, lr = 10, 6, 4e-4
    schedule = phase_learning_rate("fine-tune", lr, steps, epochs)
    assert float(schedule(0)) == pytest.approx(0.1 * lr)
    assert float(schedule(steps)) == pytest.approx(lr)
    assert float(schedule(steps * epochs)) == pytest.approx(0.0, abs=1e-9)
    halfway = steps + steps * (epochs - 1) // 2
    assert float(schedule(halfway)) == pytest.approx(lr / 2, rel=0.01)
    assert phase_learning_rate("head", 1e-3, steps, 2) == 1e-3


def test_balanced_weights_make_every_class_count_equally():
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    weights = class_weights(labels, 3, "weights")
    per_class_total = [weights[c] * (labels == c).sum() for c in range(3)]
    np.testing.assert_allclose(per_class_total, per_class_total[0], rtol=1e-6)
    assert np.isclose(np.mean([weights[c] for c in labels]), 1.0)      # the loss keeps its scale
    assert class_weights(labels, 3, "none") is None


def test_logit_adjusted_loss_is_keras_cross_entropy_on_the_prior_shifted_logits():
    import keras
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (32, 7)).astype(np.float32)
    targets = np.eye(7, dtype=np.float32)[rng.integers(0, 7, 32)]
    log_prior = np.log(np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02]))
    probabilities = np.asarray(keras.ops.softmax(logits))
    ours = LogitAdjustedCrossEntropy(log_prior, label_smoothing=0.1)(targets, probabilities)
    reference = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1)(targets, logits + log_prior)
    assert float(ours) == pytest.approx(float(reference), rel=1e-4)
    # a uniform prior shifts nothing: plain cross-entropy
    uniform = LogitAdjustedCrossEntropy(np.log(np.full(7, 1 / 7)))(targets, probabilities)
    plain = keras.losses.CategoricalCrossentropy()(targets, probabilities)
    assert float(uniform) == pytest.approx(float(plain), rel=1e-4)
    # it survives the trip through a saved model's configuration
    again = LogitAdjustedCrossEntropy.from_config(keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(LogitAdjustedCrossEntropy(log_prior, 0.1))).get_config())
    assert float(again(targets, probabilities)) == pytest.approx(float(ours), rel=1e-6)


def test_a_model_fitted_with_the_logit_adjusted_loss_finds_more_of_the_rare_class():
    """Two overlapping classes, 95 to 5: plain cross-entropy leaves most of the rare class behind (the
    accuracy-optimal answer), the logit-adjusted loss moves the boundary toward balanced recall."""
    import keras
    rng = np.random.default_rng(1)
    labels = np.array([0] * 950 + [1] * 50)
    features = (rng.normal(0, 1, (1000, 2)) + np.where(labels[:, None] == 1, 1.5, 0.0)).astype(np.float32)
    onehot = np.eye(2, dtype=np.float32)[labels]

    def rare_recall(mode):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(0.05), loss=training_loss(labels, 2, mode, 0.0))
        model.fit(features, onehot, epochs=60, batch_size=200, verbose=0)
        return (model.predict(features, verbose=0).argmax(1)[labels == 1] == 1).mean()

    plain, adjusted = rare_recall("none"), rare_recall("logit_adjusted")
    # the Bayes boundaries for these Gaussians give the rare class about 0.37 recall and 0.86 when balanced
    assert plain < 0.5 and adjusted > 0.8, (plain, adjusted)


@pytest.fixture(scope="module")
def one_per_class():
    """One real picture of each class, so a mixed label names exactly which pictures went in."""
    table = data.load_dataset(SAMPLE).table.groupby("dx").head(1).sort_values("dx")
    pixels = np.stack([images.prepare(images.load_file(p).rgb, 64, None) for p in table["path"]]).astype(np.float32)
    return pixels, np.eye(len(table), dtype=np.float32)


def mixed_batches(mode, pixels, labels, seeds=range(3)):
    """The batch mixed with a few seeds; every mixed label must still sum to one."""
    for seed in seeds:
        out = mixer(mode, seed)({"images": pixels, "labels": labels}, training=True)
        np.testing.assert_allclose(np.asarray(out["labels"]).sum(axis=1), 1.0, atol=1e-5)
        yield np.asarray(out["images"]), np.asarray(out["labels"])


def test_mixup_mixes_pictures_and_labels_in_the_same_proportion(one_per_class):
    pixels, onehot = one_per_class
    mixed_any = False
    for out, labels in mixed_batches("mixup", pixels, onehot):
        # each output is the label-weighted sum of the source pictures
        np.testing.assert_allclose(out, np.einsum("kc,chwd->khwd", labels, pixels), atol=0.05)
        mixed_any |= bool((labels.max(axis=1) < 0.999).any())
    assert mixed_any


def test_cutmix_pastes_a_patch_whose_area_is_the_label_weight(one_per_class):
    pixels, onehot = one_per_class
    pasted_any = False
    for out, labels in mixed_batches("cutmix", pixels, onehot):
        for picture, label in zip(out, labels):
            from_source = np.stack([np.all(np.isclose(picture, source), axis=-1) for source in pixels])
            assert from_source.any(axis=0).mean() > 0.99    # every pixel is copied from one of the pictures
            np.testing.assert_allclose(from_source.mean(axis=(1, 2)), label, atol=0.03)
            pasted_any |= bool((label > 0.05).sum() == 2)
    assert pasted_any


def test_no_mixing_leaves_batches_alone_and_unknown_modes_are_refused(one_per_class):
    assert mixer("none", 0) is None
    with pytest.raises(ValueError, match="mix must be one of"):
        mixer("blend", 0)


def test_photometric_augmentation_varies_colour_and_sharpness_more(pictures):
    copies = np.repeat(pictures[:1], 32, axis=0)

    def spreads(augment):
        out = np.asarray(augment(copies, training=True))
        colourfulness = out.std(axis=-1).mean(axis=(1, 2))                  # 0 for a grey picture
        edges = np.abs(np.diff(out, axis=1)).mean(axis=(1, 2, 3))          # falls as a picture blurs
        return colourfulness.std(), edges.std()

    plain, photometric = spreads(augmenter(0)), spreads(augmenter(0, photometric=True))
    assert photometric[0] > 2 * plain[0] and photometric[1] > 2 * plain[1]
    out = np.asarray(augmenter(0, photometric=True)(pictures, training=True))
    assert out.shape == pictures.shape and out.min() >= -1e-3 and out.max() <= 255 + 1e-3


def test_compression_resaves_about_half_of_a_batch_as_a_jpeg_would_be(pictures):
    """train.py --compression: the changed photos are what a real JPEG re-save (Pillow) makes of them."""
    import tensorflow as tf
    from skin_core.pipelines import compress_some

    batch = np.repeat(pictures, 8, axis=0)
    out = np.asarray(compress_some(tf.constant(batch), seed=3))
    changed = np.abs(out - batch).reshape(len(batch), -1).max(axis=1) > 0
    assert out.shape == batch.shape and out.dtype == np.float32 and 16 <= changed.sum() <= 48

    every = np.asarray(compress_some(tf.constant(pictures), seed=3, share=1.0, qualities=(40, 40)))
    for original, resaved in zip(pictures, every):
        buffer = io.BytesIO()
        Image.fromarray(original.astype(np.uint8)).save(buffer, format="JPEG", quality=40)
        pillow = np.asarray(Image.open(buffer), dtype=np.float32)
        assert np.abs(resaved - pillow).mean() < 0.4 * np.abs(original - pillow).mean()
    gentle = np.asarray(compress_some(tf.constant(pictures), seed=3, share=1.0, qualities=(95, 95)))
    assert np.abs(gentle - pictures).mean() < 0.5 * np.abs(every - pictures).mean()
    assert np.array_equal(np.asarray(compress_some(tf.constant(pictures), seed=3, share=0.0)), pictures)


def test_jpeg_resaved_batches_give_each_photo_once_an_epoch_with_its_label_and_resave_about_half(pictures):
    """scripts/train_gpu.py's compression=true: the batches fit() reads, with the JPEG re-saving of train.py."""
    import keras
    photos = np.repeat(pictures, 8, axis=0)                      # 64 photos; the one-hot target names each one
    batches = JpegResavedBatches(photos, np.eye(64, dtype=np.float32), batch_size=16, seed=3)
    orders, changed = [], 0
    for _ in range(2):
        order = []
        for index in range(len(batches)):
            x, y = batches[index]
            rows = y.argmax(axis=1)
            order += rows.tolist()
            changed += int((np.abs(x - photos[rows]).reshape(len(rows), -1).max(axis=1) > 0).sum())
        batches.on_epoch_end()
        orders.append(order)
    assert len(batches) == 4 and all(sorted(order) == list(range(64)) for order in orders)
    assert orders[0] != orders[1] and 32 <= changed <= 96         # reshuffled; about half of 128 re-saved
    x, y = JpegResavedBatches(photos, np.eye(64, dtype=np.float32), batch_size=16, seed=3, share=1.0,
                              qualities=(40, 40))[0]
    resaved = np.asarray(images.jpeg_resaved(Image.fromarray(photos[y[0].argmax()].astype(np.uint8)), 40))
    assert np.array_equal(x[0], resaved.astype(np.float32))      # exactly Pillow's re-save
    model = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(64)])
    model.compile("sgd", "categorical_crossentropy")
    fitted = model.fit(JpegResavedBatches(photos, np.eye(64, dtype=np.float32), batch_size=16, seed=3), epochs=1,
                       class_weight={i: 1.0 for i in range(64)}, verbose=0)
    assert np.isfinite(fitted.history["loss"]).all()              # fit() takes it, class weights included

