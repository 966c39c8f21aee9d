"""The one niche loader: identical batches in line and from reader processes, distinct tiles once, model inputs."""

import numpy as np
import pytest
import torch

import storm as st
from storm.data import Corpus, NicheBatchSampler, NicheDataset, NicheLoader, loader_workers
from storm.models import GeneVocab, NicheBatch, StormConfig, StormModel


@pytest.fixture(scope="module")
def dataset():
    return NicheDataset(Corpus.from_sources(st.datasets.demo(), tile_px=32, tile_um=64.0, niche_size=4))


def test_batch_holds_each_distinct_tile_once(dataset):
    batch = dataset.get_batch(np.arange(40))
    slide = dataset.corpus.slides[0]
    niches = slide.neighbours[np.arange(40)]
    assert isinstance(batch, NicheBatch) and batch.n_niches == 40
    assert batch.tiles.shape[0] == len(np.unique(niches[niches >= 0])) < niches.size
    # every slot's tile is the tile of the spot in that slot
    reference = slide.tiles.read(niches[:, 2])
    np.testing.assert_array_equal(batch.tiles[batch.tile_index[:, 2]].numpy(), reference)
    assert set(batch) == {
        "offsets_um",
        "spot_mask",
        "image_mask",
        "tiles",
        "tile_index",
        "expression",
        "gene_index",
        "gene_mean",
        "gene_std",
        "gene_components",
        "component_scale",
        "expression_mask",
    }
    with pytest.raises(KeyError):
        batch["index"]
    assert batch.select("expression").tiles is None and batch.select("image").expression is None


def test_reader_processes_give_the_batches_read_in_line(dataset):
    sampler = NicheBatchSampler(dataset, batch_size=16, seed=3)
    cpu = torch.device("cpu")
    in_line = list(NicheLoader(dataset, sampler, device=cpu, num_workers=0))
    ahead = list(NicheLoader(dataset, sampler, device=cpu, num_workers=2))
    assert len(in_line) == len(ahead) == len(sampler) == 10
    for a, b in zip(in_line, ahead, strict=True):
        assert a.index.tolist() == b.index.tolist()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)


def test_batches_of_two_slides_are_refused(dataset):
    two = NicheDataset(Corpus.from_sources([st.datasets.demo(), st.datasets.demo()], tile_px=32, niche_size=4))
    with pytest.raises(ValueError, match="one slide at a time"):
        two.get_batch([0, 151])


def test_worker_rule():
    assert loader_workers(torch.device("cpu")) == 0
    assert loader_workers(torch.device("cuda")) == st.settings.num_workers
    assert loader_workers(torch.device("cpu"), 3) == 3
    with pytest.raises(ValueError, match="num_workers"):
        loader_workers(torch.device("cpu"), -1)


def test_model_runs_the_backbone_once_per_distinct_tile(dataset):
    model = StormModel(
        StormConfig.from_preset("tiny", image_size=32, tile_um=64.0, niche_size=4), vocab=dataset.corpus.vocab
    ).eval()
    batch = dataset.get_batch(np.arange(30))
    seen = []
    tokens = model.image.backbone_tokens
    model.image.backbone_tokens = lambda images: seen.append(images.shape[0]) or tokens(images)
    with torch.inference_mode():
        out = model(**batch)
    assert seen == [batch.tiles.shape[0]] and out.embedding.shape == (30, 64)


def test_trainer_refuses_a_model_of_other_geometry_or_genes(dataset):
    from storm.train import TrainConfig, Trainer

    vocab = GeneVocab.from_genes(["A", "B"])
    other = StormModel(StormConfig.from_preset("tiny", image_size=64, niche_size=4), vocab=vocab)
    with pytest.raises(ValueError, match="tile_px 32 \\(model: 64\\).*vocabulary"):
        Trainer(dataset.corpus, TrainConfig(model="tiny", tile_px=32, tile_um=64.0, max_steps=1), model=other)
