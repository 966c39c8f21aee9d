"""Analysis quality on real data: spatial domains against manual labels, and H&E -> expression leave-one-section-out.

Usage: python benchmarks/analysis_quality.py [--model default] [--data ../shared/data] [--parts A B]
                                             [--seeds 0 1 2] [--genes 250]

Part A, spatial domains (ARI and NMI against manual labels, on the labelled spots only; every spot is clustered):
* sections: DLPFC 151673 and 151510 (manual cortical layers; spots without a layer are not scored) and the her2st
  sections with pathologist labels (A1, B1, C1, D1, E1, F1, G2, H1; spots labelled "undetermined" are not scored);
* k, the number of clusters of every contender, is the number of label classes among the scored spots of the section
  (the only thing taken from the labels);
* contenders: storm (``st.tl.embed`` with ``modality="auto"``: the image is used only where the model accepts it, then
  ``st.tl.domains(n_domains=k)`` with and without spatial smoothing, and, as a diagnostic, on the expression-branch
  embedding ``X_storm_gene`` before fusion); scanpy (filter_genes min_cells=3,
  normalize_total 1e4, log1p, top-2000 highly variable genes (all genes when fewer), PCA 50, neighbors 15; Leiden
  (igraph) at the resolution found by bisection to give k clusters, and k-means on the PCA); the same PCA through
  ``st.tl.domains`` (z-scored, spatially smoothed k-means: separates storm's embedding from its clustering recipe); and
  hand-crafted colour/texture features (``_handcrafted.py``, at the image's own resolution) through ``st.tl.domains``
  where the section has an image fine enough to tile a spot (at most ``MAX_UM_PER_PX`` µm/px);
* every clustering is repeated over ``--seeds`` (the embeddings are deterministic; seeds change PCA/Leiden/k-means)
  and reported as mean ± sd.

Part B, H&E -> expression, leave one section out over the her2st sections with full-resolution H&E (B4, C2-C5):
* genes: the ``--genes`` genes with the highest mean log1p(CP10k) on the held-out section, among those measured on all
  five sections and in the model's vocabulary; score: Pearson r per gene across the held-out spots (mean, median, and
  the number of genes with r > 0.3);
* contenders: storm zero-shot decoder (``st.tl.predict_expression``); ridge on storm image-only embeddings (``X_storm``
  and ``X_storm_image`` of ``st.tl.embed(modality="image")``); hand-crafted features + ridge; and, when
  ``st.tl.finetune`` exists, its expression head (``st.tl.predict_expression(head=...)``). Ridge penalties are chosen
  by leave-one-section-out CV on the four training sections only (``pretraining_value.ridge_probe``).
* caveat: the default checkpoint was pretrained (self-supervised, with an expression-from-image objective) on the images
  and counts of C2-C5; only B4 is held out of pretraining, so only B4's zero-shot number is a held-out score. Likewise
  every Part A section's expression was in the pretraining corpus (without labels).

Writes benchmarks/results/analysis_quality.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _handcrafted import niche_features, tile_features
from pretraining_value import expression, handcrafted, ridge_probe

import storm as st
from storm._compute import cpu_name
from storm.io import resolve
from storm.tl._metrics import pearson_per_gene
from storm.tl._model_arg import get_model
from storm.train import Corpus
from storm.train._corpus import log1p_cp10k

DLPFC_SAMPLES = ("151673", "151510")
HER2ST_LABELLED = ("A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1")
HER2ST_HE = ("B4", "C2", "C3", "C4", "C5")
#: Sections the default checkpoint never saw (neither image nor counts).
HELD_OUT_OF_PRETRAINING = {"B4"}
NOT_A_LABEL = {"undetermined"}
#: Coarsest image the hand-crafted baseline tiles (a 112-µm tile of at least ~28 px).
MAX_UM_PER_PX = 4.0
TILE_UM = 112.0
PRETRAINING_CAVEAT = (
    "The default checkpoint was pretrained self-supervised (masked gene/image modelling, cross-modal reconstruction "
    "including an expression-from-image objective) on the images and counts of every her2st section except B4, and on "
    "DLPFC 151673 and 151510. Only B4 is held out of pretraining: zero-shot scores on C2-C5 are not held-out scores, "
    "and storm embeddings on C2-C5 and on every Part A section come from an encoder that saw those sections (no labels)."
)


# ----------------------------------------------------------------------------------------------------- Part A: domains
def labelled_sections(data: Path, notes: list[str]) -> list[dict[str, Any]]:
    sections = []
    for sample in DLPFC_SAMPLES:
        sdata = st.datasets.dlpfc(sample, data / "dlpfc")
        if sdata["table"].obs["layer"].notna().sum() == 0 or sdata["table"].n_vars == 0:
            notes.append(f"DLPFC {sample}: no layer labels or no expression; skipped")
            continue
        sections.append({"name": f"DLPFC {sample}", "sdata": sdata, "label": "layer"})
    for section in HER2ST_LABELLED:
        sdata = st.datasets.her2st(section, data / "her2st")
        if "label" not in sdata["table"].obs:
            notes.append(f"her2st {section}: the loader gave no pathologist labels; skipped")
            continue
        sections.append({"name": f"her2st {section}", "sdata": sdata, "label": "label"})
    return sections


def scored(labels: Any) -> np.ndarray:
    """Spots with a real label: not missing and not "undetermined"."""
    values = labels.astype(object).to_numpy()
    return np.array([v is not None and v == v and str(v) not in NOT_A_LABEL for v in values])


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


def leiden_with_k(adata: Any, k: int, seed: int, steps: int = 30) -> tuple[np.ndarray, float, int]:
    """Leiden (igraph) at the resolution found by bisection to give ``k`` clusters (closest count if never exact)."""
    import scanpy as sc

    def run(resolution: float) -> np.ndarray:
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

    lo, hi = 0.0, 2.0
    while len(np.unique(run(hi))) < k and hi < 64:
        lo, hi = hi, hi * 2
    best = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        labels = run(mid)
        n = len(np.unique(labels))
        if best is None or abs(n - k) < abs(best[2] - k):
            best = (labels, mid, n)
        if n == k:
            break
        lo, hi = (mid, hi) if n < k else (lo, mid)
    return best


def kmeans(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)


def domains_of(sdata: Any, k: int, seed: int, *, use_rep: str = "X_storm", smoothing: bool = True) -> np.ndarray:
    st.tl.domains(sdata, n_domains=k, spatial_smoothing=smoothing, use_rep=use_rep, seed=seed, key_added="_domain")
    return sdata["table"].obs["_domain"].astype(int).to_numpy()


def image_at_spot_scale(sdata: Any) -> tuple[bool, str]:
    """Whether the section's image can be tiled at the spot scale, and why (not)."""
    slide = resolve(sdata)
    if not slide.has_image:
        return False, "no image in the data"
    if slide.um_per_px > MAX_UM_PER_PX:
        return False, (
            f"image {slide.um_per_px:.1f} µm/px: a {TILE_UM:.0f}-µm tile would be "
            f"{TILE_UM / slide.um_per_px:.0f} px, no usable colour/texture"
        )
    return True, f"image {slide.um_per_px:.2f} µm/px, tiles of {round(TILE_UM / slide.um_per_px)} px ({TILE_UM:.0f} µm)"


