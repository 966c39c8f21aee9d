"""From a squidpy/scanpy-style AnnData (``uns["spatial"]`` + ``obsm["spatial"]``) to a SpatialData."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .._constants import SCALEFACTOR_HIRES, SCALEFACTOR_LOWRES, SCALEFACTOR_SPOT_DIAMETER

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

_SCALEFACTOR_OF = {"hires": SCALEFACTOR_HIRES, "lowres": SCALEFACTOR_LOWRES}


def from_anndata(
    adata: AnnData,
    *,
    library_id: str | None = None,
    img_key: str | None = None,
    spatial_key: str = "spatial",
) -> SpatialData:
    """Build a SpatialData from an AnnData with squidpy-style spatial metadata.

    The coordinate system ``"global"`` is in full-resolution pixels (the frame of ``obsm[spatial_key]``); the image
    is placed with its scale factor; spots become circles of ``spot_diameter_fullres``. ``adata`` is not modified.

    Parameters
    ----------
    adata
        AnnData with ``obsm[spatial_key]`` (x, y in full-resolution pixels) and ``uns["spatial"][library_id]`` holding
        ``images`` and ``scalefactors``.
    library_id
        Key in ``uns["spatial"]``; needed only when there are several.
    img_key
        Which image of the library (``"hires"``, ``"lowres"``, ...); the finest available by default.
    spatial_key
        Key of the spot coordinates in ``obsm``.

    Returns
    -------
    SpatialData with image ``"he"``, shapes ``"spots"`` and table ``"table"`` (a copy of ``adata``).

    Examples
    --------
    >>> import storm as st
    >>> adata = st.io.to_anndata(st.datasets.demo())
    >>> sdata = st.io.from_anndata(adata)
    >>> sorted(sdata.images), sorted(sdata.shapes)
    (['he'], ['spots'])
    """
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    if spatial_key not in adata.obsm:
        raise KeyError(f"`adata.obsm[{spatial_key!r}]` is missing; it must hold spot centres (x, y) in pixels.")
    library_id, lib = _library(adata, library_id)
    scalefactors = dict(lib.get("scalefactors", {}))
    if SCALEFACTOR_SPOT_DIAMETER not in scalefactors:
        raise KeyError(
            f"`uns['spatial'][{library_id!r}]['scalefactors']` lacks {SCALEFACTOR_SPOT_DIAMETER!r} (spot diameter in "
            "full-resolution pixels); add it so spots can be drawn and tiled at their true size."
        )
    xy = np.asarray(adata.obsm[spatial_key], dtype=float)[:, :2]
    spots = ShapesModel.parse(
        xy,
        geometry=0,
        radius=np.full(len(xy), float(scalefactors[SCALEFACTOR_SPOT_DIAMETER]) / 2.0),
        index=np.arange(len(xy)),
        transformations={"global": Identity()},
    )
    table = adata.copy()
    table.obs["region"] = "spots"
    table.obs["region"] = table.obs["region"].astype("category")
    table.obs["spot_id"] = np.arange(adata.n_obs)
    table.uns["spatial"] = {library_id: lib}
    table.uns.pop(TableModel.ATTRS_KEY, None)  # a table taken out of a SpatialData object is annotated afresh
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    images = {}
    images_in = lib.get("images", {})
    if images_in:
        key = img_key or next((k for k in ("hires", "lowres") if k in images_in), next(iter(images_in)))
        if key not in images_in:
            raise KeyError(f"`img_key={key!r}` is not in uns['spatial'][{library_id!r}]['images'] ({list(images_in)}).")
        scale = float(scalefactors.get(_SCALEFACTOR_OF.get(key, ""), scalefactors.get(f"tissue_{key}_scalef", 1.0)))
        pixels = np.asarray(images_in[key])
        pixels = pixels[..., None] if pixels.ndim == 2 else pixels
        images["he"] = Image2DModel.parse(
            np.moveaxis(pixels, -1, 0),
            dims=("c", "y", "x"),
            transformations={"global": Scale([1.0 / scale, 1.0 / scale], axes=("y", "x"))},
        )
    return SpatialData(images=images, shapes={"spots": spots}, tables={"table": table})


def _library(adata: AnnData, library_id: str | None) -> tuple[str, dict]:
    spatial = adata.uns.get("spatial")
    if not isinstance(spatial, dict) or not spatial:
        raise KeyError(
            "`adata.uns['spatial']` is missing; squidpy-style AnnData need uns['spatial'][library_id] with "
            "'images' and 'scalefactors' (scanpy.read_visium writes it)."
        )
    if library_id is None:
        if len(spatial) > 1:
            raise ValueError(f"`adata.uns['spatial']` has several libraries {list(spatial)}; pass `library_id=`.")
        library_id = next(iter(spatial))
    if library_id not in spatial:
        raise KeyError(f"`library_id={library_id!r}` is not in adata.uns['spatial'] ({list(spatial)}).")
    return library_id, dict(spatial[library_id])
