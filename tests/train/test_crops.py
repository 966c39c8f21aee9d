"""Crops over all the tissue, their views, and the image branch's self-supervised objective."""

import numpy as np
import pytest
import torch

import storm as st
from storm.data import Corpus, NicheBatchSampler, NicheDataset, TissueCrops
from storm.data._crops import _at
from storm.models import StormConfig, StormModel
from storm.train import ObjectiveWeights, StormObjectives


@pytest.fixture(scope="module")
def slide():
    return st.io.resolve(st.datasets.demo())


def test_crop_centres_cover_the_tissue_not_only_the_spots(slide):
    crops = TissueCrops(4, tile_px=32, tile_um=112.0)
    cells, size = crops.tissue_px(slide)
    h, w = slide.levels[0].shape_yx
    assert size.tolist() == pytest.approx([8.0, 8.0], abs=0.1)  # the demo's pyramid level nearest 8 µm/px: 5.5 µm
    assert len(cells) > 100 * slide.n_spots  # tens of thousands of possible crops against 151 spots
    centres = crops.centres(slide, np.random.default_rng(0), n=20_000)
    assert (centres >= 0).all() and (centres[:, 0] <= w).all() and (centres[:, 1] <= h).all()
    # spread over the whole image, not clustered at the spots: every quarter of the image gets crops
    quarter = (centres[:, 0] > w / 2).astype(int) * 2 + (centres[:, 1] > h / 2)
    assert np.bincount(quarter, minlength=4).min() > 2_000


def test_views_are_the_crop_shifted_and_the_wider_context(slide):
    crops = TissueCrops(6, tile_px=64, tile_um=112.0, context=2.0, jitter=0.0, color_jitter=0.0, stain_jitter=0.0)
    crops.augment.flip = crops.augment.rot90 = False
    views = crops(slide, np.random.default_rng(3))
    assert views.shape == (3, 6, 64, 64, 3) and views.dtype == np.uint8
    np.testing.assert_array_equal(views[0], views[1])  # no jitter, no augmentation: the same tile twice
    centres = crops.centres(slide, np.random.default_rng(3))
    expected = st.pp.TileSet(_at(slide, centres), tile_px=64, tile_um=224.0).read(np.arange(6))
    np.testing.assert_array_equal(views[2], expected)  # the context view covers twice the tile, resampled


def test_views_are_deterministic_per_seed_and_differ_between_views(slide):
    crops = TissueCrops(4, tile_px=32, tile_um=112.0)
    a, b = crops(slide, np.random.default_rng(1)), crops(slide, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a[0], a[1])  # shifted, flipped/rotated and stain-jittered independently
    with pytest.raises(ValueError, match="`n` .* at least 2"):
        TissueCrops(1, tile_px=32, tile_um=112.0)


def test_niche_batches_carry_views_only_when_asked():
    corpus = Corpus.from_sources(st.datasets.demo(), tile_px=32, niche_size=4)
    plain = NicheDataset(corpus)
    with_crops = NicheDataset(corpus, crops=TissueCrops(4, tile_px=32, tile_um=112.0), seed=2)
    indices = NicheBatchSampler(plain, batch_size=8, seed=0).batches()[0]
    assert plain.get_batch(indices).views is None
    views = with_crops.get_batch(indices).views
    assert tuple(views.shape) == (3, 4, 32, 32, 3)
    torch.testing.assert_close(with_crops.get_batch(indices).views, views)  # seeded by (seed, epoch, batch)
    with_crops.set_epoch(1)
    assert not torch.equal(with_crops.get_batch(indices).views, views)


def _model():
    torch.manual_seed(0)
    return StormModel(StormConfig.from_preset("tiny", image_size=32, vocab_size=10))


def test_image_views_objective_separates_crops_and_trains_the_image_branch(slide):
    model = _model()
    objectives = StormObjectives(ObjectiveWeights(masked_image=0.0), model=model)
    crops = TissueCrops(8, tile_px=32, tile_um=112.0)
    views = torch.from_numpy(crops(slide, np.random.default_rng(0)))
    loss = objectives._image_views(model, views)
    assert 0 < loss.item() < 2 * np.log(8) + 1  # InfoNCE over 8 crops: around log(8) untrained
    loss.backward()
    assert model.image.backbone.conv_stem.weight.grad.abs().sum() > 0
    # identical views of distinct crops: the contrast is already solved, far below chance
    same = views[:1].expand(3, -1, -1, -1, -1)
    with torch.no_grad():
        assert objectives._image_views(model, same).item() < loss.item()
    with pytest.raises(ValueError, match="needs the model being trained"):
        StormObjectives()._image_views(model, views)


def test_pretraining_with_crops_logs_the_image_objective(tmp_path):
    import pandas as pd

    st.settings.progress = False
    st.tl.pretrain(
        [st.datasets.demo()],
        config="tiny",
        max_steps=3,
        batch_size=4,
        crops_per_batch=4,
        tile_px=32,
        warmup_stage_steps=1,
        output_dir=tmp_path / "run",
    )
    losses = pd.read_csv(tmp_path / "run" / "losses.csv")
    assert losses["image_views"].notna().all() and (losses["image_views"] > 0).all()
    with pytest.raises(ValueError, match="`crops_per_batch` must be 0"):
        st.train.TrainConfig(crops_per_batch=1)


def test_adapt_image_task_trains_the_image_branch_alone_on_crops():
    from storm.models import GeneVocab

    sdata = st.datasets.demo()
    torch.manual_seed(0)
    config = StormConfig.from_preset("tiny", image_size=32, niche_size=4)
    model = StormModel(config, vocab=GeneVocab.from_genes(sdata["table"].var_names)).eval()
    adapted = st.tl.adapt(sdata, model=model, task="image", steps=3, batch_size=4)
    before, after = model.state_dict(), adapted.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("image.") for k in changed)  # gene branch, fusion and decoders untouched
    assert any(k.startswith("image.backbone.") for k in changed)
    assert "image branch adapted" in adapted.checkpoint_info["name"]
    with pytest.raises(ValueError, match="`task` must be one of"):
        st.tl.adapt(sdata, model=model, task="pixels")


def test_adapt_image_task_needs_an_image():
    sdata = st.datasets.demo()
    with pytest.raises(ValueError, match="`task='image'` learns from crops of each slide's H&E"):
        st.tl.adapt(sdata, task="image", steps=1, image_key=None, um_per_px=50.0)
