"""Give a trained bundle its familiarity model (skin_core.familiarity) without changing anything else.

    python scripts/fit_familiarity.py models/default --data path/to/HAM10000

Training writes it into every new bundle; this is for bundles trained before it existed. The dataset
is re-read under the bundle's own split.csv and must have the fingerprint its manifest records, so the
reference images are ones the model was trained on and the threshold comes from its validation
lesions. The test split is not read.
"""
import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from skin_core import data, familiarity  # noqa: E402
from skin_core.bundle import SPLIT_FILE, BundleError, add_familiarity, load_bundle  # noqa: E402
from skin_core.predict import Predictor  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--data", required=True, help="the dataset the bundle was trained on")
    args = parser.parse_args()
    try:
        predictor = Predictor(load_bundle(args.bundle))
        table = data.load_under_split(args.data, Path(args.bundle) / SPLIT_FILE, classes=predictor.classes)
    except (BundleError, data.DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from None
    arrays = data.read_images(table, predictor.input_size, predictor.detail_side)
    if arrays.fingerprint != predictor.bundle.manifest["dataset"]["fingerprint"]:
        raise SystemExit("error: this dataset differs from the one the bundle was trained on (fingerprint mismatch)")
    features = {}
    for subset in ("train", "val"):
        pixels = arrays.pixels[(arrays.table["subset"] == subset).to_numpy()]
        if subset == "train":           # only the images the reference keeps
            pixels = pixels[familiarity.reference_rows(len(pixels))]
        features[subset] = predictor.logits_and_features(pixels)[1]
        print(f"{subset}: features of {len(pixels)} images")
    fitted = familiarity.fit(features["train"], features["val"])
    add_familiarity(args.bundle, fitted, fitted.description())
    print(f"familiarity threshold {fitted.threshold:.4f} ({fitted.percentile:.0f}th percentile of validation) "
          f"written to {args.bundle}")


if __name__ == "__main__":
    main()
