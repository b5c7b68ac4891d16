"""Export a bundle for mobile (TFLite, optionally quantised) or for TF Serving (SavedModel).

The exported graph takes the same input as the Keras model: (batch, size, size, 3) float32 RGB in
0-255 from images.prepare, and returns uncalibrated softmax probabilities of one view. What the app
adds on top is written beside it (export.json, or NAME.json beside NAME.tflite) for the serving side:
the test-time views whose outputs it averages, the logit bias (prior shift), the temperature and the
thresholds, all fitted on the four-view average when the bundle serves four views. `calibrated_probabilities`
follows that recipe, so a server can check itself against the app.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
from scipy.special import softmax

from . import patients
from .bundle import inside_bundle, load_bundle
from .model import COLOUR_LAYER
from .options import TTA_VIEW_NAMES


class ExportError(ValueError):
    pass


def representative_images(input_size: int, detail_side, limit: int = 70):
    """Real dermoscopy images for int8 calibration of activation ranges."""
    from . import data
    table = data.load_dataset(data.SAMPLE_DIR).table.head(limit)
    return data.read_images(table, input_size, detail_side).pixels.astype(np.float32)


# The views of options.TTA_VIEW_NAMES as NumPy operations on (batch, height, width, 3) pictures, for the sidecar's recipe
_VIEW_OPERATIONS = {"identity": lambda x: x, "rot90": lambda x: np.rot90(x, 1, axes=(1, 2)),
                    "rot180": lambda x: np.rot90(x, 2, axes=(1, 2)), "rot270": lambda x: np.rot90(x, 3, axes=(1, 2)),
                    "flip_left_right": lambda x: x[:, :, ::-1], "flip_up_down": lambda x: x[:, ::-1]}


def calibrated_probabilities(run, pixels: np.ndarray, sidecar: dict, patient_rows=None) -> np.ndarray:
    """What the app shows, from an exported model: `run` maps pictures to the export's probabilities;
    the log-probabilities of the sidecar's views are averaged (as the app averages logits: the same up to
    a constant), shifted by the logit bias (and the patient push, for a model that reads age, sex and body
    site: `patient_rows` one per picture, None for nothing known) and divided by the temperature."""
    log_p = [np.log(np.maximum(run(np.ascontiguousarray(_VIEW_OPERATIONS[name](pixels))), 1e-12))
             for name in sidecar["views"]]
    shift = np.asarray(sidecar["logit_bias"])
    if "patient_push" in sidecar:
        head = patients.PatientHead(np.asarray(sidecar["patient_push"]["weights"]), sidecar["classes"])
        shift = shift + head.logits(patient_rows, len(pixels))
    return softmax((np.mean(log_p, axis=0) + shift) / sidecar["temperature"], axis=-1)


def export_savedmodel(model, out: Path) -> Path:
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


def _refuse_target(out: Path, sidecar: Path) -> None:
    """An export never replaces anything: not an earlier export, and never a file of a model bundle."""
    if inside_bundle(out):
        raise ExportError(f"{out} is inside a model bundle; export to a path outside it")
    for path in (out, sidecar):
        if path.exists():
            raise ExportError(f"{path} already exists; choose another --out or remove it first")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def export_bundle(bundle_path, fmt: str, out, quantize: str = "none") -> Path:
    """Export a bundle to `out` (a new folder for SavedModel, a new .tflite file) with its sidecar JSON.
    Both are written under temporary names first, so a failure leaves nothing behind."""
    if fmt not in ("savedmodel", "tflite"):
        raise ExportError(f"Unknown format {fmt!r}")
    if fmt == "savedmodel" and quantize != "none":
        raise ExportError("Quantisation applies to TFLite only")
    bundle_path, out = Path(bundle_path), Path(out)
    sidecar = out / "export.json" if fmt == "savedmodel" else out.with_suffix(".json")
    if sidecar == out:
        raise ExportError(f"{out} would be overwritten by its own sidecar file; give a name ending in .tflite")
    _refuse_target(out, sidecar)
    bundle = load_bundle(bundle_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".partial-{out.name}")
    partial_sidecar = partial / sidecar.name if fmt == "savedmodel" else sidecar.with_name(f".partial-{sidecar.name}")
    _remove(partial)
    _remove(partial_sidecar)
    placed = False
    try:
        _write_export(bundle, fmt, partial, quantize)
        partial_sidecar.write_text(_sidecar_text(bundle, bundle_path, quantize))
        partial.rename(out)
        placed = True
        if fmt == "tflite":
            partial_sidecar.rename(sidecar)
    except BaseException:
        _remove(partial)
        _remove(partial_sidecar)
        if placed:              # an export without its sidecar cannot be used as the app uses it
            _remove(out)
        raise
    return out


def _sidecar_text(bundle, bundle_path: Path, quantize: str) -> str:
    """What an app serving the export needs besides the network: classes, views, calibration, thresholds."""
    tta = bundle.test_time_augmentation
    head = bundle.patient_head
    return json.dumps({"source_bundle": str(bundle_path), "classes": bundle.classes,
                       "input_size": bundle.input_size, "preprocessing": bundle.manifest["preprocessing"],
                       "test_time_augmentation": tta, "views": TTA_VIEW_NAMES[tta],
                       "temperature": bundle.temperature, "thresholds": bundle.thresholds,
                       "logit_bias": [float(b) for b in bundle.logit_bias], "quantize": quantize,
                       "output": "uncalibrated softmax probabilities p of one view; the app's calibrated "
                                 "probabilities = softmax((mean over the views of log(p) + logit_bias"
                                 + (" + patient_push" if head else "") + ") / temperature), "
                                 "the views being the picture turned or flipped as named (rot90: 90 degrees "
                                 "counter-clockwise)",
                       **({"patient_push": {"features": patients.FEATURES, "weights": head.weights.tolist(),
                                            "rule": "one-hot age band, sex and body site (each its 'unknown' "
                                                    "column when not given) @ weights, one value per class"}}
                          if head else {})}, indent=2)


def _write_export(bundle, fmt: str, out: Path, quantize: str) -> None:
    if fmt == "savedmodel":
        export_savedmodel(bundle.model, out)
    else:
        if quantize == "int8" and COLOUR_LAYER in [layer.name for layer in bundle.model.layers]:
            # x**6 over [0, 1] in 8 bits: a colour-constant model's int8 copy agreed with it on only 69% of
            # the sample photos (float16: 100%), so it is refused rather than shipped
            raise ExportError("int8 quantisation cannot keep this model's colour-constancy layer accurate; "
                              "export with --quantize float16 (half the size) instead")
        images = representative_images(bundle.input_size, bundle.detail_side) if quantize == "int8" else None
        export_tflite(bundle.model, out, quantize, images)


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
