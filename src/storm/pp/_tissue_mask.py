"""Finding the tissue of an H&E image at low resolution, and how much of each pseudo-spot lies on it.

Used by :func:`storm.pp.tissue_grid`. The tissue mask (:func:`tissue_mask`) is computed at about 8 µm per pixel; sizes
below are in µm and converted with the mask's µm per pixel.

1. Pixels whose brightest channel is below ``_BLACK`` are masked-out background (black scanner borders, display images
   blacked out around the tissue, as her2st's); they are never tissue and are left out of every statistic below.
   Pixels with every channel at or above ``_WHITE`` (blank glass, paper) are never tissue either.
2. Colour images. Features: the HSV saturation ``(max - min) / max`` median-filtered over 3 x 3 pixels (glass is grey
   or white, H&E is pink or purple), and texture, the local standard deviation of the grey level over ~40 µm (at
   least 5 pixels; nuclei and membranes make tissue textured, glass and smooth staining tints are not).

   * Seeds: saturation above an Otsu threshold of the non-black pixels, clipped to ``[_SAT_MIN, _SAT_MAX]``, and
     textured (``> _TEXTURE_MIN``); or saturation above ``_SAT_SURE`` whatever the texture. The lower clip keeps blank
     slides and JPEG noise empty; the upper clip stops Otsu from splitting tissue into pale and dark halves when there
     is almost no glass in view (tissue-masked images on black); the texture test rejects the smooth pink glow that
     some scans have around the tissue.
   * Growth (hysteresis): textured pixels with saturation above ``_SAT_MIN`` that are connected to a seed are added,
     which recovers pale tissue (white matter, adipose tissue, loose stroma) without picking up isolated debris.

3. Grayscale images (all channels equal): darkness ``1 - grey / 255`` above an Otsu threshold clipped to
   ``[_DARK_MIN, _DARK_MAX]``.
4. Clean-up: objects smaller than ``_MIN_OBJECT_UM2`` are removed (dust, debris) and holes smaller than
   ``_MAX_HOLE_UM2`` are filled (lumens, fat cells).

Checked against Space Ranger's ``in_tissue`` on the nine DLPFC Visium lowres images and against the spots of the
her2st ST sections (``tests/pp/test_tissue_grid.py`` holds the thresholds).
"""

from __future__ import annotations

from typing import Any

import numpy as np

_BLACK = 30  # brightest channel below this (of 255) = black background
_WHITE = 250  # every channel at or above this = blank glass or paper
_SAT_MIN, _SAT_MAX = 0.05, 0.15
_SAT_SURE = 0.25  # saturation above this is tissue even without texture
_DARK_MIN, _DARK_MAX = 0.05, 0.30
_TEXTURE_MIN = 2.5  # grey-level standard deviation (of 255)
_TEXTURE_UM = 40.0
_MIN_OBJECT_UM2 = 10_000.0  # 0.01 mm², e.g. a 100 x 100 µm fragment
_MAX_HOLE_UM2 = 50_000.0  # 0.05 mm², e.g. a 250 µm wide lumen
_GRAYSCALE_SPREAD = 8  # 99th percentile of max - min channel (of 255) below this = grayscale image
_DETECTION_UM_PER_PX = 8.0  # resolution of the tissue mask
_N_DISK_SAMPLES = 128  # points per spot disk used to measure its tissue fraction
_CHUNK = 8192  # disks measured at once (bounds memory to a few tens of MB)


def tissue_mask(rgb: np.ndarray, um_per_px: float) -> tuple[np.ndarray, dict[str, Any]]:
    """Boolean tissue mask of an RGB uint8 image.

    Parameters
    ----------
    rgb
        ``(y, x, 3)`` uint8 pixels, ideally at 5-10 µm per pixel.
    um_per_px
        Microns per pixel of ``rgb``, used to turn the physical sizes of the clean-up steps into pixels.

    Returns
    -------
    The ``(y, x)`` mask and a description of the method (feature, threshold) for ``uns``.

    Examples
    --------
    >>> import numpy as np
    >>> rgb = np.full((100, 100, 3), 255, dtype=np.uint8)
    >>> rgb[30:70, 30:70] = (200, 120, 180)
    >>> mask, info = tissue_mask(rgb, um_per_px=8.0)
    >>> bool(mask[50, 50]), bool(mask[10, 10]), info["feature"]
    (True, False, 'saturation')
    """
    from scipy import ndimage as ndi

    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"Expected RGB uint8 pixels of shape (y, x, 3), got {rgb.dtype} {rgb.shape}.")
    hi = rgb.max(axis=-1).astype(np.float32)
    lo = rgb.min(axis=-1).astype(np.float32)
    black = hi < _BLACK
    white = lo >= _WHITE
    valid = ~black
    info: dict[str, Any] = {"black_fraction": float(black.mean()), "white_fraction": float(white.mean())}
    if not valid.any():
        return np.zeros(rgb.shape[:2], dtype=bool), {**info, "feature": "none", "threshold": float("nan")}

    grayscale = np.percentile((hi - lo)[valid], 99) < _GRAYSCALE_SPREAD
    grey = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    if grayscale:
        feature = ndi.median_filter(1.0 - grey / 255.0, size=3)
        threshold = _clipped_otsu(feature[valid], _DARK_MIN, _DARK_MAX)
        mask = feature > threshold
        info.update(feature="darkness", threshold=threshold)
    else:
        saturation = ndi.median_filter(np.where(hi > 0, (hi - lo) / np.maximum(hi, 1.0), 0.0), size=3)
        threshold = _clipped_otsu(saturation[valid], _SAT_MIN, _SAT_MAX)
        textured = _local_std(grey, max(5, round(_TEXTURE_UM / um_per_px))) > _TEXTURE_MIN
        strong = ((saturation > threshold) & textured) | (saturation > _SAT_SURE)
        weak = (saturation > _SAT_MIN) & textured
        mask = _grow(strong & valid & ~white, weak & valid & ~white)
        info.update(feature="saturation", threshold=threshold)
    mask &= valid & ~white
    px_area = um_per_px**2
    mask = _remove_small_objects(mask, _MIN_OBJECT_UM2 / px_area)
    mask = _fill_small_holes(mask, _MAX_HOLE_UM2 / px_area)
    info["tissue_fraction_of_image"] = float(mask.mean())
    return mask, info


