"""Few labels: accuracy of a st.tl.fit_head head vs the number of labelled spots, on slides it never saw labels of.

Usage: python -m benchmarks low_label [--model default] [--data ../shared/data] [--sizes 25 50 100 250 500 1000 0]
                                     [--repeats 3] [--tasks dlpfc_layers her2st_pathology] [--quick]

Two transfers, each trained on the labelled spots of some slides and scored on other slides (other donors/patients):
* DLPFC cortical layers: train 151673 (donor 3, 5,000 genes), test 151510 (donor 1, 500 genes);
* her2st pathologist labels: train A1, B1, C1, D1 (patients A–D), test E1, F1, G2, H1 (patients E–H); spots labelled
  "undetermined" are not used; classes absent from the training spots cannot be predicted and still count.

For each size n (0 = every labelled training spot), n spots are drawn at random from the training slides (``--repeats``
draws) and the contenders are fitted on exactly those spots:
* storm: the linear head of ``st.tl.fit_head`` (softmax on the spots' joint + niche embeddings from the expression
  branch, L2 penalty by cross-validation) — the embeddings are computed once and the head fitted with the same code
  ``finetune`` calls (``fit_spot_head``); one full ``st.tl.fit_head`` call (shared genes) checks they
  agree;
* storm head, shared genes: the same head with ``st.tl.fit_head(input_genes=...)`` set to the genes every slide of
  the transfer measures, so that the expression branch reads the same genes on training and test slides (what a
  user transferring labels to a slide of another panel passes; the baseline reads the same genes);
* storm adapted: the same head on the embeddings of the model after ``st.tl.adapt`` (its default steps, seed 0) on the
  training and test slides together — label-free, as a user adapts to every slide they analyse — each slide embedded
  on its own panel, and on the shared genes (the adapted model with ``input_genes``);
* expression PCA + logistic regression: log1p(CP10k) of the genes measured on every slide, 50 principal components
  fitted on the training slides, class-balanced logistic regression (the usual scanpy-side baseline).
Score: balanced accuracy (mean recall over the test slides' classes) and accuracy on all labelled test spots.
``--shared-panel`` embeds every slide on the genes all slides share (the storm input then matches the baseline's).
Writes benchmarks/results/low_label.json (``low_label_shared_panel.json`` with ``--shared-panel``) and prints a
markdown table.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path

import numpy as np

import storm as st
from storm._compute import cpu_name
from storm.data import log1p_cp10k
from storm.io import resolve
from storm.tl._heads._fitting import fit_spot_head
from storm.tl._heads._inputs import on_genes, spot_features
from storm.tl._metrics import balanced_accuracy
from storm.tl._model_arg import get_model

from ._common import DEFAULT_DATA, RESULTS, parse, quick_out, suite_parser

#: ``--quick``: the DLPFC transfer only, two label counts, one draw.
QUICK = ["--tasks", "dlpfc_layers", "--sizes", "50", "0", "--repeats", "1", *quick_out("low_label.json")]

TASKS = {
    "dlpfc_layers": {"loader": "dlpfc", "label": "layer", "train": ["151673"], "test": ["151510"]},
    "her2st_pathology": {
        "loader": "her2st",
        "label": "label",
        "train": ["A1", "B1", "C1", "D1"],
        "test": ["E1", "F1", "G2", "H1"],
    },
}
DROP = {"undetermined"}


def load(task: dict, name: str, data: Path):
    if task["loader"] == "dlpfc":
        return st.datasets.dlpfc(name, data / "dlpfc")
    return st.datasets.her2st(name, data / "her2st", image=False)


def shared_genes(slides: list) -> list[str]:
    """The genes measured on all slides, in the first slide's order."""
    shared = set(slides[0]["table"].var_names)
    for s in slides[1:]:
        shared &= set(s["table"].var_names)
    return [g for g in slides[0]["table"].var_names if g in shared]


def restrict_to_shared_genes(slides: list) -> None:
    """Keep in every table only the genes measured on all slides (one input panel for training and test slides)."""
    shared = shared_genes(slides)
    for s in slides:
        s.tables["table"] = s["table"][:, shared].copy()


def slide_arrays(sdata, label: str, net, adapted, shared: list[str]) -> dict:
    slide = resolve(sdata)
    x, used = spot_features(slide, net, "expression", None, per_slide=False)
    x_shared, _ = spot_features(on_genes(slide, shared), net, "expression", None, per_slide=False)
    x_adapted, _ = spot_features(slide, adapted, "expression", None, per_slide=False)
    x_adapted_shared, _ = spot_features(on_genes(slide, shared), adapted, "expression", None, per_slide=False)
    labels = sdata["table"].obs[label].iloc[slide.rows].astype(object).to_numpy()
    keep = np.array([v is not None and v == v and str(v) not in DROP for v in labels])
    table = sdata["table"]
    return {
        "features": x[keep],
        "features_shared": x_shared[keep],
        "features_adapted": x_adapted[keep],
        "features_adapted_shared": x_adapted_shared[keep],
        "labels": labels[keep].astype(str),
        "expression": log1p_cp10k(table.X[slide.rows][keep]),
        "genes": np.asarray(table.var_names),
        "modality": used,
    }