def handcrafted_at_native_scale(sdata: Any) -> np.ndarray:
    """Hand-crafted features of each spot's 112-µm tile read at the image's own resolution, with the niche mean."""
    slide = resolve(sdata)
    tile_px = round(TILE_UM / slide.um_per_px)
    corpus = Corpus.from_sources(sdata, tile_px=tile_px, tile_um=TILE_UM, niche_size=8)
    cs = corpus.slides[0]
    per_tile = np.stack([tile_features(t) for t in cs.tiles.read(np.arange(cs.n_spots))])
    features = np.full((sdata["table"].n_obs, 2 * per_tile.shape[1]), np.nan)
    features[slide.rows] = niche_features(per_tile, cs.neighbours)
    return features


def part_a(data: Path, net: Any, seeds: list[int]) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    notes: list[str] = []
    sections = labelled_sections(data, notes)
    info: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}

    def record(contender: str, section: str, runs: list[np.ndarray], truth: np.ndarray, mask: np.ndarray, **extra):
        ari = [adjusted_rand_score(truth, r[mask]) for r in runs]
        nmi = [normalized_mutual_info_score(truth, r[mask]) for r in runs]
        results.setdefault(contender, {})[section] = {
            "ari_mean": round(float(np.mean(ari)), 4),
            "ari_sd": round(float(np.std(ari)), 4),
            "nmi_mean": round(float(np.mean(nmi)), 4),
            "nmi_sd": round(float(np.std(nmi)), 4),
            "ari_per_seed": [round(float(a), 4) for a in ari],
            "n_clusters_found": [len(np.unique(r)) for r in runs],
            **extra,
        }

    for section in sections:
        name, sdata = section["name"], section["sdata"]
        table = sdata["table"]
        mask = scored(table.obs[section["label"]])
        truth = table.obs[section["label"]].astype(str).to_numpy()[mask]
        classes, counts = np.unique(truth, return_counts=True)
        k = len(classes)
        t0 = time.perf_counter()
        st.tl.embed(sdata, net, modality="auto")
        modality = table.uns["storm"]["X_storm"]["modality"]
        embed_s = time.perf_counter() - t0
        usable, why = image_at_spot_scale(sdata)
        dropped = table.obs[section["label"]].astype(object).where(~mask, None).dropna().astype(str)
        info[name] = {
            "label_column": section["label"],
            "n_spots": int(table.n_obs),
            "n_scored": int(mask.sum()),
            "n_not_scored": int((~mask).sum()),
            "not_scored_labels": {
                **dropped.value_counts().to_dict(),
                "missing": int(table.obs[section["label"]].isna().sum()),
            },
            "classes": dict(zip(classes.tolist(), counts.tolist(), strict=True)),
            "k": k,
            "n_genes": int(table.n_vars),
            "storm_modality": modality,
            "image": why,
            "storm_embed_seconds": round(embed_s, 1),
        }
        print(f"{name}: {table.n_obs} spots, {mask.sum()} scored, k={k}, storm modality {modality}; {why}")

        for smoothing, contender in ((True, "storm"), (False, "storm_no_smoothing")):
            runs = [domains_of(sdata, k, s, smoothing=smoothing) for s in seeds]
            record(contender, name, runs, truth, mask)
        if "X_storm_gene" in table.obsm:  # diagnostic: the expression branch before fusion with the niche
            runs = [domains_of(sdata, k, s, use_rep="X_storm_gene") for s in seeds]
            record("storm_gene_branch", name, runs, truth, mask)
        leiden, km, pca_domains, resolutions = [], [], [], []
        for s in seeds:
            adata = scanpy_pca(table, s)
            labels, resolution, _ = leiden_with_k(adata, k, s)
            leiden.append(labels)
            resolutions.append(round(resolution, 5))
            km.append(kmeans(adata.obsm["X_pca"], k, s))
            table.obsm["_X_pca"] = adata.obsm["X_pca"]
            pca_domains.append(domains_of(sdata, k, s, use_rep="_X_pca"))
        record("scanpy_leiden", name, leiden, truth, mask, resolution=resolutions)
        record("scanpy_kmeans", name, km, truth, mask)
        record("pca_storm_domains", name, pca_domains, truth, mask)
        if usable:
            t0 = time.perf_counter()
            table.obsm["_X_handcrafted"] = handcrafted_at_native_scale(sdata)
            runs = [domains_of(sdata, k, s, use_rep="_X_handcrafted") for s in seeds]
            record("handcrafted", name, runs, truth, mask, seconds=round(time.perf_counter() - t0, 1))
        else:
            results.setdefault("handcrafted", {})[name] = {"skipped": why}
        print("  ARI " + "  ".join(f"{c} {r[name].get('ari_mean', float('nan')):.3f}" for c, r in results.items()))
    return {"sections": info, "results": results, "notes": notes}


