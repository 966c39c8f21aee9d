"""The pretraining corpus: resolution of many slides, expression normalisation, niche indices, stats and errors."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

import storm as st
from storm.data import Corpus, NicheDataset, log1p_cp10k, niche_neighbours
from storm.models import GeneVocab

SYNTH = {"um_per_px": 0.5, "pitch_um": 40.0, "spot_um": 20.0}  # 42 spots on a 512 x 512 px (256 µm) image


def synthetic(**kwargs):
    return st.datasets.synthetic(512, 512, **{**SYNTH, **kwargs})


def without_image(sdata):
    del sdata.images["he"]
    return sdata


@pytest.fixture(scope="module")
def demo_corpus():
    return Corpus.from_sources([st.datasets.demo()], tile_px=32, niche_size=6)


@pytest.fixture(scope="module")
def mixed_corpus():
    sources = [
        synthetic(n_genes=20),
        without_image(synthetic(n_genes=30, random_state=1)),
        synthetic(n_genes=0, n_spots=5),
    ]
    return Corpus.from_sources(sources, tile_px=32, tile_um=16.0, niche_size=6, names=["both", "genes", "he"])


def brute_force_check(xy: np.ndarray, neighbours: np.ndarray, k: int) -> None:
    """Each row: the centre first, then k distinct spots whose distances are exactly the k smallest (ties allowed)."""
    d = np.linalg.norm(xy[:, None] - xy[None], axis=-1)
    for i, row in enumerate(neighbours):
        assert row[0] == i
        chosen = row[1:][row[1:] >= 0]
        assert len(chosen) == min(k, len(xy) - 1) and len(set(chosen.tolist())) == len(chosen) and i not in chosen
        expected = np.sort(np.delete(d[i], i))[: len(chosen)]
        np.testing.assert_allclose(d[i, chosen], expected)  # increasing, and the k smallest


def test_neighbours_are_the_k_nearest_in_um(demo_corpus):
    cs = demo_corpus.slides[0]
    assert cs.neighbours.shape == (151, 7)
    brute_force_check(cs.slide.spot_xy_um, cs.neighbours, 6)
    # legacy ST spots are 200 µm apart (µm/px is fitted to that pitch); the nearest one is a little closer (jitter)
    first = cs.niche_offsets_um(np.arange(151))[:, 1]
    assert np.median(np.linalg.norm(first, axis=1)) == pytest.approx(190.0, rel=0.05)


def test_neighbours_on_a_random_synthetic_subset():
    sdata = st.datasets.synthetic(1024, 1024, um_per_px=0.25, pitch_um=30.0, n_spots=60, n_genes=5, random_state=3)
    corpus = Corpus.from_sources(sdata, tile_px=16, tile_um=8.0, niche_size=8)
    cs = corpus.slides[0]
    brute_force_check(cs.slide.spot_xy_um, cs.neighbours, 8)
    # µm, not pixels: spot centres in µm are the pixel centres times 0.25 µm/px
    np.testing.assert_allclose(cs.slide.spot_xy_um, cs.slide.spot_xy_px * 0.25)


def test_niche_neighbours_pads_small_slides_and_puts_the_centre_first():
    xy = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0]])  # spots 0 and 1 coincide
    nb = niche_neighbours(xy, 4)
    assert nb[:2].tolist() == [[0, 1, 2, -1, -1], [1, 0, 2, -1, -1]]
    assert nb[2, 0] == 2 and sorted(nb[2, 1:3].tolist()) == [0, 1] and (nb[2, 3:] == -1).all()
    assert niche_neighbours(xy, 0).tolist() == [[0], [1], [2]]


def test_offsets_and_padding_in_items():
    sdata = synthetic(n_spots=4, n_genes=3)
    corpus = Corpus.from_sources(sdata, tile_px=16, tile_um=16.0, niche_size=6)
    batch = NicheDataset(corpus)[2]
    cs = corpus.slides[0]
    xy = cs.slide.spot_xy_um
    nb = cs.neighbours[2]
    assert batch["spot_mask"][0].tolist() == [True] * 4 + [False] * 3
    np.testing.assert_allclose(batch["offsets_um"][0, :4], xy[nb[:4]] - xy[2], atol=1e-4)
    assert (batch["offsets_um"][0, 0] == 0).all() and (batch["offsets_um"][0, 4:] == 0).all()
    assert batch["tile_index"][0, 4:].tolist() == [-1] * 3 and batch["tiles"].shape[0] == 4
    assert batch["image_mask"][0].tolist() == batch["spot_mask"][0].tolist()
    np.testing.assert_array_equal(batch["tiles"][batch["tile_index"][0, 1]], cs.tiles.read([nb[1]])[0])


def test_log1p_cp10k_on_a_hand_made_matrix():
    counts = np.array([[1, 3, 0, 6], [0, 0, 0, 0], [2, 0, 0, 0]], dtype=np.float32)
    expected = np.log1p(np.array([[1000, 3000, 0, 6000], [0, 0, 0, 0], [10000, 0, 0, 0]], dtype=np.float64))
    for x in (counts, sparse.csr_matrix(counts), sparse.csc_matrix(counts)):
        out = log1p_cp10k(x)
        assert sparse.isspmatrix_csr(out) and out.dtype == np.float32
        np.testing.assert_allclose(out.toarray(), expected, rtol=1e-6)
    assert out.nnz == 4
    with pytest.raises(ValueError, match="raw counts"):
        log1p_cp10k(np.array([[1.0, -1.0]]))


def test_log1p_cp10k_leaves_a_matrix_with_unsorted_indices_as_it_was():
    counts = sparse.csr_matrix(np.array([[1, 3, 0, 6], [2, 0, 5, 0]], dtype=np.float32))[:, [3, 0, 2, 1]]
    assert not counts.has_sorted_indices
    before = counts.toarray().copy()
    out = log1p_cp10k(counts)
    np.testing.assert_array_equal(counts.toarray(), before)
    np.testing.assert_allclose(np.expm1(out.toarray()), before / before.sum(1, keepdims=True) * 1e4, rtol=1e-5)


def test_expression_is_normalised_over_all_genes_and_aligned_to_the_vocab():
    sdata = synthetic(n_genes=6)
    vocab = GeneVocab(["GENE3", "OTHER", "GENE0"])
    corpus = Corpus.from_sources(sdata, vocab=vocab, tile_px=16, tile_um=16.0, niche_size=2)
    cs = corpus.slides[0]
    assert cs.gene_index.tolist() == [2, 0]  # GENE0 -> entry 2, GENE3 -> entry 0
    assert sparse.isspmatrix_csr(cs.expression) and cs.expression.dtype == np.float32
    counts = sdata["table"].X.toarray()
    expected = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)[:, [0, 3]]
    np.testing.assert_allclose(cs.expression.toarray(), expected, rtol=1e-5)
    batch = NicheDataset(corpus)[5]
    np.testing.assert_allclose(batch["expression"][0], expected[cs.neighbours[5]], rtol=1e-5)
    assert batch["gene_index"].tolist() == [2, 0]
    stats = corpus.stats()["slides"][0]
    assert (stats["genes"], stats["genes_in_vocab"]) == (6, 2)


def test_mixed_corpus_masks_and_batches(mixed_corpus):
    corpus = mixed_corpus
    assert [s.name for s in corpus.slides] == ["both", "genes", "he"]
    assert [s.has_image for s in corpus.slides] == [True, False, True]
    assert [s.has_expression for s in corpus.slides] == [True, True, False]
    assert corpus.offsets.tolist() == [0, 42, 84, 89]
    assert len(corpus.vocab) == 30  # union of GENE0..GENE19 and GENE0..GENE29
    dataset = NicheDataset(corpus)
    both, genes, he = (dataset.get_batch([i]) for i in (3, 42 + 3, 84 + 3))
    assert "tiles" not in genes and not genes["image_mask"].any() and genes["expression_mask"].all()
    assert genes["expression"].shape == (1, 7, 30)
    assert he["tiles"].shape == (5, 32, 32, 3) and he["image_mask"][0, :5].all() and not he["image_mask"][0, 5:].any()
    assert "expression" not in he and not he["expression_mask"].any() and he["spot_mask"].sum() == 5
    assert both["image_mask"].all() and both["expression_mask"].all() and both["tiles"].shape == (7, 32, 32, 3)
    assert [x.slide for x in (both, genes, he)] == [0, 1, 2]

    b = dataset.get_batch([42, 43])
    assert "tiles" not in b and b["expression"].shape == (2, 7, 30) and b["gene_index"].shape == (30,)
    b = dataset.get_batch([85, 86])
    assert "expression" not in b and "gene_index" not in b and b["tile_index"].shape == (2, 7)
    assert b["spot_mask"].sum().item() == 10 and not b["expression_mask"].any()
    with pytest.raises(ValueError, match="one slide at a time"):
        dataset.get_batch([0, 42])


def test_stats_and_repr(mixed_corpus):
    stats = mixed_corpus.stats()
    assert {k: stats[k] for k in ("n_slides", "n_spots", "n_spots_with_image", "n_genes_vocab")} == {
        "n_slides": 3,
        "n_spots": 89,
        "n_spots_with_image": 47,
        "n_genes_vocab": 30,
    }
    counts = [mixed_corpus.slides[i].slide.table.X.sum(1) for i in (0, 1)]
    assert stats["n_spots_with_expression"] == sum(int((np.asarray(c) > 0).sum()) for c in counts)
    assert stats["slides"][1] == {
        "name": "genes",
        "spots": 42,
        "genes": 30,
        "genes_in_vocab": 30,
        "um_per_px": 0.5,
        "um_per_px_source": stats["slides"][1]["um_per_px_source"],
        "has_image": False,
        "spots_with_expression": int((np.asarray(counts[1]) > 0).sum()),
    }
    assert [s["genes"] for s in stats["slides"]] == [20, 30, 0]
    assert (stats["tile_px"], stats["tile_um"], stats["niche_size"]) == (32, 16.0, 6)
    import json

    json.dumps(stats)  # stored in the checkpoint's model card
    text = repr(mixed_corpus)
    assert text.startswith("Corpus: 3 slides, 89 spots") and "in vocab" in text.splitlines()[1]
    assert text.splitlines()[3].split() == ["genes", "42", "30", "30", "0.500", "no"]
    assert len(text.splitlines()) == 5


def test_zarr_paths_and_per_slide_arguments(tmp_path):
    path = tmp_path / "one.zarr"
    synthetic(n_genes=4).write(path)
    corpus = Corpus.from_sources([str(path), synthetic(n_genes=4)], tile_px=16, um_per_px=[None, 0.25])
    assert [s.name for s in corpus.slides] == ["one", "synthetic"]
    assert [s.slide.um_per_px for s in corpus.slides] == [0.5, 0.25]
    # a path on its own is one source
    assert Corpus.from_sources(path, tile_px=16).n_spots == 42


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="corpus is empty"):
        Corpus.from_sources([])
    with pytest.raises(ValueError, match=r"0\.0% overlap"):
        Corpus.from_sources(synthetic(n_genes=5), vocab=GeneVocab(["ACTB", "GAPDH"]), tile_px=16)
    with pytest.raises(ValueError, match="has an H&E image, but the image objectives"):
        Corpus.from_sources([without_image(synthetic())], require_images=True, tile_px=16)
    with pytest.raises(FileNotFoundError, match=r"corpus slide 1 \('missing'\).*No SpatialData store"):
        Corpus.from_sources([synthetic(), "/nonexistent/missing.zarr"], tile_px=16)
    with pytest.raises(ValueError, match="corpus slide 0 .*tables"):
        bad = synthetic()
        bad.tables["other"] = bad.tables["table"].copy()
        Corpus.from_sources(bad, tile_px=16)
    with pytest.raises(ValueError, match="no H&E image and no genes"):
        Corpus.from_sources([synthetic(), without_image(synthetic(n_genes=0))], tile_px=16)
    with pytest.raises(ValueError, match="niche_size"):
        Corpus.from_sources(synthetic(), niche_size=-1)
    with pytest.raises(ValueError, match="one per source"):
        Corpus.from_sources([synthetic(), synthetic()], um_per_px=[0.5])


def test_images_much_coarser_than_the_tiles_are_left_out(caplog):
    # demo: 0.689 µm/px. Tiles of 16 µm at 64 px need 0.25 µm/px: 2.8x upsampling is kept, 1.5x allowed is not.
    kept = Corpus.from_sources([st.datasets.demo()], tile_px=64, tile_um=16.0, niche_size=2)
    assert kept.slides[0].has_image
    with caplog.at_level("WARNING", logger="storm"):
        dropped = Corpus.from_sources([st.datasets.demo()], tile_px=64, tile_um=16.0, niche_size=2, max_upsample=1.5)
    assert not dropped.slides[0].has_image and dropped.slides[0].has_expression
    assert "2.8x coarser" in caplog.text and "expression only" in caplog.text
    assert NicheDataset(dropped).get_batch([0, 1]).get("tiles") is None
    with pytest.raises(ValueError, match="max_upsample"):
        Corpus.from_sources([st.datasets.demo()], max_upsample=0.5)


def test_expression_reference_pools_the_slides_within_slide_moments(mixed_corpus):
    corpus = mixed_corpus
    mean, std = corpus.expression_reference()
    assert mean.shape == std.shape == (30,)
    both, genes = corpus.slides[0], corpus.slides[1]
    x = {s.name: s.expression.toarray()[s.expression_mask] for s in (both, genes)}
    # GENE0 (on both slides): spot-weighted mean of the slide means, root of the weighted mean of the slide variances
    g = corpus.vocab.align(["GENE0"]).indices[0]
    n = {name: len(v) for name, v in x.items()}
    col = {s.name: x[s.name][:, list(s.gene_index).index(g)] for s in (both, genes)}
    expected_mean = sum(n[k] * col[k].mean() for k in n) / sum(n.values())
    expected_std = np.sqrt(sum(n[k] * col[k].var() for k in n) / sum(n.values()))
    np.testing.assert_allclose([mean[g], std[g]], [expected_mean, expected_std], rtol=1e-4)
    # GENE25 is only on the second slide: its own moments; the pooled spread is within slides, not across them
    g25 = corpus.vocab.align(["GENE25"]).indices[0]
    col25 = x["genes"][:, list(genes.gene_index).index(g25)]
    np.testing.assert_allclose([mean[g25], std[g25]], [col25.mean(), col25.std()], rtol=1e-4)
    # a vocabulary gene no slide measures: mean 0, standard deviation 1
    unmeasured = Corpus.from_sources(
        synthetic(n_genes=3), vocab=GeneVocab(["GENE0", "ABSENT"]), tile_px=16, tile_um=16.0, niche_size=2
    ).expression_reference()
    assert (unmeasured[0][1], unmeasured[1][1]) == (0.0, 1.0)
