"""TFLite and SavedModel exports agree with the Keras model on real images."""
import json

import numpy as np
import pytest
import tensorflow as tf

from skin_core import data, export
from skin_core.bundle import load_bundle
from skin_core.options import TTA_VIEW_NAMES
from skin_core.predict import Predictor
from conftest import SAMPLE


@pytest.fixture(scope="module")
def real_inputs(tiny_bundle):
    bundle = load_bundle(tiny_bundle)
    table = data.load_dataset(SAMPLE).table
    pixels = data.read_images(table, bundle.input_size, bundle.detail_side).pixels.astype(np.float32)
    return bundle, pixels, bundle.model.predict(pixels, verbose=0)


# The tiny test model is barely trained: its probabilities are nearly flat, so only the float exports
# can be held to its argmax; int8 is judged on the default model below, where its answers mean something.
@pytest.mark.parametrize("quantize, max_diff, min_agreement", [("none", 1e-4, 1.0), ("float16", 0.02, 0.9)])
def test_tflite_agrees_with_keras(tiny_bundle, real_inputs, tmp_path, quantize, max_diff, min_agreement):
    bundle, pixels, expected = real_inputs
    path = export.export_bundle(tiny_bundle, "tflite", tmp_path / f"model_{quantize}.tflite", quantize=quantize)
    got = export.TFLiteRunner(path)(pixels)
    difference = np.abs(got - expected).max()
    agreement = (got.argmax(1) == expected.argmax(1)).mean()
    assert difference <= max_diff, f"{quantize}: largest probability difference {difference:.4f}"
    assert agreement >= min_agreement
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["classes"] == bundle.classes
    if quantize == "none":   # the sidecar's recipe turns the export's outputs into what the app shows
        served = Predictor(bundle).probabilities(pixels.astype(np.uint8))
        np.testing.assert_allclose(export.calibrated_probabilities(export.TFLiteRunner(path), pixels, sidecar),
                                   served, atol=1e-4)


def test_export_never_replaces_anything(tiny_bundle, tmp_path):
    earlier = tmp_path / "model.tflite"
    earlier.write_bytes(b"an earlier export")
    with pytest.raises(export.ExportError, match="already exists"):
        export.export_bundle(tiny_bundle, "tflite", earlier)
    assert earlier.read_bytes() == b"an earlier export"
    with pytest.raises(export.ExportError, match="already exists"):
        export.export_bundle(tiny_bundle, "savedmodel", tiny_bundle)
    report = (tiny_bundle / "evaluation.json").read_bytes()
    with pytest.raises(export.ExportError, match="inside a model bundle"):   # its sidecar would be evaluation.json
        export.export_bundle(tiny_bundle, "tflite", tiny_bundle / "evaluation.tflite")
    assert not (tiny_bundle / "evaluation.tflite").exists()
    assert (tiny_bundle / "evaluation.json").read_bytes() == report
    load_bundle(tiny_bundle)   # its files still match their checksums
    with pytest.raises(export.ExportError, match="overwritten by its own sidecar"):
        export.export_bundle(tiny_bundle, "tflite", tmp_path / "model.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.tflite"]


def test_a_failed_export_leaves_neither_the_model_nor_its_sidecar(tiny_bundle, tmp_path, monkeypatch):
    def fail(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(export, "_sidecar_text", fail)
    for fmt, out in (("tflite", tmp_path / "m.tflite"), ("savedmodel", tmp_path / "saved")):
        with pytest.raises(OSError, match="No space left"):
            export.export_bundle(tiny_bundle, fmt, out)
    assert list(tmp_path.iterdir()) == []


def test_savedmodel_agrees_with_keras(tiny_bundle, real_inputs, tmp_path):
    _, pixels, expected = real_inputs
    out = export.export_bundle(tiny_bundle, "savedmodel", tmp_path / "saved")
    served = tf.saved_model.load(str(out))
    got = served.serve(tf.constant(pixels)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (out / "export.json").is_file()


# int8 moves single probabilities a lot on a few images, so it is held to most images (the 95th percentile
# of each image's largest difference) and to the mean difference rather than to the worst image
@pytest.mark.parametrize("quantize, min_agreement, p95_diff, mean_diff", [("float16", 0.97, 0.05, 0.005),
                                                                          ("int8", 0.85, 0.2, 0.05)])
def test_quantised_default_model_keeps_its_answers(default_bundle, tmp_path, quantize, min_agreement, p95_diff,
                                                   mean_diff):
    bundle = load_bundle(default_bundle)
    table = data.load_dataset(SAMPLE).table
    pixels = data.read_images(table, bundle.input_size, bundle.detail_side).pixels.astype(np.float32)
    expected = bundle.model.predict(pixels, verbose=0)
    path = export.export_bundle(default_bundle, "tflite", tmp_path / f"default_{quantize}.tflite", quantize=quantize)
    got = export.TFLiteRunner(path)(pixels)
    agreement = (got.argmax(1) == expected.argmax(1)).mean()
    assert agreement >= min_agreement, f"{quantize}: top-1 agreement {agreement:.3f}"
    per_image = np.abs(got - expected).max(axis=1)
    assert np.quantile(per_image, 0.95) <= p95_diff, f"{quantize}: 95th percentile {np.quantile(per_image, 0.95):.3f}"
    assert np.abs(got - expected).mean() <= mean_diff
    if quantize == "float16":   # the default serves four views: the sidecar's recipe reproduces the app's answer
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["views"] == TTA_VIEW_NAMES[bundle.manifest["test_time_augmentation"]]
        served = Predictor(bundle).probabilities(pixels.astype(np.uint8))
        calibrated = export.calibrated_probabilities(export.TFLiteRunner(path), pixels, sidecar)
        assert (calibrated.argmax(1) == served.argmax(1)).mean() >= 0.97
        assert np.abs(calibrated - served).max() <= 0.05
