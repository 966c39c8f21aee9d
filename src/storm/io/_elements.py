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
    """Key of the table to use (tables of pathology-encoder features that storm cached are never spot tables)."""
    from .._constants import UNS_FEATURES

    keys = [k for k, t in sdata.tables.items() if UNS_FEATURES not in t.uns]
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
    """Key of the spots annotated by the table: a shapes element, else a labels raster of cells.

    Readers such as spatialdata-io's ``xenium`` (by default) and ``cosmx`` link the table to a labels image of the
    cells instead of shapes; :func:`spot_shapes` turns it into circles.
    """
    elements = {**dict.fromkeys(sdata.labels, "labels"), **dict.fromkeys(sdata.shapes, "shapes")}
    if shapes_key is not None:
        if shapes_key not in elements:
            raise KeyError(
                f"`shapes_key={shapes_key!r}` is not a shapes or labels element; available: {list(elements)}."
            )
        if shapes_key not in regions:
            raise ValueError(
                f"Table {table_key!r} annotates {regions}, not {shapes_key!r}; pass the matching `table_key=`."
            )
        return shapes_key
    found = [r for r in regions if elements.get(r) == "shapes"] or [r for r in regions if elements.get(r) == "labels"]
    if not found:
        raise ValueError(
            f"Table {table_key!r} annotates {regions}, but none of them is a shapes or labels element of this "
            f"SpatialData (shapes: {list(sdata.shapes)}, labels: {list(sdata.labels)}). storm needs spots as shapes "
            "(circles or polygons) or cells as a labels image."
        )
    if len(found) > 1:
        raise ValueError(f"Table {table_key!r} annotates several elements {found}; pass `shapes_key=`.")
    return found[0]


def spot_shapes(sdata: SpatialData, key: str) -> Any:
    """The spots of element ``key``: its shapes, or circles of the labels' cells (centroid, area-equivalent radius)."""
    if key in sdata.shapes:
        return sdata.shapes[key]
    from spatialdata import to_circles

    from .._logging import logger

    logger.info("spots from the cells of labels %r (circles at their centroids, of equal area)", key)
    return to_circles(sdata.labels[key])


#: Longest side, in pixels, of the sample of an image's coarsest level that decides its intensity range.
_SAMPLE_PX = 1024
#: Bit depths that integer images above 8 bits are read at (the smallest that holds their values).
BIT_DEPTHS = (10, 12, 14, 16)
#: Brightest channel under this fraction of full intensity: a dark pixel (fluorescence background, not H&E).
DARK = 0.15
#: Above this fraction of dark pixels (exact black, a masked-out background, left out), an image is dark-field.
DARK_FRACTION = 0.5


def check_he_pixels(level0: Any, image_key: str) -> None:
    """Raise unless an image level has axes (c, y, x), 1, 3 or 4 channels and integer or float intensities."""
    dims = tuple(level0.dims)
    if dims != ("c", "y", "x"):
        raise ValueError(f"Image {image_key!r} has axes {dims}; storm reads 2-D images with axes ('c', 'y', 'x').")
    channels = int(level0.sizes["c"])
    if channels not in (1, 3, 4):
        raise ValueError(
            f"Image {image_key!r} has {channels} channels; storm needs an H&E image (RGB, RGBA or grayscale). "
            "Pass the H&E image with `image_key=`, or select 3 channels first."
        )
    dtype = np.dtype(level0.dtype)
    if dtype.kind not in "uif":
        what = "boolean (a mask, not an H&E image)" if dtype.kind == "b" else f"of dtype {dtype}"
        raise ValueError(
            f"Image {image_key!r} is {what}; storm reads intensities (uint8, uint16 or float). Pass the H&E image with "
            "`image_key=`, or convert this one to uint8 (0-255)."
        )


