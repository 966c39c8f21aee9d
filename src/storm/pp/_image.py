"""Pixel conversions: whatever the input image, storm's tiles are RGB uint8."""

from __future__ import annotations

import numpy as np


def white_value(dtype: np.dtype) -> float:
    """The value of white for an image dtype (255, 65535 or 1.0)."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0


def to_rgb_uint8(pixels: np.ndarray) -> np.ndarray:
    """Convert ``(c, y, x)`` pixels (1, 3 or 4 channels; uint8, uint16 or float in [0, 1]) to ``(y, x, 3)`` uint8.

    Grayscale is repeated over three channels; RGBA is composited over white; 16-bit is scaled by 255/65535; floats
    are taken as intensities in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> to_rgb_uint8(np.full((1, 2, 2), 65535, dtype=np.uint16))[0, 0].tolist()
    [255, 255, 255]
    """
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3, 4):
        raise ValueError(f"Expected pixels with axes (c, y, x) and 1, 3 or 4 channels, got shape {pixels.shape}.")
    if pixels.dtype == np.uint8:
        rgb = pixels
    elif pixels.dtype == np.uint16:
        rgb = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif pixels.dtype.kind == "f":
        rgb = (np.clip(np.nan_to_num(pixels, nan=1.0), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    else:
        raise ValueError(f"Unsupported pixel dtype {pixels.dtype}; use uint8, uint16 or floats in [0, 1].")
    if rgb.shape[0] == 1:
        rgb = np.repeat(rgb, 3, axis=0)
    elif rgb.shape[0] == 4:
        alpha = rgb[3:4].astype(np.uint16)
        rgb = ((rgb[:3].astype(np.uint16) * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(rgb, 0, -1))
