"""Removing what differs between batches from a joint embedding, cluster by cluster (the idea of Harmony).

Korsunsky et al., *Nat Methods* 16, 1289 (2019): spots are softly clustered with a penalty that favours clusters in
which every batch is represented as in the whole; within each soft cluster a ridge regression on the batch indicators
finds what each batch adds, and that part (not the cluster's mean) is removed; the two steps alternate. This is a new
implementation from the paper's description, in numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Diversity penalty: how strongly clusters are pushed to hold every batch in its overall proportion.
THETA = 2.0
#: Width of the soft clustering (on unit-normalised embeddings).
SIGMA = 0.1
#: Ridge penalty on the batch terms of each cluster's regression.
RIDGE = 1.0


def harmonise(
    x: np.ndarray,
    batch: np.ndarray,
    *,
    n_clusters: int | None = None,
    theta: float = THETA,
    sigma: float = SIGMA,
    max_iter: int = 10,
    tol: float = 1e-4,
    random_state: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """``x`` (spots x dims) with the batch-specific part removed in every soft cluster, and what the run did.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> tissue = rng.integers(0, 3, 600)
    >>> batch = np.repeat([0, 1], 300)
    >>> x = np.eye(3)[tissue] * 4 + batch[:, None] * np.array([3.0, -2.0, 1.0]) + rng.normal(0, 0.3, (600, 3))
    >>> out, info = harmonise(x, batch)
    >>> gap = lambda z: np.linalg.norm(z[batch == 0].mean(0) - z[batch == 1].mean(0))
    >>> bool(gap(out) < 0.2 * gap(x))
    True
    """
    x = np.asarray(x, dtype=np.float64)
    codes, batch = np.unique(np.asarray(batch), return_inverse=True)
    n, n_batches = len(x), len(codes)
    if n_batches < 2:
        return x.copy(), {"n_clusters": 0, "iterations": 0, "converged": True}
    k = int(n_clusters or min(100, max(2, round(n / 30))))
    phi = np.zeros((n_batches, n))
    phi[batch, np.arange(n)] = 1.0
    share = phi.sum(1) / n
    z = x.copy()
    unit = _unit(z)
    centroids = _init_centroids(unit, k, random_state)
    r = _responsibilities(unit, centroids, sigma)
    objective = []
    rng = np.random.default_rng(random_state)
    for _ in range(max_iter):
        for _ in range(5):  # clustering rounds before each correction
            centroids = _unit(r @ unit)
            r = _diverse_responsibilities(unit, centroids, r, phi, share, theta, sigma, rng)
        z = _correct(x, r, phi)
        unit = _unit(z)  # what the next rounds cluster
        objective.append(_objective(unit, centroids, r, phi, share, theta, sigma))
        if len(objective) > 1 and abs(objective[-2] - objective[-1]) < tol * abs(objective[-2]):
            break
    info = {"n_clusters": k, "iterations": len(objective), "converged": len(objective) < max_iter}
    return z, info


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _init_centroids(unit: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return _unit(KMeans(k, n_init=1, random_state=seed).fit(unit).cluster_centers_)


def _responsibilities(unit: np.ndarray, centroids: np.ndarray, sigma: float) -> np.ndarray:
    """Soft assignments (clusters x spots) by distance alone."""
    logits = -2.0 * (1.0 - centroids @ unit.T) / sigma
    logits -= logits.max(0, keepdims=True)
    r = np.exp(logits)
    return r / r.sum(0, keepdims=True)


def _diverse_responsibilities(
    unit: np.ndarray,
    centroids: np.ndarray,
    r: np.ndarray,
    phi: np.ndarray,
    share: np.ndarray,
    theta: float,
    sigma: float,
    rng: np.random.Generator,
    block: float = 0.05,
) -> np.ndarray:
    """Soft assignments with the diversity penalty, a random block of spots at a time.

    A cluster already over-full of a spot's batch (observed against expected counts, without the block itself) is less
    likely for it; counts are updated after each block, so assignments move gradually rather than all at once.
    """
    r = r.copy()
    distance = _responsibilities(unit, centroids, sigma)
    observed, expected = _counts(r, phi, share)
    n = unit.shape[0]
    for rows in np.array_split(rng.permutation(n), max(1, round(1 / block))):
        block_observed, block_expected = _counts(r[:, rows], phi[:, rows], share)
        observed -= block_observed
        expected -= block_expected
        penalty = ((expected + 1.0) / (observed + 1.0)) ** theta
        new = distance[:, rows] * (penalty @ phi[:, rows])
        r[:, rows] = new / new.sum(0, keepdims=True)
        block_observed, block_expected = _counts(r[:, rows], phi[:, rows], share)
        observed += block_observed
        expected += block_expected
    return r


def _correct(x: np.ndarray, r: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """``x`` minus, in every cluster, the batch terms of a ridge regression weighted by the cluster's assignments."""
    design = np.vstack([np.ones((1, phi.shape[1])), phi])  # (1 + B) x N
    ridge = np.diag([0.0, *([RIDGE] * phi.shape[0])])
    out = x.copy()
    for weights in r:
        weighted = design * weights[None, :]
        coef = np.linalg.solve(weighted @ design.T + ridge, weighted @ x)  # (1 + B) x D
        coef[0] = 0.0  # keep the cluster's own mean
        out -= (design.T @ coef) * weights[:, None]
    return out


def _counts(r: np.ndarray, phi: np.ndarray, share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Soft counts (clusters x batches) of each batch in each cluster, observed and expected from the batch's share."""
    return r @ phi.T, r.sum(1, keepdims=True) * share[None, :]


def _objective(
    unit: np.ndarray,
    centroids: np.ndarray,
    r: np.ndarray,
    phi: np.ndarray,
    share: np.ndarray,
    theta: float,
    sigma: float,
) -> float:
    distance = float((r * 2.0 * (1.0 - centroids @ unit.T)).sum())
    entropy = float(sigma * (r * np.log(r + 1e-12)).sum())
    observed, expected = _counts(r, phi, share)
    diversity = float(sigma * theta * (observed * np.log((observed + 1.0) / (expected + 1.0))).sum())
    return distance + entropy + diversity
