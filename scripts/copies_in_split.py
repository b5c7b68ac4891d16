"""How many of a bundle's held-out test photos are copies of photos it trained or was tuned on under another name
(skin_core.copies), and its test figures without them: a check that the lesion-grouped split held out what it
meant to.

    python scripts/copies_in_split.py models/default --data path/to/HAM10000 [--data path/to/another] [--json out.json]
        [--record]

Collections hold some photos twice under different lesion ids, so a split by lesion can put one copy in training
and the other in test. The copies are listed with the photo each matches; the figures are the bundle's recorded
test predictions (evaluation.json) without those images, per source. `--record` writes the list into the bundle's
manifest (`seen_photos.test_copies`), as training does for the bundles it writes; nothing else is changed.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from skin_core import data, evaluation, splits
from skin_core.bundle import EVALUATION_FILE, MANIFEST_FILE, SPLIT_FILE, BundleError, load_bundle, read_manifest
from skin_core.jsonfiles import replace_json


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--data", action="append", required=True, help="a dataset the bundle learnt from (repeat)")
    parser.add_argument("--json", help="write the copies and the figures here")
    parser.add_argument("--record", action="store_true", help="list the copies in the bundle's manifest")
    args = parser.parse_args()
    try:
        bundle = load_bundle(args.bundle)
        if bundle.seen is None:
            raise BundleError(f"{bundle.name} keeps no fingerprints of its photos; add them with "
                              "scripts/add_seen_photos.py first.")
        split = pd.read_csv(Path(args.bundle) / SPLIT_FILE, dtype=str)
        table, _ = splits.rows_in_split(args.data, split, ("test",))
        arrays = data.read_images(table, bundle.input_size, bundle.detail_side)
    except (BundleError, data.DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from None
    copied = bundle.seen.copied(arrays.pixels)
    found = arrays.table.assign(copy_of=copied).dropna(subset=["copy_of"])
    learnt = split.set_index("image_id")
    found = found.assign(copy_dx=found["copy_of"].map(learnt["dx"]), copy_subset=found["copy_of"].map(learnt["subset"]))
    print(f"{len(found)} of {len(arrays.table)} test photos are copies of photos the model learnt from")
    if len(found):
        print(found[["image_id", "dx", "source", "copy_of", "copy_dx", "copy_subset"]].to_string(index=False))

    recorded = json.loads((Path(args.bundle) / EVALUATION_FILE).read_text())["predictions"]
    predictions = pd.DataFrame({"image_id": recorded["image_id"], "lesion_id": recorded["lesion_id"],
                                "y_true": recorded["y_true"], "probs": recorded["probs"]})
    predictions["source"] = predictions["image_id"].map(table.set_index("image_id")["source"])
    figures = {}
    for source, rows in predictions.groupby("source"):
        kept = rows[~rows["image_id"].isin(found["image_id"])]
        figures[source] = {}
        for name, part in (("recorded", rows), ("without_copies", kept)):
            report = evaluation.build_report(part["y_true"], np.stack(part["probs"]), bundle.classes,
                                             groups=part["lesion_id"], thresholds=bundle.thresholds)
            figures[source][name] = {"n": report["n"], **{k: round(report[k], 4) for k in evaluation.HEADLINE}}
        print(f"{source}: " + "; ".join(f"{name} " + ", ".join(f"{k} {v}" for k, v in f.items())
                                        for name, f in figures[source].items()))
    if args.record:
        manifest = read_manifest(args.bundle)
        manifest["seen_photos"] = {**manifest["seen_photos"], "test_copies": [
            {"image_id": row.image_id, "copy_of": row.copy_of} for row in found.itertuples()]}
        replace_json(Path(args.bundle) / MANIFEST_FILE, manifest, indent=2)
    if args.json:
        Path(args.json).write_text(json.dumps({"copies": found.drop(columns=["path"], errors="ignore")
                                               .to_dict("records"), "figures": figures}, indent=1, default=str))


if __name__ == "__main__":
    main()
