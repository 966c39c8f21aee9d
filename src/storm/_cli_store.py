"""``storm embed | predict | domains STORE.zarr ...``: run one tool on SpatialData stores and write each table back safely.

Each store's new results are merged into its table under the store's write lock (:func:`storm.io.write_table` with
``records``), so commands run at the same time on one store all keep what they report as written.

One store behaves as it always has: its errors stop the command. A cohort (several stores, a folder of them, or any run
under ``torchrun``) is split into shards, one per process (rank ``r`` of ``N`` takes stores ``r, r + N, ...`` of the
sorted list); a store that fails is reported and the others still finish, and the exit code is 1 when any failed.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from .io._write import check_store_writable, is_store
from .tl._domains import METHODS, check_method

#: The subcommands, and what each one does.
COMMANDS = {
    "embed": "embed every spot (obsm X_storm ...) and write the table back into each store",
    "predict": "predict expression from the H&E (layers storm_predicted) and write the table back into each store",
    "domains": "find tissue domains per store (obs storm_domain; embeds first if needed) and write each table back",
}

#: How long ranks that finished their shard wait for the slowest one before the summary (shards differ in size).
GATHER_TIMEOUT = timedelta(hours=24)


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add the ``embed``, ``predict`` and ``domains`` subcommands to the ``storm`` parser."""
    for name, help_text in COMMANDS.items():
        parser = sub.add_parser(name, help=help_text)
        parser.add_argument(
            "stores",
            nargs="+",
            type=Path,
            metavar="STORE",
            help="SpatialData .zarr stores, or folders holding *.zarr stores (each changed in place, all or nothing); "
            "under torchrun each process takes its share",
        )
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
            parser.add_argument(
                "--method",
                default=None,
                choices=METHODS,
                help="clustering (default: gmm with --n-domains, leiden without)",
            )


def expand_stores(paths: list[Path]) -> list[Path]:
    """The stores named by ``paths`` (stores, or folders whose ``*.zarr`` stores are taken), sorted and deduplicated.

    Raises :class:`FileNotFoundError` naming the first path that does not exist, is not a zarr store (a folder with
    ``zarr.json`` or ``.zgroup``), or is a folder holding no ``*.zarr`` store.
    """
    fix = "pass a SpatialData .zarr store written by SpatialData.write, or a folder holding such stores"
    stores = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; {fix}.")
        if is_store(path):
            stores.append(path)
            continue
        if not path.is_dir():
            raise FileNotFoundError(f"{path} is not a zarr store (a folder with zarr.json or .zgroup); {fix}.")
        inside = sorted(p for p in path.glob("*.zarr") if not p.name.startswith("."))
        if not inside:
            raise FileNotFoundError(f"{path} is not a zarr store and holds no *.zarr store; {fix}.")
        for store in inside:
            if not is_store(store):
                raise FileNotFoundError(f"{store} (in {path}) is not a zarr store (no zarr.json or .zgroup); {fix}.")
        stores.extend(inside)
    unique = {store.resolve(): store for store in reversed(stores)}  # the first spelling of each store wins
    return sorted(unique.values(), key=str)


def run(args: argparse.Namespace) -> int:
    """Check every path, then run the tool on this process's shard of the stores and print one line per store."""
    stores = expand_stores(args.stores)  # every path checked before anything is imported, loaded or computed
    for store in stores:
        check_store_writable(store)
    if args.command == "domains":
        try:
            check_method(args.method, args.n_domains, args.resolution)
        except ValueError as err:
            raise ValueError(
                str(err).replace("`n_domains`", "--n-domains").replace("`resolution`", "--resolution")
            ) from None
    import torch

    from ._settings import settings
    from .tl._model_arg import get_model
    from .train._distributed import setup, teardown

    model = get_model(args.model)
    joined_before = torch.distributed.is_available() and torch.distributed.is_initialized()
    dist = setup(settings.device)  # rank and world size from torchrun's variables; CUDA device from LOCAL_RANK
    try:
        if len(stores) == 1 and dist.world_size == 1:
            print(_run_one(args, stores[0], model, ""))
            return 0
        return _run_shard(args, stores, model, dist)
    finally:
        if not joined_before:
            teardown()