def image_white(levels: list[Any], image_key: str) -> float:
    """The pixel value of full intensity of an image, decided once from its values, for every chunk alike.

    uint8 images are 8-bit (255) without reading them. Otherwise a strided sample of the coarsest level decides:
    integers up to 255 are 8-bit values (255; e.g. uint16 or int64 holding 0-255); larger integers take the smallest
    bit depth of 10, 12, 14 or 16 that holds them (12-bit data stored as uint16: 4095), and are refused as ambiguous when
    they reach less than half of it (a dim image of that depth, or one of a depth in between: a brightfield image's
    background is near full intensity); floats up to 1.5 are intensities in [0, 1] (1.0; the overshoot of resampling is
    clipped), floats up to 255 are 8-bit values (255.0). NaN pixels are read as white. Anything else (negative values,
    integers above 65535, floats above 255, an image of only NaN) is refused.

    Parameters
    ----------
    levels
        Pyramid levels of the image, finest first (:func:`image_levels`), checked by :func:`check_he_pixels`.
    image_key
        Key of the image, for the error message.

    Returns
    -------
    255, 1023, 4095, 16383, 65535 or 1.0.
    """
    dtype = np.dtype(levels[0].dtype)
    if dtype == np.uint8:
        return 255.0
    low, high = _value_range(levels[-1], image_key)
    fix = (
        "storm reads 8-bit (0-255), 16-bit (0-65535) or float [0, 1] intensities: rescale the image to uint8 (0-255), "
        "or pass the H&E image with `image_key=`."
    )
    if low < 0:
        raise ValueError(f"Image {image_key!r} has negative values (down to {low:g}); {fix}")
    if dtype.kind == "f" and high <= 1.5:
        return 1.0
    if high <= 255:
        return 255.0
    if dtype.kind in "ui" and high <= 65535:
        white = next(float(2**bits - 1) for bits in BIT_DEPTHS if high <= 2**bits - 1)
        if high < white / 2:
            raise ValueError(
                f"Image {image_key!r} holds {dtype} values up to {high:g}: no bit depth fits them clearly ({white:g}, "
                f"{int(np.log2(white + 1))}-bit, would leave the image dark, and a brightfield image's background is "
                "near full intensity). storm reads 8-bit (0-255), 10/12/14/16-bit or float [0, 1] intensities: rescale "
                "the image to uint8 (0-255) with the range it was acquired at, or pass the H&E image with `image_key=`."
            )
        return white
    raise ValueError(f"Image {image_key!r} has values up to {high:g}, beyond the range of {dtype} intensities; {fix}")


