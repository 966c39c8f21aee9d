"""The frozen-encoder path: tiles/s of pathology-encoder feature extraction, the cache, and memory against spots.

Usage: python -m benchmarks encoder_features [--section C2] [--spots 10000 100000] [--skip uni scaling] [--out FILE]
                                            [--quick]

Three measurements, each in a fresh process:
* ``uni``: ``st.tl.feature_extraction`` with the exact UNI architecture (ViT-L/16, 303M parameters; random weights
  written to a local file, since the real ones are gated: throughput does not depend on the values) on a real her2st
  section stored as a ``.zarr`` store: the first call (weights loaded, every spot's 224 px / 112 µm tile cut and
  encoded, the table written into the store), then a second call in a new process that reads the store again and
  finds the features (no weights loaded, no tile read). Reported: tiles/s of the first call, seconds of both, ratio.
* ``scaling``: the same pipeline on ``storm.datasets.synthetic`` (a lazily generated 40k x 40k H&E) for each
  ``--spots``, with a ViT-Ti/16 at 64 px (the pipeline, not the encoder, is the question; 100k ViT-L tiles would take
  hours on 2 cores). Reported: seconds, tiles/s, peak RSS over the process' baseline, and that peak less the
  features themselves (n x 192 float32), which should stay flat.
Writes benchmarks/results/encoder_features.json and prints markdown tables.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from ._common import DEFAULT_DATA, RESULTS, header, parse, quick_out, suite_parser, write

#: ``--quick``: no UNI-sized encoder (minutes per section on a CPU), 2,000 synthetic spots.
QUICK = ["--skip", "uni", "--spots", "2000", *quick_out("encoder_features.json")]

FIRST = """
import json, sys, time, torch
import storm as st
import spatialdata as sd
from storm.models import ENCODERS
from storm.models._pathology import _build
st.settings.progress = False
work = {work!r}
torch.manual_seed(0)
torch.save(_build(ENCODERS["uni"], pretrained=False).state_dict(), work + "/pytorch_model.bin")
st.datasets.her2st({section!r}, path={her2st!r}).write(work + "/slide.zarr")
sdata = sd.read_zarr(work + "/slide.zarr")
t0 = time.perf_counter()
st.tl.feature_extraction(sdata, "uni", weights=work + "/pytorch_model.bin")
seconds = time.perf_counter() - t0
n = sdata.tables["uni_spots_112um"].n_obs
print(json.dumps({{"spots": n, "first_s": seconds, "tiles_per_s": n / seconds}}))
"""

SECOND = """
import json, time
t0 = time.perf_counter()
import storm as st
import spatialdata as sd
st.settings.progress = False
sdata = sd.read_zarr({work!r} + "/slide.zarr")
t1 = time.perf_counter()
st.tl.feature_extraction(sdata, "uni")
print(json.dumps({{"second_s": time.perf_counter() - t1, "second_with_read_s": time.perf_counter() - t0}}))
"""

SCALING = """
import json, resource, time
import storm as st
from storm.datasets._synthetic import synthetic
from storm.models import EncoderSpec, register_encoder
st.settings.progress = False
st.settings.batch_size = 64

def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS"))

register_encoder(EncoderSpec("vit-ti-64", None, architecture="vit_tiny_patch16_224", model_args={{"img_size": 64}},
                             tile_px=64, um_per_px=112 / 64, dim=192))
sdata = synthetic(40000, 40000, n_spots={n}, pitch_um=60.0, um_per_px=0.5, chunk_px=1024, n_genes=0, seed=0)
from storm.models import load_encoder
encoder = load_encoder("vit-ti-64", pretrained=False)
base = rss_mb()
t0 = time.perf_counter()
st.tl.feature_extraction(sdata, encoder)
seconds = time.perf_counter() - t0
x = sdata.tables["vit-ti-64_spots_112um"].X
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"spots": {n}, "seconds": seconds, "tiles_per_s": {n} / seconds, "baseline_rss_mb": base,
                  "peak_rss_mb": peak, "features_mb": x.nbytes / 2**20, "finite": bool((x == x).all())}}))
"""


def child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--data", default=None)
    parser.add_argument("--section", default="C2")
    parser.add_argument("--spots", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--skip", nargs="*", default=[], choices=["uni", "scaling"])
    parser.add_argument("--out", type=Path, default=RESULTS / "encoder_features.json")
    args = parse(parser, argv, QUICK)
    result = {**header("encoder_features"), "section": args.section}
    if "uni" not in args.skip:
        her2st = str(Path(args.data or DEFAULT_DATA) / "her2st")
        with tempfile.TemporaryDirectory(prefix="storm-encoder-bench-") as work:
            first = child(FIRST.format(work=work, section=args.section, her2st=her2st))
            second = child(SECOND.format(work=work))
        result["uni"] = {**first, **second, "ratio": first["first_s"] / second["second_with_read_s"]}
        u = result["uni"]
        print("| encoder | spots | first call s | tiles/s | second call s (with store read) | ratio |")
        print("|---|---:|---:|---:|---:|---:|")
        print(
            f"| UNI (ViT-L/16) | {u['spots']} | {u['first_s']:.1f} | {u['tiles_per_s']:.2f} | "
            f"{u['second_s']:.3f} ({u['second_with_read_s']:.2f}) | {u['ratio']:.0f}x |"
        )
    if "scaling" not in args.skip:
        rows = [child(SCALING.format(n=n)) for n in args.spots]
        for row in rows:
            row["peak_over_baseline_mb"] = row["peak_rss_mb"] - row["baseline_rss_mb"]
            row["peak_less_features_mb"] = row["peak_over_baseline_mb"] - row["features_mb"]
        result["scaling"] = rows
        print("| spots | s | tiles/s | peak over baseline MB | features MB | peak less features MB |")
        print("|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(
                f"| {r['spots']} | {r['seconds']:.0f} | {r['tiles_per_s']:.0f} | {r['peak_over_baseline_mb']:.0f} | "
                f"{r['features_mb']:.0f} | {r['peak_less_features_mb']:.0f} |"
            )
    write(result, args.out)


if __name__ == "__main__":
    main()
