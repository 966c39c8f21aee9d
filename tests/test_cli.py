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


def test_analyze_writes_figures_results_and_summary(tmp_path):

    import anndata as ad
    import torch

    import storm as st
    from storm.models import GeneVocab, StormConfig, StormModel

    genes = list(st.datasets.demo()["table"].var_names[:300])
    torch.manual_seed(0)
    config = StormConfig.from_preset("tiny", image_size=32, tile_um=64.0, niche_size=4)
    StormModel(config, vocab=GeneVocab.from_genes(genes)).save_pretrained(tmp_path / "tiny")
    out = tmp_path / "out"
    args = ["analyze", "demo", "--out", str(out), "--model", str(tmp_path / "tiny"), "--n-domains", "3"]
    assert main([*args, "--genes", "ERBB2", "KRT19"]) == 0
    assert {p.name for p in out.iterdir()} == {
        "domains.png",
        "genes.png",
        "embedding.png",
        "results.h5ad",
        "summary.json",
    }
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_spots"] == 151 and sum(summary["domains"].values()) == 151 and len(summary["domains"]) == 3
    assert summary["modality"] == "both" and summary["genes_predicted"] == 2
    table = ad.read_h5ad(out / "results.h5ad")
    assert table.obsm["X_storm"].shape == (151, 64) and int(table.var["storm_predicted"].sum()) == 2
    assert main(["analyze", "demo", "--out", str(out), "--model", str(tmp_path / "missing")]) == 2
