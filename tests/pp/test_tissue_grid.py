import os
from pathlib import Path

import numpy as np
import pytest

import storm as st

PINK = (200, 120, 180)  # H&E-like pink/purple, HSV saturation 0.4
SIZE, CENTRE, RADIUS = 2000, (1000.0, 1000.0), 700.0  # pixels
HER2ST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "her2st"


def disc_pixels(size=SIZE, centre=CENTRE, radius=RADIUS, colour=PINK, background=255, texture=0):
    """(3, y, x) uint8 white (or black) slide with one disc of 'tissue'; optional nuclei-like noise inside it."""
    yy, xx = np.mgrid[:size, :size]
    inside = (xx + 0.5 - centre[0]) ** 2 + (yy + 0.5 - centre[1]) ** 2 < radius**2
    pixels = np.full((3, size, size), background, dtype=np.uint8)
    body = np.array(colour, dtype=float)[:, None] * np.ones(int(inside.sum()))
    if texture:
        body *= 1 - texture * np.random.default_rng(0).random(body.shape[1])
    pixels[:, inside] = np.clip(body, 0, 255).astype(np.uint8)
    return pixels


def make_sdata(pixels=None, *, dims=("c", "y", "x"), transformations=None, scale_factors=None, key="he"):
    import spatialdata as sd
    from spatialdata.models import Image2DModel

    pixels = disc_pixels() if pixels is None else pixels
    image = Image2DModel.parse(pixels, dims=dims, transformations=transformations, scale_factors=scale_factors)
    return sd.SpatialData(images={key: image})


def centres(sdata, key="tissue_grid_spots"):
    shapes = sdata.shapes[key]
    return np.column_stack([shapes.geometry.x.to_numpy(), shapes.geometry.y.to_numpy()])


def expected_count(radius_px, pitch_px, grid="hex"):
    cell = pitch_px**2 * (np.sqrt(3) / 2 if grid == "hex" else 1.0)
    return np.pi * radius_px**2 / cell


def snapshot(sdata):
    return {kind: sorted(getattr(sdata, kind)) for kind in ("images", "labels", "points", "shapes", "tables")}


@pytest.mark.parametrize("grid", ["hex", "square"])
def test_disc_count_and_positions(grid):
    sdata = make_sdata()
    assert st.pp.tissue_grid(sdata, um_per_px=1.0, grid=grid) is None
    table = sdata.tables["tissue_grid"]
    xy = centres(sdata)
    expected = expected_count(RADIUS, 100.0, grid)  # 177.7 (hex), 153.9 (square)
    assert abs(len(xy) - expected) / expected < 0.1, (len(xy), expected)
    dist = np.hypot(xy[:, 0] - CENTRE[0], xy[:, 1] - CENTRE[1])
    assert dist.max() <= RADIUS, dist.max()  # every kept centre is inside the disc
    assert table.n_obs == len(xy) and table.n_vars == 0
    assert list(table.obs_names[:2]) == ["grid_0", "grid_1"]
    assert (table.obs["in_tissue"] == 1).all()
    assert (table.obs["tissue_fraction"] >= 0.5).all() and (table.obs["tissue_fraction"] <= 1).all()
    # disks well inside the disc are fully tissue, those on the border partly
    deep = dist < RADIUS - 50
    assert np.allclose(table.obs["tissue_fraction"].to_numpy()[deep], 1.0)
    assert (table.obs["tissue_fraction"].to_numpy()[dist > RADIUS - 20] < 1).all()
    np.testing.assert_allclose(sdata.shapes["tissue_grid_spots"]["radius"], 27.5)


