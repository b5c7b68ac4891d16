"""Grad-CAM: shape and range, agreement with the prediction, and the right place on a case whose
answer is known by construction."""
import numpy as np
import pytest

from skin_core import explain, images
from skin_core.bundle import Bundle
from skin_core.predict import Predictor
from conftest import SAMPLE

SIZE = 128   # the last convolutional block is then a 4x4 grid


def synthetic(rng, n, labels=None):
    """Skin-coloured noise with one disc: red discs are class 6 (vasc), brown discs class 5 (nv)."""
    x = np.empty((n, SIZE, SIZE, 3), np.float32)
    y = rng.integers(0, 2, n) + 5 if labels is None else np.full(n, labels)
    centres = rng.integers(12, SIZE - 12, (n, 2))
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(n):
        x[i] = np.array([225, 180, 160]) + rng.normal(0, 8, (SIZE, SIZE, 3))
        disc = (yy - centres[i, 0]) ** 2 + (xx - centres[i, 1]) ** 2 < 10 ** 2
        x[i][disc] = [200, 30, 40] if y[i] == 6 else [90, 55, 30]
    return x.clip(0, 255), y, centres


@pytest.fixture(scope="module")
def disc_predictor():
    import keras
    from skin_core.model import build_model
    keras.utils.set_random_seed(0)
    model = build_model(7, SIZE, 0.25, weights=None, dropout=0.0)
    for layer in model.layers:          # a short run: let BatchNorm's moving statistics catch up quickly
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.8
    x, y, _ = synthetic(np.random.default_rng(0), 320)
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    manifest = {"classes": ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"], "input_size": SIZE,
                "preprocessing": {"detail_side": None}, "files": {}}
    return Predictor(Bundle(path=SAMPLE, manifest=manifest, model=model))


def test_maps_have_one_layer_per_class_in_unit_range(tiny_bundle):
    predictor = Predictor.from_path(tiny_bundle)
    analysis = predictor.analyse(images.load_file(next((SAMPLE / "HAM10000_images_part_1").glob("*.jpg"))))
    assert analysis.cams.shape[-1] == 7
    assert analysis.cams.min() >= 0 and analysis.cams.max() <= 1 + 1e-6
    shown = explain.overlay(analysis.model_input, analysis.cam("nv"))
    assert shown.shape == analysis.model_input.shape and shown.dtype == np.uint8


def test_grad_cam_finds_the_disc_that_decides_the_class(disc_predictor):
    # the evidence for "vasc" is the red disc itself (for "nv" it may as well be the absence of red)
    x, y, centres = synthetic(np.random.default_rng(1), 20, labels=6)
    hits, right = 0, 0
    for image, label, (cy, cx) in zip(x, y, centres):
        decoded = images.DecodedImage(rgb=image.astype(np.uint8), source_format="PNG", source_mode="RGB")
        analysis = disc_predictor.analyse(decoded)
        right += analysis.probabilities.argmax() == label
        cam = analysis.cam(disc_predictor.classes[label])
        cell = SIZE // cam.shape[0]
        peak = np.array(np.unravel_index(cam.argmax(), cam.shape))
        home = np.array([cy, cx]) // cell
        distance = np.maximum(*np.abs(np.indices(cam.shape) - home[:, None, None]))
        hits += np.abs(peak - home).max() <= 1 and cam[tuple(home)] > cam[distance >= 2].mean()
    assert right >= 18, "the constructed task should be learnt"
    assert hits >= 16, f"Grad-CAM peaked next to the disc in only {hits} of 20 images"


def test_overlay_keeps_the_photo_at_zero_opacity():
    rgb = np.random.default_rng(0).integers(0, 255, (50, 80, 3), dtype=np.uint8)
    np.testing.assert_array_equal(explain.overlay(rgb, np.ones((7, 7)), opacity=0.0), rgb)
    assert not np.array_equal(explain.overlay(rgb, np.ones((7, 7)), opacity=0.5), rgb)


@pytest.mark.parametrize("tta, view", [("flips", lambda a: a[:, ::-1]), ("half_turn", lambda a: a[::-1, ::-1]),
                                       ("quarter_turns", np.rot90)])
def test_view_averaging_makes_answers_and_maps_invariant_to_its_views(disc_predictor, tta, view):
    single_view = disc_predictor.bundle
    predictor = Predictor(Bundle(path=single_view.path, model=single_view.model,
                                 manifest={**single_view.manifest, "test_time_augmentation": tta}))
    x, _, _ = synthetic(np.random.default_rng(2), 1, labels=6)      # an off-centre disc
    rgb = x[0].astype(np.uint8)
    plain = predictor.analyse(images.DecodedImage(rgb, "PNG", "RGB"))
    turned = predictor.analyse(images.DecodedImage(np.ascontiguousarray(view(rgb)), "PNG", "RGB"))
    np.testing.assert_allclose(turned.probabilities, plain.probabilities, atol=1e-4)
    np.testing.assert_allclose(turned.cams, view(plain.cams), atol=1e-3)   # the maps turn with the photo
    # without the views, the model's own answer does change with the view
    gap = np.abs(disc_predictor.logits(rgb[None]) - disc_predictor.logits(np.ascontiguousarray(view(rgb))[None])).max()
    assert gap > 1e-3, gap


def test_an_unknown_test_time_augmentation_is_refused(tiny_bundle):
    from skin_core.bundle import load_bundle
    bundle = load_bundle(tiny_bundle)
    bundle.manifest["test_time_augmentation"] = "spin"
    with pytest.raises(ValueError, match="Unknown test-time augmentation 'spin'"):
        Predictor(bundle)


def test_maps_equal_grad_cam_computed_with_a_gradient_tape(disc_predictor):
    """The closed form in predict.make_forward is Grad-CAM itself, not an approximation of it."""
    import keras
    import tensorflow as tf
    from skin_core.model import LAST_CONV_LAYER
    model = disc_predictor.bundle.model
    x, _, _ = synthetic(np.random.default_rng(3), 4)
    features_model = keras.Model(model.input, [model.get_layer(LAST_CONV_LAYER).output, model.get_layer("logits").output])
    for image in x:
        decoded = images.DecodedImage(rgb=image.astype(np.uint8), source_format="PNG", source_mode="RGB")
        analysis = disc_predictor.analyse(decoded)
        batch = tf.constant(analysis.model_input[None].astype(np.float32))
        for c in range(7):
            with tf.GradientTape() as tape:
                features, logits = features_model(batch, training=False)
                score = logits[0, c]
            grads = tape.gradient(score, features)
            weights = tf.reduce_mean(grads, axis=[1, 2])                      # the Grad-CAM definition
            cam = tf.nn.relu(tf.reduce_sum(features * weights[:, None, None, :], axis=-1))[0].numpy()
            expected = cam / cam.max() if cam.max() > 0 else cam
            np.testing.assert_allclose(analysis.cams[..., c], expected, atol=1e-4)
