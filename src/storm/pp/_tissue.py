"""``st.pp.tissue_grid``: pseudo-spots over the tissue of an H&E-only slide."""

from __future__ import annotations

import copy as _copy
from typing import TYPE_CHECKING, Any

import numpy as np

from .._constants import (
    METADATA_PLATFORM,
    OBS_IN_TISSUE,
    SCALEFACTOR_SPOT_DIAMETER,
    SCALEFACTOR_UM_PER_PX,
    UNS_KEY,
    UNS_TISSUE_GRID,
)
from .._logging import logger

if TYPE_CHECKING:
    from spatialdata import SpatialData

_GRIDS = ("hex", "square")
_MAX_CANDIDATES = 20_000_000


def tissue_grid(
    sdata: SpatialData,
    *,
    spot_um: float = 55.0,
    pitch_um: float = 100.0,
    image_key: str | None = None,
    um_per_px: float | None = None,
    key_added: str = "tissue_grid",
    grid: str = "hex",
    min_tissue_fraction: float = 0.5,
    coordinate_system: str | None = None,
    overwrite: bool = False,
    copy: bool = False,
) -> SpatialData | None:
    """Lay a grid of pseudo-spots over the tissue of an H&E slide that has no spots of its own.

    An H&E-only slide (no expression) gets Visium-like spots on its tissue, so that every later storm tool (tiling,
    embedding, expression prediction) works on it as on a spatial transcriptomics slide.

    The tissue is found on the pyramid level closest to 8 µm/px (block-averaged to about 8 µm/px when the image has no
    coarser level): black (masked) background is ignored; in colour images tissue is saturated *and* textured (Otsu
    threshold on the HSV saturation, clipped to [0.05, 0.15], grown into faintly saturated textured neighbours such as
    adipose tissue; very saturated pixels count without texture); in grayscale images it is darker than an Otsu
    threshold; near-white pixels never count; fragments under 0.01 mm² are dropped and holes under 0.05 mm² are
    filled. A hexagonal (rows offset by half a pitch, ``pitch_um * sqrt(3) / 2`` apart) or square grid at ``pitch_um``
    covers the image, and a grid point is kept when at least ``min_tissue_fraction`` of its disk of diameter
    ``spot_um`` is tissue.

    Written, all at once after everything was computed:

    * shapes ``f"{key_added}_spots"`` (SpatialData names are unique across element types, so the shapes cannot share
      the table's name): circles with centres and radius in pixels of the image's level 0, registered with the same
      transformations as level 0 (so they overlay the image in every coordinate system it has);
    * table ``key_added``: one row per pseudo-spot (``"grid_0"``, ...), no genes; ``obs["in_tissue"]`` (1),
      ``obs["tissue_fraction"]``, ``obs["array_row"]`` and ``obs["array_col"]`` (for hexagonal grids the column index
      is doubled and shares the parity of the row, as in Visium); linked to the shapes through ``obs["region"]`` and
      ``obs["spot_id"]``; ``uns["spatial"][key_added]["scalefactors"]`` holds ``microns_per_pixel`` (µm per level-0
      pixel) and ``spot_diameter_fullres`` (pixels), and ``uns["storm"]["tissue_grid"]`` the parameters.

    Parameters
    ----------
    sdata
        The slide, with an H&E image (RGB, RGBA or grayscale; uint8, uint16, or floats in [0, 1]).
    spot_um
        Diameter of a pseudo-spot in µm (Visium: 55).
    pitch_um
        Distance between neighbouring pseudo-spot centres in µm (Visium: 100).
    image_key
        Image to use; by default the only image, or the only 3-channel image among several.
    um_per_px
        Microns per pixel of the image's level 0. Needed unless a table of ``sdata`` records
        ``uns["spatial"][...]["scalefactors"]["microns_per_pixel"]`` for spots in the image's coordinate system;
        it is never guessed.
    key_added
        Key of the new table; the shapes are ``f"{key_added}_spots"``.
    grid
        ``"hex"`` (Visium-like) or ``"square"``.
    min_tissue_fraction
        Keep a grid point when at least this fraction of its spot disk is tissue (0 keeps every point of the grid).
    coordinate_system
        Coordinate system in which the image is matched with other elements (for scale metadata); by default the
        image's only one, or ``"global"``.
    overwrite
        Replace an existing table ``key_added`` and shapes ``f"{key_added}_spots"``; otherwise they are an error.
    copy
        Return a modified deep copy instead of writing into ``sdata``.

    Returns
    -------
    ``None``, or the modified copy when ``copy=True``.

    Examples
    --------
    >>> import numpy as np
    >>> import spatialdata as sd
    >>> from spatialdata.models import Image2DModel
    >>> import storm as st
    >>> yy, xx = np.mgrid[:1000, :1000]
    >>> pixels = np.full((3, 1000, 1000), 255, dtype=np.uint8)
    >>> pixels[:, (yy - 500) ** 2 + (xx - 500) ** 2 < 400**2] = [[200], [120], [180]]
    >>> sdata = sd.SpatialData(images={"he": Image2DModel.parse(pixels, dims=("c", "y", "x"))})
    >>> st.pp.tissue_grid(sdata, um_per_px=2.0)
    >>> sdata.tables["tissue_grid"].n_obs, float(sdata.shapes["tissue_grid_spots"]["radius"].iloc[0])
    (230, 13.75)
    """
    from spatialdata import SpatialData

    from ..io._elements import check_he_pixels, image_levels
    from ._tissue_mask import detection_image, disk_fractions, tissue_mask

    if not isinstance(sdata, SpatialData):
        raise TypeError(
            f"`sdata` must be a SpatialData, got {type(sdata).__name__}. For a squidpy-style AnnData, convert it "
            "first with `storm.io.from_anndata(adata)`."
        )
    _check_params(spot_um, pitch_um, um_per_px, key_added, grid, min_tissue_fraction)
    if copy:
        from spatialdata import deepcopy

        sdata = deepcopy(sdata)

    shapes_key = f"{key_added}_spots"
    _check_keys(sdata, key_added, shapes_key, overwrite)
    image_key = _choose_image(sdata, image_key)
    levels = image_levels(sdata.images[image_key])
    level0 = levels[0]
    check_he_pixels(level0, image_key)
    cs = _choose_coordinate_system(level0, image_key, coordinate_system)
    scale, source = _um_per_px(sdata, level0, image_key, cs, um_per_px)

    rgb, mask_px_to_level0, level = detection_image(levels, scale, image_key)
    mask_um_per_px = scale * float(np.sqrt(mask_px_to_level0[0] * mask_px_to_level0[1]))
    mask, mask_info = tissue_mask(rgb, mask_um_per_px)

    height, width = int(level0.sizes["y"]), int(level0.sizes["x"])
    pitch_px, spot_px = pitch_um / scale, spot_um / scale
    xy, rows, cols = _grid_points(width, height, pitch_px, grid)
    fraction = disk_fractions(mask, mask_px_to_level0, xy, spot_px / 2.0)
    keep = fraction >= min_tissue_fraction
    if not keep.any():
        raise ValueError(
            f"No tissue was found in image {image_key!r}: none of the {len(xy)} grid points has at least "
            f"{min_tissue_fraction:g} of its {spot_um:g} µm disk on tissue (tissue covers "
            f"{mask_info['tissue_fraction_of_image']:.1%} of the image). Check that the image is an H&E stain and "
            f"that `um_per_px` ({scale:g} µm per level-0 pixel, from {source}) is right; a scale too small makes the "
            "tissue look tiny."
        )

    params = {
        "spot_um": float(spot_um),
        "pitch_um": float(pitch_um),
        "grid": grid,
        "min_tissue_fraction": float(min_tissue_fraction),
        "image_key": image_key,
        "coordinate_system": cs,
        "um_per_px": float(scale),
        "um_per_px_source": source,
        "n_spots": int(keep.sum()),
        "n_grid_points": len(xy),
        "detection_level": int(level),
        "detection_um_per_px": float(mask_um_per_px),
        "mask_feature": str(mask_info["feature"]),
        "mask_threshold": float(mask_info["threshold"]),
        "mask_tissue_fraction_of_image": float(mask_info["tissue_fraction_of_image"]),
    }
    shapes, table = _build_elements(
        level0, key_added, shapes_key, xy[keep], rows[keep], cols[keep], fraction[keep], spot_px, scale, params
    )
    _write(sdata, shapes_key, shapes, key_added, table)
    logger.info(
        "tissue_grid: wrote shapes %r and table %r: %d %s-grid pseudo-spots (%g µm at %g µm pitch, %.1f px) on "
        "image %r at %g µm/px (%s)",
        shapes_key,
        key_added,
        params["n_spots"],
        grid,
        spot_um,
        pitch_um,
        pitch_px,
        image_key,
        scale,
        source,
    )
    return sdata if copy else None


