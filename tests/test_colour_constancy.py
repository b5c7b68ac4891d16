"""Colour constancy inside the model: darker or tinted copies of a real photo reach the network as the
original does, the layer survives saving, training, serving and the phone export."""
import json

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from skin_core import bundle as bundles, export, images
from skin_core.model import COLOUR_LAYER, REFERENCE_ILLUMINANT, ColourConstancy, build_model
from skin_core.predict import Predictor
from conftest import SAMPLE

SIZE = 32


@pytest.fixture(scope="module")
def photos(sample_meta) -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path in sample_meta["path"].iloc[::7]]


def as_input(image: Image.Image, size: int = 96) -> np.ndarray:
    return images.prepare(np.asarray(image), size, None).astype(np.float32)


def darker(image):
    return ImageEnhance.Brightness(image).enhance(0.8)


def tinted(image):     # a warmer white balance: more red, less blue
    gains = np.array([1.08, 1.0, 0.85])
    return Image.fromarray(np.clip(np.asarray(image) * gains, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("alter", [darker, tinted])
def test_a_darker_or_tinted_copy_reaches_the_network_as_the_original(photos, alter):
    layer = ColourConstancy()
    originals = np.stack([as_input(p) for p in photos])
    altered = np.stack([as_input(alter(p)) for p in photos])
    before = np.abs(altered - originals).mean()
    after = np.abs(np.asarray(layer(altered)) - np.asarray(layer(originals))).mean()
    assert before > 10 and after < before / 5, (before, after)


def test_each_photo_is_brought_to_the_reference_illuminant(photos):
    out = np.asarray(ColourConstancy()(np.stack([as_input(p) for p in photos])))
    illuminant = 255 * np.mean((out / 255) ** 6, axis=(1, 2)) ** (1 / 6)
    # clipping at 255 can only pull an estimate below the reference
    assert np.all(illuminant <= np.array(REFERENCE_ILLUMINANT) + 0.5)
    assert np.median(np.abs(illuminant - REFERENCE_ILLUMINANT)) < 3
    assert out.min() >= 0 and out.max() <= 255


def test_a_black_picture_stays_black():
    assert np.asarray(ColourConstancy()(np.zeros((1, 8, 8, 3), np.float32))).max() == 0


def test_weights_move_between_models_with_and_without_the_layer():
    plain = build_model(7, SIZE, 0.25, weights=None)
    constant = build_model(7, SIZE, 0.25, weights=None, colour_constancy=True)
    constant.set_weights(plain.get_weights())
    assert COLOUR_LAYER in [layer.name for layer in constant.layers]
    assert COLOUR_LAYER not in [layer.name for layer in plain.layers]


def test_a_bundle_trained_with_colour_constancy_serves_and_exports_it(tiny_bundle, tmp_path, photos):
    from skin_core.training import TrainConfig, train
    out = train(TrainConfig(data=str(SAMPLE), out=str(tmp_path / "cc"), epochs=1, head_epochs=1, img_size=SIZE,
                            alpha=0.25, weights=None, batch_size=8, test_fraction=0.2, val_fraction=0.2, workers=2,
                            tta="none", init_bundle=str(tiny_bundle), split_from=str(tiny_bundle),
                            colour_constancy=True))
    manifest = json.loads((out / "manifest.json").read_text())
    assert "shades of grey" in manifest["preprocessing"]["colour_constancy"]
    assert manifest["training"]["colour_constancy"] is True
    predictor = Predictor(bundles.load_bundle(out))          # loads with safe_mode, layer registered
    assert COLOUR_LAYER in [layer.name for layer in predictor.bundle.model.layers]
    originals = np.stack([predictor.prepare(np.asarray(p)) for p in photos])
    dimmed = np.stack([predictor.prepare(np.asarray(darker(p))) for p in photos])
    np.testing.assert_allclose(predictor.probabilities(dimmed), predictor.probabilities(originals), atol=0.02)
    # the phone export carries the layer: TFLite gives the Keras model's probabilities
    tflite = export.export_bundle(out, "tflite", tmp_path / "cc.tflite")
    pixels = originals.astype(np.float32)
    np.testing.assert_allclose(export.TFLiteRunner(tflite)(pixels),
                               predictor.bundle.model.predict(pixels, verbose=0), atol=1e-4)
    # 8-bit arithmetic cannot hold the layer's sixth powers: refused with a way out, nothing written
    with pytest.raises(export.ExportError, match="float16"):
        export.export_bundle(out, "tflite", tmp_path / "cc_int8.tflite", quantize="int8")
    assert not (tmp_path / "cc_int8.tflite").exists()
