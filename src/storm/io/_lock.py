"""One writer at a time per store: an exclusive lock beside a SpatialData ``.zarr`` store, held while it is written."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .._logging import logger

if TYPE_CHECKING:
    from collections.abc import Iterator


def lock_path(store: Path) -> Path:
    """The lock file of ``store``: ``.NAME.zarr.storm-lock`` beside it (present only while a writer holds it)."""
    real = store.resolve()
    return real.parent / f".{real.name}.storm-lock"


@contextlib.contextmanager
def store_lock(store: Path) -> Iterator[None]:
    """Hold the exclusive write lock of ``store`` (waiting for another process's writer to finish first).

    The lock is an advisory ``flock`` on :func:`lock_path`, so it is released when its process ends, however it ends;
    the file is removed on release, and a writer that locked a file another removed meanwhile locks the new one.
    Every storm write into a store (:func:`~storm.io.write_table`, cached encoder features) takes it. Without ``fcntl``
    (Windows) the lock is an exclusively created file, removed on release.

    Examples
    --------
    >>> from pathlib import Path
    >>> from storm.io._lock import store_lock
    >>> with store_lock(Path("slide.zarr")):  # doctest: +SKIP
    ...     pass  # read, merge and write the store: no other storm process writes it meanwhile
    """
    path = lock_path(store)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield from _exclusive_file(path)
        return
    while True:
        fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                logger.warning("waiting for another process writing %s", store)
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                same = os.stat(path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder before us removed this file; lock the current one
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        os.close(fd)


def _exclusive_file(path: Path) -> Iterator[None]:  # pragma: no cover - Windows
    import time

    waited = False
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
            break
        except FileExistsError:
            if not waited:
                logger.warning("waiting for another process writing %s (or remove %s if none is)", path.name, path)
                waited = True
            time.sleep(0.2)
    try:
        yield
    finally:
        os.close(fd)
        os.unlink(path)
