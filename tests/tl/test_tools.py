"""st.tl.embed and st.tl.predict_expression on SpatialData and AnnData, with a tiny model."""

import copy
import dataclasses
import logging

import numpy as np
import pytest
import torch

import storm as st
from storm._standardise import non_negative_spread
from storm.models import GeneVocab, StormConfig, StormModel
from storm.tl._encode import encode


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    genes = list(st.datasets.demo()["table"].var_names[:600]) + ["NOT_ON_THE_PANEL"]
    config = StormConfig.from_preset("tiny", image_size=32, tile_um=64.0, niche_size=4)
    net = StormModel(config, vocab=GeneVocab.from_genes(genes)).eval()
    n = len(net.vocab)
    net.set_expression_reference(np.linspace(0.2, 3.0, n), np.full(n, 0.5))  # as pretraining sets it
    return net


def test_embed_writes_the_runner_outputs_and_scanpy_clusters_them(model):
    import scanpy as sc

    sdata = st.datasets.demo()
    assert st.tl.embed(sdata, model=model) is None
    table = sdata["table"]
    expected = encode(sdata, model)
    np.testing.assert_allclose(table.obsm["X_storm"], expected.embedding, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(table.obsm["X_storm_image"], expected.image_embedding, rtol=1e-5, atol=1e-6)
    assert table.obsm["X_storm_gene"].shape == (151, 64)
    record = table.uns["storm"]["X_storm"]
    assert record["modality"] == "both" and record["preset"] == "tiny" and record["n_spots"] == 151
    sc.pp.neighbors(table, use_rep="X_storm")
    sc.tl.leiden(table, flavor="igraph", n_iterations=2, directed=False)
    assert table.obs["leiden"].nunique() > 1

    image_only = st.tl.embed(sdata, model=model, modality="image", key_added="X_he", copy=True)
    assert "X_he_gene" not in image_only["table"].obsm and "X_he" not in sdata["table"].obsm
    np.testing.assert_allclose(image_only["table"].obsm["X_he_image"], table.obsm["X_storm_image"], atol=1e-6)


def test_re_embedding_removes_the_stale_branch_and_records_what_it_resolved(model):
    sdata = st.datasets.demo()
    st.tl.embed(sdata, model=model)
    table = sdata["table"]
    assert table.uns["storm"]["X_storm"]["keys"] == {"obsm": ["X_storm", "X_storm_gene", "X_storm_image"]}
    st.tl.embed(sdata, model=model, modality="expression")
    record = table.uns["storm"]["X_storm"]
    assert "X_storm_image" not in table.obsm and "X_storm_gene" in table.obsm
    assert record["keys"] == {"obsm": ["X_storm", "X_storm_gene"]} and record["modality"] == "expression"
    resolved = record["resolved"]
    assert (resolved["table_key"], resolved["shapes_key"], resolved["layer"]) == ("table", "spots", None)
    assert resolved["n_spots"] == 151 and round(resolved["um_per_px"], 2) == 0.69


def test_embed_errors(model):
    sdata = st.datasets.demo()
    with pytest.raises(TypeError, match="`model`"):
        st.tl.embed(sdata, 3)
    with pytest.raises(ValueError, match="`modality`"):
        st.tl.embed(sdata, model=model, modality="rna")
    assert "X_storm" not in sdata["table"].obsm


def decoded(sdata, model, genes, **kwargs):
    """The decoder's raw outputs for ``genes``, standardised over the spots, given each gene's reference, kept >= 0."""
    raw = encode(sdata, model, modality="image", genes=genes, **kwargs).predicted_expression
    mean, std = model.expression_reference.numpy()[:, model.vocab.align(genes).indices]
    return non_negative_spread((raw - raw.mean(0)) / raw.std(0), mean, std)


def test_predict_expression_gives_each_gene_its_reference_spread(model):
    net = copy.deepcopy(model)
    mean = np.linspace(0.5, 3.0, len(net.vocab)).astype(np.float32)
    std = np.linspace(0.2, 1.0, len(net.vocab)).astype(np.float32)
    net.set_expression_reference(mean, std)
    sdata = st.datasets.demo()
    genes = ["ERBB2", "KRT19", "ACTB"]
    index = net.vocab.align(genes).indices
    st.tl.predict_expression(sdata, genes, model=net)
    st.tl.predict_expression(sdata, genes, model=net, scale="model", key_added="conditional_mean")
    table = sdata["table"]
    columns = table.var_names.get_indexer(genes)
    slide = table.layers["storm_predicted"][:, columns]
    # scale="slide": each gene's map has the gene's reference mean and within-slide spread, whatever the decoder's
    np.testing.assert_allclose(slide.mean(0), mean[index], atol=1e-5)
    np.testing.assert_allclose(slide.std(0), std[index], rtol=1e-4)
    # scale="model": the decoder's own standardised output, brought to log1p with the same reference
    raw = encode(sdata, net, modality="image", genes=genes).predicted_expression
    conditional = table.layers["conditional_mean"][:, columns]
    np.testing.assert_allclose(conditional, mean[index] + raw * std[index], rtol=1e-5, atol=1e-5)
    # both rank the spots alike: the same Pearson r against anything
    for k in range(len(genes)):
        assert np.corrcoef(slide[:, k], conditional[:, k])[0, 1] > 0.9999
    assert table.uns["storm"]["storm_predicted"]["scale"] == "slide"
    assert table.uns["storm"]["conditional_mean"]["scale"] == "model"
    with pytest.raises(ValueError, match="`scale` must be one of"):
        st.tl.predict_expression(sdata, genes, model=net, scale="global", key_added="refused")
    assert "refused" not in table.layers
    with pytest.raises(ValueError, match="shape"):
        net.set_expression_reference(mean[:5], std[:5])


def test_a_log1p_decoder_predicts_as_it_always_did(model):
    config = dataclasses.replace(model.config, expression_target="log1p")
    net = StormModel(config, vocab=model.vocab).eval()
    net.load_state_dict({k: v for k, v in model.state_dict().items() if k != "expression_reference"})
    assert not hasattr(net, "expression_reference")
    sdata = st.datasets.demo()
    st.tl.predict_expression(sdata, ["ERBB2"], model=net)
    table = sdata["table"]
    raw = encode(sdata, net, modality="image", genes=["ERBB2"]).predicted_expression
    predicted = table.layers["storm_predicted"][:, [table.var_names.get_loc("ERBB2")]]
    np.testing.assert_allclose(predicted, np.maximum(raw, 0), atol=1e-6)
    assert "scale" not in table.uns["storm"]["storm_predicted"]
    with pytest.raises(ValueError, match="no expression reference"):
        net.set_expression_reference(np.zeros(len(net.vocab)), np.ones(len(net.vocab)))


def test_predict_expression_on_a_table_with_genes(model, caplog):
    sdata = st.datasets.demo()
    genes = ["ERBB2", "KRT19", sdata["table"].var_names[900]]  # the last is not in the vocabulary
    with caplog.at_level(logging.WARNING, logger="storm"):
        st.tl.predict_expression(sdata, genes, model=model)
    assert "1 of 3 genes are not in the model's vocabulary" in caplog.text and genes[2] in caplog.text
    table = sdata["table"]
    layer = table.layers["storm_predicted"]
    expected = decoded(sdata, model, genes[:2])
    np.testing.assert_allclose(layer[:, table.var_names.get_indexer(genes[:2])], expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(layer[:, table.var_names.get_loc(genes[2])]).all()
    assert int(table.var["storm_predicted"].sum()) == 2
    assert table.uns["storm"]["storm_predicted"]["not_predicted"] == [genes[2]]
    with pytest.raises(KeyError, match="not genes of the table"):
        st.tl.predict_expression(sdata, ["NOT_ON_THE_PANEL"], model=model)


def test_predict_expression_on_an_he_only_slide_keeps_the_users_table(model):
    sdata = st.datasets.demo()
    st.pp.tissue_grid(sdata, spot_um=100.0, pitch_um=200.0, um_per_px=0.689, key_added="grid")
    grid = sdata.tables["grid"]
    out = st.tl.predict_expression(sdata, ["ERBB2", "NOT_ON_THE_PANEL"], model, table_key="grid", copy=True)
    assert "storm_predicted" not in grid.obsm  # copy=True left the original alone
    st.tl.predict_expression(sdata, ["ERBB2", "KRT19"], model, table_key="grid")
    assert sdata.tables["grid"] is grid and grid.n_vars == 0  # the same object, still without genes
    frame = grid.obsm["storm_predicted"]
    assert list(frame.columns) == ["ERBB2", "KRT19"] and frame.index.equals(grid.obs_names)
    assert np.isfinite(frame.to_numpy()).all() and frame["ERBB2"].std() > 0
    expected = decoded(sdata, model, ["ERBB2", "KRT19"], table_key="grid")
    np.testing.assert_allclose(frame.to_numpy(), expected, rtol=1e-5, atol=1e-6)
    # any vocabulary gene can be predicted on an H&E-only table, measured on the panel or not
    assert list(out.tables["grid"].obsm["storm_predicted"].columns) == ["ERBB2", "NOT_ON_THE_PANEL"]
    assert grid.uns["storm"]["storm_predicted"]["keys"] == {"obsm": ["storm_predicted"]}
    # an H&E-only AnnData works in place too
    adata = st.io.to_anndata(sdata, table_key="grid")
    adata.obsm.pop("storm_predicted")
    st.tl.predict_expression(adata, ["ERBB2"], model=model, scale="model", key_added="conditional")
    st.tl.predict_expression(sdata, ["ERBB2"], model=model, table_key="grid", scale="model", key_added="conditional")
    # (its image is to_anndata's 2,000-px copy of the H&E, so the tiles differ in the last bits of resampling; the
    # untrained decoder's spread is tiny, so the comparison is made before scale="slide" magnifies those bits)
    np.testing.assert_allclose(
        adata.obsm["conditional"]["ERBB2"], grid.obsm["conditional"]["ERBB2"], rtol=1e-2, atol=1e-4
    )
    fig = st.pl.genes(sdata, ["KRT19"], table_key="grid", return_fig=True, show=False)
    assert len(fig.axes) == 2  # the prediction and its colour bar: nothing measured to compare
    with pytest.raises(KeyError, match="predicted genes"):
        st.pl.genes(sdata, ["MGP"], table_key="grid")


_EMBED_IN_A_FRESH_PROCESS = """
import sys, numpy as np, torch
torch.set_num_threads(1)
import storm as st
st.settings.orientations = 1
sdata = st.datasets.demo()
st.tl.embed(sdata)
np.save(sys.argv[1], sdata["table"].obsm["X_storm"])
"""


def test_embed_is_deterministic_on_cpu(tmp_path):
    """Same model, same input, same thread count: bit-identical embeddings, in this process and in a fresh one.

    One pass per niche (the eight-orientation average adds the passes in a fixed order: deterministic when they are).
    """
    import subprocess
    import sys

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    st.settings.orientations = 1
    try:
        runs = []
        for _ in range(2):
            sdata = st.datasets.demo()
            st.tl.embed(sdata)
            runs.append(sdata["table"].obsm["X_storm"])
    finally:
        torch.set_num_threads(threads)
        st.settings.orientations = 8
    out = tmp_path / "fresh.npy"
    subprocess.run([sys.executable, "-c", _EMBED_IN_A_FRESH_PROCESS, str(out)], check=True, timeout=600)
    assert np.isfinite(runs[0]).all() and runs[0].std() > 0
    np.testing.assert_array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], np.load(out))