def detection_image(levels: list[Any], um_per_px: float, image_key: str) -> tuple[np.ndarray, tuple[float, float], int]:
    """RGB uint8 pixels at about 8 µm/px, their size in level-0 pixels ``(y, x)`` and the pyramid level read."""
    import dask.array as da

    from ..io._elements import image_white
    from ._image import to_rgb_uint8

    white = image_white(levels, image_key)  # refuse an unreadable intensity range before reading any pixels
    h0, w0 = int(levels[0].sizes["y"]), int(levels[0].sizes["x"])
    scales = [(h0 / int(lv.sizes["y"]), w0 / int(lv.sizes["x"])) for lv in levels]
    level_um = [um_per_px * float(np.sqrt(sy * sx)) for sy, sx in scales]
    level = int(np.argmin([abs(np.log(u / _DETECTION_UM_PER_PX)) for u in level_um]))
    step = max(1, round(_DETECTION_UM_PER_PX / level_um[level]))
    data = levels[level].data
    if not isinstance(data, da.Array):
        data = da.from_array(np.asarray(data))
    step = min(step, int(data.shape[1]), int(data.shape[2]))
    if step > 1:
        coarse = da.coarsen(np.mean, data, {1: step, 2: step}, trim_excess=True).compute()  # block means
        dtype = np.dtype(data.dtype)
        pixels = np.rint(coarse).astype(dtype) if dtype.kind in "ui" else coarse.astype(dtype)
    else:
        pixels = np.asarray(data.compute())
    sy, sx = scales[level]
    return to_rgb_uint8(pixels, white), (sy * step, sx * step), level


def _disk_offsets(n: int) -> np.ndarray:
    """``n`` points evenly covering the unit disk (Vogel's sunflower spiral), ``(n, 2)``."""
    k = np.arange(n) + 0.5
    r = np.sqrt(k / n)
    theta = k * np.pi * (3.0 - np.sqrt(5.0))
    return np.column_stack([r * np.cos(theta), r * np.sin(theta)])


def disk_fractions(
    mask: np.ndarray, mask_px_to_level0: tuple[float, float], xy: np.ndarray, radius_px: float
) -> np.ndarray:
    """Fraction of each disk (centres and radius in level-0 pixels) lying on the mask."""
    from scipy import ndimage as ndi

    sy, sx = mask_px_to_level0
    h, w = mask.shape
    fraction = np.zeros(len(xy))
    # only disks whose centre is within one radius (plus a mask pixel) of tissue can hold any
    reach = int(np.ceil(radius_px / min(sy, sx))) + 1
    near = ndi.maximum_filter(mask.view(np.uint8), size=2 * reach + 1).astype(bool)
    cy = np.clip((xy[:, 1] / sy).astype(np.int64), 0, h - 1)
    cx = np.clip((xy[:, 0] / sx).astype(np.int64), 0, w - 1)
    todo = np.flatnonzero(near[cy, cx])
    offsets = _disk_offsets(_N_DISK_SAMPLES) * radius_px
    for start in range(0, len(todo), _CHUNK):
        idx = todo[start : start + _CHUNK]
        px = (xy[idx, 0:1] + offsets[None, :, 0]) / sx
        py = (xy[idx, 1:2] + offsets[None, :, 1]) / sy
        inside = (px >= 0) & (py >= 0) & (px < w) & (py < h)
        ix = np.clip(px.astype(np.int64), 0, w - 1)
        iy = np.clip(py.astype(np.int64), 0, h - 1)
        fraction[idx] = (mask[iy, ix] & inside).mean(axis=1)
    return fraction


def _clipped_otsu(values: np.ndarray, low: float, high: float) -> float:
    from skimage.filters import threshold_otsu

    values = values[np.isfinite(values)]
    if values.size == 0 or float(values.max() - values.min()) < 1e-6:
        return float(high)
    return min(max(float(threshold_otsu(values, nbins=256)), low), high)


def _local_std(grey: np.ndarray, size: int) -> np.ndarray:
    from scipy import ndimage as ndi

    if size < 2:
        size = 2
    mean = ndi.uniform_filter(grey, size=size)
    mean_sq = ndi.uniform_filter(grey * grey, size=size)
    return np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))


def _remove_small_objects(mask: np.ndarray, min_px: float) -> np.ndarray:
    from scipy import ndimage as ndi

    labels, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_px
    keep[0] = False
    return keep[labels]


def _fill_small_holes(mask: np.ndarray, max_px: float) -> np.ndarray:
    from scipy import ndimage as ndi

    holes = ndi.binary_fill_holes(mask) & ~mask
    labels, n = ndi.label(holes)
    if n == 0:
        return mask
    sizes = np.bincount(labels.ravel())
    fill = sizes <= max_px
    fill[0] = False
    return mask | fill[labels]


def _grow(seeds: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Seeds plus the connected components of ``candidates`` that touch a seed (hysteresis)."""
    from scipy import ndimage as ndi

    labels, n = ndi.label(candidates | seeds)
    if n == 0:
        return seeds
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(labels[seeds])] = True
    keep[0] = False
    return keep[labels]
