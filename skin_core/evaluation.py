"""Metrics from true labels and predicted probabilities, and the evaluation report.

One function, `build_report`, makes the JSON that training writes, the CLI writes and the app
reads. scikit-learn computes every metric it has; only the expected calibration error and the
lesion bootstrap are written here because scikit-learn has no multi-class version of them. The
bootstrap scores its resamples from confusion matrices (the same definitions, checked against
scikit-learn in the tests), because a thousand scikit-learn calls per report take seconds.
"""
from __future__ import annotations

from collections import Counter

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score,
                             precision_recall_fscore_support, roc_auc_score, roc_curve,
                             top_k_accuracy_score)

HEADLINE = ("n", "accuracy", "balanced_accuracy", "macro_f1", "top2_accuracy", "top3_accuracy", "ece")
"""A report's headline figures: what a manifest keeps of the validation report."""
TEST_HEADLINE = HEADLINE + ("majority_baseline_accuracy", "majority_class", "ci95", "operating_points")
"""What a manifest keeps of a test report, overall and for each source."""
METRIC_LABELS = {"accuracy": "Accuracy", "balanced_accuracy": "Balanced accuracy", "macro_f1": "Macro F1",
                 "top2_accuracy": "Top-2 accuracy", "top3_accuracy": "Top-3 accuracy", "ece": "ECE (lower is better)"}
"""How the pages name the headline figures (every one but the count)."""
ECE_BINS = 15
BOOTSTRAP_ROUNDS = 1000
ROC_POINTS = 101


def expected_calibration_error(y_true, probs, n_bins: int = ECE_BINS) -> tuple[float, list[dict]]:
    """Top-label ECE with equal-width confidence bins, and the bins for a reliability diagram."""
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y_true
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    ece, bins = 0.0, []
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        if count:
            gap = abs(correct[mask].mean() - confidence[mask].mean())
            ece += gap * count / len(y_true)
        bins.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count,
                     "confidence": float(confidence[mask].mean()) if count else None,
                     "accuracy": float(correct[mask].mean()) if count else None})
    return float(ece), bins


def class_reliability(y_true, probs, class_index: int, n_bins: int = 10) -> dict:
    """How often a class is the truth when the model gives it probability p, in bins of equal counts
    (scikit-learn's calibration_curve): the top-label ECE cannot show that one class's probabilities run
    high and another's low. Returns the bins' mean probability and observed frequency, and the mean
    probability against the class's share of the images."""
    is_class = (np.asarray(y_true) == class_index).astype(int)
    p = np.asarray(probs)[:, class_index]
    observed, predicted = calibration_curve(is_class, p, n_bins=n_bins, strategy="quantile")
    return {"predicted": predicted.tolist(), "observed": observed.tolist(),
            "mean_probability": float(p.mean()), "prevalence": float(is_class.mean())}


def _headline(y_true, y_pred, labels) -> dict:
    return {"accuracy": accuracy_score(y_true, y_pred),
            "balanced_accuracy": _balanced(y_true, y_pred),
            "macro_f1": f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)}


def _balanced(y_true, y_pred) -> float:
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(balanced_accuracy_score(y_true, y_pred))


def lesion_resamples(groups, rounds: int, seed: int = 0):
    """Row indices of `rounds` bootstrap resamples that draw whole lesions, so repeated photos move together.

    The readable form of the resampling; reports and comparisons use `resampled_confusions`, which
    draws the same resamples and is checked against this one in the tests."""
    unique, inverse = np.unique(groups, return_inverse=True)
    members = [np.flatnonzero(inverse == g) for g in range(len(unique))]
    for drawn in _lesion_draws(len(unique), rounds, seed):
        yield np.concatenate([members[g] for g in drawn])


def _lesion_draws(n_lesions: int, rounds: int, seed: int):
    rng = np.random.default_rng(seed)
    for _ in range(rounds):
        yield rng.integers(0, n_lesions, n_lesions)


