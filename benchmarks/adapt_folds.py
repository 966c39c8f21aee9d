"""Adapt each her2st leave-one-section-out fold model to H&E -> expression on its four training sections.

Usage: python benchmarks/adapt_folds.py --folds runs/folds --out runs/folds_expression [--held-out B4 C2 ...]
                                        [--steps 300]

Each fold model of ``benchmarks/pretrain_folds.py`` (``FOLDS/<section>/model``, pretrained without that section) is
adapted with ``st.tl.adapt(task="expression")`` (the image -> expression objective alone, default steps and learning
rate) on the other four full-resolution sections' H&E and counts, and written to ``OUT/<section>/model`` with
``fold.json`` (steps, seconds). The held-out section stays out of everything. Score with
``benchmarks/expression_her2st.py --fold-models OUT``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _common import DEFAULT_DATA
from pretrain_folds import SECTIONS

import storm as st
from storm.models import StormModel
from storm.tl._adapt import ADAPT_STEPS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=Path, required=True, help="folder of benchmarks/pretrain_folds.py")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--held-out", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--steps", type=int, default=ADAPT_STEPS)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    st.settings.progress = False
    sections = {s: st.datasets.her2st(s, args.data / "her2st") for s in SECTIONS}
    for held in args.held_out:
        folder = args.out / held
        if (folder / "fold.json").is_file():
            print(f"{held}: done already ({folder})")
            continue
        model = StormModel.from_pretrained(args.folds / held / "model")
        train = [s for s in SECTIONS if s != held]
        started = time.perf_counter()
        adapted = st.tl.adapt([sections[s] for s in train], model, task="expression", steps=args.steps, seed=0)
        seconds = round(time.perf_counter() - started)
        adapted.save_pretrained(folder / "model")
        record = {
            "held_out": held,
            "from": str(args.folds / held / "model"),
            "trained_on": train,
            "task": "expression",
            "steps": args.steps,
            "seconds": seconds,
        }
        (folder / "fold.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"{held}: {seconds} s -> {folder / 'model'}", flush=True)


if __name__ == "__main__":
    main()