def _value_range(level: Any, image_key: str) -> tuple[float, float]:
    """Smallest and largest value of a strided sample of ``level`` (NaN left out)."""
    step = max(1, -(-max(int(level.sizes["y"]), int(level.sizes["x"])) // _SAMPLE_PX))
    sample = np.asarray(level.data[:, ::step, ::step])
    if sample.dtype.kind == "f":
        sample = sample[~np.isnan(sample)]
        if sample.size == 0:
            raise ValueError(
                f"Image {image_key!r} has only NaN pixels; pass the H&E image with `image_key=`, or rescale this one "
                "to uint8 (0-255) with real values."
            )
    return float(sample.min()), float(sample.max())


def brightfield_problem(levels: list[Any], white: float) -> str | None:
    """Why an image is not a brightfield RGB image (H&E), or ``None`` when it is one.

    ``levels``: ``(c, y, x)`` arrays of the pyramid, finest first; ``white``: the value of full intensity
    (:func:`image_white`).

    Read from a central window of at most :data:`_SAMPLE_PX` pixels a side of the coarsest level: one channel is
    fluorescence (DAPI) or grayscale; a fourth channel that is not an alpha channel (only transparent or opaque pixels)
    makes a multi-channel fluorescence image; and an image whose pixels are mostly dark (brightest channel under
    :data:`DARK` of full intensity, exact black left out as a masked-out background) is dark-field (fluorescence).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> dapi = xr.DataArray(np.full((1, 8, 8), 900, np.uint16), dims=("c", "y", "x"))
    >>> brightfield_problem([dapi], 4095.0)
    'it has 1 channel (fluorescence such as DAPI, or grayscale), not the 3 of an RGB H&E image'
    """
    level = levels[-1]
    channels, h, w = (int(n) for n in level.shape)
    if channels < 3:
        return f"it has {channels} channel (fluorescence such as DAPI, or grayscale), not the 3 of an RGB H&E image"
    y0, x0 = max(0, (h - _SAMPLE_PX) // 2), max(0, (w - _SAMPLE_PX) // 2)
    window = np.asarray(level[:, y0 : y0 + _SAMPLE_PX, x0 : x0 + _SAMPLE_PX], dtype=np.float64) / white
    window = np.nan_to_num(window, nan=1.0)
    if channels == 4:
        alpha = window[3]
        if np.mean((alpha <= 0.01) | (alpha >= 0.99)) < 0.99:
            return (
                "it has 4 channels and the fourth is not an alpha (opacity) channel: a multi-channel fluorescence image"
            )
    rgb = window[:3]
    kept = rgb.max(0)[rgb.sum(0) > 0]
    dark = float(np.mean(kept < DARK)) if kept.size else 0.0
    if dark > DARK_FRACTION:
        return (
            f"it is a dark-field (fluorescence) image, not brightfield H&E: {dark:.0%} of its pixels are dark (under "
            f"{DARK:.0%} of full intensity)"
        )
    return None


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
    sdata: SpatialData, shapes: Any, shapes_key: str, image_key: str | None, coordinate_system: str | None
) -> tuple[str | None, str]:
    """Key of the image and name of the coordinate system shared by image and spots.

    Without ``image_key``: among images sharing a coordinate system with the spots, RGB images are preferred, then the
    one with the most pixels per spot-coordinate unit (the finest). The coordinate system is chosen by
    :func:`choose_coordinate_system`; only real ambiguity (two equally fine images, or spots that fall on different
    pixels depending on the coordinate system) is refused.
    """
    shapes_cs = coordinate_systems(shapes)
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
        level0 = image_levels(sdata.images[image_key])[0]
        return image_key, choose_coordinate_system(shapes, level0, shared, image_key, shapes_key)
    if not sdata.images:
        return None, native_coordinate_system(shapes, wanted_cs)
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
    systems, density = {}, {}
    for k in pool:
        level0 = image_levels(sdata.images[k])[0]
        systems[k] = choose_coordinate_system(shapes, level0, candidates[k], k, shapes_key)
        density[k] = round(affine_scale(spots_to_pixels(shapes, level0, systems[k])), 9)
    best = max(density.values())
    finest = [k for k in pool if density[k] == best]
    if len(finest) > 1:
        raise ValueError(f"Several images fit the spots equally well {finest}; pass `image_key=` to choose one.")
    return finest[0], systems[finest[0]]


def spots_to_pixels(shapes: Any, level0: Any, coordinate_system: str) -> np.ndarray:
    """3x3 affine from the spots' intrinsic ``(x, y)`` to pixels of image level 0, through ``coordinate_system``."""
    return np.linalg.inv(affine_xy(level0, coordinate_system)) @ affine_xy(shapes, coordinate_system)


def choose_coordinate_system(shapes: Any, level0: Any, systems: set[str], image_key: str, shapes_key: str) -> str:
    """The coordinate system, among ``systems`` (all shared by spots and image), to place the spots on the image.

    Readers often register one slide in several systems (spatialdata-io's Visium reader: ``<id>`` in full-resolution
    pixels and ``<id>_downscaled_hires`` / ``_lowres`` in the pixels of each PNG). When the spots land on the same
    image pixels in all of them, the choice changes nothing, and storm takes the one in which the image is native
    (identity transform), else ``"global"``, else the first by name. When they land on different pixels the slide is
    really ambiguous, and the error asks for ``coordinate_system=``.
    """
    ordered = sorted(systems)
    if len(ordered) == 1:
        return ordered[0]
    maps = {cs: spots_to_pixels(shapes, level0, cs) for cs in ordered}
    first = maps[ordered[0]]
    differ = [cs for cs in ordered[1:] if not np.allclose(maps[cs], first, rtol=1e-6, atol=1e-3)]
    if differ:
        raise ValueError(
            f"Spots {shapes_key!r} fall on different pixels of image {image_key!r} in coordinate systems "
            f"{[ordered[0], *differ]}; pass `coordinate_system=` to say which alignment is right."
        )
    return native_coordinate_system(level0, systems)


def native_coordinate_system(element: Any, systems: set[str]) -> str:
    """Among ``systems``, the one where ``element`` has the identity transform, else ``"global"``, else the first."""
    ordered = sorted(systems)
    native = [cs for cs in ordered if np.allclose(affine_xy(element, cs), np.eye(3))]
    if native:
        return native[0]
    return "global" if "global" in systems else ordered[0]


def affine_scale(affine: np.ndarray) -> float:
    """Linear size factor of a 3x3 affine (square root of the area scale): units of output per unit of input."""
    return float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))
