import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import storm as st
from storm.datasets._synthetic import synthetic, synthetic_pixels


def _reference_tile(x, y, shape, *, um_per_px, tile_px=224, tile_um=112.0, channels=3, dtype="uint8"):
    """Independent crop: recompute the pixels around (x, y), pad with white, resample with PIL."""
    half = tile_um / 2 / um_per_px
    pad = int(half) + 8
    x0, y0 = int(np.floor(x)) - pad, int(np.floor(y)) - pad
    h, w = shape
    crop = synthetic_pixels(
        max(y0, 0), min(y0 + 2 * pad, h), max(x0, 0), min(x0 + 2 * pad, w), channels=channels, dtype=dtype
    )
    canvas = np.full((2 * pad, 2 * pad, 3), 255, np.uint8)
    body = st.pp._image.to_rgb_uint8(crop)
    canvas[max(y0, 0) - y0 : max(y0, 0) - y0 + body.shape[0], max(x0, 0) - x0 : max(x0, 0) - x0 + body.shape[1]] = body
    cx, cy = x + 0.5 - x0, y + 0.5 - y0
    box = (cx - half, cy - half, cx + half, cy + half)
    return np.asarray(Image.fromarray(canvas).resize((tile_px, tile_px), Image.Resampling.BILINEAR, box=box))


def assert_same_tile(actual, expected):
    """Equal up to PIL's fixed-point rounding of filter weights (box offsets differ in the last float bits)."""
    diff = np.abs(actual.astype(int) - expected.astype(int))
    assert diff.max() <= 1, diff.max()
    assert (diff == 0).mean() > 0.99


