"""Expression maths of storm: log1p(CP10k), per-gene moments, and a slide's principal (whitening) axes."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from scipy import sparse

#: Counts per spot after library-size normalisation (CP10k), before ``log1p``.
TARGET_SUM = 1e4


def log1p_cp10k(counts: Any) -> sparse.csr_matrix:
    """``log1p`` of counts scaled to 10,000 per row, as CSR float32 (rows with no counts stay 0).

    Examples
    --------
    >>> import numpy as np
    >>> x = log1p_cp10k(np.array([[1.0, 3.0], [0.0, 0.0]]))
    >>> np.expm1(x.toarray()).round().tolist()  # 1 and 3 of 4 counts: 2,500 and 7,500 per 10,000
    [[2500.0, 7500.0], [0.0, 0.0]]
    """
    from scipy import sparse

    x = sparse.csr_matrix(counts, dtype=np.float64, copy=True)  # own index arrays: sum_duplicates sorts them in place
    x.sum_duplicates()
    if x.nnz and (not np.isfinite(x.data).all() or x.data.min() < 0):
        raise ValueError(
            "Expression has negative or non-finite values; storm needs raw counts (pass `layer=` with the counts)."
        )
    totals = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(TARGET_SUM, totals, out=np.zeros_like(totals), where=totals > 0)
    x = sparse.csr_matrix(sparse.diags(scale) @ x)
    x.data = np.log1p(x.data)
    x.eliminate_zeros()
    return x.astype(np.float32)


def column_moments(x: sparse.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    """Mean and (population) standard deviation of each column of a sparse matrix, as float32.

    Examples
    --------
    >>> from scipy import sparse
    >>> mean, std = column_moments(sparse.csr_matrix(np.array([[0.0, 2.0], [2.0, 2.0]])))
    >>> mean.tolist(), std.tolist()
    ([1.0, 2.0], [1.0, 0.0])
    """
    n = max(x.shape[0], 1)
    mean = np.asarray(x.sum(axis=0), dtype=np.float64).ravel() / n
    square = np.asarray(x.multiply(x).sum(axis=0), dtype=np.float64).ravel() / n
    std = np.sqrt(np.maximum(square - mean**2, 0.0))
    return mean.astype(np.float32), std.astype(np.float32)


def whitening_axes(
    x: sparse.csr_matrix, mean: np.ndarray, std: np.ndarray, n_components: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_components`` principal axes of the standardised columns of ``x`` and the scales that balance them.

    ``z = (x - mean) / max(std, GENE_STD_FLOOR)``; the axes ``V`` (G, r) are its top right singular vectors and
    ``scale = (sqrt(n) / singular value) ** WHITENING_POWER`` (0.5), so ``(z @ V) * scale @ V.T`` is ``z`` restricted to its r main
    directions, each divided by the square root of its standard deviation ("half whitening"), still over the same
    genes. The main axes still weigh more than the last ones, which on small slides are mostly noise: full whitening
    let those weigh as much, and gave worse domains (``docs/benchmarks_archive.md``). The axes of the ``"log1p"``
    ``gene_axes`` of :class:`~storm.models.StormConfig` (``principal_axes`` solves); fewer axes when
    the slide has fewer spots or genes; ``(G, 0)`` and ``(0,)`` for ``n_components=0``.

    Examples
    --------
    >>> from scipy import sparse
    >>> x = sparse.csr_matrix(np.random.default_rng(0).poisson(1.0, (50, 20)).astype(np.float32))
    >>> axes, scale = whitening_axes(x, *column_moments(x), 4)
    >>> axes.shape, bool(np.allclose(axes.T @ axes, np.eye(4), atol=1e-5))
    ((20, 4), True)
    """
    from scipy import sparse

    from ..models._encoders import GENE_STD_FLOOR

    inv = 1.0 / np.maximum(std.astype(np.float64), GENE_STD_FLOOR)
    scaled = sparse.csr_matrix(x.astype(np.float64) @ sparse.diags(inv))
    ones = np.ones((x.shape[0], 1))
    return principal_axes(scaled, ones, (mean.astype(np.float64) * inv)[:, None], n_components)


