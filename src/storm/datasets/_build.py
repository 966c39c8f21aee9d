"""Pieces shared by the dataset loaders: the spot-pitch fit, lazy H&E pyramids and the SpatialData layout."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from storm._constants import PLATFORMS, SCALEFACTOR_SPOT_DIAMETER, SCALEFACTOR_UM_PER_PX

if TYPE_CHECKING:
    import pandas as pd
    from spatialdata import SpatialData
    from xarray import DataTree

#: Relative downscaling between pyramid levels (levels 1, 2, 3 are 2x, 4x, 8x smaller than level 0).
PYRAMID_SCALE_FACTORS = [2, 2, 2]
IMAGE_KEY = "he"
SHAPES_KEY = "spots"
TABLE_KEY = "table"
REGION_KEY = "region"
INSTANCE_KEY = "spot_id"
COORDINATE_SYSTEM = "global"


def grid_um(platform: str, array_x: np.ndarray, array_y: np.ndarray) -> np.ndarray:
    """Physical positions (µm, ``(n, 2)`` as ``(x, y)``) of spots given their integer array coordinates.

    Legacy ST arrays are a square lattice with one array unit = one pitch. Visium arrays are hexagonal: ``array_col``
    (x) steps by 2 between neighbours of a row (half a pitch per unit) and rows are ``pitch * sqrt(3) / 2`` apart.
    """
    if platform not in ("st", "visium"):
        raise ValueError(f"No array layout known for platform {platform!r}; expected 'st' or 'visium'.")
    pitch = PLATFORMS[platform]["pitch_um"]
    x = np.asarray(array_x, dtype=float)
    y = np.asarray(array_y, dtype=float)
    if platform == "st":
        return np.column_stack([x * pitch, y * pitch])
    return np.column_stack([x * pitch / 2.0, y * pitch * np.sqrt(3.0) / 2.0])


def fit_um_per_px(grid: np.ndarray, xy_px: np.ndarray, *, max_iter: int = 10) -> float:
    """Microns per pixel from a robust affine fit of spot pixel positions to their physical array positions.

    Fits ``xy_px ≈ grid @ A + t`` by least squares, drops spots whose residual exceeds the median by more than three
    scaled MADs (mis-registered spots) and refits until the inlier set is stable. The scale is
    ``1 / sqrt(|det A|)``: it uses the whole lattice, so it is not biased by per-spot jitter the way the median
    nearest-neighbour distance is (the nearest of several jittered neighbours is systematically too close).

    Parameters
    ----------
    grid
        Physical spot positions in µm, ``(n, 2)`` (see :func:`grid_um`).
    xy_px
        Spot centres in pixels, ``(n, 2)`` as ``(x, y)``.
    max_iter
        Maximum number of outlier-rejection rounds.

    Returns
    -------
    Microns per pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from storm.datasets._build import fit_um_per_px, grid_um
    >>> ax, ay = np.meshgrid(np.arange(5), np.arange(4))
    >>> g = grid_um("st", ax.ravel(), ay.ravel())
    >>> round(fit_um_per_px(g, g / 0.7 + 12.0), 6)
    0.7
    """
    grid = np.asarray(grid, dtype=float)
    xy_px = np.asarray(xy_px, dtype=float)
    if grid.shape != xy_px.shape or grid.ndim != 2 or grid.shape[1] != 2:
        raise ValueError(f"`grid` {grid.shape} and `xy_px` {xy_px.shape} must both have shape (n, 2).")
    design = np.column_stack([grid, np.ones(len(grid))])
    if len(grid) < 3 or np.linalg.matrix_rank(design) < 3:
        raise ValueError(
            "Cannot measure the spot pitch: fewer than 3 spots, or all spots on one line of the array. "
            "Pass the scale explicitly (e.g. `storm.io.resolve(..., um_per_px=...)`)."
        )
    keep = np.ones(len(grid), dtype=bool)
    for _ in range(max_iter):
        coef, *_ = np.linalg.lstsq(design[keep], xy_px[keep], rcond=None)
        residual = np.linalg.norm(design @ coef - xy_px, axis=1)
        centre = np.median(residual[keep])
        mad = 1.4826 * np.median(np.abs(residual[keep] - centre))
        new_keep = residual <= centre + 3.0 * mad + 1e-6 * (1.0 + centre)
        if new_keep.sum() < 3 or np.linalg.matrix_rank(design[new_keep]) < 3 or (new_keep == keep).all():
            break
        keep = new_keep
    det = abs(float(np.linalg.det(coef[:2])))
    if not np.isfinite(det) or det <= 0:
        raise ValueError("The spot positions do not span the array (degenerate fit); pass the scale explicitly.")
    return 1.0 / float(np.sqrt(det))


_PIL_LOCK = threading.Lock()
_PIL_USERS = 0
_PIL_SAVED: Any = None


@contextmanager
def unlimited_pixels() -> Iterator[None]:
    """Lift PIL's decompression-bomb limit while reading the (trusted, ~100 Mpx) whole-slide JPEGs; thread-safe."""
    from PIL import Image

    global _PIL_USERS, _PIL_SAVED
    with _PIL_LOCK:
        if _PIL_USERS == 0:
            _PIL_SAVED = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _PIL_USERS += 1
    try:
        yield
    finally:
        with _PIL_LOCK:
            _PIL_USERS -= 1
            if _PIL_USERS == 0:
                Image.MAX_IMAGE_PIXELS = _PIL_SAVED


