"""The evaluation report on cases whose right answers are known by construction."""
import numpy as np
import pytest

from skin_core import calibration, evaluation
from skin_core.classes import CLASS_CODES


def one_hot_probs(labels, confidence=0.9, n=7):
    probs = np.full((len(labels), n), (1 - confidence) / (n - 1))
    probs[np.arange(len(labels)), labels] = confidence
    return probs


def test_perfect_predictions():
    y = np.repeat(np.arange(7), 10)
    report = evaluation.build_report(y, one_hot_probs(y), list(CLASS_CODES), bootstrap_rounds=50)
    assert report["accuracy"] == report["balanced_accuracy"] == report["macro_f1"] == 1.0
    assert report["top2_accuracy"] == report["top3_accuracy"] == 1.0
    assert np.array_equal(np.array(report["confusion_matrix"]), np.eye(7) * 10)
    assert all(row["auc"] == 1.0 for row in report["per_class"].values())
    assert report["ece"] == pytest.approx(0.1)  # always 90% sure, always right
    assert report["ci95"]["accuracy"] == [1.0, 1.0]


def test_majority_answer_matches_the_baseline_and_scores_low_balanced_accuracy():
    y = np.array([5] * 60 + [0, 1, 2, 3, 4, 6] * 5)   # 60 nv, 5 of each other class
    probs = one_hot_probs(np.full(len(y), 5))
    report = evaluation.build_report(y, probs, list(CLASS_CODES), bootstrap_rounds=50)
    assert report["accuracy"] == pytest.approx(60 / 90)
    assert report["majority_baseline_accuracy"] == pytest.approx(60 / 90)
    assert report["majority_class"] == "nv"
    assert report["balanced_accuracy"] == pytest.approx(1 / 7)
    assert report["per_class"]["nv"]["recall"] == 1.0
    assert report["per_class"]["mel"]["recall"] == 0.0
    assert report["confusion_matrix"][4][5] == 5        # every melanoma called nv: row = true class


def test_known_confusions_and_top_k():
    y = np.array([0, 0, 1, 1])
    probs = np.zeros((4, 7))
    probs[0, [0, 1, 2]] = [0.6, 0.3, 0.1]   # right
    probs[1, [1, 0, 2]] = [0.6, 0.3, 0.1]   # second guess right
    probs[2, [2, 3, 1]] = [0.5, 0.3, 0.2]   # third guess right
    probs[3, [1, 0, 2]] = [0.7, 0.2, 0.1]   # right
    report = evaluation.build_report(y, probs, list(CLASS_CODES), bootstrap_rounds=0)
    assert report["accuracy"] == 0.5
    assert report["top2_accuracy"] == 0.75
    assert report["top3_accuracy"] == 1.0
    assert report["per_class"]["akiec"]["precision"] == 1.0
    assert report["per_class"]["akiec"]["recall"] == 0.5
    assert report["ci95"] is None


def test_a_dataset_of_some_classes_is_scored_over_the_classes_it_holds():
    # a clinic's melanomas and naevi: nothing is known of the other five, so they must not count as F1 = 0
    from sklearn.metrics import f1_score
    mel, nv, bkl = (CLASS_CODES.index(c) for c in ("mel", "nv", "bkl"))
    y = np.array([mel] * 20 + [nv] * 40)
    pred = np.r_[[mel] * 15, [nv] * 5, [nv] * 36, [mel] * 2, [bkl] * 2]
    report = evaluation.build_report(y, one_hot_probs(pred), list(CLASS_CODES), bootstrap_rounds=200)
    assert report["classes_absent"] == ["akiec", "bcc", "bkl", "df", "vasc"]
    assert report["macro_f1"] == pytest.approx(f1_score(y, pred, labels=[mel, nv], average="macro"))
    assert report["macro_avg"]["recall"] == pytest.approx(report["balanced_accuracy"]) == pytest.approx((15 / 20 + 36 / 40) / 2)
    low, high = report["ci95"]["macro_f1"]
    assert low < report["macro_f1"] < high
    assert any("no images of akiec, bcc, bkl, df, vasc" in note
               for note in evaluation.other_dataset_notes({**report, "left_out_seen": 0, "split_known": True}))
    full = evaluation.build_report(np.repeat(np.arange(7), 5), one_hot_probs(np.repeat(np.arange(7), 5)),
                                   list(CLASS_CODES), bootstrap_rounds=0)
    assert full["classes_absent"] == []


