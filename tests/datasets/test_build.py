from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from storm.datasets._build import (
    categorical,
    decode_level,
    fit_um_per_px,
    grid_um,
    image_from_array,
    image_from_file,
    unique_names,
    unlimited_pixels,
)


def _lattice(platform: str, nx: int = 12, ny: int = 10) -> tuple[np.ndarray, np.ndarray]:
    if platform == "st":
        ax, ay = np.meshgrid(np.arange(nx), np.arange(ny))
    else:  # visium: columns of a row step by 2, odd rows shifted by one
        ay, ax = np.meshgrid(np.arange(ny), np.arange(nx), indexing="ij")
        ax = 2 * ax + (ay % 2)
    return ax.ravel(), ay.ravel()


@pytest.mark.parametrize("platform", ["st", "visium"])
def test_fit_recovers_scale_despite_jitter_rotation_and_outliers(platform):
    rng = np.random.default_rng(0)
    ax, ay = _lattice(platform)
    grid = grid_um(platform, ax, ay)
    true_um_per_px = 0.69
    angle = np.deg2rad(3.0)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    xy = grid @ rot.T / true_um_per_px + [500.0, 800.0]
    xy += rng.normal(0, 20, xy.shape)  # per-spot jitter as in her2st's detected spot positions
    xy[:3] += 900.0  # three grossly misplaced spots
    assert fit_um_per_px(grid, xy) == pytest.approx(true_um_per_px, rel=0.01)


def test_fit_is_not_biased_like_the_nearest_neighbour_median():
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(1)
    ax, ay = _lattice("st", 20, 20)
    grid = grid_um("st", ax, ay)
    xy = grid / 0.69 + rng.normal(0, 20, grid.shape)
    nn = np.median(cKDTree(xy).query(xy, k=2)[0][:, 1])
    assert 200.0 / nn > 0.72  # the nearest of four jittered neighbours is too close: scale overestimated
    assert fit_um_per_px(grid, xy) == pytest.approx(0.69, rel=0.005)


def test_visium_neighbours_are_one_pitch_apart():
    grid = grid_um("visium", np.array([0, 2, 1]), np.array([0, 0, 1]))
    d = np.linalg.norm(grid[:, None] - grid[None], axis=-1)
    np.testing.assert_allclose(d[np.triu_indices(3, 1)], 100.0)


def test_fit_rejects_degenerate_input():
    with pytest.raises(ValueError, match="fewer than 3 spots"):
        fit_um_per_px(np.zeros((2, 2)), np.zeros((2, 2)))
    line = grid_um("st", np.arange(5), np.zeros(5))
    with pytest.raises(ValueError, match="one line"):
        fit_um_per_px(line, line)
    with pytest.raises(ValueError, match="shape"):
        fit_um_per_px(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="platform"):
        grid_um("xenium", np.arange(3), np.arange(3))


def test_categorical_orders_numbers_numerically_and_keeps_missing():
    cat = categorical(pd.Series(["10", "2", None, "undetermined", "2"]))
    assert list(cat.categories) == ["2", "10", "undetermined"]
    assert pd.isna(cat[2])
    cat = categorical(pd.Series(["WM", "L3", "L1"]), order=["L1", "L2", "L3", "WM"])
    assert list(cat.categories) == ["L1", "L3", "WM"]


def test_unique_names():
    assert list(unique_names(pd.Index(["A", "B", "A", "A-1", "A"]))) == ["A", "B", "A-2", "A-1", "A-3"]


@pytest.fixture
def rgb(tmp_path):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 256, (21, 27, 3)).astype(np.uint8)
    pixels = np.kron(base, np.ones((16, 16, 1), dtype=np.uint8))[:333, :421]  # smooth at JPEG block scale
    return pixels


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_decode_level_matches_block_means(tmp_path, rgb, fmt):
    file = tmp_path / f"x.{fmt}"
    Image.fromarray(rgb).save(file, quality=95, subsampling=0)  # 4:4:4, so only the downscaling differs
    full = decode_level(str(file), rgb.shape[:2], 1).astype(float)
    assert full.shape == (3, *rgb.shape[:2])
    for factor in (2, 4, 8):
        h, w = rgb.shape[0] // factor, rgb.shape[1] // factor
        level = decode_level(str(file), (h, w), factor).astype(float)
        means = full[:, : h * factor, : w * factor].reshape(3, h, factor, w, factor).mean(axis=(2, 4))
        assert level.shape == (3, h, w)
        assert np.abs(level - means).mean() < 1.0


def test_image_from_file_is_lazy_single_chunk_and_scaled(tmp_path, rgb):
    from spatialdata.transformations import get_transformation

    file = tmp_path / "x.png"
    Image.fromarray(rgb).save(file)
    tree = image_from_file(file, px_to_global=4.0)
    names = sorted(tree.children)
    assert names == ["scale0", "scale1", "scale2", "scale3"]
    level0 = tree["scale0"]["image"]
    assert level0.shape == (3, 333, 421) and level0.dtype == np.uint8
    assert all(len(c) == 1 for c in level0.data.chunks)
    assert list(level0.coords["c"].values) == ["r", "g", "b"]
    np.testing.assert_array_equal(np.moveaxis(level0.data.compute(), 0, -1), rgb)
    matrix = get_transformation(level0, "global").to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
    np.testing.assert_allclose(np.diag(matrix)[:2], [4.0, 4.0])
    assert tree["scale3"]["image"].shape == (3, 41, 52)


def test_image_from_array_converts_float_and_gray():
    tree = image_from_array(np.full((40, 30, 3), 0.5, dtype=np.float32))
    level0 = tree["scale0"]["image"]
    assert level0.dtype == np.uint8 and int(level0.data.compute().max()) == 128
    assert image_from_array(np.zeros((40, 30), dtype=np.uint8))["scale0"]["image"].shape == (3, 40, 30)


def test_unlimited_pixels_restores_the_limit():
    before = Image.MAX_IMAGE_PIXELS
    with unlimited_pixels():
        assert Image.MAX_IMAGE_PIXELS is None
        with unlimited_pixels():
            assert Image.MAX_IMAGE_PIXELS is None
        assert Image.MAX_IMAGE_PIXELS is None
    assert Image.MAX_IMAGE_PIXELS == before
