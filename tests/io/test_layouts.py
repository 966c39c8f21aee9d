"""The layouts users bring: spatialdata-io element naming and squidpy-style AnnData from real data."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from spatialdata import SpatialData
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import Identity, Scale

import storm as st


def _visium_like(sample="V1_demo", hires=0.2, lowres=0.05, pitch_px=140.0):
    """A slide named and placed like spatialdata-io's visium reader writes it (no µm metadata)."""
    rows, cols = np.meshgrid(np.arange(6), np.arange(8), indexing="ij")
    xy = (
        np.column_stack(
            [cols.ravel() * pitch_px + (rows.ravel() % 2) * pitch_px / 2, rows.ravel() * pitch_px * np.sqrt(3) / 2]
        )
        + 300
    )
    n = len(xy)
    size = 1600
    images = {
        f"{sample}_hires_image": Image2DModel.parse(
            np.full((3, int(size * hires), int(size * hires)), 200, np.uint8),
            dims=("c", "y", "x"),
            transformations={"global": Scale([1 / hires, 1 / hires], axes=("y", "x"))},
        ),
        f"{sample}_lowres_image": Image2DModel.parse(
            np.full((3, int(size * lowres), int(size * lowres)), 200, np.uint8),
            dims=("c", "y", "x"),
            transformations={"global": Scale([1 / lowres, 1 / lowres], axes=("y", "x"))},
        ),
    }
    shapes = {
        sample: ShapesModel.parse(xy, geometry=0, radius=np.full(n, 38.5), transformations={"global": Identity()})
    }
    obs = pd.DataFrame(
        {"region": pd.Categorical([sample] * n), "spot_id": np.arange(n)}, index=[f"bc{i}" for i in range(n)]
    )
    table = TableModel.parse(
        ad.AnnData(np.ones((n, 3), np.float32), obs=obs), region=sample, region_key="region", instance_key="spot_id"
    )
    return SpatialData(images=images, shapes=shapes, tables={"table": table})


def test_spatialdata_io_visium_naming():
    sdata = _visium_like()
    slide = st.io.resolve(sdata)
    assert slide.keys["image_key"] == "V1_demo_hires_image"  # finest of the RGB images
    assert "platform 'visium'" in slide.um_per_px_source
    # 100 µm pitch = 140 full-res px = 28 hires px -> 100 / 28 µm per hires pixel
    assert slide.um_per_px == pytest.approx(100 / 28, rel=1e-6)
    np.testing.assert_allclose(slide.spot_diameter_um, 77.0 * 100 / 140)
    tiles = st.pp.tile(sdata, 32, 112.0)
    assert tiles.target_um_per_px == pytest.approx(3.5)


def test_visium_hd_bins_and_xenium_units_are_recognised():
    from storm.io._scale import detect_platform

    assert detect_platform({}, "sample_hires_image", "sample_square_008um") == "visium_hd_008um"
    assert detect_platform({}, "morphology_focus", "cell_circles") == "xenium"
    assert detect_platform({}, "he", "spots") is None
    assert detect_platform({"metadata": {"platform": "st"}}, "he", "spots") == "st"


@pytest.mark.data
def test_squidpy_style_anndata_from_dlpfc(shared_data_path):
    adata = ad.read_h5ad(shared_data_path("dlpfc") / "derived" / "dlpfc_151673.h5ad")
    before = set(adata.obs.columns), set(adata.uns)
    slide = st.io.resolve(adata)
    assert before == (set(adata.obs.columns), set(adata.uns))  # resolving writes nothing
    lowres = adata.uns["spatial"]["151673"]["scalefactors"]["tissue_lowres_scalef"]
    # Visium pitch 100 µm = 138 full-resolution px (0.7245 µm/px), seen through the lowres image
    assert slide.um_per_px * lowres == pytest.approx(0.7245, rel=0.01)
    assert slide.n_spots == adata.n_obs == 3639
    tiles = st.pp.tile(adata, 32, 112.0)
    assert len(tiles) == 3639 and not tiles.padded.any()
    assert adata.uns["storm"]["tiles"]["um_per_px_source"].startswith("platform 'visium'")
