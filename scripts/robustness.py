"""How a bundle's held-out figures change under the differences real uploads bring (sharper crops,
tighter framing, turns, recompression, light and colour), on the bundle's own test split.

    python scripts/robustness.py models/default --data DATASET

Writes robustness.json beside the bundle (the model card shows it) and prints the table. The test
split is only read here to describe a model already chosen, never to choose one; to weigh candidates,
use --subset val, which prints the table and writes nothing.
"""
import argparse

from skin_core import data, images, patients, robustness, splits
from skin_core.bundle import SPLIT_FILE, BundleError, load_bundle, update_report
from skin_core.predict import Predictor


def held_out(bundle, data_root, subset: str):
    """Decoded pictures, labels and patients' details of one subset of the bundle's own split."""
    table = splits.load_under_split(data_root, bundle.path / SPLIT_FILE, classes=bundle.classes)
    rows = table[table["subset"] == subset].reset_index(drop=True)
    pictures = [images.load_file(path).rgb for path in rows["path"]]
    details = patients.read(data_root, rows["image_id"]) if bundle.patient_head is not None else None
    return pictures, rows["dx"].map({c: i for i, c in enumerate(bundle.classes)}).to_numpy(), details


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--data", required=True, help="the dataset the bundle was trained on")
    parser.add_argument("--subset", default="test", choices=["test", "val"])
    args = parser.parse_args()
    try:
        bundle = load_bundle(args.bundle)
        pictures, y_true, details = held_out(bundle, args.data, args.subset)
    except (BundleError, data.DatasetError, images.ImageError) as exc:
        raise SystemExit(f"error: {exc}") from None
    rows = robustness.report(Predictor(bundle), pictures, y_true, patient_rows=details)
    if args.subset == "test":   # the described model's report; validation figures are for choosing only
        update_report(bundle.path, robustness.ROBUSTNESS_FILE, {"subset": args.subset, "conditions": rows})
    print("\n".join(robustness.markdown_table(rows)))


if __name__ == "__main__":
    main()
