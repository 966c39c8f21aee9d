"""Bad pixels, coordinates and scales from real workflows: refused or handled correctly.

Refused before any work, with a message naming the argument and the fix, the input left as it was; or handled
correctly: the same tiles whatever the image dtype, the spot pitch of a sparse subset of spots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from spatialdata import SpatialData
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import Identity

import storm as st
from storm.datasets._build import fit_um_per_px, grid_um
from storm.io._scale import grid_pitch

from ._fingerprint import fingerprint

pytestmark = pytest.mark.filterwarnings("ignore:Variable names are not unique")

#: 20 spots on a 40 px square grid inside the 400 x 300 px image of :func:`_slide`.
GRID = [[50.0 + 40 * i, 60.0 + 40 * j] for i in range(5) for j in range(4)]
ONE_UM = {"microns_per_pixel": 1.0}


def _slide(
    xy=GRID, *, pixels=None, scalefactors=ONE_UM, metadata=None, var_names=None, chunks=None, scale_factors=None
) -> SpatialData:
    """A slide: uint8 image of 400 x 300 px (``pixels`` if given), circle spots at ``xy`` (px), a linked table."""
    n = len(xy)
    pixels = np.full((3, 300, 400), 200, dtype=np.uint8) if pixels is None else pixels
    image = Image2DModel.parse(
        pixels,
        dims=("c", "y", "x"),
        chunks=chunks,
        scale_factors=scale_factors,
        transformations={"global": Identity()},
    )
    spots = ShapesModel.parse(
        np.asarray(xy, float), geometry=0, radius=np.full(n, 10.0), transformations={"global": Identity()}
    )
    obs = pd.DataFrame({"region": pd.Categorical(["spots"] * n), "spot_id": np.arange(n)})
    obs.index = [f"s{i}" for i in range(n)]
    table = ad.AnnData(np.ones((n, 2), np.float32), obs=obs)
    if var_names is not None:
        table.var_names = var_names
    if scalefactors is not None or metadata is not None:
        table.uns["spatial"] = {"lib": {"images": {}, "scalefactors": scalefactors or {}, "metadata": metadata or {}}}
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    return SpatialData(images={"he": image}, shapes={"spots": spots}, tables={"table": table})


def _image(dtype, value) -> np.ndarray:
    return np.full((3, 300, 400), value, dtype=dtype)


def _with_spot(xy) -> SpatialData:
    return _slide([*GRID[:-1], xy])


def _st_lattice(pitch: float, nx: int, ny: int, **kwargs) -> SpatialData:
    """Spots of a legacy ST array (200 µm pitch) at ``pitch`` units apart, the image at 2 µm per px."""
    xy = [[30.0 + pitch * i, 30.0 + pitch * j] for i in range(nx) for j in range(ny)]
    return _slide(xy, pixels=np.full((3, 600, 800), 200, np.uint8), metadata={"platform": "st"}, **kwargs)


def _on_st_array(cells) -> SpatialData:
    return _slide([[30.0 + 40 * i, 30.0 + 40 * j] for i, j in cells], scalefactors=None)


def _digest(data: Any) -> Any:
    """Fingerprint of the tables plus a hash of every image level's pixels."""
    if not isinstance(data, SpatialData):
        return fingerprint(data)
    from storm.io._elements import image_levels

    pixels = [np.asarray(lvl.data) for im in data.images.values() for lvl in image_levels(im)]
    return fingerprint(data), [hashlib.sha256(p.tobytes()).hexdigest() for p in pixels]


@dataclass
class Case:
    id: str
    make: Callable[[], Any]  # the user's input, checked unchanged afterwards
    call: Callable[[Any], Any]  # the bad call
    error: type[Exception]
    match: str  # the argument and the fix the message must name


def _tile(**kwargs) -> Callable[[Any], Any]:
    return lambda d: st.pp.tile(d, 16, 16.0, **kwargs)


