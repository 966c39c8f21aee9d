"""Results that must not depend on the layout of the user's table: row order, and counts vs normalised X."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import storm as st
from storm.io._counts import normalised_reason
from storm.models import GeneVocab, StormConfig, StormModel

# the demo has spots without counts, which sc.pp.normalize_total warns about
pytestmark = pytest.mark.filterwarnings("ignore:Some cells have zero counts")


@pytest.fixture(scope="module")
def model():
    vocab = GeneVocab.from_genes(st.datasets.demo()["table"].var_names)
    return StormModel(StormConfig.from_preset("tiny", image_size=32), vocab=vocab).eval()


def _shuffled(seed: int = 0):
    """The demo, and the demo with its table rows in another order (spots, coordinates and counts moved together)."""
    sdata, other = st.datasets.demo(), st.datasets.demo()
    order = np.random.default_rng(seed).permutation(other["table"].n_obs)
    other.tables["table"] = other["table"][order].copy()
    return sdata, other


def _rows(sdata, other, values):
    """``values`` of ``other``'s table in the row order of ``sdata``'s."""
    return np.asarray(values)[other["table"].obs_names.get_indexer(sdata["table"].obs_names)]


def _domain_embedding(sdata) -> None:
    """A smooth 8-dimensional embedding of position plus noise, seeded per spot name (so the same for any row order)."""
    table = sdata["table"]
    xy = table.obsm["spatial"].astype(float)
    noise = np.stack([np.random.default_rng(zlib.crc32(n.encode())).normal(size=6) for n in table.obs_names])
    table.obsm["X_rep"] = np.column_stack([xy / xy.std(0), noise]).astype(np.float32)


@pytest.mark.parametrize(
    ("n_domains", "method"),
    [(4, "gmm"), (7, "gmm"), (7, "kmeans"), (None, "leiden")],
    ids=["gmm4", "gmm7", "kmeans7", "leiden"],
)
def test_domains_label_each_spot_the_same_whatever_the_row_order(n_domains, method):
    sdata, other = _shuffled()
    for s in (sdata, other):
        _domain_embedding(s)
        st.tl.domains(s, n_domains, method=method, use_rep="X_rep")
    labels = sdata["table"].obs["storm_domain"].to_numpy()
    np.testing.assert_array_equal(labels, _rows(sdata, other, other["table"].obs["storm_domain"]))
    assert len(set(labels)) > 1


def test_embedding_of_each_spot_is_the_same_whatever_the_row_order(model):
    sdata, other = _shuffled(1)
    for s in (sdata, other):
        st.tl.embed(s, model)
    x = sdata["table"].obsm["X_storm"]
    # the slide statistics of the panel encoding are sums over rows: their float32 round-off depends on the row order
    np.testing.assert_allclose(x, _rows(sdata, other, other["table"].obsm["X_storm"]), atol=1e-4)


def test_embedding_of_each_spot_is_the_same_whatever_the_gene_order(model):
    """Genes in another column order (a CSR with unsorted indices, as ``adata[:, genes].copy()`` gives) embed the same."""
    sdata, other = st.datasets.demo(), st.datasets.demo()
    order = np.random.default_rng(2).permutation(other["table"].n_vars)
    other.tables["table"] = other["table"][:, order].copy()
    assert not other["table"].X.has_sorted_indices
    counts = other["table"].X.toarray()
    for s in (sdata, other):
        st.tl.embed(s, model)
    np.testing.assert_allclose(sdata["table"].obsm["X_storm"], other["table"].obsm["X_storm"], atol=1e-4)
    np.testing.assert_array_equal(other["table"].X.toarray(), counts)  # the user's counts untouched


def test_normalised_x_falls_back_to_the_counts_layer(model):
    import scanpy as sc

    sdata = st.datasets.demo()
    st.tl.embed(sdata, model, modality="expression")
    expected = sdata["table"].obsm["X_storm"].copy()
    table = sdata["table"]
    table.layers["counts"] = table.X.copy()
    sc.pp.normalize_total(table)
    sc.pp.log1p(table)
    st.tl.embed(sdata, model, modality="expression")
    np.testing.assert_allclose(table.obsm["X_storm"], expected, atol=1e-5)
    assert table.uns["storm"]["X_storm"]["resolved"]["layer"] == "counts"


def test_normalised_x_without_counts_embeds_the_image_only_with_modality_auto(model):
    import scanpy as sc

    sdata = st.datasets.demo()
    sc.pp.log1p(sdata["table"])
    st.tl.embed(sdata, model)
    assert sdata["table"].uns["storm"]["X_storm"]["modality"] == "image"
    assert "X_storm_gene" not in sdata["table"].obsm


def test_normalised_reason_tells_counts_from_normalised_values():
    rng = np.random.default_rng(0)
    counts = rng.poisson(2.0, size=(50, 30)).astype(np.float32)
    assert normalised_reason(counts) is None
    assert normalised_reason(counts * 1.37 + 40) is None  # ambient-corrected or pseudo-counts: large non-integers
    cp10k = counts / counts.sum(1, keepdims=True) * 1e4
    assert "normalize_total" in normalised_reason(cp10k)
    assert "log1p" in normalised_reason(np.log1p(counts * rng.uniform(0.5, 2.0, size=(50, 1))))
    assert normalised_reason(np.zeros((3, 3))) is None
