"""Writing results: a table of a SpatialData store replaced, or storm's results merged in, under the store's lock."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._constants import UNS_KEY
from ._lock import store_lock

if TYPE_CHECKING:
    from collections.abc import Collection, Iterable, Sequence

    from anndata import AnnData

#: About when this process started: staging folders last changed before then belong to runs that were interrupted.
_STARTED = time.time()


def write_table(
    path: str | os.PathLike[str], table: AnnData, table_key: str, *, records: Sequence[str] | None = None
) -> Path:
    """Replace (or add) the table ``table_key`` of the SpatialData store at ``path``, leaving it intact on failure.

    With ``records``, only those results of ``table`` go in: each names an entry of ``uns["storm"]`` (``"X_storm"``,
    ``"storm_predicted"``, ... as a storm tool's ``key_added``), and the keys it lists as written (``obsm``, ``obs``,
    ``layers``, ``var``) are merged into the table *as the store holds it now*, with the record; keys an earlier record
    of the same name wrote and this one does not are removed. So two processes that read one store, compute different
    results and write them back both keep theirs: writers take the store's lock (``.NAME.zarr.storm-lock`` beside it,
    ``storm.io._lock.store_lock``) and each merges into what the last one wrote. Without ``records`` the whole
    table is replaced (also under the lock), and what another writer stored since ``table`` was read is lost.

    The table is first written to a temporary store beside ``path`` (beside the real store when ``path`` is a symbolic
    link) and read back; only then is the old table moved aside, the new one moved in and the store's consolidated
    metadata rewritten. If any step fails, the old table and metadata are put back and the error is raised; other
    elements (images, shapes, other tables) are never touched. Temporary stores of this store left by interrupted runs
    (``.NAME.zarr.storm-new-*``, last changed before this process started) are removed first.

    Parameters
    ----------
    path
        A SpatialData ``.zarr`` store (written by ``SpatialData.write``).
    table
        The table to store; it must be fully in memory (as tables read by ``spatialdata.read_zarr`` are).
    table_key
        Its name in the store.
    records
        Names in ``table.uns["storm"]`` whose results to merge into the stored table (``None``: replace it).

    Returns
    -------
    The store path.

    Examples
    --------
    >>> import spatialdata
    >>> sdata = spatialdata.read_zarr("slide.zarr")  # doctest: +SKIP
    >>> st.tl.embed(sdata)  # doctest: +SKIP
    >>> write_table("slide.zarr", sdata["table"], "table", records=["X_storm"])  # doctest: +SKIP
    """
    import spatialdata

    store = Path(path).resolve()  # "." has no name to stage beside, and a link's target may be on another disk
    if not is_store(store):
        raise FileNotFoundError(f"{path} is not a zarr store; pass the .zarr folder written by SpatialData.write.")
    with store_lock(store):
        _sweep_staging(store)
        target = store / "tables" / table_key
        if records is not None and target.exists():
            table = merge_records(spatialdata.read_zarr(store, selection=("tables",))[table_key], table, records)
        _write_staged(store, table, table_key, target)
    return Path(path)


def merge_records(current: AnnData, table: AnnData, records: Sequence[str]) -> AnnData:
    """``current`` (the table as stored) with the results that ``table``'s ``uns["storm"][name]`` records list.

    Raises :class:`ValueError` when a name has no record in ``table``, or when the stored table no longer has the same
    spots and genes in the same order (it was replaced since ``table`` was read: run the tool again).
    """
    ours = table.uns.get(UNS_KEY, {})
    missing = [name for name in records if not isinstance(ours.get(name), dict)]
    if missing:
        raise ValueError(
            f"records={missing!r} name no entry of the table's uns[{UNS_KEY!r}] (it holds {sorted(ours)}); pass the "
            "`key_added` of the storm results to write, or records=None to replace the whole table."
        )
    if not (current.obs_names.equals(table.obs_names) and current.var_names.equals(table.var_names)):
        raise ValueError(
            "The table in the store no longer has the spots and genes of the one these results were computed on "
            "(another process replaced it meanwhile); nothing was written: read the store again and rerun the tool."
        )
    theirs = current.uns.setdefault(UNS_KEY, {})
    for name in records:
        record = ours[name]
        written = record.get("keys", {})
        before = theirs.get(name, {}).get("keys", {}) if isinstance(theirs.get(name), dict) else {}
        for where, keys in before.items():
            for key in set(keys) - set(written.get(where, ())):
                _slot(current, where).pop(key, None)
        for where, keys in written.items():
            for key in keys:
                value = _slot(table, where)[key]
                _slot(current, where)[key] = value.values if where in ("obs", "var") else value
        theirs[name] = record
    return current


def _slot(table: AnnData, where: str) -> Any:
    """``table.obsm`` / ``.layers`` (mappings) or ``.obs`` / ``.var`` (data frames, by column)."""
    if where not in ("obsm", "obs", "layers", "var"):
        raise ValueError(f"A storm record lists keys written to {where!r}; only obsm, obs, layers and var are known.")
    return getattr(table, where)


def _write_staged(store: Path, table: AnnData, table_key: str, target: Path) -> None:
    """Write ``table`` beside ``store``, read it back, then swap it in for ``target`` (all or nothing)."""
    import spatialdata

    token = secrets.token_hex(4)
    staging = store.parent / f".{store.name}.storm-new-{token}"
    backup = store.parent / f".{store.name}.storm-old-{token}"
    try:
        spatialdata.SpatialData(tables={table_key: table}).write(staging)
        written = spatialdata.read_zarr(staging)[table_key]
        if written.n_obs != table.n_obs or set(written.obsm) != set(table.obsm):
            raise OSError(f"the table written to {staging} does not read back as written; nothing was changed.")
        (store / "tables").mkdir(exist_ok=True)
        _swap(store, staging / "tables" / table_key, target, backup)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def is_store(path: Path) -> bool:
    """Whether ``path`` is a zarr store: a folder with ``zarr.json`` (zarr v3) or ``.zgroup`` (v2)."""
    return (path / "zarr.json").is_file() or (path / ".zgroup").is_file()


def _sweep_staging(store: Path) -> None:
    """Remove the staging copies of ``store`` that interrupted runs left beside it.

    Only this store's (so that processes writing other stores of the same folder, as torchrun ranks do, are never
    disturbed), only storm's exact name, and only those last changed before this process started.
    """
    pattern = re.compile(rf"\.{re.escape(store.name)}\.storm-new-[0-9a-f]{{8}}")
    for path in store.parent.glob(f".{store.name}.storm-new-*"):
        if pattern.fullmatch(path.name) and path.is_dir() and path.stat().st_mtime < _STARTED:
            shutil.rmtree(path, ignore_errors=True)


def check_store_writable(store: Path) -> None:
    """Raise :class:`ValueError` when :func:`write_table` could not write ``store``.

    That is when the store, its tables or the folder it stages in (beside the real store) is read-only.
    """
    real = store.resolve()
    for folder in (real, real / "tables", real.parent):
        if folder.is_dir() and not os.access(folder, os.W_OK | os.X_OK):
            raise ValueError(
                f"{store} cannot be written: {folder} is read-only; results are written back into each store (staged "
                "beside it), so make the store and its folder writable, or copy the store to a folder you can write to."
            )


def check_output_dir(
    path: str | os.PathLike[str],
    argument: str,
    *,
    allowed: Collection[str] | None = (),
    fix: str = "pass a new or empty folder",
    inputs: Iterable[str | os.PathLike[str]] = (),
) -> Path:
    """Check, before any work, that the folder ``path`` can take results without losing anything of the user's.

    Parameters
    ----------
    path
        The output folder (created later if missing).
    argument
        Its name in messages, e.g. ``"--out"``.
    allowed
        The names an existing folder may already hold (the files the command writes, which it replaces); ``None``
        allows anything.
    fix
        What to do when the folder holds other names.
    inputs
        Input paths (stores) the folder must not lie inside.

    Returns
    -------
    ``path``, as a :class:`~pathlib.Path`.

    Raises
    ------
    ValueError
        Naming ``argument`` and the fix, when ``path`` is a file or a broken link, lies inside an input, is named like a
        data file (``.h5ad``, ``.zarr``), sits below a file, is read-only, or holds names not in ``allowed``.
    """
    out = Path(path)
    where = f"{argument} {out}"
    if out.is_symlink() and not out.exists():
        raise ValueError(f"{where} is a symbolic link to nothing; remove the link or pass another folder.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"{where} is a file; {argument} names a folder: pass a new or empty folder.")
    real = out.resolve()
    for source in inputs:
        if real.is_relative_to(Path(source).resolve()):
            raise ValueError(f"{where} is inside the input {source}; pass a folder outside it.")
    if out.suffix.lower() in (".h5ad", ".zarr"):
        raise ValueError(
            f"{where} is named like a data file; {argument} names a folder: pass e.g. {out.with_suffix('')}."
        )
    existing = next(p for p in (real, *real.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{where} cannot be created: {existing} is a file, not a folder; pass another folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{where} cannot be written: {existing} is read-only; pass a folder you can write to.")
    if out.is_dir() and allowed is not None:
        held = sorted(p.name for p in out.iterdir() if p.name not in allowed)
        if held:
            more = f" and {len(held) - 3} more" if len(held) > 3 else ""
            raise ValueError(f"{where} already holds {', '.join(held[:3])}{more}; {fix}.")
    return out


def _swap(store: Path, new: Path, target: Path, backup: Path) -> None:
    """Move ``new`` to ``target`` (the old one to ``backup``) and reconsolidate; undo everything on failure."""
    had_old = target.exists()
    if had_old:
        os.replace(target, backup)
    try:
        os.replace(new, target)
        _consolidate(store)
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        if had_old:
            os.replace(backup, target)
        _consolidate(store)
        raise
    if had_old:
        shutil.rmtree(backup, ignore_errors=True)


def _consolidate(store: Path) -> None:
    import warnings

    import zarr

    with warnings.catch_warnings():  # shapes are parquet files inside the store, which zarr does not list
        warnings.filterwarnings("ignore", message=".*not recognized as a component of a Zarr hierarchy")
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")  # as spatialdata
        zarr.consolidate_metadata(str(store))