def test_grid_spacing_and_array_coordinates():
    from scipy.spatial import cKDTree

    pitch = 50.0  # µm, at 1 µm/px: 50 px
    for grid, row_step in [("hex", pitch * np.sqrt(3) / 2), ("square", pitch)]:
        sdata = make_sdata()
        st.pp.tissue_grid(sdata, um_per_px=1.0, grid=grid, pitch_um=pitch)
        xy = centres(sdata)
        dist, _ = cKDTree(xy).query(xy, k=2)
        np.testing.assert_allclose(dist[:, 1], pitch, atol=1e-6)
        rows = np.unique(np.round(xy[:, 1], 6))
        np.testing.assert_allclose(np.diff(rows), row_step, atol=1e-6)
        obs = sdata.tables["tissue_grid"].obs
        # array coordinates reproduce the geometry: x = x0 + col * pitch (hex: col doubled), y = y0 + row * row step
        col_px = pitch / 2 if grid == "hex" else pitch
        np.testing.assert_allclose(np.ptp(xy[:, 0] - obs["array_col"].to_numpy() * col_px), 0, atol=1e-6)
        np.testing.assert_allclose(np.ptp(xy[:, 1] - obs["array_row"].to_numpy() * row_step), 0, atol=1e-6)
        if grid == "hex":
            assert ((obs["array_row"] % 2) == (obs["array_col"] % 2)).all()  # Visium parity


def test_pitch_in_pixels_follows_um_per_px():
    from scipy.spatial import cKDTree

    sdata = make_sdata()
    st.pp.tissue_grid(sdata, um_per_px=0.5, pitch_um=100.0, spot_um=55.0)
    xy = centres(sdata)
    dist, _ = cKDTree(xy).query(xy, k=2)
    np.testing.assert_allclose(dist[:, 1], 200.0, atol=1e-6)
    np.testing.assert_allclose(sdata.shapes["tissue_grid_spots"]["radius"], 55.0)
    expected = expected_count(RADIUS, 200.0)  # 44.4
    assert abs(len(xy) - expected) / expected < 0.1


def test_resolves_with_scale_and_spot_size():
    sdata = make_sdata()
    st.pp.tissue_grid(sdata, um_per_px=0.8, spot_um=55.0, pitch_um=100.0)
    slide = st.io.resolve(sdata, table_key="tissue_grid")
    assert slide.um_per_px == pytest.approx(0.8)
    np.testing.assert_allclose(slide.spot_diameter_um, 55.0)
    assert slide.keys["image_key"] == "he" and slide.keys["shapes_key"] == "tissue_grid_spots"
    np.testing.assert_allclose(slide.spot_xy_px, centres(sdata))
    table = sdata.tables["tissue_grid"]
    lib = table.uns["spatial"]["tissue_grid"]
    assert lib["scalefactors"] == {"microns_per_pixel": 0.8, "spot_diameter_fullres": pytest.approx(55.0 / 0.8)}
    assert lib["metadata"]["platform"] == "tissue_grid" and lib["metadata"]["pitch_um"] == 100.0
    params = table.uns["storm"]["tissue_grid"]
    assert params["n_spots"] == table.n_obs and params["um_per_px"] == 0.8 and params["grid"] == "hex"
    assert params["image_key"] == "he" and params["coordinate_system"] == "global"


def test_missing_um_per_px_raises_and_leaves_sdata_unchanged():
    sdata = make_sdata()
    before = snapshot(sdata)
    with pytest.raises(ValueError, match="um_per_px"):
        st.pp.tissue_grid(sdata)
    assert snapshot(sdata) == before


