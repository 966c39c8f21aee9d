"""The spatial neighbour graph of a slide: each spot's nearest spots, the same however the slide lies."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def niche_neighbours(xy_um: np.ndarray, niche_size: int, ties: np.ndarray | None = None) -> np.ndarray:
    """Each spot and its ``niche_size`` nearest spots by Euclidean distance, ``(n, niche_size + 1)``, centre first.

    Neighbours follow by increasing distance; ``-1`` pads when the slide has fewer than ``niche_size + 1`` spots.
    Spots at the same distance to within 0.1 nm (a regular grid's rings) are ordered by ``ties``, so a niche is the
    same set of spots however the slide is mirrored, turned or moved.

    Parameters
    ----------
    xy_um
        ``(n, 2)`` spot centres in µm.
    niche_size
        Neighbours per spot.
    ties
        ``(n,)`` numbers that order spots at equal distances (default: the row). Numbers that follow the spot, as
        :func:`spot_ties` of the spot names, make the niches independent of the table's row order too.

    Examples
    --------
    >>> import numpy as np
    >>> niche_neighbours(np.array([[0.0, 0.0], [10.0, 0.0], [25.0, 0.0]]), 3).tolist()
    [[0, 1, 2, -1], [1, 0, 2, -1], [2, 1, 0, -1]]
    >>> niche_neighbours(np.array([[0.0, 0.0], [-1.0, 0.0], [1.0, 0.0]]), 1, ties=np.array([0, 5, 2])).tolist()
    [[0, 2], [1, 0], [2, 0]]
    """
    from scipy.spatial import cKDTree

    n = len(xy_um)
    out = np.full((n, niche_size + 1), -1, dtype=np.int64)
    if n == 0:
        return out
    k = min(niche_size + 1, n)
    rank = np.arange(n) if ties is None else np.asarray(ties)
    tree = cKDTree(xy_um)
    fetch = min(2 * k + 8, n)  # a margin for the spots tied with the last neighbour
    distance, found = tree.query(xy_um, k=fetch)
    distance, found = np.asarray(distance).reshape(n, fetch), np.asarray(found, dtype=np.int64).reshape(n, fetch)
    # the centre first (also before spots at its very coordinates), then by distance, then by `ties`
    order = np.lexsort((rank[found], _quantised(distance), found != np.arange(n)[:, None]), axis=-1)
    out[:, :k] = np.take_along_axis(found, order[:, :k], axis=1)
    if fetch < n:  # rows whose tie with the last neighbour runs past the margin: all spots of that ring
        for i in np.flatnonzero(_quantised(distance[:, -1]) <= _quantised(distance[:, k - 1])):
            spots = np.asarray(tree.query_ball_point(xy_um[i], distance[i, k - 1] + 2 * _TIE_UM), dtype=np.int64)
            near = np.linalg.norm(xy_um[spots] - xy_um[i], axis=1)
            out[i, :k] = spots[np.lexsort((rank[spots], _quantised(near), spots != i))[:k]]
    return out


#: Distances closer than this (µm) count as equal when ordering a niche's spots.
_TIE_UM = 1e-4


def _quantised(distance: np.ndarray) -> np.ndarray:
    return np.rint(np.asarray(distance) / _TIE_UM)


def spot_ties(names: Sequence[str]) -> np.ndarray:
    """A number per spot name (CRC-32) that orders spots at equal distance the same in any row order.

    Examples
    --------
    >>> spot_ties(["AAAC-1", "AAAG-1"]).tolist()
    [819289991, 937228123]
    """
    import zlib

    return np.array([zlib.crc32(str(name).encode()) for name in names], dtype=np.int64)