def image_size(path: Path) -> tuple[int, int]:
    """``(height, width)`` of an image file, read from its header only."""
    from PIL import Image

    with unlimited_pixels(), Image.open(path) as im:
        return int(im.size[1]), int(im.size[0])


def decode_level(path: str, shape_yx: tuple[int, int], factor: int) -> np.ndarray:
    """RGB uint8 pixels ``(3, h, w)`` of ``path`` downscaled ``factor`` times (``shape_yx`` = ``(h, w)``).

    Pixel ``i`` of the result averages full-resolution pixels ``[i * factor, (i + 1) * factor)``, matching
    :class:`spatialdata.models.Image2DModel`'s pyramid (coarsening with trimmed borders). JPEGs are downscaled while
    decoding (DCT scaling, :meth:`PIL.Image.Image.draft`), so a coarse level costs a fraction of a full decode.
    """
    from PIL import Image

    h, w = shape_yx
    with unlimited_pixels(), Image.open(path) as im:
        full_w = im.size[0]
        if factor > 1:
            im.draft("RGB", (w, h))
        rgb = im.convert("RGB")
    if rgb.size != (w, h):
        decoded = 2.0 ** round(np.log2(full_w / rgb.size[0]))  # full-resolution px per decoded px
        if decoded == factor and rgb.size[0] >= w and rgb.size[1] >= h:
            rgb = rgb.crop((0, 0, w, h))
        else:
            box = (0.0, 0.0, w * factor / decoded, h * factor / decoded)
            rgb = rgb.resize((w, h), Image.Resampling.BOX, box=box)
    return np.moveaxis(np.asarray(rgb), -1, 0)


def image_from_file(path: Path, *, px_to_global: float = 1.0) -> DataTree:
    """Lazy multiscale RGB image of a JPEG/PNG: each level is one chunk, decoded once per compute of that level.

    Parameters
    ----------
    path
        Image file.
    px_to_global
        Size of one image pixel in the ``"global"`` frame (full-resolution pixels); 1 for the full-resolution image.
    """
    import dask
    import dask.array as da

    h, w = image_size(path)

    def lazy(shape_yx: tuple[int, int], factor: int) -> da.Array:
        pixels = dask.delayed(decode_level, pure=True)(str(path), shape_yx, factor)
        return da.from_delayed(pixels, shape=(3, *shape_yx), dtype=np.uint8)

    tree = _parse_image(lazy((h, w), 1), px_to_global)
    for level, name in enumerate(_scale_names(tree)):
        if level == 0:
            continue
        node = tree[name]
        old = next(iter(node.dataset.data_vars.values()))
        new = lazy((old.sizes["y"], old.sizes["x"]), 2**level)
        tree[name] = node.dataset.assign({old.name: old.copy(data=new)})
    return tree


def image_from_array(pixels: np.ndarray, *, px_to_global: float = 1.0) -> DataTree:
    """Multiscale RGB image of an in-memory ``(h, w, c)`` array (small images such as Visium's lowres PNG)."""
    import dask.array as da

    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = np.repeat(pixels[..., None], 3, axis=2)
    if pixels.dtype != np.uint8:
        scale = 255.0 if pixels.dtype.kind == "f" and float(np.nanmax(pixels)) <= 1.0 else 1.0
        pixels = np.clip(np.rint(pixels * scale), 0, 255).astype(np.uint8)
    pixels = pixels[..., :3]
    return _parse_image(da.from_array(np.ascontiguousarray(np.moveaxis(pixels, -1, 0)), chunks=-1), px_to_global)


def _parse_image(level0: Any, px_to_global: float) -> DataTree:
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity, Scale

    transform = Identity() if px_to_global == 1.0 else Scale([px_to_global, px_to_global], axes=("y", "x"))
    return Image2DModel.parse(
        level0,
        dims=("c", "y", "x"),
        c_coords=["r", "g", "b"],
        scale_factors=PYRAMID_SCALE_FACTORS,
        chunks=tuple(level0.shape),
        transformations={COORDINATE_SYSTEM: transform},
    )


