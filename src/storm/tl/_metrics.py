"""Scores shared by the command line and the benchmarks."""

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
