"""Build the demo crop shipped in ``src/storm/datasets/data/demo`` from her2st section C2.

Usage (from the repository root, with the shared data folder next to it)::

    python scripts/make_demo.py                      # reads ../shared/data/her2st
    python scripts/make_demo.py --her2st PATH --out DIR

The crop holds every spot whose array position lies in a fixed rectangle of the ST array (a region full of tissue
with all seven expression clusters); the image is the bounding box of those spot centres plus a 150 px margin (origin
rounded down to the 16 px JPEG block grid of the source), cut from the full-resolution H&E JPEG and saved as JPEG
quality 90. Counts are kept for the 1,000 genes with the highest total count in the crop. The output is deterministic.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

SECTION = "C2"
IMAGE = "data/ST-imgs/C/C2/5714_HE_BT_C2.jpg"
#: Inclusive rectangle of array coordinates (x0, x1, y0, y1) of the spots kept.
ARRAY_BOX = (12, 27, 16, 26)
MARGIN_PX = 150
N_GENES = 1000
JPEG_QUALITY = 90
COMMIT = "85df7411b987a7dec3feff9718b869a7a82091ec"
MAX_BYTES = 4 * 1024 * 1024

README = """# storm demo data: a crop of her2st section C2

A small piece of real data so that `storm.datasets.demo()`, the tutorials and the offline tests run without downloads.

## Source
* Publication: Andersson A., Larsson L., Stenbeck L. et al. *Spatial deconvolution of HER2-positive breast cancer
  delineates tumor-associated cell type interactions.* Nat Commun 12, 6012 (2021). doi:10.1038/s41467-021-26271-2.
  Please cite it when you use these data.
* Repository: github.com/almaan/her2st at commit `{commit}` (files `{image}`, `data/ST-cnts/{section}.tsv.gz`,
  `data/ST-spotfiles/{section}_selection.tsv`, `res/ST-cluster/lbl/{section}-cluster-annotation.tsv.gz`).
* Licence: the repository snapshot has no LICENSE file and its README states no licence; the licence of the Zenodo
  record (3957257) it points to was not confirmed. Status: public, citation required, licence unconfirmed.

## Crop
* Section {section} (legacy Spatial Transcriptomics: 100 µm spots, 200 µm centre-to-centre), spots with array
  x in [{ax0}, {ax1}] and y in [{ay0}, {ay1}]: {n_spots} spots, all with counts.
* Image: pixels x in [{x0}, {x1}), y in [{y0}, {y1}) of the full-resolution JPEG ({width} x {height} px, full
  resolution, no resampling), re-encoded as JPEG quality {quality}.
* Counts: raw UMI counts of the {n_genes} genes with the highest total count in these spots.

## Files
* `he.jpg`: the H&E crop.
* `spots.csv`: `spot` (array position `<x>x<y>`, the row names of the count file), `array_x`, `array_y`, `pixel_x`,
  `pixel_y` (spot centre in pixels of `he.jpg`), `cluster` (expression cluster of the publication; empty if none).
* `counts.npz`: CSR matrix of integer counts (`data`, `indices`, `indptr`, `shape`), row names `spots`, gene symbols
  `genes`; read with `numpy.load(..., allow_pickle=False)`.
* `meta.json`: section, crop box and source.

