"""Writing results back into a SpatialData ``.zarr`` store: one table replaced as a unit, or not at all."""

from __future__ import annotations

import os
import secrets
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData


def write_table(path: str | os.PathLike[str], table: AnnData, table_key: str) -> Path:
    """Replace (or add) the table ``table_key`` of the SpatialData store at ``path``, leaving it intact on failure.

    The table is first written to a temporary store beside ``path`` and read back; only then is the old table moved
    aside, the new one moved in and the store's consolidated metadata rewritten. If any step fails, the old table and
    metadata are put back and the error is raised; other elements (images, shapes, other tables) are never touched.

    Parameters
    ----------
    path
        A SpatialData ``.zarr`` store (written by ``SpatialData.write``).
    table
        The table to store; it must be fully in memory (as tables read by ``spatialdata.read_zarr`` are).
    table_key
        Its name in the store.

    Returns
    -------
    The store path.

    Examples
    --------
    >>> import spatialdata
    >>> sdata = spatialdata.read_zarr("slide.zarr")  # doctest: +SKIP
    >>> st.tl.embed(sdata)  # doctest: +SKIP
    >>> write_table("slide.zarr", sdata["table"], "table")  # doctest: +SKIP
    """
    import spatialdata

    store = Path(path)
    if not (store / "zarr.json").is_file() and not (store / ".zgroup").is_file():
        raise FileNotFoundError(f"{store} is not a zarr store; pass the .zarr folder written by SpatialData.write.")
    token = secrets.token_hex(4)
    staging = store.parent / f".{store.name}.storm-new-{token}"
    backup = store.parent / f".{store.name}.storm-old-{token}"
    target = store / "tables" / table_key
    try:
        spatialdata.SpatialData(tables={table_key: table}).write(staging)
        written = spatialdata.read_zarr(staging)[table_key]
        if written.n_obs != table.n_obs or set(written.obsm) != set(table.obsm):
            raise OSError(f"the table written to {staging} does not read back as written; nothing was changed.")
        (store / "tables").mkdir(exist_ok=True)
        _swap(store, staging / "tables" / table_key, target, backup)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return store


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
