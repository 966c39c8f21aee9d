"""Is pretraining worth it? H&E -> expression on a section held out of pretraining, three ways, one protocol.

Usage: python -m benchmarks pretraining_value [--model default] [--data ../shared/data] [--held-out B4]
                                             [--train C2 C3 C4 C5] [--genes 250] [--quick]

``scripts/train_default.py`` runs it on every new default checkpoint and puts its table in the model card.

Protocol (identical for every contender):
* genes: the ``--genes`` genes with the highest mean log1p(CP10k) on the held-out section, among those measured on
  every probe-training section and in the model's vocabulary;
* score: Pearson correlation per gene across the held-out section's spots, averaged over genes (a gene whose
  prediction is constant scores 0);
* ridge probes are fitted on the spots of the ``--train`` sections (standardised features, ridge penalty chosen by
  leave-one-section-out cross-validation on those sections only) and applied to the held-out section.

The zero-shot decoder is scored as ``st.tl.predict_expression(scale="model")`` returns it (``zero_shot``) and, for a
decoder with a standardised target, as ``scale="slide"`` returns it (``zero_shot_slide``: same r, other spread).

Contenders: the pretrained model (zero-shot image -> expression decoder, and a ridge probe on its image-only spot
embeddings: the joint embedding of an image-only pass, ``X_storm``, and the image-branch embedding, ``X_storm_image``), the
same architecture with random weights (same read-outs), and ridge on hand-crafted colour/texture
features of the spot's tile and the mean over its niche (``storm.tl._morphology``).
Writes benchmarks/results/pretraining_value.json and prints a markdown table.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

import storm as st
from storm._compute import cpu_name
from storm.models import StormModel
from storm.tl._encode import encode
from storm.tl._metrics import pearson_per_gene

from ._common import (
    DEFAULT_DATA,
    RESULTS,
    expression,
    handcrafted,
    parse,
    quick_out,
    ridge_probe,
    suite_parser,
    top_genes,
)

#: ``--quick``: 50 genes, ridge probes fitted on two sections.
QUICK = ["--genes", "50", "--train", "C2", "C3", *quick_out("pretraining_value.json")]


def model_readouts(model: StormModel, held, train, genes: list[str]) -> dict[str, np.ndarray]:
    held_out = encode(held, model, modality="image", genes=genes)
    train_out = [encode(s, model, modality="image") for s in train]
    return {
        "zero_shot": model.expression_to_log1p(held_out.predicted_expression, genes, slide_scale=False),
        "zero_shot_slide": model.expression_to_log1p(held_out.predicted_expression, genes, slide_scale=True),
        "ridge": (held_out.embedding, [o.embedding for o in train_out]),
        "ridge_image_branch": (held_out.image_embedding, [o.image_embedding for o in train_out]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--model", default="default", help="checkpoint folder, or 'default' (bundled)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--held-out", default="B4")
    parser.add_argument("--train", nargs="+", default=["C2", "C3", "C4", "C5"])
    parser.add_argument("--genes", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-init model")
    parser.add_argument("--out", type=Path, default=RESULTS / "pretraining_value.json")
    args = parse(parser, argv, QUICK)
    st.settings.progress = False
    started = time.perf_counter()

    pretrained = StormModel.from_pretrained(args.model)
    torch.manual_seed(args.seed)
    random_init = StormModel(pretrained.config, vocab=pretrained.vocab).eval()
    held = st.datasets.her2st(args.held_out, path=args.data / "her2st")
    train = [st.datasets.her2st(s, path=args.data / "her2st") for s in args.train]
    genes = top_genes(held, train, pretrained.vocab, args.genes)
    truth = expression(held, genes)
    train_y = [expression(s, genes) for s in train]
    print(f"{len(genes)} genes; held-out {args.held_out}: {truth.shape[0]} spots; train {sum(len(y) for y in train_y)}")

    results: dict[str, dict[str, float]] = {}

    def score(name: str, readout: str, pred: np.ndarray, **extra: float) -> None:
        r = pearson_per_gene(pred, truth)
        results.setdefault(name, {})[readout] = round(float(r.mean()), 4)
        results[name][f"{readout}_median"] = round(float(np.median(r)), 4)
        results[name][f"{readout}_genes_r_over_0.3"] = int((r > 0.3).sum())
        # how far predictions shrink to the mean: each gene's predicted over measured standard deviation across spots
        spread = pred.std(0) / np.maximum(truth.std(0), 1e-12)
        results[name][f"{readout}_spread_ratio_median"] = round(float(np.median(spread)), 4)
        results[name].update({f"{readout}_{k}": v for k, v in extra.items()})
        print(
            f"{name:>14} {readout:>10}: mean r {r.mean():.4f}  median {np.median(r):.4f}  r>0.3: {(r > 0.3).sum()}  "
            f"spread ratio {np.median(spread):.3f}"
        )

    for name, model in (("pretrained", pretrained), ("random_init", random_init)):
        out = model_readouts(model, held, train, genes)
        score(name, "zero_shot", out["zero_shot"])
        if model.config.expression_target == "standardised":
            score(name, "zero_shot_slide", out["zero_shot_slide"])
        for readout in ("ridge", "ridge_image_branch"):
            held_x, train_x = out[readout]
            pred, alpha = ridge_probe(train_x, train_y, held_x)
            score(name, readout, pred, alpha=alpha)
    held_x = handcrafted(held, pretrained.config)
    pred, alpha = ridge_probe([handcrafted(s, pretrained.config) for s in train], train_y, held_x)
    score("handcrafted", "ridge", pred, alpha=alpha)

    record = {
        "benchmark": "pretraining_value",
        "date": datetime.date.today().isoformat(),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "model": pretrained.checkpoint_info,
        "held_out": args.held_out,
        "probe_training_sections": args.train,
        "n_genes": len(genes),
        "n_held_out_spots": int(truth.shape[0]),
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2, default=str) + "\n")
    print()
    print(table(record))


def table(record: dict) -> str:
    """The markdown table of a result record."""
    res = record["results"]
    rows = [
        "| contender | zero-shot decoder | ridge on joint embedding | ridge on image-branch embedding |",
        "|---|---:|---:|---:|",
        *(
            f"| {label} | {res[key]['zero_shot']:.3f} | {res[key]['ridge']:.3f} | {res[key]['ridge_image_branch']:.3f} |"
            for key, label in (
                ("pretrained", "storm small, pretrained"),
                ("random_init", "same architecture, random init"),
            )
        ),
        f"| hand-crafted colour/texture features + ridge | – | {res['handcrafted']['ridge']:.3f} | – |",
    ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
