"""The ``"panel"`` gene encoding: every gene of the panel, standardised and whitened per slide."""

import numpy as np
import pytest
import torch
from scipy import sparse

import storm as st
from storm.data import Corpus, NicheDataset
from storm.data._expression import column_moments, log1p_cp10k, residual_axes, whitening_axes
from storm.models import GeneVocab, StormConfig, StormModel


@pytest.fixture(scope="module")
def sdata():
    return st.datasets.demo()


def _model(sdata, **overrides):
    torch.manual_seed(0)
    config = StormConfig.from_preset("tiny", image_size=32, gene_encoding="panel", **overrides)
    return StormModel(config, GeneVocab.from_genes(sdata["table"].var_names)).eval()


def test_whitening_axes_match_a_dense_svd():
    x = sparse.csr_matrix(np.random.default_rng(1).poisson(0.7, (80, 30)).astype(np.float32))
    mean, std = column_moments(x)
    np.testing.assert_allclose(mean, x.toarray().mean(0), rtol=1e-5)
    np.testing.assert_allclose(std, x.toarray().std(0), rtol=1e-4)
    axes, scale = whitening_axes(x, mean, std, 5)
    z = (x.toarray() - mean) / np.maximum(std, 0.05)
    _, values, vt = np.linalg.svd(z, full_matrices=False)
    np.testing.assert_allclose(scale, np.sqrt(np.sqrt(80) / values[:5]), rtol=1e-4)
    np.testing.assert_allclose(np.abs(vt[:5] @ axes), np.eye(5), atol=1e-4)  # same axes, up to sign
    balanced = (z @ axes) * scale  # half whitening: each axis' standard deviation becomes its square root
    np.testing.assert_allclose(balanced.std(0), np.sqrt(values[:5] / np.sqrt(80)), rtol=1e-3)
    # the ARPACK route of large slides finds the same axes as the dense Gram route of small ones
    from scipy import sparse as sp

    from storm.data._expression import _arpack_axes, _gram_axes

    inv = 1 / np.maximum(std, 0.05)
    scaled, shift = sp.csr_matrix(x.toarray() * inv), (mean * inv)[:, None]
    (dense_values, dense_axes), (arpack_values, arpack_axes) = (
        _gram_axes(scaled, np.ones((80, 1)), shift, 5),
        _arpack_axes(scaled, np.ones((80, 1)), shift, 5),
    )
    np.testing.assert_allclose(dense_values, values[:5], rtol=1e-6)
    np.testing.assert_allclose(arpack_values, values[:5], rtol=1e-6)
    np.testing.assert_allclose(np.abs(dense_axes @ arpack_axes.T), np.eye(5), atol=1e-4)
    tall = sp.csr_matrix(np.random.default_rng(2).poisson(0.7, (40, 12)).astype(np.float32))  # more spots than genes
    t_mean, t_std = column_moments(tall)
    t_axes, _ = whitening_axes(tall, t_mean, t_std, 3)
    t_z = (tall.toarray() - t_mean) / np.maximum(t_std, 0.05)
    np.testing.assert_allclose(np.abs(np.linalg.svd(t_z)[2][:3] @ t_axes), np.eye(3), atol=1e-4)
    assert whitening_axes(x, mean, std, 0)[0].shape == (30, 0)
    assert whitening_axes(x[:3], *column_moments(x[:3]), 5)[0].shape == (30, 2)  # at most n_spots - 1 axes


def _standardised_residuals(counts):
    """Dense reference: Poisson residuals (counts - s p) / sqrt(s p), then centred and scaled per gene."""
    expected = np.outer(counts.sum(1), counts.sum(0) / counts.sum())
    residual = np.divide(counts - expected, np.sqrt(expected), out=np.zeros_like(counts), where=expected > 0)
    std = residual.std(0)
    return np.divide(residual - residual.mean(0), std, out=np.zeros_like(residual), where=std > 1e-8)


