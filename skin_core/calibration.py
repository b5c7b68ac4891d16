"""Everything finishing fits on the validation split, and the score it chooses by.

- Temperature scaling (Guo et al. 2017): one number that makes the softmax confidence match how often the
  model is right. It never changes the ranking.
- The prior shift (logit adjustment, Menon et al. 2021): one scalar times the training split's log class
  frequencies, added to the logits (the bundle's logit_bias). It does change the top class: it pulls a
  class-weighted model's rare classes back toward the real mix, and so sets the balance with nv.
- The selection score (balanced accuracy + macro F1) and the paired lesion-bootstrap comparison that
  decides whether one candidate is clearly better than another."""
from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar


def _nll(logits: np.ndarray, y_true: np.ndarray, temperature: float) -> float:
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    log_probs = scaled - np.log(np.exp(scaled).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(y_true)), y_true].mean())


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> dict:
    """The temperature minimising validation negative log-likelihood, with NLL before and after."""
    logits = np.asarray(logits, np.float64)
    y_true = np.asarray(y_true, int)
    result = minimize_scalar(lambda t: _nll(logits, y_true, t), bounds=(0.05, 20.0), method="bounded")
    temperature = float(result.x)
    return {"temperature": temperature, "method": "temperature scaling on the validation split",
            "val_nll_before": _nll(logits, y_true, 1.0), "val_nll_after": _nll(logits, y_true, temperature)}


def selection_score(y_true, y_pred) -> float:
    """Balanced accuracy + macro F1: the one number every finishing choice is made on, on validation."""
    from sklearn.metrics import balanced_accuracy_score, f1_score
    return float(balanced_accuracy_score(y_true, y_pred) + f1_score(y_true, y_pred, average="macro"))


CLEARLY_BETTER_SHARE = 0.9
"""A costlier choice must beat the cheaper one in this share of paired lesion resamples of validation:
with 15 dermatofibromas there, a higher score by 0.01 is noise (docs/experiments.md, run 12)."""


def paired_score_differences(y_true, groups, y_pred, reference, rounds: int = 500, seed: int = 0) -> np.ndarray:
    """selection_score(y_pred) - selection_score(reference) over lesion-level resamples, paired."""
    from .evaluation import resampled_confusions, scores_of_confusions
    y_true, y_pred, reference = (np.asarray(a, dtype=int) for a in (y_true, y_pred, reference))
    n_classes = int(max(y_true.max(), y_pred.max(), reference.max())) + 1
    scores = [scores_of_confusions(resampled_confusions(y_true, pred, groups, n_classes, rounds, seed),
                                   f1_classes=None) for pred in (y_pred, reference)]
    mine, theirs = (s["balanced_accuracy"] + s["macro_f1"] for s in scores)
    return mine - theirs


def clearly_better(y_true, groups, y_pred, reference, rounds: int = 500) -> bool:
    """Whether y_pred beats reference in at least CLEARLY_BETTER_SHARE of paired resamples."""
    differences = paired_score_differences(y_true, groups, y_pred, reference, rounds)
    return bool((differences > 0).mean() >= CLEARLY_BETTER_SHARE)


def log_prior(train_labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Log class frequencies of the training split (a class with no images counts as one)."""
    counts = np.bincount(train_labels, minlength=n_classes)
    return np.log(np.maximum(counts, 1) / counts.sum())


def fit_prior_shift(logits: np.ndarray, y_true: np.ndarray, log_prior: np.ndarray,
                    grid=np.linspace(0.0, 1.0, 21)) -> dict:
    """Logit adjustment (Menon et al. 2021) with one scalar fitted on the validation split.

    A model trained with class weights answers as if the classes were equally common; adding
    tau * log(prior) to its logits moves it back toward the real class mix. tau = 0 keeps the
    balanced answer, tau = 1 the fully prior-weighted one. One number, chosen to maximise
    balanced accuracy + macro F1 on validation, so it cannot overfit the small classes.
    """
    scores = [selection_score(y_true, (logits + tau * log_prior).argmax(axis=1)) for tau in grid]
    best = int(np.argmax(scores))
    return {"prior_shift": float(grid[best]), "log_prior": [float(v) for v in log_prior],
            "val_score_at_zero": float(scores[0]), "val_score": float(scores[best])}