@pytest.mark.parametrize("um_per_px", [0.25, 0.5, 0.73])
def test_tiles_equal_independent_crops(um_per_px):
    sdata = synthetic(1600, 1400, um_per_px=um_per_px, chunk_px=512)
    ts = st.pp.tile(sdata)
    slide = st.io.resolve(sdata)
    assert ts.level == 0
    for i in [0, 5, len(ts) // 2, len(ts) - 1]:
        x, y = slide.spot_xy_px[i]
        assert_same_tile(ts[i], _reference_tile(x, y, (1600, 1400), um_per_px=um_per_px))


def test_tile_covers_the_physical_size():
    sdata = synthetic(1024, 1024, um_per_px=0.25)
    ts = st.pp.tile(sdata, 64, 80.0)
    # 80 µm at 0.25 µm/px = 320 level-0 px resampled to 64 px.
    boxes = ts.boxes
    np.testing.assert_allclose(boxes[:, 2] - boxes[:, 0], 320.0)
    assert ts.target_um_per_px == pytest.approx(1.25)


def test_pyramid_level_choice():
    from spatialdata.models import Image2DModel
    from spatialdata.transformations import Identity

    sdata = synthetic(2048, 2048, um_per_px=0.25)
    pixels = sdata.images["he"].data
    sdata.images["he"] = Image2DModel.parse(
        pixels, dims=("c", "y", "x"), scale_factors=[2, 2], transformations={"global": Identity()}
    )
    assert st.pp.tile(sdata, 224, 112.0).level == 1  # 0.5 µm/px level matches the target exactly
    assert st.pp.tile(sdata, 224, 200.0).level == 1  # 0.89 µm/px: level 2 (1 µm/px) would upsample
    assert st.pp.tile(sdata, 56, 112.0).level == 2  # 2 µm/px target: coarsest level finer than it
    assert st.pp.tile(sdata, 224, 28.0).level == 0  # finer than level 0: read level 0


def test_padding_is_white_and_flagged():
    sdata = synthetic(800, 800, um_per_px=0.5)
    ts = st.pp.tile(sdata)
    slide = st.io.resolve(sdata)
    corner = int(np.argmin(slide.spot_xy_px.sum(axis=1)))
    assert ts.padded[corner]
    tile = ts[corner]
    # First spot at x = 100 px (half a 200 px pitch); the tile reaches 112 px left: 12 columns past the edge.
    assert (tile[:, :11] == 255).all()
    assert (tile[13:, 13:] != 255).any(axis=-1).all()  # the first row is 100 px from the top edge too
    table = sdata.tables["table"]
    assert table.obs["storm_tile_padded"].sum() == ts.padded.sum() > 0
    assert table.uns["storm"]["tiles"]["n_padded"] == int(ts.padded.sum())


@pytest.mark.parametrize(("channels", "dtype"), [(1, "uint8"), (4, "uint8"), (3, "uint16"), (3, "float32")])
def test_non_uint8_rgb_inputs_convert(channels, dtype):
    sdata = synthetic(900, 900, um_per_px=0.5, channels=channels, dtype=dtype)
    ts = st.pp.tile(sdata, 64, 64.0)
    slide = st.io.resolve(sdata)
    i = len(ts) // 2
    x, y = slide.spot_xy_px[i]
    ref = _reference_tile(x, y, (900, 900), um_per_px=0.5, tile_px=64, tile_um=64.0, channels=channels, dtype=dtype)
    assert ts[i].dtype == np.uint8 and ts[i].shape == (64, 64, 3)
    assert_same_tile(ts[i], ref)
    if channels == 1:
        assert (ts[i][..., 0] == ts[i][..., 1]).all()


def test_batches_cover_every_spot_once_and_match_single_reads():
    sdata = synthetic(2000, 2000, um_per_px=0.5, chunk_px=512)
    budget = st.settings.tile_cache_mb
    st.settings.tile_cache_mb = 1  # force chunk-wise reads through the LRU cache
    try:
        ts = st.pp.tile(sdata, 48, 48.0)
        assert not ts._reader.whole
        seen = []
        for batch in ts.batches(7, num_workers=2, prefetch=3):
            assert batch.tiles.shape == (len(batch.index), 48, 48, 3)
            np.testing.assert_array_equal(batch.padded, ts.padded[batch.index])
            for k in (0, len(batch.index) - 1):
                np.testing.assert_array_equal(batch.tiles[k], ts.read(np.array([batch.index[k]]))[0])
            seen.extend(batch.index.tolist())
        assert sorted(seen) == list(range(len(ts)))
        assert ts._reader.cached_bytes <= 1 * 2**20 + 512 * 512 * 3 * 4
        table_order = np.concatenate([b.index for b in ts.batches(10, order="table")])
        np.testing.assert_array_equal(table_order, np.arange(len(ts)))
    finally:
        st.settings.tile_cache_mb = budget


def test_torch_dataset_compatible():
    import torch

    ts = st.pp.tile(synthetic(600, 600, um_per_px=0.5), 32, 32.0)
    ts2 = pickle.loads(pickle.dumps(ts))
    np.testing.assert_array_equal(ts2[3], ts[3])
    loader = torch.utils.data.DataLoader(ts, batch_size=4)
    first = next(iter(loader))
    assert first.shape == (4, 32, 32, 3) and first.dtype == torch.uint8
    np.testing.assert_array_equal(first[1].numpy(), ts[1])


def test_bad_arguments():
    sdata = synthetic(512, 512)
    with pytest.raises(ValueError, match="tile_px"):
        st.pp.tile(sdata, 0)
    with pytest.raises(ValueError, match="tile_um"):
        st.pp.tile(sdata, 224, -5)
    ts = st.pp.tile(sdata, 32, 32.0)
    with pytest.raises(ValueError, match="batch_size"):
        next(ts.batches(0))
    with pytest.raises(ValueError, match="order"):
        next(ts.batches(4, order="random"))
    with pytest.raises(IndexError):
        ts[len(ts)]


def test_failed_tile_leaves_table_untouched():
    sdata = synthetic(512, 512)
    with pytest.raises(ValueError):
        st.pp.tile(
            sdata,
            224,
            112.0,
            platform="nope",
            um_per_px=None,
            table_key=None,
            shapes_key="spots",
            image_key="he",
            coordinate_system="other",
        )
    assert "storm" not in sdata.tables["table"].uns
    assert "storm_tile_padded" not in sdata.tables["table"].obs


_MEMORY_SCRIPT = """
import json, resource, sys
import numpy as np
import storm as st
from storm.datasets._synthetic import synthetic
st.settings.tile_cache_mb = 256
sdata = synthetic(40000, 40000, n_spots=2000, pitch_um=100.0, um_per_px=0.5, chunk_px=1024, random_state=1)
ts = st.pp.tile(sdata)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
n = 0
checksum = 0
for b in ts.batches(64, num_workers=2):
    n += len(b.index)
    checksum += int(b.tiles[:, 100:124, 100:124].sum())
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"n": n, "before_mb": before / 1024, "peak_mb": after / 1024, "checksum": checksum}))
"""


@pytest.mark.slow
def test_memory_bounded_on_40k_slide():
    """Streaming 2,000 tiles from a 40k x 40k (4.8 GB) lazy image stays within the cache budget plus overhead."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT], capture_output=True, text=True, check=True, timeout=900
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n"] == 2000
    # 4.8 GB of pixels; bound = 256 MB cache + the chunks of the batches in flight (2 workers x ~65 chunks of 3 MB).
    assert result["peak_mb"] - result["before_mb"] < 900, result


def test_each_image_is_decoded_once_per_process(monkeypatch):
    from storm.pp import _reader

    monkeypatch.setattr(_reader, "_DECODED", type(_reader._DECODED)())
    calls = []
    decode = _reader.LevelReader._decode_full
    monkeypatch.setattr(_reader.LevelReader, "_decode_full", lambda self: calls.append(1) or decode(self))
    sdata = st.datasets.demo()
    first = st.pp.tile(sdata, tile_px=32, tile_um=64.0).read(np.arange(5))
    again = st.pp.tile(st.io.resolve(sdata), tile_px=32, tile_um=60.0)  # another tile set and geometry, same level
    assert again.level == st.pp.tile(sdata, tile_px=32, tile_um=64.0).level
    assert again.read(np.arange(5)).shape == (5, 32, 32, 3)
    np.testing.assert_array_equal(st.pp.tile(sdata, tile_px=32, tile_um=64.0).read(np.arange(5)), first)
    assert len(calls) == 1
