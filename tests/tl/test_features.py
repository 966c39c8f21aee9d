"""st.tl.feature_extraction, the feature cache, and storm models whose image branch is a frozen pathology encoder."""

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import storm as st
from storm.data import Corpus, spot_features
from storm.data import _features as features_module
from storm.models import EncoderSpec, StormConfig, load_encoder, register_encoder

KEY = "test-vit_spots_112um"


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """Random weights of an architecture-exact ViT-Ti/16, written to a local file as a user's download would be."""
    register_encoder(EncoderSpec("test-vit", None, architecture="vit_tiny_patch16_224", dim=192), overwrite=True)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("encoder")
    save_file(load_encoder("test-vit", pretrained=False).net.state_dict(), folder / "model.safetensors")
    return folder / "model.safetensors"


@pytest.fixture(scope="module")
def encoder(weights):
    return load_encoder("test-vit", weights=weights)


@pytest.fixture(scope="module")
def features(encoder):
    sdata = st.datasets.demo()
    st.tl.feature_extraction(sdata, encoder)
    return sdata.tables[KEY]


def test_features_are_the_encoder_on_tiles_at_its_published_input(encoder, features):
    tiles = st.pp.tile(st.datasets.demo(), tile_px=224, tile_um=112.0)
    rows = [0, 50, 150]
    with torch.no_grad():
        expected = encoder(torch.from_numpy(tiles.read(np.array(rows)))).numpy()
    np.testing.assert_allclose(features.X[rows], expected, rtol=1e-4, atol=1e-4)
    assert features.shape == (151, 192) and list(features.obs_names[:2]) == list(
        st.datasets.demo()["table"].obs_names[:2]
    )
    record = features.uns["storm_features"]
    assert record["encoder"] == "test-vit" and record["weights_sha256"] == encoder.weights_sha256
    assert (record["tile_px"], record["tile_um"], record["um_per_px"], record["key"]) == (224, 112.0, 0.5, KEY)


def test_second_call_reads_the_cache(encoder, monkeypatch):
    sdata = st.datasets.demo()
    st.tl.feature_extraction(sdata, encoder)
    first = sdata.tables[KEY].X.copy()

    def no_compute(*args, **kwargs):
        raise AssertionError("features were recomputed")

    monkeypatch.setattr(features_module, "compute_features", no_compute)
    st.tl.feature_extraction(sdata, "test-vit")  # by name: no weights are loaded, no tile is read
    np.testing.assert_array_equal(sdata.tables[KEY].X, first)
    st.tl.feature_extraction(sdata, encoder)  # the same weights in hand: read, not recomputed
    with pytest.raises(AssertionError, match="recomputed"):
        st.tl.feature_extraction(sdata, encoder, recompute=True)
    torch.manual_seed(3)
    with pytest.raises(AssertionError, match="recomputed"):  # other weights in hand: their own features are computed
        st.tl.feature_extraction(sdata, load_encoder("test-vit", pretrained=False))


def test_backed_store_keeps_the_features_for_the_next_session(encoder, tmp_path, monkeypatch):
    import spatialdata as sd

    path = tmp_path / "slide.zarr"
    st.datasets.demo().write(path)
    st.tl.feature_extraction(sd.read_zarr(path), encoder)
    again = sd.read_zarr(path)
    assert KEY in again.tables
    monkeypatch.setattr(features_module, "compute_features", lambda *a, **k: pytest.fail("recomputed"))
    found = spot_features(st.io.resolve(again), "test-vit")
    assert found.cached and found.provenance["weights_sha256"] == encoder.weights_sha256
    assert st.io.resolve(again).keys["table_key"] == "table"  # the features table is never taken for the spots


def test_anndata_input_keeps_features_in_obsm(encoder, features):
    adata = st.io.to_anndata(st.datasets.demo())
    st.tl.feature_extraction(adata, encoder)
    # the AnnData carries the image at its own resolution, so the tiles are resampled from other pixels
    assert adata.obsm[KEY].shape == (151, 192)
    assert np.corrcoef(adata.obsm[KEY].ravel(), features.X.ravel())[0, 1] > 0.95
    assert adata.uns["storm"][KEY]["keys"] == {"obsm": [KEY]}


def test_features_another_tool_wrote_are_read(features):
    sdata = st.datasets.demo()
    sdata["table"].obsm["X_test-vit"] = features.X * 2
    found = spot_features(st.io.resolve(sdata), "test-vit")
    assert found.cached and found.key == "X_test-vit" and found.provenance["weights_sha256"] is None
    np.testing.assert_allclose(found.values, features.X * 2)


