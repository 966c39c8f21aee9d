"""End-to-end ``st.tl.embed`` spots/s beside model-only forward throughput: does the data pipeline starve the model?

Usage: python -m benchmarks throughput [--presets tiny small] [--device cpu] [--precision fp32] [--batch 64]
                                      [--repeats 2] [--slides her2st] [--data ../shared/data] [--out FILE]
                                      [--read-ahead 1 2] [--quick]
       (on a GPU: --presets small base large --device cuda --precision bf16;
        reading ahead on a GPU: --presets small --device cuda --precision bf16 --read-ahead 2 4 8)

Slides: the five her2st sections with full-resolution H&E (B4, C2-C5; 1,015 spots, H&E + expression), or with
``--slides demo:N`` N separate copies of the bundled demo (151 spots each; for machines without the data). For each preset
(random weights of that size, with the default model's gene vocabulary and tile geometry):
* end to end: ``st.tl.embed(sdata, model=model, modality="both")`` over all five sections (tiling from the lazily read image,
  niche building, expression, backbone, transformer, writing to ``obsm``); best of ``--repeats`` after one warm-up;
* model only: the same batches, with every input already built and on the device (tiles of the distinct spots of each
  batch, niche offsets, expression), timing only the backbone and the model forward pass, exactly as the runner calls
  them;
* first call: the warm-up run of end to end, which also decodes each slide image (storm decodes an image once per
  process, so later calls on the same slides skip it);
* ratio = end-to-end / model-only spots/s: 1 means the pipeline costs nothing; on a GPU the target is >= 0.8.
Writes benchmarks/results/throughput_<device>.json (or ``--out``) and prints a markdown table.

``--read-ahead N [N ...]`` times instead, for the first preset, reading niches in line against ``N``
:class:`~storm.data.NicheLoader` worker processes reading ahead (``st.tl.embed`` reads in line on the CPU and with
``storm.settings.num_workers`` workers on an accelerator, ``storm.data.loader_workers``): end-to-end spots/s of each,
alternating, best of ``--repeats`` after one warm-up, and the ratio to in line. Writes
benchmarks/results/read_ahead_<device>.json.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import storm as st
from storm.tl._model_arg import get_model

from ._common import DEFAULT_DATA, HER2ST_IMAGED, RESULTS, header, parse, preset_model, quick_out, suite_parser, write

#: ``--quick``: the tiny preset on two copies of the bundled demo (no data needed), one timed repeat.
QUICK = ["--presets", "tiny", "--slides", "demo:2", "--repeats", "1", *quick_out("throughput.json")]


def slides(spec: str, data: Path) -> list[Any]:
    """``"her2st"``: sections B4, C2-C5 from ``data``; ``"demo:N"``: N separate copies of the bundled demo."""
    if spec == "her2st":
        return [st.datasets.her2st(s, data / "her2st") for s in HER2ST_IMAGED]
    name, _, count = spec.partition(":")
    if name != "demo" or not count.isdigit() or int(count) < 1:
        raise ValueError(f"`--slides` must be 'her2st' or 'demo:N' (N >= 1), got {spec!r}.")
    return [st.datasets.demo() for _ in range(int(count))]


def best_of(fn: Any, repeats: int) -> float:
    return timed(fn, repeats)[1]


def timed(fn: Any, repeats: int) -> tuple[float, float]:
    """Seconds of the first call (cold: decoding images, loading weights) and the best of ``repeats`` after it."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return first, best


def prepared_batches(sdata: Any, model: Any, batch: int, device: Any) -> list[Any]:
    """Every batch of the runner for ``sdata`` (same loader, order and de-duplication), built and moved up front."""
    from storm.data import Corpus, NicheDataset

    corpus = Corpus.for_model(sdata, model)
    order = corpus.slides[0].tiles.raster_order()  # the runner's batch order
    dataset = NicheDataset(corpus)
    return [dataset.get_batch(order[start : start + batch]).to(device) for start in range(0, corpus.n_spots, batch)]


