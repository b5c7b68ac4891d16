"""Compare candidate models with the first one on its validation split only, never the test split.

    python scripts/compare_on_validation.py models/default runs/a runs/b models/default+runs/a --data DATASET
    python scripts/compare_on_validation.py models/default models/default@flips --data DATASET
    python scripts/compare_on_validation.py models/default models/default,runs/a,runs/b --data DATASET

Each candidate is a bundle, or several joined by '+': the mean of their weights (one model of the same
size, a "weight soup"; the bundles must share the architecture), optionally with its own test-time views
after '@' (none, half_turn, quarter_turns, flips). Candidates joined by ',' are an output ensemble: the
mean of their probabilities. An ensemble is several models, so the app cannot serve it; it is here to
measure how much averaging predictions could give (the ceiling for a soup or a distilled model).

A candidate must hold out the first's validation images: the same split (`train.py --split-from` the first),
or that split on a share of its training images (a learning curve, `scripts/learning_curve_data.py`). Every
candidate is scored as it would be served: at its own input size, with the views after '@', else those of
--views, else the (first) bundle's own; the prior shift fitted on validation; argmax. The score
is validation balanced accuracy + macro F1, and the difference to the first candidate is resampled by
lesion (paired bootstrap), because on 1,282 images with 15 dermatofibromas a difference of 0.01 is noise.
A candidate that never saw the first's validation images or their lesions (run 32 beside a model trained on
another collection, say) is scored on them too: its figures there are fair, though it was not tuned on them.
With --as-served, each model's answer is its own served one (its finishing's logit bias, nothing refitted),
the figures the app shows; only single bundles have one. A model that reads the patient's age, sex and body site (`train.py --patients`) is given each validation
image's details from the dataset's metadata, as finishing gives them, or none with --without-patients (what
it answers when a user enters nothing); a photo-only model ignores them.
"""
import argparse
from pathlib import Path

import numpy as np
from scipy.special import softmax
from sklearn.metrics import balanced_accuracy_score, f1_score

from skin_core import calibration, data, patients, splits
from skin_core.bundle import (SPLIT_FILE, BundleError, load_bundle, read_manifest,
                              weight_soup)
from skin_core.options import TTA_VIEWS
from skin_core.predict import Predictor


class ImagesAtSize:
    """The validation photos prepared for each input size a candidate asks for, each read once, and their
    patients' details (None: given to no model)."""

    def __init__(self, table, split_from: Path, patient_rows=None):
        self.table, self.split_from, self.patient_rows, self._prepared = table, split_from, patient_rows, {}

    def __call__(self, input_size: int, detail_side: int | None) -> np.ndarray:
        key = (input_size, detail_side)
        if key not in self._prepared:
            self._prepared[key] = data.read_images(self.table, input_size, detail_side).pixels
        return self._prepared[key]


def candidate_logits(spec: str, images: ImagesAtSize, views: str | None, known: dict | None = None,
                     as_served: bool = False) -> np.ndarray:
    """Logits of one bundle, or of the mean of several bundles' weights, over the candidate's views
    (written after '@'), else the given views, else the first bundle's own; for an ensemble (',') the
    log of its members' mean probabilities. `known` holds the logits already computed in this comparison,
    so a bundle that appears in many ensembles is run over the images once. `as_served`: each bundle's own logit
    bias added (its served answer)."""
    known = {} if known is None else known
    if spec not in known:
        known[spec] = _ensemble_logits(spec, images, views, known, as_served) if "," in spec else \
            _model_logits(spec, images, views, as_served)
    return known[spec]


def _ensemble_logits(spec: str, images: ImagesAtSize, views: str | None, known: dict, as_served: bool) -> np.ndarray:
    members = [softmax(candidate_logits(member, images, views, known, as_served), axis=1) for member in spec.split(",")]
    return np.log(np.mean(members, axis=0))


