"""Give a trained bundle its familiarity model (skin_core.familiarity) without changing anything else.

    python scripts/fit_familiarity.py models/default --data path/to/HAM10000

Training writes it into every new bundle; this is for bundles trained before it existed (one that
has a familiarity model is refused). The dataset
is re-read under the bundle's own split.csv and must have the fingerprint its manifest records, so the
reference images are ones the model was trained on and the threshold comes from its validation
lesions. The test split is not read.
"""
import argparse
from pathlib import Path

from skin_core import data, splits
from skin_core.bundle import SPLIT_FILE, BundleError, add_familiarity, load_bundle
from skin_core.predict import Predictor
from skin_core.training import fit_familiarity


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--data", required=True, help="the dataset the bundle was trained on")
    args = parser.parse_args()
    try:
        predictor = Predictor(load_bundle(args.bundle))
        table = splits.load_under_split(args.data, Path(args.bundle) / SPLIT_FILE, classes=predictor.classes)
        if predictor.familiarity is not None:       # before reading any image
            raise BundleError(f"{Path(args.bundle).name} already has a familiarity model; re-finish the bundle "
                              "(scripts/refinish.py) to fit another.")
        arrays = data.read_images(table, predictor.input_size, predictor.detail_side)
    except (BundleError, data.DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from None
    if arrays.fingerprint != predictor.bundle.manifest["dataset"]["fingerprint"]:
        raise SystemExit("error: this dataset differs from the one the bundle was trained on (fingerprint mismatch)")
    pixels = {subset: arrays.pixels[(arrays.table["subset"] == subset).to_numpy()] for subset in ("train", "val")}
    fitted = fit_familiarity(predictor, pixels["train"], predictor.logits_and_features(pixels["val"])[1])
    try:
        add_familiarity(args.bundle, fitted, fitted.description())
    except BundleError as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"familiarity threshold {fitted.threshold:.4f} ({fitted.percentile:.0f}th percentile of validation) "
          f"written to {args.bundle}")


if __name__ == "__main__":
    main()
