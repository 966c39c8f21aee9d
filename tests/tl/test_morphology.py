"""Colour and texture statistics of H&E tiles (what `st.tl.fit_head(..., morphology=True)` reads)."""

import numpy as np

import storm as st
from storm.data import Corpus
from storm.io import resolve
from storm.models import StormConfig
from storm.tl._morphology import (
    FIELDS,
    MORPHOLOGY_BLOCKS,
    N_TILE_STATISTICS,
    morphology_features,
    niche_mean,
    tile_morphology,
)


def test_tile_statistics_of_known_tiles():
    white = tile_morphology(np.full((32, 32, 3), 255, dtype=np.uint8))
    np.testing.assert_allclose(white[:3], 1.0)  # RGB mean
    np.testing.assert_allclose(white[3:6], 0.0)  # RGB standard deviation
    assert white[16] == 1.0  # all background
    np.testing.assert_allclose(white[38:40], 0.0)  # no gradient
    rng = np.random.default_rng(0)
    stained = np.stack([np.full((32, 32), 80), np.full((32, 32), 60), np.full((32, 32), 150)], -1).astype(np.uint8)
    stained[:16] = 240  # half pale: eosin-light background above haematoxylin-dark tissue
    noisy = np.clip(stained + rng.integers(-20, 20, stained.shape), 0, 255).astype(np.uint8)
    dark, textured = tile_morphology(stained), tile_morphology(noisy)
    assert dark[16] == 0.5 and dark[7] > white[7]  # half background; more haematoxylin at the median
    assert textured[18] > dark[18] and textured[38] > white[38]  # GLCM contrast and gradient rise with the noise
    assert dark.shape == (N_TILE_STATISTICS,) and np.isfinite(textured).all()


def test_niche_mean_averages_valid_neighbours():
    per_spot = np.array([[1.0], [3.0], [5.0]])
    neighbours = np.array([[0, 1, -1], [1, 0, 2], [2, -1, -1]])
    np.testing.assert_allclose(niche_mean(per_spot, neighbours), [[1, 2], [3, 3], [5, 5]])


def test_morphology_features_follow_the_resolved_spots(monkeypatch):
    sdata = st.datasets.demo()
    config = StormConfig.from_preset("tiny", image_size=32)
    slide = resolve(sdata)
    monkeypatch.setattr(st.settings, "num_workers", 3)
    features = morphology_features(slide, config)
    monkeypatch.setattr(st.settings, "num_workers", 1)
    np.testing.assert_array_equal(features, morphology_features(slide, config))  # threads change nothing
    tile_only = morphology_features(slide, config, fields=FIELDS[:1])
    np.testing.assert_array_equal(tile_only, features[:, : MORPHOLOGY_BLOCKS[0]])  # the tile alone: its 80 columns
    assert features.shape == (len(slide.obs_names), sum(MORPHOLOGY_BLOCKS)) and np.isfinite(features).all()
    # the first spot's statistics are those of its own tile, read at the model's geometry, then of each wider field
    for block, width in enumerate(FIELDS):
        cs = Corpus.from_sources(slide, tile_px=32, tile_um=width * config.tile_um, niche_size=config.niche_size)
        expected = tile_morphology(cs.slides[0].tiles.read(np.array([0]))[0])
        first = sum(MORPHOLOGY_BLOCKS[:block])
        np.testing.assert_allclose(features[0, first : first + N_TILE_STATISTICS], expected)
    assert features[:, 16].std() > 0  # background fraction varies over the crop