def residual_axes(counts: sparse.csr_matrix, n_components: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``n_components`` principal axes of a slide's Poisson residuals, standardised per gene, and their scales.

    With ``s`` each spot's total over the columns and ``p`` each gene's share of all counts, the residual is
    ``(counts - s p) / sqrt(s p)`` (analytic Pearson residuals without overdispersion, as
    ``scanpy.experimental.pp.normalize_pearson_residuals`` with ``theta=inf``), then centred and divided by its
    standard deviation per gene (genes without counts weigh 0). A gene's residual no longer follows the spots' depth,
    which the log1p of a gene seen at a few counts per spot does: on a whole-kit panel, thousands of such genes
    would otherwise make depth a main axis. Axes and scales as in :func:`whitening_axes` (half whitening); the model
    projects its standardised log1p(CP10k) values on them. The residuals are never formed: a sparse matrix and two
    rank-one corrections go to ``principal_axes``.

    Examples
    --------
    >>> from scipy import sparse
    >>> x = sparse.csr_matrix(np.random.default_rng(0).poisson(1.0, (50, 20)).astype(np.float32))
    >>> axes, scale = residual_axes(x, 4)
    >>> axes.shape, bool(np.allclose(axes.T @ axes, np.eye(4), atol=1e-5))
    ((20, 4), True)
    """
    from scipy import sparse

    counts = sparse.csr_matrix(counts, dtype=np.float64)
    n = max(counts.shape[0], 1)
    total = np.asarray(counts.sum(1)).ravel()
    column_sums = np.asarray(counts.sum(0)).ravel()
    share = column_sums / max(total.sum(), 1e-12)
    row = 1.0 / np.sqrt(np.maximum(total, 1e-12))
    column = np.where(share > 0, 1.0 / np.sqrt(np.maximum(share, 1e-300)), 0.0)
    base = sparse.csr_matrix(sparse.diags(row) @ counts @ sparse.diags(column))  # counts / sqrt(s p)
    root_total, root_share = np.sqrt(total), np.sqrt(share)
    mean = (np.asarray(base.sum(0)).ravel() - root_share * root_total.sum()) / n
    square = np.asarray(base.multiply(base).sum(0)).ravel() - 2 * column_sums + share * total.sum()
    std = np.sqrt(np.maximum(square / n - mean**2, 0.0))
    inv = np.where(std > 1e-8, 1.0 / np.maximum(std, 1e-8), 0.0)
    left = np.stack([root_total, np.ones(counts.shape[0])], axis=1)
    right = np.stack([root_share * inv, mean * inv], axis=1)
    return principal_axes(sparse.csr_matrix(base @ sparse.diags(inv)), left, right, n_components)


def principal_axes(
    scaled: sparse.csr_matrix, left: np.ndarray, right: np.ndarray, n_components: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top right singular vectors (G, r) of ``z = scaled - left @ right.T`` and their half-whitening scales (r,).

    ``scaled`` (n, G) is sparse and ``left`` (n, k), ``right`` (G, k) a low-rank correction (centring, expected
    counts), so ``z`` is never formed. The axes come from the eigenvectors of the smaller Gram matrix when the slide
    has at most ``DENSE_GRAM`` spots or genes (exact, and independent of the order of the rows), else from ARPACK on
    an implicit operator. ``scale = (sqrt(n) / singular value) ** WHITENING_POWER``; at most ``min(n, G) - 1`` axes.

    Examples
    --------
    >>> from scipy import sparse
    >>> x = np.random.default_rng(0).poisson(1.0, (30, 10)).astype(float)
    >>> axes, scale = principal_axes(sparse.csr_matrix(x), np.ones((30, 1)), x.mean(0)[:, None], 3)
    >>> bool(np.allclose(np.abs(axes.T @ np.linalg.svd(x - x.mean(0))[2][:3].T), np.eye(3), atol=1e-6))
    True
    """
    n, g = scaled.shape
    r = max(0, min(int(n_components), n - 1, g - 1))
    if r == 0:
        return np.zeros((g, 0), dtype=np.float32), np.zeros(0, dtype=np.float32)
    if min(n, g) <= DENSE_GRAM:
        values, vt = _gram_axes(scaled, left, right, r)
    else:
        values, vt = _arpack_axes(scaled, left, right, r)
    scale = (np.sqrt(n) / np.maximum(values, 1e-6)) ** WHITENING_POWER
    return np.ascontiguousarray(vt.T, dtype=np.float32), scale.astype(np.float32)


#: Exponent of the axis scales: 1 whitens fully, 0.5 divides each axis by the square root of its deviation, 0 keeps it.
WHITENING_POWER = 0.5
#: Largest number of spots (or genes) for which the whitening axes come from a dense Gram matrix.
DENSE_GRAM = 6000


def _gram_axes(scaled: Any, left: np.ndarray, right: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``r`` singular values and right singular vectors (r, G) of ``scaled - left @ right.T`` from its smaller Gram."""
    n, g = scaled.shape
    if n <= g:
        cross = np.asarray(scaled @ right)  # (n, k)
        gram = (scaled @ scaled.T).toarray() - cross @ left.T - left @ cross.T + left @ (right.T @ right) @ left.T
        eigenvalues, u = np.linalg.eigh(gram)
        top = np.argsort(eigenvalues)[::-1][:r]
        values = np.sqrt(np.maximum(eigenvalues[top], 0))
        vt = (scaled.T @ u[:, top] - right @ (left.T @ u[:, top])).T / np.maximum(values, 1e-12)[:, None]
        return values, vt
    cross = np.asarray(scaled.T @ left)  # (G, k)
    gram = (scaled.T @ scaled).toarray() - cross @ right.T - right @ cross.T + right @ (left.T @ left) @ right.T
    eigenvalues, v = np.linalg.eigh(gram)
    top = np.argsort(eigenvalues)[::-1][:r]
    return np.sqrt(np.maximum(eigenvalues[top], 0)), v[:, top].T


def _arpack_axes(scaled: Any, left: np.ndarray, right: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    """Top ``r`` singular values and right singular vectors (r, G) of ``scaled - left @ right.T`` by ARPACK."""
    from scipy.sparse.linalg import LinearOperator, svds

    n, g = scaled.shape
    operator = LinearOperator(
        (n, g),
        matvec=lambda v: scaled @ v.ravel() - left @ (right.T @ v.ravel()),
        rmatvec=lambda u: scaled.T @ u.ravel() - right @ (left.T @ u.ravel()),
        dtype=np.float64,
    )
    start = np.random.default_rng(0).standard_normal(min(n, g))
    _, values, vt = svds(operator, k=r, v0=start, random_state=0)
    order = np.argsort(values)[::-1]
    return values[order], vt[order]
