"""Tile statistics of an expression head (``morphology``) on one thread vs several: spots/s, side by side.

Usage: python benchmarks/morphology.py [--sections B4 C3] [--workers 1 2] [--repeats 2] [--data ../shared/data]
                                       [--out FILE]

``st.tl.finetune(..., morphology=True)`` (the default for expression heads) and every ``predict_expression(head=...)``
describe each spot's tile and the fields 2 and 4 tiles wide around it (``storm.tl._morphology.morphology_features``)
on ``storm.settings.num_workers`` threads. This script times the statistics of the her2st ``--sections`` at the default
model's tile geometry for each ``--workers`` count in one process, alternating, best of ``--repeats`` after one
warm-up, and checks that every count gives the same numbers. Ratio = spots/s / spots/s on one thread. Writes
benchmarks/results/morphology_cpu.json and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _common import DEFAULT_DATA, RESULTS, header, write

import storm as st
from storm.io import resolve
from storm.tl._model_arg import get_model
from storm.tl._morphology import FIELDS, morphology_features


def run(args: argparse.Namespace) -> dict[str, Any]:
    config = get_model(None).config
    slides = [resolve(st.datasets.her2st(s, args.data / "her2st")) for s in args.sections]
    n_spots = sum(len(s.obs_names) for s in slides)
    previous = st.settings.num_workers

    def describe() -> tuple[float, list[np.ndarray]]:
        t0 = time.perf_counter()
        out = [morphology_features(s, config) for s in slides]
        return time.perf_counter() - t0, out

    best = dict.fromkeys(args.workers, float("inf"))
    try:
        st.settings.num_workers = args.workers[0]
        _, reference = describe()
        for _ in range(args.repeats):
            for workers in args.workers:
                st.settings.num_workers = workers
                seconds, out = describe()
                if any(not np.array_equal(a, b) for a, b in zip(out, reference, strict=True)):
                    raise SystemExit(f"{workers} threads gave other statistics than {args.workers[0]}")
                best[workers] = min(best[workers], seconds)
    finally:
        st.settings.num_workers = previous
    base = n_spots / best[args.workers[0]]
    rows = [
        {
            "threads": workers,
            "spots_per_s": round(n_spots / seconds, 2),
            "ms_per_spot": round(1000 * seconds / n_spots, 1),
            "ratio_to_first": round(n_spots / seconds / base, 3),
        }
        for workers, seconds in best.items()
    ]
    return {"sections": args.sections, "n_spots": n_spots, "tile_px": config.image_size, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["B4", "C3"])
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=RESULTS / "morphology_cpu.json")
    args = parser.parse_args()
    st.settings.progress = False
    record = header("morphology", "scikit-image", "numpy")
    record.update(run(args))
    write(record, args.out)
    sections = ", ".join(args.sections)
    print(f"\n{record['n_spots']} spots ({sections}), {len(FIELDS)} fields per spot\n")
    print("| threads | spots/s | ms per spot | ratio |\n|---:|---:|---:|---:|")
    for row in record["rows"]:
        print(f"| {row['threads']} | {row['spots_per_s']} | {row['ms_per_spot']} | {row['ratio_to_first']} |")


if __name__ == "__main__":
    main()
