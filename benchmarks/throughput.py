"""End-to-end ``st.tl.embed`` spots/s beside model-only forward throughput: does the data pipeline starve the model?

Usage: python benchmarks/throughput.py [--presets tiny small] [--device cpu] [--precision fp32] [--batch 64]
                                       [--repeats 2] [--slides her2st] [--data ../shared/data] [--out FILE]
       (on a GPU: --presets small base large --device cuda --precision bf16)

Slides: the five her2st sections with full-resolution H&E (B4, C2-C5; 1,015 spots, H&E + expression), or with
``--slides demo:N`` N separate copies of the bundled demo (151 spots each; for machines without the data). For each preset
(random weights of that size, with the default model's gene vocabulary and tile geometry):
* end to end: ``st.tl.embed(sdata, model, modality="both")`` over all five sections (tiling from the lazily read image,
  niche building, expression, backbone, transformer, writing to ``obsm``); best of ``--repeats`` after one warm-up;
* model only: the same batches, with every input already built and on the device (tiles of the distinct spots of each
  batch, niche offsets, expression), timing only the backbone and the model forward pass, exactly as the runner calls
  them;
* ratio = end-to-end / model-only spots/s: 1 means the pipeline costs nothing; on a GPU the target is >= 0.8.
Writes benchmarks/results/throughput_<device>.json (or ``--out``) and prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from _common import DEFAULT_DATA, RESULTS, header, write

import storm as st
from storm.tl._model_arg import get_model

SECTIONS = ("B4", "C2", "C3", "C4", "C5")


def preset_model(preset: str, reference: Any, image_size: int | None = None) -> Any:
    """Random weights of ``preset`` with the reference model's vocabulary and tile geometry (or ``image_size`` px)."""
    import torch

    from storm.models import StormConfig, StormModel

    torch.manual_seed(0)
    size = {"image_size": image_size} if image_size else {}
    config = StormConfig.from_preset(preset, vocab_size=len(reference.vocab), tile_um=reference.config.tile_um, **size)
    return StormModel(config, vocab=reference.vocab).eval()


def slides(spec: str, data: Path) -> list[Any]:
    """``"her2st"``: sections B4, C2-C5 from ``data``; ``"demo:N"``: N separate copies of the bundled demo."""
    if spec == "her2st":
        return [st.datasets.her2st(s, data / "her2st") for s in SECTIONS]
    name, _, count = spec.partition(":")
    if name != "demo" or not count.isdigit() or int(count) < 1:
        raise ValueError(f"`--slides` must be 'her2st' or 'demo:N' (N >= 1), got {spec!r}.")
    return [st.datasets.demo() for _ in range(int(count))]


def best_of(fn: Any, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def prepared_batches(sdata: Any, model: Any, batch: int, device: Any) -> list[dict[str, Any]]:
    """Every input of every forward pass of the runner for ``sdata``, built and moved to ``device`` up front."""
    import torch

    from storm.tl._encode import _inputs
    from storm.train import Corpus, NicheDataset, collate_niches

    config = model.config
    corpus = Corpus.from_sources(
        sdata, vocab=model.vocab, tile_px=config.image_size, tile_um=config.tile_um, niche_size=config.niche_size
    )
    slide = corpus.slides[0]
    dataset = NicheDataset(corpus, read_tiles=False)
    order = slide.tiles.raster_order()  # the runner's batch order
    out = []
    for start in range(0, corpus.n_spots, batch):
        spots = order[start : start + batch]
        niches = slide.neighbours[spots]
        valid = niches >= 0
        unique, inverse = np.unique(niches[valid], return_inverse=True)
        out.append(
            {
                "inputs": _inputs(collate_niches(dataset.get_batch(spots)), "both", device),
                "tiles": torch.from_numpy(slide.tiles.read(unique)).to(device),
                "valid": torch.from_numpy(valid).to(device),
                "inverse": torch.from_numpy(inverse).to(device),
                "shape": niches.shape,
            }
        )
    return out


def model_only(model: Any, batches: list[dict[str, Any]], device: Any, precision: str) -> None:
    import torch

    from storm._compute import autocast

    genes = torch.zeros(1, dtype=torch.long, device=device)
    with torch.inference_mode(), autocast(precision, device):
        for b in batches:
            tokens, _ = model.image.backbone_tokens(b["tiles"])
            features = tokens.new_zeros((*b["shape"], *tokens.shape[1:]))
            features[b["valid"]] = tokens[b["inverse"]]
            model(**b["inputs"], image_features=features, genes=genes)
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from storm._compute import torch_device

    st.settings.device = args.device
    st.settings.precision = args.precision
    st.settings.batch_size = args.batch
    device = torch_device(args.device)
    reference = get_model(None)
    sections = slides(args.slides, args.data)
    n_spots = sum(s["table"].n_obs for s in sections)
    rows = []
    for preset in args.presets:
        model = preset_model(preset, reference).to(device)

        def end_to_end(model: Any = model) -> None:
            for sdata in sections:
                st.tl.embed(sdata, model, modality="both", key_added="X_bench")

        e2e_s = best_of(end_to_end, args.repeats)
        batches = [b for sdata in sections for b in prepared_batches(sdata, model, args.batch, device)]
        model_s = best_of(lambda m=model, b=batches: model_only(m, b, device, args.precision), args.repeats)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        row = {
            "preset": preset,
            "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "niche_spots": model.config.niche_size + 1,
            "spots": n_spots,
            "end_to_end_spots_per_s": round(n_spots / e2e_s, 1),
            "model_only_spots_per_s": round(n_spots / model_s, 1),
            "ratio": round(model_s / e2e_s, 3),
            "peak_gpu_gib": None if peak is None else round(peak, 2),
        }
        rows.append(row)
        print(row)
    return {
        "device": args.device,
        "precision": args.precision,
        "batch": args.batch,
        "slides": args.slides,
        "rows": rows,
    }


def table(record: dict[str, Any]) -> str:
    where = record["machine"]["gpu"] if record["device"].startswith("cuda") else record["machine"]["cpu"]
    lines = [
        f"Device: {record['device']} ({where}), precision {record['precision']}, {record['batch']} niches per batch, "
        f"slides {record.get('slides', 'her2st')}.",
        "",
        "| preset | parameters (M) | spots per niche | end-to-end spots/s | model-only spots/s | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['preset']} | {r['parameters_M']} | {r['niche_spots']} | {r['end_to_end_spots_per_s']} | "
            f"{r['model_only_spots_per_s']} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def pipeline_parser(description: str) -> argparse.ArgumentParser:
    """Arguments shared by the pipeline benchmarks (this one and ``read_ahead.py``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "auto"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--slides", default="her2st", help="'her2st' (B4, C2-C5) or 'demo:N' (no data needed)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None)
    return parser


def report(name: str, args: argparse.Namespace, run: Any, table: Any) -> None:
    """Run, write ``results/<name>_<device>.json`` (or ``--out``) and print the table."""
    st.settings.progress = False
    record = header(name, "timm")
    record.update(run(args))
    write(record, args.out or RESULTS / f"{name}_{args.device.split(':')[0]}.json")
    print()
    print(table(record))


def main() -> None:
    parser = pipeline_parser(__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    report("throughput", parser.parse_args(), run, table)


if __name__ == "__main__":
    main()
