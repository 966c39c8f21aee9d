import json

import numpy as np
from PIL import Image

from storm._cli import main
from storm.datasets import synthetic


def test_cli_tiles_a_zarr_store(tmp_path):
    store = tmp_path / "slide.zarr"
    synthetic(900, 700, um_per_px=0.5, n_genes=5).write(store)
    out = tmp_path / "out"
    assert main(["tile", str(store), "--out", str(out), "--tile-px", "32", "--tile-um", "40", "--montage", "4"]) == 0
    summary = json.loads((out / "tiles.json").read_text())
    assert summary["tile_px"] == 32 and summary["um_per_px"] == 0.5
    assert summary["n_spots"] == summary["n_spots"] > 0
    montage = np.asarray(Image.open(out / "tiles_montage.png"))
    assert montage.shape == (64, 64, 3)
    # synthetic H&E is pinkish: red channel dominates green on average
    assert summary["mean_rgb"][0] > summary["mean_rgb"][1]


def test_cli_demo(tmp_path):
    out = tmp_path / "demo"
    assert main(["tile", "demo", "--out", str(out)]) == 0
    summary = json.loads((out / "tiles.json").read_text())
    assert 0.68 < summary["um_per_px"] < 0.70  # her2st: 200 µm array pitch = 290 px
    assert summary["n_spots"] >= 100
    assert (out / "tiles_montage.png").exists()