def _resolve(**kwargs) -> Callable[[Any], Any]:
    return lambda d: st.io.resolve(d, **kwargs)


RANGE_FIX = r"rescale the image to uint8 .*`image_key=`"
CASES = [
    # images: the intensity range is decided once from the image, or the image is refused
    Case(
        "image: boolean", lambda: _slide(pixels=_image(bool, True)), _tile(), ValueError, "boolean.*`image_key=`.*uint8"
    ),
    Case(
        "image: 2 channels",
        lambda: _slide(pixels=np.full((2, 300, 400), 9, np.uint8)),
        _tile(),
        ValueError,
        "2 chan.*`image_key=`",
    ),
    Case(
        "image: negative floats",
        lambda: _slide(pixels=_image(np.float32, -0.5)),
        _tile(),
        ValueError,
        "negative.*" + RANGE_FIX,
    ),
    Case(
        "image: floats above 255",
        lambda: _slide(pixels=_image(np.float32, 1000.0)),
        _tile(),
        ValueError,
        "up to 1000.*" + RANGE_FIX,
    ),
    Case(
        "image: only NaN",
        lambda: _slide(pixels=_image(np.float32, np.nan)),
        _tile(),
        ValueError,
        "only NaN.*`image_key=`.*uint8",
    ),
    Case(
        "image: int64 beyond 16 bits",
        lambda: _slide(pixels=_image(np.int64, 70000)),
        _tile(),
        ValueError,
        "up to 70000.*" + RANGE_FIX,
    ),
    Case(
        "image: negative int16",
        lambda: _slide(pixels=_image(np.int16, -3)),
        _resolve(),
        ValueError,
        "negative.*" + RANGE_FIX,
    ),
    # spot coordinates
    Case(
        "spots: NaN coordinates",
        lambda: _with_spot([np.nan, 10.0]),
        _resolve(),
        ValueError,
        r"1 of 20 spots .* NaN or infinite coordinates, e.g. \['s19'\].*drop those spots from table 'table'",
    ),
    Case(
        "spots: infinite coordinates",
        lambda: _with_spot([np.inf, 10.0]),
        _tile(),
        ValueError,
        r"\['s19'\].*drop those spots",
    ),
    Case(
        "spots: huge coordinates",
        lambda: _with_spot([1e300, 10.0]),
        _resolve(),
        ValueError,
        r"outside image 'he'.*\['s19'\]",
    ),
    Case(
        "spots: all at one position",
        lambda: _slide([[50.0, 50.0]] * 5, scalefactors=None),
        _resolve(platform="st"),
        ValueError,
        "1 distinct position.*at least 8.*`um_per_px=`",
    ),
    Case(
        "spots: on one line",
        lambda: _slide([[50.0 + 30 * i, 50.0] for i in range(8)], scalefactors=None),
        _resolve(platform="visium"),
        ValueError,
        "one line.*`um_per_px=`",
    ),
    Case(
        "spots: one spot, scale from pitch",
        lambda: _slide([[50.0, 50.0]], scalefactors=None),
        _resolve(platform="st"),
        ValueError,
        "`um_per_px=`",
    ),
    Case(
        "spots: not on a lattice",
        lambda: _slide(np.random.default_rng(0).uniform(20, 280, (40, 2)), scalefactors=None),
        _resolve(platform="st"),
        ValueError,
        "do not lie on a square lattice.*`um_per_px=`",
    ),
    Case(
        "spots: few and sparse",
        lambda: _on_st_array([(0, 0), (3, 1), (5, 4), (1, 6), (8, 2), (4, 6), (7, 5), (2, 3), (6, 0)]),
        _resolve(platform="st"),
        ValueError,
        "too sparse.*`um_per_px=`",
    ),
    Case(
        "spots: coordinates in µm, image in px",
        lambda: _st_lattice(200.0, 4, 3, scalefactors={"microns_per_pixel": 2.0}),
        _resolve(),
        ValueError,
        "400 µm, but the spots of platform 'st' are 200 µm apart.*not in pixels.*`um_per_px=`",
    ),
    # scale
    Case("scale: um_per_px as a string", _slide, _resolve(um_per_px="0.5"), TypeError, r"`um_per_px`.*um_per_px=float"),
    Case("scale: um_per_px True", _slide, _tile(um_per_px=True), TypeError, r"`um_per_px`.*um_per_px=float"),
    Case("scale: um_per_px 0", _slide, _resolve(um_per_px=0), ValueError, "`um_per_px` must be a positive number"),
    Case(
        "scale: NaN microns_per_pixel in metadata",
        lambda: _slide(scalefactors={"microns_per_pixel": float("nan")}),
        _tile(),
        ValueError,
        "microns_per_pixel.*not a positive number.*`um_per_px=`",
    ),
    Case(
        "scale: text microns_per_pixel in metadata",
        lambda: _slide(scalefactors={"microns_per_pixel": "0.5um"}),
        _resolve(),
        ValueError,
        "microns_per_pixel.*'0.5um'.*`um_per_px=`",
    ),
    # tiles
    Case(
        "tiles: tile_um 1e6",
        _slide,
        lambda d: st.pp.tile(d, 16, 1e6),
        ValueError,
        r"`tile_um=1e\+06` µm .*400 x 300 µm",
    ),
    Case(
        "tiles: tile window larger than the image",
        _slide,
        lambda d: st.pp.tile(d, 16, 50.0, um_per_px=0.1),
        ValueError,
        r"`tile_um=50` µm .*40 x 30 µm.*`um_per_px=`",
    ),
    Case("tiles: tile_um True", _slide, lambda d: st.pp.tile(d, 16, True), ValueError, "`tile_um`"),
    # table
    Case(
        "table: duplicated var_names",
        lambda: _slide(var_names=["GENE", "GENE"]),
        _tile(),
        ValueError,
        r"duplicated var_names.*\['GENE'\].*var_names_make_unique\(\)",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_and_leaves_input_unchanged(case):
    data = case.make()
    before = _digest(data)
    with pytest.raises(case.error, match=case.match):
        case.call(data)
    assert _digest(data) == before


def test_duplicated_var_names_are_refused_before_any_compute(monkeypatch):
    """The table is checked when it is resolved, before the model is loaded or any tile read."""
    from storm.pp import _reader

    monkeypatch.setattr(_reader.LevelReader, "read_many", lambda *a: pytest.fail("pixels were read"))
    with pytest.raises(ValueError, match="var_names_make_unique"):
        st.tl.embed(_slide(var_names=["GENE", "GENE"]))


# ----------------------------------------------------------------------------------- correct behaviour, any dtype
def _textured(seed: int) -> np.ndarray:
    """uint8 RGB pixels with a chunk of only 0 and 1 values (dark enough to fool a per-chunk range decision)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (3, 300, 400), dtype=np.uint8)
    pixels[:, :100, :100] = pixels[:, :100, :100] % 2
    return pixels


AS_DTYPE = {
    "uint8": lambda v: v,
    "uint16 0-255": lambda v: v.astype(np.uint16),
    "uint16 0-65535": lambda v: v.astype(np.uint16) * 257,
    "int64 0-255": lambda v: v.astype(np.int64),
    "float32 [0, 1]": lambda v: (v / 255).astype(np.float32),
    "float32 [0, 255]": lambda v: v.astype(np.float32),
    "float64 [0, 1]": lambda v: v / 255.0,
    "float16 [0, 1]": lambda v: (v / 255).astype(np.float16),
}


def _tiles(pixels: np.ndarray, tile_um: float, **kwargs) -> np.ndarray:
    ts = st.pp.tile(_slide(pixels=pixels, chunks=(3, 100, 100), **kwargs), 24, tile_um)
    return np.stack([ts[i] for i in range(len(ts))])


@pytest.mark.parametrize("dtype", list(AS_DTYPE))
@pytest.mark.parametrize("budget_mb", [1, 64], ids=["chunk reads", "whole-image reads"])
@pytest.mark.parametrize(("tile_um", "scale_factors"), [(30.0, None), (48.0, [2])], ids=["level 0", "level 1"])
def test_tiles_do_not_depend_on_the_image_dtype(monkeypatch, dtype, budget_mb, tile_um, scale_factors):
    """The same image as uint8, uint16 (8- or 16-bit values), int64, float [0, 1] or [0, 255]: the same tiles (±1)."""
    monkeypatch.setattr(st.settings, "tile_cache_mb", budget_mb)
    seed = 3
    expected = _tiles(_textured(seed), tile_um, scale_factors=scale_factors)
    tiles = _tiles(AS_DTYPE[dtype](_textured(seed)), tile_um, scale_factors=scale_factors)
    difference = np.abs(tiles.astype(int) - expected.astype(int))
    assert difference.max() <= 1
    if dtype != "float16 [0, 1]" and scale_factors is None:
        assert difference.max() == 0


@pytest.mark.parametrize(
    ("dtype", "value", "expected"),
    [
        (np.uint8, 0, 0),
        (np.uint8, 255, 255),
        (np.uint16, 0, 0),
        (np.uint16, 65535, 255),
        (np.float32, 0.0, 0),
        (np.float32, 1.0, 255),
        (np.float32, 255.0, 255),
        (np.int64, 255, 255),
    ],
)
def test_black_and_white_images_tile_as_black_and_white(dtype, value, expected):
    ts = st.pp.tile(_slide(pixels=_image(dtype, value)), 16, 16.0)
    assert (ts[0] == expected).all()


def test_nan_pixels_are_white_background():
    pixels = (_textured(0) / 255).astype(np.float32)
    pixels[:, 150:, :] = np.nan
    ts = st.pp.tile(_slide(pixels=pixels), 16, 16.0)
    assert (ts[3] == 255).all()  # spot (50, 180): inside the NaN half


def test_numpy_scalar_scale_and_tile_sizes_are_accepted():
    ts = st.pp.tile(_slide(), np.int64(16), np.float32(8.0), um_per_px=np.float32(0.5))
    assert ts.um_per_px == 0.5 and ts[0].shape == (16, 16, 3)


def test_one_spot_with_a_known_scale_tiles():
    ts = st.pp.tile(_slide([[200.0, 150.0]]), 16, 16.0)
    assert len(ts) == 1 and (ts[0] == 200).all()


def test_coordinates_in_pixels_agree_with_the_metadata_scale():
    """The control of the 'coordinates in µm' case: 200 µm apart at 2 µm per px is 100 px."""
    slide = st.io.resolve(_st_lattice(100.0, 7, 5, scalefactors={"microns_per_pixel": 2.0}))
    assert slide.um_per_px == 2.0


@pytest.mark.parametrize(
    ("pixels", "white"),
    [
        (np.full((120, 160), 200, np.uint8), None),  # grayscale without a channel axis
        (np.full((120, 160, 3), 200 / 255, np.float32), None),  # scanpy.read_visium: float [0, 1]
        (np.full((120, 160, 3), 200.0, np.float32), None),  # floats in 0-255
    ],
    ids=["2-D grayscale", "float [0, 1]", "float [0, 255]"],
)
def test_squidpy_style_images_of_any_layout_tile_alike(pixels, white):
    adata = ad.AnnData(np.ones((3, 2), np.float32))
    adata.obsm["spatial"] = np.array([[40.0, 40.0], [80.0, 60.0], [120.0, 80.0]])
    adata.uns["spatial"] = {
        "lib": {
            "images": {"hires": pixels},
            "scalefactors": {"tissue_hires_scalef": 1.0, "spot_diameter_fullres": 20.0, "microns_per_pixel": 1.0},
        }
    }
    ts = st.pp.tile(adata, 16, 16.0)
    assert (ts[1] == 200).all()


# ---------------------------------------------------------------------------------------- spot pitch of subsets
def _lattice(kind: str, pitch: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """An ``n`` x ``n`` hexagonal or square lattice, rotated, jittered by 5 % of the pitch and shifted."""
    i, j = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(n)))
    xy = np.column_stack([i + (j % 2) / 2, j * np.sqrt(3) / 2]) if kind == "hex" else np.column_stack([i, j])
    turn = rng.uniform(0, np.pi)
    rotation = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]])
    return (xy @ rotation.T + rng.normal(0, 0.05, xy.shape)) * pitch + rng.uniform(0, 5000, 2)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 1.0])
@pytest.mark.parametrize("kind", ["hex", "square"])
def test_pitch_of_a_subset_of_a_synthetic_lattice(kind, fraction):
    rng = np.random.default_rng(0)
    for pitch in (2.0, 138.0, 290.0):  # Visium HD bins, Visium and legacy ST at their usual pixel sizes
        xy = _lattice(kind, pitch, 60, rng)
        kept = xy[rng.random(len(xy)) < fraction]
        assert grid_pitch(kept, lattice=kind) == pytest.approx(pitch, rel=0.01)


def _real_slides(shared_data_path) -> dict[str, tuple[np.ndarray, float, str]]:
    """Spot centres (px), full-slide pitch (px, from the fit to array coordinates) and lattice of real slides."""
    slides = {}
    spots = pd.read_csv(
        shared_data_path("dlpfc", "HumanPilot", "10X", "151673") / "tissue_positions_list.txt", header=None
    )
    spots = spots[spots[1] == 1]
    xy = spots[[5, 4]].to_numpy(float)
    slides["DLPFC 151673"] = (xy, 100.0 / fit_um_per_px(grid_um("visium", spots[3], spots[2]), xy), "hex")
    for section in ("B4", "C2", "C3"):
        spots = pd.read_csv(shared_data_path("her2st", "data", "ST-spotfiles") / f"{section}_selection.tsv", sep="\t")
        xy = spots[["pixel_x", "pixel_y"]].to_numpy(float)
        slides[f"her2st {section}"] = (xy, 200.0 / fit_um_per_px(grid_um("st", spots["x"], spots["y"]), xy), "square")
    return slides


@pytest.mark.data
@pytest.mark.parametrize("fraction", [0.1, 0.3, 1.0])
def test_pitch_of_real_slides_subsampled(shared_data_path, fraction):
    """Within 3 % of the full-slide pitch, or a refusal naming `um_per_px=` (only when 10 % leave a few dozen spots)."""
    rng = np.random.default_rng(1)
    for name, (xy, full, lattice) in _real_slides(shared_data_path).items():
        for _ in range(5):
            kept = xy[rng.random(len(xy)) < fraction]
            try:
                pitch = grid_pitch(kept, lattice=lattice)
            except ValueError as error:
                assert fraction == 0.1 and "`um_per_px=`" in str(error), (name, len(kept), error)
                continue
            assert pitch == pytest.approx(full, rel=0.03), (name, fraction, len(kept))


@pytest.mark.data
def test_scale_of_a_her2st_subset_from_its_spot_pitch(shared_data_path):
    """End to end: 30 % of C2's spots, without the scale in the metadata, still give C2's 0.69 µm per px."""
    sdata = st.datasets.her2st("C2", path=shared_data_path("her2st"))
    full = st.io.resolve(sdata).um_per_px
    table = sdata.tables["table"]
    subset = table[np.random.default_rng(0).random(table.n_obs) < 0.3].copy()
    del subset.uns["spatial"]["C2"]["scalefactors"]["microns_per_pixel"]
    sdata.tables["table"] = subset
    slide = st.io.resolve(sdata)
    assert slide.um_per_px_source.startswith("platform 'st': spot pitch")
    assert slide.um_per_px == pytest.approx(full, rel=0.03)
