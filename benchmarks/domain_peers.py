"""Slow domain peers, run once per section and stored: GraphST and BANKSY on the labelled sections of domains.py.

Usage: python benchmarks/domain_peers.py [--data ../shared/data] [--peers graphst banksy] [--sections ...]
                                         [--threads 1] [--out benchmarks/results/domain_peers.json]

GraphST needs 14–40 min per 4,000-spot Visium slide on 2 CPU cores, so ``domains.py`` and ``adaptation.py`` read the
labels this script stores (with its command, date, machine and commit) instead of running it again. Each section's
result is written as soon as it is done, so an interrupted run keeps what it finished and a rerun skips it.

* **GraphST** (``GraphST.GraphST``, its defaults: 3,000 seurat_v3 HVGs — all genes when fewer —, 600 epochs, seed 41)
  on the section's raw counts and spot coordinates. Its embedding is clustered as its tutorial does — PCA 20, then
  mclust (EEE) — with a tied-covariance Gaussian mixture in place of mclust, because R is absent here; with and
  without its label refinement (majority of the 50 nearest spots, as in its DLPFC tutorial). Three mixture seeds.
* **BANKSY** (``pybanksy``: ``initialize_banksy`` with 15 neighbours and scaled Gaussian decay, max_m 1,
  ``generate_banksy_matrix`` at lambda 0.8 — its domain setting —, ``pca_umap`` 20 PCs) on normalize_total + log1p
  + 2,000 HVGs; its PCs clustered by the tied Gaussian mixture (its mclust route) and by Leiden bisected to k.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _clustering import leiden_with_k, scored
from _common import DEFAULT_DATA, RESULTS, header
from domains import labelled_sections

import storm as st
from storm.io import resolve

PEERS = ("graphst", "banksy")
SEEDS = (0, 1, 2)


def counts_of(section: dict[str, Any]) -> Any:
    """AnnData of the section's raw counts at its resolved spots, coordinates in µm in ``obsm["spatial"]``."""
    import anndata as ad

    table = section["sdata"]["table"]
    slide = resolve(section["sdata"])
    adata = ad.AnnData(table.X[slide.rows].copy(), var=table.var[[]].copy())
    adata.var_names_make_unique()
    adata.obsm["spatial"] = np.asarray(slide.spot_xy_um, dtype=np.float64)
    return adata, slide.rows


def tied_mixture(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """mclust's EEE model (equal volume, shape and orientation) = a tied-covariance Gaussian mixture."""
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(k, covariance_type="tied", random_state=seed).fit(x).predict(x)


def refined(labels: np.ndarray, xy: np.ndarray, n: int = 50) -> np.ndarray:
    """GraphST's refinement: each spot takes the most common label of its ``n`` nearest spots (itself excluded)."""
    from scipy.spatial import cKDTree

    _, index = cKDTree(xy).query(xy, k=min(n, len(xy) - 1) + 1)
    out = np.empty_like(labels)
    for i, row in enumerate(index[:, 1:]):
        values, counts = np.unique(labels[row], return_counts=True)
        out[i] = values[np.argmax(counts)]
    return out


def graphst(adata: Any, k: int) -> dict[str, list[np.ndarray]]:
    import scanpy as sc
    import torch
    from GraphST import GraphST
    from sklearn.decomposition import PCA

    sc.pp.highly_variable_genes(adata, flavor="seurat_v3", n_top_genes=min(3000, adata.n_vars))
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.scale(adata, zero_center=False, max_value=10)
    with contextlib.redirect_stdout(io.StringIO()):
        adata = GraphST.GraphST(adata, device=torch.device("cpu")).train()
    emb = PCA(n_components=20, random_state=42).fit_transform(adata.obsm["emb"])
    plain = [tied_mixture(emb, k, seed) for seed in SEEDS]
    return {"graphst": plain, "graphst_refined": [refined(lab, adata.obsm["spatial"]) for lab in plain]}


def banksy(adata: Any, k: int) -> dict[str, list[np.ndarray]]:
    import scanpy as sc
    from banksy.embed_banksy import generate_banksy_matrix
    from banksy.initialize_banksy import initialize_banksy
    from banksy_utils.umap_pca import pca_umap

    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    if adata.n_vars > 2000:
        sc.pp.highly_variable_genes(adata, n_top_genes=2000)
        adata = adata[:, adata.var["highly_variable"]].copy()
    adata.obs["x"], adata.obs["y"] = adata.obsm["spatial"][:, 0], adata.obsm["spatial"][:, 1]
    adata.obsm["coord_xy"] = adata.obsm["spatial"]
    with contextlib.redirect_stdout(io.StringIO()):
        state = initialize_banksy(
            adata,
            ("x", "y", "coord_xy"),
            num_neighbours=15,
            nbr_weight_decay="scaled_gaussian",
            max_m=1,
            plt_edge_hist=False,
            plt_nbr_weights=False,
            plt_agf_angles=False,
            plt_theta=False,
        )
        generate_banksy_matrix(adata, state, [0.8], max_m=1, verbose=False)
        pca_umap(state, pca_dims=[20], plt_remaining_var=False, add_umap=False)
    pcs = np.asarray(state["scaled_gaussian"][0.8]["adata"].obsm["reduced_pc_20"])
    leiden = []
    for seed in SEEDS:
        graph = sc.AnnData(np.zeros((len(pcs), 0), dtype=np.float32), obsm={"pcs": pcs})
        sc.pp.neighbors(graph, use_rep="pcs", random_state=seed)
        leiden.append(leiden_with_k(graph, k, seed)[0])
    return {"banksy": [tied_mixture(pcs, k, seed) for seed in SEEDS], "banksy_leiden": leiden}


RUNNERS = {"graphst": graphst, "banksy": banksy}


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    parser.add_argument("--sections", nargs="*", default=None, help="section names (default: all labelled)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (GraphST)")
    parser.add_argument("--out", type=Path, default=RESULTS / "domain_peers.json")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    st.settings.progress = False
    record = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    for section in labelled_sections(args.data):
        name = section["name"]
        if args.sections and name not in args.sections:
            continue
        table = section["sdata"]["table"]
        k = int(table.obs[section["label"]][scored(table.obs[section["label"]])].nunique())
        for peer in args.peers:
            if f"{peer}/{name}" in record["runs"]:
                continue
            adata, rows = counts_of(section)
            t0 = time.perf_counter()
            labels = RUNNERS[peer](adata, k)
            seconds = time.perf_counter() - t0
            run = header(f"domain_peers/{peer}", "GraphST", "pybanksy", "scikit-learn")
            run.update(
                command=" ".join(sys.argv),
                commit=commit(),
                section=name,
                k=k,
                seconds=round(seconds, 1),
                rows=rows.tolist(),
                labels={key: [lab.astype(str).tolist() for lab in runs] for key, runs in labels.items()},
            )
            record["runs"][f"{peer}/{name}"] = run
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(record) + "\n")
            print(f"{peer} {name}: k={k}, {seconds:.0f} s", flush=True)


if __name__ == "__main__":
    main()
