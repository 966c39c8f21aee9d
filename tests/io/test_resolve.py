import anndata as ad
import numpy as np
import pandas as pd
import pytest
from spatialdata import SpatialData
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import Identity, Scale, set_transformation

import storm as st
from storm.datasets._synthetic import synthetic


def _slide(
    xy, *, image_shape=(600, 800), scalefactors=None, channels=3, dtype=np.uint8, image_scale=None, obs_names=None
):
    n = len(xy)
    pixels = np.full((channels, *image_shape), 200, dtype=dtype)
    tf = {"global": Scale([image_scale, image_scale], axes=("y", "x")) if image_scale else Identity()}
    image = Image2DModel.parse(pixels, dims=("c", "y", "x"), transformations=tf)
    spots = ShapesModel.parse(
        np.asarray(xy, float), geometry=0, radius=np.full(n, 10.0), transformations={"global": Identity()}
    )
    obs = pd.DataFrame(
        {"region": pd.Categorical(["spots"] * n), "spot_id": np.arange(n)},
        index=obs_names or [f"s{i}" for i in range(n)],
    )
    table = ad.AnnData(np.ones((n, 2), np.float32), obs=obs)
    if scalefactors is not None:
        table.uns["spatial"] = {"lib": {"images": {}, "scalefactors": scalefactors}}
    table = TableModel.parse(table, region="spots", region_key="region", instance_key="spot_id")
    return SpatialData(images={"he": image}, shapes={"spots": spots}, tables={"table": table})


def test_resolve_reads_metadata_scale_and_pixels():
    sdata = synthetic(1024, 1024, um_per_px=0.5)
    slide = st.io.resolve(sdata)
    assert slide.um_per_px == pytest.approx(0.5)
    assert "microns_per_pixel" in slide.um_per_px_source
    assert slide.keys == {"table_key": "table", "image_key": "he", "shapes_key": "spots", "coordinate_system": "global"}
    np.testing.assert_allclose(slide.spot_diameter_um, 55.0)
    np.testing.assert_allclose(slide.spot_xy_um, slide.spot_xy_px * 0.5)


def test_resolve_maps_spots_through_image_transform():
    # Image stored at half resolution: one image pixel spans 2 units of the spot frame.
    sdata = _slide([[100.0, 50.0], [300.0, 500.0]], image_scale=2.0, scalefactors={"microns_per_pixel": 1.0})
    slide = st.io.resolve(sdata)
    np.testing.assert_allclose(slide.spot_xy_px, [[50.0, 25.0], [150.0, 250.0]])
    # 1 µm per spot unit = 2 µm per image pixel; radius 10 units = 20 µm diameter.
    assert slide.um_per_px == pytest.approx(2.0)
    np.testing.assert_allclose(slide.spot_diameter_um, 20.0)


def test_scale_from_platform_pitch():
    xy = np.array([[x, y] for x in range(100, 800, 200) for y in range(100, 600, 200)], float)  # 12 spots: 8 or more
    slide = st.io.resolve(_slide(xy), platform="st")
    assert slide.um_per_px == pytest.approx(1.0)  # 200 µm pitch over 200 px
    assert "spot pitch 200" in slide.um_per_px_source


def test_argument_overrides_metadata():
    sdata = synthetic(512, 512, um_per_px=0.5)
    assert st.io.resolve(sdata, um_per_px=0.25).um_per_px == 0.25


def test_no_scale_is_an_error():
    with pytest.raises(ValueError, match="um_per_px"):
        st.io.resolve(_slide([[10.0, 10.0], [30.0, 30.0]]))


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_bad_um_per_px(bad):
    with pytest.raises(ValueError, match="um_per_px"):
        st.io.resolve(synthetic(512, 512), um_per_px=bad)


def test_unknown_platform():
    with pytest.raises(ValueError, match="platform"):
        st.io.resolve(_slide([[10.0, 10.0], [30.0, 30.0]]), platform="merfish9000")


def test_spots_outside_image():
    sdata = _slide([[10.0, 10.0], [5000.0, 10.0]], scalefactors={"microns_per_pixel": 1.0})
    with pytest.raises(ValueError, match="outside image 'he'.*s1"):
        st.io.resolve(sdata)


@pytest.mark.filterwarnings("ignore:Observation names are not unique")
def test_duplicated_obs_names():
    sdata = _slide([[10.0, 10.0], [20.0, 20.0]], scalefactors={"microns_per_pixel": 1.0}, obs_names=["a", "a"])
    with pytest.raises(ValueError, match="obs_names_make_unique"):
        st.io.resolve(sdata)


def test_mismatched_coordinate_systems():
    sdata = _slide([[10.0, 10.0], [20.0, 20.0]], scalefactors={"microns_per_pixel": 1.0})
    set_transformation(sdata.images["he"], Identity(), to_coordinate_system="aligned")
    from spatialdata.transformations import remove_transformation

    remove_transformation(sdata.images["he"], "global")
    with pytest.raises(ValueError, match="No image shares a coordinate system"):
        st.io.resolve(sdata)
    with pytest.raises(ValueError, match="share no coordinate system"):
        st.io.resolve(sdata, image_key="he")


def test_empty_table():
    sdata = _slide([[10.0, 10.0]], scalefactors={"microns_per_pixel": 1.0})
    table = sdata.tables["table"]
    empty = table[:0].copy()
    sdata.tables.data["table"] = empty  # bypass validation: files written by other tools can hold empty tables
    with pytest.raises(ValueError, match="empty"):
        st.io.resolve(sdata)


def test_missing_keys_name_the_argument():
    sdata = synthetic(512, 512)
    with pytest.raises(KeyError, match="image_key='nope'"):
        st.io.resolve(sdata, image_key="nope")
    with pytest.raises(KeyError, match="table_key='nope'"):
        st.io.resolve(sdata, table_key="nope")
    with pytest.raises(TypeError, match="SpatialData or an AnnData"):
        st.io.resolve(np.zeros(3))


def test_non_rgb_image_is_refused():
    sdata = _slide([[10.0, 10.0], [20.0, 20.0]], scalefactors={"microns_per_pixel": 1.0}, channels=5)
    with pytest.raises(ValueError, match="5 channels"):
        st.io.resolve(sdata)


def test_prefers_finest_rgb_image():
    sdata = _slide([[10.0, 10.0], [20.0, 20.0]], scalefactors={"microns_per_pixel": 1.0})
    coarse = Image2DModel.parse(
        np.zeros((3, 60, 80), np.uint8),
        dims=("c", "y", "x"),
        transformations={"global": Scale([10.0, 10.0], axes=("y", "x"))},
    )
    gray = Image2DModel.parse(
        np.zeros((1, 600, 800), np.uint8), dims=("c", "y", "x"), transformations={"global": Identity()}
    )
    sdata.images["lowres"] = coarse
    sdata.images["dapi"] = gray
    assert st.io.resolve(sdata).keys["image_key"] == "he"
    twin = Image2DModel.parse(
        np.zeros((3, 600, 800), np.uint8), dims=("c", "y", "x"), transformations={"global": Identity()}
    )
    sdata.images["he2"] = twin
    with pytest.raises(ValueError, match="image_key"):
        st.io.resolve(sdata)


def test_resolve_leaves_input_untouched():
    sdata = synthetic(512, 512)
    before = sdata.tables["table"].copy()
    st.io.resolve(sdata)
    assert set(sdata.tables["table"].uns) == set(before.uns)
    assert sdata.tables["table"].obs.equals(before.obs)