def test_um_per_px_from_table_metadata_in_image_frame():
    """A table's microns_per_pixel is µm per unit of its spots; convert through both transformations."""
    from anndata import AnnData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity, Scale

    # image pixel = 2 global units; spots in global units; 0.25 µm per global unit -> 0.5 µm per image pixel
    sdata = make_sdata(transformations={"global": Scale([2.0, 2.0], axes=("y", "x"))})
    sdata.shapes["spots"] = ShapesModel.parse(
        np.array([[100.0, 100.0], [300.0, 100.0]]),
        geometry=0,
        radius=np.ones(2),
        transformations={"global": Identity()},
    )
    adata = AnnData(obs={"region": ["spots", "spots"], "spot_id": [0, 1]})
    adata.obs["region"] = adata.obs["region"].astype("category")
    adata.uns["spatial"] = {"lib": {"scalefactors": {"microns_per_pixel": 0.25}}}
    sdata.tables["table"] = TableModel.parse(adata, region="spots", region_key="region", instance_key="spot_id")
    st.pp.tissue_grid(sdata)
    params = sdata.tables["tissue_grid"].uns["storm"]["tissue_grid"]
    assert params["um_per_px"] == pytest.approx(0.5)
    assert "table 'table'" in params["um_per_px_source"]
    np.testing.assert_allclose(sdata.shapes["tissue_grid_spots"]["radius"], 55.0)  # 27.5 µm / 0.5 µm/px
    # the argument wins over metadata
    st.pp.tissue_grid(sdata, um_per_px=1.0, overwrite=True)
    assert sdata.tables["tissue_grid"].uns["storm"]["tissue_grid"]["um_per_px"] == 1.0


def test_blank_image_raises_and_leaves_sdata_unchanged():
    sdata = make_sdata(np.full((3, 600, 600), 255, dtype=np.uint8))
    before = snapshot(sdata)
    with pytest.raises(ValueError, match="No tissue was found.*um_per_px"):
        st.pp.tissue_grid(sdata, um_per_px=1.0)
    assert snapshot(sdata) == before
    noisy = np.clip(245 + np.random.default_rng(0).normal(0, 3, (3, 600, 600)), 0, 255).astype(np.uint8)
    with pytest.raises(ValueError, match="No tissue"):
        st.pp.tissue_grid(make_sdata(noisy), um_per_px=1.0)


def test_existing_key_needs_overwrite():
    sdata = make_sdata()
    st.pp.tissue_grid(sdata, um_per_px=1.0)
    table = sdata.tables["tissue_grid"]
    with pytest.raises(ValueError, match="overwrite=True"):
        st.pp.tissue_grid(sdata, um_per_px=1.0, pitch_um=200.0)
    assert sdata.tables["tissue_grid"] is table
    st.pp.tissue_grid(sdata, um_per_px=1.0, pitch_um=200.0, overwrite=True)
    n = sdata.tables["tissue_grid"].n_obs
    assert abs(n - expected_count(RADIUS, 200.0)) / expected_count(RADIUS, 200.0) < 0.15
    assert len(sdata.shapes["tissue_grid_spots"]) == n
    # a second grid under another key sits next to the first
    st.pp.tissue_grid(sdata, um_per_px=1.0, key_added="grid2", grid="square")
    assert {"tissue_grid", "grid2"} <= set(sdata.tables) and "grid2_spots" in sdata.shapes
    # a name held by another element type is never overwritten
    with pytest.raises(ValueError, match="clashes"):
        st.pp.tissue_grid(sdata, um_per_px=1.0, key_added="he", overwrite=True)


@pytest.mark.parametrize(
    "kind", ["rgba", "uint16", "grayscale", "float32", "float32_255", "black_background", "textured"]
)
def test_pixel_formats(kind):
    rgb = disc_pixels()
    if kind == "rgba":
        pixels = np.concatenate([rgb, np.full((1, SIZE, SIZE), 255, np.uint8)])
    elif kind == "uint16":
        pixels = rgb.astype(np.uint16) * 257
    elif kind == "grayscale":
        pixels = np.round(rgb.astype(float).T @ [0.299, 0.587, 0.114]).T[None].astype(np.uint8)
    elif kind == "float32":
        pixels = rgb.astype(np.float32) / 255
    elif kind == "float32_255":  # the same values as the uint8 image, stored as floats
        pixels = rgb.astype(np.float32)
    elif kind == "black_background":  # her2st display images: tissue masked out on black
        pixels = disc_pixels(background=0)
    else:
        pixels = disc_pixels(texture=0.5)
    sdata = make_sdata(pixels)
    st.pp.tissue_grid(sdata, um_per_px=1.0)
    xy = centres(sdata)
    expected = expected_count(RADIUS, 100.0)
    assert abs(len(xy) - expected) / expected < 0.1, (kind, len(xy))
    assert np.hypot(xy[:, 0] - CENTRE[0], xy[:, 1] - CENTRE[1]).max() <= RADIUS


