"""The inference runner: every spot's niche through the model, the backbone run once per distinct tile."""

import numpy as np
import pytest
import torch

import storm as st
from storm.models import GeneVocab, StormConfig, StormModel
from storm.tl._encode import _batch_tiles, _read_ahead, encode
from storm.train import Corpus, NicheDataset, collate_niches


@pytest.fixture(scope="module")
def demo():
    return st.datasets.demo()


@pytest.fixture(scope="module")
def model(demo):
    torch.manual_seed(0)
    config = StormConfig.from_preset("tiny", image_size=32, tile_um=64.0, niche_size=4)
    return StormModel(config, vocab=GeneVocab.from_genes(demo["table"].var_names)).eval()


def test_encode_matches_the_model_on_full_niche_batches(demo, model):
    genes = ["ERBB2", "KRT19", "COL1A1"]
    out = encode(demo, model, modalities="both", genes=genes, batch_size=50)
    # reference: the plain forward on collated niches with every tile read (no de-duplication), in one batch
    corpus = Corpus.from_sources(demo, vocab=model.vocab, tile_px=32, tile_um=64.0, niche_size=4)
    batch = collate_niches(NicheDataset(corpus).get_batch(np.arange(corpus.n_spots)))
    with torch.inference_mode():
        ref = model(**batch, genes=torch.tensor(model.vocab.align(genes).indices.tolist()))
    # batches follow the image's chunk rows (not table order); the outputs come back in table order
    assert not np.array_equal(corpus.slides[0].tiles.raster_order(), np.arange(corpus.n_spots))
    assert out.modalities == "both" and list(out.genes) == genes
    assert list(out.obs_names) == list(corpus.slides[0].slide.obs_names)
    np.testing.assert_allclose(out.embedding, ref.embedding.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.niche_embedding, ref.niche_embedding.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.predicted_expression, ref.predicted_expression.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("workers", [1, 3])
def test_reading_ahead_in_threads_gives_the_tiles_read_in_line(demo, model, workers):
    """The accelerator path (threads reading ahead, each batch split between them) yields what the CPU path reads."""
    slide = Corpus.from_sources(demo, vocab=model.vocab, tile_px=32, tile_um=64.0, niche_size=4).slides[0]
    order = slide.tiles.raster_order()
    batches = [order[i : i + 40] for i in range(0, len(order), 40)]
    in_line = list(_batch_tiles(slide, batches, torch.device("cpu"), workers))
    ahead = list(_read_ahead(slide, batches, workers))
    assert len(ahead) == len(in_line) == 4
    assert max(len(b.tiles) for b in ahead) > 2 * 16  # large enough to be split between the threads
    for a, b in zip(ahead, in_line, strict=True):
        np.testing.assert_array_equal(a.valid, b.valid)
        np.testing.assert_array_equal(a.inverse, b.inverse)
        np.testing.assert_array_equal(a.tiles, b.tiles)
    np.testing.assert_array_equal(
        in_line[0].tiles, slide.tiles.read(np.unique(slide.neighbours[batches[0]][in_line[0].valid]))
    )


def test_modalities(demo, model):
    image = encode(demo, model, modalities="image")
    expression = encode(demo, model, modalities="expression")
    auto = encode(demo, model)
    assert auto.modalities == "both" and image.gene_embedding is None and expression.image_embedding is None
    assert image.predicted_expression is None  # no genes asked for
    # the image-only embedding does not depend on expression: zeroing the counts leaves it unchanged
    blank = demo["table"].copy()
    blank.X = blank.X * 0
    assert not np.allclose(image.embedding, expression.embedding)
    sdata = st.datasets.demo()
    sdata.tables["table"] = blank
    np.testing.assert_allclose(encode(sdata, model, modalities="image").embedding, image.embedding, atol=1e-6)


def test_errors_name_the_argument(demo, model):
    with pytest.raises(ValueError, match="modalities"):
        encode(demo, model, modalities="rna")
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        encode(demo, model, genes=["ERBB2", "NOT_A_GENE"])
    with pytest.raises(ValueError, match="batch_size"):
        encode(demo, model, batch_size=0)
    coarse = StormModel(StormConfig.from_preset("tiny", image_size=64, tile_um=4.0), vocab=model.vocab)
    with pytest.raises(ValueError, match="modalities='image'.*H&E image fine enough"):
        encode(demo, coarse, modalities="image")
