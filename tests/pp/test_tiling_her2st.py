"""Real-data correctness: every tile of her2st C2 equals an independent crop of the JPEG (same resampling)."""

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import storm as st

pytestmark = pytest.mark.data


def test_c2_tiles_equal_independent_jpeg_crops(shared_data_path):
    her2st_dir = shared_data_path("her2st")
    sdata = st.datasets.her2st("C2", path=her2st_dir)
    tiles = st.pp.tile(sdata, 224, 112.0)
    assert tiles.level == 0  # the JPEG (~0.7 µm/px) is coarser than 0.5 µm/px: read the full resolution

    # Independent path: the spot file and a plain PIL decode of the JPEG, nothing from storm but the scale.
    spots = pd.read_csv(her2st_dir / "data" / "ST-spotfiles" / "C2_selection.tsv", sep="\t")
    spots.index = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"], strict=True)]
    Image.MAX_IMAGE_PIXELS = None
    jpeg = next((her2st_dir / "data" / "ST-imgs" / "C" / "C2").glob("*.jpg"))
    pixels = np.asarray(Image.open(jpeg).convert("RGB"))
    pad = 200
    padded = np.pad(pixels, ((pad, pad), (pad, pad), (0, 0)), constant_values=255)
    canvas = Image.fromarray(padded)
    half = 56.0 / tiles.um_per_px

    # The scale storm used agrees with the spot pitch measured independently: 200 µm per step of the array grid.
    px_per_step = np.polyfit(spots["x"], spots["pixel_x"], 1)[0]
    assert tiles.um_per_px == pytest.approx(200.0 / px_per_step, rel=0.02)

    worst, exact, n = 0, 0.0, 0
    for batch in tiles.batches(64):
        for k, i in enumerate(batch.index):
            name = tiles.obs_names[i]
            array_xy = name.split("_")[-1]
            x, y = spots.loc[array_xy, ["pixel_x", "pixel_y"]].to_numpy(float)
            box = (x + 0.5 - half + pad, y + 0.5 - half + pad, x + 0.5 + half + pad, y + 0.5 + half + pad)
            ref = np.asarray(canvas.resize((224, 224), Image.Resampling.BILINEAR, box=box))
            diff = np.abs(batch.tiles[k].astype(int) - ref.astype(int))
            worst = max(worst, int(diff.max()))
            exact += float((diff == 0).mean())
            n += 1
    assert n == sdata.tables["table"].n_obs
    assert worst <= 1  # PIL's fixed-point filter weights may round differently for float box offsets
    assert exact / n > 0.99
