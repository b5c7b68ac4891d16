"""Gather what a GPU machine needs for scripts/train_gpu.py: the training and validation images only.

    python scripts/gpu_pack.py --data ~/data/HAM10000 --split models/default/split.csv \
        --weights mobilenet_1_0_224_tf_no_top.h5 --out gpu_pack

Writes OUT/data (the HAM10000 layout: the metadata rows and image files of the train and val subsets),
OUT/split.csv and OUT/weights/<file>. The test images stay behind, so the remote run cannot train on
them; `train.py --finish-from` later checks the split digest against the full dataset.
"""
import argparse
import shutil
from pathlib import Path

from skin_core import data, splits


def make_pack(dataset: str, split_csv: str, out: str, weights: str | None = None) -> Path:
    table = data.load_dataset(dataset).table
    keep = table[splits.subsets_from_file(table, split_csv).isin(["train", "val"]).to_numpy()]
    root = Path(out)
    (root / "data" / "images").mkdir(parents=True, exist_ok=True)
    keep[["lesion_id", "image_id", "dx"]].to_csv(root / "data" / "HAM10000_metadata.csv", index=False)
    for path, image_id in zip(keep["path"], keep["image_id"]):
        shutil.copy(path, root / "data" / "images" / f"{image_id}{Path(path).suffix}")
    shutil.copy(split_csv, root / "split.csv")
    if weights:
        (root / "weights").mkdir(exist_ok=True)
        shutil.copy(weights, root / "weights" / Path(weights).name)
    return root


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True)
    parser.add_argument("--split", required=True, help="split.csv of a bundle trained on this dataset")
    parser.add_argument("--weights", default=None, help="ImageNet MobileNet .h5 weights to take along")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.weights and not Path(args.weights).is_file():      # before any image is copied
        raise SystemExit(f"error: weights file not found: {args.weights}")
    try:
        print(f"pack written to {make_pack(args.data, args.split, args.out, args.weights)}")
    except data.DatasetError as exc:
        raise SystemExit(f"error: {exc}") from None
    except OSError as exc:
        raise SystemExit(f"error: {exc.filename or args.out}: {exc.strerror or exc}") from None


if __name__ == "__main__":
    main()