def test_lazyslide_tile_grid_features_map_each_spot_to_its_tile():
    import anndata as ad
    import geopandas as gpd
    import pandas as pd
    from shapely.geometry import box
    from spatialdata.models import ShapesModel, TableModel

    sdata = st.datasets.demo()
    h, w = sdata.images["he"]["scale0"]["image"].shape[1:]
    side = 256
    cells = [(x, y) for y in range(0, h, side) for x in range(0, w, side)]
    grid = gpd.GeoDataFrame(geometry=[box(x, y, x + side, y + side) for x, y in cells])
    sdata.shapes["tiles"] = ShapesModel.parse(grid)
    values = np.arange(len(cells), dtype=np.float32)[:, None] * np.ones((1, 192), dtype=np.float32)
    table = ad.AnnData(values, obs=pd.DataFrame({"tile_id": np.arange(len(cells)), "library": "tiles"}))
    table.obs["library"] = table.obs["library"].astype("category")
    sdata.tables["test-vit_tiles"] = TableModel.parse(
        table, region="tiles", region_key="library", instance_key="tile_id"
    )
    slide = st.io.resolve(sdata, table_key="table")
    found = spot_features(slide, "test-vit")
    assert found.key == "test-vit_tiles" and found.cached
    x, y = slide.spot_xy_px[:, 0], slide.spot_xy_px[:, 1]
    expected = (y // side) * len(range(0, w, side)) + (x // side)
    np.testing.assert_array_equal(found.values[:, 0], expected)


@pytest.fixture(scope="module")
def encoder_model(weights, features):
    sdata = st.datasets.demo()
    sdata.tables[KEY] = features.copy()
    st.settings.progress = False
    import tempfile

    config = {"model": {"preset": "tiny", "image_encoder": "test-vit", "niche_size": 4}}
    return st.tl.pretrain([sdata], config=config, max_steps=2, batch_size=4, output_dir=tempfile.mkdtemp())


def test_a_model_on_an_encoder_reads_its_cached_features(encoder_model, encoder, features, monkeypatch):
    config = encoder_model.config
    assert (config.image_encoder, config.image_encoder_dim, config.image_size, config.tile_um) == (
        "test-vit",
        192,
        224,
        112.0,
    )
    assert config.image_encoder_sha256 == encoder.weights_sha256
    assert encoder_model.image.backbone is None  # the encoder is not inside the checkpoint
    sdata = st.datasets.demo()
    sdata.tables[KEY] = features.copy()
    monkeypatch.setattr(features_module, "compute_features", lambda *a, **k: pytest.fail("recomputed"))
    st.tl.embed(sdata, model=encoder_model, modality="image")
    record = sdata["table"].uns["storm"]["X_storm"]
    assert record["image_encoder"] == "test-vit" and record["image_encoder_sha256"] == encoder.weights_sha256
    assert record["image_encoder_geometry"] == {"tile_px": 224, "tile_um": 112.0}
    # the embedding is the model on those features: change them and it changes
    corpus = Corpus.for_model(sdata, encoder_model)
    np.testing.assert_array_equal(corpus.slides[0].features, features.X)
    sdata.tables[KEY].X = features.X[::-1].copy()
    before = sdata["table"].obsm["X_storm_image"].copy()
    st.tl.embed(sdata, model=encoder_model, modality="image")
    assert not np.allclose(sdata["table"].obsm["X_storm_image"], before)


def test_features_of_other_weights_are_refused(encoder_model):
    sdata = st.datasets.demo()
    torch.manual_seed(5)
    st.tl.feature_extraction(sdata, load_encoder("test-vit", pretrained=False))
    with pytest.raises(
        ValueError,
        match="come from weights .* but the model was trained on .*`encoder_weights=`|pass the same encoder weights",
    ):
        st.tl.embed(sdata, model=encoder_model, modality="image")


def test_model_without_features_or_image_says_what_to_do(encoder_model):
    with pytest.raises(ValueError, match="reads 'test-vit' features, not tiles"):
        encoder_model.image.backbone_tokens(torch.zeros(1, 224, 224, 3, dtype=torch.uint8))


def test_head_on_an_encoder_model_refuses_another_image_branch(encoder_model, features):
    sdata = st.datasets.demo()
    sdata.tables[KEY] = features.copy()
    adapted = st.tl.adapt(sdata, model=encoder_model, task="expression", steps=2, batch_size=4)
    assert adapted.config.image_encoder_sha256 == encoder_model.config.image_encoder_sha256
    st.tl.predict_expression(sdata, model=adapted)
    assert np.isfinite(sdata["table"].layers["storm_predicted"]).all()
    head = st.tl.fit_head(sdata, "expression", model=encoder_model, genes=["ERBB2", "KRT19"], morphology=False)
    assert head.meta["model"]["image_encoder"] == "test-vit"
    with pytest.raises(ValueError, match="reading 'test-vit' features .* model passed reads storm's own image branch"):
        st.tl.predict_expression(st.datasets.demo(), head=head, model="default")


def test_corpus_refuses_features_of_two_weights(encoder, weights):
    a, b = st.datasets.demo(), st.datasets.demo()
    st.tl.feature_extraction(a, encoder)
    torch.manual_seed(9)
    st.tl.feature_extraction(b, load_encoder("test-vit", pretrained=False))
    corpus = Corpus.from_sources([a, b], image_encoder="test-vit", tile_px=224, tile_um=112.0)
    with pytest.raises(ValueError, match="2 different weights; recompute them with one encoder"):
        corpus.encoder_sha256  # noqa: B018


def test_config_takes_the_encoders_published_input():
    config = StormConfig.from_preset("small", image_encoder="uni", image_size=64, tile_um=30.0)
    assert (config.image_size, config.tile_um, config.image_encoder_dim) == (224, 112.0, 1024)
    with pytest.raises(ValueError, match="needs `image_encoder_dim`"):
        StormConfig(image_encoder="my-encoder")