def _check_params(
    spot_um: float, pitch_um: float, um_per_px: float | None, key_added: str, grid: str, min_tissue_fraction: float
) -> None:
    for name, value in (("spot_um", spot_um), ("pitch_um", pitch_um)):
        if not _is_positive(value):
            raise ValueError(f"`{name}` must be a positive number of microns, got {value!r}.")
    if um_per_px is not None and not _is_positive(um_per_px):
        raise ValueError(f"`um_per_px` must be a positive number of microns per level-0 pixel, got {um_per_px!r}.")
    if not isinstance(key_added, str) or not key_added:
        raise ValueError(f"`key_added` must be a non-empty string, got {key_added!r}.")
    if grid not in _GRIDS:
        raise ValueError(f"`grid` must be one of {_GRIDS}, got {grid!r}.")
    if (
        isinstance(min_tissue_fraction, bool)
        or not isinstance(min_tissue_fraction, int | float | np.number)
        or not 0.0 <= float(min_tissue_fraction) <= 1.0
    ):
        raise ValueError(f"`min_tissue_fraction` must be a number in [0, 1], got {min_tissue_fraction!r}.")


def _is_positive(value: Any) -> bool:
    return (
        not isinstance(value, bool)
        and isinstance(value, int | float | np.number)
        and bool(np.isfinite(value))
        and value > 0
    )