def _run_shard(args: argparse.Namespace, stores: list[Path], model: Any, dist: Any) -> int:
    """Run this rank's stores, isolating failures; summarise on rank 0 (on every rank without a process group)."""
    import torch

    grouped = dist.world_size > 1 and torch.distributed.is_initialized()
    # a CPU group of its own, so that ranks done early can wait out NCCL's (or gloo's) default timeout for the others
    group = torch.distributed.new_group(backend="gloo", timeout=GATHER_TIMEOUT) if grouped else None
    tag = f" [rank {dist.rank}/{dist.world_size}]" if dist.world_size > 1 else ""
    failed = []
    mine = stores[dist.rank :: dist.world_size]
    for store in mine:
        try:
            line = _run_one(args, store, model, tag)
        except Exception as err:  # noqa: BLE001 - one bad store must not stop the cohort; reported and counted below
            reason = " ".join(f"{type(err).__name__}: {err}".split())
            failed.append(f"{store} ({reason})")
            print(f"storm {args.command}{tag}: failed {store}: {reason}", file=sys.stderr, flush=True)
        else:
            print(line, flush=True)
    if grouped:
        shards: list[Any] = [None] * dist.world_size
        torch.distributed.all_gather_object(shards, failed, group=group)
        failed = [f for shard in shards for f in shard]
        if dist.is_main:
            print(_summary(args.command, len(stores), failed, f" on {dist.world_size} processes"), flush=True)
        torch.distributed.barrier(group=group)  # no rank exits (and has torchrun stop the others) before the summary
    else:
        scope = " of this rank's shard (no process group)" if dist.world_size > 1 else ""
        print(_summary(args.command + tag, len(mine), failed, scope), flush=True)
    return 1 if failed else 0


def _summary(command: str, n: int, failed: list[str], scope: str) -> str:
    done = f"storm {command}: {n - len(failed)} of {n} stores done{scope}"
    return done + (f"; {len(failed)} failed: {', '.join(failed)}" if failed else "")


def _run_one(args: argparse.Namespace, store: Path, model: Any, tag: str) -> str:
    """Read one store, compute in memory, then replace its table (the store is untouched until results exist)."""
    import spatialdata

    from . import io, tl
    from ._constants import LAYER_PREDICTED, OBSM_EMBEDDING, UNS_KEY

    sdata = spatialdata.read_zarr(store)
    key = io.resolve(sdata, table_key=args.table_key).keys["table_key"]
    before = dict(sdata.tables[key].uns.get(UNS_KEY, {}))
    if args.command == "embed":
        tl.embed(sdata, model=model, modality=args.modality, table_key=key, image_key=args.image_key)
        table = sdata.tables[key]
        done = f"obsm {sorted(k for k in table.obsm if k.startswith(OBSM_EMBEDDING))}"
    elif args.command == "predict":
        tl.predict_expression(sdata, args.genes, model=model, table_key=key, image_key=args.image_key)
        table = sdata.tables[key]
        if LAYER_PREDICTED in table.var:
            done = f"layers[{LAYER_PREDICTED!r}] for {int(table.var[LAYER_PREDICTED].sum())} genes"
        else:  # an H&E-only table (a tissue grid): one obsm column per gene
            done = f"obsm[{LAYER_PREDICTED!r}] for {table.obsm[LAYER_PREDICTED].shape[1]} genes"
    else:
        if OBSM_EMBEDDING not in sdata.tables[key].obsm:
            tl.embed(sdata, model=model, modality=args.modality, table_key=key)
        tl.domains(sdata, args.n_domains, resolution=args.resolution, method=args.method, table_key=key)
        table = sdata.tables[key]
        done = f"obs['storm_domain'] with {len(table.obs['storm_domain'].cat.categories)} domains"
    records = [name for name, record in table.uns[UNS_KEY].items() if before.get(name) is not record]
    io.write_table(store, table, key, records=records)  # merged under the store's lock: concurrent writers keep theirs
    return f"storm {args.command}{tag}: wrote {done} for {table.n_obs} spots to table {key!r} of {store}"
