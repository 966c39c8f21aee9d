"""H&E -> expression on her2st, leave one section out: storm beside image-only peers, same folds, same genes, one run.

Usage: python -m benchmarks expression_her2st [--model default] [--data ../shared/data] [--genes 250]
                                             [--cnn-epochs 6] [--cnn-px 112] [--skip stnet ...]
                                             [--fold-models runs/folds [--pretrain-folds] [--fold-steps 600]
                                              [--set KEY=VALUE] [--adapt-folds runs/folds_expression]
                                              [--held-out B4 ...] [--folds-only]] [--fold-name "storm per fold"]
                                             [--stored stnet --stored-from OLD.json] [--out FILE] [--quick]

Protocol:
* sections: the her2st sections with full-resolution H&E, B4, C2, C3, C4 and C5; each is held out in turn and every
  contender is trained on the other four;
* genes: the ``--genes`` genes with the highest mean log1p(CP10k) on the held-out section among those measured on all
  five sections and in the model's vocabulary (so storm's zero-shot decoder can answer all of them);
* targets: log1p(CP10k); score: Pearson r per gene across the held-out spots, averaged over all genes and over the 50
  best-expressed of them (``top50``), plus the median and the number of genes with r > 0.3;
* ridge penalties are chosen by leave-one-section-out CV on the four training sections only.

Contenders:
* storm default checkpoint: zero-shot image -> expression decoder (``st.tl.predict_expression``); ridge probe on the
  image-only embeddings (``X_storm`` and the image-branch ``X_storm_image`` of ``st.tl.embed(modality="image")``);
  the ``st.tl.fit_head`` expression head (its defaults for expression: embeddings and the colour/texture statistics
  of the tile, its niche and the wider fields, features and expression standardised within each slide, penalty and
  rank by cross-validation; without the statistics, ``morphology=False``; and on raw features and expression,
  ``per_slide=False, morphology=False``), read with ``predict_expression``'s default ``scale="slide"``;
* the same architecture untrained (random init, seed 0): zero-shot decoder and ridge on ``X_storm``;
* hand-crafted colour/texture features (``storm.tl._morphology``) + ridge and squidpy ``calculate_image_features``
  (summary, histogram, texture) + ridge, both of the model's tile and with the niche mean, as they are and
  standardised within each section (what ``per_slide`` does for storm's heads); and, to show what the model adds,
  the statistics that storm's expression heads read (the tile, its niche and the fields 2 and 4 tiles wide) with a
  plain per-section ridge and with storm's head recipe without the model (``fit_spot_head`` on each section's
  standardised expression, blocks and rank as ``st.tl.fit_head``);
* with ``--fold-models DIR``: storm pretrained once per fold with the held-out section excluded from everything it saw
  (``DIR/<section>/model``): its zero-shot decoder, ridge on its image-branch embedding and its ``st.tl.fit_head``
  head, so that every section is a held-out score for storm (``--fold-name`` names them in the table);
* an ST-Net-style CNN: DenseNet-121 trained end to end from scratch (``_image_baselines.py``), at ``--cnn-px`` px per
  112-µm tile for ``--cnn-epochs`` epochs (the published recipe used 224 px, ImageNet weights and 50 epochs, out of
  reach offline on 2 CPU cores).

``--stored NAME --stored-from FILE`` copies the per-fold results of contenders that do not use storm's model (the
CNN, 71 min on 2 cores) from an earlier run's JSON with the same sections and genes, with that run's date and machine.
Every row also reports the median over genes of the predicted over measured standard deviation across spots
(``spread_ratio_median``).

Fold models (the sub-steps, each fold skipped once it is done and resumed when interrupted; ``--folds-only`` stops
after them, ``--held-out`` picks the folds):
* ``--pretrain-folds``: pretrain the fold models ``--fold-models`` lacks. Each fold's corpus is the shipped default's
  recipe (``scripts/pretrain_default.yaml``: her2st count matrices, DLPFC 151510, the full-resolution H&E of C2-C5)
  with the held-out section removed (image and counts) and the other full-resolution sections' images in (B4's, for
  the C folds); the schedule is the recipe's shortened to ``--fold-steps`` (warm-up stage and learning-rate warm-up
  scaled with it; 6-8 minutes per fold on 2 cores); ``--set KEY=VALUE`` changes one field of the training config, or
  of the model config when the field is one (for ablations);
* ``--adapt-folds OUT``: each fold model adapted with ``st.tl.adapt(task="expression")`` (the image -> expression
  objective alone, ``--adapt-steps``) on its four training sections' H&E and counts, written to ``OUT/<section>``;
  these are then the models scored (about 14 minutes per fold on 2 cores).

Caveat: the default checkpoint was pretrained, self-supervised with an expression-from-image objective, on the images
and counts of C2-C5 (not B4): only B4 is a held-out score for storm's zero-shot decoder and embeddings.
Writes benchmarks/results/expression_her2st.json and prints a markdown table.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import storm as st
from storm._standardise import standardised
from storm.data import Corpus
from storm.io import resolve
from storm.tl._heads._fitting import fit_spot_head
from storm.tl._metrics import pearson_per_gene
from storm.tl._model_arg import get_model
from storm.tl._morphology import MORPHOLOGY_BLOCKS

from ._common import (
    DEFAULT_DATA,
    HER2ST_IMAGED,
    RESULTS,
    expression,
    handcrafted,
    header,
    parse,
    quick_out,
    ridge_probe,
    squidpy_features,
    stnet_predict,
    suite_parser,
    tiles_of,
    top_genes,
    write,
)

#: ``--quick``: 50 genes, without the CNN and squidpy (the slow peers), written apart.
QUICK = ["--genes", "50", "--skip", "stnet", "squidpy", *quick_out("expression_her2st.json")]
RECIPE = Path(__file__).resolve().parents[1] / "scripts" / "pretrain_default.yaml"
SECTIONS = HER2ST_IMAGED
HELD_OUT_OF_PRETRAINING = {"B4"}
TOP = 50
#: Mean Pearson r on her2st reported by the methods' papers (different splits, gene sets and pretrained encoders).
LITERATURE = {"ST-Net": 0.150, "HisToGene": 0.150, "Hist2ST": 0.193, "TRIPLEX": 0.304}
LABELS = {
    "storm_zero_shot": "storm default: zero-shot decoder",
    "storm_ridge_joint": "storm default: ridge on X_storm (image-only)",
    "storm_ridge_image_branch": "storm default: ridge on X_storm_image",
    "storm_finetune": "storm default: st.tl.finetune head",
    "storm_finetune_embeddings": "storm default: st.tl.finetune head, morphology=False",
    "storm_finetune_pooled": "storm default: st.tl.finetune head, per_slide=False, morphology=False",
    "untrained_zero_shot": "same architecture untrained: zero-shot decoder",
    "untrained_ridge_joint": "same architecture untrained: ridge on X_storm",
    "handcrafted_ridge": "hand-crafted colour/texture + ridge",
    "handcrafted_ridge_per_section": "hand-crafted colour/texture, standardised per section + ridge",
    "fields_ridge_per_section": "hand-crafted, tile + wider fields, standardised per section + ridge",
    "fields_head_recipe": "hand-crafted, tile + wider fields + storm's head recipe (no model)",
    "squidpy_ridge": "squidpy calculate_image_features + ridge",
    "squidpy_ridge_per_section": "squidpy calculate_image_features, standardised per section + ridge",
    "stnet": "ST-Net-style DenseNet-121, trained from scratch",
    "fold_zero_shot": "{fold}: zero-shot decoder",
    "fold_ridge_image_branch": "{fold}: ridge on X_storm_image",
    "fold_finetune": "{fold}: st.tl.finetune head",
    "fold_finetune_embeddings": "{fold}: st.tl.finetune head, morphology=False",
    "fold_finetune_pooled": "{fold}: st.tl.finetune head, per_slide=False, morphology=False",
}
#: Contenders whose results may be copied from an earlier run (they do not depend on storm's model).
STORABLE = (
    "stnet",
    "handcrafted_ridge",
    "handcrafted_ridge_per_section",
    "squidpy_ridge",
    "squidpy_ridge_per_section",
)


@dataclass
class Fold:
    """One leave-one-section-out fold: the held-out section, the genes, the targets and per-section features."""

    held: str
    genes: list[str]
    sections: dict[str, Any]
    targets: dict[str, np.ndarray]
    features: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)

    @property
    def train(self) -> list[str]:
        return [s for s in self.sections if s != self.held]

    def head_recipe(self, key: str) -> tuple[np.ndarray, dict[str, Any]]:
        """``st.tl.fit_head``'s expression head on these features instead of embeddings + statistics."""
        import torch

        feats = {s: standardised(x) for s, x in self.features[key].items()}
        train_y = [standardised(self.targets[s]) for s in self.train]
        groups = np.concatenate([np.full(len(feats[s]), i) for i, s in enumerate(self.train)])
        head, metrics = fit_spot_head(
            np.concatenate([feats[s] for s in self.train]),
            np.concatenate(train_y),
            task="regression",
            groups=groups,
            blocks=MORPHOLOGY_BLOCKS,
        )
        with torch.no_grad():
            pred = head.predict(torch.as_tensor(feats[self.held], dtype=torch.float32)).numpy()
        return pred, {"penalty": metrics["penalty"], "rank": metrics["rank"]}

    def ridge(self, key: str, per_section: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
        feats = self.features[key]
        if per_section:
            feats = {s: standardised(x) for s, x in feats.items()}
        pred, alpha = ridge_probe(
            [feats[s] for s in self.train], [self.targets[s] for s in self.train], feats[self.held]
        )
        return pred, {"alpha": alpha}


def layer_of(sdata: Any, key: str, genes: list[str]) -> np.ndarray:
    table = sdata["table"]
    return np.asarray(table.layers[key])[resolve(sdata).rows][:, table.var_names.get_indexer(genes)]


def obsm_of(sdata: Any, key: str) -> np.ndarray:
    return np.asarray(sdata["table"].obsm[key])[resolve(sdata).rows]


def zero_shot(net: Any, key: str) -> Callable[[Fold], tuple[np.ndarray, dict]]:
    def predict(fold: Fold) -> tuple[np.ndarray, dict]:
        sdata = fold.sections[fold.held]
        st.tl.predict_expression(sdata, genes=fold.genes, model=net, key_added=key)
        return layer_of(sdata, key, fold.genes), {}

    return predict


def finetune(net: Any, **options: bool) -> Callable[[Fold], tuple[np.ndarray, dict]]:
    def predict(fold: Fold) -> tuple[np.ndarray, dict]:
        train = [fold.sections[s] for s in fold.train]
        head = st.tl.fit_head(train, target="expression", genes=fold.genes, model=net, **options)
        sdata = fold.sections[fold.held]
        st.tl.predict_expression(sdata, genes=fold.genes, head=head, model=net, key_added="storm_finetuned")
        metrics = {k: v for k, v in head.metrics.items() if isinstance(v, int | float | str)}
        return layer_of(sdata, "storm_finetuned", fold.genes), metrics

    return predict


def per_fold(models: dict[str, Any]) -> dict[str, Callable[[Fold], tuple[np.ndarray, dict]]]:
    """The contenders of the models pretrained per fold (each applied only to the section it never saw)."""

    def zero_shot_fold(fold: Fold) -> tuple[np.ndarray, dict]:
        return zero_shot(models[fold.held], "fold_predicted")(fold)

    def ridge_fold(fold: Fold) -> tuple[np.ndarray, dict]:
        key = f"X_fold_{fold.held}"
        for sdata in fold.sections.values():
            st.tl.embed(sdata, models[fold.held], modality="image", key_added=key)
        fold.features[key] = {s: obsm_of(sdata, f"{key}_image") for s, sdata in fold.sections.items()}
        return fold.ridge(key)

    def finetune_fold(fold: Fold) -> tuple[np.ndarray, dict]:
        return finetune(models[fold.held])(fold)

    def embeddings_fold(fold: Fold) -> tuple[np.ndarray, dict]:
        return finetune(models[fold.held], morphology=False)(fold)

    def pooled_fold(fold: Fold) -> tuple[np.ndarray, dict]:
        return finetune(models[fold.held], per_slide=False, morphology=False)(fold)

    return {
        "fold_zero_shot": zero_shot_fold,
        "fold_ridge_image_branch": ridge_fold,
        "fold_finetune": finetune_fold,
        "fold_finetune_embeddings": embeddings_fold,
        "fold_finetune_pooled": pooled_fold,
    }


def stnet(tiles: dict[str, np.ndarray], epochs: int) -> Callable[[Fold], tuple[np.ndarray, dict]]:
    def predict(fold: Fold) -> tuple[np.ndarray, dict]:
        train_x = np.concatenate([tiles[s] for s in fold.train])
        train_y = np.concatenate([fold.targets[s] for s in fold.train])
        return stnet_predict(train_x, train_y, tiles[fold.held], epochs=epochs)

    return predict


def section_features(sections: dict[str, Any], net: Any, untrained: Any, skip: set[str]) -> dict[str, Any]:
    """Every per-section input the contenders need, computed once: embeddings, hand-crafted and squidpy features."""
    features: dict[str, dict[str, np.ndarray]] = {}
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Callable[[str, Any], np.ndarray]) -> None:
        t0 = time.perf_counter()
        features[name] = {s: fn(s, sdata) for s, sdata in sections.items()}
        seconds[name] = round(time.perf_counter() - t0, 1)

    def storm_embedding(model: Any, key: str, read: str) -> Callable[[str, Any], np.ndarray]:
        def run(_: str, sdata: Any) -> np.ndarray:
            if key not in sdata["table"].obsm:
                st.tl.embed(sdata, model=model, modality="image", key_added=key)
            return obsm_of(sdata, read)

        return run

    timed("storm_joint", storm_embedding(net, "X_storm", "X_storm"))
    timed("storm_image_branch", storm_embedding(net, "X_storm", "X_storm_image"))
    timed("untrained_joint", storm_embedding(untrained, "X_untrained", "X_untrained"))
    if "handcrafted" not in skip:
        timed("fields", lambda _, sdata: handcrafted(sdata, net.config, fields=True))
        features["handcrafted"] = {s: x[:, : MORPHOLOGY_BLOCKS[0]] for s, x in features["fields"].items()}
    if "squidpy" not in skip:

        def squidpy_of(_: str, sdata: Any) -> np.ndarray:
            corpus = Corpus.from_sources(sdata, tile_px=8, tile_um=net.config.tile_um, niche_size=net.config.niche_size)
            return squidpy_features(sdata, net.config, corpus.slides[0].neighbours)

        timed("squidpy", squidpy_of)
    return {"features": features, "seconds": seconds}


