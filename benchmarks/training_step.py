"""Pretraining niches/s with the shared loader (this checkout) beside an earlier revision's loop, same config, one run.

Usage: python benchmarks/training_step.py [--ref eb4ffb5] [--preset tiny] [--tile-px 112] [--steps 12] [--batch 16]
                                          [--corpus her2st:C2] [--rounds 2] [--data ../shared/data] [--out FILE]

Each variant trains ``--steps`` optimiser steps of ``--preset`` on the same corpus and config in a fresh process
(this checkout's ``src``, and ``--ref`` checked out with ``git worktree`` under ``/tmp``), alternating for
``--rounds`` rounds; the figure is the best ``niches_per_second`` of ``training.json``. Before this change, training read
each niche slot's tile separately and ran the backbone on every copy; now :class:`~storm.data.NicheLoader` batches
hold each distinct tile once. Writes benchmarks/results/training_step_cpu.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _common import DEFAULT_DATA, RESULTS, header, write

ROOT = Path(__file__).resolve().parents[1]
_TRAIN = """
import json, sys
import storm as st
st.settings.progress = False
corpus, preset, tile_px, steps, batch, out = sys.argv[1:7]
sources = []
for item in corpus.split(","):
    if item == "demo":
        sources.append(st.datasets.demo())
    else:
        sources.append(st.datasets.her2st(item.split(":")[1]))
st.tl.pretrain(sources, config=preset, max_steps=int(steps), output_dir=out, batch_size=int(batch),
               tile_px=int(tile_px), tile_um=112.0, warmup_stage_steps=0, checkpoint_every=10_000)
print(json.dumps(json.load(open(out + "/training.json"))["time"]))
"""


def checkout(ref: str) -> Path:
    """``src`` of ``ref``, checked out once into a worktree under the temporary folder."""
    tree = Path(tempfile.gettempdir()) / f"storm-bench-{ref}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), ref], check=True)
    return tree / "src"


def train(src: Path, args: argparse.Namespace) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src), "STORM_DATA_DIR": str(args.data)}
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-c", _TRAIN, args.corpus, args.preset, str(args.tile_px), str(args.steps)]
        done = subprocess.run([*cmd, str(args.batch), out], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def run(args: argparse.Namespace) -> dict[str, Any]:
    variants = {f"earlier loop ({args.ref})": checkout(args.ref), "shared loader (this checkout)": ROOT / "src"}
    best = dict.fromkeys(variants, 0.0)
    for _ in range(args.rounds):
        for name, src in variants.items():
            best[name] = max(best[name], train(src, args)["niches_per_second"])
            print(name, best[name])
    base = best[next(iter(variants))]
    rows = [{"loop": k, "niches_per_s": v, "ratio": round(v / base, 3)} for k, v in best.items()]
    return {
        "preset": args.preset,
        "tile_px": args.tile_px,
        "steps": args.steps,
        "batch": args.batch,
        "corpus": args.corpus,
        "ref": args.ref,
        "rows": rows,
    }


def table(record: dict[str, Any]) -> str:
    lines = [
        f"{record['preset']} preset, {record['tile_px']} px tiles, {record['batch']} niches per step, "
        f"{record['steps']} steps on {record['corpus']}; {record['machine']['cpu']}.",
        "",
        "| training loop | niches/s | ratio |",
        "|---|---:|---:|",
    ]
    lines += [f"| {r['loop']} | {r['niches_per_s']} | {r['ratio']:.2f} |" for r in record["rows"]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="eb4ffb5")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--tile-px", type=int, default=112)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--corpus", default="her2st:C2")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    record = header("training_step", "timm")
    record.update(run(args))
    write(record, args.out or RESULTS / "training_step_cpu.json")
    print()
    print(table(record))


if __name__ == "__main__":
    main()