def _check_keys(sdata: SpatialData, table_key: str, shapes_key: str, overwrite: bool) -> None:
    """Both new names are free (or, with ``overwrite``, held by elements of the same kind)."""
    existing = {
        name: kind
        for kind, store in (
            ("image", sdata.images),
            ("labels", sdata.labels),
            ("points", sdata.points),
            ("shapes", sdata.shapes),
            ("table", sdata.tables),
        )
        for name in store
    }
    taken = []
    for key, kind in ((shapes_key, "shapes"), (table_key, "table")):
        for name, other in existing.items():
            if name.lower() != key.lower():
                continue
            if name != key or other != kind:
                raise ValueError(
                    f"`key_added={table_key!r}` would write {kind} {key!r}, which clashes with the existing {other} "
                    f"{name!r} (SpatialData names are unique across element types and letter case); choose another "
                    "`key_added`."
                )
            taken.append(f"{kind} {key!r}")
    if taken and not overwrite:
        raise ValueError(
            f"{' and '.join(taken).capitalize()} already exist; pass `overwrite=True` to replace them, or another "
            "`key_added`."
        )


def _write(sdata: SpatialData, shapes_key: str, shapes: Any, table_key: str, table: Any) -> None:
    """Put both elements in ``sdata``; on any failure restore what was there, so nothing is left half-written."""
    old = {"shapes": sdata.shapes.get(shapes_key), "tables": sdata.tables.get(table_key)}
    try:
        for store, key in ((sdata.shapes, shapes_key), (sdata.tables, table_key)):
            if key in store:
                del store[key]
        sdata.shapes[shapes_key] = shapes
        sdata.tables[table_key] = table
    except Exception:
        for store, key, element in (
            (sdata.shapes, shapes_key, old["shapes"]),
            (sdata.tables, table_key, old["tables"]),
        ):
            if key in store:
                del store[key]
            if element is not None:
                store[key] = element
        raise


def _choose_image(sdata: SpatialData, image_key: str | None) -> str:
    from ..io._elements import image_is_rgb_candidate

    keys = list(sdata.images)
    if image_key is not None:
        if image_key not in sdata.images:
            raise KeyError(f"`image_key={image_key!r}` is not an image of this SpatialData; available: {keys}.")
        return image_key
    if not keys:
        raise ValueError("This SpatialData has no image; `tissue_grid` needs the H&E image of the slide.")
    if len(keys) == 1:
        return keys[0]
    rgb = [k for k in keys if image_is_rgb_candidate(sdata.images[k])]
    if len(rgb) == 1:
        return rgb[0]
    raise ValueError(
        f"This SpatialData has several images {keys} ({len(rgb)} with 3 channels); pass `image_key=` to choose the "
        "H&E image."
    )


def _choose_coordinate_system(level0: Any, image_key: str, coordinate_system: str | None) -> str:
    from ..io._elements import coordinate_systems, native_coordinate_system

    systems = coordinate_systems(level0)
    if coordinate_system is not None:
        if coordinate_system not in systems:
            raise ValueError(
                f"Image {image_key!r} is not in `coordinate_system={coordinate_system!r}`; it is in {sorted(systems)}."
            )
        return coordinate_system
    return native_coordinate_system(level0, systems)


