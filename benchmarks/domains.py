"""Spatial domains against manual labels: storm beside scanpy, novae and squidpy image features, in one run.

Usage: python -m benchmarks domains [--model default] [--data ../shared/data] [--seeds 0 1 2] [--novae-epochs 3]
                                   [--skip novae] [--sections 151673 A1 ...] [--quick]

Protocol (ARI and NMI against manual labels, on the labelled spots only; every spot is clustered):
* sections: DLPFC 151673 and 151510 (manual cortical layers; spots without a layer are not scored) and the eight her2st
  sections with pathologist labels (A1, B1, C1, D1, E1, F1, G2, H1; "undetermined" spots are not scored);
* k, the number of clusters of every contender, is the number of label classes among the scored spots (the only thing
  taken from the labels);
* storm: ``st.tl.embed(modality="auto")`` then ``st.tl.domains(n_domains=k)`` (its default clustering, a tied
  Gaussian mixture on 20 principal components) with and without spatial smoothing, with ``method="kmeans"``, and
  the expression-branch embedding ``X_storm_gene`` as a diagnostic;
* without k, as a user who does not know the number of domains: storm's embedding through ``sc.pp.neighbors``
  (15 neighbours) and ``sc.tl.leiden`` at resolution 1 (the README's user's day), ``st.tl.domains()`` without
  ``n_domains`` (Leiden at resolution 1 on its smoothed embedding), and scanpy's PCA graph below through Leiden at
  resolution 1;
* scanpy: filter_genes min_cells 3, normalize_total 1e4, log1p, 2,000 HVGs (all genes when fewer), PCA 50,
  15 neighbours; Leiden (igraph) at the resolution bisected to give k clusters, k-means on the PCA, and the PCA through
  ``st.tl.domains`` (z-score + spatial smoothing + tied Gaussian mixture: scanpy "with spatial smoothing");
* novae (``novae.Novae``, trained from scratch: no weights can be downloaded) on the slides of each dataset jointly
  (the two DLPFC sections; the eight her2st sections) for ``--novae-epochs`` epochs, Visium neighbour graph,
  ``assign_domains(n_domains=k)`` per section; one seed (its CPU training dominates the run);
* squidpy image features: ``calculate_image_features`` (summary, histogram, texture) of a crop of the model's tile size
  around each spot, with the niche mean, through ``st.tl.domains``, where the section has an image fine enough to tile
  a spot (at most ``MAX_UM_PER_PX`` µm/px; the DLPFC images in the data are 16 µm/px lowres images);
* storm adapted: ``st.tl.adapt`` on the section (its default steps, seed 0: no labels), its embedding through
  ``st.tl.domains(n_domains=k)`` and with ``method="kmeans"``; the adaptation time is recorded per section;
* GraphST and BANKSY: the labels that the ``domain_peers`` suite stored (one run per section, with its command, date and
  machine; GraphST takes 14–40 min per DLPFC slice on 2 cores), scored here like every other contender;
* clusterings are repeated over ``--seeds`` (mean ± sd).

Caveat: the default checkpoint was pretrained (self-supervised, no labels) on the expression of every section here.
Writes benchmarks/results/domains.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from pathlib import Path
from typing import Any

import numpy as np

import storm as st
from storm.data import Corpus
from storm.io import resolve
from storm.tl._model_arg import get_model

from ._common import (
    DEFAULT_DATA,
    RESULTS,
    at_table_rows,
    header,
    kmeans,
    labelled_sections,
    leiden_default,
    leiden_with_k,
    parse,
    quick_out,
    scanpy_pca,
    scored,
    squidpy_features,
    suite_parser,
    write,
)

#: ``--quick``: two sections, one clustering seed, no novae.
QUICK = ["--sections", "151673", "A1", "--seeds", "0", "--skip", "novae", *quick_out("domains.json")]
MAX_UM_PER_PX = 4.0
LABELS = {
    "storm": "storm embed → st.tl.domains, smoothing 0.5",
    "storm_kmeans": "storm embed → st.tl.domains(method='kmeans')",
    "storm_no_smoothing": "storm embed → st.tl.domains, no smoothing",
    "storm_gene_branch": "storm gene branch (X_storm_gene) → st.tl.domains",
    "storm_user_leiden": "storm embed → sc.pp.neighbors → sc.tl.leiden (resolution 1, no k)",
    "storm_domains_leiden": "storm embed → st.tl.domains() without n_domains (Leiden, resolution 1, no k)",
    "storm_adapted": "storm adapted (st.tl.adapt) → st.tl.domains",
    "storm_adapted_kmeans": "storm adapted → st.tl.domains(method='kmeans')",
    "scanpy_leiden": "scanpy PCA → Leiden at k",
    "scanpy_leiden_default": "scanpy PCA → Leiden (resolution 1, no k)",
    "scanpy_kmeans": "scanpy PCA → k-means",
    "scanpy_smoothed": "scanpy PCA → st.tl.domains (spatial smoothing)",
    "novae": "novae from scratch → assign_domains(k)",
    "squidpy_image": "squidpy image features → st.tl.domains",
    "graphst": "GraphST → PCA 20 → tied Gaussian mixture (mclust EEE)",
    "graphst_refined": "GraphST → … → its label refinement",
    "banksy": "BANKSY (lambda 0.8) → PCA 20 → tied Gaussian mixture",
    "banksy_leiden": "BANKSY (lambda 0.8) → PCA 20 → Leiden at k",
}
PEERS_FILE = RESULTS / "domain_peers.json"


def domains_of(
    sdata: Any, k: int | None, seed: int, *, use_rep: str = "X_storm", smoothing: bool = True, method: str | None = None
) -> np.ndarray:
    st.tl.domains(
        sdata, n_domains=k, method=method, spatial_smoothing=smoothing, use_rep=use_rep, seed=seed, key_added="_domain"
    )
    return sdata["table"].obs["_domain"].astype(int).to_numpy()


def image_usable(sdata: Any) -> tuple[bool, str]:
    slide = resolve(sdata)
    if not slide.has_image:
        return False, "no image in the data"
    if slide.um_per_px > MAX_UM_PER_PX:
        return False, f"image {slide.um_per_px:.1f} µm/px: too coarse to tile a spot"
    return True, f"image {slide.um_per_px:.2f} µm/px"


def novae_domains(sections: list[dict[str, Any]], ks: dict[str, int], epochs: int, seed: int) -> dict[str, np.ndarray]:
    """Train novae from scratch on each dataset's sections jointly; domains per section at its k."""
    import anndata as ad
    import lightning
    import novae

    out = {}
    for dataset in sorted({s["dataset"] for s in sections}):
        group = [s for s in sections if s["dataset"] == dataset]
        adatas = []
        for s in group:
            table = s["sdata"]["table"]
            slide = resolve(s["sdata"])
            adata = ad.AnnData(table.X[slide.rows].copy(), var=table.var[[]].copy())
            adata.obs_names = [f"{s['name']}:{n}" for n in slide.obs_names]
            adata.obsm["spatial"] = slide.spot_xy_um
            novae.spatial_neighbors(adata, technology="visium")
            adatas.append(adata)
        lightning.seed_everything(seed, verbose=False)
        model = novae.Novae(adatas)
        model.fit(adatas, max_epochs=epochs, accelerator="cpu", num_workers=0, enable_progress_bar=False)
        model.compute_representations(adatas)
        for s, adata in zip(group, adatas, strict=True):
            model.assign_domains(adata, n_domains=ks[s["name"]], key_added="_novae")
            labels = np.full(s["sdata"]["table"].n_obs, "unassigned", dtype=object)
            labels[resolve(s["sdata"]).rows] = adata.obs["_novae"].astype(str).to_numpy()
            out[s["name"]] = labels
    return out


