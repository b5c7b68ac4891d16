"""Give a trained bundle the fingerprints of the photos it learnt from (skin_core.copies), changing nothing else.

    python scripts/add_seen_photos.py models/default --data path/to/HAM10000 [--data path/to/another]

Training keeps them in every new bundle; this is for bundles trained before it did (one that has them is
refused). Every image of the datasets that the bundle's split.csv marks as trained or tuned on is prepared as
the bundle prepares photos and fingerprinted; the test split is not read. Images the split names that none
of the datasets holds are counted: copies of those cannot be found.
"""
import argparse
from pathlib import Path

import pandas as pd

from skin_core import data, splits
from skin_core.bundle import SPLIT_FILE, BundleError, add_seen_photos, read_manifest
from skin_core.copies import SEEN_FILE, SeenPhotos


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--data", action="append", required=True, help="a dataset the bundle learnt from (repeat)")
    args = parser.parse_args()
    try:
        manifest = read_manifest(args.bundle)
        if SEEN_FILE in manifest["files"]:              # before reading any image
            raise BundleError(f"{Path(args.bundle).name} already has the fingerprints of its photos.")
        table, absent = splits.rows_in_split(args.data, pd.read_csv(Path(args.bundle) / SPLIT_FILE, dtype=str))
        arrays = data.read_images(table, int(manifest["input_size"]), manifest["preprocessing"]["detail_side"])
        seen = SeenPhotos.of(arrays.table["image_id"], arrays.pixels)
        add_seen_photos(args.bundle, seen)
    except (BundleError, data.DatasetError, OSError, KeyError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"fingerprints of {len(seen.image_ids)} photos written to {args.bundle}"
          + (f"; {absent} photos its split names as learnt from are not in these datasets" if absent else ""))


if __name__ == "__main__":
    main()
