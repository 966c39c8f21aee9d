"""Reading niches in line vs loader processes reading ahead: end-to-end ``st.tl.embed`` spots/s, side by side.

Usage: python benchmarks/read_ahead.py [--preset tiny] [--device cpu] [--precision fp32] [--workers 1 2]
                                       [--repeats 2] [--slides her2st] [--data ../shared/data] [--out FILE]

``st.tl.embed`` builds each batch of niches in the calling process when the model runs on the CPU, and with
``storm.settings.num_workers`` :class:`~storm.data.NicheLoader` worker processes reading ahead when it runs on an
accelerator (``storm.data.loader_workers``). This script times both on the same device in one process (random weights
of ``--preset``, the her2st sections of ``throughput.py``): in line, and each ``--workers`` count, alternating, best of
``--repeats`` after one warm-up. Ratio = spots/s / in-line spots/s. Writes benchmarks/results/read_ahead_<device>.json and prints a table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from throughput import pipeline_parser, preset_model, report, slides

import storm as st
from storm.data import _loader
from storm.tl._model_arg import get_model


def run(args: argparse.Namespace) -> dict[str, Any]:
    st.settings.device = args.device
    st.settings.precision = args.precision
    st.settings.batch_size = args.batch
    sections = slides(args.slides, args.data)
    n_spots = sum(s["table"].n_obs for s in sections)
    model = preset_model(args.preset, get_model(None))

    def end_to_end() -> float:
        t0 = time.perf_counter()
        for sdata in sections:
            st.tl.embed(sdata, model, modality="both", key_added="X_bench")
        return time.perf_counter() - t0

    variants = {"in line": 0} | {f"read ahead, {w} process{'es' * (w > 1)}": w for w in args.workers}
    default = _loader.loader_workers
    best = dict.fromkeys(variants, float("inf"))
    try:
        end_to_end()
        for _ in range(args.repeats):
            for name, workers in variants.items():
                _loader.loader_workers = lambda device, n=None, w=workers: w
                best[name] = min(best[name], end_to_end())
    finally:
        _loader.loader_workers = default
    base = n_spots / best["in line"]
    rows = [
        {"reader": name, "spots_per_s": round(n_spots / s, 1), "ratio_to_in_line": round(n_spots / s / base, 3)}
        for name, s in best.items()
    ]
    for row in rows:
        print(row)
    return {
        "device": args.device,
        "precision": args.precision,
        "preset": args.preset,
        "batch": args.batch,
        "rows": rows,
    }


def table(record: dict[str, Any]) -> str:
    lines = [
        f"Device: {record['device']}, preset {record['preset']}, {record['precision']}, {record['batch']} niches per "
        "batch.",
        "",
        "| reader | end-to-end spots/s | × in line |",
        "|---|---:|---:|",
    ]
    lines += [f"| {r['reader']} | {r['spots_per_s']} | {r['ratio_to_in_line']:.2f} |" for r in record["rows"]]
    return "\n".join(lines)


def main() -> None:
    parser = pipeline_parser(__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 2])
    report("read_ahead", parser.parse_args(), run, table)


if __name__ == "__main__":
    main()
