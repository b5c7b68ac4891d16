"""What a patient's age, sex and body site add to a model's answer, measured on validation only.

    python scripts/metadata_gain.py runs/half --fit-from models/default --data DATASET

The model is one trained on a share of --fit-from's training lesions with the same validation images (a
learning-curve model, `scripts/learning_curve_data.py`), so --fit-from's other training images are photos it
never saw. Its served logits there (its test-time views, logit bias and temperature) train two multinomial
logistic regressions (balanced class weights, C = 1, nothing tuned): one on the logits alone, one on the
logits plus age (standardised; a missing age set to the mean, with an indicator), sex and body site (one-hot,
"unknown" a value of its own). Both are scored once on the validation split, and their difference resampled by
lesion (paired, 500 rounds) as for every other choice (docs/experiments.md, runs 39-40). The test split is not
read. The dataset must be in the HAM10000 layout with age, sex and localization columns.
"""
import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, f1_score

from skin_core import calibration, data, splits
from skin_core.bundle import SPLIT_FILE, BundleError, load_bundle
from skin_core.patients import COLUMNS as PATIENT_COLUMNS
from skin_core.predict import Predictor


def patient_columns(data_root) -> pd.DataFrame:
    """Age, sex and body site by image_id, from the dataset's metadata file."""
    root = Path(data_root)
    found = data.find_metadata(root)
    if found is None:
        raise data.DatasetError(f"{root} has no {' or '.join(data.METADATA_NAMES)}, so no age, sex or body site.")
    frame = pd.read_csv(found, dtype={"image_id": str})
    absent = [c for c in PATIENT_COLUMNS if c not in frame.columns]
    if absent:
        raise data.DatasetError(f"{found.name} lacks the columns {', '.join(absent)}.")
    return frame.set_index("image_id")[list(PATIENT_COLUMNS)]


def sex_and_site(rows: pd.DataFrame) -> np.ndarray:
    """Each row's "sex=..." and "site=..." labels ("unknown" where blank): the one-hot columns' names."""
    return np.column_stack([("sex=" + rows["sex"].fillna("unknown").astype(str)).to_numpy(),
                            ("site=" + rows["localization"].fillna("unknown").astype(str)).to_numpy()])


def patient_features(patients: pd.DataFrame, image_ids, age_mean: float, age_sd: float,
                     categories: list[str]) -> np.ndarray:
    """Age (standardised with the fit images' mean and sd; missing: the mean, with an indicator), sex and
    body site one-hot over `categories` (the fit images' values)."""
    rows = patients.loc[list(image_ids)]
    age = pd.to_numeric(rows["age"], errors="coerce")
    missing = age.isna().to_numpy(float)
    scaled = ((age.fillna(age_mean) - age_mean) / age_sd).to_numpy()
    values = sex_and_site(rows)
    onehot = np.column_stack([(values == c).any(axis=1) for c in categories]).astype(float)
    return np.column_stack([scaled, missing, onehot])


def served_logits(predictor: Predictor, table: pd.DataFrame) -> np.ndarray:
    """The logits the app turns into probabilities: the bundle's views, logit bias and temperature."""
    pixels = data.read_images(table, predictor.input_size, predictor.detail_side).pixels
    return predictor.calibrated_logits(predictor.logits(pixels))


def measure(model_path, fit_from, data_root, rounds: int = 500) -> dict:
    """Both heads' validation figures and the paired gain of the one with age, sex and site."""
    model_path, fit_from = Path(model_path), Path(fit_from)
    patients = patient_columns(data_root)          # before any image is read: a dataset without them is refused
    bundle = load_bundle(model_path)
    if not splits.holds_out_the_same(fit_from / SPLIT_FILE, model_path / SPLIT_FILE):
        raise BundleError(f"{model_path} does not validate on {fit_from}'s validation images with a share of its "
                          "training lesions; train it on `scripts/learning_curve_data.py --split-from` that bundle")
    table = splits.load_under_split(data_root, fit_from / SPLIT_FILE, classes=bundle.classes)
    val = table[table["subset"] == "val"].reset_index(drop=True)
    fit, _ = splits.leave_out_seen(table[table["subset"] == "train"], model_path / SPLIT_FILE)
    fit = fit.reset_index(drop=True)
    if fit.empty:
        raise data.DatasetError(f"{model_path} trained on every training lesion of {fit_from}: nothing left to fit on.")
    code = {c: i for i, c in enumerate(bundle.classes)}
    y_fit, y_val = fit["dx"].map(code).to_numpy(), val["dx"].map(code).to_numpy()
    predictor = Predictor(bundle)
    logits_fit, logits_val = served_logits(predictor, fit), served_logits(predictor, val)

    fit_rows = patients.loc[fit["image_id"]]
    ages = pd.to_numeric(fit_rows["age"], errors="coerce")
    categories = sorted(set(sex_and_site(fit_rows).ravel()))
    scale = (float(ages.mean()), float(ages.std()) or 1.0, categories)
    inputs = {"logits": (logits_fit, logits_val),
              "with age, sex and site": (
                  np.column_stack([logits_fit, patient_features(patients, fit["image_id"], *scale)]),
                  np.column_stack([logits_val, patient_features(patients, val["image_id"], *scale)]))}
    result = {"fit_images": len(fit), "fit_lesions": int(fit["lesion_id"].nunique()), "val_images": len(val),
              "heads": {}}
    predictions = {}
    for name, (x_fit, x_val) in inputs.items():
        head = LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000).fit(x_fit, y_fit)
        predictions[name] = head.predict(x_val)     # class codes, also when a class is absent from the fit images
        result["heads"][name] = {"balanced_accuracy": balanced_accuracy_score(y_val, predictions[name]),
                                 "macro_f1": f1_score(y_val, predictions[name], average="macro"),
                                 "score": calibration.selection_score(y_val, predictions[name])}
    with_patient = predictions["with age, sex and site"]
    diffs = calibration.paired_score_differences(y_val, val["lesion_id"].to_numpy(), with_patient,
                                                 predictions["logits"], rounds)
    result.update(gain=result["heads"]["with age, sex and site"]["score"] - result["heads"]["logits"]["score"],
                  gain_sd=float(diffs.std()), ahead_share=float((diffs > 0).mean()))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a bundle trained on a share of --fit-from's training lesions")
    parser.add_argument("--fit-from", required=True, help="the bundle whose split covers the dataset")
    parser.add_argument("--data", required=True, help="the dataset, HAM10000 layout with age, sex and localization")
    args = parser.parse_args()
    try:
        r = measure(args.model, args.fit_from, args.data)
    except (BundleError, data.DatasetError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print(f"fitted on {r['fit_images']} images ({r['fit_lesions']} lesions) the model never saw; "
          f"scored on {r['val_images']} validation images")
    for name, head in r["heads"].items():
        print(f"{name}: balanced accuracy {head['balanced_accuracy']:.3f}, macro F1 {head['macro_f1']:.3f}, "
              f"score {head['score']:.3f}")
    print(f"gain {r['gain']:+.3f} (sd {r['gain_sd']:.3f}, ahead in {r['ahead_share']:.0%} of resamples)")


if __name__ == "__main__":
    main()