def stored_peers(sections: list[dict[str, Any]], record: Any) -> list[str]:
    """Score the peer labels stored by the ``domain_peers`` suite; notes name each stored run's date and machine."""
    import json

    if not PEERS_FILE.exists():
        return [f"{PEERS_FILE.name} is missing (python -m benchmarks domain_peers): no GraphST or BANKSY rows"]
    runs = json.loads(PEERS_FILE.read_text())["runs"]
    notes = []
    for section in sections:
        rows_all = section["sdata"]["table"].n_obs
        for peer in ("graphst", "banksy"):
            run = runs.get(f"{peer}/{section['name']}")
            if run is None:
                notes.append(f"{peer} has no stored run for {section['name']}")
                continue
            for key, labels in run["labels"].items():
                full = [at_table_rows(lab, run["rows"], rows_all, fill="unassigned") for lab in labels]
                record(key, section["name"], full, stored_run=f"{run['date']}, {run['seconds']} s")
            notes.append(
                f"{peer} {section['name']}: stored run of {run['date']} ({run['seconds']} s, {run['machine']['cpu']}, "
                f"commit {run['commit']}: {run['command']})"
            )
    return notes


def run(args: argparse.Namespace) -> dict[str, Any]:
    import anndata as ad
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    net = get_model(None if args.model == "default" else args.model)
    sections = [s for s in labelled_sections(args.data) if not args.sections or s["name"].split()[-1] in args.sections]
    info: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {name: {} for name in LABELS}
    seconds: dict[str, float] = dict.fromkeys(LABELS, 0.0)
    truths: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def record(contender: str, section: str, runs: list[np.ndarray], **extra: Any) -> None:
        mask, truth = truths[section]
        ari = [adjusted_rand_score(truth, r[mask]) for r in runs]
        nmi = [normalized_mutual_info_score(truth, r[mask]) for r in runs]
        results[contender][section] = {
            "ari_mean": round(float(np.mean(ari)), 4),
            "ari_sd": round(float(np.std(ari)), 4),
            "nmi_mean": round(float(np.mean(nmi)), 4),
            "nmi_sd": round(float(np.std(nmi)), 4),
            "n_clusters_found": [len(np.unique(r)) for r in runs],
            **extra,
        }

    for section in sections:
        name, sdata = section["name"], section["sdata"]
        table = sdata["table"]
        mask = scored(table.obs[section["label"]])
        truths[name] = (mask, table.obs[section["label"]].astype(str).to_numpy()[mask])
        classes, counts = np.unique(truths[name][1], return_counts=True)
        k = len(classes)
        t0 = time.perf_counter()
        st.tl.embed(sdata, model=net, modality="auto")
        seconds["storm"] += time.perf_counter() - t0
        usable, why = image_usable(sdata)
        info[name] = {
            "n_spots": int(table.n_obs),
            "n_scored": int(mask.sum()),
            "classes": dict(zip(classes.tolist(), counts.tolist(), strict=True)),
            "k": k,
            "storm_modality": table.uns["storm"]["X_storm"]["modality"],
            "image": why,
        }
        print(f"{name}: {table.n_obs} spots, {mask.sum()} scored, k={k}, {info[name]['storm_modality']}; {why}")
        t0 = time.perf_counter()
        record("storm", name, [domains_of(sdata, k, s) for s in args.seeds])
        seconds["storm"] += time.perf_counter() - t0
        record("storm_kmeans", name, [domains_of(sdata, k, s, method="kmeans") for s in args.seeds])
        record("storm_no_smoothing", name, [domains_of(sdata, k, s, smoothing=False) for s in args.seeds])
        rows = resolve(sdata).rows
        user = ad.AnnData(obs=table.obs.iloc[rows][[]].copy(), obsm={"X_storm": table.obsm["X_storm"][rows]})
        user_runs = [leiden_default(user, s, use_rep="X_storm") for s in args.seeds]
        record("storm_user_leiden", name, [at_table_rows(r, rows, table.n_obs) for r in user_runs])
        record("storm_domains_leiden", name, [domains_of(sdata, None, s) for s in args.seeds])
        t0 = time.perf_counter()
        st.tl.embed(sdata, model=st.tl.adapt(sdata, net, random_state=args.seeds[0]), key_added="X_storm_adapted")
        info[name]["adapt_seconds"] = round(time.perf_counter() - t0, 1)
        record("storm_adapted", name, [domains_of(sdata, k, s, use_rep="X_storm_adapted") for s in args.seeds])
        seconds["storm_adapted"] += time.perf_counter() - t0
        adapted_kmeans = [domains_of(sdata, k, s, use_rep="X_storm_adapted", method="kmeans") for s in args.seeds]
        record("storm_adapted_kmeans", name, adapted_kmeans)
        if "X_storm_gene" in table.obsm:
            record("storm_gene_branch", name, [domains_of(sdata, k, s, use_rep="X_storm_gene") for s in args.seeds])
        leiden, leiden_free, km, smoothed = [], [], [], []
        for s in args.seeds:
            t0 = time.perf_counter()
            adata = scanpy_pca(table, s)
            leiden.append(leiden_with_k(adata, k, s)[0])
            seconds["scanpy_leiden"] += time.perf_counter() - t0
            leiden_free.append(leiden_default(adata, s))
            km.append(kmeans(adata.obsm["X_pca"], k, s))
            table.obsm["_X_pca"] = adata.obsm["X_pca"]
            smoothed.append(domains_of(sdata, k, s, use_rep="_X_pca"))
        del table.obsm["_X_pca"]
        record("scanpy_leiden", name, leiden)
        record("scanpy_leiden_default", name, leiden_free)
        record("scanpy_kmeans", name, km)
        record("scanpy_smoothed", name, smoothed)
        if usable:
            t0 = time.perf_counter()
            neighbours = Corpus.from_sources(
                sdata, tile_px=8, tile_um=net.config.tile_um, niche_size=net.config.niche_size
            )
            features = squidpy_features(sdata, net.config, neighbours.slides[0].neighbours)
            table.obsm["_X_squidpy"] = np.full((table.n_obs, features.shape[1]), np.nan)
            table.obsm["_X_squidpy"][resolve(sdata).rows] = features
            record("squidpy_image", name, [domains_of(sdata, k, s, use_rep="_X_squidpy") for s in args.seeds])
            del table.obsm["_X_squidpy"]
            seconds["squidpy_image"] += time.perf_counter() - t0
        else:
            results["squidpy_image"][name] = {"skipped": why}
    notes = stored_peers(sections, record)
    if "novae" not in args.skip and importlib.util.find_spec("novae") is None:
        notes.append("novae is not installed (pip install -e '.[bench]'); its row is missing")
    elif "novae" not in args.skip:
        t0 = time.perf_counter()
        labels = novae_domains(sections, {n: i["k"] for n, i in info.items()}, args.novae_epochs, args.seeds[0])
        seconds["novae"] = time.perf_counter() - t0
        for name, lab in labels.items():
            record("novae", name, [lab], epochs=args.novae_epochs)
    return {
        "sections": info,
        "model": net.checkpoint_info,
        "results": {k: v for k, v in results.items() if v},
        "seconds": {k: round(v, 1) for k, v in seconds.items() if v},
        "notes": notes,
    }


