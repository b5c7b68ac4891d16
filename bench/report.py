"""Time the lesion bootstrap that every evaluation report and model choice runs, on the shapes of the
default bundle's own test and validation splits (its split.csv: images grouped by lesion).

    python bench/report.py [--model models/default]

The figures are the 95% intervals of a report (1,000 resamples of the test split) and the paired
comparison behind the 90% rule (500 resamples of the validation split), both as computed now
(summed per-lesion confusion matrices) and, side by side, as first written (one scikit-learn call per
resample and metric). Predictions are drawn at random: the cost does not depend on them.
"""
import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score

from common import run_main, write
from skin_core import calibration, evaluation
from skin_core.bundle import SPLIT_FILE


def earlier_bootstrap_ci(y_true, y_pred, groups, rounds):
    warnings.simplefilter("ignore")     # as the earlier code did: absent classes in a resample
    samples = [(accuracy_score(y_true[i], y_pred[i]), balanced_accuracy_score(y_true[i], y_pred[i]),
                f1_score(y_true[i], y_pred[i], labels=range(7), average="macro", zero_division=0))
               for i in evaluation.lesion_resamples(groups, rounds)]
    return np.percentile(samples, [2.5, 97.5], axis=0)


def earlier_paired(y_true, groups, y_pred, reference, rounds):
    warnings.simplefilter("ignore")
    return np.array([calibration.selection_score(y_true[i], y_pred[i]) - calibration.selection_score(y_true[i], reference[i])
                     for i in evaluation.lesion_resamples(groups, rounds)])


def seconds(fn) -> float:
    start = time.perf_counter()
    fn()
    return round(time.perf_counter() - start, 3)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="models/default")
    args = parser.parse_args()
    split = pd.read_csv(Path(args.model) / SPLIT_FILE, dtype=str)
    rng = np.random.default_rng(0)
    result = {"model": args.model}
    for subset, rounds in (("test", evaluation.BOOTSTRAP_ROUNDS), ("val", 500)):
        groups = split.loc[split["subset"] == subset, "lesion_id"].to_numpy()
        y = rng.integers(0, 7, len(groups))
        pred = np.where(rng.random(len(groups)) < 0.7, y, rng.integers(0, 7, len(groups)))
        other = np.where(rng.random(len(groups)) < 0.7, y, rng.integers(0, 7, len(groups)))
        if subset == "test":
            now = seconds(lambda: evaluation.bootstrap_ci(y, pred, groups, list(range(7)), rounds))
            before = seconds(lambda: earlier_bootstrap_ci(y, pred, groups, rounds))
            name = "report_intervals"
        else:
            now = seconds(lambda: calibration.paired_score_differences(y, groups, pred, other, rounds))
            before = seconds(lambda: earlier_paired(y, groups, pred, other, rounds))
            name = "paired_comparison"
        result[name] = {"subset": subset, "images": len(groups), "lesions": int(len(set(groups))),
                        "resamples": rounds, "seconds": now, "earlier_seconds": before}
    write("report", result)


if __name__ == "__main__":
    run_main(main)
