"""From a SpatialData slide to a squidpy/scanpy-style AnnData (``uns["spatial"]`` + ``obsm["spatial"]``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._constants import SCALEFACTOR_HIRES, SCALEFACTOR_SPOT_DIAMETER, SCALEFACTOR_UM_PER_PX
from ._resolve import resolve

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


def to_anndata(
    sdata: SpatialData,
    *,
    table_key: str | None = None,
    image_key: str | None = None,
    shapes_key: str | None = None,
    um_per_px: float | None = None,
    platform: str | None = None,
    hires_px: int = 2000,
) -> AnnData:
    """Flatten a slide into an AnnData that scanpy and squidpy plot directly.

    ``obsm["spatial"]`` holds spot centres in full-resolution (level-0) pixels; ``uns["spatial"][library_id]`` (the
    table's own library id, else the shapes key) holds a
    ``"hires"`` image no larger than ``hires_px`` on its long side (read from the coarsest sufficient pyramid level), its
    scale factor, the spot diameter in pixels and ``microns_per_pixel``.

    Parameters
    ----------
    sdata
        The slide.
    table_key, image_key, shapes_key, um_per_px, platform
        As in :func:`storm.io.resolve`.
    hires_px
        Longest side of the stored image, in pixels.

    Returns
    -------
    A new AnnData (a copy of the table's spots); ``sdata`` is not modified.

    Examples
    --------
    >>> import storm as st
    >>> adata = st.io.to_anndata(st.datasets.demo())
    >>> adata.obsm["spatial"].shape[1], "hires" in adata.uns["spatial"]["demo"]["images"]
    (2, True)
    """
    slide = resolve(
        sdata, table_key=table_key, image_key=image_key, shapes_key=shapes_key, um_per_px=um_per_px, platform=platform
    )
    adata = slide.table[slide.rows].copy()
    adata.uns.pop("spatialdata_attrs", None)
    old = adata.uns.pop("spatial", {})
    old = old if isinstance(old, dict) else {}
    library_id = next(iter(old)) if len(old) == 1 else slide.keys["shapes_key"]
    meta = dict(old.get(library_id, {}).get("metadata", {}))
    scalefactors = {
        SCALEFACTOR_UM_PER_PX: slide.um_per_px,
        SCALEFACTOR_SPOT_DIAMETER: float(np.median(slide.spot_diameter_um) / slide.um_per_px),
    }
    lib: dict = {"images": {}, "scalefactors": scalefactors, "metadata": meta}
    if slide.has_image:
        from ..pp._image import to_rgb_uint8

        level = _level_for_size(slide, hires_px)
        data = slide.levels[level].data
        factor = max(data.shape[1], data.shape[2]) / hires_px
        step = max(1, int(np.ceil(factor)))
        pixels = to_rgb_uint8(np.asarray(data[:, ::step, ::step]), slide.levels[level].white)
        lib["images"]["hires"] = pixels
        scalefactors[SCALEFACTOR_HIRES] = 1.0 / (slide.levels[level].px_to_level0[0] * step)
        adata.obsm["spatial"] = slide.spot_xy_px.copy()
    else:
        adata.obsm["spatial"] = slide.spot_xy_um / slide.um_per_px
    adata.uns["spatial"] = {library_id: lib}
    return adata


def _level_for_size(slide, longest_px: int) -> int:
    chosen = 0
    for i, lvl in enumerate(slide.levels):
        if max(lvl.shape_yx) >= longest_px:
            chosen = i
    return chosen
