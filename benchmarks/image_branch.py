"""Does the image branch carry signal of its own? An ablation of the image objective on a section held out of it all.

Usage: python -m benchmarks image_branch [--held-out B4] [--train C2 C3 C4 C5] [--steps 150] [--model default]
                                        [--arms default continued crops crops_only] [--crops 16] [--out FILE] [--quick]

Every arm starts from ``--model`` (default: the shipped checkpoint, pretrained with B4 left out; for another held-out
section, a fold model that never saw it: ``python -m benchmarks expression_her2st --pretrain-folds DIR --held-out C4
--folds-only`` writes ``DIR/C4/model``) and is trained further
on the ``--train`` sections only (``--held-out`` stays out of everything), for ``--steps`` steps of 16 niches, seed 0:
* ``default``: the checkpoint as shipped (no further training);
* ``continued``: the default objectives on the niches' spot tiles only (the control for the extra steps);
* ``crops``: the same, plus ``--crops`` crops a step drawn anywhere over the tissue of the batch's slide, whose two
  shifted, flipped/rotated, stain-jittered views and wider context view train the image branch contrastively
  (``image_views``; ``TrainConfig.crops_per_batch``);
* ``crops_only``: only ``image_views`` on the crops (no expression, no niche objective).

Scored on the held-out section, beside colour/texture statistics of the tile and its niche (storm's
``morphology_features``), the baseline the image embedding must beat:
* ``ridge``: ridge from ``X_storm_image`` (image branch) to the 250 genes of highest mean expression, features and
  targets standardised within each slide, penalty by leave-one-section-out CV over the training sections; mean
  Pearson r over genes;
* ``domains``: ``st.tl.embed(modality="image")`` then ``st.tl.domains(n_domains=k)`` (k = the section's expression
  clusters, ``obs["cluster"]``, from the her2st authors) against those clusters (ARI); statistics through the same
  ``st.tl.domains(use_rep=...)``; mean over 3 clustering seeds;
* ``decoder``: the zero-shot H&E -> expression decoder (``st.tl.predict_expression``), mean r over the same genes.
Writes benchmarks/results/image_branch_<held-out>.json and prints a markdown table.
"""

from __future__ import annotations

import copy
import tempfile
import time
from pathlib import Path

import numpy as np

import storm as st
from storm._standardise import standardised
from storm.tl._encode import encode
from storm.tl._metrics import pearson_per_gene
from storm.tl._model_arg import get_model

from ._common import (
    DEFAULT_DATA,
    RESULTS,
    expression,
    handcrafted,
    header,
    parse,
    quick_out,
    ridge_probe,
    suite_parser,
    top_genes,
    write,
)

#: ``--quick``: the crops-only arm for 20 steps, probes fitted on two sections, 50 genes.
QUICK = [
    "--arms",
    "crops_only",
    "--steps",
    "20",
    "--train",
    "C2",
    "C3",
    "--genes",
    "50",
    *quick_out("image_branch.json"),
]

ARMS = ("default", "continued", "crops", "crops_only")


