"""The inference runner: every spot's niche through the model, the backbone run once per distinct tile."""

import numpy as np
import pytest
import torch

import storm as st
from storm.data import Corpus, NicheDataset
from storm.models import GeneVocab, StormConfig, StormModel
from storm.tl._encode import encode


@pytest.fixture(scope="module")
def demo():
    return st.datasets.demo()


@pytest.fixture(scope="module")
def model(demo):
    torch.manual_seed(0)
    config = StormConfig.from_preset("tiny", image_size=32, tile_um=64.0, niche_size=4)
    return StormModel(config, vocab=GeneVocab.from_genes(demo["table"].var_names)).eval()


def test_encode_matches_the_model_on_full_niche_batches(demo, model):
    """Every niche in the slide's eight orientations, averaged: the mean of eight plain forwards (tiles and offsets
    flipped and turned together, every niche slot's tile spelled out, one batch)."""
    from storm.data._augment import ORIENTATIONS, flip_rotate_offsets, flip_rotate_tiles

    genes = ["ERBB2", "KRT19", "COL1A1"]
    out = encode(demo, model, modality="both", genes=genes, batch_size=50)
    corpus = Corpus.for_model(demo, model)
    batch = NicheDataset(corpus).get_batch(np.arange(corpus.n_spots))
    images = batch.tiles[batch.tile_index.clamp(min=0)] * (batch.tile_index >= 0)[..., None, None, None]
    inputs = {k: v for k, v in batch.items() if k not in ("tiles", "tile_index", "offsets_um")}
    index = torch.tensor(model.vocab.align(genes).indices.tolist())
    refs = []
    with torch.inference_mode():
        for flip, k in ORIENTATIONS:
            turned = flip_rotate_tiles(images.flatten(0, 1), flip=flip, k=k).reshape(images.shape)
            offsets = flip_rotate_offsets(batch.offsets_um, flip=flip, k=k)
            refs.append(model(**inputs, offsets_um=offsets, images=turned, genes=index))
    # batches follow the image's chunk rows (not table order); the outputs come back in table order
    assert not np.array_equal(corpus.slides[0].tiles.raster_order(), np.arange(corpus.n_spots))
    assert out.modalities == "both" and list(out.genes) == genes
    assert list(out.obs_names) == list(corpus.slides[0].slide.obs_names)
    for name in ("embedding", "niche_embedding", "predicted_expression"):
        expected = torch.stack([getattr(r, name) for r in refs]).mean(0).numpy()
        np.testing.assert_allclose(getattr(out, name), expected, rtol=1e-4, atol=1e-5)
    # the orientations differ (else averaging them would prove nothing), and one pass is the first of them
    assert np.abs(refs[0].embedding.numpy() - refs[5].embedding.numpy()).max() > 0.01
    st.settings.orientations = 1
    try:
        single = encode(demo, model, modality="both", genes=genes, batch_size=50)
    finally:
        st.settings.orientations = 8
    np.testing.assert_allclose(single.embedding, refs[0].embedding.numpy(), rtol=1e-4, atol=1e-5)


def test_modalities(demo, model):
    image = encode(demo, model, modality="image")
    expression = encode(demo, model, modality="expression")
    auto = encode(demo, model)
    assert auto.modalities == "both" and image.gene_embedding is None and expression.image_embedding is None
    assert image.predicted_expression is None  # no genes asked for
    # the image-only embedding does not depend on expression: zeroing the counts leaves it unchanged
    blank = demo["table"].copy()
    blank.X = blank.X * 0
    assert not np.allclose(image.embedding, expression.embedding)
    sdata = st.datasets.demo()
    sdata.tables["table"] = blank
    np.testing.assert_allclose(encode(sdata, model, modality="image").embedding, image.embedding, atol=1e-6)


def test_errors_name_the_argument(demo, model):
    with pytest.raises(ValueError, match="modality"):
        encode(demo, model, modality="rna")
    with pytest.raises(KeyError, match="NOT_A_GENE"):
        encode(demo, model, genes=["ERBB2", "NOT_A_GENE"])
    with pytest.raises(ValueError, match="batch_size"):
        encode(demo, model, batch_size=0)
    coarse = StormModel(StormConfig.from_preset("tiny", image_size=64, tile_um=4.0), vocab=model.vocab)
    with pytest.raises(
        ValueError, match=r"its image 'he' \(0.69 µm/px\) is 11.0x coarser than the tiles.*`image_key=`"
    ):
        encode(demo, coarse, modality="image")
