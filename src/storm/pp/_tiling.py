"""``st.pp.tile``: H&E tiles at a fixed physical size around every spot."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._constants import OBS_TILE_PADDED, UNS_KEY, UNS_TILES
from .._docs import doc_params
from .._frame import copy_of, tool
from .._logging import logger
from ._tileset import TileSet

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from ..io import Slide
    from ..io._where import Where


@tool(copy=False)
@doc_params
def tile(
    data: SpatialData | AnnData | Slide,
    tile_px: int = 224,
    tile_um: float = 112.0,
    *,
    where: Where,
    copy: bool = False,
) -> TileSet | tuple[SpatialData | AnnData, TileSet]:
    """Tile the H&E image around every spot at a fixed physical size.

    Tiles are ``tile_px`` x ``tile_px`` RGB uint8 pixels covering ``tile_um`` x ``tile_um`` microns (default 224 px /
    112 µm, i.e. 0.5 µm/px), centred on each spot, read from the pyramid level closest to the target resolution and
    resampled exactly to it. Tiles that reach past the image border are filled with white and flagged.

    Spot coordinates are read as pixel indices, as in Space Ranger and squidpy: the centre of level-0 pixel ``p`` is
    at ``p`` (it covers ``p - 0.5`` to ``p + 0.5``), and tiles of coarser levels are placed consistently.

    No pixels are read here: the returned :class:`~storm.pp.TileSet` reads them on access, so memory does not grow
    with the slide. The geometry is recorded in ``table.uns["storm"]["tiles"]`` and the border flag in
    ``table.obs["storm_tile_padded"]`` of the resolved table (the user's own AnnData for AnnData input), or of a copy
    with ``copy=True``.

    Parameters
    ----------
    {data_param}
    tile_px
        Tile side in pixels.
    tile_um
        Tile side in microns.
    {resolve_params}
        Ignored for a Slide.
    copy
        Record the geometry and the border flags in a copy of ``data``, returned with the tiles, and leave ``data``
        as it was.

    Returns
    -------
    The lazy tile set (indexable, ``len``, torch ``Dataset``-compatible, with :meth:`~storm.pp.TileSet.batches`);
    with ``copy=True``, the copy of ``data`` and the tile set.

    Examples
    --------
    >>> import storm as st
    >>> sdata = st.datasets.demo()
    >>> ts = st.pp.tile(sdata, tile_px=224, tile_um=112)
    >>> sdata.tables["table"].uns["storm"]["tiles"]["target_um_per_px"]
    0.5
    """
    from ..io import Slide

    if isinstance(tile_px, bool) or not isinstance(tile_px, int | np.integer) or tile_px < 8:
        raise ValueError(f"`tile_px` must be an integer of at least 8 pixels, got {tile_px!r}.")
    if (
        isinstance(tile_um, bool)
        or not isinstance(tile_um, int | float | np.integer | np.floating)
        or not 0 < tile_um < np.inf
    ):
        raise ValueError(f"`tile_um` must be a positive number of microns, got {tile_um!r}.")
    target = copy_of(data) if copy else data
    slide = target if isinstance(target, Slide) else where.resolve(target)
    tiles = TileSet(slide, tile_px=int(tile_px), tile_um=float(tile_um))
    _record(slide, tiles)
    return (target, tiles) if copy else tiles


def _record(slide: Slide, tiles: TileSet) -> None:
    import pandas as pd

    table = slide.table
    if len(slide.rows) == table.n_obs:
        flags = pd.Series(tiles.padded, index=table.obs_names)
    else:
        flags = pd.Series(pd.NA, index=table.obs_names, dtype="boolean")
        flags.iloc[slide.rows] = tiles.padded
    geometry = tiles.geometry()
    table.obs[OBS_TILE_PADDED] = flags.to_numpy() if flags.dtype == bool else flags.array
    table.uns.setdefault(UNS_KEY, {})[UNS_TILES] = geometry
    logger.info(
        "tiled %d spots at %g µm/px from level %d (%d padded): added obs[%r], uns[%r][%r]",
        len(tiles),
        tiles.target_um_per_px,
        tiles.level,
        geometry["n_padded"],
        OBS_TILE_PADDED,
        UNS_KEY,
        UNS_TILES,
    )