def resampled_confusions(y_true, y_pred, groups, n_classes: int, rounds: int, seed: int = 0) -> np.ndarray:
    """Confusion matrices (rounds, true, predicted) of the resamples `lesion_resamples` draws.

    A resample's matrix is the sum of its lesions' matrices, so a thousand resamples cost one matrix
    product instead of a thousand calls to scikit-learn (seconds on every report and model choice).
    """
    unique, inverse = np.unique(groups, return_inverse=True)
    n_lesions = len(unique)
    per_lesion = np.zeros((n_lesions, n_classes * n_classes))
    np.add.at(per_lesion, (inverse, np.asarray(y_true) * n_classes + np.asarray(y_pred)), 1)
    draws = np.array([np.bincount(d, minlength=n_lesions) for d in _lesion_draws(n_lesions, rounds, seed)])
    return (draws.reshape(rounds, n_lesions) @ per_lesion).reshape(rounds, n_classes, n_classes)


def scores_of_confusions(confusions: np.ndarray, f1_classes: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy and macro F1 of each confusion matrix, as scikit-learn defines them:
    balanced accuracy averages recall over the classes present in y_true; macro F1 averages over the
    classes the boolean mask `f1_classes` names (f1_score with those labels, zero_division=0) or, without
    a mask, over the classes present in either y_true or y_pred (f1_score's default)."""
    correct = np.diagonal(confusions, axis1=1, axis2=2)
    true, predicted = confusions.sum(axis=2), confusions.sum(axis=1)
    present = true > 0
    recall = np.divide(correct, true, out=np.zeros_like(correct), where=present)
    f1_denominator = true + predicted
    f1 = np.divide(2 * correct, f1_denominator, out=np.zeros_like(correct), where=f1_denominator > 0)
    counted = np.broadcast_to(f1_classes, f1.shape) if f1_classes is not None else f1_denominator > 0
    return {"accuracy": correct.sum(axis=1) / true.sum(axis=1),
            "balanced_accuracy": (recall * present).sum(axis=1) / present.sum(axis=1),
            "macro_f1": (f1 * counted).sum(axis=1) / counted.sum(axis=1)}


def bootstrap_ci(y_true, y_pred, groups, labels, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0,
                 f1_classes: np.ndarray | None = None) -> dict:
    """95% percentile intervals over lesion-level resamples; labels are the class indices 0..k-1, and
    macro F1 averages over `f1_classes` (a mask; default all of them), as the report's own figure does."""
    confusions = resampled_confusions(y_true, y_pred, groups, len(labels), rounds, seed)
    mask = np.ones(len(labels), bool) if f1_classes is None else np.asarray(f1_classes, bool)
    samples = scores_of_confusions(confusions, mask)
    return {name: [float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))] for name, v in samples.items()}


def operating_point(y_true, probs, class_index: int, threshold: float) -> dict:
    """Sensitivity and specificity of 'p(class) >= threshold' as a one-against-rest decision."""
    positive = y_true == class_index
    flagged = probs[:, class_index] >= threshold
    tp, fn = int((flagged & positive).sum()), int((~flagged & positive).sum())
    tn, fp = int((~flagged & ~positive).sum()), int((flagged & ~positive).sum())
    return {"threshold": float(threshold), "tp": tp, "fn": fn, "tn": tn, "fp": fp,
            "sensitivity": tp / (tp + fn) if tp + fn else None,
            "specificity": tn / (tn + fp) if tn + fp else None,
            "precision": tp / (tp + fp) if tp + fp else None}


def threshold_for_sensitivity(y_true, probs, class_index: int, target: float) -> float:
    """The highest threshold whose one-against-rest sensitivity still reaches `target`."""
    scores = np.sort(probs[y_true == class_index, class_index])[::-1]
    if len(scores) == 0:
        return 0.5
    needed = int(np.ceil(target * len(scores)))
    return float(scores[max(needed, 1) - 1])


