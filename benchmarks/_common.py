"""Helpers shared by the benchmark suites; no suite imports another suite, only this module.

* running: the results folder, the data folder, each suite's argument parser (with ``--quick``), the record header
  (date, machine, versions, commit) and writing it;
* expression targets and ridge probes (H&E -> expression);
* clustering and the labelled sections of the domain suites, and the slow domain peers (GraphST, BANKSY);
* image-only baselines: squidpy's image features and an ST-Net-style CNN trained end to end;
* random weights of a preset (throughput, scaling).

The hand-crafted colour/texture statistics are storm's own (``storm.tl._morphology``).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

import storm as st
from storm._compute import cpu_name
from storm.data import log1p_cp10k
from storm.io import resolve
from storm.tl._metrics import pearson_per_gene

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).parent / "results"
#: Where ``--quick`` runs write, so that they never replace the stored results the docs are rendered from.
QUICK_RESULTS = RESULTS / "quick"
DEFAULT_DATA = ROOT.parent / "shared" / "data"
ALPHAS = np.logspace(-1, 5, 13)
#: The her2st sections with full-resolution H&E (H&E -> expression folds).
HER2ST_IMAGED = ("B4", "C2", "C3", "C4", "C5")
DLPFC_SAMPLES = ("151673", "151510")
HER2ST_LABELLED = ("A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1")


# ------------------------------------------------------------------------------------------------------- running
def suite_parser(file: str, doc: str, quick: Sequence[str]) -> argparse.ArgumentParser:
    """The argument parser of the suite in ``file``: named as ``python -m benchmarks`` runs it, with ``--quick``."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks {Path(file).stem}", description=doc.splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a small, fast configuration ({' '.join(quick).replace(f'{ROOT}/', '')}); options given beside it win",
    )
    return parser


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None, quick: Sequence[str]) -> argparse.Namespace:
    """Parse ``argv`` (default: the command line); with ``--quick``, the suite's ``quick`` options come first.

    The namespace also holds ``command``, the call as ``python -m benchmarks`` spells it, for the result record.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--quick" in argv:
        argv = [*quick, *argv]
    args = parser.parse_args(argv)
    args.command = " ".join([parser.prog, *argv])
    return args


def quick_out(name: str) -> list[str]:
    """``--out`` for a quick run: under ``results/quick/``, never over a stored result."""
    return ["--out", str(QUICK_RESULTS / name)]


def machine() -> dict[str, Any]:
    """CPU, cores, threads and GPU (if any) of this run."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu}


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of storm and ``packages`` ("absent" when not installed)."""
    out = {"storm": st.__version__}
    for package in ("torch", *packages):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "absent"
    return out


def commit() -> str:
    """The checkout's short commit ("unknown" outside git)."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False)
    return out.stdout.strip() or "unknown"


def header(name: str, *packages: str) -> dict[str, Any]:
    """The common head of every result record: benchmark name, date, machine, versions and commit."""
    return {
        "benchmark": name,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "versions": versions(*packages),
        "commit": commit(),
    }


