"""Where the public datasets live on disk: an explicit ``path=``, else ``storm.settings.data_dir / <name>``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def dataset_dir(name: str, path: str | Path | None, *, markers: Sequence[str], hint: str) -> Path:
    """The folder of dataset ``name``.

    Parameters
    ----------
    name
        Folder name of the dataset under ``storm.settings.data_dir`` (e.g. ``"her2st"``).
    path
        The dataset folder itself, or a folder holding ``name/``; ``None`` uses ``storm.settings.data_dir / name``
        (``storm.settings.data_dir`` defaults to the environment variable ``STORM_DATA_DIR``).
    markers
        Relative paths of which at least one exists inside a genuine dataset folder.
    hint
        What the folder is and where to get it, for the error message.

    Returns
    -------
    The dataset folder.

    Examples
    --------
    >>> from storm.datasets._paths import dataset_dir
    >>> dataset_dir("her2st", "/nonexistent", markers=["data/ST-cnts"], hint="a clone of github.com/almaan/her2st")
    Traceback (most recent call last):
    ...
    FileNotFoundError: `path='/nonexistent'` does not exist. Pass `path=` pointing to the her2st folder (a clone of github.com/almaan/her2st).
    """
    from storm._settings import settings

    if path is not None:
        root = Path(path).expanduser()
        if not root.exists():
            raise FileNotFoundError(
                f"`path={str(path)!r}` does not exist. Pass `path=` pointing to the {name} folder ({hint})."
            )
        candidates = [root, root / name]
        given = f"`path={str(path)!r}`"
    elif settings.data_dir is not None:
        candidates = [Path(settings.data_dir).expanduser() / name]
        given = f"storm.settings.data_dir / {name!r} ({candidates[0]})"
    else:
        raise FileNotFoundError(
            f"Where is the {name} folder ({hint})? Pass `path=` pointing to it, or set `storm.settings.data_dir` "
            f"(or the environment variable STORM_DATA_DIR) to a folder that contains `{name}/`."
        )
    for folder in candidates:
        if any((folder / marker).exists() for marker in markers):
            return folder
    raise FileNotFoundError(
        f"{given} is not the {name} folder: none of {list(markers)} was found in it. Pass `path=` pointing to the "
        f"{name} folder ({hint})."
    )
