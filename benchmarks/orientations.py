"""One pass or eight orientations: what averaging the model over a slide's flips and quarter-turns costs and buys.

Usage: python -m benchmarks orientations [--data ../shared/data] [--sections B4 151673] [--out FILE] [--quick]

``storm.settings.orientations`` = 8 (the default) runs every niche in the slide's eight orientations (tiles and
offsets together) and averages the outputs; 1 runs it once, as the slide lies. Side by side, on the default model:

* **invariance**: each slide moved (mirrored; turned by a quarter-turn; on the expression-only section also turned by
  30°, which is not one of the eight) and embedded again. Reported: the median cosine between each spot's embedding and
  its embedding on the unmoved slide, and the ARI between ``st.tl.domains(n_domains=k)`` of the two (same seed);
* **quality**: the held-out her2st B4 section's zero-shot H&E → expression decoder (mean Pearson r over the 250 most
  expressed genes, as the ``pretraining_value`` suite), and the held-out DLPFC 151673 section's domains against
  its manual layers (ARI, k = 7, expression only: its image is too coarse for the tiles);
* **time**: ``st.tl.embed`` on each section, in one process, one setting after the other.

B4 and 151673 were held out of the default model's pretraining. Writes JSON and prints a markdown table.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

import storm as st
from storm.models import StormModel
from storm.tl._encode import encode
from storm.tl._metrics import pearson_per_gene

from ._common import DEFAULT_DATA, RESULTS, expression, header, parse, quick_out, suite_parser, top_genes, write

#: ``--quick``: the expression-only section (no tiles to encode eight times).
QUICK = ["--sections", "151673", *quick_out("orientations.json")]


def moved(sdata: Any, how: str) -> Any:
    """``sdata`` with its spots (and its image, if it keeps one) mirrored left-right, or turned by ``how`` degrees.

    Pixels move with the spots (exact for the mirror and the quarter-turn: a spot at pixel index ``x`` of a ``width``
    pixels wide image goes to ``width - 1 - x``); a slide turned by another angle keeps no image. The spots' and
    image's transformations must be the identity (as the her2st and DLPFC readers write them for the spots; the DLPFC
    image is dropped).
    """
    from spatialdata.models import ShapesModel
    from spatialdata.transformations import get_transformation

    from storm.datasets._build import image_from_array

    shapes = sdata.shapes["spots"]
    xy = np.column_stack([shapes.geometry.x.to_numpy(), shapes.geometry.y.to_numpy()])
    image = sdata.images.get("he") if "he" in sdata.images else None
    if image is not None:
        pixels = np.asarray(image["scale0"].image.transpose("y", "x", "c").values)
        width = pixels.shape[1]
    else:
        pixels, width = None, float(xy[:, 0].max())
    if how == "mirror":
        xy, pixels = np.column_stack([width - 1 - xy[:, 0], xy[:, 1]]), None if pixels is None else pixels[:, ::-1]
    elif how == "90":
        xy, pixels = np.column_stack([xy[:, 1], width - 1 - xy[:, 0]]), None if pixels is None else np.rot90(pixels)
    else:
        if pixels is not None:
            raise ValueError(f"turning a slide with its image by {how} degrees is not exact; drop the image first")
        angle = np.deg2rad(float(how))
        rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        xy = (xy - xy.mean(0)) @ rotation.T + xy.mean(0)
    out = _copy(sdata)
    if pixels is not None:
        out.images["he"] = image_from_array(np.ascontiguousarray(pixels))
    spots = ShapesModel.parse(
        xy,
        geometry=0,
        radius=shapes["radius"].to_numpy(),
        transformations={"global": get_transformation(shapes, "global")},
    )
    spots.index = shapes.index
    out.shapes["spots"] = spots
    return out


def _copy(sdata: Any) -> Any:
    """A new SpatialData with the same image (if any) and a copy of the table (the shapes are replaced)."""
    from spatialdata import SpatialData

    images = {"he": sdata.images["he"]} if "he" in sdata.images else {}
    return SpatialData(images=images, shapes={"spots": sdata.shapes["spots"]}, tables={"table": sdata["table"].copy()})


def without_image(sdata: Any) -> Any:
    from spatialdata import SpatialData

    return SpatialData(shapes={"spots": sdata.shapes["spots"]}, tables={"table": sdata["table"].copy()})


def embedded(sdata: Any, net: StormModel, modality: str) -> tuple[np.ndarray, float]:
    start = time.perf_counter()
    st.tl.embed(sdata, model=net, modality=modality)
    return sdata["table"].obsm["X_storm"].copy(), time.perf_counter() - start


def domains(sdata: Any, k: int) -> np.ndarray:
    st.tl.domains(sdata, k, random_state=0)
    return sdata["table"].obs["storm_domain"].to_numpy()


def median_cosine(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a).all(1) & np.isfinite(b).all(1)
    a, b = a[ok], b[ok]
    return float(np.median((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


def main(argv: list[str] | None = None) -> None:
    from sklearn.metrics import adjusted_rand_score

    parser = suite_parser(__file__, __doc__, QUICK)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=RESULTS / "orientations.json")
    parser.add_argument("--sections", nargs="+", default=["B4", "151673"], choices=["B4", "151673"])
    args = parse(parser, argv, QUICK)
    st.settings.progress = False
    started = time.perf_counter()
    net = StormModel.from_pretrained("default")
    sections = []
    if "B4" in args.sections:
        b4 = st.datasets.her2st("B4", path=args.data / "her2st")
        train = [st.datasets.her2st(s, path=args.data / "her2st") for s in ("C2", "C3", "C4", "C5")]
        genes = top_genes(b4, train, net.vocab, 250)
        truth = expression(b4, genes)
        sections.append(("her2st B4", b4, "image", ("mirror", "90"), 4))
    if "151673" in args.sections:
        dlpfc = without_image(st.datasets.dlpfc("151673", args.data / "dlpfc"))
        layers = dlpfc["table"].obs["layer"].astype(str).to_numpy()
        labelled = (dlpfc["table"].obs["layer"].notna() & (layers != "nan")).to_numpy()
        sections.append(("DLPFC 151673", dlpfc, "expression", ("mirror", "90", "30"), 7))

    results: dict[str, Any] = {}
    for orientations in (1, 8):
        st.settings.orientations = orientations
        row: dict[str, Any] = {}
        for name, sdata, modality, motions, k in sections:
            reference, seconds = embedded(sdata, net, modality)
            labels = domains(sdata, k)
            entry = {"embed_seconds": round(seconds, 2), "n_spots": int(sdata["table"].n_obs)}
            for how in motions:
                other = moved(sdata, how)
                x, _ = embedded(other, net, modality)
                entry[f"{how}_median_cosine"] = round(median_cosine(reference, x), 5)
                entry[f"{how}_domains_ari"] = round(float(adjusted_rand_score(labels, domains(other, k))), 4)
            if name == "her2st B4":
                out = encode(sdata, net, modality="image", genes=genes)
                r = pearson_per_gene(net.expression_to_log1p(out.predicted_expression, genes, slide_scale=False), truth)
                entry["decoder_mean_r"] = round(float(r.mean()), 4)
            else:
                entry["domains_ari_vs_layers"] = round(
                    float(adjusted_rand_score(layers[labelled], labels[labelled])), 4
                )
            row[name] = entry
            print(orientations, name, entry, flush=True)
        results[str(orientations)] = row

    record = {
        **header("orientations"),
        "model": net.checkpoint_info,
        "results": results,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write(record, args.out)
    print(table(record))


def table(record: dict[str, Any]) -> str:
    """The markdown table of a result record."""
    one, eight = record["results"]["1"], record["results"]["8"]
    lines = ["| section | measure | 1 pass | 8 orientations |", "|---|---|---:|---:|"]
    for name in one:
        for measure in one[name]:
            if measure != "n_spots":
                lines.append(
                    f"| {name} | {measure.replace('_', ' ')} | {one[name][measure]} | {eight[name][measure]} |"
                )
        ratio = eight[name]["embed_seconds"] / one[name]["embed_seconds"]
        lines.append(f"| {name} | embed time ratio | 1 | {ratio:.1f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