def write(record: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")


# ------------------------------------------------------------------------------------ expression targets and probes
def ridge_probe(train_x: list[np.ndarray], train_y: list[np.ndarray], test_x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge from features to expression; the penalty by leave-one-section-out CV over the training sections."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit(x, y, alpha):
        return make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x, y)

    scores = []
    for alpha in ALPHAS:
        folds = []
        for k in range(len(train_x)):
            x = np.concatenate([a for i, a in enumerate(train_x) if i != k])
            y = np.concatenate([a for i, a in enumerate(train_y) if i != k])
            folds.append(pearson_per_gene(fit(x, y, alpha).predict(train_x[k]), train_y[k]).mean())
        scores.append(float(np.mean(folds)))
    best = float(ALPHAS[int(np.argmax(scores))])
    return fit(np.concatenate(train_x), np.concatenate(train_y), best).predict(test_x), best


def expression(sdata: Any, genes: list[str]) -> np.ndarray:
    """log1p(CP10k) of ``genes`` in the spot order storm uses for the slide (that of :func:`storm.io.resolve`)."""
    table = sdata["table"]
    rows = table.obs_names.get_indexer(resolve(sdata).obs_names)
    normalised = log1p_cp10k(table.X)
    columns = table.var_names.get_indexer(genes)
    return np.asarray(normalised[rows][:, columns].toarray(), dtype=np.float64)


def top_genes(held: Any, sections: list[Any], vocab: Any, n: int) -> list[str]:
    """The ``n`` genes of highest mean log1p(CP10k) on ``held``, measured on every section and in the vocabulary."""
    table = held["table"]
    mean = np.asarray(log1p_cp10k(table.X).mean(0)).ravel()
    shared = set.intersection(*(set(s["table"].var_names) for s in sections))
    known = np.asarray(vocab.align(table.var_names).indices) >= 0
    order = [i for i in np.argsort(-mean, kind="stable") if known[i] and table.var_names[i] in shared]
    return [str(table.var_names[i]) for i in order[:n]]


def handcrafted(sdata: Any, config: Any, fields: bool = False) -> np.ndarray:
    """Hand-crafted colour/texture features of each spot's tile (storm's ``morphology_features``) and niche mean.

    With ``fields``, also those of the wider fields around the spot that storm's expression heads read (160 columns).
    """
    from storm.tl._morphology import FIELDS, morphology_features

    return morphology_features(resolve(sdata), config, FIELDS if fields else FIELDS[:1])


# ----------------------------------------------------------------------------------- clustering, labelled sections
NOT_A_LABEL = {"undetermined"}


def scored(labels: Any) -> np.ndarray:
    """Spots with a real label: not missing and not "undetermined"."""
    values = labels.astype(object).to_numpy()
    return np.array([v is not None and v == v and str(v) not in NOT_A_LABEL for v in values])


def at_table_rows(labels: Any, rows: Any, n: int, fill: Any = -1) -> np.ndarray:
    """Labels of the resolved spots ``rows`` placed in a table of ``n`` rows, in its order (``fill`` elsewhere)."""
    out = np.full(n, fill, dtype=object if isinstance(fill, str) else None)
    out[rows] = labels
    return out


def scanpy_pca(table: Any, seed: int) -> Any:
    """The standard scanpy pipeline up to the neighbour graph, on the raw counts of ``table``."""
    import anndata as ad
    import scanpy as sc

    adata = ad.AnnData(table.X.copy(), obs=table.obs[[]].copy(), var=table.var[[]].copy())
    sc.pp.filter_genes(adata, min_cells=3)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    if adata.n_vars > 2000:
        sc.pp.highly_variable_genes(adata, n_top_genes=2000)
        adata = adata[:, adata.var["highly_variable"]].copy()
    sc.pp.pca(adata, n_comps=50, random_state=seed)
    sc.pp.neighbors(adata, n_neighbors=15, use_rep="X_pca", random_state=seed)
    return adata


def leiden_at(adata: Any, resolution: float, seed: int) -> np.ndarray:
    """Leiden (igraph, 2 iterations, undirected) on ``adata``'s neighbour graph at ``resolution``."""
    import scanpy as sc

    sc.tl.leiden(
        adata,
        resolution=resolution,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=seed,
        key_added="_leiden",
    )
    return adata.obs["_leiden"].astype(int).to_numpy()


def leiden_with_k(adata: Any, k: int, seed: int, steps: int = 30) -> tuple[np.ndarray, float, int]:
    """Leiden (igraph) at the resolution found by bisection to give ``k`` clusters (closest count if never exact)."""
    lo, hi = 0.0, 2.0
    while len(np.unique(leiden_at(adata, hi, seed))) < k and hi < 64:
        lo, hi = hi, hi * 2
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        labels = leiden_at(adata, mid, seed)
        n = len(np.unique(labels))
        if best is None or abs(n - k) < abs(best[2] - k):
            best = (labels, mid, n)
        if n == k:
            break
        lo, hi = (mid, hi) if n < k else (lo, mid)
    return best


def leiden_default(adata: Any, seed: int, use_rep: str | None = None) -> np.ndarray:
    """Leiden at scanpy's default resolution (1.0), on ``adata``'s graph or one of 15 neighbours in ``use_rep``.

    What a user who does not know the number of domains runs: no ``k`` goes in, so the score also judges the number of
    clusters the graph gives.
    """
    if use_rep is not None:
        import scanpy as sc

        sc.pp.neighbors(adata, n_neighbors=15, use_rep=use_rep, random_state=seed)
    return leiden_at(adata, 1.0, seed)


def kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)


def labelled_sections(data: Path) -> list[dict[str, Any]]:
    """The ten sections with manual labels: DLPFC 151673 and 151510 (layers) and eight her2st sections (pathology)."""
    sections = [
        {"name": f"DLPFC {s}", "dataset": "dlpfc", "sdata": st.datasets.dlpfc(s, data / "dlpfc"), "label": "layer"}
        for s in DLPFC_SAMPLES
    ]
    sections += [
        {"name": f"her2st {s}", "dataset": "her2st", "sdata": st.datasets.her2st(s, data / "her2st"), "label": "label"}
        for s in HER2ST_LABELLED
    ]
    return sections


# ---------------------------------------------------------------------------- slow domain peers: GraphST, BANKSY
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


