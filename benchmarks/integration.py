"""Several slides embedded jointly: batch mixing against label conservation, storm beside PCA of expression.

Usage: python -m benchmarks integration [--model default] [--data ../shared/data] [--k 30] [--seeds 0 1 2] [--quick]

Protocol:
* groups of slides from different donors/patients that share label classes: DLPFC 151673 + 151510 (manual layers) and
  the eight her2st sections with pathologist labels (A1, B1, C1, D1, E1, F1, G2, H1; "undetermined" excluded);
  batch = slide; only labelled spots are scored;
* embeddings: storm ``X_storm`` (``st.tl.embed`` per slide with one model, so all slides share its space), and the same
  z-scored per slide (what ``st.tl.domains`` clusters); PCA 50 of expression on the slides concatenated (shared genes,
  normalize_total 1e4, log1p, 2,000 HVGs), and the same z-scored per slide;
* batch mixing on the ``--k`` nearest neighbours of each spot (Euclidean): iLISI with uniform weights (the inverse
  Simpson index of slide labels among the neighbours, rescaled to [0, 1] as (iLISI - 1) / (n_slides - 1), 1 = fully
  mixed) and a kBET-style acceptance rate (share of spots whose neighbours' slide counts pass a chi-square test against
  the group's slide proportions at 5 %);
* label conservation: cLISI rescaled as (n_labels - cLISI) / (n_labels - 1) (1 = neighbours share the label), the
  label silhouette rescaled to [0, 1], and the ARI of k-means (k = number of labels, ``--seeds``) on the joint embedding.
A good integration is high on both axes; mixing alone is easy (noise mixes perfectly), so read them together.
Writes benchmarks/results/integration.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

import storm as st
from storm.tl._model_arg import get_model

from ._common import DEFAULT_DATA, RESULTS, header, kmeans, parse, quick_out, scored, suite_parser, write

#: ``--quick``: one k-means seed.
QUICK = ["--seeds", "0", *quick_out("integration.json")]

GROUPS = {
    "DLPFC 151673 + 151510": ("dlpfc", ("151673", "151510"), "layer"),
    "her2st 8 labelled sections": ("her2st", ("A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1"), "label"),
}
LABELS = {
    "storm": "storm X_storm",
    "storm_zscored": "storm X_storm, z-scored per slide",
    "pca": "PCA of expression",
    "pca_zscored": "PCA of expression, z-scored per slide",
}


def neighbours(x: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    return NearestNeighbors(n_neighbors=k + 1).fit(x).kneighbors(x, return_distance=False)[:, 1:]


def inverse_simpson(codes: np.ndarray, knn: np.ndarray, n: int) -> np.ndarray:
    """Per spot, 1 / sum(p_c^2) of the category proportions among its neighbours."""
    counts = np.stack([(codes[knn] == c).sum(1) for c in range(n)], axis=1) / knn.shape[1]
    return 1.0 / (counts**2).sum(1)


def kbet_acceptance(batch: np.ndarray, knn: np.ndarray, n: int, alpha: float = 0.05) -> float:
    from scipy.stats import chi2

    expected = np.bincount(batch, minlength=n) / len(batch) * knn.shape[1]
    observed = np.stack([(batch[knn] == b).sum(1) for b in range(n)], axis=1)
    stat = ((observed - expected) ** 2 / expected).sum(1)
    return float((chi2.sf(stat, df=n - 1) > alpha).mean())


def metrics(x: np.ndarray, batch: np.ndarray, labels: np.ndarray, k: int, seeds: list[int]) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score, silhouette_score

    n_batch, n_label = batch.max() + 1, labels.max() + 1
    knn = neighbours(x, k)
    ilisi = inverse_simpson(batch, knn, n_batch)
    clisi = inverse_simpson(labels, knn, n_label)
    ari = [adjusted_rand_score(labels, kmeans(x, n_label, s)) for s in seeds]
    return {
        "ilisi": round(float(((ilisi - 1) / (n_batch - 1)).mean()), 4),
        "kbet_acceptance": round(kbet_acceptance(batch, knn, n_batch), 4),
        "clisi": round(float(((n_label - clisi) / (n_label - 1)).mean()), 4),
        "label_asw": round(float((silhouette_score(x, labels) + 1) / 2), 4),
        "kmeans_ari": round(float(np.mean(ari)), 4),
    }


def zscore_per_slide(x: np.ndarray, batch: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for b in np.unique(batch):
        part = x[batch == b]
        out[batch == b] = (part - part.mean(0)) / (part.std(0) + 1e-8)
    return out


def joint_pca(tables: list[Any], seed: int) -> np.ndarray:
    import anndata as ad
    import scanpy as sc

    adata = ad.concat([ad.AnnData(t.X.copy(), var=t.var[[]].copy()) for t in tables], join="inner")
    sc.pp.filter_genes(adata, min_cells=3)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=min(2000, adata.n_vars - 1))
    adata = adata[:, adata.var["highly_variable"]].copy()
    sc.pp.pca(adata, n_comps=50, random_state=seed)
    return np.asarray(adata.obsm["X_pca"])


def run(args: argparse.Namespace) -> dict[str, Any]:
    net = get_model(None if args.model == "default" else args.model)
    out: dict[str, Any] = {}
    for group, (dataset, samples, label_key) in GROUPS.items():
        loader = st.datasets.dlpfc if dataset == "dlpfc" else st.datasets.her2st
        slides = [loader(s, args.data / dataset) for s in samples]
        t0 = time.perf_counter()
        for sdata in slides:
            st.tl.embed(sdata, model=net, modality="auto")
        embed_s = time.perf_counter() - t0
        tables = [s["table"] for s in slides]
        masks = [scored(t.obs[label_key]) & np.isfinite(np.asarray(t.obsm["X_storm"])).all(1) for t in tables]
        batch = np.concatenate([np.full(m.sum(), i) for i, m in enumerate(masks)])
        names = np.concatenate([t.obs[label_key].astype(str).to_numpy()[m] for t, m in zip(tables, masks, strict=True)])
        classes, labels = np.unique(names, return_inverse=True)
        storm = np.concatenate([np.asarray(t.obsm["X_storm"])[m] for t, m in zip(tables, masks, strict=True)])
        pca_all = joint_pca(tables, args.seeds[0])
        offsets = np.cumsum([0] + [t.n_obs for t in tables])
        pca = np.concatenate([pca_all[offsets[i] : offsets[i + 1]][m] for i, m in enumerate(masks)])
        embeddings = {
            "storm": storm,
            "storm_zscored": zscore_per_slide(storm, batch),
            "pca": pca,
            "pca_zscored": zscore_per_slide(pca, batch),
        }
        out[group] = {
            "slides": list(samples),
            "n_spots": int(len(batch)),
            "classes": classes.tolist(),
            "storm_modality": sorted({t.uns["storm"]["X_storm"]["modality"] for t in tables}),
            "embed_seconds": round(embed_s, 1),
            "results": {name: metrics(x, batch, labels, args.k, args.seeds) for name, x in embeddings.items()},
        }
        print(group, out[group]["results"])
    return {"groups": out, "model": net.checkpoint_info, "k": args.k, "seeds": args.seeds}


def table(record: dict[str, Any]) -> str:
    lines = [
        "| slides | embedding | iLISI (mixing) | kBET acceptance | cLISI (labels) | label ASW | k-means ARI |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for group, part in record["groups"].items():
        for name, m in part["results"].items():
            lines.append(
                f"| {group} | {LABELS[name]} | {m['ilisi']:.3f} | {m['kbet_acceptance']:.3f} | {m['clisi']:.3f} | "
                f"{m['label_asw']:.3f} | {m['kmeans_ari']:.3f} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--model", default="default", help="checkpoint folder, or 'default' (bundled)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "integration.json")
    args = parse(parser, argv, QUICK)
    st.settings.progress = False
    started = time.perf_counter()
    record = header("integration", "scanpy", "scikit-learn")
    record.update(run(args))
    record["seconds"] = round(time.perf_counter() - started, 1)
    write(record, args.out)
    print(f"\n## Joint embedding of several slides ({record['seconds']:.0f} s)\n")
    print(table(record))


if __name__ == "__main__":
    main()
