"""Scores shared by the tools, the command line and the benchmarks."""

from __future__ import annotations

import numpy as np


def pearson_per_gene(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Pearson r of each column of ``pred`` with the same column of ``truth`` across rows (0 where either is constant).

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    >>> pearson_per_gene(np.array([[2.0, 1.0], [4.0, 2.0], [6.0, 0.0]]), truth).round(3).tolist()
    [1.0, 0.0]
    """
    p = np.asarray(pred, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    p = p - p.mean(0)
    t = t - t.mean(0)
    denom = np.sqrt((p**2).sum(0) * (t**2).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (p * t).sum(0) / denom
    return np.where(denom > 0, r, 0.0)


def balanced_accuracy(truth: np.ndarray, pred: np.ndarray) -> float:
    """Mean over the true classes of the fraction of their spots predicted right.

    Examples
    --------
    >>> balanced_accuracy(np.array([0, 0, 0, 1]), np.array([0, 0, 0, 0]))
    0.5
    """
    truth, pred = np.asarray(truth), np.asarray(pred)
    return float(np.mean([(pred[truth == c] == c).mean() for c in np.unique(truth)]))


def concordance_index(time: np.ndarray, risk: np.ndarray, event: np.ndarray) -> float:
    """Harrell's C-index: of the comparable pairs, the fraction in which the earlier event has the higher risk.

    A pair is comparable when the spot (patient) with the event has the shorter time, or the same time as one censored
    then (still at risk). Tied risks count one half. NaN without comparable pairs.

    Examples
    --------
    >>> concordance_index(np.array([1.0, 2.0, 3.0]), np.array([3.0, 2.0, 1.0]), np.array([1, 1, 0]))
    1.0
    """
    t = np.asarray(time, dtype=np.float64)
    r = np.asarray(risk, dtype=np.float64)
    e = np.asarray(event).astype(bool)
    comparable = e[:, None] & ((t[:, None] < t[None, :]) | ((t[:, None] == t[None, :]) & ~e[None, :]))
    if not comparable.any():
        return float("nan")
    wins = (r[:, None] > r[None, :]) + 0.5 * (r[:, None] == r[None, :])
    return float(wins[comparable].sum() / comparable.sum())
