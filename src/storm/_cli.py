"""The ``storm`` command line: ``--version``, ``analyze``, ``embed``, ``predict``, ``domains``, ``tile``, ``pretrain``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import _cli_store
from ._version import __version__

#: What ``storm analyze`` and ``storm tile`` write into ``--out``: an existing folder may hold only these (replaced).
ANALYZE_FILES = ("domains.png", "genes.png", "embedding.png", "results.h5ad", "summary.json")
TILE_FILES = ("tiles.json", "tiles_montage.png")


def main(argv: list[str] | None = None) -> int:
    """Run the ``storm`` command line.

    Examples
    --------
    >>> main(["--version"])  # doctest: +SKIP
    storm 0.1.0
    """
    parser = argparse.ArgumentParser(prog="storm", description="storm: histology + spatial transcriptomics model.")
    parser.add_argument("--version", action="version", version=f"storm {__version__}")
    sub = parser.add_subparsers(dest="command")
    tile = sub.add_parser("tile", help="tile the H&E image around every spot and write a summary and a montage")
    tile.add_argument("source", help="a SpatialData .zarr store, or 'demo' for the bundled her2st crop")
    tile.add_argument("--out", type=Path, required=True, help=_out_help(TILE_FILES))
    tile.add_argument("--tile-px", type=int, default=224)
    tile.add_argument("--tile-um", type=float, default=112.0)
    tile.add_argument("--um-per-px", type=float, default=None, help="µm per full-resolution pixel (overrides metadata)")
    tile.add_argument("--platform", default=None, help="platform whose spot pitch gives the scale (visium, st, ...)")
    tile.add_argument("--table-key", default=None)
    tile.add_argument("--image-key", default=None)
    tile.add_argument("--montage", type=int, default=64, help="number of tiles drawn in tiles_montage.png")
    run = sub.add_parser(
        "analyze", help="embed, find domains, predict expression from H&E and draw the figures (default model)"
    )
    run.add_argument("source", help="a SpatialData .zarr store, or 'demo' for the bundled her2st crop")
    run.add_argument("--out", type=Path, required=True, help=_out_help(ANALYZE_FILES))
    run.add_argument("--model", default=None, help="checkpoint folder or name (default: the bundled checkpoint)")
    run.add_argument("--n-domains", type=int, default=None, help="number of domains (default: Leiden)")
    run.add_argument("--genes", nargs="+", default=None, help="genes to draw (default: 4 most variable measured)")
    run.add_argument("--table-key", default=None)
    run.add_argument("--image-key", default=None)
    _cli_store.add_parsers(sub)
    pre = sub.add_parser("pretrain", help="pretrain a storm model on the corpus named in a YAML config")
    pre.add_argument("--config", type=Path, required=True, help="YAML: `corpus:` list plus TrainConfig fields")
    pre.add_argument("--max-steps", type=int, default=None)
    pre.add_argument(
        "--output-dir",
        type=Path,
        default=None,
        help="a new or empty folder, or an earlier run's folder to resume (anything else is refused before training)",
    )
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        commands = {"pretrain": _pretrain, "analyze": _analyze, "tile": _tile}
        return commands.get(args.command, _cli_store.run)(args)
    except (ValueError, KeyError, FileNotFoundError, TypeError) as err:
        print(f"storm {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2


def _out_help(files: tuple[str, ...]) -> str:
    return (
        f"output folder, created if missing; it gets {', '.join(files)}. An existing folder may hold only these "
        "(from an earlier run; they are replaced): with anything else storm stops before any work"
    )


def _check_paths(args: argparse.Namespace, files: tuple[str, ...]) -> Path | None:
    """Check ``source`` and ``--out`` before any work; the source store (``None`` for 'demo')."""
    from .io._write import check_output_dir, is_store

    store = None if args.source == "demo" else Path(args.source)
    if store is not None and not is_store(store):
        state = "does not exist" if not store.exists() else "is not a zarr store (a folder with zarr.json or .zgroup)"
        raise FileNotFoundError(f"source {store} {state}; pass a SpatialData .zarr store or 'demo'.")
    fix = f"pass a new or empty folder (an existing one may hold only {', '.join(files)}, which are replaced)"
    check_output_dir(args.out, "--out", allowed=files, fix=fix, inputs=[] if store is None else [store])
    return store


def _read(store: Path | None):
    from . import datasets

    if store is None:
        return datasets.demo()
    import spatialdata

    return spatialdata.read_zarr(store)


def _analyze(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np

    from . import io, pl, tl
    from .data import log1p_cp10k
    from .tl._metrics import pearson_per_gene
    from .tl._model_arg import get_model

    store = _check_paths(args, ANALYZE_FILES)
    model = get_model(args.model)
    sdata = _read(store)
    keys = {"table_key": args.table_key, "image_key": args.image_key}
    tl.embed(sdata, model=model, **keys)
    tl.domains(sdata, args.n_domains, table_key=args.table_key)
    slide = io.resolve(sdata, **keys)
    table = slide.table
    he_only = table.n_vars == 0
    tl.predict_expression(sdata, args.genes, model=model, **keys)
    if he_only:  # the predictions are a DataFrame of genes in obsm
        frame = table.obsm["storm_predicted"]
        values, names, predicted = frame.to_numpy(), frame.columns, np.ones(frame.shape[1], bool)
    else:
        values, names = log1p_cp10k(table.X).toarray(), table.var_names
        predicted = table.var["storm_predicted"].to_numpy()
    genes = args.genes or _most_variable(values, names, predicted, 4)
    args.out.mkdir(parents=True, exist_ok=True)
    pl.domains(sdata, save=args.out / "domains.png", show=False, **keys)
    pl.genes(sdata, genes, save=args.out / "genes.png", show=False, **keys)
    pl.embedding(sdata, save=args.out / "embedding.png", show=False, table_key=args.table_key)
    summary = {
        "source": args.source,
        "model": table.uns["storm"]["X_storm"]["model"],
        "n_spots": int(table.n_obs),
        "modality": table.uns["storm"]["X_storm"]["modality"],
        "domains": {str(k): int(v) for k, v in table.obs["storm_domain"].value_counts().sort_index().items()},
        "genes_predicted": int(predicted.sum()),
    }
    if not he_only:
        measured = values[:, predicted]
        pearson = pearson_per_gene(np.asarray(table.layers["storm_predicted"])[:, predicted], measured)
        summary["pearson_measured_vs_predicted"] = {
            "mean_over_genes": round(float(np.nanmean(pearson)), 4),
            "shown_genes": {g: round(float(pearson[list(table.var_names[predicted]).index(g)]), 4) for g in genes},
        }
    table.write_h5ad(args.out / "results.h5ad")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    print(f"wrote {', '.join(ANALYZE_FILES)} to {args.out}")
    return 0


def _most_variable(values, names, predicted, n: int) -> list[str]:
    """The ``n`` predicted genes whose ``values`` (measured, or on H&E-only slides predicted) vary most."""
    import numpy as np

    variance = np.where(predicted, np.nanvar(values, axis=0), -1)
    return [str(names[i]) for i in np.argsort(-variance)[:n]]


def _tile(args: argparse.Namespace) -> int:
    import numpy as np
    from PIL import Image

    from . import pp

    sdata = _read(_check_paths(args, TILE_FILES))
    tiles = pp.tile(
        sdata,
        args.tile_px,
        args.tile_um,
        table_key=args.table_key,
        image_key=args.image_key,
        um_per_px=args.um_per_px,
        platform=args.platform,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    n = len(tiles)
    drawn = min(max(args.montage, 0), n)
    montage_path = args.out / "tiles_montage.png"
    montage_path.unlink(missing_ok=True)  # an earlier run's montage must not pass for this run's
    if drawn:
        cols = int(np.ceil(np.sqrt(drawn)))
        rows = int(np.ceil(drawn / cols))
        sheet = np.full((rows * args.tile_px, cols * args.tile_px, 3), 255, np.uint8)
        for k, img in enumerate(tiles.read(np.arange(drawn))):
            r, c = divmod(k, cols)
            sheet[r * args.tile_px : (r + 1) * args.tile_px, c * args.tile_px : (c + 1) * args.tile_px] = img
        Image.fromarray(sheet).save(montage_path)
    mean_rgb = np.zeros(3)
    for batch in tiles.batches():
        mean_rgb += batch.tiles.reshape(-1, 3).mean(axis=0) * len(batch.index)
    summary = tiles.geometry() | {"mean_rgb": (mean_rgb / n).round(2).tolist(), "source": args.source}
    (args.out / "tiles.json").write_text(json.dumps(summary, indent=2))
    print(f"{tiles!r}\nµm/px {tiles.um_per_px:.4f} ({tiles.um_per_px_source})")
    print(f"wrote {args.out / 'tiles.json'}" + (f" and {montage_path}" if drawn else ""))
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    import yaml

    from .datasets import load
    from .tl import pretrain
    from .tl._pretrain import check_output
    from .train import TrainConfig

    if not args.config.is_file():
        raise FileNotFoundError(f"--config {args.config} is not a file; pass a YAML file with a `corpus:` list.")
    try:
        raw = yaml.safe_load(args.config.read_text()) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"--config {args.config} is not valid YAML ({err}); fix the file.") from None
    if not isinstance(raw, dict) or not raw.get("corpus"):
        raise ValueError(
            f"{args.config}: needs a non-empty `corpus:` list (zarr paths, 'demo', 'her2st:C2', 'dlpfc:151673')."
        )
    config = TrainConfig.from_yaml(args.config)
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    if args.output_dir is not None:
        config.output_dir = str(args.output_dir)
    check_output(config.output_dir, resume=True, corpus=raw["corpus"])  # before any slide is read
    data_dir = raw.get("data_dir")
    sources = [load(entry, data_dir) for entry in raw["corpus"]]
    pretrain(sources, config=config, output_dir=config.output_dir)
    print(f"wrote {Path(config.output_dir) / 'model'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
