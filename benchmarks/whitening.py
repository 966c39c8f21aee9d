"""Ablation of the panel encoding's per-slide axes: where they come from, and how much they are whitened.

Usage: python benchmarks/whitening.py [--data ../shared/data] [--axes residuals log1p] [--powers 1 0.5 0] [--out FILE]

The untrained ``small`` model (seed 0, the default model's vocabulary) embeds the ten labelled sections of
``domains.py`` with the panel encoding and the slide's 32 principal axes, taken from each source of ``--axes``
(``StormConfig.gene_axes``: the slide's standardised Poisson residuals, or its standardised log1p expression) and
scaled by ``(1 / axis deviation) ** power``; ``st.tl.domains(n_domains=k)`` (seed 0), ARI against the labels.
Untrained weights isolate the encoding from training. Writes benchmarks/results/whitening.json and prints a markdown
table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _clustering import scored
from _common import DEFAULT_DATA, RESULTS, header, write
from domains import labelled_sections
from gene_encoding import small

import storm as st
import storm.data._expression as expression_module
from storm.models._config import GENE_AXES
from storm.tl._model_arg import get_model


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score

    reference = get_model(None)
    settings = [(axes, power) for axes in args.axes for power in args.powers]
    rows = []
    for section in labelled_sections(args.data):
        table = section["sdata"]["table"]
        ok = scored(table.obs[section["label"]])
        truth = table.obs[section["label"]].astype(str).to_numpy()[ok]
        row: dict[str, Any] = {"section": section["name"], "k": len(set(truth))}
        for axes, power in settings:
            expression_module.WHITENING_POWER = power
            model = small(reference, gene_encoding="panel", gene_axes=axes)
            st.tl.embed(section["sdata"], model, key_added="X_bench")
            st.tl.domains(section["sdata"], n_domains=row["k"], use_rep="X_bench", seed=0, key_added="_bench")
            ari = adjusted_rand_score(truth, table.obs["_bench"].astype(str).to_numpy()[ok])
            row[f"{axes} {power}"] = round(ari, 3)
        rows.append(row)
        print(row, flush=True)
    return {"axes": args.axes, "powers": args.powers, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--axes", nargs="+", default=list(GENE_AXES), choices=GENE_AXES)
    parser.add_argument("--powers", type=float, nargs="+", default=[1.0, 0.5, 0.0])
    parser.add_argument("--out", type=Path, default=RESULTS / "whitening.json")
    args = parser.parse_args()
    st.settings.progress = False
    record = header("whitening", "scikit-learn")
    record["command"] = " ".join(sys.argv)
    record.update(run(args))
    write(record, args.out)
    print("| axes, power | " + " | ".join(r["section"] for r in record["rows"]) + " | mean |")
    print("|---|" + "---:|" * (len(record["rows"]) + 1))
    for key in [k for k in record["rows"][0] if k not in ("section", "k")]:
        values = [r[key] for r in record["rows"]]
        print(f"| {key} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(values):.3f} |")


if __name__ == "__main__":
    main()
