"""Model-only forward throughput of storm presets on pre-loaded tensors (CPU here; GPU when one is lent).

Usage: python benchmarks/model_throughput.py [--presets tiny small] [--batch 16] [--repeats 3] [--device cpu]

Reports niches/s (one niche = a centre spot + K neighbours; all K + 1 tiles go through the backbone) for
(a) tiles -> joint embedding (images + expression), (b) precomputed backbone features -> joint embedding.
Writes benchmarks/results/model_throughput.json.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import time
from pathlib import Path

import torch

from storm._compute import cpu_name
from storm.models import StormConfig, StormModel


def _machine() -> dict:
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu}


def _time(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=["tiny", "small"])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--vocab", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    rows = []
    for preset in args.presets:
        torch.manual_seed(0)
        cfg = StormConfig.from_preset(preset, vocab_size=args.vocab)
        model = StormModel(cfg).to(device).eval()
        s = cfg.niche_size + 1
        b = args.batch
        offsets = torch.randn(b, s, 2, device=device) * 200
        offsets[:, 0] = 0
        images = torch.randint(0, 256, (b, s, cfg.image_size, cfg.image_size, 3), dtype=torch.uint8, device=device)
        expression = torch.rand(b, s, args.genes, device=device) * 3
        gene_index = torch.randperm(args.vocab, device=device)[: args.genes]
        with torch.inference_mode():
            tokens, _ = model.image.backbone_tokens(images[:, 0])
        features = tokens[:, None].expand(b, s, *tokens.shape[1:]).contiguous()

        def tiles(model=model, offsets=offsets, images=images, expression=expression, gene_index=gene_index):
            with torch.inference_mode():
                model(offsets_um=offsets, images=images, expression=expression, gene_index=gene_index)

        def feats(model=model, offsets=offsets, features=features, expression=expression, gene_index=gene_index):
            with torch.inference_mode():
                model(offsets_um=offsets, image_features=features, expression=expression, gene_index=gene_index)

        t_tiles = _time(tiles, args.repeats)
        t_feats = _time(feats, args.repeats)
        rows.append(
            {
                "preset": preset,
                "parameters_M": round(model.num_parameters() / 1e6, 2),
                "niche_spots": s,
                "batch": b,
                "niches_per_s_tiles": round(b / t_tiles, 2),
                "tiles_per_s": round(b * s / t_tiles, 1),
                "niches_per_s_features": round(b / t_feats, 1),
            }
        )
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": _machine(),
        "torch": torch.__version__,
        "device": str(device),
        "genes_per_spot": args.genes,
        "vocab": args.vocab,
        "rows": rows,
    }
    out = Path(__file__).parent / "results" / "model_throughput.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print("| preset | params (M) | niche spots | niches/s (tiles) | tiles/s | niches/s (precomputed features) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['preset']} | {r['parameters_M']} | {r['niche_spots']} | {r['niches_per_s_tiles']} | "
            f"{r['tiles_per_s']} | {r['niches_per_s_features']} |"
        )
    print(json.dumps(result["machine"]))


if __name__ == "__main__":
    main()