def model_only(model: Any, batches: list[Any], device: Any, precision: str) -> None:
    import torch

    from storm._compute import autocast

    genes = torch.zeros(1, dtype=torch.long, device=device)
    with torch.inference_mode(), autocast(precision, device):
        for b in batches:
            model(**b, genes=genes)
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
                st.tl.embed(sdata, model=model, modality="both", key_added="X_bench")

        first_s, e2e_s = timed(end_to_end, args.repeats)
        batches = [b for sdata in sections for b in prepared_batches(sdata, model, args.batch, device)]
        model_s = best_of(lambda m=model, b=batches: model_only(m, b, device, args.precision), args.repeats)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
        row = {
            "preset": preset,
            "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
            "niche_spots": model.config.niche_size + 1,
            "spots": n_spots,
            "end_to_end_spots_per_s": round(n_spots / e2e_s, 1),
            "end_to_end_first_call_spots_per_s": round(n_spots / first_s, 1),
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
        "tile_cache_mb": st.settings.tile_cache_mb,
        "rows": rows,
    }


def table(record: dict[str, Any]) -> str:
    where = record["machine"]["gpu"] if record["device"].startswith("cuda") else record["machine"]["cpu"]
    lines = [
        f"Device: {record['device']} ({where}), precision {record['precision']}, {record['batch']} niches per batch, "
        f"slides {record.get('slides', 'her2st')}.",
        "",
        "| preset | parameters (M) | spots per niche | end-to-end spots/s (first call) | model-only spots/s | ratio |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['preset']} | {r['parameters_M']} | {r['niche_spots']} | {r['end_to_end_spots_per_s']} "
            f"({r['end_to_end_first_call_spots_per_s']}) | "
            f"{r['model_only_spots_per_s']} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


def read_ahead(args: argparse.Namespace) -> dict[str, Any]:
    """End-to-end spots/s reading niches in line and with each ``--read-ahead`` count of loader workers."""
    from storm.data import _loader

    st.settings.device = args.device
    st.settings.precision = args.precision
    st.settings.batch_size = args.batch
    sections = slides(args.slides, args.data)
    n_spots = sum(s["table"].n_obs for s in sections)
    preset = args.presets[0]
    model = preset_model(preset, get_model(None))

    def end_to_end() -> float:
        t0 = time.perf_counter()
        for sdata in sections:
            st.tl.embed(sdata, model=model, modality="both", key_added="X_bench")
        return time.perf_counter() - t0

    variants = {"in line": 0} | {f"read ahead, {w} process{'es' * (w > 1)}": w for w in args.read_ahead}
    default = _loader.loader_workers
    best = dict.fromkeys(variants, float("inf"))
    try:
        end_to_end()
        for _ in range(args.repeats):
            for name, workers in variants.items():
                _loader.loader_workers = lambda device, n=None, w=workers: w
                best[name] = min(best[name], end_to_end())
    finally:
        _loader.loader_workers = default
    base = n_spots / best["in line"]
    rows = [
        {"reader": name, "spots_per_s": round(n_spots / s, 1), "ratio_to_in_line": round(n_spots / s / base, 3)}
        for name, s in best.items()
    ]
    for row in rows:
        print(row)
    return {"device": args.device, "precision": args.precision, "preset": preset, "batch": args.batch, "rows": rows}


def read_ahead_table(record: dict[str, Any]) -> str:
    lines = [
        f"Device: {record['device']}, preset {record['preset']}, {record['precision']}, {record['batch']} niches per "
        "batch.",
        "",
        "| reader | end-to-end spots/s | × in line |",
        "|---|---:|---:|",
    ]
    lines += [f"| {r['reader']} | {r['spots_per_s']} | {r['ratio_to_in_line']:.2f} |" for r in record["rows"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "auto"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--slides", default="her2st", help="'her2st' (B4, C2-C5) or 'demo:N' (no data needed)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--read-ahead", type=int, nargs="+", default=None, metavar="N", help="loader workers to time against in line"
    )
    args = parse(parser, argv, QUICK)
    name, measure, render = (
        ("read_ahead", read_ahead, read_ahead_table) if args.read_ahead else ("throughput", run, table)
    )
    st.settings.progress = False
    record = header(name, "timm")
    record.update(measure(args))
    write(record, args.out or RESULTS / f"{name}_{args.device.split(':')[0]}.json")
    print()
    print(render(record))


if __name__ == "__main__":
    main()
