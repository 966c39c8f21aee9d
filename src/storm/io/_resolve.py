"""Resolve a SpatialData (or squidpy-style AnnData) into one :class:`~storm.io.Slide`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._docs import doc_params
from .._logging import logger
from ._counts import counts_layer
from ._elements import (
    affine_scale,
    affine_xy,
    check_he_pixels,
    choose_image,
    choose_shapes,
    choose_table,
    coordinate_systems,
    image_levels,
    image_white,
    native_coordinate_system,
    spot_shapes,
    table_link,
)
from ._scale import resolve_um_per_px, spatial_metadata
from ._slide import ImageLevel, Slide

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData


@doc_params
def resolve(
    data: SpatialData | AnnData | Slide,
    *,
    table_key: str | None = None,
    image_key: str | None = None,
    shapes_key: str | None = None,
    coordinate_system: str | None = None,
    um_per_px: float | None = None,
    platform: str | None = None,
    layer: str | None = None,
    library_id: str | None = None,
    image: bool = True,
) -> Slide:
    """Resolve the table, image, spots, coordinate system, counts layer and physical scale of a slide.

    Every storm tool and plot resolves its input with this function, once, and records the result in
    ``uns["storm"][key]["resolved"]``.

    Parameters
    ----------
    data
        A :class:`~spatialdata.SpatialData` (from spatialdata-io's readers, :func:`spatialdata.read_zarr`, or storm's
        datasets), an AnnData with squidpy-style ``uns["spatial"][library_id]`` and ``obsm["spatial"]`` (as
        ``scanpy.read_visium`` writes it), or an already resolved :class:`~storm.io.Slide` (returned as it is).
    {resolve_params}
    library_id
        For AnnData input: the key in ``uns["spatial"]``.
    image
        Whether the caller uses the image. With ``False`` (tools that work on stored embeddings), an image that cannot
        be chosen unambiguously is left out instead of raising.

    Returns
    -------
    The resolved slide; nothing in ``data`` is modified.

    Examples
    --------
    >>> import storm as st
    >>> slide = st.io.resolve(st.datasets.demo())
    >>> round(slide.um_per_px, 2), slide.keys["image_key"]
    (0.69, 'he')
    """
    from anndata import AnnData
    from spatialdata import SpatialData

    if isinstance(data, Slide):
        return data
    if isinstance(data, AnnData):
        from ._anndata import from_anndata

        if data.isbacked:
            raise ValueError(
                f"This AnnData is opened in backed mode ({data.filename}): storm reads every spot's counts and writes "
                "its results into the object. Load it into memory first: `adata = adata.to_memory()` (or "
                "anndata.read_h5ad(path) without `backed=`), then write it back with adata.write_h5ad(path)."
            )
        target_table = data
        data = from_anndata(data, library_id=library_id)
    elif isinstance(data, SpatialData):
        target_table = None
    else:
        raise TypeError(f"`data` must be a SpatialData or an AnnData, got {type(data).__name__}.")

    table_key = choose_table(data, table_key)
    table = data.tables[table_key]
    if table.n_obs == 0:
        raise ValueError(f"Table {table_key!r} is empty (0 spots); nothing to tile or embed.")
    _check_unique_var_names(table, table_key)
    regions, region_key, instance_key = table_link(table, table_key)
    shapes_key = choose_shapes(data, regions, shapes_key, table_key)
    rows = np.flatnonzero(np.asarray(table.obs[region_key].astype(str) == shapes_key))
    obs_names = np.asarray(table.obs_names[rows])
    _check_unique(obs_names, table_key)

    shapes = spot_shapes(data, shapes_key)
    ids = table.obs[instance_key].to_numpy()[rows]
    missing = ~np.isin(ids, shapes.index.to_numpy())
    if missing.any():
        raise ValueError(
            f"{int(missing.sum())} rows of table {table_key!r} point to spots missing from shapes {shapes_key!r} "
            f"(e.g. {ids[missing][:3].tolist()}); check `{instance_key}` against the shapes' index."
        )
    geoms = shapes.loc[ids]
    xy_shape = np.column_stack([geoms.geometry.centroid.x.to_numpy(), geoms.geometry.centroid.y.to_numpy()])
    _check_finite_coordinates(xy_shape, obs_names, shapes_key, table_key)
    diameter_shape = _diameters(geoms)

    try:
        image_key, cs = choose_image(data, shapes, shapes_key, image_key, coordinate_system)
        hint_key = image_key
    except ValueError as error:
        if image or image_key is not None:
            raise
        logger.info("no image used (%s)", error)
        cs = coordinate_system or native_coordinate_system(shapes, coordinate_systems(shapes))
        hint_key, image_key = sorted(data.images)[0], None
    shape_to_cs = affine_xy(shapes, cs)
    if image_key is not None:
        level_arrays = image_levels(data.images[image_key])
        check_he_pixels(level_arrays[0], image_key)
        px_to_cs = affine_xy(level_arrays[0], cs)
        levels = _pyramid(level_arrays, image_white(level_arrays, image_key))
    else:
        px_to_cs = np.eye(3)
        levels = []
    shape_to_px = np.linalg.inv(px_to_cs) @ shape_to_cs
    xy_px = _apply(shape_to_px, xy_shape)
    px_per_shape_unit = affine_scale(shape_to_px)
    cs_per_px = affine_scale(px_to_cs)

    meta = spatial_metadata(table, shapes_key)
    scale, source = resolve_um_per_px(
        um_per_px=um_per_px,
        platform=platform,
        meta=meta,
        image_key=hint_key,
        shapes_key=shapes_key,
        spot_xy_px=xy_px,
        px_per_shape_unit=px_per_shape_unit,
        cs_per_px=cs_per_px,
    )
    if levels:
        _check_inside(xy_px, levels[0].shape_yx, obs_names, image_key, shapes_key)
    slide = Slide(
        table=target_table if target_table is not None else table,
        rows=rows,
        obs_names=obs_names,
        spot_xy_px=xy_px if levels else None,
        spot_xy_um=xy_px * scale,
        spot_diameter_um=diameter_shape * px_per_shape_unit * scale,
        levels=levels,
        um_per_px=scale,
        um_per_px_source=source,
        keys={"table_key": table_key, "image_key": image_key, "shapes_key": shapes_key, "coordinate_system": cs},
        layer=counts_layer(table, layer),
        sdata=data if target_table is None else None,
    )
    logger.debug(
        "resolved %d spots of %r in %r, image %r, %.4g µm/px (%s)",
        slide.n_spots,
        shapes_key,
        cs,
        image_key,
        scale,
        source,
    )
    return slide


def _check_unique(obs_names: np.ndarray, table_key: str) -> None:
    names, counts = np.unique(obs_names, return_counts=True)
    if (counts > 1).any():
        raise ValueError(
            f"Table {table_key!r} has duplicated obs names (e.g. {names[counts > 1][:3].tolist()}); "
            "make them unique with `table.obs_names_make_unique()`."
        )


def _check_unique_var_names(table: AnnData, table_key: str) -> None:
    duplicated = table.var_names[table.var_names.duplicated()]
    if len(duplicated):
        raise ValueError(
            f"Table {table_key!r} has {len(duplicated)} duplicated var_names (genes), e.g. "
            f"{sorted(set(duplicated))[:3]}; make them unique with `table.var_names_make_unique()` (or sum the "
            "duplicated genes) first."
        )


def _check_finite_coordinates(xy: np.ndarray, obs_names: np.ndarray, shapes_key: str, table_key: str) -> None:
    bad = ~np.isfinite(xy).all(axis=1)
    if bad.any():
        raise ValueError(
            f"{int(bad.sum())} of {len(xy)} spots of {shapes_key!r} have NaN or infinite coordinates, e.g. "
            f"{obs_names[bad][:3].tolist()}. Fix their coordinates in {shapes_key!r}, or drop those spots from table "
            f"{table_key!r} first (`table = table[~table.obs_names.isin(bad_names)].copy()`)."
        )


def _diameters(geoms: Any) -> np.ndarray:
    if "radius" in geoms.columns:
        return 2.0 * geoms["radius"].to_numpy(dtype=float)
    return 2.0 * np.sqrt(geoms.geometry.area.to_numpy(dtype=float) / np.pi)


def _apply(affine: np.ndarray, xy: np.ndarray) -> np.ndarray:
    return xy @ affine[:2, :2].T + affine[:2, 2]


def _pyramid(level_arrays: list[Any], white: float) -> list[ImageLevel]:
    h0, w0 = level_arrays[0].sizes["y"], level_arrays[0].sizes["x"]
    return [
        ImageLevel(data=lvl.data, px_to_level0=(h0 / lvl.sizes["y"], w0 / lvl.sizes["x"]), white=white)
        for lvl in level_arrays
    ]


def _check_inside(
    xy_px: np.ndarray, shape_yx: tuple[int, int], obs_names: np.ndarray, image_key: str, shapes_key: str
) -> None:
    h, w = shape_yx
    outside = (xy_px[:, 0] < 0) | (xy_px[:, 1] < 0) | (xy_px[:, 0] >= w) | (xy_px[:, 1] >= h)
    if outside.any():
        raise ValueError(
            f"{int(outside.sum())} of {len(xy_px)} spots of {shapes_key!r} have their centre outside image "
            f"{image_key!r} ({w} x {h} px), e.g. {obs_names[outside][:3].tolist()}. The spots and the image are "
            "probably not aligned: check the transformations of both elements (or the scale factor of the image)."
        )