def test_bootstrap_resamples_lesions_not_images():
    # one lesion photographed 50 times and always wrong, 50 lesions once each and right
    y = np.zeros(100, int)
    pred = np.r_[np.ones(50, int), np.zeros(50, int)]
    groups = np.r_[np.zeros(50, int), np.arange(1, 51)]
    ci = evaluation.bootstrap_ci(y, pred, groups, list(range(7)), rounds=300)
    ci_images = evaluation.bootstrap_ci(y, pred, np.arange(100), list(range(7)), rounds=300)
    width = ci["accuracy"][1] - ci["accuracy"][0]
    assert width > 1.5 * (ci_images["accuracy"][1] - ci_images["accuracy"][0])


def test_resampled_confusions_score_each_lesion_resample_as_scikit_learn_does():
    import warnings
    from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix, f1_score
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(60), rng.integers(1, 4, 60))          # lesions of one to three photos
    y = rng.choice([0, 1, 2, 4, 5, 6], len(groups))                    # class 3 never true ...
    pred = np.where(rng.random(len(groups)) < 0.5, y, rng.integers(0, 7, len(groups)))   # ... but predicted
    confusions = evaluation.resampled_confusions(y, pred, groups, 7, rounds=40, seed=5)
    every_class = evaluation.scores_of_confusions(confusions, np.ones(7, bool))
    tested = evaluation.scores_of_confusions(confusions, np.isin(range(7), y))     # the classes the labels hold
    present = evaluation.scores_of_confusions(confusions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for r, idx in enumerate(evaluation.lesion_resamples(groups, 40, seed=5)):
            np.testing.assert_array_equal(confusions[r], confusion_matrix(y[idx], pred[idx], labels=range(7)))
            assert every_class["accuracy"][r] == pytest.approx(accuracy_score(y[idx], pred[idx]))
            assert every_class["balanced_accuracy"][r] == pytest.approx(balanced_accuracy_score(y[idx], pred[idx]))
            assert every_class["macro_f1"][r] == pytest.approx(
                f1_score(y[idx], pred[idx], labels=range(7), average="macro", zero_division=0))
            assert tested["macro_f1"][r] == pytest.approx(
                f1_score(y[idx], pred[idx], labels=[0, 1, 2, 4, 5, 6], average="macro", zero_division=0))
            assert present["macro_f1"][r] == pytest.approx(f1_score(y[idx], pred[idx], average="macro"))
    assert len({round(v, 9) for v in every_class["macro_f1"]}) > 10   # the resamples do differ
    reference = np.where(rng.random(len(groups)) < 0.7, y, (y + 1) % 7)
    paired = calibration.paired_score_differences(y, groups, pred, reference, rounds=40, seed=5)
    expected = [calibration.selection_score(y[idx], pred[idx]) - calibration.selection_score(y[idx], reference[idx])
                for idx in evaluation.lesion_resamples(groups, 40, seed=5)]
    np.testing.assert_allclose(paired, expected, atol=1e-12)


def test_melanoma_threshold_reaches_the_sensitivity_asked_for():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 500)
    probs = rng.dirichlet(np.ones(7), 500)
    probs[y == 4, 4] += 0.3
    probs /= probs.sum(1, keepdims=True)
    t = evaluation.threshold_for_sensitivity(y, probs, 4, 0.85)
    point = evaluation.operating_point(y, probs, 4, t)
    assert point["sensitivity"] >= 0.85
    assert evaluation.operating_point(y, probs, 4, t + 1e-6)["sensitivity"] < 0.85 or t >= 1


def test_temperature_scaling_recovers_a_known_temperature():
    # labels drawn from softmax(z): a model reporting softmax(4 z) is overconfident by exactly T = 4
    from scipy.special import softmax
    rng = np.random.default_rng(1)
    z = rng.normal(0, 1.5, (4000, 7))
    y = np.array([rng.choice(7, p=p) for p in softmax(z, axis=1)])
    fit = calibration.fit_temperature(4 * z, y)
    assert fit["temperature"] == pytest.approx(4, rel=0.1)
    assert fit["val_nll_after"] < fit["val_nll_before"]
    before, _ = evaluation.expected_calibration_error(y, softmax(4 * z, axis=1))
    after, _ = evaluation.expected_calibration_error(y, softmax(4 * z / fit["temperature"], axis=1))
    assert after < 0.03 < before


