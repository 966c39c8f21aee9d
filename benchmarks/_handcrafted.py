"""Hand-crafted colour and texture features of H&E tiles: the classical baseline for H&E -> expression.

Per tile (40 features): RGB mean and standard deviation; haematoxylin and eosin optical densities (colour
deconvolution) at the 10th/50th/90th percentiles with their mean and standard deviation; the fractions of background
(white) and of strongly haematoxylin-stained pixels (a nuclear-density proxy); grey-level co-occurrence statistics
(contrast, dissimilarity, homogeneity, energy, correlation at distances 1 and 4 px, averaged over 4 directions); a
uniform local-binary-pattern histogram (8 neighbours, radius 1); Sobel gradient magnitude mean and standard deviation.
"""

from __future__ import annotations

import numpy as np

GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")


def tile_features(tile: np.ndarray) -> np.ndarray:
    """40 colour/texture features of one (H, W, 3) uint8 RGB tile."""
    from skimage.color import rgb2gray, rgb2hed
    from skimage.feature import graycomatrix, graycoprops, local_binary_pattern
    from skimage.filters import sobel

    rgb = tile.reshape(-1, 3).astype(np.float32) / 255.0
    hed = rgb2hed(tile).reshape(-1, 3)
    h, e = hed[:, 0], hed[:, 1]
    grey = rgb2gray(tile)
    levels = (grey * 31).astype(np.uint8)
    glcm = graycomatrix(levels, distances=[1, 4], angles=[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4], levels=32)
    texture = [graycoprops(glcm, prop).mean(axis=1) for prop in GLCM_PROPS]  # (props, distances)
    lbp = local_binary_pattern((grey * 255).astype(np.uint8), P=8, R=1, method="uniform")
    lbp_hist = np.bincount(lbp.astype(np.int64).ravel(), minlength=10)[:10] / lbp.size
    gradient = sobel(grey)
    features = [
        rgb.mean(0),
        rgb.std(0),
        np.percentile(h, [10, 50, 90]),
        [h.mean(), h.std()],
        np.percentile(e, [10, 50, 90]),
        [e.mean(), e.std()],
        [float((rgb.min(1) > 0.86).mean()), float((h > np.percentile(h, 50) + 2 * h.std()).mean())],
        np.concatenate(texture),
        lbp_hist,
        [gradient.mean(), gradient.std()],
    ]
    return np.concatenate([np.ravel(np.asarray(f, dtype=np.float64)) for f in features])


def niche_features(per_tile: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Each spot's features next to the mean over its niche (``neighbours``: (n, S), centre first, -1 padding)."""
    valid = neighbours >= 0
    summed = (per_tile[np.maximum(neighbours, 0)] * valid[..., None]).sum(1)
    return np.concatenate([per_tile, summed / valid.sum(1, keepdims=True)], axis=1)
