"""Slow domain peers, run once per section and stored: GraphST and BANKSY on the labelled sections of ``domains``.

Usage: python -m benchmarks domain_peers [--data ../shared/data] [--peers graphst banksy] [--sections ...]
                                        [--threads 1] [--out benchmarks/results/domain_peers.json] [--quick]
       (in the environment of ``pip install -e '.[bench]'``)

GraphST needs 14–40 min per 4,000-spot Visium slide on 2 CPU cores, so the ``domains`` and ``panel_breadth`` suites
read the labels this suite stores (with its command, date, machine and commit) instead of running it again. Each section's
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

import json
import time
from pathlib import Path

import storm as st

from ._common import (
    DEFAULT_DATA,
    PEERS,
    RESULTS,
    RUNNERS,
    counts_of,
    header,
    labelled_sections,
    parse,
    quick_out,
    scored,
    suite_parser,
)

#: ``--quick``: BANKSY on one small her2st section, into a file of its own.
QUICK = ["--peers", "banksy", "--sections", "her2st A1", *quick_out("domain_peers.json")]


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--peers", nargs="+", default=list(PEERS), choices=PEERS)
    parser.add_argument("--sections", nargs="*", default=None, help="section names (default: all labelled)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (GraphST)")
    parser.add_argument("--out", type=Path, default=RESULTS / "domain_peers.json")
    args = parse(parser, argv, QUICK)
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
                command=args.command,
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
