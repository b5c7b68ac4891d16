"""Export a bundle for mobile (TFLite, optionally quantised) or for TF Serving (SavedModel).

The exported graph takes the same input as the Keras model: (batch, size, size, 3) float32 RGB in
0-255 from images.prepare, and returns uncalibrated softmax probabilities; the bundle's
temperature and thresholds are written beside it in export.json for the serving side.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from .bundle import load_bundle
from .model import COLOUR_LAYER

SAMPLE_DIR = Path(__file__).resolve().parents[1] / "sample_data"


class ExportError(ValueError):
    pass


def representative_images(input_size: int, detail_side, limit: int = 70):
    """Real dermoscopy images for int8 calibration of activation ranges."""
    from . import data
    table = data.load_dataset(SAMPLE_DIR).table.head(limit)
    return data.read_images(table, input_size, detail_side).pixels.astype(np.float32)


def export_savedmodel(model, out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    model.export(str(out), format="tf_saved_model", verbose=False)
    return out


def export_tflite(model, out: Path, quantize: str = "none", calibration_images=None) -> Path:
    with tempfile.TemporaryDirectory() as tmp:
        saved = export_savedmodel(model, Path(tmp) / "saved")
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if quantize == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantize == "int8":
            if calibration_images is None:
                raise ExportError("int8 quantisation needs calibration images")
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([image[None]] for image in calibration_images)
        elif quantize != "none":
            raise ExportError(f"Unknown quantisation {quantize!r}")
        out.write_bytes(converter.convert())
    return out


def export_bundle(bundle_path, fmt: str, out, quantize: str = "none") -> Path:
    bundle = load_bundle(bundle_path)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "savedmodel":
        if quantize != "none":
            raise ExportError("Quantisation applies to TFLite only")
        export_savedmodel(bundle.model, out)
        sidecar = out / "export.json"
    elif fmt == "tflite":
        if quantize == "int8" and COLOUR_LAYER in [layer.name for layer in bundle.model.layers]:
            # x**6 over [0, 1] in 8 bits: a colour-constant model's int8 copy agreed with it on only 69% of
            # the sample photos (float16: 100%), so it is refused rather than shipped
            raise ExportError("int8 quantisation cannot keep this model's colour-constancy layer accurate; "
                              "export with --quantize float16 (half the size) instead")
        images = representative_images(bundle.input_size, bundle.detail_side) if quantize == "int8" else None
        export_tflite(bundle.model, out, quantize, images)
        sidecar = out.with_suffix(".json")
    else:
        raise ExportError(f"Unknown format {fmt!r}")
    sidecar.write_text(json.dumps({"source_bundle": str(bundle_path), "classes": bundle.classes,
                                   "input_size": bundle.input_size,
                                   "preprocessing": bundle.manifest["preprocessing"],
                                   "temperature": bundle.temperature, "thresholds": bundle.thresholds,
                                   "logit_bias": [float(b) for b in bundle.logit_bias],
                                   "quantize": quantize, "output": "uncalibrated softmax probabilities; calibrated = "
                                   "softmax((log(p) + logit_bias) / temperature)"}, indent=2))
    return out


class TFLiteRunner:
    """Run an exported .tflite model on prepared pictures."""

    def __init__(self, path):
        self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=2)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        results = []
        for image in pixels.astype(np.float32):
            self.interpreter.set_tensor(self.input["index"], image[None])
            self.interpreter.invoke()
            results.append(self.interpreter.get_tensor(self.output["index"])[0])
        return np.stack(results)