def pca_logistic(train: list[dict], test: list[dict], rows: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    shared = set(train[0]["genes"])
    for s in train[1:] + test:
        shared &= set(s["genes"])
    genes = sorted(shared)

    def matrix(slides):
        return np.vstack([_columns(s, genes) for s in slides])

    x_train, x_test = matrix(train)[rows], matrix(test)
    scaler = StandardScaler().fit(x_train)
    pca = PCA(n_components=min(50, len(rows) - 1, len(genes)), random_state=seed).fit(scaler.transform(x_train))
    y = np.concatenate([s["labels"] for s in train])[rows]
    clf = LogisticRegression(max_iter=2000, class_weight="balanced").fit(pca.transform(scaler.transform(x_train)), y)
    return clf.predict(pca.transform(scaler.transform(x_test)))


def _columns(slide: dict, genes: list[str]) -> np.ndarray:
    index = {g: i for i, g in enumerate(slide["genes"])}
    return np.asarray(slide["expression"][:, [index[g] for g in genes]].toarray())


def storm_head(
    train: list[dict], test: list[dict], rows: np.ndarray, seed: int, features: str = "features"
) -> np.ndarray:
    x = np.concatenate([s[features] for s in train])[rows]
    y_names = np.concatenate([s["labels"] for s in train])[rows]
    classes = sorted(set(y_names))
    y = np.array([classes.index(v) for v in y_names])
    groups = np.concatenate([np.full(len(s["labels"]), i) for i, s in enumerate(train)])[rows]
    head, _ = fit_spot_head(x, y, task="classification", groups=groups, n_classes=len(classes), seed=seed)
    import torch

    with torch.no_grad():
        logits = head(torch.as_tensor(np.concatenate([s[features] for s in test]), dtype=torch.float32)).numpy()
    return np.asarray(classes)[logits.argmax(1)]


CONTENDERS = {
    "storm head": storm_head,
    "storm head, shared genes": lambda train, test, rows, seed: storm_head(train, test, rows, seed, "features_shared"),
    "storm adapted head": lambda train, test, rows, seed: storm_head(train, test, rows, seed, "features_adapted"),
    "storm adapted head, shared genes": lambda train, test, rows, seed: storm_head(
        train, test, rows, seed, "features_adapted_shared"
    ),
    "expression PCA + logistic": pca_logistic,
}


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--model", default="default")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 250, 500, 1000, 0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--shared-panel", action="store_true", help="embed every slide on the genes all slides share")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS))
    parser.add_argument("--out", type=Path, default=None)
    args = parse(parser, argv, QUICK)
    stem = "low_label_shared_panel" if args.shared_panel else "low_label"
    args.out = args.out or RESULTS / f"{stem}.json"
    net = get_model(None if args.model == "default" else args.model)
    results, started = {}, time.perf_counter()
    for name in args.tasks:
        task = TASKS[name]
        t0 = time.perf_counter()
        train_sd = [load(task, s, args.data) for s in task["train"]]
        test_sd = [load(task, s, args.data) for s in task["test"]]
        if args.shared_panel:
            restrict_to_shared_genes(train_sd + test_sd)
        t_adapt = time.perf_counter()
        adapted = st.tl.adapt(train_sd + test_sd, model=net, random_state=0)
        adapt_s = time.perf_counter() - t_adapt
        shared = shared_genes(train_sd + test_sd)
        train = [slide_arrays(s, task["label"], net, adapted, shared) for s in train_sd]
        test = [slide_arrays(s, task["label"], net, adapted, shared) for s in test_sd]
        embed_s = time.perf_counter() - t0 - adapt_s
        truth = np.concatenate([s["labels"] for s in test])
        n_train = sum(len(s["labels"]) for s in train)
        rows_by_size = {}
        for size in args.sizes:
            n = n_train if size == 0 or size >= n_train else size
            scores = {name: [] for name in CONTENDERS}
            for rep in range(args.repeats if n < n_train else 1):
                rows = np.sort(np.random.default_rng(rep).choice(n_train, n, replace=False))
                for contender, fit in CONTENDERS.items():
                    pred = fit(train, test, rows, rep)
                    scores[contender].append([balanced_accuracy(truth, pred), float((pred == truth).mean())])
            rows_by_size[str(n)] = {
                k: {
                    "balanced_accuracy_mean": float(np.mean([v[0] for v in vals])),
                    "balanced_accuracy_sd": float(np.std([v[0] for v in vals])),
                    "accuracy_mean": float(np.mean([v[1] for v in vals])),
                    "repeats": len(vals),
                }
                for k, vals in scores.items()
            }
            print(name, n, {k: round(v["balanced_accuracy_mean"], 3) for k, v in rows_by_size[str(n)].items()})
        check = st.tl.fit_head(train_sd, task["label"], modality="expression", model=net, input_genes=shared)
        results[name] = {
            "input_panel": "genes shared by all slides" if args.shared_panel else "each slide's own genes",
            "train": task["train"],
            "test": task["test"],
            "n_train_labelled": n_train,
            "n_test_labelled": int(len(truth)),
            "classes_test": sorted(set(truth)),
            "modality": train[0]["modality"],
            "n_shared_genes": len(shared),
            "by_size": rows_by_size,
            "finetune_all_labels_cv_balanced_accuracy": check.metrics["cv_score"],
            "embedding_seconds": embed_s,
            "adapt_seconds": adapt_s,
        }
    payload = {
        "benchmark": "low_label",
        "model": net.checkpoint_info,
        "machine": {"cpu": cpu_name(), "threads": int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1))},
        "date": datetime.date.today().isoformat(),
        "seconds": time.perf_counter() - started,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    for name, res in results.items():
        print(f"\n### {name}: train {res['train']} -> test {res['test']} ({res['n_test_labelled']} spots)\n")
        print("| labelled spots | " + " | ".join(f"{c} bal. acc." for c in CONTENDERS) + " |")
        print("|---:|" + "---:|" * len(CONTENDERS))
        for n, row in res["by_size"].items():
            cells = [
                f"{row[c]['balanced_accuracy_mean']:.3f} ± {row[c]['balanced_accuracy_sd']:.3f}" for c in CONTENDERS
            ]
            print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
