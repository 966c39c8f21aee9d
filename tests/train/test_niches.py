"""Niche dataset, one-slide batch sampler (epochs, ranks, resume), collate into the model, and augmentation."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import storm as st
from storm.data import Augment, Corpus, NicheBatchSampler, NicheDataset
from storm.data._augment import flip_rotate_offsets, jitter_colours

SIZES = [37, 50, 0, 13]  # spots per slide (one slide without spots)


def fake_corpus(sizes=SIZES):
    """The sampler only needs where each slide's spots start."""
    return SimpleNamespace(offsets=np.concatenate([[0], np.cumsum(sizes)]))


def slide_of(index, sizes=SIZES):
    return np.searchsorted(np.cumsum(sizes), index, side="right")


@pytest.fixture(scope="module")
def demo_corpus():
    return Corpus.from_sources(st.datasets.demo(), tile_px=64, niche_size=6)


# -- sampler --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("shuffle", [True, False])
def test_sampler_covers_every_spot_once_with_single_slide_batches(shuffle):
    sampler = NicheBatchSampler(fake_corpus(), 8, shuffle=shuffle, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 5 + 7 + 0 + 2
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(100))
    assert all(len(set(slide_of(b).tolist())) == 1 for b in batches)
    assert sorted(len(b) for b in batches) == [2, 5, 5] + [8] * 11
    if not shuffle:
        assert flat.tolist() == list(range(100))
    dropped = list(NicheBatchSampler(fake_corpus(), 8, shuffle=shuffle, drop_last=True))
    assert len(dropped) == 4 + 6 + 1 and all(len(b) == 8 for b in dropped)


def test_sampler_repeats_slides():
    sampler = NicheBatchSampler(fake_corpus(), 8, seed=2, repeats=[3, 1, 1, 0])
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3 * 5 + 7 + 0 + 0
    counts = np.bincount(np.concatenate(batches), minlength=100)
    assert (counts[:37] == 3).all() and (counts[37:87] == 1).all() and (counts[87:] == 0).all()
    # each visit of slide 0 is shuffled anew
    visits = [b for b in batches if slide_of(b[0]) == 0 and len(b) == 8]
    assert len({tuple(v) for v in visits}) == len(visits)
    with pytest.raises(ValueError, match="repeats"):
        NicheBatchSampler(fake_corpus(), 8, repeats=[1, 1])
    state = sampler.state_dict()
    with pytest.raises(ValueError, match="repeats"):
        NicheBatchSampler(fake_corpus(), 8, seed=2).load_state_dict(state)


def test_sampler_is_deterministic_per_seed_and_epoch():
    a, b = NicheBatchSampler(fake_corpus(), 8, seed=3), NicheBatchSampler(fake_corpus(), 8, seed=3)
    assert list(a) == list(b)
    epoch0 = list(a)
    a.set_epoch(1)
    b.set_epoch(1)
    assert list(a) == list(b) != epoch0
    assert list(NicheBatchSampler(fake_corpus(), 8, seed=4)) != epoch0
    a.set_epoch(0)
    assert list(a) == epoch0


def test_sampler_shards_across_ranks():
    corpus = fake_corpus([40, 24])  # 5 + 3 = 8 batches of 8: 4 per rank
    ranks = [NicheBatchSampler(corpus, 8, seed=2, rank=r, world_size=2) for r in (0, 1)]
    for r in ranks:
        r.set_epoch(5)
    mine = [list(r) for r in ranks]
    assert len(mine[0]) == len(mine[1]) == len(ranks[0]) == 4
    flat = [set(np.concatenate(m).tolist()) for m in mine]
    assert not flat[0] & flat[1] and flat[0] | flat[1] == set(range(64))
    whole = NicheBatchSampler(corpus, 8, seed=2)
    whole.set_epoch(5)
    assert [b for pair in zip(*mine, strict=True) for b in pair] == list(whole)

    # uneven: 14 batches over 3 ranks -> 5 each, the first batch repeated to fill the last round; or 4 with drop_last
    uneven = [list(NicheBatchSampler(fake_corpus(), 8, rank=r, world_size=3)) for r in range(3)]
    assert [len(u) for u in uneven] == [5, 5, 5] == [len(NicheBatchSampler(fake_corpus(), 8, world_size=3))] * 3
    indices = np.concatenate([np.concatenate(u) for u in uneven])
    first = next(iter(NicheBatchSampler(fake_corpus(), 8)))
    assert set(indices.tolist()) == set(range(100)) and len(indices) == 100 + len(first)
    dropped = [list(NicheBatchSampler(fake_corpus(), 8, rank=r, world_size=3, drop_last=True)) for r in range(3)]
    assert [len(d) for d in dropped] == [3, 3, 3]