def build_report(y_true, probs, classes, *, groups=None, image_ids=None, thresholds=None,
                 bootstrap_rounds: int = BOOTSTRAP_ROUNDS) -> dict:
    """Every number the Evaluation page and the model card show, from labels and probabilities."""
    y_true = np.asarray(y_true, dtype=int)
    probs = np.asarray(probs, dtype=np.float64)
    labels = list(range(len(classes)))
    y_pred = probs.argmax(axis=1)
    groups = np.asarray(groups if groups is not None else np.arange(len(y_true)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    per_class, roc = {}, {}
    for i, code in enumerate(classes):
        positive = y_true == i
        auc = None
        if 0 < positive.sum() < len(y_true):
            auc = float(roc_auc_score(positive, probs[:, i]))
            fpr, tpr, _ = roc_curve(positive, probs[:, i])
            keep = np.unique(np.linspace(0, len(fpr) - 1, min(ROC_POINTS, len(fpr))).round().astype(int))
            roc[code] = {"fpr": fpr[keep].round(4).tolist(), "tpr": tpr[keep].round(4).tolist()}
        per_class[code] = {"precision": float(precision[i]), "recall": float(recall[i]),
                           "f1": float(f1[i]), "support": int(support[i]), "auc": auc}
    ece, reliability = expected_calibration_error(y_true, probs)
    counts = np.bincount(y_true, minlength=len(classes))
    # macro figures average over the classes the labels hold: a dataset of melanomas and naevi says
    # nothing of how well the model finds the other five (all seven on the bundle's own test split)
    tested = [code for code, n in zip(classes, counts) if n]
    scored = [i for i, n in enumerate(counts) if n]
    report = {
        "n": int(len(y_true)),
        "n_lesions": int(len(np.unique(groups))),
        "classes": list(classes),
        "class_counts": {c: int(n) for c, n in zip(classes, counts)},
        **{k: float(v) for k, v in _headline(y_true, y_pred, scored).items()},
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "top2_accuracy": float(top_k_accuracy_score(y_true, probs, k=2, labels=labels)),
        "top3_accuracy": float(top_k_accuracy_score(y_true, probs, k=3, labels=labels)),
        "majority_baseline_accuracy": float(counts.max() / counts.sum()),
        "majority_class": classes[int(counts.argmax())],
        "per_class": per_class,
        "macro_avg": {k: float(np.mean([per_class[c][k] for c in tested])) for k in ("precision", "recall", "f1")},
        "classes_absent": [code for code in classes if code not in tested],
        "weighted_avg": {k: float(np.average([per_class[c][k] for c in classes], weights=counts))
                         for k in ("precision", "recall", "f1")},
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "ece": ece,
        "reliability": reliability,
        "roc": roc,
        "ci95": bootstrap_ci(y_true, y_pred, groups, labels, rounds=bootstrap_rounds, f1_classes=counts > 0)
        if bootstrap_rounds else None,
        "operating_points": {code: operating_point(y_true, probs, classes.index(code), t)
                             for code, t in (thresholds or {}).items() if code in classes},
        "predictions": {
            "image_id": [str(i) for i in (image_ids if image_ids is not None else range(len(y_true)))],
            "lesion_id": [str(g) for g in groups],
            "y_true": y_true.tolist(),
            "probs": probs.round(5).tolist(),
        },
    }
    return report


def average_aucs(report: dict) -> dict[str, float | None]:
    """The macro and support-weighted means of a report's one-vs-rest AUCs, over the classes that have one: what
    scikit-learn's roc_auc_score(multi_class="ovr") averages, which it cannot give when a class is absent.
    Derived from the per-class figures, so reports saved before need nothing added."""
    scored = {code: row for code, row in report["per_class"].items() if row["auc"] is not None}
    if not scored:
        return {"macro": None, "weighted": None}
    aucs = [row["auc"] for row in scored.values()]
    return {"macro": float(np.mean(aucs)),
            "weighted": float(np.average(aucs, weights=[row["support"] for row in scored.values()]))}


def reports_by_source(y_true, probs, classes, sources, groups, thresholds=None) -> dict[str, dict]:
    """build_report for each source's rows (without the per-image predictions, which the whole report holds):
    a model trained on several sites must show how it does on each, not only on their mixture."""
    y_true, probs = np.asarray(y_true), np.asarray(probs)
    sources, groups = np.asarray(sources), np.asarray(groups)
    reports = {}
    for source in dict.fromkeys(sources):
        rows = sources == source
        part = build_report(y_true[rows], probs[rows], classes, groups=groups[rows], thresholds=thresholds)
        part.pop("predictions")
        reports[str(source)] = part
    return reports


def test_split_report(y_true, probs, classes, rows, thresholds, dataset: str, photo_only_probs=None) -> dict:
    """The held-out test split's report: the whole, and each source's when `rows` (image_id, lesion_id, source;
    one per photo) come from several. What finishing writes, and scripts/report_sources.py for a bundle
    reported on more sources than it was finished on. For a model that reads age, sex and body site,
    `photo_only_probs` (its answers given none) adds their headline figures as `photo_only`: photos from
    elsewhere mostly come without those details."""
    report = build_report(y_true, probs, classes, groups=rows["lesion_id"], image_ids=rows["image_id"],
                          thresholds=thresholds)
    report["dataset"] = dataset
    if rows["source"].nunique() > 1:
        report["by_source"] = reports_by_source(y_true, probs, classes, rows["source"], rows["lesion_id"], thresholds)
    if photo_only_probs is not None:
        report["photo_only"] = manifest_test_figures(test_split_report(y_true, photo_only_probs, classes, rows,
                                                                       thresholds, dataset))
    return report


def manifest_test_figures(report: dict) -> dict:
    """What a manifest keeps of a test report (TEST_HEADLINE), overall and for each source, and the same given
    the photos alone (`photo_only`) for a model that reads the patient's details."""
    kept = {k: report[k] for k in TEST_HEADLINE}
    if "by_source" in report:
        kept["by_source"] = {source: {k: part[k] for k in TEST_HEADLINE} for source, part in report["by_source"].items()}
    if "photo_only" in report:
        kept["photo_only"] = report["photo_only"]
    return kept


def test_copies_note(manifest: dict) -> str | None:
    """The test photos that copy a photo the model learnt from under another lesion id (a collection holding one
    photo twice), which a split by lesion cannot keep apart; None when finishing found none or did not look."""
    found = (manifest.get("seen_photos") or {}).get("test_copies")
    if not found:
        return None
    return (f"{len(found)} of these test photos {'is a copy' if len(found) == 1 else 'are copies'} of photos the "
            "model learnt from, filed under other lesion ids in their collections (the manifest lists them: "
            f"{', '.join(item['image_id'] for item in found[:3])}{', ...' if len(found) > 3 else ''}).")


def photo_alone_figures(manifest: dict) -> str:
    """For a model that reads age, sex and body site: what it scores given the photo alone beside what it scores
    with the details, on the held-out test split (each source's when there are several) where finishing recorded
    it, else on validation. Photos sent from elsewhere mostly come without the details."""
    test = manifest["test"] or {}
    if "photo_only" not in test:
        return "on the validation split, " + _alone_and_given(manifest["patients"]["validation_photo_only"],
                                                               manifest["validation"])
    alone = test["photo_only"]
    if "by_source" not in test or "by_source" not in alone:
        return "on the held-out test split, " + _alone_and_given(alone, test)
    return "on the held-out test split, " + "; on ".join(
        f"{source}'s, {_alone_and_given(alone['by_source'][source], given)}"
        for source, given in test["by_source"].items())


def _alone_and_given(alone: dict, given: dict) -> str:
    return (f"balanced accuracy {alone['balanced_accuracy']:.3f} and macro F1 {alone['macro_f1']:.3f} (with the "
            f"details: {given['balanced_accuracy']:.3f} and {given['macro_f1']:.3f})")


def other_dataset_notes(report: dict) -> list[str]:
    """What a reader of a report on a dataset other than the bundle's own test split must know about it:
    what was left out as seen in training, and what could not be checked."""
    if "left_out_seen" not in report:    # the bundle's own test split: grouped by lesion, nothing seen
        return []
    notes = []
    if report["left_out_seen"]:
        notes.append(f"{report['left_out_seen']} images whose image or lesion the model trained or was tuned on "
                     "were left out.")
    if report.get("skipped"):
        notes.append(f"Left out as asked: {_reasons(report['skipped'])}.")
    if report.get("left_out_copies"):
        notes.append(f"{report['left_out_copies']} images that are copies of photos the model trained or was tuned "
                     "on, under other names (found by their content), were left out.")
    if not report["left_out_seen"] and not report.get("left_out_copies") and report.get("split_known"):
        notes.append("None of its images or lesions was used to train or tune the model.")
    if not report.get("split_known"):
        notes.append("The model records no split, so images it trained on may be among these.")
    if report.get("classes_absent"):
        notes.append(f"It holds no images of {', '.join(report['classes_absent'])}: balanced accuracy and macro "
                     "figures average over the classes it holds.")
    if report.get("lesions_joined_by_copies"):
        notes.append("Lesions holding a copy of a photo filed under another lesion id of this dataset (found by "
                     f"its content): {report['lesions_joined_by_copies']}; the intervals resample each such group as "
                     "one lesion.")
    if not report.get("lesions_named"):
        notes.append("The dataset names no lesions, so each image counts as a lesion of its own: photographs "
                     "of one lesion are counted as independent and the intervals are too narrow.")
    if "patient_details" in report:
        notes.append(patient_details_note(report["patient_details"]))
    return notes


def _reasons(skipped: list[str]) -> str:
    """Why images were left out, counted by kind ("3 images missing, 1 image labelled 'scc'"), from data's
    "id: reason" lines and read_images' "name (error)" lines for unreadable files."""
    kinds = Counter(line.split(": ", 1)[1].split(",")[0] if ": " in line else "unreadable" for line in skipped)
    return ", ".join(f"{n} image{'s' if n > 1 else ''} {kind}" for kind, n in kinds.most_common())


def patient_details_note(details: dict) -> str:
    """What a model that reads age, sex and body site was given of them on another dataset."""
    names = {"age": "age", "sex": "sex", "localization": "body site"}
    if not any(details["known"].values()) and not details.get("unrecognised"):
        return "The dataset records no age, sex or body site, so the model answered from the photos alone."
    known = ", ".join(f"{names[field]} {share:.0%}" for field, share in details["known"].items())
    note = f"The model read each image's age, sex and body site from the dataset's metadata (known: {known})."
    foreign = [f"{names[field]} " + ", ".join(f"{value!r} ({count})" for value, count in list(counts.items())[:5])
               + (", ..." if len(counts) > 5 else "")
               for field, counts in details.get("unrecognised", {}).items()]
    if foreign:
        note += (" Values outside HAM10000's were read as unknown (images in brackets): " + "; ".join(foreign)
                 + ". Map them to HAM10000's names in the metadata to have them used.")
    return note


def summary_lines(report: dict) -> list[str]:
    """A short human summary for the command line."""
    ci = report["ci95"] or {k: [float("nan")] * 2 for k in ("accuracy", "balanced_accuracy", "macro_f1")}
    lines = [
        f"images: {report['n']}  lesions: {report['n_lesions']}",
        *other_dataset_notes(report),
        f"accuracy           {report['accuracy']:.3f}  (95% CI {ci['accuracy'][0]:.3f}-{ci['accuracy'][1]:.3f}; "
        f"majority-class baseline {report['majority_baseline_accuracy']:.3f})",
        f"balanced accuracy  {report['balanced_accuracy']:.3f}  (95% CI {ci['balanced_accuracy'][0]:.3f}-{ci['balanced_accuracy'][1]:.3f})",
        f"macro F1           {report['macro_f1']:.3f}  (95% CI {ci['macro_f1'][0]:.3f}-{ci['macro_f1'][1]:.3f})",
        f"top-2 / top-3      {report['top2_accuracy']:.3f} / {report['top3_accuracy']:.3f}",
        f"ECE (15 bins)      {report['ece']:.3f}",
    ]
    for code, point in report.get("operating_points", {}).items():
        if point["sensitivity"] is not None and point["specificity"] is not None:
            lines.append(f"{code} at threshold {point['threshold']:.3f}: sensitivity {point['sensitivity']:.3f}, "
                         f"specificity {point['specificity']:.3f}")
    if "photo_only" in report and "left_out_seen" in report:     # another dataset, read with its details
        alone = report["photo_only"]
        lines.append(f"given the photos alone (no age, sex or body site): balanced accuracy "
                     f"{alone['balanced_accuracy']:.3f}, macro F1 {alone['macro_f1']:.3f}, accuracy "
                     f"{alone['accuracy']:.3f}")
    lines.append("class   precision recall  f1     support auc")
    for code, row in report["per_class"].items():
        auc = f"{row['auc']:.3f}" if row["auc"] is not None else "  -  "
        lines.append(f"{code:<7} {row['precision']:.3f}     {row['recall']:.3f}   {row['f1']:.3f}  {row['support']:<7} {auc}")
    return lines
