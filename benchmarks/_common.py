"""Helpers shared by the benchmark scripts: the machine record, data paths, expression targets and ridge probes."""

from __future__ import annotations

import datetime
import json
import os
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

import storm as st
from storm._compute import cpu_name
from storm.data import log1p_cp10k
from storm.tl._metrics import pearson_per_gene

RESULTS = Path(__file__).parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ALPHAS = np.logspace(-1, 5, 13)


def machine() -> dict[str, Any]:
    """CPU, cores, threads and GPU (if any) of this run."""
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu}


def versions(*packages: str) -> dict[str, str]:
    """Installed versions of storm and ``packages`` ("absent" when not installed)."""
    out = {"storm": st.__version__}
    for package in ("torch", *packages):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "absent"
    return out


def header(name: str, *packages: str) -> dict[str, Any]:
    """The common head of every result record: benchmark name, date, machine and versions."""
    return {
        "benchmark": name,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "versions": versions(*packages),
    }


def write(record: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"\nwrote {out}")


def ridge_probe(train_x: list[np.ndarray], train_y: list[np.ndarray], test_x: np.ndarray) -> tuple[np.ndarray, float]:
    """Ridge from features to expression; the penalty by leave-one-section-out CV over the training sections."""
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def fit(x, y, alpha):
        return make_pipeline(StandardScaler(), Ridge(alpha=alpha)).fit(x, y)

    scores = []
    for alpha in ALPHAS:
        folds = []
        for k in range(len(train_x)):
            x = np.concatenate([a for i, a in enumerate(train_x) if i != k])
            y = np.concatenate([a for i, a in enumerate(train_y) if i != k])
            folds.append(pearson_per_gene(fit(x, y, alpha).predict(train_x[k]), train_y[k]).mean())
        scores.append(float(np.mean(folds)))
    best = float(ALPHAS[int(np.argmax(scores))])
    return fit(np.concatenate(train_x), np.concatenate(train_y), best).predict(test_x), best


def expression(sdata: Any, genes: list[str]) -> np.ndarray:
    """log1p(CP10k) of ``genes`` in the spot order storm uses for the slide (that of :func:`storm.io.resolve`)."""
    table = sdata["table"]
    rows = table.obs_names.get_indexer(st.io.resolve(sdata).obs_names)
    normalised = log1p_cp10k(table.X)
    columns = table.var_names.get_indexer(genes)
    return np.asarray(normalised[rows][:, columns].toarray(), dtype=np.float64)


def top_genes(held: Any, sections: list[Any], vocab: Any, n: int) -> list[str]:
    """The ``n`` genes of highest mean log1p(CP10k) on ``held``, measured on every section and in the vocabulary."""
    table = held["table"]
    mean = np.asarray(log1p_cp10k(table.X).mean(0)).ravel()
    shared = set.intersection(*(set(s["table"].var_names) for s in sections))
    known = np.asarray(vocab.align(table.var_names).indices) >= 0
    order = [i for i in np.argsort(-mean, kind="stable") if known[i] and table.var_names[i] in shared]
    return [str(table.var_names[i]) for i in order[:n]]


def handcrafted(sdata: Any, config: Any, fields: bool = False) -> np.ndarray:
    """Hand-crafted colour/texture features of each spot's tile (storm's ``morphology_features``) and niche mean.

    With ``fields``, also those of the wider fields around the spot that storm's expression heads read (160 columns).
    """
    from storm.tl._morphology import FIELDS, morphology_features

    return morphology_features(st.io.resolve(sdata), config, FIELDS if fields else FIELDS[:1])
