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