def _um_per_px(sdata: SpatialData, level0: Any, image_key: str, cs: str, um_per_px: float | None) -> tuple[float, str]:
    """Microns per level-0 pixel: the argument, else ``microns_per_pixel`` metadata of spots in the image's frame."""
    if um_per_px is not None:
        return float(um_per_px), "argument um_per_px"
    from ..io._elements import affine_scale, affine_xy, coordinate_systems, table_link
    from ..io._scale import spatial_metadata

    px_to_cs = affine_xy(level0, cs)
    found: dict[str, float] = {}
    for table_key, table in sdata.tables.items():
        if table.uns.get("spatialdata_attrs", {}).get("region") is None:
            continue
        regions, _, _ = table_link(table, table_key)
        for region in regions:
            if region not in sdata.shapes or cs not in coordinate_systems(sdata.shapes[region]):
                continue
            value = spatial_metadata(table, region).get("scalefactors", {}).get(SCALEFACTOR_UM_PER_PX)
            if value is None:
                continue
            shape_to_px = np.linalg.inv(px_to_cs) @ affine_xy(sdata.shapes[region], cs)
            found[f"table {table_key!r} (spots {region!r})"] = float(value) / affine_scale(shape_to_px)
    if not found:
        raise ValueError(
            f"The physical scale of image {image_key!r} is unknown: no table records `microns_per_pixel` for spots in "
            f"its coordinate system {cs!r}. Pass `um_per_px=` (microns per pixel of the image's full resolution, "
            "e.g. from the scanner's metadata: ~0.25 at 40x, ~0.5 at 20x)."
        )
    values = np.array(list(found.values()))
    if np.ptp(values) > 0.01 * values.min():
        raise ValueError(
            f"Tables disagree on the scale of image {image_key!r} (µm per pixel: {found}); pass `um_per_px=`."
        )
    source, value = next(iter(found.items()))
    return value, f"metadata microns_per_pixel of {source}"


def _grid_points(width: float, height: float, pitch_px: float, grid: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid centres ``(n, 2)`` as ``(x, y)`` inside ``[0, width) x [0, height)``, centred, with array rows and columns."""
    row_step = pitch_px * np.sqrt(3.0) / 2.0 if grid == "hex" else pitch_px
    n_rows = max(1, int(np.ceil(height / row_step)))
    shift = pitch_px / 2.0 if grid == "hex" and n_rows > 1 else 0.0
    n_cols = max(1, int(np.ceil((width - shift) / pitch_px)))
    if n_rows * n_cols > _MAX_CANDIDATES:
        raise ValueError(
            f"A {pitch_px:.3g}-pixel pitch gives {n_rows * n_cols:,} grid points on this {int(width)} x {int(height)} "
            "px image; check `um_per_px` and `pitch_um`."
        )
    y0 = (height - (n_rows - 1) * row_step) / 2.0
    x0 = (width - (n_cols - 1) * pitch_px - shift) / 2.0
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    odd = rows % 2
    x = x0 + cols * pitch_px + odd * shift
    y = y0 + rows * row_step
    array_col = 2 * cols + odd if grid == "hex" else cols
    inside = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    return np.column_stack([x, y])[inside], rows[inside].astype(np.int64), array_col[inside].astype(np.int64)


def _build_elements(
    level0: Any,
    key: str,
    shapes_key: str,
    xy: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    fraction: np.ndarray,
    spot_px: float,
    um_per_px: float,
    params: dict[str, Any],
) -> tuple[Any, Any]:
    """The shapes and table to write, both fully validated before anything touches ``sdata``."""
    import pandas as pd
    from anndata import AnnData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import get_transformation

    from .._version import __version__

    n = len(xy)
    transformations = _copy.deepcopy(get_transformation(level0, get_all=True))
    shapes = ShapesModel.parse(
        np.asarray(xy, dtype=float),
        geometry=0,
        radius=np.full(n, spot_px / 2.0),
        index=np.arange(n),
        transformations=transformations,
    )
    obs = pd.DataFrame(
        {
            OBS_IN_TISSUE: np.ones(n, dtype=np.int64),
            "tissue_fraction": fraction.astype(float),
            "array_row": rows,
            "array_col": cols,
            "region": pd.Categorical([shapes_key] * n),
            "spot_id": np.arange(n),
        },
        index=pd.Index([f"grid_{i}" for i in range(n)]),
    )
    adata = AnnData(obs=obs)
    adata.uns["spatial"] = {
        key: {
            "images": {},
            "scalefactors": {SCALEFACTOR_UM_PER_PX: float(um_per_px), SCALEFACTOR_SPOT_DIAMETER: float(spot_px)},
            "metadata": {
                METADATA_PLATFORM: "tissue_grid",
                "pitch_um": params["pitch_um"],
                "spot_um": params["spot_um"],
                "grid": params["grid"],
            },
        }
    }
    adata.uns[UNS_KEY] = {UNS_TISSUE_GRID: {**params, "storm_version": __version__}}
    table = TableModel.parse(adata, region=shapes_key, region_key="region", instance_key="spot_id")
    return shapes, table