def train_arm(net, slides, arm: str, steps: int, crops: int, seed: int = 0):
    """The default model trained ``steps`` further on ``slides`` as ``arm`` says (a copy; ``net`` is unchanged)."""
    from storm.data import Corpus
    from storm.train import ObjectiveWeights, TrainConfig, Trainer

    if arm == "default":
        return net
    objectives = {}
    if arm == "crops_only":
        objectives = {name: float(name == "image_views") for name in ObjectiveWeights.names()}
    with tempfile.TemporaryDirectory(prefix="storm-image-branch-") as scratch:
        config = TrainConfig(
            model=net.config.to_dict(),
            output_dir=scratch,
            max_steps=steps,
            warmup_stage_steps=0,
            lr=3e-4,
            lr_warmup_steps=max(steps // 10, 1),
            batch_size=16,
            tile_px=net.config.image_size,
            tile_um=net.config.tile_um,
            checkpoint_every=steps + 1,
            log_every=max(steps // 10, 1),
            seed=seed,
            objectives=objectives,
            crops_per_batch=crops if arm in ("crops", "crops_only") else 0,
        )
        corpus = Corpus.for_model(slides, net)
        return Trainer(corpus, config, model=copy.deepcopy(net)).fit(resume=False, label=arm).eval()


def domains_ari(sdata, rep: str | None, model, k: int, seeds=(0, 1, 2)) -> float:
    from sklearn.metrics import adjusted_rand_score

    truth = sdata["table"].obs["cluster"].astype(str).to_numpy()
    scores = []
    for seed in seeds:
        if rep is None:
            st.tl.domains(sdata, n_domains=k, model=model, random_state=seed, key_added="d")
        else:
            st.tl.domains(sdata, n_domains=k, use_rep=rep, random_state=seed, key_added="d")
        labels = sdata["table"].obs["d"].astype(str).to_numpy()
        keep = truth != "nan"
        scores.append(adjusted_rand_score(truth[keep], labels[keep]))
    return float(np.mean(scores))


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--held-out", default="B4")
    parser.add_argument("--train", nargs="+", default=["C2", "C3", "C4", "C5"])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--crops", type=int, default=16)
    parser.add_argument("--genes", type=int, default=250)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--model", default=None, help="checkpoint folder to start from (default: the shipped one)")
    parser.add_argument(
        "--out", type=Path, default=None, help="result file (default: results/image_branch_<held>.json)"
    )
    args = parse(parser, argv, QUICK)
    st.settings.progress = False
    load = lambda s: st.datasets.her2st(s, path=args.data / "her2st")  # noqa: E731
    held, train = load(args.held_out), [load(s) for s in args.train]
    default = get_model(args.model)
    genes = top_genes(held, train, default.vocab, args.genes)
    truth = standardised(expression(held, genes))
    train_y = [standardised(expression(s, genes)) for s in train]
    k = int(held["table"].obs["cluster"].dropna().nunique())
    result = {
        **header("image_branch"),
        "held_out": args.held_out,
        "train": args.train,
        "steps": args.steps,
        "crops_per_batch": args.crops,
        "n_genes": len(genes),
        "n_domains": k,
        "rows": {},
    }

    stats = [standardised(handcrafted(s, default.config)) for s in (held, *train)]
    pred, _ = ridge_probe(stats[1:], train_y, stats[0])
    held["table"].obsm["X_stats"] = stats[0]
    result["rows"]["statistics"] = {
        "ridge": float(pearson_per_gene(pred, truth).mean()),
        "domains": domains_ari(held, "X_stats", None, k),
    }
    print(result["rows"]["statistics"])
    for arm in args.arms:
        started = time.perf_counter()
        model = train_arm(default, train, arm, args.steps, args.crops)
        trained = time.perf_counter() - started
        outs = [encode(s, model, modality="image", genes=genes if s is held else None) for s in (held, *train)]
        x = [standardised(o.image_embedding) for o in outs]
        pred, _ = ridge_probe(x[1:], train_y, x[0])
        decoder = model.expression_to_log1p(outs[0].predicted_expression, genes, slide_scale=True)
        held_copy = load(args.held_out)
        st.tl.embed(held_copy, model=model, modality="image")
        result["rows"][arm] = {
            "ridge": float(pearson_per_gene(pred, truth).mean()),
            "domains": domains_ari(held_copy, None, model, k),
            "decoder": float(pearson_per_gene(decoder, truth).mean()),
            "train_seconds": round(trained, 1),
        }
        print(arm, result["rows"][arm])
    write(result, args.out or RESULTS / f"image_branch_{args.held_out}.json")
    print(table(result))


def table(result: dict) -> str:
    rows = [
        "| image features | ridge r (per-slide standardised) | image-only domains ARI | zero-shot decoder r | training s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in result["rows"].items():
        decoder = f"{row['decoder']:.3f}" if "decoder" in row else "–"
        seconds = f"{row['train_seconds']:.0f}" if "train_seconds" in row else "–"
        rows.append(f"| {name} | {row['ridge']:.3f} | {row['domains']:.3f} | {decoder} | {seconds} |")
    return "\n".join(rows)


if __name__ == "__main__":
    main()
