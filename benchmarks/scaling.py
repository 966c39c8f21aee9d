"""Time and peak memory of tiling + embedding against the number of spots, on a synthetic 40k x 40k H&E.

Usage: python -m benchmarks scaling [--spots 1000 10000 100000] [--model tiny] [--image-size 224] [--batch 64] [--quick]

The slide is ``storm.datasets.synthetic(40000, 40000, pitch_um=60, um_per_px=0.5, chunk_px=1024)``: a 4.8 GB RGB image
computed chunk by chunk on read (it never exists in memory), with ``--spots`` spots drawn from its 128k-spot hexagonal
grid, so every size spans the whole image. Each size runs in a fresh process, which reports:
* tiling: ``st.pp.tile`` plus one pass over every tile in raster order (``TileSet.batches``);
* embedding: ``st.tl.embed(modality="image")`` end to end (its own tiling, niches, backbone, transformer);
* peak RSS of the process (``ru_maxrss``) after tiling and at the end, and its RSS after building the slide, before
  tiling (the baseline). Decoded pixels are held in an LRU cache of ``storm.settings.tile_cache_mb`` (an eighth of
  the machine's memory, 1-8 GiB, by default; recorded in the results), so the peak is expected near baseline + cache
  + one batch's chunks, whatever the number of spots.
Model: ``--model tiny`` or ``small`` (random weights of that preset with the default vocabulary and tile geometry: the
question is the pipeline, not the weights; ``--image-size`` shrinks its tiles to make 100k spots affordable on a
CPU) or ``default``. Time should grow linearly (spots/s flat) and memory stay flat.
Writes benchmarks/results/scaling_<model>_<px>px.json and prints a markdown table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import storm as st

from ._common import RESULTS, header, parse, quick_out, suite_parser, write

#: ``--quick``: 1k and 5k spots, 64-px tiles.
QUICK = ["--spots", "1000", "5000", "--image-size", "64", *quick_out("scaling.json")]

CHILD = """
import json, resource, sys, time
sys.path.insert(0, {root!r})
import storm as st
from storm.datasets._synthetic import synthetic
from storm.tl._model_arg import get_model
from benchmarks._common import preset_model

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))

st.settings.progress = False
st.settings.batch_size = {batch}
reference = get_model(None)
model = reference if {model!r} == "default" else preset_model({model!r}, reference, {image_size})
sdata = synthetic(40000, 40000, n_spots={n}, pitch_um=60.0, um_per_px=0.5, chunk_px=1024, n_genes=0, seed=0)
base = rss_mb()
t0 = time.perf_counter()
ts = st.pp.tile(sdata, tile_px=model.config.image_size, tile_um=model.config.tile_um)
checksum = sum(int(b.tiles[:, ::32, ::32].sum()) for b in ts.batches({batch}))
tiling = time.perf_counter() - t0
tiling_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
del ts
t0 = time.perf_counter()
st.tl.embed(sdata, model=model, modality="image")
embed = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
x = sdata["table"].obsm["X_storm"]
print(json.dumps({{"spots": {n}, "tiling_s": tiling, "embed_s": embed, "baseline_rss_mb": base, "tiling_peak_rss_mb": tiling_peak,
                  "peak_rss_mb": peak,
                  "finite": bool((x == x).all()), "checksum": checksum}}))
"""


def measure(n: int, model: str, batch: int, image_size: int | None) -> dict[str, Any]:
    script = CHILD.format(root=str(Path(__file__).parents[1]), batch=batch, model=model, n=n, image_size=image_size)
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f"{n} spots failed:\n{out.stderr[-3000:]}")
    row = json.loads(out.stdout.strip().splitlines()[-1])
    row["process_s"] = time.perf_counter() - t0
    row["tiles_per_s"] = n / row["tiling_s"]
    row["embed_spots_per_s"] = n / row["embed_s"]
    row["peak_over_baseline_mb"] = row["peak_rss_mb"] - row["baseline_rss_mb"]
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in row.items()}


def table(record: dict[str, Any]) -> str:
    lines = [
        f"Model: {record['model']}, {record['image_size']}-px tiles of 112 µm, {record['batch']} niches per batch; "
        "image 40,000 x 40,000 px (4.8 GB, lazy).",
        "",
        "| spots | tiling s | tiles/s | embed s | embed spots/s | baseline RSS MB | peak RSS MB | peak − baseline MB |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in record["rows"]:
        lines.append(
            f"| {r['spots']:,} | {r['tiling_s']:.1f} | {r['tiles_per_s']:.0f} | {r['embed_s']:.1f} | "
            f"{r['embed_spots_per_s']:.0f} | {r['baseline_rss_mb']:.0f} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_over_baseline_mb']:.0f} |"
        )
    first, last = record["rows"][0], record["rows"][-1]
    growth = last["spots"] / first["spots"]
    lines += [
        "",
        f"{growth:.0f}x the spots: tiling time x{last['tiling_s'] / first['tiling_s']:.1f}, embedding time "
        f"x{last['embed_s'] / first['embed_s']:.1f}, peak RSS x{last['peak_rss_mb'] / first['peak_rss_mb']:.2f}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--spots", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--model", default="tiny", choices=["tiny", "small", "default"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=None, help="tile pixels of a preset model (default 224)")
    parser.add_argument("--out", type=Path, default=None, help="default results/scaling_<model>_<px>px.json")
    args = parse(parser, argv, QUICK)
    record = header("scaling", "dask", "zarr")
    record.update(
        {
            "model": args.model,
            "image_size": args.image_size or 224,
            "batch": args.batch,
            "tile_cache_mb": st.settings.tile_cache_mb,
            "rows": [],
        }
    )
    for n in args.spots:
        record["rows"].append(measure(n, args.model, args.batch, args.image_size))
        print(record["rows"][-1])
    write(record, args.out or RESULTS / f"scaling_{args.model}_{record['image_size']}px.json")
    print()
    print(table(record))


if __name__ == "__main__":
    main()