def contenders(net: Any, untrained: Any, tiles: dict[str, np.ndarray], args: Any) -> dict[str, Callable]:
    out: dict[str, Callable] = {
        "storm_zero_shot": zero_shot(net, "storm_predicted"),
        "storm_ridge_joint": lambda fold: fold.ridge("storm_joint"),
        "storm_ridge_image_branch": lambda fold: fold.ridge("storm_image_branch"),
        "storm_finetune": finetune(net),
        "storm_finetune_embeddings": finetune(net, morphology=False),
        "storm_finetune_pooled": finetune(net, per_slide=False, morphology=False),
        "untrained_zero_shot": zero_shot(untrained, "untrained_predicted"),
        "untrained_ridge_joint": lambda fold: fold.ridge("untrained_joint"),
        "handcrafted_ridge": lambda fold: fold.ridge("handcrafted"),
        "handcrafted_ridge_per_section": lambda fold: fold.ridge("handcrafted", per_section=True),
        "fields_ridge_per_section": lambda fold: fold.ridge("fields", per_section=True),
        "fields_head_recipe": lambda fold: fold.head_recipe("fields"),
        "squidpy_ridge": lambda fold: fold.ridge("squidpy"),
        "squidpy_ridge_per_section": lambda fold: fold.ridge("squidpy", per_section=True),
        "stnet": stnet(tiles, args.cnn_epochs),
    }
    skipped = {
        "handcrafted": (
            "handcrafted_ridge",
            "handcrafted_ridge_per_section",
            "fields_ridge_per_section",
            "fields_head_recipe",
        ),
        "squidpy": ("squidpy_ridge", "squidpy_ridge_per_section"),
        "stnet": ("stnet",),
    }
    for name in args.skip:
        for contender in skipped[name]:
            out.pop(contender, None)
    return out


