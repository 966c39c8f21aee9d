"""Standardising columns over rows: one helper for the heads, the decoder's slide scale and the benchmarks."""

from __future__ import annotations

import numpy as np


def standardised(x: np.ndarray) -> np.ndarray:
    """Each column of ``x`` centred and divided by its standard deviation over the rows (a constant one becomes 0).

    Examples
    --------
    >>> from storm._standardise import standardised
    >>> standardised(np.array([[1.0, 5.0], [3.0, 5.0]])).tolist()
    [[-1.0, 0.0], [1.0, 0.0]]
    """
    spread = x.std(0)
    return (x - x.mean(0)) / np.where(spread > 0, spread, 1.0)


def non_negative_spread(z: np.ndarray, mean: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """``mean + z * spread`` per column, each column's spread narrowed just enough that no value is below 0.

    For maps of log1p expression from standardised predictions ``z``: the map of a gene whose lowest spot would go
    negative keeps its mean and its shape (an affine map per gene, so Pearson r and the spots' order are unchanged),
    with its lowest spot at 0.

    Examples
    --------
    >>> non_negative_spread(np.array([[-2.0, -1.0], [2.0, 1.0]]), np.array([1.0, 3.0]), np.array([1.0, 1.0])).tolist()
    [[0.0, 2.0], [2.0, 4.0]]
    """
    lowest = np.asarray(z, dtype=np.float64).min(0)
    room = np.where(lowest < 0, np.asarray(mean) / np.maximum(-lowest, 1e-12), np.inf)
    narrowed = np.minimum(np.asarray(spread, dtype=np.float64), np.maximum(room, 0.0))
    return np.maximum(mean + z * narrowed, 0.0).astype(np.float32)
