"""Run-to-run and device-to-device agreement of ``st.tl.embed``: the tolerance to expect on a GPU.

Usage: python -m benchmarks determinism [--device cuda] [--precisions fp32 bf16] [--repeats 3] [--quick]

The bundled demo (151 spots, H&E + expression) is embedded with the default model ``--repeats`` times on the CPU in
fp32 (the reference) and on ``--device`` in each precision. Reported per precision: the largest absolute difference
between repeated runs on the device (0 = bitwise reproducible), the largest absolute difference from the CPU
reference relative to the embedding's largest absolute value, the smallest cosine similarity of a spot's embedding
with its CPU reference, and whether every spot's 10 nearest neighbours (the input of ``sc.pp.neighbors``) agree with
the CPU's (mean overlap).
Writes benchmarks/results/determinism_<device>.json and prints a markdown table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import storm as st

from ._common import RESULTS, header, parse, quick_out, suite_parser, write

#: ``--quick``: two runs, fp32 only.
QUICK = ["--precisions", "fp32", "--repeats", "2", *quick_out("determinism.json")]


def embedding(device: str, precision: str) -> np.ndarray:
    st.settings.device = device
    st.settings.precision = precision
    sdata = st.datasets.demo()
    st.tl.embed(sdata)
    return np.asarray(sdata["table"].obsm["X_storm"], dtype=np.float64)


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    def knn(x: np.ndarray) -> np.ndarray:
        d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        np.fill_diagonal(d, np.inf)
        return np.argsort(d, axis=1)[:, :k]

    na, nb = knn(a), knn(b)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(na, nb, strict=True)]))


def compare(reference: np.ndarray, runs: list[np.ndarray]) -> dict[str, Any]:
    first = runs[0]
    cosine = (first * reference).sum(1) / (np.linalg.norm(first, axis=1) * np.linalg.norm(reference, axis=1))
    return {
        "max_abs_between_runs": float(max(np.abs(r - first).max() for r in runs[1:])) if len(runs) > 1 else None,
        "max_abs_vs_cpu_relative": float(np.abs(first - reference).max() / np.abs(reference).max()),
        "min_cosine_vs_cpu": float(cosine.min()),
        "knn10_overlap_vs_cpu": neighbour_overlap(first, reference),
    }


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parse(parser, argv, QUICK)
    st.settings.progress = False
    record = header("determinism")
    cpu = [embedding("cpu", "fp32") for _ in range(args.repeats)]
    rows = {"cpu fp32": compare(cpu[0], cpu)}
    for precision in args.precisions:
        rows[f"{args.device} {precision}"] = compare(
            cpu[0], [embedding(args.device, precision) for _ in range(args.repeats)]
        )
    record.update({"device": args.device, "repeats": args.repeats, "rows": rows})
    write(record, args.out or RESULTS / f"determinism_{args.device.split(':')[0]}.json")
    print(f"\nDefault model, bundled demo (151 spots), {args.repeats} runs each; reference: the first CPU fp32 run.\n")
    print(
        "| device, precision | max abs difference between runs | max abs difference vs CPU / max abs value | "
        "min cosine vs CPU | 10-NN overlap vs CPU |"
    )
    print("|---|---:|---:|---:|---:|")
    for name, r in rows.items():
        between = "–" if r["max_abs_between_runs"] is None else f"{r['max_abs_between_runs']:.2e}"
        print(
            f"| {name} | {between} | {r['max_abs_vs_cpu_relative']:.2e} | {r['min_cosine_vs_cpu']:.6f} | "
            f"{r['knn10_overlap_vs_cpu']:.3f} |"
        )


if __name__ == "__main__":
    main()
