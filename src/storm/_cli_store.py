"""``storm embed | predict | domains STORE.zarr``: run one tool on a SpatialData store and write its table back safely."""

from __future__ import annotations

import argparse
from pathlib import Path

#: The subcommands, and what each one does.
COMMANDS = {
    "embed": "embed every spot (obsm X_storm ...) and write the table back into the store",
    "predict": "predict expression from the H&E (layers storm_predicted) and write the table back into the store",
    "domains": "find tissue domains (obs storm_domain; embeds first if needed) and write the table back into the store",
}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``embed``, ``predict`` and ``domains`` subcommands to the ``storm`` parser."""
    for name, help_text in COMMANDS.items():
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument("store", type=Path, help="a SpatialData .zarr store (changed in place, all or nothing)")
        parser.add_argument("--table-key", default=None)
        parser.add_argument("--model", default=None, help="checkpoint folder or name (default: the bundled one)")
        if name in ("embed", "domains"):
            parser.add_argument("--modality", default="auto", choices=["auto", "image", "expression", "both"])
        if name in ("embed", "predict"):
            parser.add_argument("--image-key", default=None)
        if name == "predict":
            parser.add_argument("--genes", nargs="+", default=None, help="genes to predict (default: the table's)")
        if name == "domains":
            parser.add_argument("--n-domains", type=int, default=None, help="number of domains (default: Leiden)")
            parser.add_argument("--resolution", type=float, default=None, help="Leiden resolution")


def run(args: argparse.Namespace) -> int:
    """Read the store, compute in memory, then replace its table (the store is untouched until results exist)."""
    import spatialdata

    from . import io, tl
    from ._constants import OBSM_EMBEDDING
    from .tl._model_arg import get_model

    if not args.store.is_dir():
        raise FileNotFoundError(
            f"{args.store} is not a folder; pass a SpatialData .zarr store written by SpatialData.write."
        )
    sdata = spatialdata.read_zarr(args.store)
    key = io.resolve(sdata, table_key=args.table_key).keys["table_key"]
    model = get_model(args.model)
    if args.command == "embed":
        tl.embed(sdata, model, modality=args.modality, table_key=key, image_key=args.image_key)
        table = sdata.tables[key]
        done = f"obsm {sorted(k for k in table.obsm if k.startswith(OBSM_EMBEDDING))}"
    elif args.command == "predict":
        tl.predict_expression(sdata, args.genes, model, table_key=key, image_key=args.image_key)
        table = sdata.tables[key]
        done = f"layers['storm_predicted'] for {int(table.var['storm_predicted'].sum())} genes"
    else:
        if OBSM_EMBEDDING not in sdata.tables[key].obsm:
            tl.embed(sdata, model, modality=args.modality, table_key=key)
        tl.domains(sdata, args.n_domains, resolution=args.resolution, table_key=key)
        table = sdata.tables[key]
        done = f"obs['storm_domain'] with {len(table.obs['storm_domain'].cat.categories)} domains"
    io.write_table(args.store, table, key)
    print(f"storm {args.command}: wrote {done} for {table.n_obs} spots to table {key!r} of {args.store}")
    return 0