@pytest.mark.parametrize("shape", [(70, 40), (40, 12)])  # more genes than spots, and more spots than genes
def test_residual_axes_match_a_dense_svd_of_the_standardised_residuals(shape):
    rng = np.random.default_rng(0)
    counts = rng.poisson(rng.gamma(1.0, 1.0, (1, shape[1])) * rng.gamma(5.0, 0.2, (shape[0], 1))).astype(float)
    counts[:, 3] = 0  # a gene without counts weighs nothing
    _, values, vt = np.linalg.svd(_standardised_residuals(counts), full_matrices=False)
    axes, scale = residual_axes(sparse.csr_matrix(counts), 4)
    np.testing.assert_allclose(np.abs(vt[:4] @ axes), np.eye(4), atol=1e-6)
    np.testing.assert_allclose(scale, np.sqrt(np.sqrt(shape[0]) / values[:4]), rtol=1e-6)
    assert np.abs(axes[3]).max() < 1e-12


def test_arpack_route_finds_the_residual_axes_of_the_gram_route(monkeypatch):
    import storm.data._expression as expression_module

    counts = sparse.csr_matrix(np.random.default_rng(3).poisson(0.8, (60, 50)).astype(float))
    gram, _ = residual_axes(counts, 4)
    monkeypatch.setattr(expression_module, "DENSE_GRAM", 10)
    arpack, _ = residual_axes(counts, 4)
    np.testing.assert_allclose(np.abs(gram.T @ arpack), np.eye(4), atol=1e-5)


def test_residual_axes_leave_out_the_depth_of_genes_seen_at_a_few_counts():
    """Many depth-only genes make depth the first log1p axis; the residual axes keep the two regions first."""
    rng = np.random.default_rng(0)
    n, region = 400, np.repeat([0, 1], 200)
    depth = rng.lognormal(0.0, 0.5, n)  # library size, unrelated to the regions
    high = np.where(region == 0, 2.0, 1.0)[:, None]  # 20 genes 2x higher in region 0, 20 others 2x in region 1
    markers = rng.poisson(np.hstack([np.tile(depth[:, None] * 10 * high, 20), np.tile(depth[:, None] * 20 / high, 20)]))
    sparse_genes = rng.poisson(np.outer(depth, np.full(3000, 0.1)))  # a whole-kit panel: depth and nothing else
    counts = sparse.csr_matrix(np.hstack([markers, sparse_genes]).astype(float))
    x = log1p_cp10k(counts)
    mean, std = column_moments(x)
    z = (x.toarray() - mean) / np.maximum(std, 0.05)

    def first_axis_correlation(axes, with_):
        return abs(np.corrcoef(z @ axes[:, 0], with_)[0, 1])

    log1p_axes, _ = whitening_axes(x, mean, std, 2)
    res_axes, _ = residual_axes(counts, 2)
    assert first_axis_correlation(log1p_axes, np.log(depth)) > 0.9  # measured 0.96
    assert first_axis_correlation(log1p_axes, region) < 0.3  # 0.16
    assert first_axis_correlation(res_axes, region) > 0.9  # 0.98
    assert first_axis_correlation(res_axes, np.log(depth)) < 0.2  # 0.05


def test_corpus_carries_the_slide_statistics_for_panel_models(sdata):
    model = _model(sdata, gene_components=8)
    corpus = Corpus.for_model(sdata, model)
    slide = corpus.slides[0]
    assert slide.gene_components.shape == (slide.expression.shape[1], 8)
    batch = NicheDataset(corpus).get_batch(np.arange(10))
    np.testing.assert_array_equal(batch.gene_mean.numpy(), slide.gene_mean)
    top = StormModel(StormConfig.from_preset("tiny", image_size=32, gene_encoding="top"), model.vocab)
    assert Corpus.for_model(sdata, top).slides[0].gene_components.shape[1] == 0  # "top" models need no axes