def test_sampler_resumes_at_exactly_the_next_batch():
    sampler = NicheBatchSampler(fake_corpus(), 8, seed=7)
    sampler.set_epoch(2)
    full = list(sampler)
    iterator = iter(sampler)
    seen = [next(iterator) for _ in range(5)]
    state = sampler.state_dict()
    assert state["epoch"] == 2 and state["position"] == 5 and seen == full[:5]
    import torch

    buffer = __import__("io").BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # plain data, as the trainer stores it

    resumed = NicheBatchSampler(fake_corpus(), 8, seed=7)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # the trainer's loop calls set_epoch with the restored epoch: the position is kept
    assert list(resumed) == full[5:]
    assert list(resumed) == full  # the next pass over the same epoch starts from its beginning
    resumed.set_epoch(3)
    assert resumed.state_dict()["position"] == 0

    with pytest.raises(ValueError, match="batch_size=8 \\(now 4\\)"):
        NicheBatchSampler(fake_corpus(), 4, seed=7).load_state_dict(state)
    assert NicheBatchSampler(fake_corpus(), 8).state_dict(consumed=3)["position"] == 3


def test_sampler_validates_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        NicheBatchSampler(fake_corpus(), 0)
    with pytest.raises(ValueError, match="rank"):
        NicheBatchSampler(fake_corpus(), 4, rank=2, world_size=2)


# -- dataset, collate, DataLoader, model -----------------------------------------------------------------------------
def test_dataloader_reads_tiles_once_per_batch_and_feeds_the_model(demo_corpus):
    import torch

    from storm.data import NicheLoader
    from storm.models import StormConfig, StormModel

    dataset = NicheDataset(demo_corpus)
    sampler = NicheBatchSampler(dataset, 4, seed=0)
    tiles = demo_corpus.slides[0].tiles
    calls = []
    original = tiles.read
    tiles.read = lambda index: calls.append(np.asarray(index)) or original(index)
    try:
        batch = next(iter(NicheLoader(dataset, sampler, device=torch.device("cpu"))))
    finally:
        del tiles.read
    centres = next(iter(sampler))
    niches = demo_corpus.slides[0].neighbours[centres]
    assert len(calls) == 1 and calls[0].tolist() == np.unique(niches).tolist()  # each spot read once
    assert set(batch) == {
        "offsets_um",
        "tiles",
        "tile_index",
        "image_mask",
        "expression",
        "gene_index",
        "gene_mean",
        "gene_std",
        "gene_components",
        "component_scale",
        "expression_mask",
        "spot_mask",
    }
    assert batch["tiles"].shape == (len(np.unique(niches)), 64, 64, 3) and batch["tiles"].dtype == torch.uint8
    assert batch["tile_index"].shape == (4, 7)
    assert torch.equal(batch["tiles"][batch["tile_index"][2, 3]], torch.from_numpy(tiles.read([niches[2, 3]])[0]))
    assert batch["expression"].shape == (4, 7, 1000) and batch["expression"].dtype == torch.float32
    var_names = demo_corpus.slides[0].slide.table.var_names
    assert demo_corpus.vocab.symbols[batch["gene_index"].numpy()].tolist() == var_names.tolist()
    assert batch["spot_mask"].all() and batch["image_mask"].all()

    model = StormModel(StormConfig.from_preset("tiny", image_size=64), vocab=demo_corpus.vocab).eval()
    with torch.inference_mode():
        out = model(**batch)
    assert out.embedding.shape == (4, 64) and out.predicted_expression.shape == (4, 1000)
    assert torch.isfinite(out.embedding).all() and torch.isfinite(out.gene_reconstruction).all()


def test_augmented_batches_are_deterministic_and_change_with_the_epoch(demo_corpus):
    plain = NicheDataset(demo_corpus)
    dataset = NicheDataset(demo_corpus, augment=Augment(), seed=1)
    a, b = dataset.get_batch([10, 11]), dataset.get_batch([10, 11])
    assert all(np.array_equal(a[k], b[k]) for k in ("tiles", "offsets_um", "expression"))
    ref = plain.get_batch([10, 11])
    np.testing.assert_allclose(a["offsets_um"].norm(dim=-1), ref["offsets_um"].norm(dim=-1), atol=1e-4)
    np.testing.assert_array_equal(a["expression"], ref["expression"])
    np.testing.assert_array_equal(a["tile_index"], ref["tile_index"])
    # one flip/rotation for the whole batch: offsets and every distinct tile are transformed alike
    flips = [(f, k) for f in (False, True) for k in range(4)]
    dx, dy = ref["offsets_um"][0, 1].tolist()
    expected = {(f, k): flip_rotate_offsets(np.array([[dx, dy]]), flip=f, k=k)[0].tolist() for f, k in flips}
    chosen = [fk for fk in flips if np.allclose(expected[fk], a["offsets_um"][0, 1].tolist(), atol=1e-4)]
    assert chosen
    sampler = NicheBatchSampler(dataset, 4)
    changed = []
    for epoch in range(1, 5):
        sampler.set_epoch(epoch)  # also moves the dataset's augmentation to that epoch
        assert dataset.epoch == epoch
        changed.append(not np.array_equal(dataset.get_batch([10, 11])["tiles"], a["tiles"]))
    assert any(changed)
    with pytest.raises(IndexError):
        dataset[len(dataset)]


