"""Which matrix of a table holds raw counts: normalised values are never taken as counts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._logging import logger

if TYPE_CHECKING:
    from anndata import AnnData

#: Layer names that hold raw counts by convention (scanpy tutorials, scvi-tools, spatialdata-io), tried in this order.
COUNTS_LAYERS = ("counts", "raw_counts", "raw", "count")

#: Non-integer values all below this look like log1p-normalised expression (log1p of 10^6 per spot is 13.8).
_LOG_SCALE_MAX = 20.0

#: Values inspected per matrix: enough to see normalisation, cheap on million-spot tables.
_SAMPLE = 200_000


def normalised_reason(matrix: Any) -> str | None:
    """Why ``matrix`` holds normalised expression rather than raw counts, or ``None`` when it may be counts.

    Integers are counts. Non-integer values are taken as normalised when every spot sums to the same total (as after
    ``sc.pp.normalize_total``) or when they all stay on a log scale (as after ``sc.pp.log1p``); other non-integer
    values (ambient-corrected or pseudo-counts) are accepted as counts. Negative or non-finite values are left to the
    counts check of the data layer.

    Examples
    --------
    >>> import numpy as np
    >>> normalised_reason(np.array([[1.0, 3.0], [0.0, 2.0]])) is None
    True
    >>> normalised_reason(np.log1p(np.array([[1.0, 3.0], [0.0, 2.0]])))
    'non-integer values between 0 and 1.39, as after sc.pp.log1p'
    """
    values = _sample(matrix)
    values = values[np.isfinite(values) & (values != 0)]
    if values.size == 0 or np.array_equal(values, np.round(values)) or values.min() < 0:
        return None
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    totals = totals[np.isfinite(totals) & (totals > 0)]
    if len(totals) > 1 and np.ptp(totals) <= 1e-3 * totals.mean():
        return f"every spot sums to {totals.mean():.4g}, as after sc.pp.normalize_total"
    if values.max() <= _LOG_SCALE_MAX:
        return f"non-integer values between 0 and {values.max():.3g}, as after sc.pp.log1p"
    return None


def counts_layer(table: AnnData, layer: str | None) -> str | None:
    """The layer of raw counts to use (``None``: ``X``), checked to exist.

    With ``layer=None`` and normalised values in ``X``, a layer of raw counts (one of :data:`COUNTS_LAYERS`, else any
    integer layer) is used instead, with a warning; without one, ``X`` stays and the tools that need expression refuse
    it (:func:`normalised_reason`). An explicit ``layer`` is always kept.
    """
    if layer is not None:
        if layer not in table.layers:
            raise KeyError(
                f"`layer={layer!r}` is not a layer of the table (layers: {list(table.layers)}); pass the layer holding "
                "raw counts, or layer=None to use X."
            )
        return layer
    if table.n_obs == 0 or table.n_vars == 0:
        return None
    reason = normalised_reason(table.X)
    if reason is None:
        return None
    named = [k for k in COUNTS_LAYERS if k in table.layers]
    for key in [*named, *(k for k in table.layers if k not in named)]:
        if _looks_like_counts(table.layers[key]):
            logger.warning("X holds normalised expression (%s); using the raw counts in layers[%r]", reason, key)
            return key
    return None


def _looks_like_counts(matrix: Any) -> bool:
    values = _sample(matrix)
    return bool(
        values.size
        and np.issubdtype(values.dtype, np.number)
        and np.isfinite(values).all()
        and values.min() >= 0
        and np.array_equal(values, np.round(values))
    )


def _sample(matrix: Any) -> np.ndarray:
    """At most about ``_SAMPLE`` stored values of ``matrix``, evenly spaced (the non-zeros of a sparse matrix)."""
    from scipy import sparse

    values = matrix.data if sparse.issparse(matrix) else np.asarray(matrix).ravel()
    return values[:: max(1, values.size // _SAMPLE)]