def test_prior_shift_undoes_an_overcorrected_class_balance():
    # a "balanced" model over-predicts the rare class; shifting by tau * log(prior) restores precision
    from sklearn.metrics import f1_score
    rng = np.random.default_rng(2)
    prior = np.array([0.05, 0.05, 0.1, 0.02, 0.1, 0.65, 0.03])
    y = rng.choice(7, 5000, p=prior)
    logits = rng.normal(0, 1.0, (5000, 7))
    logits[np.arange(5000), y] += 1.5
    fit = calibration.fit_prior_shift(logits, y, np.log(prior))
    assert fit["prior_shift"] > 0
    assert fit["val_score"] > fit["val_score_at_zero"]
    shifted = (logits + fit["prior_shift"] * np.log(prior)).argmax(1)
    assert f1_score(y, shifted, average="macro") > f1_score(y, logits.argmax(1), average="macro")


def test_clearly_better_needs_a_gain_that_survives_resampling_the_lesions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, 600)
    groups = np.arange(600) // 2                      # two photos per lesion
    reference = np.where(rng.random(600) < 0.6, y, (y + 1) % 7)
    fixed = np.where(rng.random(600) < 0.5, y, reference)          # right wherever the reference was, and more
    assert calibration.clearly_better(y, groups, fixed, reference)
    assert not calibration.clearly_better(y, groups, reference, reference)   # a tie is not a gain
    assert not calibration.clearly_better(y, groups, reference, fixed)
    one_more = reference.copy()
    one_more[np.flatnonzero(reference != y)[0]] = y[np.flatnonzero(reference != y)[0]]
    differences = calibration.paired_score_differences(y, groups, one_more, reference, rounds=200)
    assert (differences >= 0).all() and 0 < (differences > 0).mean() < calibration.CLEARLY_BETTER_SHARE


def test_class_reliability_shows_a_class_whose_probabilities_run_high():
    # class 0 given 0.2 to 50 images (10 truly class 0) and 0.8 to 50 (only 20 truly class 0)
    p0 = np.repeat([0.2, 0.8], 50)
    probs = np.column_stack([p0, 1 - p0])
    y_true = np.ones(100, int)
    y_true[:10] = 0
    y_true[50:70] = 0
    curve = evaluation.class_reliability(y_true, probs, 0, n_bins=2)
    np.testing.assert_allclose(curve["predicted"], [0.2, 0.8])
    np.testing.assert_allclose(curve["observed"], [0.2, 0.4])
    assert curve["mean_probability"] == pytest.approx(0.5) and curve["prevalence"] == pytest.approx(0.3)


def test_what_a_patient_model_scores_given_the_photo_alone_is_worded_per_source_or_from_validation():
    from skin_core.evaluation import photo_alone_figures
    figures = lambda ba, f1: {"balanced_accuracy": ba, "macro_f1": f1}      # noqa: E731
    manifest = {"validation": figures(0.745, 0.704), "patients": {"validation_photo_only": figures(0.72, 0.69)},
                "test": {**figures(0.63, 0.60), "by_source": {"ham10000": figures(0.742, 0.696),
                                                              "bcn": figures(0.532, 0.504)},
                         "photo_only": {**figures(0.61, 0.58), "by_source": {"ham10000": figures(0.731, 0.688),
                                                                             "bcn": figures(0.511, 0.49)}}}}
    assert photo_alone_figures(manifest) == (
        "on the held-out test split, ham10000's, balanced accuracy 0.731 and macro F1 0.688 (with the details: "
        "0.742 and 0.696); on bcn's, balanced accuracy 0.511 and macro F1 0.490 (with the details: 0.532 and 0.504)")
    older = {**manifest, "test": figures(0.63, 0.60)}        # finished before the test split's were recorded
    assert photo_alone_figures(older) == ("on the validation split, balanced accuracy 0.720 and macro F1 0.690 "
                                          "(with the details: 0.745 and 0.704)")


def test_the_average_aucs_are_scikit_learns_one_vs_rest_averages_and_skip_an_absent_class():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(5)
    y_true = rng.integers(0, 7, 400)
    probs = rng.dirichlet(np.ones(7), 400) + np.eye(7)[y_true] * rng.uniform(0, 0.5, (400, 1))
    probs /= probs.sum(axis=1, keepdims=True)
    report = evaluation.build_report(y_true, probs, CLASS_CODES, bootstrap_rounds=10)
    aucs = evaluation.average_aucs(report)
    for average in ("macro", "weighted"):
        assert aucs[average] == pytest.approx(roc_auc_score(y_true, probs, multi_class="ovr", average=average))
    without_df = y_true != 3
    report = evaluation.build_report(y_true[without_df], probs[without_df], CLASS_CODES, bootstrap_rounds=10)
    scored = [row["auc"] for code, row in report["per_class"].items() if code != "df"]
    assert report["per_class"]["df"]["auc"] is None
    assert evaluation.average_aucs(report)["macro"] == pytest.approx(np.mean(scored))
