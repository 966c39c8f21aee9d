"""Runtime of ``st.tl.adapt`` (default steps) on real Visium slides, run alone: the issue's ≤ 5 min target.

Usage: python benchmarks/adapt_runtime.py [--data ../shared/data] [--samples 151673 151510] [--out FILE]

Times ``st.tl.adapt(sdata)`` with the bundled default model on each DLPFC section (3,639 and 4,634 spots; their images
are too coarse to tile, so adaptation reads expression only), the best of one run each, on this machine's threads.
Writes benchmarks/results/adapt_runtime.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from _common import DEFAULT_DATA, RESULTS, header, write

import storm as st
from storm.tl._adapt import ADAPT_STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--samples", nargs="+", default=["151673", "151510"])
    parser.add_argument("--out", type=Path, default=RESULTS / "adapt_runtime.json")
    args = parser.parse_args()
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
