"""Pretrain one model per her2st leave-one-section-out fold, each with its test section held out of everything it sees.

Usage: python benchmarks/pretrain_folds.py --out runs/folds [--held-out B4 C2 C3 C4 C5] [--steps 600]
                                           [--set expression_target=log1p] [--set image_repeats=24]

Each fold's corpus is the shipped default's recipe (``scripts/pretrain_default.yaml``: her2st count matrices, DLPFC
151510, the full-resolution H&E of C2-C5) with the fold's held-out section removed (image and counts) and the other
full-resolution sections' images in (B4's, for the C folds). The schedule is the recipe's, shortened to ``--steps``
(the warm-up stage and learning-rate warm-up scaled with it) so that five folds fit on 2 CPU cores; ``--set`` changes
one field of the training config, or of the model config when the field is one (for ablations). Each fold is written
to ``OUT/<section>/model`` (resumed when interrupted, skipped when finished); ``benchmarks/expression_her2st.py
--fold-models OUT`` scores them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import yaml

import storm as st
from storm.models import StormConfig

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "scripts" / "pretrain_default.yaml"
SECTIONS = ("B4", "C2", "C3", "C4", "C5")


def fold_config(recipe: dict[str, Any], held: str, steps: int, changes: dict[str, Any]) -> dict[str, Any]:
    """The recipe for the fold that holds ``held`` out, at ``steps`` steps, with ``changes`` applied."""
    corpus = [s for s in recipe["corpus"] if s != f"her2st:{held}"]
    corpus += [f"her2st:{s}" for s in SECTIONS if s != held and f"her2st:{s}" not in corpus]
    scale = steps / recipe["max_steps"]
    config = {k: v for k, v in recipe.items() if k not in ("corpus", "data_dir", "output_dir")}
    config.update(
        corpus=corpus,
        max_steps=steps,
        warmup_stage_steps=max(1, round(recipe["warmup_stage_steps"] * scale)),
        lr_warmup_steps=max(1, round(recipe["lr_warmup_steps"] * scale)),
        checkpoint_every=steps,
    )
    model_fields = {f.name for f in dataclasses.fields(StormConfig)}
    model = {"preset": config["model"]} if isinstance(config["model"], str) else dict(config["model"])
    for key, value in changes.items():
        if key in model_fields:
            model[key] = value
        else:
            config[key] = value
    config["model"] = model
    return config


def parse_change(text: str) -> tuple[str, Any]:
    key, _, value = text.partition("=")
    if not key or not value:
        raise SystemExit(f"--set {text!r}: write KEY=VALUE")
    return key, yaml.safe_load(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--held-out", nargs="+", default=list(SECTIONS), choices=SECTIONS)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--set", dest="changes", action="append", default=[], type=parse_change)
    args = parser.parse_args()
    recipe = yaml.safe_load(RECIPE.read_text())
    data = (ROOT / recipe["data_dir"]).resolve()
    st.settings.progress = False
    for held in args.held_out:
        folder = args.out / held
        if (folder / "training.json").is_file():
            print(f"{held}: done already ({folder})")
            continue
        config = fold_config(recipe, held, args.steps, dict(args.changes))
        sources = [st.datasets.load(entry, data) for entry in config.pop("corpus")]
        started = time.perf_counter()
        st.tl.pretrain(sources, config=config, output_dir=folder, resume=folder.is_dir())
        print(f"{held}: {time.perf_counter() - started:.0f} s -> {folder / 'model'}")
        (folder / "fold.json").write_text(json.dumps({"held_out": held, "config": config}, indent=2) + "\n")


if __name__ == "__main__":
    main()
