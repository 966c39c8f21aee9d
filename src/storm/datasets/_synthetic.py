"""A synthetic slide of any size, generated lazily, for tests, benchmarks and memory checks."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

import numpy as np

from .._frame import previous_names

if TYPE_CHECKING:
    from spatialdata import SpatialData


@previous_names
def synthetic(
    height_px: int = 2048,
    width_px: int = 2048,
    *,
    n_spots: int | None = None,
    pitch_um: float = 100.0,
    spot_um: float = 55.0,
    um_per_px: float = 0.5,
    n_genes: int = 50,
    chunk_px: int = 1024,
    channels: int = 3,
    dtype: str = "uint8",
    random_state: int = 0,
) -> SpatialData:
    """A slide whose pixels are computed on demand, so a 40k x 40k image costs no memory until read.

    Pixel ``(y, x)`` of channel ``c`` is a deterministic function of its position (smooth H&E-like stripes plus a
    hashed texture), so any crop can be recomputed independently with ``storm.datasets._synthetic.synthetic_pixels``. Spots lie on a
    hexagonal grid of ``pitch_um`` (or a random subset of ``n_spots`` of it, in table order) with Poisson counts whose
    mean follows the stain intensity, so image and expression are related.

    Parameters
    ----------
    height_px, width_px
        Image size in pixels.
    n_spots
        Keep this many grid spots (chosen at random); all by default.
    pitch_um, spot_um
        Spot centre-to-centre distance and spot diameter in µm.
    um_per_px
        Microns per pixel, recorded as ``microns_per_pixel`` metadata.
    n_genes
        Genes in the count table (0 for an H&E-only slide).
    chunk_px
        Chunk size of the dask image.
    channels, dtype
        1, 3 or 4 channels of ``uint8``, ``uint16`` or ``float32`` (to exercise conversions).
    random_state
        Seed for spot subsetting and counts.

    Returns
    -------
    SpatialData with image ``"he"``, circles ``"spots"`` and table ``"table"`` in coordinate system ``"global"``
    (level-0 pixels).

    Examples
    --------
    >>> import storm as st
    >>> sdata = st.datasets.synthetic(4096, 4096, um_per_px=0.5)
    >>> sdata.tables["table"].n_obs > 0
    True
    """
    import anndata as ad
    import dask.array as da
    import pandas as pd
    from scipy import sparse
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity

    if channels not in (1, 3, 4):
        raise ValueError(f"`channels` must be 1, 3 or 4, got {channels!r}.")
    if dtype not in ("uint8", "uint16", "float32"):
        raise ValueError(f"`dtype` must be 'uint8', 'uint16' or 'float32', got {dtype!r}.")
    rng = np.random.default_rng(random_state)

    chunks = ((channels,), _split(height_px, chunk_px), _split(width_px, chunk_px))
    pixels = da.map_blocks(partial(_block, channels=channels, dtype=dtype), chunks=chunks, dtype=dtype)
    image = Image2DModel.parse(pixels, dims=("c", "y", "x"), transformations={"global": Identity()})

    pitch_px = pitch_um / um_per_px
    rows = np.arange(pitch_px / 2, height_px, pitch_px * np.sqrt(3) / 2)
    xy = np.array(
        [
            (x, y)
            for r, y in enumerate(rows)
            for x in np.arange(pitch_px / 2 + (r % 2) * pitch_px / 2, width_px, pitch_px)
        ]
    ).reshape(-1, 2)
    if n_spots is not None:
        if n_spots > len(xy):
            raise ValueError(f"`n_spots={n_spots}` exceeds the {len(xy)} grid spots that fit; enlarge the image.")
        xy = xy[np.sort(rng.choice(len(xy), n_spots, replace=False))]
    n = len(xy)
    spots = ShapesModel.parse(
        xy,
        geometry=0,
        radius=np.full(n, spot_um / um_per_px / 2),
        index=np.arange(n),
        transformations={"global": Identity()},
    )
    stain = 0.5 + 0.5 * np.sin(xy[:, 0] / 700.0) * np.cos(xy[:, 1] / 900.0)
    means = np.outer(stain, np.linspace(0.5, 20.0, n_genes)) if n_genes else np.zeros((n, 0))
    counts = sparse.csr_matrix(rng.poisson(means).astype(np.float32))
    obs = pd.DataFrame(
        {"region": pd.Categorical(["spots"] * n), "spot_id": np.arange(n)},
        index=[f"spot_{i}" for i in range(n)],
    )
    table = ad.AnnData(counts, obs=obs, var=pd.DataFrame(index=[f"GENE{i}" for i in range(n_genes)]))
    table.uns["spatial"] = {
        "synthetic": {
            "images": {},
            "scalefactors": {"microns_per_pixel": um_per_px, "spot_diameter_fullres": spot_um / um_per_px},
            "metadata": {"platform": "synthetic"},
        }
    }
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    return SpatialData(images={"he": image}, shapes={"spots": spots}, tables={"table": table})


def synthetic_pixels(y0: int, y1: int, x0: int, x1: int, *, channels: int = 3, dtype: str = "uint8") -> np.ndarray:
    """The pixels ``[y0:y1, x0:x1]`` of :func:`synthetic`'s image, ``(c, y, x)``, computed independently of dask.

    Examples
    --------
    >>> synthetic_pixels(0, 2, 0, 3).shape
    (3, 2, 3)
    """
    yy = np.arange(y0, y1, dtype=np.int64)[:, None]
    xx = np.arange(x0, x1, dtype=np.int64)[None, :]
    texture = (((xx * 73856093) ^ (yy * 19349663)) % 61).astype(np.float32)
    base = (0.5 + 0.5 * np.sin(xx / 97.0) * np.cos(yy / 131.0)).astype(np.float32)
    rgb = np.empty((3, y1 - y0, x1 - x0), dtype=np.uint8)
    rgb[0] = np.clip(170 + 60 * base + texture * 0.4, 0, 255)
    rgb[1] = np.clip(90 + 80 * (1 - base) + texture * 0.3, 0, 255)
    rgb[2] = np.clip(150 + 70 * base - texture * 0.2, 0, 255)
    if channels == 1:
        rgb = rgb.mean(axis=0, keepdims=True, dtype=np.float32).astype(np.uint8)
    elif channels == 4:
        rgb = np.concatenate([rgb, np.full((1, *rgb.shape[1:]), 255, np.uint8)])
    if dtype == "uint8":
        return rgb
    if dtype == "uint16":
        return rgb.astype(np.uint16) * 257
    return (rgb / np.float32(255.0)).astype(np.float32)


def _block(block_info=None, *, channels: int, dtype: str) -> np.ndarray:
    (c0, c1), (y0, y1), (x0, x1) = block_info[None]["array-location"]
    return synthetic_pixels(y0, y1, x0, x1, channels=channels, dtype=dtype)[c0:c1]


def _split(total: int, size: int) -> tuple[int, ...]:
    return tuple([size] * (total // size) + ([total % size] if total % size else []))
