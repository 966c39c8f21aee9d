"""How much of a checkpoint's zero-shot scores is its pretraining draw: the same recipe at other seeds, side by side.

Usage: python benchmarks/pretraining_seed.py --models seed0=default seed1=runs/seed1/model [--data ../shared/data]

Train the other checkpoints first with the default recipe and only its seed changed (``seed:`` in a copy of
``scripts/pretrain_default.yaml``; ``storm pretrain --config``). For each checkpoint, with exactly the code of
``benchmarks/domains.py`` and ``benchmarks/low_label.py``:

* zero-shot domains: ``st.tl.embed(modality="auto")`` then ``st.tl.domains(n_domains=k)`` on the ten labelled
  sections, ARI against the labels, mean over k-means seeds 0–2;
* few labels, DLPFC 151673 → 151510: the ``st.tl.finetune`` linear head on the expression embeddings computed on each
  slide's own panel and on the genes both slides share (``input_genes``), 3 draws per label count.

Writes benchmarks/results/pretraining_seed.json and prints markdown tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _clustering import scored
from _common import DEFAULT_DATA, RESULTS, header, write
from domains import domains_of, labelled_sections
from low_label import TASKS, shared_genes, slide_arrays, storm_head

import storm as st
from storm.tl._metrics import balanced_accuracy
from storm.tl._model_arg import get_model

SIZES = (25, 250, 1000, 0)
REPEATS = 3


def zero_shot_domains(net, sections: list[dict]) -> dict[str, float]:
    from sklearn.metrics import adjusted_rand_score

    out = {}
    for section in sections:
        sdata, label = section["sdata"], section["label"]
        obs = sdata["table"].obs
        mask = scored(obs[label])
        truth = obs[label].astype(str).to_numpy()[mask]
        st.tl.embed(sdata, net, modality="auto")
        k = len(np.unique(truth))
        out[section["name"]] = float(
            np.mean([adjusted_rand_score(truth, domains_of(sdata, k, s)[mask]) for s in range(3)])
        )
    return out


def few_labels(net, data: Path) -> dict[str, dict[str, float]]:
    task = TASKS["dlpfc_layers"]
    train_sd = [st.datasets.dlpfc(s, data / "dlpfc") for s in task["train"]]
    test_sd = [st.datasets.dlpfc(s, data / "dlpfc") for s in task["test"]]
    shared = shared_genes(train_sd + test_sd)

    train = [slide_arrays(s, task["label"], net, net, shared) for s in train_sd]
    test = [slide_arrays(s, task["label"], net, net, shared) for s in test_sd]
    truth = np.concatenate([s["labels"] for s in test])
    n_train = sum(len(s["labels"]) for s in train)
    out: dict[str, dict[str, float]] = {"own": {}, "shared": {}}
    features = {"own": "features", "shared": "features_shared"}
    for size in SIZES:
        n = n_train if size == 0 else size
        for name, key in features.items():
            scores = []
            for rep in range(REPEATS if n < n_train else 1):
                rows = np.sort(np.random.default_rng(rep).choice(n_train, n, replace=False))
                scores.append(balanced_accuracy(truth, storm_head(train, test, rows, rep, key)))
            out[name][str(n)] = float(np.mean(scores))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", required=True, help="name=checkpoint folder (or name=default)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=RESULTS / "pretraining_seed.json")
    args = parser.parse_args()
    models = dict(entry.split("=", 1) for entry in args.models)
    sections = labelled_sections(args.data)
    record = {**header("pretraining_seed", "torch", "scanpy", "scikit-learn"), "models": {}}
    started = time.perf_counter()
    for name, path in models.items():
        net = get_model(None if path == "default" else path)
        ari = zero_shot_domains(net, sections)
        her2st = [v for k, v in ari.items() if k.startswith("her2st")]
        record["models"][name] = {
            "checkpoint": net.checkpoint_info,
            "zero_shot_ari": ari,
            "her2st_mean": float(np.mean(her2st)),
            "ten_section_mean": float(np.mean(list(ari.values()))),
            "dlpfc_few_labels_balanced_accuracy": few_labels(net, args.data),
        }
    record["seconds"] = time.perf_counter() - started
    write(record, args.out)
    names = [s["name"] for s in sections]
    print("| checkpoint | " + " | ".join(names) + " | her2st mean | mean |")
    print("|---|" + "---:|" * (len(names) + 2))
    for name, res in record["models"].items():
        cells = [f"{res['zero_shot_ari'][s]:.3f}" for s in names]
        print(f"| {name} | " + " | ".join(cells) + f" | {res['her2st_mean']:.3f} | {res['ten_section_mean']:.3f} |")
    for name, res in record["models"].items():
        for features, row in res["dlpfc_few_labels_balanced_accuracy"].items():
            print(name, features, {k: round(v, 3) for k, v in row.items()})


if __name__ == "__main__":
    main()