def test_panel_token_does_not_depend_on_the_order_of_the_panel(sdata):
    model = _model(sdata)
    corpus = Corpus.for_model(sdata, model)
    batch = NicheDataset(corpus).get_batch(np.arange(12))
    perm = torch.from_numpy(np.random.default_rng(0).permutation(batch.expression.shape[-1]))
    with torch.no_grad():
        ref = model(**batch.select("expression")).gene_embedding
        shuffled = model(
            offsets_um=batch.offsets_um,
            spot_mask=batch.spot_mask,
            expression=batch.expression[..., perm],
            gene_index=batch.gene_index[perm],
            gene_mean=batch.gene_mean[perm],
            gene_std=batch.gene_std[perm],
            gene_components=batch.gene_components[perm],
            component_scale=batch.component_scale,
            expression_mask=batch.expression_mask,
        ).gene_embedding
    torch.testing.assert_close(shuffled, ref, rtol=1e-4, atol=1e-5)


def test_panel_token_sees_a_lowly_expressed_marker_the_top_encoding_drops(sdata):
    """A gene outside a spot's 128 most expressed genes changes the panel token, and not the top-genes token."""
    corpus = Corpus.for_model(sdata, _model(sdata))
    batch = NicheDataset(corpus).get_batch(np.arange(4))
    x = batch.expression[:, :1].clone()  # centre spots only
    gene = int(torch.argmin((x[0, 0] > 0).float() * 10 + x[0, 0]))  # an unexpressed gene of the first spot
    bumped = x.clone()
    bumped[0, 0, gene] = 0.5  # expressed, but far below the spot's top 128
    assert (x[0, 0] > 0.5).sum() > 128
    common = {"offsets_um": torch.zeros(4, 1, 2), "gene_index": batch.gene_index}
    stats = {"gene_mean": batch.gene_mean, "gene_std": batch.gene_std}
    panel = _model(sdata)
    top = StormModel(StormConfig.from_preset("tiny", image_size=32, gene_encoding="top"), panel.vocab).eval()
    with torch.no_grad():
        moved_panel = (
            panel(expression=bumped, **common, **stats).embedding - panel(expression=x, **common, **stats).embedding
        )[0]
        moved_top = (top(expression=bumped, **common).embedding - top(expression=x, **common).embedding)[0]
    assert moved_panel.abs().max() > 1e-3
    assert moved_top.abs().max() == 0


def test_corpus_takes_the_axes_the_model_was_trained_with(sdata):
    """Residual axes by default; a model whose config says "log1p" (checkpoints older than the option) gets those."""
    residual = Corpus.for_model(sdata, _model(sdata, gene_components=4)).slides[0]
    log1p = Corpus.for_model(sdata, _model(sdata, gene_components=4, gene_axes="log1p")).slides[0]
    counts = sparse.csr_matrix(sdata["table"].X)
    expected, _ = residual_axes(counts[residual.expression_mask][:, _columns(sdata, residual)], 4)
    np.testing.assert_allclose(np.abs(residual.gene_components.T @ expected), np.eye(4), atol=1e-5)
    direct, _ = whitening_axes(log1p.expression[log1p.expression_mask], log1p.gene_mean, log1p.gene_std, 4)
    np.testing.assert_allclose(np.abs(log1p.gene_components.T @ direct), np.eye(4), atol=1e-5)
    assert np.abs(residual.gene_components.T @ log1p.gene_components).max() < 0.999  # not the same axes
    assert StormConfig.from_dict({"gene_encoding": "panel"}).gene_axes == "log1p"
    with pytest.raises(ValueError, match="gene_axes"):
        StormConfig(gene_axes="pearson")
    with pytest.raises(ValueError, match="gene_axes"):
        Corpus.from_sources(sdata, gene_axes="pca")


def _columns(sdata, slide):
    """Columns of the table that are in the corpus (its genes, in the vocabulary's alignment)."""
    known = np.asarray(Corpus.for_model(sdata, _model(sdata)).vocab.align(sdata["table"].var_names).indices)
    columns = np.flatnonzero(known >= 0)
    assert len(columns) == slide.expression.shape[1]
    return columns


def test_gene_encoding_is_validated():
    with pytest.raises(ValueError, match="gene_encoding"):
        StormConfig(gene_encoding="all")
    with pytest.raises(ValueError, match="gene_components"):
        StormConfig(gene_components=-1)
