"""Domains when the panel is widened by low-count genes, as a full ``scanpy.read_visium`` panel would be.

Usage: python -m benchmarks panel_breadth [--data ../shared/data] [--sample 151673] [--extra 13000] [--out FILE]
                                         [--panels original widened] [--peers graphst banksy] [--quick]

The DLPFC count matrices in ``../shared/data`` hold 5,000 (151673) or 500 (151510) preselected genes; a Visium slide
read with ``scanpy.read_visium`` holds every gene of the kit (33,538 for these DLPFC sections), most at a few
counts per spot. To see what that does to each contender, the section's own genes are kept and ``--extra`` genes of
storm's vocabulary that the section lacks are added with simulated counts: Poisson with a per-gene rate drawn from a
log-normal (median 0.05 counts per spot, log-sd 1.5) times each spot's library size over the median, so that they
carry the spots' depth and nothing else. Contenders, each on the original and the widened panel: storm zero-shot and
adapted (``st.tl.adapt``, 300 steps, seed 0) through ``st.tl.domains``, and scanpy PCA -> k-means, which picks its own
2,000 highly variable genes. ARI against the manual layers, mean over 3 clustering seeds, k = 7. ``--peers`` adds
GraphST and BANKSY as the ``domain_peers`` suite runs them (each picks its own genes; GraphST takes 15–30 min per panel, so
run it once, with ``--out`` to a file of its own, in the bench environment).
Writes benchmarks/results/panel_breadth.json and prints a markdown table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

import storm as st

from ._common import (
    DEFAULT_DATA,
    PEERS,
    RESULTS,
    RUNNERS,
    SEEDS,
    at_table_rows,
    counts_of,
    header,
    kmeans,
    parse,
    quick_out,
    scanpy_pca,
    scored,
    suite_parser,
    write,
)

#: ``--quick``: the widened panel with 2,000 simulated genes instead of 13,000.
QUICK = ["--panels", "widened", "--extra", "2000", *quick_out("panel_breadth.json")]

PANELS = ("original", "widened")
#: Median and log-standard deviation of the simulated genes' counts per spot (at the median library size).
RATE_MEDIAN, RATE_LOG_SD = 0.05, 1.5


def widened(sdata: Any, vocab: Any, extra: int, seed: int = 0) -> Any:
    """``sdata`` with ``extra`` vocabulary genes it lacks appended to its table, with depth-only Poisson counts."""
    import anndata as ad
    from scipy import sparse

    table = sdata["table"]
    rng = np.random.default_rng(seed)
    present = set(table.var_names)
    names = rng.choice([g for g in vocab.symbols if g not in present], size=extra, replace=False)
    counts = sparse.csr_matrix(table.X)
    depth = np.asarray(counts.sum(1)).ravel()
    rates = np.exp(rng.normal(np.log(RATE_MEDIAN), RATE_LOG_SD, size=extra))
    simulated = rng.poisson((depth / np.median(depth))[:, None] * rates[None, :]).astype(np.float32)
    wide = ad.AnnData(
        sparse.hstack([counts, sparse.csr_matrix(simulated)]).tocsr(),
        obs=table.obs.copy(),
        obsm=dict(table.obsm),
        uns=dict(table.uns),
    )
    wide.var_names = [*table.var_names, *names]
    sdata.tables["table"] = wide
    return sdata


def contenders(sdata: Any, k: int, mask: np.ndarray, truth: np.ndarray, peers: list[str]) -> dict[str, Any]:
    """ARI (mean and per seed) of each contender on ``sdata``, and storm's adaptation time (and the peers')."""
    from sklearn.metrics import adjusted_rand_score

    table = sdata["table"]

    def ari(runs: list[np.ndarray]) -> dict[str, Any]:
        values = [adjusted_rand_score(truth, r[mask]) for r in runs]
        return {"ari_mean": round(float(np.mean(values)), 4), "ari": [round(float(v), 4) for v in values]}

    def storm_domains(key: str) -> list[np.ndarray]:
        runs = []
        for seed in SEEDS:
            st.tl.domains(sdata, n_domains=k, use_rep=key, random_state=seed, key_added="_domain")
            runs.append(table.obs["_domain"].astype(int).to_numpy())
        return runs

    out: dict[str, Any] = {"genes": int(table.n_vars)}
    st.tl.embed(sdata, modality="expression")
    out["storm_zero_shot"] = ari(storm_domains("X_storm"))
    t0 = time.perf_counter()
    st.tl.embed(sdata, model=st.tl.adapt(sdata, random_state=0), modality="expression", key_added="X_storm_adapted")
    out["adapt_seconds"] = round(time.perf_counter() - t0, 1)
    out["storm_adapted"] = ari(storm_domains("X_storm_adapted"))
    out["scanpy_kmeans"] = ari([kmeans(scanpy_pca(table, s).obsm["X_pca"], k, s) for s in SEEDS])
    for peer in peers:
        adata, rows = counts_of({"sdata": sdata})
        t0 = time.perf_counter()
        for name, runs in RUNNERS[peer](adata, k).items():
            out[name] = ari([at_table_rows(labels, rows, table.n_obs) for labels in runs])
        out[f"{peer}_seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> None:
    from storm.models import StormModel

    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sample", default="151673")
    parser.add_argument("--extra", type=int, default=13000)
    parser.add_argument("--out", type=Path, default=RESULTS / "panel_breadth.json")
    parser.add_argument("--panels", nargs="+", default=list(PANELS), choices=PANELS)
    parser.add_argument("--peers", nargs="*", default=[], choices=PEERS)
    args = parse(parser, argv, QUICK)
    st.settings.progress = False
    vocab = StormModel.from_pretrained("default").vocab
    record = header("panel_breadth", "scanpy", "scikit-learn")
    record.update(sample=args.sample, extra_genes=args.extra, rate_median=RATE_MEDIAN, rate_log_sd=RATE_LOG_SD)
    record["command"] = args.command
    for panel in args.panels:
        sdata = st.datasets.dlpfc(args.sample, args.data / "dlpfc")
        if panel == "widened":
            widened(sdata, vocab, args.extra)
        labels = sdata["table"].obs["layer"]
        mask = scored(labels)
        truth = labels.astype(str).to_numpy()[mask]
        record[panel] = contenders(sdata, len(np.unique(truth)), mask, truth, args.peers)
        print(panel, record[panel], flush=True)
    write(record, args.out)
    print("| contender | " + " | ".join(f"{p} panel" for p in args.panels) + " |\n|---|" + "---:|" * len(args.panels))
    print("| genes | " + " | ".join(f"{record[p]['genes']:,}" for p in args.panels) + " |")
    for name in [k for k, v in record[args.panels[0]].items() if isinstance(v, dict)]:
        print(f"| {name} | " + " | ".join(f"{record[p][name]['ari_mean']:.3f}" for p in args.panels) + " |")


if __name__ == "__main__":
    main()
