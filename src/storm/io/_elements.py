"""Choosing the table, shapes, image and coordinate system of a SpatialData object, with errors that say what to pass."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from spatialdata import SpatialData


def coordinate_systems(element: Any) -> set[str]:
    """Names of the coordinate systems an element is registered in."""
    from spatialdata.transformations import get_transformation

    return set(get_transformation(element, get_all=True))


def affine_xy(element: Any, coordinate_system: str) -> np.ndarray:
    """3x3 affine matrix mapping the element's intrinsic ``(x, y)`` to ``coordinate_system``."""
    from spatialdata.transformations import get_transformation

    transform = get_transformation(element, to_coordinate_system=coordinate_system)
    return np.asarray(transform.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def choose_table(sdata: SpatialData, table_key: str | None) -> str:
    """Key of the table to use."""
    keys = list(sdata.tables.keys())
    if table_key is not None:
        if table_key not in sdata.tables:
            raise KeyError(f"`table_key={table_key!r}` is not a table of this SpatialData; available: {keys}.")
        return table_key
    if not keys:
        raise ValueError(
            "This SpatialData has no table. Spots need a table linked to their shapes: for an H&E-only slide run "
            "`storm.pp.tissue_grid(sdata, ...)` first, or add one with `spatialdata.models.TableModel.parse`."
        )
    if len(keys) > 1:
        raise ValueError(f"This SpatialData has several tables {keys}; pass `table_key=` to choose one.")
    return keys[0]


def table_link(table: Any, table_key: str) -> tuple[list[str], str, str]:
    """``(regions, region_key, instance_key)`` of a table annotating shapes."""
    attrs = table.uns.get("spatialdata_attrs")
    if not attrs or attrs.get("region") is None:
        raise ValueError(
            f"Table {table_key!r} is not linked to any spots. Link it with "
            "`spatialdata.models.TableModel.parse(table, region=<shapes key>, region_key=..., instance_key=...)`."
        )
    region = attrs["region"]
    regions = [region] if isinstance(region, str) else list(region)
    return regions, attrs["region_key"], attrs["instance_key"]


def choose_shapes(sdata: SpatialData, regions: list[str], shapes_key: str | None, table_key: str) -> str:
    """Key of the shapes (spots) annotated by the table."""
    shape_regions = [r for r in regions if r in sdata.shapes]
    if shapes_key is not None:
        if shapes_key not in sdata.shapes:
            raise KeyError(f"`shapes_key={shapes_key!r}` is not a shapes element; available: {list(sdata.shapes)}.")
        if shapes_key not in regions:
            raise ValueError(
                f"Table {table_key!r} annotates {regions}, not {shapes_key!r}; pass the matching `table_key=`."
            )
        return shapes_key
    if not shape_regions:
        raise ValueError(
            f"Table {table_key!r} annotates {regions}, but none of them is a shapes element of this SpatialData "
            f"(shapes: {list(sdata.shapes)}). storm needs spots as shapes (circles or polygons)."
        )
    if len(shape_regions) > 1:
        raise ValueError(f"Table {table_key!r} annotates several shapes {shape_regions}; pass `shapes_key=`.")
    return shape_regions[0]


SUPPORTED_DTYPES = ("uint8", "uint16", "float32", "float64")


def check_he_pixels(level0: Any, image_key: str) -> None:
    """Raise unless an image level has axes (c, y, x), 1, 3 or 4 channels and a supported dtype."""
    dims = tuple(level0.dims)
    if dims != ("c", "y", "x"):
        raise ValueError(f"Image {image_key!r} has axes {dims}; storm reads 2-D images with axes ('c', 'y', 'x').")
    channels = int(level0.sizes["c"])
    if channels not in (1, 3, 4):
        raise ValueError(
            f"Image {image_key!r} has {channels} channels; storm needs an H&E image (RGB, RGBA or grayscale). "
            "Pass the H&E image with `image_key=`, or select 3 channels first."
        )
    if str(level0.dtype) not in SUPPORTED_DTYPES:
        raise ValueError(
            f"Image {image_key!r} has dtype {level0.dtype}; supported: {SUPPORTED_DTYPES} (floats in [0, 1])."
        )


def image_is_rgb_candidate(image: Any) -> bool:
    """Whether an image has 3 channels (RGB), preferred over fluorescence or grayscale."""
    return int(image_levels(image)[0].sizes.get("c", 1)) == 3


def image_levels(image: Any) -> list[Any]:
    """Pyramid levels of an image element (a DataArray, or a DataTree of scales), finest first."""
    if hasattr(image, "children") and len(getattr(image, "children", {})) > 0:
        scales = sorted(image.children, key=lambda k: int("".join(ch for ch in k if ch.isdigit()) or 0))
        return [next(iter(image[s].data_vars.values())) for s in scales]
    return [image]


def choose_image(
    sdata: SpatialData, shapes_key: str, image_key: str | None, coordinate_system: str | None
) -> tuple[str | None, str]:
    """Key of the image and name of the coordinate system shared by image and spots."""
    shapes_cs = coordinate_systems(sdata.shapes[shapes_key])
    if coordinate_system is not None and coordinate_system not in shapes_cs:
        raise ValueError(
            f"Spots {shapes_key!r} are not in `coordinate_system={coordinate_system!r}`; they are in {sorted(shapes_cs)}."
        )
    wanted_cs = {coordinate_system} if coordinate_system is not None else shapes_cs
    if image_key is not None:
        if image_key not in sdata.images:
            raise KeyError(
                f"`image_key={image_key!r}` is not an image of this SpatialData; available: {list(sdata.images)}."
            )
        shared = coordinate_systems(sdata.images[image_key]) & wanted_cs
        if not shared:
            raise ValueError(
                f"Image {image_key!r} (coordinate systems {sorted(coordinate_systems(sdata.images[image_key]))}) and "
                f"spots {shapes_key!r} ({sorted(shapes_cs)}) share no coordinate system; register both in one with "
                "`spatialdata.transformations.set_transformation`."
            )
        return image_key, pick_coordinate_system(shared)
    if not sdata.images:
        return None, pick_coordinate_system(wanted_cs)
    candidates = {k: coordinate_systems(im) & wanted_cs for k, im in sdata.images.items()}
    candidates = {k: cs for k, cs in candidates.items() if cs}
    if not candidates:
        raise ValueError(
            f"No image shares a coordinate system with spots {shapes_key!r} ({sorted(shapes_cs)}); images are in "
            f"{ {k: sorted(coordinate_systems(im)) for k, im in sdata.images.items()} }. Register the H&E image and the "
            "spots in one coordinate system, or pass `image_key=` and `coordinate_system=`."
        )
    rgb = [k for k in candidates if image_is_rgb_candidate(sdata.images[k])]
    pool = rgb or list(candidates)
    finest = _finest(sdata, pool, candidates)
    if len(finest) > 1:
        raise ValueError(f"Several images fit the spots equally well {finest}; pass `image_key=` to choose one.")
    key = finest[0]
    return key, pick_coordinate_system(candidates[key])


def _finest(sdata: SpatialData, keys: list[str], candidates: dict[str, set[str]]) -> list[str]:
    sizes = {}
    for k in keys:
        cs = pick_coordinate_system(candidates[k])
        level0 = image_levels(sdata.images[k])[0]
        sizes[k] = round(affine_scale(affine_xy(level0, cs)), 9)
    best = min(sizes.values())
    return [k for k in keys if sizes[k] == best]


def pick_coordinate_system(systems: set[str], what: str = "Image and spots share several coordinate systems") -> str:
    """The only coordinate system, else ``"global"``, else an error starting with ``what`` asking for one."""
    if len(systems) == 1:
        return next(iter(systems))
    if "global" in systems:
        return "global"
    raise ValueError(f"{what} {sorted(systems)}; pass `coordinate_system=`.")


def affine_scale(affine: np.ndarray) -> float:
    """Linear size factor of a 3x3 affine (square root of the area scale): units of output per unit of input."""
    return float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))