def _scale_names(tree: Any) -> list[str]:
    return sorted(tree.children, key=lambda k: int("".join(ch for ch in k if ch.isdigit()) or 0))


def build_sdata(
    *,
    counts: Any,
    obs: pd.DataFrame,
    var: pd.DataFrame,
    xy_px: np.ndarray,
    platform: str,
    um_per_px: float,
    library_id: str,
    metadata: dict[str, Any],
    image: DataTree | None,
    extra_scalefactors: dict[str, float] | None = None,
) -> SpatialData:
    """Assemble the storm dataset layout.

    Image ``"he"`` (registered in ``"global"`` = full-resolution pixels), circles ``"spots"`` of the platform's true
    spot diameter, table ``"table"`` annotating them, with Space Ranger-style ``uns["spatial"][library_id]``.

    Parameters
    ----------
    counts
        Raw counts, spots x genes (dense or sparse); stored as float32 CSR.
    obs, var
        Spot and gene annotations (``obs`` index = unique spot names).
    xy_px
        Spot centres ``(x, y)`` in full-resolution pixels.
    platform
        ``"st"`` or ``"visium"`` (see ``storm._constants.PLATFORMS``).
    um_per_px
        Microns per full-resolution pixel.
    library_id
        Key in ``uns["spatial"]``.
    metadata
        ``uns["spatial"][library_id]["metadata"]`` (``platform`` is added).
    image
        H&E pyramid from :func:`image_from_file` / :func:`image_from_array`, or ``None``.
    extra_scalefactors
        More entries for ``scalefactors`` (e.g. Space Ranger's ``tissue_lowres_scalef``).
    """
    import pandas as pd
    from anndata import AnnData
    from scipy import sparse
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    n = len(obs)
    xy_px = np.asarray(xy_px, dtype=float)
    spot_diameter_px = PLATFORMS[platform]["spot_um"] / um_per_px
    spots = ShapesModel.parse(
        xy_px,
        geometry=0,
        radius=np.full(n, spot_diameter_px / 2.0),
        index=pd.Index(np.arange(n)),
        transformations={COORDINATE_SYSTEM: Identity()},
    )
    obs = obs.copy()
    obs[REGION_KEY] = pd.Categorical([SHAPES_KEY] * n)
    obs[INSTANCE_KEY] = np.arange(n)
    table = AnnData(X=sparse.csr_matrix(counts, dtype=np.float32), obs=obs, var=var)
    table.obsm["spatial"] = xy_px
    scalefactors = {SCALEFACTOR_UM_PER_PX: float(um_per_px), SCALEFACTOR_SPOT_DIAMETER: float(spot_diameter_px)}
    scalefactors.update(extra_scalefactors or {})
    table.uns["spatial"] = {
        library_id: {"images": {}, "scalefactors": scalefactors, "metadata": {"platform": platform, **metadata}}
    }
    table = TableModel.parse(table, region=SHAPES_KEY, region_key=REGION_KEY, instance_key=INSTANCE_KEY)
    images = {IMAGE_KEY: image} if image is not None else {}
    return SpatialData(images=images, shapes={SHAPES_KEY: spots}, tables={TABLE_KEY: table})


def categorical(values: pd.Series, order: list[str] | None = None) -> pd.Categorical:
    """Categorical of strings, categories in ``order`` (those present) or sorted (numbers numerically)."""
    import pandas as pd

    present = [str(v) for v in pd.unique(values.dropna())]
    if order is not None:
        categories = [c for c in order if c in present] + sorted(c for c in present if c not in order)
    else:
        categories = sorted(present, key=lambda c: (0, float(c), c) if _is_number(c) else (1, 0.0, c))
    return pd.Categorical(values.map(lambda v: str(v) if pd.notna(v) else v), categories=categories)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def unique_names(names: pd.Index) -> pd.Index:
    """``names`` with repeats suffixed ``-1``, ``-2``, ... (like ``AnnData.var_names_make_unique``)."""
    import pandas as pd

    names = pd.Index(names.astype(str))
    if names.is_unique:
        return names
    taken = set(names)
    counts: dict[str, int] = {}
    out = []
    for name in names:
        if name not in counts:
            counts[name] = 0
            out.append(name)
            continue
        n = counts[name]
        while True:
            n += 1
            candidate = f"{name}-{n}"
            if candidate not in taken:
                break
        counts[name] = n
        taken.add(candidate)
        out.append(candidate)
    return pd.Index(out)
