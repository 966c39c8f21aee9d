"""Pixel conversions: whatever the input image, storm's tiles are RGB uint8."""

from __future__ import annotations

import numpy as np


def white_value(dtype: np.dtype) -> float:
    """The value of white implied by an image dtype alone: 255 for uint8, 65535 for uint16, 1.0 for floats.

    Images of other dtypes, or whose values do not follow their dtype (floats in 0-255, 8-bit values stored as uint16),
    need the value decided from their pixels (:func:`storm.io._elements.image_white`, stored as
    :attr:`storm.io.ImageLevel.white`).
    """
    dtype = np.dtype(dtype)
    if dtype in (np.uint8, np.uint16):
        return float(np.iinfo(dtype).max)
    if dtype.kind == "f":
        return 1.0
    raise ValueError(
        f"Pixels of dtype {dtype} have no fixed value of white: convert the image to uint8 (0-255), or read it through "
        "`storm.io.resolve`, which decides it from the image (`ImageLevel.white`)."
    )


def to_rgb_uint8(pixels: np.ndarray, white: float | None = None) -> np.ndarray:
    """Convert ``(c, y, x)`` pixels (1, 3 or 4 channels, any integer or float dtype) to ``(y, x, 3)`` uint8.

    Intensities are scaled so that ``white`` becomes 255 (values outside ``[0, white]`` are clipped, NaN is white).
    Grayscale is repeated over three channels; RGBA is composited over white.

    Parameters
    ----------
    pixels
        Pixels with axes ``(c, y, x)``.
    white
        The value of full intensity: 255 for 8-bit values (whatever the dtype), 65535 for 16-bit values, 1.0 for floats
        in [0, 1]. Decide it once for the whole image (:attr:`storm.io.ImageLevel.white`), so every chunk converts the
        same way; by default it follows the dtype (:func:`white_value`).

    Returns
    -------
    RGB uint8 pixels, axes ``(y, x, c)``.

    Examples
    --------
    >>> import numpy as np
    >>> to_rgb_uint8(np.full((1, 2, 2), 65535, dtype=np.uint16))[0, 0].tolist()
    [255, 255, 255]
    >>> to_rgb_uint8(np.full((3, 2, 2), 200.0, dtype=np.float32), white=255.0)[0, 0].tolist()
    [200, 200, 200]
    """
    if pixels.ndim != 3 or pixels.shape[0] not in (1, 3, 4):
        raise ValueError(f"Expected pixels with axes (c, y, x) and 1, 3 or 4 channels, got shape {pixels.shape}.")
    white = white_value(pixels.dtype) if white is None else float(white)
    rgb = _scale_to_uint8(pixels, white)
    if rgb.shape[0] == 1:
        rgb = np.repeat(rgb, 3, axis=0)
    elif rgb.shape[0] == 4:
        alpha = rgb[3:4].astype(np.uint16)
        rgb = ((rgb[:3].astype(np.uint16) * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)
    return np.ascontiguousarray(np.moveaxis(rgb, 0, -1))


def _scale_to_uint8(pixels: np.ndarray, white: float) -> np.ndarray:
    """Intensities scaled so that ``white`` is 255, rounded to uint8 (exact integer arithmetic for 8/16-bit)."""
    if pixels.dtype == np.uint8 and white == 255:
        return pixels
    if pixels.dtype.kind in "ui" and white == 255:
        return np.clip(pixels, 0, 255).astype(np.uint8)
    if pixels.dtype.kind in "ui" and white == 65535:
        wide = np.clip(pixels, 0, 65535).astype(np.uint32)
        return ((wide * 255 + 32767) // 65535).astype(np.uint8)
    values = np.nan_to_num(pixels.astype(np.float32), nan=white, posinf=white, neginf=0.0)
    return (np.clip(values, 0.0, white) * np.float32(255.0 / white) + np.float32(0.5)).astype(np.uint8)
