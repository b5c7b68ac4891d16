"""Re-run the finishing steps (calibration, melanoma threshold, test evaluation, bundle) on a trained
bundle's weights with the current code, without fitting again.

    python scripts/refinish.py models/default --out runs/default-flips --data path/to/HAM10000 [--tta flips]
    python scripts/refinish.py models/default --average-with runs/a --out runs/soup --data path/to/HAM10000
    python scripts/refinish.py models/default --img-size 192 --out runs/default192 --data path/to/HAM10000

With --average-with, the weights are the mean of this bundle's and the others' (a "weight soup": one
model of the same size; the bundles must share the architecture and the split), written to --out.
With --img-size, the same weights are served at another input size (the body is convolutional and
pooled, so it accepts any size); the size they were trained at is kept in the manifest.

The dataset is re-read and split as the bundle's own split.csv records; the fingerprint must match
the one in its manifest, so validation and test are the same lesions as before.
"""
import argparse
import dataclasses
import shutil
import tempfile
from pathlib import Path

from skin_core import training
from skin_core.bundle import HISTORY_FILE, SPLIT_FILE, BundleError, load_bundle, weight_soup
from skin_core.options import TTA_CHOICES


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--data", required=True)
    parser.add_argument("--tta", default=None, choices=TTA_CHOICES,
                        help="test-time views to finish with instead of the recorded choice")
    parser.add_argument("--average-with", nargs="+", default=[], metavar="BUNDLE",
                        help="average the weights with these bundles' (same architecture and split)")
    parser.add_argument("--img-size", type=int, default=None,
                        help="serve the weights at this input size instead of the one they were trained at")
    parser.add_argument("--name", default=None,
                        help="the new bundle's display name (default: the source's, marked re-finished)")
    parser.add_argument("--out", required=True,
                        help="a new bundle folder; the source is never rewritten (its model card and robustness "
                             "report would not carry over): compare the result, then promote or copy it")
    args = parser.parse_args()
    if Path(args.out).exists():
        raise SystemExit(f"error: {args.out} already exists; re-finish into a new folder")
    try:
        source = load_bundle(args.bundle)
        weight_soup([source] + [load_bundle(path) for path in args.average_with])
    except BundleError as exc:
        raise SystemExit(f"error: {exc}") from None
    config = training.recorded_config(source, args.data, args.out, args.name or f"{source.name} (re-finished)")
    recorded, fields = source.manifest["training"], {f.name for f in dataclasses.fields(training.TrainConfig)}
    config.tta = args.tta or config.tta
    fit_info = {k: v for k, v in recorded.items() if k not in fields and k != "seconds"}
    if recorded.get("init_bundle"):
        fit_info["init_bundle"] = recorded["init_bundle"]
    fit_info["fit_seconds"] = recorded.get("fit_seconds", recorded.get("seconds"))
    if args.img_size and args.img_size != config.img_size:
        fit_info.setdefault("trained_img_size", config.img_size)
        config.img_size = args.img_size
    if args.average_with:
        fit_info["weights_averaged_with"] = [Path(path).name for path in args.average_with]
    with tempfile.TemporaryDirectory() as tmp:
        weights = Path(tmp) / "model.weights.h5"
        source.model.save_weights(weights)
        history = None                 # averaged weights were never trained as such: no curves of their own
        if not args.average_with and (Path(args.bundle) / HISTORY_FILE).is_file():   # a soup has none either
            history = Path(tmp) / HISTORY_FILE
            shutil.copy(Path(args.bundle) / HISTORY_FILE, history)
        try:
            out = training.finish_from_weights(config, str(weights), str(history) if history else None, fit_info,
                                               expected_fingerprint=source.manifest["dataset"]["fingerprint"],
                                               split_csv=Path(args.bundle) / SPLIT_FILE,
                                               patient_head=source.patient_head)
        except (ValueError, BundleError, OSError) as exc:   # DatasetError is a ValueError: the message says why
            raise SystemExit(f"error: {getattr(exc, 'strerror', None) or exc}") from None
    print(f"re-finished {out}")


if __name__ == "__main__":
    main()