def test_float_image_above_8_bit_range_raises():
    sdata = make_sdata(disc_pixels().astype(np.float32) * 4)
    with pytest.raises(ValueError, match=r"above 255|rescale the image to uint8"):
        st.pp.tissue_grid(sdata, um_per_px=1.0)


def test_transformations_copied_and_pyramid_used():
    from spatialdata.transformations import Identity, Scale, Sequence, Translation, get_transformation

    to_global = Sequence([Scale([0.5, 0.5], axes=("y", "x")), Translation([10.0, 20.0], axes=("y", "x"))])
    sdata = make_sdata(transformations={"global": to_global, "aligned": Identity()}, scale_factors=[2, 2, 2])
    st.pp.tissue_grid(sdata, um_per_px=1.0)
    shapes = sdata.shapes["tissue_grid_spots"]
    assert set(get_transformation(shapes, get_all=True)) == {"global", "aligned"}
    params = sdata.tables["tissue_grid"].uns["storm"]["tissue_grid"]
    assert params["detection_level"] == 3 and params["detection_um_per_px"] == pytest.approx(8.0)
    # same spots as without the pyramid, in level-0 pixels
    flat = make_sdata()
    st.pp.tissue_grid(flat, um_per_px=1.0)
    np.testing.assert_allclose(centres(sdata), centres(flat))
    # in "global" the spots land where the image puts the disc
    matrix = get_transformation(shapes, to_coordinate_system="global").to_affine_matrix(("x", "y"), ("x", "y"))
    xy_global = centres(sdata) @ matrix[:2, :2].T + matrix[:2, 2]
    centre_global = np.array(CENTRE) * 0.5 + [20.0, 10.0]
    assert np.hypot(*(xy_global - centre_global).T).max() <= RADIUS * 0.5


def test_image_choice():
    import spatialdata as sd
    from spatialdata.models import Image2DModel

    he = Image2DModel.parse(disc_pixels(), dims=("c", "y", "x"))
    dapi = Image2DModel.parse(np.zeros((1, 300, 300), np.uint8), dims=("c", "y", "x"))
    sdata = sd.SpatialData(images={"he": he, "dapi": dapi})
    st.pp.tissue_grid(sdata, um_per_px=1.0)
    assert sdata.tables["tissue_grid"].uns["storm"]["tissue_grid"]["image_key"] == "he"
    sdata = sd.SpatialData(images={"he": he, "he2": Image2DModel.parse(disc_pixels(), dims=("c", "y", "x"))})
    with pytest.raises(ValueError, match="image_key="):
        st.pp.tissue_grid(sdata, um_per_px=1.0)
    with pytest.raises(KeyError, match="nope"):
        st.pp.tissue_grid(sdata, um_per_px=1.0, image_key="nope")
    st.pp.tissue_grid(sdata, um_per_px=1.0, image_key="he2")
    with pytest.raises(ValueError, match="no image"):
        st.pp.tissue_grid(sd.SpatialData(), um_per_px=1.0)


def test_copy_and_type_errors():
    sdata = make_sdata()
    out = st.pp.tissue_grid(sdata, um_per_px=1.0, copy=True)
    assert "tissue_grid" in out.tables and "tissue_grid" not in sdata.tables
    with pytest.raises(TypeError, match="SpatialData"):
        st.pp.tissue_grid(sdata.images["he"], um_per_px=1.0)
    for kwargs, name in [
        ({"grid": "triangle"}, "grid"),
        ({"min_tissue_fraction": 1.5}, "min_tissue_fraction"),
        ({"spot_um": -1}, "spot_um"),
        ({"pitch_um": 0}, "pitch_um"),
        ({"um_per_px": float("nan")}, "um_per_px"),
        ({"key_added": ""}, "key_added"),
        ({"coordinate_system": "nope"}, "coordinate_system"),
    ]:
        with pytest.raises(ValueError, match=name):
            st.pp.tissue_grid(sdata, **{"um_per_px": 1.0, **kwargs})
    assert snapshot(sdata)["tables"] == []


