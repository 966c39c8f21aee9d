"""Several slides embedded jointly: batch mixing against label conservation, storm beside PCA of expression.

Usage: python -m benchmarks integration [--model default] [--data ../shared/data] [--k 30] [--seeds 0 1 2] [--quick]

Protocol:
* groups of slides from different donors/patients that share label classes: DLPFC 151673 + 151510 (manual layers) and
  the eight her2st sections with pathologist labels (A1, B1, C1, D1, E1, F1, G2, H1; "undetermined" excluded);
  batch = slide; only labelled spots are scored;
* embeddings: storm ``X_storm`` (``st.tl.embed`` per slide with one model, so all slides share its space), the same
  z-scored per slide (what ``st.tl.domains`` clusters), and ``st.tl.integrate`` of it (``X_storm_integrated``, batch =
  slide, timed); PCA 50 of expression on the slides concatenated (shared genes, normalize_total 1e4, log1p, 2,000
  HVGs), the same z-scored per slide, and Harmony (``harmonypy``, its defaults, batch = slide) on that PCA when
  installed (``pip install -e '.[bench]'``);
* runtime: ``st.tl.integrate`` over ``--runtime-slides`` (10) Visium-sized slides on this machine: the two DLPFC
  sections' embeddings repeated, each copy moved by its own random shift (the embedding is computed once per slide
  by ``st.tl.embed``, timed in the throughput suite; this times the integration);
* joint domains: ``st.tl.domains`` over all slides at once (k = number of labels) on ``X_storm_integrated``, the
  pooled ARI against the labels beside the mean of the per-slide ARIs of the same call;
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
    "storm_integrated": "storm st.tl.integrate",
    "pca": "PCA of expression",
    "pca_zscored": "PCA of expression, z-scored per slide",
    "harmony": "Harmony (harmonypy) on PCA",
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


def harmony_on(pca_all: np.ndarray, tables: list[Any], masks: list[np.ndarray], seed: int) -> np.ndarray | None:
    """Harmony (harmonypy, its defaults) on the joint PCA with batch = slide, at the scored spots; ``None`` without it."""
    try:
        import harmonypy
    except ImportError:
        print("harmonypy is not installed (pip install -e '.[bench]'): no Harmony row")
        return None
    import pandas as pd

    batch = np.concatenate([np.full(t.n_obs, str(i)) for i, t in enumerate(tables)])
    z = np.asarray(harmonypy.run_harmony(pca_all, pd.DataFrame({"slide": batch}), "slide", random_state=seed).Z_corr)
    z = z if z.shape[0] == len(batch) else z.T
    offsets = np.cumsum([0] + [t.n_obs for t in tables])
    return np.concatenate([z[offsets[i] : offsets[i + 1]][m] for i, m in enumerate(masks)])


def joint_domains(
    slides: list[Any], tables: list[Any], masks: list[np.ndarray], key: str, k: int, seed: int
) -> dict[str, Any]:
    """``st.tl.domains`` over all slides on ``X_storm_integrated``: pooled ARI and the per-slide ARIs of that call."""
    from sklearn.metrics import adjusted_rand_score

    st.tl.domains(slides, k, use_rep="X_storm_integrated", random_state=seed, key_added="joint")
    truth = [t.obs[key].astype(str).to_numpy()[m] for t, m in zip(tables, masks, strict=True)]
    found = [t.obs["joint"].astype(str).to_numpy()[m] for t, m in zip(tables, masks, strict=True)]
    per_slide = [adjusted_rand_score(a, b) for a, b in zip(truth, found, strict=True)]
    pooled = adjusted_rand_score(np.concatenate(truth), np.concatenate(found))
    return {"pooled_ari": round(float(pooled), 4), "per_slide_ari": [round(float(a), 4) for a in per_slide]}


def runtime(slides: list[Any], n_slides: int, seed: int) -> dict[str, Any]:
    """Seconds of ``st.tl.integrate`` over ``n_slides`` copies of ``slides`` (their embeddings), each shifted apart."""
    from spatialdata import SpatialData

    rng = np.random.default_rng(seed)
    copies = []
    for i in range(n_slides):
        source = slides[i % len(slides)]
        table = source["table"].copy()
        x = np.asarray(table.obsm["X_storm"])
        table.obsm["X_storm"] = x + rng.normal(0, x.std(), x.shape[1]).astype(x.dtype)
        table.obsm.pop("X_storm_integrated", None)
        table.uns["storm"] = {"X_storm": dict(table.uns["storm"]["X_storm"])}
        copies.append(SpatialData(images=dict(source.images), shapes=dict(source.shapes), tables={"table": table}))
    t0 = time.perf_counter()
    st.tl.integrate(copies, random_state=seed)
    seconds = time.perf_counter() - t0
    return {"n_slides": n_slides, "n_spots": int(sum(c["table"].n_obs for c in copies)), "seconds": round(seconds, 1)}


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
        t0 = time.perf_counter()
        st.tl.integrate(slides, random_state=args.seeds[0])
        integrate_s = time.perf_counter() - t0
        integrated = np.concatenate(
            [np.asarray(t.obsm["X_storm_integrated"])[m] for t, m in zip(tables, masks, strict=True)]
        )
        embeddings = {
            "storm": storm,
            "storm_zscored": zscore_per_slide(storm, batch),
            "storm_integrated": integrated,
            "pca": pca,
            "pca_zscored": zscore_per_slide(pca, batch),
        }
        harmony = harmony_on(pca_all, tables, masks, args.seeds[0])
        if harmony is not None:
            embeddings["harmony"] = harmony
        domains = joint_domains(slides, tables, masks, label_key, len(classes), args.seeds[0])
        out[group] = {
            "slides": list(samples),
            "n_spots": int(len(batch)),
            "classes": classes.tolist(),
            "storm_modality": sorted({t.uns["storm"]["X_storm"]["modality"] for t in tables}),
            "embed_seconds": round(embed_s, 1),
            "integrate_seconds": round(integrate_s, 1),
            "joint_domains": domains,
            "results": {name: metrics(x, batch, labels, args.k, args.seeds) for name, x in embeddings.items()},
        }
        print(group, out[group]["results"])
        if dataset == "dlpfc" and args.runtime_slides:
            out[group]["runtime"] = runtime(slides, args.runtime_slides, args.seeds[0])
            print("runtime", out[group]["runtime"])
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
    parser.add_argument("--runtime-slides", type=int, default=10, help="slides integrated for the runtime (0: skip)")
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
