"""Results that must not depend on the layout of the user's table: row order, and counts vs normalised X."""

from __future__ import annotations

import zlib
from contextlib import contextmanager

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
        st.tl.embed(s, model=model)
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
        st.tl.embed(s, model=model)
    np.testing.assert_allclose(sdata["table"].obsm["X_storm"], other["table"].obsm["X_storm"], atol=1e-4)
    np.testing.assert_array_equal(other["table"].X.toarray(), counts)  # the user's counts untouched


def test_normalised_x_falls_back_to_the_counts_layer(model):
    import scanpy as sc

    sdata = st.datasets.demo()
    st.tl.embed(sdata, model=model, modality="expression")
    expected = sdata["table"].obsm["X_storm"].copy()
    table = sdata["table"]
    table.layers["counts"] = table.X.copy()
    sc.pp.normalize_total(table)
    sc.pp.log1p(table)
    st.tl.embed(sdata, model=model, modality="expression")
    np.testing.assert_allclose(table.obsm["X_storm"], expected, atol=1e-5)
    assert table.uns["storm"]["X_storm"]["resolved"]["layer"] == "counts"


def test_normalised_x_without_counts_embeds_the_image_only_with_modality_auto(model):
    import scanpy as sc

    sdata = st.datasets.demo()
    sc.pp.log1p(sdata["table"])
    st.tl.embed(sdata, model=model)
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


def _moved(kind: str, image: bool = False):
    """The demo, with its spots (and its image, or without it) mirrored or turned by a quarter-turn, or left as they
    are; the image's pixels move with the spots, as when a slide is scanned the other way round."""
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    from storm.datasets._build import image_from_array

    sdata = st.datasets.demo()
    pixels = np.asarray(sdata.images["he"]["scale0"].image.transpose("y", "x", "c").values)
    width = pixels.shape[1]
    shapes = sdata.shapes["spots"]
    x, y = shapes.geometry.x.to_numpy(), shapes.geometry.y.to_numpy()
    xy = {"none": (x, y), "mirror": (width - 1 - x, y), "rotate": (y, width - 1 - x)}[kind]
    pixels = {"none": pixels, "mirror": pixels[:, ::-1], "rotate": np.rot90(pixels)}[kind]
    if image:
        sdata.images["he"] = image_from_array(np.ascontiguousarray(pixels))
    else:
        del sdata.images["he"]
    moved = ShapesModel.parse(
        np.column_stack(xy),
        geometry=0,
        radius=shapes["radius"].to_numpy(),
        transformations={"global": get_transformation(shapes, "global")},
    )
    moved.index = shapes.index
    sdata.shapes["spots"] = moved
    return sdata


@pytest.mark.parametrize("modality", ["expression", "image"])
def test_embedding_is_the_same_for_a_mirrored_or_turned_slide(model, modality):
    """Eight orientations averaged: the same embedding (to 2e-5 with the image, whose moved tiles are resampled at most
    one grey level apart); one pass (``storm.settings.orientations = 1``) moves it by a third of its typical value."""
    embeddings = {}
    for orientations in (8, 1):
        with _orientations(orientations):
            for kind in ("none", "mirror", "rotate"):
                sdata = _moved(kind, image=modality == "image")
                st.tl.embed(sdata, model=model, modality=modality)
                embeddings[orientations, kind] = sdata["table"].obsm["X_storm"]
                assert sdata["table"].uns["storm"]["X_storm"]["orientations"] == orientations
    reference = embeddings[8, "none"]
    scale = np.abs(reference).mean()
    for kind in ("mirror", "rotate"):
        assert np.abs(embeddings[8, kind] - reference).max() < 1e-4 * scale
        assert np.abs(embeddings[1, kind] - embeddings[1, "none"]).max() > 0.1 * scale


def test_niches_are_the_same_spots_however_a_grid_lies():
    """On an exact grid the fourth to seventh nearest spots tie; the niche must not depend on how the tie is met."""
    from storm.data import niche_neighbours, spot_ties
    from storm.data._augment import ORIENTATIONS, flip_rotate_offsets

    grid = np.stack(np.meshgrid(np.arange(12.0), np.arange(9.0)), -1).reshape(-1, 2) * 100
    ties = spot_ties([f"spot{i}" for i in range(len(grid))])
    reference = [set(row) for row in niche_neighbours(grid, 6, ties)]
    for flip, k in ORIENTATIONS:
        moved = flip_rotate_offsets(grid, flip=flip, k=k) + [1234.5, -77.25]
        assert [set(row) for row in niche_neighbours(moved, 6, ties)] == reference
    order = np.random.default_rng(0).permutation(len(grid))
    shuffled = niche_neighbours(grid[order], 6, ties[order])
    assert [set(order[row]) for row in shuffled[np.argsort(order)]] == reference


def test_domains_do_not_move_with_the_seed_or_a_rigid_motion_of_the_slide():
    """One clustering moved ARI 0.65-0.68 with the seed and 0.28-0.62 under a mirror or rotation on this slide; the
    consensus of 16 gives 0.97-1.00 with the seed, and the eight orientations the very same domains under a mirror or
    a quarter-turn (0.74 and 0.93 with one pass: the embeddings moved)."""
    from sklearn.metrics import adjusted_rand_score

    labels = {}
    for kind, seed in (("none", 0), ("none", 1), ("none", 2), ("mirror", 0), ("rotate", 0)):
        sdata = _moved(kind)
        st.tl.domains(sdata, 4, random_state=seed)
        labels[kind, seed] = sdata["table"].obs["storm_domain"].to_numpy()
        record = sdata["table"].uns["storm"]["storm_domain"]
        assert record["consensus_runs"] == 16 and 0.5 < record["stability"] <= 1
    reference = labels["none", 0]
    assert adjusted_rand_score(reference, labels["none", 1]) > 0.9
    assert adjusted_rand_score(reference, labels["none", 2]) > 0.9
    np.testing.assert_array_equal(labels["mirror", 0], reference)
    np.testing.assert_array_equal(labels["rotate", 0], reference)


@contextmanager
def _orientations(value: int):
    before = st.settings.orientations
    st.settings.orientations = value
    try:
        yield
    finally:
        st.settings.orientations = before


def test_consensus_matches_labels_across_runs_and_takes_the_majority():
    from storm.tl._domains import consensus

    truth = np.repeat([0, 1, 2], 10)
    runs = [np.array([2, 0, 1])[truth] for _ in range(3)]  # the same domains under other numbers
    runs.append(truth.copy())
    runs[-1][:3] = 1  # one run disagrees on three spots
    labels, stability = consensus(runs)
    np.testing.assert_array_equal(labels, truth)  # the majority, numbered by size then first spot
    assert 0.8 < stability < 1
    labels, stability = consensus([truth[::-1].copy()] * 4)
    assert stability == 1 and labels[0] == 0
