"""H&E augmentation of whole niches: one flip/rotation for all tiles and the µm offsets, colour and stain jitter."""

from __future__ import annotations

from typing import Any

import numpy as np

#: Stain vectors in optical density (rows: haematoxylin, eosin, DAB), Ruifrok & Johnston, Anal Quant Cytol Histol
#: 23:291 (2001), normalised to unit length. The residual (DAB) channel absorbs what the two stains do not explain.
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_RGB_FROM_HED = _RGB_FROM_HED / np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)

#: The eight orientations of a slide, as ``(flip, k)`` of :func:`flip_rotate_tiles`: four quarter-turns, unmirrored
#: and mirrored (the symmetries of a square; the augmentation of training draws one of them per niche).
ORIENTATIONS = tuple((flip, k) for flip in (False, True) for k in range(4))


class Augment:
    """Random augmentation of a niche, with coherent geometry.

    One random horizontal flip and one rotation by a multiple of 90° are drawn per niche and applied to every tile
    **and** to the µm offsets of the spots, so that a neighbour drawn to the right of the centre stays where its tile
    content says it is. Colour jitter (brightness and contrast) and H&E stain jitter (a scale and shift of each stain's
    optical density, after Tellez et al., Med Image Anal 58:101544 (2019)) are drawn once per niche, so that
    neighbouring tiles keep looking like parts of one slide.

    Parameters
    ----------
    flip
        Mirror the niche left-right with probability 1/2.
    rot90
        Rotate the niche by 0, 90, 180 or 270 degrees, uniformly.
    color_jitter
        Brightness and contrast factors are drawn from ``[1 - color_jitter, 1 + color_jitter]`` (0 disables).
    stain_jitter
        Each stain's optical density is scaled by a factor from ``[1 - stain_jitter, 1 + stain_jitter]`` and shifted
        by ``[-stain_jitter, stain_jitter]`` (0 disables).

    Examples
    --------
    >>> import numpy as np
    >>> niche = {"offsets_um": np.array([[0.0, 0.0], [100.0, 0.0]], np.float32),
    ...          "tiles": np.zeros((2, 8, 8, 3), np.uint8)}
    >>> out = Augment(flip=False, color_jitter=0, stain_jitter=0)(niche, np.random.default_rng(1))
    >>> out["offsets_um"].tolist()  # rotated by 90 degrees (counter-clockwise as displayed, y pointing down)
    [[0.0, 0.0], [0.0, -100.0]]
    """

    def __init__(
        self, flip: bool = True, rot90: bool = True, color_jitter: float = 0.05, stain_jitter: float = 0.03
    ) -> None:
        for name, value in (("color_jitter", color_jitter), ("stain_jitter", stain_jitter)):
            if isinstance(value, bool) or not isinstance(value, int | float | np.number) or not 0 <= value < 1:
                raise ValueError(f"`{name}` must be a number in [0, 1), got {value!r}.")
        self.flip = bool(flip)
        self.rot90 = bool(rot90)
        self.color_jitter = float(color_jitter)
        self.stain_jitter = float(stain_jitter)

    def __repr__(self) -> str:
        return (
            f"Augment(flip={self.flip}, rot90={self.rot90}, color_jitter={self.color_jitter:g}, "
            f"stain_jitter={self.stain_jitter:g})"
        )

    def __call__(self, niche: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """Augment one niche (a :class:`~storm.data.NicheDataset` item); returns a new dict, the input is unchanged.

        Parameters
        ----------
        niche
            ``offsets_um`` (S, 2) and optionally ``tiles`` (S, H, W, 3) uint8 and ``image_mask`` (S,).
        rng
            The random generator; the same generator state gives the same result.

        Returns
        -------
        The niche with transformed ``offsets_um`` and ``tiles``; other entries are passed through.
        """
        flip = self.flip and bool(rng.random() < 0.5)
        k = int(rng.integers(4)) if self.rot90 else 0
        brightness, contrast = 1 + self.color_jitter * rng.uniform(-1, 1, size=2)
        alpha = 1 + self.stain_jitter * rng.uniform(-1, 1, size=3)
        beta = self.stain_jitter * rng.uniform(-1, 1, size=3)
        out = dict(niche)
        out["offsets_um"] = flip_rotate_offsets(niche["offsets_um"], flip=flip, k=k)
        tiles = niche.get("tiles")
        if tiles is not None:
            tiles = flip_rotate_tiles(tiles, flip=flip, k=k)
            if self.stain_jitter or self.color_jitter:
                mask = niche.get("image_mask")
                keep = np.ones(len(tiles), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
                tiles = tiles.copy()
                tiles[keep] = jitter_colours(tiles[keep], brightness, contrast, alpha, beta)
            out["tiles"] = np.ascontiguousarray(tiles)
        return out


def flip_rotate_tiles(tiles: Any, *, flip: bool, k: int) -> Any:
    """Mirror ``(S, H, W, C)`` tiles left-right (if ``flip``), then rotate them by ``k`` x 90° as :func:`numpy.rot90` does.

    The counterpart of :func:`flip_rotate_offsets` for pixels; a NumPy array (a view where possible) or a torch tensor.
    """
    if isinstance(tiles, np.ndarray):
        if flip:
            tiles = tiles[:, :, ::-1]
        return np.rot90(tiles, k % 4, axes=(1, 2))
    import torch

    if flip:
        tiles = tiles.flip(2)
    return torch.rot90(tiles, k % 4, dims=(1, 2))


def flip_rotate_offsets(offsets: Any, *, flip: bool, k: int) -> Any:
    """The same transformation as :func:`flip_rotate_tiles` for ``(..., 2)`` offsets ``(dx, dy)`` (x right, y down).

    A flip negates ``dx``; each 90° rotation maps ``(dx, dy)`` to ``(dy, -dx)``, as :func:`numpy.rot90` moves
    pixels (counter-clockwise on screen, where y points down). A NumPy array or a torch tensor.

    Examples
    --------
    >>> flip_rotate_offsets(np.array([[3.0, 1.0]]), flip=True, k=1).tolist()
    [[1.0, 3.0]]
    """
    dx, dy = offsets[..., 0], offsets[..., 1]
    if flip:
        dx = -dx
    for _ in range(k % 4):
        dx, dy = dy, -dx
    if isinstance(offsets, np.ndarray):
        return np.stack([dx, dy], axis=-1).astype(offsets.dtype, copy=False) + 0.0  # + 0.0 turns -0.0 into 0.0
    import torch

    return torch.stack([dx, dy], dim=-1) + 0.0


def jitter_colours(
    tiles: np.ndarray, brightness: float, contrast: float, alpha: np.ndarray, beta: np.ndarray
) -> np.ndarray:
    """Stain jitter in optical density, then contrast (around mid-grey) and brightness, of uint8 RGB tiles.

    Parameters
    ----------
    tiles
        ``(..., 3)`` uint8 RGB.
    brightness, contrast
        Multiplicative factors (1 leaves the tiles unchanged).
    alpha, beta
        ``(3,)`` scale and shift of the haematoxylin, eosin and residual optical densities (1 and 0: unchanged).

    Returns
    -------
    The jittered tiles, uint8.
    """
    x = tiles.astype(np.float32)
    if not (np.allclose(alpha, 1) and np.allclose(beta, 0)):
        od = -np.log((x + 1.0) / 256.0)
        stains = od @ _HED_FROM_RGB.astype(np.float32)
        stains = stains * np.asarray(alpha, dtype=np.float32) + np.asarray(beta, dtype=np.float32)
        x = 256.0 * np.exp(-(stains @ _RGB_FROM_HED.astype(np.float32))) - 1.0
    if contrast != 1 or brightness != 1:
        x = ((x - 127.5) * contrast + 127.5) * brightness
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)