# -- augmentation ----------------------------------------------------------------------------------------------------
def dihedral(image, flip, k):
    return np.rot90(image[:, ::-1] if flip else image, k)


def test_augment_moves_tiles_and_offsets_together():
    """Tiles cut from a canvas, augmented, are the tiles of the flipped/rotated canvas at the augmented offsets."""
    rng = np.random.default_rng(0)
    canvas = rng.integers(0, 256, (41, 41, 3), dtype=np.uint8)  # centre spot at pixel (20, 20); 1 µm per pixel
    offsets = np.array([[0, 0], [10, 0], [0, -10], [7, 5], [-12, -3]], dtype=np.float32)

    def crops(image, offs):
        return np.stack(
            [image[20 + int(dy) - 4 : 20 + int(dy) + 5, 20 + int(dx) - 4 : 20 + int(dx) + 5] for dx, dy in offs]
        )

    niche = {"offsets_um": offsets, "tiles": crops(canvas, offsets), "image_mask": np.ones(5, bool)}
    augment = Augment(color_jitter=0, stain_jitter=0)
    seen = set()
    for seed in range(40):
        out = augment(niche, np.random.default_rng(seed))
        match = [
            (f, k)
            for f in (False, True)
            for k in range(4)
            if np.array_equal(out["tiles"], crops(dihedral(canvas, f, k), out["offsets_um"]))
        ]
        assert len(match) == 1
        seen.add(match[0])
    assert len(seen) == 8  # every flip and rotation occurs
    assert np.array_equal(niche["tiles"], crops(canvas, offsets))  # the input is not modified


def test_augment_marked_edge_faces_the_neighbour():
    tile = np.zeros((8, 8, 3), np.uint8)
    tile[:, -1, 0] = 255  # right edge of the centre tile, facing the neighbour 100 µm to the right
    niche = {"offsets_um": np.array([[0, 0], [100, 0]], np.float32), "tiles": np.stack([tile, tile])}
    sides = {(1, 0): (slice(None), -1), (-1, 0): (slice(None), 0), (0, 1): (-1, slice(None)), (0, -1): (0, slice(None))}
    for seed in range(16):
        out = Augment(color_jitter=0, stain_jitter=0)(niche, np.random.default_rng(seed))
        direction = tuple(int(v) for v in out["offsets_um"][1] / 100)
        rows, cols = sides[direction]
        assert (out["tiles"][0][rows, cols, 0] == 255).all() and out["tiles"][0][..., 0].sum() == 8 * 255
    # a 90° turn (counter-clockwise on screen, y down) sends "right" to "up"
    assert flip_rotate_offsets(np.array([100.0, 0.0]), flip=False, k=1).tolist() == [0.0, -100.0]
    assert np.array_equal(np.rot90(tile, 1)[0, :, 0], np.full(8, 255))


def test_colour_and_stain_jitter():
    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    tiles[0] = 255  # white background stays (nearly) white under small jitter
    assert np.array_equal(jitter_colours(tiles, 1.0, 1.0, np.ones(3), np.zeros(3)), tiles)
    roundtrip = jitter_colours(tiles, 1.0, 1.0, np.ones(3) + 1e-9, np.zeros(3))  # through optical density and back
    assert np.abs(roundtrip.astype(int) - tiles).max() <= 1
    jittered = jitter_colours(tiles, 1.0, 1.0, np.array([1.1, 0.9, 1.0]), np.zeros(3))
    assert (jittered[0] == 255).all() and np.abs(jittered.astype(int) - tiles).mean() > 1

    augment = Augment(flip=False, rot90=False)
    niche = {"offsets_um": np.zeros((3, 2), np.float32), "tiles": tiles, "image_mask": np.array([True, True, False])}
    one = augment(niche, np.random.default_rng(5))
    assert np.array_equal(one["tiles"], augment(niche, np.random.default_rng(5))["tiles"])
    assert not np.array_equal(one["tiles"], augment(niche, np.random.default_rng(6))["tiles"])
    assert np.array_equal(one["tiles"][2], tiles[2])  # spots without a tile are left alone
    change = np.abs(one["tiles"][:2].astype(int) - tiles[:2]).mean()
    assert 0 < change < 20
    with pytest.raises(ValueError, match="color_jitter"):
        Augment(color_jitter=1.5)
