"""Temperature scaling (Guo et al. 2017): one number, fitted on the validation split, that makes
the softmax confidence match how often the model is right. It never changes the ranking."""
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