## How it was made
`python scripts/make_demo.py` (reads `../shared/data/her2st`, a byte-for-byte copy of the repository files above).
"""


def main() -> None:
    """Write the demo folder."""
    root = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--her2st", type=Path, default=root.parent / "shared" / "data" / "her2st")
    parser.add_argument("--out", type=Path, default=root / "src" / "storm" / "datasets" / "data" / "demo")
    args = parser.parse_args()
    her2st, out = args.her2st, args.out

    counts = pd.read_csv(her2st / "data" / "ST-cnts" / f"{SECTION}.tsv.gz", sep="\t", index_col=0)
    spots = pd.read_csv(her2st / "data" / "ST-spotfiles" / f"{SECTION}_selection.tsv", sep="\t")
    spots.index = [f"{x}x{y}" for x, y in zip(spots["x"], spots["y"], strict=True)]
    spots = spots.loc[counts.index]
    clusters = pd.read_csv(her2st / "res" / "ST-cluster" / "lbl" / f"{SECTION}-cluster-annotation.tsv.gz", sep="\t")
    clusters.index = [f"{x}x{y}" for x, y in zip(clusters["x"], clusters["y"], strict=True)]

    ax0, ax1, ay0, ay1 = ARRAY_BOX
    chosen = spots[spots["x"].between(ax0, ax1) & spots["y"].between(ay0, ay1)]
    chosen = chosen.sort_values(["y", "x"])
    x0 = int(np.floor(chosen["pixel_x"].min() - MARGIN_PX)) // 16 * 16
    y0 = int(np.floor(chosen["pixel_y"].min() - MARGIN_PX)) // 16 * 16
    x1 = int(np.ceil(chosen["pixel_x"].max() + MARGIN_PX))
    y1 = int(np.ceil(chosen["pixel_y"].max() + MARGIN_PX))
    inside = spots["pixel_x"].between(x0, x1) & spots["pixel_y"].between(y0, y1)
    if set(spots.index[inside]) != set(chosen.index):
        raise RuntimeError("Spots outside ARRAY_BOX have their centre inside the crop; choose another box.")

    Image.MAX_IMAGE_PIXELS = None
    out.mkdir(parents=True, exist_ok=True)
    with Image.open(her2st / IMAGE) as full:
        width, height = full.size
        full.crop((x0, y0, x1, y1)).convert("RGB").save(out / "he.jpg", "JPEG", quality=JPEG_QUALITY, optimize=True)

    sub = counts.loc[chosen.index]
    totals = sub.sum(axis=0)
    order = np.lexsort((np.arange(len(totals)), -totals.to_numpy()))  # highest total first, ties by file order
    genes = totals.index[order[:N_GENES]]
    matrix = sub[genes].to_numpy(dtype=np.int32)
    rows, cols = np.nonzero(matrix)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(matrix)))]).astype(np.int32)
    np.savez_compressed(
        out / "counts.npz",
        data=matrix[rows, cols].astype(np.int32),
        indices=cols.astype(np.int32),
        indptr=indptr,
        shape=np.array(matrix.shape, dtype=np.int64),
        spots=np.array(chosen.index, dtype=str),
        genes=np.array(genes, dtype=str),
    )

    cluster = clusters["label"].reindex(chosen.index)
    table = pd.DataFrame(
        {
            "spot": chosen.index,
            "array_x": chosen["x"].to_numpy(),
            "array_y": chosen["y"].to_numpy(),
            "pixel_x": np.round(chosen["pixel_x"].to_numpy() - x0, 2),
            "pixel_y": np.round(chosen["pixel_y"].to_numpy() - y0, 2),
            "cluster": [str(int(c)) if pd.notna(c) else "" for c in cluster],
        }
    )
    table.to_csv(out / "spots.csv", index=False)

    meta = {
        "section": SECTION,
        "source": f"github.com/almaan/her2st@{COMMIT}",
        "image": IMAGE,
        "image_size_xy": [width, height],
        "crop_box_xyxy": [x0, y0, x1, y1],
        "array_box_x0x1y0y1": list(ARRAY_BOX),
        "n_spots": len(chosen),
        "n_genes": len(genes),
        "citation": "Andersson et al., Nat Commun 12, 6012 (2021), doi:10.1038/s41467-021-26271-2",
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    (out / "README.md").write_text(
        README.format(
            commit=COMMIT,
            image=IMAGE,
            section=SECTION,
            ax0=ax0,
            ax1=ax1,
            ay0=ay0,
            ay1=ay1,
            n_spots=len(chosen),
            x0=x0,
            x1=x1,
            y0=y0,
            y1=y1,
            width=width,
            height=height,
            quality=JPEG_QUALITY,
            n_genes=len(genes),
        )
    )
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {out}: {len(chosen)} spots, {len(genes)} genes, crop {x1 - x0} x {y1 - y0} px, {size} bytes")
    if size > MAX_BYTES:
        raise RuntimeError(f"The demo folder is {size} bytes, over the {MAX_BYTES} byte budget; use a smaller box.")


if __name__ == "__main__":
    main()
