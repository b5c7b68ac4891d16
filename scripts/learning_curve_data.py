"""A dataset for a learning curve: a bundle's validation and test lesions unchanged, a share of its training lesions.

    python scripts/learning_curve_data.py --data ~/data/HAM10000 --split-from models/default --keep-one-in 2 --out runs/half
    python train.py --data runs/half --split-from models/default ...   (the bundle's own command otherwise)
    python scripts/compare_on_validation.py models/default runs/half-model --data ~/data/HAM10000

What more photos would buy is measured by training the same recipe on fewer: the training lesions kept are one fold
of StratifiedGroupKFold (by dx, grouped by lesion, shuffled with --seed), so every class keeps its share and no
lesion is cut in two, while validation and test stay the bundle's own, so the scores are comparable with it. The
folder is in the official layout: a metadata CSV and an images/ folder of links to the original files (copies where
the file system allows no links).
"""
import argparse
import os
import shutil
from pathlib import Path

from sklearn.model_selection import StratifiedGroupKFold

from skin_core import data, splits
from skin_core.bundle import SPLIT_FILE


def subset_table(table, keep_one_in: int, seed: int):
    """The rows of `table` (with a "subset" column) kept: all validation and test rows, one fold of the training rows."""
    train = table[table["subset"] == "train"]
    folds = StratifiedGroupKFold(n_splits=keep_one_in, shuffle=True, random_state=seed)
    _, kept = next(folds.split(train, train["dx"], train["lesion_id"]))
    return table[(table["subset"] != "train") | table.index.isin(train.index[kept])]


def write_dataset(rows, out: Path) -> None:
    images = out / "images"
    images.mkdir(parents=True)
    for source, image_id in zip(rows["path"], rows["image_id"]):
        target = images / f"{image_id}{Path(source).suffix.lower()}"
        try:
            os.symlink(Path(source).resolve(), target)
        except OSError:
            shutil.copyfile(source, target)
    rows[["lesion_id", "image_id", "dx"]].to_csv(out / "HAM10000_metadata.csv", index=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="the dataset the bundle was trained on")
    parser.add_argument("--split-from", required=True, metavar="BUNDLE", help="the bundle whose split is kept")
    parser.add_argument("--keep-one-in", type=int, required=True, metavar="K",
                        help="keep one K-th of the training lesions (2: half, 4: a quarter)")
    parser.add_argument("--seed", type=int, default=42, help="which lesions are kept")
    parser.add_argument("--out", required=True, help="new dataset folder")
    args = parser.parse_args()
    out = Path(args.out)
    if args.keep_one_in < 2:
        parser.error("--keep-one-in must be 2 or more")
    if out.exists():
        parser.error(f"{out} already exists; write the dataset to a new folder")
    split_csv = Path(args.split_from) / SPLIT_FILE
    if not split_csv.is_file():
        parser.error(f"no {SPLIT_FILE} in {args.split_from}: --split-from must be a bundle folder")
    try:
        table = splits.load_under_split(args.data, split_csv)
    except data.DatasetError as exc:
        parser.error(str(exc))
    rows = subset_table(table, args.keep_one_in, args.seed)
    write_dataset(rows, out)
    counts = rows.loc[rows["subset"] == "train", "dx"].value_counts().to_dict()
    print(f"{out}: {len(rows)} images; training {sum(counts.values())} of {int((table['subset'] == 'train').sum())} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}); validation and test as in {args.split_from}")


if __name__ == "__main__":
    main()
