"""Crops at random positions over all the tissue of a slide's image, for the image branch's self-supervised objective.

Spot tiles are a few hundred per section; the tissue between and around the spots holds tens of thousands of crops of
the same size. :class:`TissueCrops` finds each slide's tissue once (storm's tissue mask, as ``st.pp.tissue_grid``
uses it), draws crop centres uniformly over it, and cuts views of each crop: two at the tile's geometry around
independently jittered centres, and a wider context view (``context`` tiles wide, resampled to the tile's pixels).
Each view gets its own flip / rotation and a stronger colour and H&E-stain jitter than niches do, so that the image
branch learns what stays the same under a change of stain and position rather than the stain itself.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from ._augment import Augment

if TYPE_CHECKING:
    from ..io import Slide

#: Resolution of the tissue mask the crop centres are drawn from (µm per pixel).
MASK_UM_PER_PX = 8.0


class TissueCrops:
    """Random crops over every tissue region of a slide, with augmented views.

    Parameters
    ----------
    n
        Crops per batch (each gives ``2`` views, plus a context view when ``context > 1``).
    tile_px, tile_um
        Geometry of a view (the model's tile).
    context
        Width of the context view in tiles (``<= 1``: no context view).
    jitter
        Largest shift of a view's centre from the crop centre, as a fraction of ``tile_um``.
    color_jitter, stain_jitter
        Per-view colour and H&E stain jitter (see :class:`~storm.data.Augment`).

    Examples
    --------
    >>> import storm as st
    >>> crops = TissueCrops(4, tile_px=32, tile_um=112.0)
    >>> views = crops(st.io.resolve(st.datasets.demo()), np.random.default_rng(0))
    >>> views.shape, views.dtype.name
    ((3, 4, 32, 32, 3), 'uint8')
    """

    def __init__(
        self,
        n: int,
        *,
        tile_px: int,
        tile_um: float,
        context: float = 2.0,
        jitter: float = 0.25,
        color_jitter: float = 0.15,
        stain_jitter: float = 0.05,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 2:
            raise ValueError(f"`n` (crops per batch) must be an integer of at least 2, got {n!r}.")
        if not 0 <= jitter < 1:
            raise ValueError(f"`jitter` must lie in [0, 1), got {jitter!r}.")
        self.n = int(n)
        self.tile_px = int(tile_px)
        self.tile_um = float(tile_um)
        self.context = float(context)
        self.jitter = float(jitter)
        self.augment = Augment(color_jitter=color_jitter, stain_jitter=stain_jitter)
        self._tissue: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    @property
    def n_views(self) -> int:
        """How many views each crop gives (two at the tile's geometry, and one of context when ``context > 1``)."""
        return 3 if self.context > 1 else 2

    def tissue_px(self, slide: Slide) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 pixel ``(x, y)`` corners ``(m, 2)`` of the cells of ``slide``'s tissue mask and their size ``(2,)``."""
        key = id(slide)
        if key not in self._tissue:
            self._tissue[key] = _tissue_cells(slide)
        return self._tissue[key]

    def centres(self, slide: Slide, rng: np.random.Generator, n: int | None = None) -> np.ndarray:
        """``(n, 2)`` random level-0 pixel centres, uniform over the slide's tissue."""
        cells, size = self.tissue_px(slide)
        pick = cells[rng.integers(len(cells), size=self.n if n is None else n)]
        return pick + rng.uniform(0, 1, size=pick.shape) * size

    def __call__(self, slide: Slide, rng: np.random.Generator) -> np.ndarray:
        """``(n_views, n, tile_px, tile_px, 3)`` uint8 views of ``n`` random crops of ``slide``'s tissue."""
        from ..pp import TileSet

        centres = self.centres(slide, rng)
        reach = self.jitter * self.tile_um / slide.um_per_px
        views = []
        for v in range(self.n_views):
            shift = rng.uniform(-reach, reach, size=centres.shape) if v < 2 else np.zeros_like(centres)
            um = self.tile_um * (self.context if v == 2 else 1.0)
            tiles = TileSet(_at(slide, centres + shift), tile_px=self.tile_px, tile_um=um).read(np.arange(self.n))
            views.append([self._augment(tile, rng) for tile in tiles])
        return np.ascontiguousarray(np.asarray(views, dtype=np.uint8))

    def _augment(self, tile: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        out = self.augment({"offsets_um": np.zeros((1, 2), np.float32), "tiles": tile[None]}, rng)
        return out["tiles"][0]


def _at(slide: Slide, centres_px: np.ndarray) -> Slide:
    """The slide with ``centres_px`` as its spots (for cutting tiles there with :class:`~storm.pp.TileSet`)."""
    n = len(centres_px)
    return dataclasses.replace(
        slide,
        rows=np.arange(n),
        obs_names=np.arange(n).astype(str),
        spot_xy_px=np.asarray(centres_px, dtype=float),
        spot_xy_um=np.asarray(centres_px, dtype=float) * slide.um_per_px,
        spot_diameter_um=np.zeros(n),
    )


def _tissue_cells(slide: Slide) -> tuple[np.ndarray, np.ndarray]:
    """Level-0 pixel corners ``(x, y)`` of the tissue cells of the slide's image (a mask at ~8 µm/px), and their size."""
    from ..pp._image import to_rgb_uint8
    from ..pp._tissue_mask import tissue_mask

    if not slide.has_image:
        raise ValueError("Tissue crops need an H&E image; this slide has none.")
    level_um = [float(np.sqrt(np.prod(slide.level_um_per_px(i)))) for i in range(len(slide.levels))]
    level = int(np.argmin([abs(np.log(u / MASK_UM_PER_PX)) for u in level_um]))
    import dask.array as da

    data = slide.levels[level].data
    data = data if isinstance(data, da.Array) else da.from_array(np.asarray(data))
    step = min(max(1, round(MASK_UM_PER_PX / level_um[level])), int(data.shape[1]), int(data.shape[2]))
    coarse = da.coarsen(np.mean, data.astype(np.float32), {1: step, 2: step}, trim_excess=True).compute()
    rgb = to_rgb_uint8(coarse, slide.levels[level].white)
    mask, _ = tissue_mask(rgb, level_um[level] * step)
    if not mask.any():  # nothing looks like tissue (a small crop, a synthetic image): every cell may hold a crop
        mask[:] = True
    ys, xs = np.nonzero(mask)
    sy, sx = slide.levels[level].px_to_level0
    size = np.array([step * sx, step * sy], dtype=float)
    return np.column_stack([xs, ys]).astype(float) * size, size
