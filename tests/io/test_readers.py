"""Objects from the canonical scverse readers go straight into storm.

Each test writes a small vendor output folder (``tests/io/readers.py``, built from the real DLPFC 151673 section), reads
it with the real reader (spatialdata-io, scanpy) and runs storm on the result without extra arguments.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import storm as st

from .readers import (
    COSMX_PIXEL_UM,
    XENIUM_PIXEL_UM,
    write_cosmx,
    write_spaceranger_visium,
    write_visium_hd,
    write_xenium,
)

sio = pytest.importorskip("spatialdata_io")

pytestmark = [
    pytest.mark.data,
    pytest.mark.filterwarnings("ignore:.*does not match `library_id`.*"),
    # spatialdata >= 0.7 words it so; pyproject's ignore matches the older "Converting `region_key` column"
    pytest.mark.filterwarnings("ignore:Converting `region_key.*to categorical dtype:UserWarning"),
    pytest.mark.filterwarnings("ignore:.*No full resolution image found.*:UserWarning"),
]


@pytest.fixture(scope="module")
def dlpfc_dir(shared_data_path):
    return shared_data_path("dlpfc")


@pytest.fixture(scope="module")
def tiny_model():
    def make(genes):
        from storm.models import GeneVocab, StormConfig, StormModel

        return StormModel(StormConfig.from_preset("tiny", image_size=32), vocab=GeneVocab.from_genes(genes)).eval()

    return make


def _add_pca(table, n_comps: int = 10) -> str:
    """PCA of log-normalised counts into ``obsm["X_pca"]`` (what a user runs with scanpy before storm)."""
    from scipy import sparse

    x = table.X.toarray() if sparse.issparse(table.X) else np.asarray(table.X)
    x = np.log1p(x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)
    x = x - x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    table.obsm["X_pca"] = (u[:, :n_comps] * s[:n_comps]).astype(np.float32)
    return "X_pca"


def _run_tools(data, table, model, *, table_key=None, n_domains=3):
    """``st.tl.domains`` on a PCA and ``st.tl.embed`` of the expression: both write their keys into ``table``."""
    use_rep = _add_pca(table)
    st.tl.domains(data, n_domains=n_domains, use_rep=use_rep, table_key=table_key)
    assert table.obs["storm_domain"].notna().all()
    assert table.obs["storm_domain"].nunique() == n_domains
    st.tl.embed(data, model(table.var_names), modality="expression", table_key=table_key)
    assert table.obsm["X_storm"].shape[0] == table.n_obs
    assert np.isfinite(table.obsm["X_storm"]).all()


# --------------------------------------------------------------------------------------------------------------------
# 10x Visium: spatialdata_io.visium and scanpy.read_visium


@pytest.fixture(scope="module")
def visium_bundle(dlpfc_dir, tmp_path_factory):
    return write_spaceranger_visium(tmp_path_factory.mktemp("visium") / "outs", dlpfc_dir)


def test_visium_bundle_is_the_real_section(visium_bundle):
    # the scale the tests expect: 100 µm Visium pitch = 138 full-resolution px of 151673
    assert visium_bundle.um_per_px["fullres"] == pytest.approx(0.7245, abs=0.005)
    sf = visium_bundle.extra["scalefactors"]
    assert sf["tissue_hires_scalef"] == pytest.approx(0.150015) and sf["tissue_lowres_scalef"] == pytest.approx(
        0.045004502
    )


def test_spatialdata_io_visium_resolves_to_hires(visium_bundle):
    sdata = sio.visium(visium_bundle.path, dataset_id="151673")
    slide = st.io.resolve(sdata)
    assert slide.n_spots == visium_bundle.n_spots == 300
    assert slide.keys["image_key"] == "151673_hires_image"  # the finest H&E
    assert slide.levels[0].shape_yx == (2000, 2000)
    assert slide.um_per_px == pytest.approx(visium_bundle.um_per_px["hires"], rel=0.02)  # ≈ 4.83 µm per hires px
    np.testing.assert_allclose(np.median(slide.spot_diameter_um), 96.40082438014726 * slide.um_per_px * 0.150015)
    # spots land where Space Ranger put them: full-res px x tissue_hires_scalef
    xy_fullres = sdata["table"].obsm["spatial"]
    np.testing.assert_allclose(slide.spot_xy_px, xy_fullres * 0.150015, rtol=1e-6)


def test_spatialdata_io_visium_tools(visium_bundle, tiny_model):
    sdata = sio.visium(visium_bundle.path, dataset_id="151673")
    tiles = st.pp.tile(sdata, tile_px=32, tile_um=160.0)  # 5 µm/px, just coarser than hires
    assert len(tiles) == 300
    assert sorted(tiles[0].shape) == [3, 32, 32]
    _run_tools(sdata, sdata["table"], tiny_model)


def test_spatialdata_io_visium_domains_as_users_call_it(visium_bundle):
    """The reported failure: ``st.tl.domains(sdata, n_domains=7)`` on ``spatialdata_io.visium`` output."""
    sdata = sio.visium(visium_bundle.path, dataset_id="151673")
    st.tl.domains(sdata, n_domains=7, use_rep=_add_pca(sdata["table"]))
    assert sdata["table"].obs["storm_domain"].nunique() == 7


def test_spatialdata_io_visium_lowres_only(dlpfc_dir, tmp_path):
    bundle = write_spaceranger_visium(tmp_path / "outs", dlpfc_dir, n_spots=120, n_genes=50, hires=False)
    sdata = sio.visium(bundle.path, dataset_id="151673")
    slide = st.io.resolve(sdata)
    assert slide.keys["image_key"] == "151673_lowres_image"
    assert slide.levels[0].shape_yx == (600, 600)
    assert slide.um_per_px == pytest.approx(bundle.um_per_px["lowres"], rel=0.02)  # ≈ 16.1 µm per lowres px


def test_spatialdata_io_visium_spaceranger2_named_counts(dlpfc_dir, tmp_path):
    """Space Ranger 2 positions (with header) and ``<id>_filtered_feature_bc_matrix.h5``: the id comes from the file."""
    bundle = write_spaceranger_visium(
        tmp_path / "outs", dlpfc_dir, n_spots=120, n_genes=50, positions="v2", prefix_counts=True, library_id="V1_A"
    )
    sdata = sio.visium(bundle.path)
    assert "V1_A_hires_image" in sdata.images
    slide = st.io.resolve(sdata)
    assert slide.n_spots == 120
    assert slide.keys["image_key"] == "V1_A_hires_image"
    assert slide.um_per_px == pytest.approx(bundle.um_per_px["hires"], rel=0.02)


def _scanpy_read_visium(path):
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # read_visium is deprecated in favour of squidpy
        return sc.read_visium(path)


def test_scanpy_read_visium(visium_bundle):
    adata = _scanpy_read_visium(visium_bundle.path)
    assert list(adata.uns["spatial"]) == ["151673"]
    slide = st.io.resolve(adata)
    assert slide.n_spots == adata.n_obs == 300
    assert slide.levels[0].shape_yx == (2000, 2000)  # hires preferred
    assert slide.um_per_px * 0.150015 == pytest.approx(visium_bundle.um_per_px["fullres"], rel=0.02)
    tiles = st.pp.tile(adata, tile_px=32, tile_um=160.0)
    assert len(tiles) == 300 and "storm_tile_padded" in adata.obs


@pytest.mark.slow
def test_scanpy_read_visium_tools(visium_bundle, tiny_model):
    adata = _scanpy_read_visium(visium_bundle.path)
    _run_tools(adata, adata, tiny_model)


# --------------------------------------------------------------------------------------------------------------------
# 10x Visium HD: spatialdata_io.visium_hd, every bin size


@pytest.fixture(scope="module")
def hd_bundle(dlpfc_dir, tmp_path_factory):
    return write_visium_hd(tmp_path_factory.mktemp("visium_hd") / "outs", dlpfc_dir, bins=(2, 8, 16))


@pytest.fixture(scope="module")
def hd_sdata(hd_bundle):
    return sio.visium_hd(hd_bundle.path)


@pytest.mark.parametrize("bin_um", [2, 8, 16])
def test_visium_hd_every_bin_resolves(hd_sdata, hd_bundle, bin_um):
    table_key = f"square_{bin_um:03d}um"
    assert sorted(hd_sdata.tables) == ["square_002um", "square_008um", "square_016um"]
    slide = st.io.resolve(hd_sdata, table_key=table_key)
    assert slide.n_spots == hd_bundle.n_spots[bin_um]
    assert slide.keys["shapes_key"] == f"hd_sample_{table_key}"
    assert slide.keys["image_key"] == "hd_sample_full_image"  # the microscope image, finest
    assert slide.um_per_px == pytest.approx(0.5, rel=1e-3)  # from the bin pitch
    # squares of side bin_um: the circle of equal area has diameter 2 * bin / sqrt(pi)
    np.testing.assert_allclose(slide.spot_diameter_um, 2 * bin_um / np.sqrt(np.pi), rtol=1e-3)
    tiles = st.pp.tile(hd_sdata, tile_px=32, tile_um=16.0, table_key=table_key)  # 0.5 µm/px: the full image
    assert len(tiles) == hd_bundle.n_spots[bin_um]


@pytest.mark.parametrize("bin_um", [pytest.param(8, marks=pytest.mark.slow), 16])
def test_visium_hd_tools(hd_bundle, tiny_model, bin_um):
    sdata = sio.visium_hd(hd_bundle.path, bin_size=bin_um)
    assert list(sdata.tables) == [f"square_{bin_um:03d}um"]
    slide = st.io.resolve(sdata)  # one bin size read: nothing to choose
    assert slide.n_spots == hd_bundle.n_spots[bin_um]
    _run_tools(sdata, sdata.tables[f"square_{bin_um:03d}um"], tiny_model)


def test_visium_hd_without_microscope_image(dlpfc_dir, tmp_path):
    bundle = write_visium_hd(tmp_path / "outs", dlpfc_dir, bins=(8,), fullres=False)
    with pytest.warns(UserWarning, match="No full resolution image found"):
        sdata = sio.visium_hd(bundle.path)
    slide = st.io.resolve(sdata)
    assert slide.keys["image_key"] == "hd_sample_hires_image"
    assert slide.um_per_px == pytest.approx(bundle.um_per_px["hd_sample_hires_image"], rel=1e-3)  # 1 µm per hires px


# --------------------------------------------------------------------------------------------------------------------
# 10x Xenium: spatialdata_io.xenium (+ xenium_aligned_image)


@pytest.fixture(scope="module")
def xenium_bundle(dlpfc_dir, tmp_path_factory):
    return write_xenium(tmp_path_factory.mktemp("xenium") / "outs", dlpfc_dir, with_he=True)


def test_xenium_default_read_resolves(xenium_bundle, tiny_model):
    """Default reader call: the table annotates the ``cell_labels`` raster; storm finds the cells from it."""
    sdata = sio.xenium(xenium_bundle.path)
    assert "he_image" in sdata.images  # found next to the outputs and aligned
    slide = st.io.resolve(sdata)
    assert slide.n_spots == xenium_bundle.n_spots
    assert slide.keys["image_key"] == "he_image"
    assert slide.um_per_px == pytest.approx(xenium_bundle.um_per_px["he_image"], rel=1e-3)
    # the cells' centroids from the labels land where the circles reader puts them
    circles = st.io.resolve(sio.xenium(xenium_bundle.path, cells_as_circles=True), shapes_key="cell_circles")
    order = np.argsort(circles.obs_names)
    np.testing.assert_allclose(slide.spot_xy_um[np.argsort(slide.obs_names)], circles.spot_xy_um[order], atol=1.0)
    assert "cell_labels" not in sdata.shapes  # nothing added to the user's object
    _run_tools(sdata, sdata["table"], tiny_model)


def test_xenium_cell_circles_with_aligned_he(xenium_bundle, tiny_model):
    sdata = sio.xenium(xenium_bundle.path, cells_as_circles=True, aligned_images=False)
    sdata.images["he_image"] = sio.xenium_aligned_image(xenium_bundle.files["he"], xenium_bundle.files["alignment"])
    slide = st.io.resolve(sdata)
    assert slide.n_spots == xenium_bundle.n_spots
    assert slide.keys["image_key"] == "he_image"  # RGB preferred over the DAPI morphology image
    assert slide.um_per_px == pytest.approx(xenium_bundle.um_per_px["he_image"], rel=1e-3)  # 0.2125 x alignment scale
    # centroids in H&E pixels = inverse alignment of the morphology pixels
    morph_px = xenium_bundle.extra["xy_um"] / XENIUM_PIXEL_UM
    inv = np.linalg.inv(xenium_bundle.extra["alignment"])
    expected = morph_px @ inv[:2, :2].T + inv[:2, 2]
    np.testing.assert_allclose(slide.spot_xy_px, expected, atol=1e-3)
    tiles = st.pp.tile(sdata, tile_px=32, tile_um=16.0)
    assert len(tiles) == xenium_bundle.n_spots
    _run_tools(sdata, sdata["table"], tiny_model)


def test_xenium_morphology_only(dlpfc_dir, tmp_path):
    bundle = write_xenium(tmp_path / "outs", dlpfc_dir, with_he=False, n_side=6)
    sdata = sio.xenium(bundle.path, cells_as_circles=True)
    slide = st.io.resolve(sdata)
    assert slide.keys["image_key"] == "morphology_focus"
    assert slide.um_per_px == pytest.approx(XENIUM_PIXEL_UM)
    assert slide.n_spots == 36


# --------------------------------------------------------------------------------------------------------------------
# NanoString CosMx: spatialdata_io.cosmx


def test_cosmx_bundle_reads(dlpfc_dir, tmp_path):
    bundle = write_cosmx(tmp_path / "cosmx", dlpfc_dir, n_fovs=2)
    sdata = sio.cosmx(bundle.path)
    assert sdata["table"].n_obs == bundle.n_spots == 98
    assert sorted(sdata.images) == ["1_image", "2_image"] and sorted(sdata.labels) == ["1_labels", "2_labels"]
    # the cell centres sit on their labels after the reader's vertical flip
    table = sdata["table"]
    labels = np.asarray(sdata.labels["1_labels"])
    first = table[table.obs["fov"].astype(str) == "1"]
    x, y = np.round(first.obsm["spatial"]).astype(int).T
    np.testing.assert_array_equal(labels[y, x], first.obs["cell_ID"].to_numpy())


def test_reader_element_names_give_the_platform():
    from storm.io._scale import detect_platform

    assert detect_platform({}, "1_image", "1_labels") == "cosmx"
    assert detect_platform({}, "he_image", "cell_labels") == "xenium"
    assert detect_platform({}, "hd_hires_image", "hd_square_002um") == "visium_hd_002um"
    assert detect_platform({}, "hd_hires_image", "hd_cell_segmentations") is None  # no grid: needs um_per_px


def test_cosmx_resolves(dlpfc_dir, tmp_path):
    bundle = write_cosmx(tmp_path / "cosmx", dlpfc_dir, n_fovs=1)
    sdata = sio.cosmx(bundle.path, transcripts=False)
    assert sdata["table"].n_obs == bundle.n_spots
    slide = st.io.resolve(sdata)
    assert slide.n_spots == bundle.n_spots
    assert slide.keys["image_key"] == "1_image"
    assert slide.um_per_px == pytest.approx(COSMX_PIXEL_UM)
    assert np.isfinite(slide.spot_xy_um).all() and np.median(slide.spot_diameter_um) > 1
