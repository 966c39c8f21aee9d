"""The resolved view of one slide that every later step of storm works on."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import dask.array as da
    from anndata import AnnData


@dataclass(frozen=True)
class ImageLevel:
    """One level of an image pyramid.

    Attributes
    ----------
    data
        Lazy pixels, axes ``(c, y, x)``.
    px_to_level0
        Size of one pixel of this level in pixels of level 0 (``(sy, sx)``; 1 for level 0).
    white
        The pixel value of full intensity (255 for 8-bit values, 65535 for 16-bit, 1.0 for floats in [0, 1]), decided
        once for the whole image from its values (every chunk of every level converts to RGB uint8 with it).
    """

    data: da.Array
    px_to_level0: tuple[float, float]
    white: float

    @property
    def shape_yx(self) -> tuple[int, int]:
        """Height and width in pixels of this level."""
        return int(self.data.shape[1]), int(self.data.shape[2])


@dataclass
class Slide:
    """One table, image, set of spots and coordinate system, resolved once.

    Built by :func:`storm.io.resolve`; every tool takes this instead of raw elements, so that the choice of elements and
    its errors happen in one place.

    Attributes
    ----------
    table
        The AnnData that results are written to (the user's own object, never a copy).
    rows
        Positions of the resolved spots in ``table`` (all rows, unless the table annotates several regions).
    obs_names
        Names of the resolved spots.
    spot_xy_px
        Spot centres in pixels of image level 0, ``(n, 2)`` as ``(x, y)``, as pixel indices (pixel ``p`` is centred on
        ``p``); ``None`` without image.
    spot_xy_um
        Spot centres in µm in the slide's frame (origin at level-0 pixel ``(0, 0)``), ``(n, 2)`` as ``(x, y)``.
    spot_diameter_um
        Per-spot diameter in µm (circle diameter, or the diameter of the circle with the polygon's area).
    levels
        Image pyramid, finest first; empty for slides without an image.
    um_per_px
        Microns per pixel of image level 0 (or per unit of the coordinate system without image).
    um_per_px_source
        How ``um_per_px`` was found (argument, metadata or spot pitch).
    keys
        Element keys chosen: ``table_key``, ``image_key``, ``shapes_key``, ``coordinate_system``.
    layer
        Layer of ``table`` holding raw counts (``None``: ``X``).
    sdata
        The SpatialData the slide was resolved from (``None`` for AnnData input), where per-slide caches such as
        pathology-encoder features are kept as elements of their own.
    """

    table: AnnData
    rows: np.ndarray
    obs_names: np.ndarray
    spot_xy_px: np.ndarray | None
    spot_xy_um: np.ndarray
    spot_diameter_um: np.ndarray
    levels: list[ImageLevel]
    um_per_px: float
    um_per_px_source: str
    keys: dict[str, Any] = field(default_factory=dict)
    layer: str | None = None
    sdata: Any = field(default=None, repr=False)

    @property
    def n_spots(self) -> int:
        """Number of resolved spots."""
        return len(self.obs_names)

    @property
    def has_image(self) -> bool:
        """Whether an image was resolved."""
        return bool(self.levels)

    @functools.cached_property
    def image_problem(self) -> str | None:
        """Why the image is not a brightfield RGB (H&E) image, or ``None`` (also without image); read once."""
        from ._elements import brightfield_problem

        if not self.levels:
            return None
        return brightfield_problem([level.data for level in self.levels], self.levels[0].white)

    @property
    def extent_um(self) -> tuple[float, float]:
        """Width and height in µm of the image's full resolution (level 0)."""
        h, w = self.levels[0].shape_yx
        return w * self.um_per_px, h * self.um_per_px

    @property
    def has_expression(self) -> bool:
        """Whether the table carries any genes."""
        return self.table.n_vars > 0

    def counts(self) -> Any:
        """Raw counts of the resolved spots (``layer``, else ``X``), rows in the order of ``obs_names``."""
        matrix = self.table.X if self.layer is None else self.table.layers[self.layer]
        rows = matrix[self.rows]
        return rows.astype(np.float32) if rows.dtype == np.float16 else rows  # scipy holds no float16

    def level_um_per_px(self, level: int) -> tuple[float, float]:
        """Microns per pixel ``(y, x)`` of pyramid ``level``."""
        sy, sx = self.levels[level].px_to_level0
        return self.um_per_px * sy, self.um_per_px * sx

    def choose_level(self, target_um_per_px: float) -> int:
        """Pyramid level to read for a target resolution.

        The coarsest level that is still at least as fine as the target (so tiles are never upsampled from a coarser
        level than needed); the finest level when even that is coarser than the target.
        """
        if not self.levels:
            raise ValueError("This slide has no image; pass an SpatialData with an H&E image to tile it.")
        best = 0
        for i in range(len(self.levels)):
            if max(self.level_um_per_px(i)) <= target_um_per_px * (1 + 1e-6):
                best = i
        return best

    def summary(self) -> dict[str, Any]:
        """Plain-data description stored in ``uns`` next to results."""
        out = dict(self.keys)
        out.update(
            layer=self.layer,
            n_spots=self.n_spots,
            um_per_px=float(self.um_per_px),
            um_per_px_source=self.um_per_px_source,
            median_spot_diameter_um=float(np.median(self.spot_diameter_um)) if self.n_spots else float("nan"),
        )
        if self.levels:
            out["image_shape_level0"] = list(self.levels[0].shape_yx)
            out["n_levels"] = len(self.levels)
        return out
