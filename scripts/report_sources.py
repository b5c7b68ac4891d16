"""Report a bundle on the test lesions of every source its split lists, and write the result as a new bundle.

    python scripts/report_sources.py runs/r45 --data ~/data/HAM10000 --data ~/data/isic2019_bcn_msk \
        --inherit-split-from runs/r44 --out models/candidate

A model finished on one collection (run 45: run 44's three-site weights refocused on HAM10000) was still trained,
through its starting bundle, on the others. This script scores it, as served (its test-time views, calibration and
each image's age, sex and body site for a model that reads them), on each dataset's test rows of its split, and
writes the evaluation report with each source's figures beside the overall ones (`by_source`), as a multi-source
training run writes it. `--inherit-split-from` first adds the starting bundle's rows for images the bundle's own
split lacks (bundles finished before train.py recorded them); the rows keep their subsets, so an image that model
trained or was tuned on is never scored. The new bundle keeps the fingerprints of every photo its split marks as
learnt from (skin_core.copies). The source bundle is not changed.
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from skin_core import data, evaluation, patients, splits
from skin_core.bundle import HISTORY_FILE, SPLIT_FILE, BundleError, load_bundle, write_bundle
from skin_core.copies import SeenPhotos
from skin_core.predict import Predictor


def test_rows(root, split: pd.DataFrame) -> pd.DataFrame:
    """The dataset's rows that the split holds out for testing; every image must be listed."""
    table = data.load_dataset(root, every_class=False).table
    subsets = table["image_id"].map(split.set_index("image_id")["subset"])
    if subsets.isna().any():
        raise data.DatasetError(f"{int(subsets.isna().sum())} images of {Path(root).name} are not in the bundle's "
                                "split, so whether it learnt from them is unknown.")
    return table[subsets == "test"].reset_index(drop=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--data", action="append", required=True, help="a dataset the split lists; repeat it")
    parser.add_argument("--inherit-split-from", default=None, metavar="BUNDLE",
                        help="the bundle this one was continued from, whose split rows it lacks")
    parser.add_argument("--out", required=True, help="a new bundle folder")
    args = parser.parse_args()
    if Path(args.out).exists():
        raise SystemExit(f"error: {args.out} already exists")
    try:
        source = load_bundle(args.bundle)
        split = pd.read_csv(source.path / SPLIT_FILE, dtype=str)
        if args.inherit_split_from:
            split = splits.with_inherited_rows(split, Path(args.inherit_split_from) / SPLIT_FILE)
        predictor = Predictor(source)
        parts = []
        for root in args.data:
            rows = test_rows(root, split)
            details = patients.read(root, rows["image_id"]) if source.patient_head is not None else None
            pixels = data.read_images(rows, source.input_size, source.detail_side).pixels
            given, alone = predictor.probabilities_given_and_alone(pixels, details)
            parts.append(rows.assign(probs=list(given), alone=None if alone is None else list(alone)))
        learnt, _ = splits.rows_in_split(args.data, split)   # the split may now name more photos than the source's prints
        seen = SeenPhotos.of(learnt["image_id"], data.read_images(learnt, source.input_size, source.detail_side).pixels)
    except (BundleError, data.DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from None
    test = pd.concat(parts, ignore_index=True)
    labels = test["dx"].map({c: i for i, c in enumerate(source.classes)}).to_numpy()
    probs = np.stack(test["probs"].to_numpy())
    alone = np.stack(test["alone"].to_numpy()) if source.patient_head is not None else None
    report = evaluation.test_split_report(labels, probs, source.classes, test, source.thresholds,
                                          "held-out test splits of " + " + ".join(Path(root).name for root in args.data),
                                          photo_only_probs=alone)
    manifest = {**source.manifest, "test": evaluation.manifest_test_figures(report), "seen_photos": seen.description()}
    history = source.path / HISTORY_FILE
    write_bundle(args.out, source.model, manifest, evaluation=report, split=split, familiarity=source.familiarity,
                 history=pd.read_csv(history, index_col="epoch") if history.is_file() else None,
                 patient_head=source.patient_head, seen=seen)
    for line in evaluation.summary_lines(report):
        print(line)
    for name, part in report.get("by_source", {}).items():
        print(f"{name}: {part['n']} images, balanced accuracy {part['balanced_accuracy']:.3f}, macro F1 "
              f"{part['macro_f1']:.3f} (always-{part['majority_class']} {part['majority_baseline_accuracy']:.3f})")


if __name__ == "__main__":
    main()
