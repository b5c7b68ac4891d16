"""The training recipe's augmentation and class balancing, on real pixels."""
import numpy as np
import pytest

from skin_core import data, images
from skin_core.recipe import RandomFlipRotateZoom, augmenter, class_weights
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


def test_the_training_augmenter_keeps_shape_and_range(pictures):
    out = np.asarray(augmenter(0)(pictures, training=True))
    assert out.shape == pictures.shape
    assert out.min() >= -1e-3 and out.max() <= 255 + 1e-3


def test_balanced_weights_make_every_class_count_equally():
    labels = np.array([0] * 80 + [1] * 15 + [2] * 5)
    weights = class_weights(labels, 3, "weights")
    per_class_total = [weights[c] * (labels == c).sum() for c in range(3)]
    np.testing.assert_allclose(per_class_total, per_class_total[0], rtol=1e-6)
    assert np.isclose(np.mean([weights[c] for c in labels]), 1.0)      # the loss keeps its scale
    assert class_weights(labels, 3, "none") is None