def summarise(r: np.ndarray, pred: np.ndarray, truth: np.ndarray) -> dict[str, Any]:
    spread = pred.std(0) / np.maximum(truth.std(0), 1e-12)
    return {
        "mean_r": round(float(r.mean()), 4),
        "top50_mean_r": round(float(r[:TOP].mean()), 4),
        "median_r": round(float(np.median(r)), 4),
        "genes_r_over_0.3": int((r > 0.3).sum()),
        "spread_ratio_median": round(float(np.median(spread)), 4),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from storm.models import StormModel

    net = get_model(None if args.model == "default" else args.model)
    torch.manual_seed(0)
    untrained = StormModel(net.config, vocab=net.vocab).eval()
    sections = {s: st.datasets.her2st(s, args.data / "her2st") for s in SECTIONS}
    prepared = section_features(sections, net, untrained, set(args.skip))
    tiles = {}
    if "stnet" not in args.skip:
        tiles = {s: tiles_of(sdata, args.cnn_px, net.config.tile_um) for s, sdata in sections.items()}
    methods = contenders(net, untrained, tiles, args)
    if args.fold_models is not None:
        folds = {s: StormModel.from_pretrained(args.fold_models / s / "model") for s in SECTIONS}
        methods.update(per_fold(folds))
    stored = stored_results(args)
    for name in stored:
        methods.pop(name, None)
    results: dict[str, dict[str, Any]] = {name: {} for name in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for held in SECTIONS:
        genes = top_genes(sections[held], list(sections.values()), net.vocab, args.genes)
        targets = {s: expression(sdata, genes) for s, sdata in sections.items()}
        fold = Fold(held, genes, sections, targets, prepared["features"])
        print(f"held out {held}: {len(targets[held])} spots, {len(genes)} genes")
        for name, predict in methods.items():
            t0 = time.perf_counter()
            pred, extra = predict(fold)
            seconds[name] += time.perf_counter() - t0
            r = pearson_per_gene(pred, targets[held])
            results[name][held] = {**summarise(r, pred, targets[held]), **extra}
            print(f"  {name:>26}: mean r {r.mean():.4f}  top-50 {r[:TOP].mean():.4f}")
    results.update({name: record["results"] for name, record in stored.items()})
    for by_section in results.values():
        for metric in ("mean_r", "top50_mean_r"):
            by_section[f"{metric}_over_sections"] = round(float(np.mean([by_section[s][metric] for s in SECTIONS])), 4)
    return {
        "sections": {s: int(len(resolve(sd).obs_names)) for s, sd in sections.items()},
        "held_out_of_pretraining": sorted(HELD_OUT_OF_PRETRAINING),
        "n_genes": args.genes,
        "cnn": {"tile_px": args.cnn_px, "tile_um": net.config.tile_um, "epochs": args.cnn_epochs},
        "model": net.checkpoint_info,
        "fold_models": None if args.fold_models is None else {s: m.checkpoint_info for s, m in folds.items()},
        "fold_name": args.fold_name,
        "stored": {name: {k: v for k, v in record.items() if k != "results"} for name, record in stored.items()},
        "literature_mean_r_her2st": LITERATURE,
        "results": results,
        "seconds": {
            **prepared["seconds"],
            **{f"contender_{k}": round(v, 1) for k, v in seconds.items()},
        },
    }


def stored_results(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per-fold results of ``--stored`` contenders copied from ``--stored-from``, with where they come from."""
    if not args.stored:
        return {}
    if args.stored_from is None:
        raise SystemExit("--stored needs --stored-from, the JSON of the earlier run.")
    earlier = json.loads(args.stored_from.read_text())
    if earlier.get("n_genes") != args.genes or set(earlier.get("sections", {})) != set(SECTIONS):
        raise SystemExit(f"{args.stored_from}: other genes or sections than this run; rerun those contenders.")
    out = {}
    for name in args.stored:
        out[name] = {
            "from": str(args.stored_from),
            "commit": _last_commit(args.stored_from),
            "date": earlier["date"],
            "machine": earlier["machine"],
            "seconds": earlier["seconds"].get(f"contender_{name}"),
            # copied there from an earlier run in turn: keep where the numbers were measured
            **earlier.get("stored", {}).get(name, {}),
            "results": {s: earlier["results"][name][s] for s in SECTIONS},
        }
    return out


def _last_commit(path: Path) -> str | None:
    """The last commit that changed ``path`` (where the stored results can be read), if it is in git."""
    import subprocess

    done = subprocess.run(["git", "log", "-1", "--format=%H", "--", str(path)], capture_output=True, text=True)
    return done.stdout.strip() or None


def table(part: dict[str, Any]) -> str:
    head = [f"{s} (held out)" if s in HELD_OUT_OF_PRETRAINING else s for s in part["sections"]]
    lines = [
        "Cells: mean r over the genes (mean r over the top-50 genes).",
        "",
        "| contender | " + " | ".join(head) + " | mean over sections | top-50 mean |",
        "|---|" + "---:|" * (len(head) + 2),
    ]
    for name, by_section in part["results"].items():
        cells = [f"{by_section[s]['mean_r']:.3f} ({by_section[s]['top50_mean_r']:.3f})" for s in part["sections"]]
        lines.append(
            f"| {LABELS[name].format(fold=part.get('fold_name'))} | "
            + " | ".join(cells)
            + f" | {by_section['mean_r_over_sections']:.3f} | {by_section['top50_mean_r_over_sections']:.3f} |"
        )
    for method, r in part["literature_mean_r_her2st"].items():
        lines.append(
            f"| {method} (published, other splits and genes) | " + " | ".join("–" for _ in head) + f" | {r:.3f} | – |"
        )
    return "\n".join(lines)


def fold_config(recipe: dict[str, Any], held: str, steps: int, changes: dict[str, Any]) -> dict[str, Any]:
    """The default recipe for the fold that holds ``held`` out, at ``steps`` steps, with ``changes`` applied."""
    from storm.models import StormConfig

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
    import yaml

    key, _, value = text.partition("=")
    if not key or not value:
        raise argparse.ArgumentTypeError(f"--set {text!r}: write KEY=VALUE")
    return key, yaml.safe_load(value)


def pretrain_folds(out: Path, held_out: list[str], steps: int, changes: dict[str, Any], data: Path) -> None:
    """One model per fold in ``out/<section>/model``, the recipe without that section (skipped once done)."""
    import yaml

    recipe = yaml.safe_load(RECIPE.read_text())
    for held in held_out:
        folder = out / held
        if (folder / "training.json").is_file():
            print(f"{held}: pretrained already ({folder})")
            continue
        config = fold_config(recipe, held, steps, changes)
        sources = [st.datasets.load(entry, data) for entry in config.pop("corpus")]
        started = time.perf_counter()
        st.tl.pretrain(sources, config=config, output_dir=folder, resume=folder.is_dir())
        print(f"{held}: {time.perf_counter() - started:.0f} s -> {folder / 'model'}", flush=True)
        (folder / "fold.json").write_text(json.dumps({"held_out": held, "config": config}, indent=2) + "\n")


def adapt_folds(folds: Path, out: Path, held_out: list[str], steps: int, data: Path) -> None:
    """Each fold model adapted with ``st.tl.adapt(task="expression")`` on its four training sections, in ``out``."""
    from storm.models import StormModel

    sections = {s: st.datasets.her2st(s, data / "her2st") for s in SECTIONS}
    for held in held_out:
        folder = out / held
        if (folder / "fold.json").is_file():
            print(f"{held}: adapted already ({folder})")
            continue
        model = StormModel.from_pretrained(folds / held / "model")
        train = [s for s in SECTIONS if s != held]
        started = time.perf_counter()
        adapted = st.tl.adapt([sections[s] for s in train], model=model, task="expression", steps=steps, random_state=0)
        seconds = round(time.perf_counter() - started)
        adapted.save_pretrained(folder / "model")
        record = {
            "held_out": held,
            "from": str(folds / held / "model"),
            "trained_on": train,
            "task": "expression",
            "steps": steps,
            "seconds": seconds,
        }
        (folder / "fold.json").write_text(json.dumps(record, indent=2) + "\n")
        print(f"{held}: {seconds} s -> {folder / 'model'}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--model", default="default", help="checkpoint folder, or 'default' (bundled)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--genes", type=int, default=250)
    parser.add_argument("--cnn-epochs", type=int, default=6)
    parser.add_argument("--cnn-px", type=int, default=112)
    parser.add_argument("--skip", nargs="*", default=[], choices=["handcrafted", "squidpy", "stnet"])
    parser.add_argument("--fold-models", type=Path, default=None, help="folder of the per-fold models")
    parser.add_argument("--pretrain-folds", action="store_true", help="pretrain the fold models --fold-models lacks")
    parser.add_argument("--fold-steps", type=int, default=600, help="pretraining steps per fold")
    parser.add_argument("--set", dest="changes", action="append", default=[], type=parse_change, metavar="KEY=VALUE")
    parser.add_argument("--adapt-folds", type=Path, default=None, help="adapt the fold models into this folder")
    parser.add_argument("--adapt-steps", type=int, default=None, help="st.tl.adapt steps (default: its own)")
    parser.add_argument("--held-out", nargs="+", default=list(SECTIONS), choices=SECTIONS, help="folds to make")
    parser.add_argument("--folds-only", action="store_true", help="make the fold models, do not score")
    parser.add_argument("--fold-name", default="storm pretrained per fold", help="the fold models' name in the table")
    parser.add_argument("--stored", nargs="*", default=[], choices=STORABLE)
    parser.add_argument("--stored-from", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "expression_her2st.json")
    args = parse(parser, argv, QUICK)
    st.settings.progress = False
    if (args.pretrain_folds or args.adapt_folds or args.folds_only) and args.fold_models is None:
        parser.error("--pretrain-folds, --adapt-folds and --folds-only need --fold-models DIR")
    if args.pretrain_folds:
        pretrain_folds(args.fold_models, args.held_out, args.fold_steps, dict(args.changes), args.data)
    if args.adapt_folds is not None:
        from storm.tl._adapt import ADAPT_STEPS

        adapt_folds(args.fold_models, args.adapt_folds, args.held_out, args.adapt_steps or ADAPT_STEPS, args.data)
        args.fold_models = args.adapt_folds
    if args.folds_only:
        return
    started = time.perf_counter()
    record = header("expression_her2st", "scanpy", "squidpy", "scikit-learn", "torchvision")
    record["command"] = args.command
    record.update(run(args))
    record["seconds"]["total"] = round(time.perf_counter() - started, 1)
    write(record, args.out)
    print(f"\n## H&E -> expression, leave one section out ({record['seconds']['total']:.0f} s)\n")
    print(table(record))


if __name__ == "__main__":
    main()
