"""Runtime of ``st.tl.adapt`` (default steps) on real Visium slides, run alone: the issue's ≤ 5 min target.

Usage: python -m benchmarks adapt_runtime [--data ../shared/data] [--samples 151673 151510] [--out FILE] [--quick]

Times ``st.tl.adapt(sdata)`` with the bundled default model on each DLPFC section (3,639 and 4,634 spots; their images
are too coarse to tile, so adaptation reads expression only), the best of one run each, on this machine's threads.
Writes benchmarks/results/adapt_runtime.json and prints a markdown table.
"""

from __future__ import annotations

import time
from pathlib import Path

import storm as st
from storm.tl._adapt import ADAPT_STEPS

from ._common import DEFAULT_DATA, RESULTS, header, parse, quick_out, suite_parser, write

#: ``--quick``: the smaller-panel section only.
QUICK = ["--samples", "151510", *quick_out("adapt_runtime.json")]


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--samples", nargs="+", default=["151673", "151510"])
    parser.add_argument("--out", type=Path, default=RESULTS / "adapt_runtime.json")
    args = parse(parser, argv, QUICK)
    st.settings.progress = False
    record = header("adapt_runtime")
    record["steps"] = ADAPT_STEPS
    rows = []
    for sample in args.samples:
        sdata = st.datasets.dlpfc(sample, args.data / "dlpfc")
        t0 = time.perf_counter()
        st.tl.adapt(sdata)
        rows.append(
            {"section": sample, "spots": int(sdata["table"].n_obs), "seconds": round(time.perf_counter() - t0, 1)}
        )
        print(rows[-1], flush=True)
    record["rows"] = rows
    write(record, args.out)
    print("| section | spots | seconds |\n|---|---:|---:|")
    for row in rows:
        print(f"| {row['section']} | {row['spots']:,} | {row['seconds']:.0f} |")


if __name__ == "__main__":
    main()