# ------------------------------------------------------------------------------------------ image-only baselines
# * squidpy_features: ``squidpy.im.calculate_image_features`` (summary, histogram and texture features) of a crop of
#   the model's tile size around each spot, read from the full-resolution H&E, with the mean over the spot's niche.
# * stnet_predict: the ST-Net recipe (He et al., 2020): a DenseNet-121 (torchvision, ``weights=None``: no pretrained
#   weights may be downloaded here) whose classifier is a linear layer to the genes, trained with mean squared error on
#   per-gene standardised log1p(CP10k) of the training spots' tiles, with random dihedral augmentation; prediction
#   averages the four rotations of each held-out tile.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def squidpy_features(sdata: Any, config: Any, neighbours: np.ndarray, n_jobs: int = 2) -> np.ndarray:
    """squidpy summary/histogram/texture features of each spot's ``config.tile_um`` crop, with its niche mean."""
    import anndata as ad
    import squidpy as sq

    from storm.tl._morphology import niche_mean

    slide = resolve(sdata)
    pixels = np.moveaxis(np.asarray(slide.levels[0].data), 0, -1)  # (y, x, c) at full resolution
    diameter_px = config.tile_um / slide.um_per_px
    adata = ad.AnnData(np.zeros((len(slide.obs_names), 1), dtype=np.float32))
    adata.obs_names = [str(n) for n in slide.obs_names]
    adata.obsm["spatial"] = slide.spot_xy_px.astype(np.float64)
    adata.uns["spatial"] = {"he": {"scalefactors": {"spot_diameter_fullres": diameter_px}}}
    img = sq.im.ImageContainer(pixels, layer="image", library_id="he")
    features = sq.im.calculate_image_features(
        adata,
        img,
        layer="image",
        library_id="he",
        features=["summary", "histogram", "texture"],
        n_jobs=n_jobs,
        show_progress_bar=False,
        copy=True,
    )
    per_spot = np.nan_to_num(features.to_numpy(dtype=np.float64))
    return niche_mean(per_spot, neighbours)


def tiles_of(sdata: Any, tile_px: int, tile_um: float) -> np.ndarray:
    """(n, tile_px, tile_px, 3) uint8 tiles in :func:`storm.io.resolve` spot order."""
    ts = st.pp.tile(sdata, tile_px=tile_px, tile_um=tile_um)
    return ts.read(np.arange(len(ts)))


def _to_tensor(tiles: np.ndarray) -> Any:
    import torch

    x = torch.from_numpy(tiles).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def stnet_predict(
    train_tiles: np.ndarray,
    train_y: np.ndarray,
    test_tiles: np.ndarray,
    *,
    epochs: int,
    batch_size: int = 32,
    lr: float = 3e-4,
    seed: int = 0,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Train a DenseNet-121 from scratch on (tiles, expression) and predict the test tiles' expression."""
    import torch
    import torchvision

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    mean, std = train_y.mean(0), train_y.std(0) + 1e-6
    target = torch.from_numpy(((train_y - mean) / std).astype(np.float32))
    net = torchvision.models.densenet121(weights=None)
    net.classifier = torch.nn.Linear(net.classifier.in_features, train_y.shape[1])
    optimiser = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    losses = []
    for _ in range(epochs):
        net.train()
        order = rng.permutation(len(train_tiles))
        total = 0.0
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            if len(idx) < 2:  # batch norm needs two samples
                continue
            x = _to_tensor(train_tiles[idx])
            x = torch.rot90(x, int(rng.integers(4)), dims=(2, 3))
            if rng.random() < 0.5:
                x = torch.flip(x, dims=(3,))
            loss = torch.nn.functional.mse_loss(net(x), target[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        losses.append(round(total / len(order), 4))
    net.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(test_tiles), batch_size):
            x = _to_tensor(test_tiles[start : start + batch_size])
            out.append(torch.stack([net(torch.rot90(x, k, dims=(2, 3))) for k in range(4)]).mean(0).numpy())
    return np.concatenate(out) * std + mean, {"train_loss_per_epoch": losses}


# -------------------------------------------------------------------------------------------------- random weights
def preset_model(preset: str, reference: Any, image_size: int | None = None) -> Any:
    """Random weights of ``preset`` with the reference model's vocabulary and tile geometry (or ``image_size`` px)."""
    import torch

    from storm.models import StormConfig, StormModel

    torch.manual_seed(0)
    size = {"image_size": image_size} if image_size else {}
    config = StormConfig.from_preset(preset, vocab_size=len(reference.vocab), tile_um=reference.config.tile_um, **size)
    return StormModel(config, vocab=reference.vocab).eval()