def tables(part: dict[str, Any]) -> str:
    names = list(part["sections"])
    short = [n.replace("her2st ", "").replace("DLPFC ", "") for n in names]
    lines = []
    for metric in ("ari", "nmi"):
        lines += [f"{metric.upper()} (mean over seeds; k = label classes)", ""]
        lines.append("| contender | " + " | ".join(short) + " | mean |")
        lines.append("|---|" + "---:|" * (len(names) + 1))
        for key, res in part["results"].items():
            cells = [f"{res[n][f'{metric}_mean']:.3f}" if f"{metric}_mean" in res.get(n, {}) else "n/a" for n in names]
            values = [res[n][f"{metric}_mean"] for n in names if f"{metric}_mean" in res.get(n, {})]
            mean = f"{np.mean(values):.3f}" if len(values) == len(names) else "–"
            lines.append(f"| {LABELS[key]} | " + " | ".join(cells) + f" | {mean} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--model", default="default", help="checkpoint folder, or 'default' (bundled)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--novae-epochs", type=int, default=3)
    parser.add_argument("--skip", nargs="*", default=[], choices=["novae"])
    parser.add_argument("--sections", nargs="*", default=None, help="short section names (default: all ten)")
    parser.add_argument("--out", type=Path, default=RESULTS / "domains.json")
    args = parse(parser, argv, QUICK)
    st.settings.progress = False
    started = time.perf_counter()
    record = header("domains", "scanpy", "squidpy", "novae", "scikit-learn")
    record.update(run(args))
    record["seeds"] = args.seeds
    record["seconds"]["total"] = round(time.perf_counter() - started, 1)
    write(record, args.out)
    print(f"\n## Spatial domains vs manual labels ({record['seconds']['total']:.0f} s)\n")
    print(tables(record))
    for note in record["notes"]:
        print(f"* {note}")


if __name__ == "__main__":
    main()
