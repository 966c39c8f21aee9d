"""Ablation of the gene branch: top-128 genes vs the whole panel (standardised, whitened), and what training does.

Usage: python benchmarks/gene_encoding.py [--data ../shared/data] [--samples 151673 151510] [--steps 300]
                                          [--seeds 0 1 2] [--out FILE]

Domains on DLPFC sections (manual layers; unlabelled spots not scored), ``st.tl.domains(n_domains=k)`` on each
embedding, ARI mean over ``--seeds`` of the clustering. Contenders, all ``small`` with the default model's vocabulary:
* the shipped default (pretrained; 151673 was held out of its pretraining, 151510 was not);
* untrained (random weights) ``"top"`` and ``"panel"`` (with and without the per-slide whitening) encodings;
* ``"panel"`` from random weights, adapted to the section by ``st.tl.adapt(steps=--steps)`` (adaptation from scratch);
* scanpy PCA (standard pipeline) and the PCA of the same standardised expression the panel encoding reads.
Writes benchmarks/results/gene_encoding.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _clustering import scanpy_pca, scored
from _common import DEFAULT_DATA, RESULTS, header, write

import storm as st
from storm.tl._model_arg import get_model


def ari_of(sdata: Any, rep: str, k: int, ok: np.ndarray, seeds: list[int]) -> float:
    from sklearn.metrics import adjusted_rand_score

    table = sdata["table"]
    truth = table.obs["layer"].astype(str).to_numpy()[ok]
    scores = []
    for seed in seeds:
        st.tl.domains(sdata, n_domains=k, use_rep=rep, seed=seed, key_added="_bench_domain")
        scores.append(adjusted_rand_score(truth, table.obs["_bench_domain"].astype(str).to_numpy()[ok]))
    del table.obs["_bench_domain"]
    return float(np.mean(scores))


def small(reference: Any, **overrides: Any) -> Any:
    import torch

    from storm.models import StormConfig, StormModel

    torch.manual_seed(0)
    config = StormConfig.from_preset("small", tile_um=reference.config.tile_um, **overrides)
    return StormModel(config, vocab=reference.vocab).eval()


def trained(sdata: Any, reference: Any, steps: int) -> tuple[Any, float]:
    """A fresh panel model adapted to the section by ``st.tl.adapt`` (its objectives and schedule), and the seconds."""
    t0 = time.perf_counter()
    model = st.tl.adapt(sdata, small(reference, gene_encoding="panel"), steps=steps, seed=0)
    return model, time.perf_counter() - t0


def standardised_pca(sdata: Any, n: int = 50) -> np.ndarray:
    from sklearn.decomposition import PCA

    from storm.data import log1p_cp10k
    from storm.data._expression import column_moments
    from storm.models._encoders import GENE_STD_FLOOR

    x = log1p_cp10k(sdata["table"].X)
    mean, std = column_moments(x)
    z = np.clip((x.toarray() - mean) / np.maximum(std, GENE_STD_FLOOR), -10, 10)
    return PCA(n, random_state=0).fit_transform(z)


def run(args: argparse.Namespace) -> dict[str, Any]:
    reference = get_model(None)
    rows = []
    for sample in args.samples:
        sdata = st.datasets.dlpfc(sample, args.data / "dlpfc")
        table = sdata["table"]
        ok = scored(table.obs["layer"])
        k = int(table.obs["layer"][ok].nunique())
        row: dict[str, Any] = {"section": sample, "k": k}
        models = {
            "shipped default (pretrained)": reference,
            "top, untrained": small(reference, gene_encoding="top"),
            "panel, untrained, no whitening": small(reference, gene_encoding="panel", gene_components=0),
            "panel, untrained": small(reference, gene_encoding="panel"),
        }
        model, seconds = trained(sdata, reference, args.steps)
        models[f"panel, {args.steps} self-supervised steps on the section"] = model
        row["training_seconds"] = round(seconds, 1)
        for name, m in models.items():
            st.tl.embed(sdata, m, key_added="X_bench")
            row[name] = round(ari_of(sdata, "X_bench", k, ok, args.seeds), 3)
        table.obsm["X_bench"] = scanpy_pca(table, 0).obsm["X_pca"]
        row["scanpy PCA (2,000 HVGs)"] = round(ari_of(sdata, "X_bench", k, ok, args.seeds), 3)
        table.obsm["X_bench"] = standardised_pca(sdata)
        row["PCA of the standardised panel"] = round(ari_of(sdata, "X_bench", k, ok, args.seeds), 3)
        rows.append(row)
        print(row, flush=True)
    return {"steps": args.steps, "seeds": args.seeds, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--samples", nargs="+", default=["151673", "151510"])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=RESULTS / "gene_encoding.json")
    args = parser.parse_args()
    st.settings.progress = False
    record = header("gene_encoding", "scanpy")
    record.update(run(args))
    write(record, args.out)
    names = [k for k in record["rows"][0] if k not in ("section", "k", "training_seconds")]
    print("| contender | " + " | ".join(r["section"] for r in record["rows"]) + " |")
    print("|---|" + "---:|" * len(record["rows"]))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{r[name]:.3f}" for r in record["rows"]) + " |")


if __name__ == "__main__":
    main()
