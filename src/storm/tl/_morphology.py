"""Colour and texture statistics of each spot's H&E tile, their mean over its niche, and of wider fields around it.

An expression head from :func:`storm.tl.fit_head` reads them beside storm's embeddings (``morphology``): pretraining on
a few thousand imaged spots shapes the image branch around the axes it shares with expression, and the stain intensity,
nuclear density and texture that a patient's genes also follow within a section are partly lost; these statistics keep
them, for the spot's tile and for fields 2 and 4 times as wide centred on it (the tissue context around the spot, as
TRIPLEX reads it). Per tile or field (40 numbers): RGB mean and standard deviation; haematoxylin and eosin optical
densities (colour deconvolution) at the 10th/50th/90th percentiles with their mean and standard deviation; the fractions
of background (white) and of strongly haematoxylin-stained pixels (a nuclear-density proxy); grey-level co-occurrence
statistics (contrast, dissimilarity, homogeneity, energy, correlation at distances 1 and 4 px, averaged over 4
directions); a uniform local-binary-pattern histogram (8 neighbours, radius 1); Sobel gradient magnitude mean and
standard deviation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..io import Slide

GLCM_PROPS = ("contrast", "dissimilarity", "homogeneity", "energy", "correlation")
#: Statistics per tile or field.
N_TILE_STATISTICS = 40
#: Widths of the fields described around each spot, in tile widths (the tile itself first).
FIELDS = (1, 2, 4)
#: Column blocks of :func:`morphology_features`: the tile's statistics with their niche mean, then each wider field.
MORPHOLOGY_BLOCKS = (2 * N_TILE_STATISTICS, *(N_TILE_STATISTICS for _ in FIELDS[1:]))
#: Tiles read and described at a time (bounds memory on large slides).
_CHUNK = 256


def tile_morphology(tile: np.ndarray) -> np.ndarray:
    """The 40 colour/texture statistics of one ``(H, W, 3)`` uint8 RGB tile.

    Examples
    --------
    >>> import numpy as np
    >>> from storm.tl._morphology import tile_morphology
    >>> white = np.full((32, 32, 3), 255, dtype=np.uint8)
    >>> stats = tile_morphology(white)
    >>> stats.shape, float(stats[0]), float(stats[16])  # RGB mean of red, background fraction
    ((40,), 1.0, 1.0)
    """
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


def niche_mean(per_spot: np.ndarray, neighbours: np.ndarray) -> np.ndarray:
    """Each spot's features next to their mean over its niche (``neighbours``: (n, S), centre first, -1 padding)."""
    valid = neighbours >= 0
    summed = (per_spot[np.maximum(neighbours, 0)] * valid[..., None]).sum(1)
    return np.concatenate([per_spot, summed / valid.sum(1, keepdims=True)], axis=1)


def morphology_features(slide: Slide | Any, config: Any, fields: tuple[int, ...] = FIELDS) -> np.ndarray:
    """``(n_spots, 160)`` statistics of every resolved spot's tile, their niche mean, and of the wider fields.

    Columns: the tile's 40 statistics, their mean over the niche, then those of a field 2 and 4 tiles wide centred on
    the spot (read at the same pixel count, so coarser), as :data:`MORPHOLOGY_BLOCKS`; ``fields=(1,)`` describes the
    tile alone (its 80 columns). ``config`` is the model's
    :class:`~storm.models.StormConfig` (tile pixels, tile µm and niche size); rows follow the slide's resolved spots,
    as the embeddings do. Tiles are described on ``storm.settings.num_workers`` threads (the statistics release the
    GIL for most of their time); the result does not depend on their number.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .._settings import settings
    from ..data import Corpus
    from ._encode import _progress

    blocks = []
    with (
        _progress(len(fields) * len(slide.obs_names), "morphology") as bar,
        ThreadPoolExecutor(settings.num_workers) as pool,
    ):
        for width in fields:
            corpus = Corpus.from_sources(
                slide, tile_px=config.image_size, tile_um=width * config.tile_um, niche_size=config.niche_size
            )
            cs = corpus.slides[0]
            order = cs.tiles.raster_order()
            per_spot = np.empty((cs.n_spots, N_TILE_STATISTICS))
            for start in range(0, cs.n_spots, _CHUNK):
                index = order[start : start + _CHUNK]
                per_spot[index] = list(pool.map(tile_morphology, cs.tiles.read(index)))
                bar.update(len(index))
            blocks.append(niche_mean(per_spot, cs.neighbours) if width == 1 else per_spot)
    return np.concatenate(blocks, axis=1)