# -------------------------------------------------------------------------------------- Part B: H&E -> expression
@dataclass
class Fold:
    """One leave-one-section-out fold: everything a contender may use (spot rows in :func:`storm.io.resolve` order)."""

    held: str
    sections: dict[str, Any]
    genes: list[str]
    train_y: list[np.ndarray]
    net: Any
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def train(self) -> list[str]:
        return [s for s in self.sections if s != self.held]

    def obsm(self, section: str, key: str) -> np.ndarray:
        sdata = self.sections[section]
        return np.asarray(sdata["table"].obsm[key])[resolve(sdata).rows]


@dataclass
class Contender:
    """A way to predict the held-out section's expression: ``predict(fold)`` -> {read-out: (prediction, extras)}."""

    name: str
    label: str
    predict: Callable[[Fold], dict[str, tuple[np.ndarray, dict[str, Any]]]]


def layer_of(sdata: Any, key: str, genes: list[str]) -> np.ndarray:
    table = sdata["table"]
    return np.asarray(table.layers[key])[resolve(sdata).rows][:, table.var_names.get_indexer(genes)]


def zero_shot(fold: Fold) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    sdata = fold.sections[fold.held]
    st.tl.predict_expression(sdata, genes=fold.genes, model=fold.net)
    return {"zero_shot": (layer_of(sdata, "storm_predicted", fold.genes), {})}