def _model_logits(spec: str, images: ImagesAtSize, views: str | None, as_served: bool) -> np.ndarray:
    paths, _, own_views = spec.partition("@")
    bundles = [load_bundle(path) for path in paths.split("+")]
    # the same split, or it on a share of the training images, or none of these images seen; else it may
    # have trained on them
    if not (splits.holds_out_the_same(images.split_from / SPLIT_FILE, bundles[0].path / SPLIT_FILE)
            or splits.leave_out_seen(images.table, bundles[0].path / SPLIT_FILE)[1] == 0):
        raise BundleError(f"{bundles[0].path} was not split like {images.split_from}, so the validation images "
                          "may be ones it trained on; compare only bundles trained with --split-from the first")
    if as_served and len(bundles) > 1:
        raise SystemExit(f"{spec}: a weight soup has no served calibration; finish it first (scripts/refinish.py)")
    views = own_views or views or bundles[0].test_time_augmentation
    if views not in TTA_VIEWS:
        raise SystemExit(f"{spec}: unknown test-time views '{views}' (one of {', '.join(TTA_VIEWS)})")
    weight_soup(bundles)
    bundles[0].manifest["test_time_augmentation"] = views
    logits = Predictor(bundles[0]).logits(images(bundles[0].input_size, bundles[0].detail_side),
                                          patients=images.patient_rows)
    return logits + bundles[0].logit_bias if as_served else logits


def compare(candidates: list[str], data_root, views: str | None = None, rounds: int = 500,
            with_patients: bool = True, as_served: bool = False) -> list[dict]:
    """Validation scores of each candidate and its paired-bootstrap difference to the first: with the prior
    shift fitted on these images (how finishing tunes), or `as_served` (each model's own, nothing refitted)."""
    first = Path(candidates[0].split(",")[0].partition("@")[0].split("+")[0])   # its model loads once, below
    table = splits.load_under_split(data_root, first / SPLIT_FILE)
    val = table[table["subset"] == "val"].reset_index(drop=True)
    code = {c: i for i, c in enumerate(read_manifest(first)["classes"])}
    y, groups = val["dx"].map(code).to_numpy(), val["lesion_id"].to_numpy()
    log_prior = calibration.log_prior(table.loc[table["subset"] == "train", "dx"].map(code).to_numpy(), len(code))
    images = ImagesAtSize(val, first, patients.read(data_root, val["image_id"]) if with_patients else None)
    results, reference, known = [], None, {}
    for spec in candidates:
        logits = candidate_logits(spec, images, views, known, as_served)
        shift = 0.0 if as_served else calibration.fit_prior_shift(logits, y, log_prior)["prior_shift"]
        pred = (logits + shift * log_prior).argmax(axis=1)
        reference = pred if reference is None else reference
        diffs = calibration.paired_score_differences(y, groups, pred, reference, rounds)
        results.append({"candidate": spec, "prior_shift": shift, "n": len(y), "lesions": len(np.unique(groups)),
                        "balanced_accuracy": balanced_accuracy_score(y, pred),
                        "macro_f1": f1_score(y, pred, average="macro"), "score": calibration.selection_score(y, pred),
                        "diff_mean": float(diffs.mean()), "diff_sd": float(diffs.std()),
                        "better_share": float((diffs > 0).mean())})
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("candidates", nargs="+", help="bundle folders; A+B means the mean of A's and B's weights, "
                        "A,B the mean of their probabilities")
    parser.add_argument("--data", required=True, help="the dataset the bundles were trained on")
    parser.add_argument("--views", default=None, choices=list(TTA_VIEWS),
                        help="test-time views of candidates without their own '@views' (default: each bundle's own)")
    parser.add_argument("--without-patients", action="store_true",
                        help="give models that read age, sex and body site none of them (the photo alone)")
    parser.add_argument("--as-served", action="store_true",
                        help="score each model's own served answer (its logit bias), nothing fitted on these images")
    args = parser.parse_args()
    try:
        results = compare(args.candidates, args.data, args.views, with_patients=not args.without_patients,
                          as_served=args.as_served)
    except (BundleError, data.DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from None
    how = "each model as served" if args.as_served else "prior shift fitted on validation, as finishing does"
    print(f"validation: {results[0]['n']} images, {results[0]['lesions']} lesions; "
          f"score = balanced accuracy + macro F1 ({how})")
    for r in results:
        print(f"{r['candidate']}: balanced accuracy {r['balanced_accuracy']:.3f}, macro F1 {r['macro_f1']:.3f}, "
              f"score {r['score']:.3f}, prior shift {r['prior_shift']:.2f}; vs first {r['diff_mean']:+.3f} "
              f"(sd {r['diff_sd']:.3f}, better in {r['better_share']:.0%} of resamples)")


if __name__ == "__main__":
    main()
