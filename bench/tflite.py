"""TFLite latency (float32, float16, int8) beside Keras, and each export's accuracy on the bundle's
held-out test split.

    python bench/tflite.py [--model models/default] [--data path/to/HAM10000]

--data must be the bundle's training dataset for the accuracy figure (its split.csv names the test images).
Every figure here is one pass per image (no test-time views), Keras included, so the columns compare like with
like; `tflite_float16_as_served` then follows the export's sidecar (the bundle's views, logit bias and
temperature, `export.calibrated_probabilities`, and for a model that reads age, sex and body site each test image's
recorded details, as its own report was computed) and should match the app's own test figures, recorded beside it.
"""
import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf

from common import run_main, stats_ms, timed, write
from skin_core import data, export, patients, splits
from skin_core.bundle import EVALUATION_FILE, load_bundle
from sklearn.metrics import accuracy_score, balanced_accuracy_score


def served_argmax(probs, bundle):
    """The class the app would show: the bundle's logit bias applied to the exported probabilities."""
    return (np.log(np.maximum(probs, 1e-12)) + bundle.logit_bias).argmax(1)


def own_test_figures(bundle_path: Path, data_root: str, n_images: int) -> dict | None:
    """The bundle's own test accuracy and balanced accuracy on this dataset (its source's, for a bundle tested on
    several), from the report training wrote: what the export served as the app serves should reproduce. None
    when that report holds no figures for these very images (another source, or another number of them)."""
    report_file = bundle_path / EVALUATION_FILE
    if not report_file.is_file():
        return None
    report = json.loads(report_file.read_text())
    if report.get("by_source"):
        report = report["by_source"].get(Path(data_root).resolve().name, {})
    if report.get("n") != n_images:
        return None
    return {"test_images": report["n"], "test_accuracy": report["accuracy"],
            "test_balanced_accuracy": report["balanced_accuracy"]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/default")
    parser.add_argument("--data", default=None)
    parser.add_argument("--runs", type=int, default=100)
    args = parser.parse_args()
    bundle = load_bundle(args.model)
    sample = data.read_images(data.load_dataset(data.SAMPLE_DIR).table, bundle.input_size, bundle.detail_side)
    x = sample.pixels[:1].astype(np.float32)
    size = bundle.input_size
    bare = tf.function(lambda t: bundle.model(t, training=False),
                       input_signature=[tf.TensorSpec((1, size, size, 3), tf.float32)])
    results = {"keras_tf_function": stats_ms(timed(lambda: bare(x).numpy(), args.runs))}
    test = None
    if args.data:
        table = splits.load_under_split(args.data, Path(args.model) / "split.csv", classes=bundle.classes)
        table = table[table["subset"] == "test"]
        test = data.read_images(table, size, bundle.detail_side)
        labels = test.table["dx"].map({c: i for i, c in enumerate(bundle.classes)}).to_numpy()
        keras_pred = served_argmax(bundle.model.predict(test.pixels.astype(np.float32), verbose=0), bundle)
        results["keras_test_single_pass"] = {"test_images": int(len(labels)),
                                             "test_accuracy": accuracy_score(labels, keras_pred),
                                             "test_balanced_accuracy": balanced_accuracy_score(labels, keras_pred)}
    with tempfile.TemporaryDirectory() as tmp:
        for quantize in ("none", "float16", "int8"):
            path = export.export_bundle(args.model, "tflite", Path(tmp) / f"{quantize}.tflite", quantize=quantize)
            runner = export.TFLiteRunner(path)
            entry = {"size_mb": round(path.stat().st_size / 1e6, 2), **stats_ms(timed(lambda: runner(x), args.runs))}
            if test is not None:
                pred = served_argmax(runner(test.pixels), bundle)
                entry.update(test_accuracy=accuracy_score(labels, pred),
                             test_balanced_accuracy=balanced_accuracy_score(labels, pred),
                             top1_agreement_with_keras=float((pred == keras_pred).mean()))
            results[f"tflite_{quantize}"] = entry
            if test is not None and quantize == "float16":
                sidecar = json.loads(path.with_suffix(".json").read_text())
                details = (patients.read(args.data, test.table["image_id"])
                           if "patient_push" in sidecar else None)
                served = export.calibrated_probabilities(runner, test.pixels.astype(np.float32), sidecar,
                                                         details).argmax(1)
                results["tflite_float16_as_served"] = {
                    "views": sidecar["views"], "patient_details": details is not None,
                    "test_accuracy": accuracy_score(labels, served),
                    "test_balanced_accuracy": balanced_accuracy_score(labels, served),
                    "app_own": own_test_figures(Path(args.model), args.data, len(labels))}
    write("tflite", {"model": args.model, "input_size": size, **results})


if __name__ == "__main__":
    run_main(main)