def storm_ridge(fold: Fold) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    out = {}
    for readout, key in (("ridge_joint", "X_storm"), ("ridge_image_branch", "X_storm_image")):
        train_x = [fold.obsm(s, key) for s in fold.train]
        pred, alpha = ridge_probe(train_x, fold.train_y, fold.obsm(fold.held, key))
        out[readout] = (pred, {"alpha": alpha})
    return out


def handcrafted_ridge(fold: Fold) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    features = fold.cache.setdefault("handcrafted", {})
    for s in fold.sections:
        if s not in features:
            features[s] = handcrafted(fold.sections[s], fold.net.config)
    pred, alpha = ridge_probe([features[s] for s in fold.train], fold.train_y, features[fold.held])
    return {"ridge": (pred, {"alpha": alpha})}


def finetune_head(fold: Fold) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    train = [fold.sections[s] for s in fold.train]
    head = st.tl.finetune(train, target="expression", task="regression", genes=fold.genes, model=fold.net)
    sdata = fold.sections[fold.held]
    st.tl.predict_expression(sdata, genes=fold.genes, head=head, model=fold.net, key_added="storm_finetuned")
    metrics = {k: v for k, v in getattr(head, "metrics", {}).items() if isinstance(v, int | float | str)}
    return {"head": (layer_of(sdata, "storm_finetuned", fold.genes), metrics)}


def expression_contenders() -> list[Contender]:
    contenders = [
        Contender("storm_zero_shot", "storm zero-shot decoder (st.tl.predict_expression)", zero_shot),
        Contender("storm_ridge", "ridge on storm image-only embeddings", storm_ridge),
        Contender("handcrafted", "hand-crafted colour/texture features + ridge", handcrafted_ridge),
    ]
    return add_finetune(contenders)


def add_finetune(contenders: list[Contender]) -> list[Contender]:
    """THE PLACE FOR MORE CONTENDERS: the st.tl.finetune expression head joins when the function exists."""
    if not hasattr(st.tl, "finetune"):
        print("note: st.tl.finetune is not available in this storm; the fine-tuned head contender is skipped")
        return contenders
    label = "st.tl.finetune regression head (st.tl.predict_expression(head=...))"
    return [*contenders, Contender("storm_finetune", label, finetune_head)]