def test_min_tissue_fraction_zero_keeps_whole_grid():
    sdata = make_sdata(disc_pixels(size=500, centre=(250, 250), radius=150))
    st.pp.tissue_grid(sdata, um_per_px=1.0, min_tissue_fraction=0.0, grid="square")
    assert sdata.tables["tissue_grid"].n_obs == 25  # 5 x 5 points at 100 px on a 500 px image


@pytest.mark.filterwarnings("ignore:zarr v3 autosharding:UserWarning")
def test_written_slide_round_trips_through_zarr(tmp_path):
    import spatialdata as sd

    sdata = make_sdata(disc_pixels(size=800, centre=(400, 400), radius=300))
    st.pp.tissue_grid(sdata, um_per_px=1.0)
    sdata.write(tmp_path / "slide.zarr")
    back = sd.read_zarr(tmp_path / "slide.zarr")
    table = back.tables["tissue_grid"]
    assert table.n_obs == sdata.tables["tissue_grid"].n_obs
    assert table.uns["spatial"]["tissue_grid"]["scalefactors"]["microns_per_pixel"] == 1.0
    assert st.io.resolve(back, table_key="tissue_grid").um_per_px == 1.0


def _her2st_or_skip():
    if not HER2ST.is_dir():
        if os.environ.get("STORM_REQUIRE_DATA") == "1":
            pytest.fail(f"{HER2ST} is missing and STORM_REQUIRE_DATA=1")
        pytest.skip(f"real data not found at {HER2ST}")
    return HER2ST


def _pil_sdata(path):
    import spatialdata as sd
    from PIL import Image
    from spatialdata.models import Image2DModel

    Image.MAX_IMAGE_PIXELS = None
    pixels = np.asarray(Image.open(path).convert("RGB"))
    image = Image2DModel.parse(np.moveaxis(pixels, -1, 0), dims=("c", "y", "x"), chunks=(3, 2048, 2048))
    return sd.SpatialData(images={"he": image})


def _near_fraction(real_xy, grid_xy, within_px):
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(grid_xy).query(real_xy)
    return float((dist <= within_px).mean())


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize(
    ("section", "image", "um_per_px", "scale"),
    [
        # full-resolution JPEG; spot pixel_x/pixel_y are in its frame (~0.73 µm/px from the 200 µm ST pitch)
        ("C2", "data/ST-imgs/C/C2/5714_HE_BT_C2.jpg", 0.737, 1.0),
        # 2000-px display PNG, black background, spot coordinates scaled by 2000/6954
        ("A1", "app/www/imgs/A1_HE_image_dark.png", 3.437, 0.287604),
    ],
)
def test_her2st_real_spots_lie_on_the_grid(section, image, um_per_px, scale):
    import pandas as pd

    root = _her2st_or_skip()
    sdata = _pil_sdata(root / image)
    st.pp.tissue_grid(sdata, um_per_px=um_per_px)
    grid_xy = centres(sdata)
    spots = pd.read_csv(root / f"data/ST-spotfiles/{section}_selection.tsv", sep="\t")
    real_xy = spots[["pixel_x", "pixel_y"]].to_numpy() * scale
    pitch_px = 100.0 / um_per_px
    recall = _near_fraction(real_xy, grid_xy, pitch_px)
    assert recall > 0.9, recall
    # and the grid stays on the tissue that the ST array covered: most pseudo-spots lie within one ST pitch
    # (200 µm) of a real spot (the A1 display image also holds an annotation thumbnail, hence the looser bound)
    precision = _near_fraction(grid_xy, real_xy, 200.0 / um_per_px)
    assert precision > (0.8 if section == "C2" else 0.6), precision
