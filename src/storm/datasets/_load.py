"""One corpus entry by name: ``"demo"``, ``"<dataset>:<section>"`` or a SpatialData ``.zarr`` path."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spatialdata import SpatialData


def load(entry: str, data_dir: str | Path | None = None) -> SpatialData | Path:
    """The data set an entry of a pretraining corpus names, as ``storm pretrain --config`` reads its ``corpus:`` list.

    Parameters
    ----------
    entry
        ``"demo"`` (:func:`storm.datasets.demo`), ``"her2st:<section>"`` (:func:`storm.datasets.her2st`),
        ``"dlpfc:<slice>"`` (:func:`storm.datasets.dlpfc`), or the path of a SpatialData ``.zarr`` store.
    data_dir
        The folder holding ``her2st/`` and ``dlpfc/``; ``None`` uses ``storm.settings.data_dir``
        (``$STORM_DATA_DIR``).

    Returns
    -------
    The loaded :class:`~spatialdata.SpatialData` for a named data set, or the store's path (read when the corpus is
    built).

    Examples
    --------
    >>> import storm as st
    >>> sorted(st.datasets.load("demo").tables["table"].obs.columns)[:2]
    ['array_x', 'array_y']
    >>> st.datasets.load("visium:151673")
    Traceback (most recent call last):
    ...
    ValueError: Unknown corpus entry 'visium:151673'; use a .zarr path, 'demo', 'her2st:<section>' or 'dlpfc:<id>'.
    """
    from ._demo import demo
    from ._dlpfc import dlpfc
    from ._her2st import her2st

    if entry == "demo":
        return demo()
    if ":" in entry and not Path(entry).exists():
        name, _, section = entry.partition(":")
        loaders = {"her2st": her2st, "dlpfc": dlpfc}
        if name not in loaders:
            raise ValueError(
                f"Unknown corpus entry {entry!r}; use a .zarr path, 'demo', 'her2st:<section>' or 'dlpfc:<id>'."
            )
        return loaders[name](section, path=None if data_dir is None else Path(data_dir) / name)
    path = Path(entry)
    if not path.exists():
        raise FileNotFoundError(
            f"Corpus entry {entry!r} does not exist; pass a .zarr path, 'demo' or '<dataset>:<id>'."
        )
    return path