@contextlib.contextmanager
def reuse_finetune_embeddings() -> Iterator[None]:
    """Memoise the embeddings st.tl.finetune computes per training slide (benchmark speed only).

    Each fold re-trains on three of the four slides of the previous fold; encoding is deterministic, so the features of a
    slide are computed once. The cache is keyed on the table and model objects, so nothing changes if finetune
    stops calling ``spot_features``.
    """
    from storm.tl import _finetune

    original = getattr(_finetune, "spot_features", None)
    if original is None:
        yield
        return
    cache: dict[tuple, Any] = {}

    def cached(slide: Any, net: Any, *args: Any, **kwargs: Any) -> Any:
        key = (id(slide.table), id(net), args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = original(slide, net, *args, **kwargs)
        return cache[key]

    _finetune.spot_features = cached
    try:
        yield
    finally:
        _finetune.spot_features = original


def top_genes(sdata: Any, sections: dict[str, Any], vocab: Any, n: int) -> list[str]:
    """The ``n`` genes of highest mean log1p(CP10k) on ``sdata``, measured on every section and in the vocabulary."""
    table = sdata["table"]
    mean = np.asarray(log1p_cp10k(table.X).mean(0)).ravel()
    shared = set.intersection(*(set(s["table"].var_names) for s in sections.values()))
    known = np.asarray(vocab.align(table.var_names).indices) >= 0
    order = [i for i in np.argsort(-mean, kind="stable") if known[i] and table.var_names[i] in shared]
    return [str(table.var_names[i]) for i in order[:n]]


def part_b(data: Path, net: Any, n_genes: int) -> dict[str, Any]:
    sections = {s: st.datasets.her2st(s, data / "her2st") for s in HER2ST_HE}
    t0 = time.perf_counter()
    for sdata in sections.values():
        st.tl.embed(sdata, net, modality="image")
    embed_s = time.perf_counter() - t0
    contenders = expression_contenders()
    results: dict[str, dict[str, Any]] = {}
    folds: dict[str, Any] = {}
    seconds = {c.name: 0.0 for c in contenders}
    cache: dict[str, Any] = {}
    with reuse_finetune_embeddings():
        for held in HER2ST_HE:
            genes = top_genes(sections[held], sections, net.vocab, n_genes)
            truth = expression(sections[held], genes)
            fold = Fold(held, sections, genes, [expression(sections[s], genes) for s in sections if s != held], net)
            fold.cache = cache
            folds[held] = {
                "n_spots": int(truth.shape[0]),
                "n_genes": len(genes),
                "train": fold.train,
                "held_out_of_pretraining": held in HELD_OUT_OF_PRETRAINING,
            }
            print(f"held out {held}: {truth.shape[0]} spots, {len(genes)} genes, train {fold.train}")
            for contender in contenders:
                t1 = time.perf_counter()
                try:
                    outputs = contender.predict(fold)
                except Exception as error:  # noqa: BLE001 - a contender under development must not sink the others
                    print(f"  {contender.name}: failed ({type(error).__name__}: {error})")
                    results.setdefault(contender.name, {}).setdefault("error", {})[held] = repr(error)
                    continue
                finally:
                    seconds[contender.name] += time.perf_counter() - t1
                for readout, (pred, extra) in outputs.items():
                    r = pearson_per_gene(pred, truth)
                    results.setdefault(contender.name, {}).setdefault(readout, {})[held] = {
                        "mean_r": round(float(r.mean()), 4),
                        "median_r": round(float(np.median(r)), 4),
                        "genes_r_over_0.3": int((r > 0.3).sum()),
                        **extra,
                    }
                    print(f"  {contender.name:>16} {readout:>18}: mean r {r.mean():.4f}  median {np.median(r):.4f}")
    for readouts in results.values():
        for readout, by_section in readouts.items():
            if readout == "error":
                continue
            seen = [by_section[s]["mean_r"] for s in HER2ST_HE if s not in HELD_OUT_OF_PRETRAINING and s in by_section]
            if seen:
                by_section["mean_r_over_sections_seen_in_pretraining"] = round(float(np.mean(seen)), 4)
    return {
        "sections": list(HER2ST_HE),
        "held_out_of_pretraining": sorted(HELD_OUT_OF_PRETRAINING),
        "caveat": PRETRAINING_CAVEAT,
        "folds": folds,
        "contenders": {c.name: c.label for c in contenders},
        "results": results,
        "seconds": {"embed_image_all_sections": round(embed_s, 1), **{k: round(v, 1) for k, v in seconds.items()}},
    }


# ---------------------------------------------------------------------------------------------------------- output
A_LABELS = {
    "storm": "storm embed (modality auto) → st.tl.domains k-means, smoothing 0.5",
    "storm_no_smoothing": "storm embed → st.tl.domains k-means, no smoothing",
    "storm_gene_branch": "storm gene-branch embedding (X_storm_gene) → st.tl.domains k-means, smoothing 0.5",
    "scanpy_leiden": "scanpy PCA 50 → Leiden, resolution bisected to k",
    "scanpy_kmeans": "scanpy PCA 50 → k-means",
    "pca_storm_domains": "scanpy PCA 50 → st.tl.domains k-means, smoothing 0.5",
    "handcrafted": "hand-crafted H&E features → st.tl.domains k-means, smoothing 0.5",
}


def tables_a(part: dict[str, Any]) -> str:
    names = list(part["sections"])
    lines = [
        "| section | spots | scored | k | classes (scored spots) | storm modality | image |",
        "|---|---:|---:|---:|---|---|---|",
    ]
    for name, s in part["sections"].items():
        classes = ", ".join(f"{c} {n}" for c, n in s["classes"].items())
        lines.append(
            f"| {name} | {s['n_spots']} | {s['n_scored']} | {s['k']} | {classes} | {s['storm_modality']} | {s['image']} |"
        )
    for metric in ("ari", "nmi"):
        lines += ["", f"{metric.upper()} (mean ± sd over seeds)", ""]
        lines.append("| contender | " + " | ".join(names) + " | mean |")
        lines.append("|---|" + "---:|" * (len(names) + 1))
        for key, res in part["results"].items():
            cells, means = [], []
            for name in names:
                r = res.get(name, {})
                if f"{metric}_mean" in r:
                    cells.append(f"{r[f'{metric}_mean']:.3f} ± {r[f'{metric}_sd']:.3f}")
                    means.append(r[f"{metric}_mean"])
                else:
                    cells.append("n/a")
            mean = f"{np.mean(means):.3f}" if len(means) == len(names) else "–"
            lines.append(f"| {A_LABELS.get(key, key)} | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def table_b(part: dict[str, Any]) -> str:
    seen = [s for s in part["sections"] if s not in HELD_OUT_OF_PRETRAINING]
    head = [f"{s} (held out of pretraining)" if s in HELD_OUT_OF_PRETRAINING else s for s in part["sections"]]
    lines = [
        "Cells: mean r (median r, genes with r > 0.3). " + part["caveat"],
        "",
        "| contender | read-out | " + " | ".join(head) + f" | mean r over {', '.join(seen)} |",
        "|---|---|" + "---:|" * (len(head) + 1),
    ]
    for key, readouts in part["results"].items():
        for readout, by_section in readouts.items():
            if readout == "error":
                continue
            cells = []
            for s in part["sections"]:
                r = by_section.get(s)
                cells.append(
                    "failed" if r is None else f"{r['mean_r']:.3f} ({r['median_r']:.3f}, {r['genes_r_over_0.3']})"
                )
            mean = by_section.get("mean_r_over_sections_seen_in_pretraining")
            label = part["contenders"][key]
            if key == "storm_zero_shot":
                label += " — not held out except B4"
            lines.append(
                f"| {label} | {readout} | " + " | ".join(cells) + f" | {'–' if mean is None else f'{mean:.3f}'} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="checkpoint folder, or 'default' (bundled)")
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data")
    parser.add_argument("--parts", nargs="+", default=["A", "B"], choices=["A", "B"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--genes", type=int, default=250)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "analysis_quality.json")
    args = parser.parse_args()
    st.settings.progress = False
    started = time.perf_counter()
    net = get_model(None if args.model == "default" else args.model)
    record: dict[str, Any] = {
        "benchmark": "analysis_quality",
        "date": datetime.date.today().isoformat(),
        "machine": {
            "cpu": cpu_name(),
            "cores": os.cpu_count(),
            "threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)),
        },
        "versions": {
            "storm": st.__version__,
            **{p: version(p) for p in ("torch", "scanpy", "scikit-learn", "anndata")},
        },
        "model": net.checkpoint_info,
        "seeds": args.seeds,
        "pretraining_caveat": PRETRAINING_CAVEAT,
        "seconds": {},
    }
    if "A" in args.parts:
        t0 = time.perf_counter()
        record["part_a_domains"] = part_a(args.data, net, args.seeds)
        record["seconds"]["part_a"] = round(time.perf_counter() - t0, 1)
    if "B" in args.parts:
        t0 = time.perf_counter()
        record["part_b_expression"] = part_b(args.data, net, args.genes)
        record["seconds"]["part_b"] = round(time.perf_counter() - t0, 1)
    record["seconds"]["total"] = round(time.perf_counter() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    if "part_a_domains" in record:
        print(f"\n## Part A: spatial domains vs manual labels ({record['seconds']['part_a']:.0f} s)\n")
        print(tables_a(record["part_a_domains"]))
        for note in record["part_a_domains"]["notes"]:
            print(f"* {note}")
    if "part_b_expression" in record:
        print(f"\n## Part B: H&E -> expression, leave one section out ({record['seconds']['part_b']:.0f} s)\n")
        print(table_b(record["part_b_expression"]))
    print(f"\nwrote {args.out} ({record['seconds']['total']:.0f} s)")


if __name__ == "__main__":
    main()
