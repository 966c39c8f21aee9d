"""Head folders: ``head.json`` (what the head is, which model it needs) and ``head.safetensors``, written atomically."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch

from .._version import __version__
from ._checkpoint import _move_into_place, _sha256
from ._heads import AttentionMILHead, SpotHead

HEAD_CONFIG = "head.json"
HEAD_WEIGHTS = "head.safetensors"
HEAD_FORMAT_VERSION = 1
_MODULES = {"spot": SpotHead, "mil": AttentionMILHead}


def save_head(module: torch.nn.Module, path: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write a head and its description to the folder ``path`` (replacing a head already there, never anything else).

    Parameters
    ----------
    module
        A :class:`SpotHead` or :class:`AttentionMILHead`.
    path
        Folder to create or replace.
    meta
        JSON-serialisable description; must hold ``"init"``, the module's constructor arguments.

    Returns
    -------
    The folder.

    Examples
    --------
    >>> import tempfile
    >>> head = SpotHead(4, 2)
    >>> folder = save_head(head, tempfile.mkdtemp() + "/h", {"init": {"n_features": 4, "n_outputs": 2}})
    >>> sorted(p.name for p in folder.iterdir())
    ['head.json', 'head.safetensors']
    """
    from safetensors.torch import save_file

    kind = {cls: name for name, cls in _MODULES.items()}.get(type(module))
    if kind is None:
        raise TypeError(
            f"cannot save a {type(module).__name__} as a storm head; expected SpotHead or AttentionMILHead."
        )
    path = Path(path)
    if path.exists() and (not path.is_dir() or {p.name for p in path.iterdir()} - {HEAD_CONFIG, HEAD_WEIGHTS}):
        raise ValueError(f"cannot save a head to {path}: it exists and is not a storm head folder; choose a new path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        state = {k: v.detach().to("cpu").contiguous() for k, v in module.state_dict().items()}
        save_file(state, tmp / HEAD_WEIGHTS)
        record = {
            **meta,
            "module": kind,
            "format_version": HEAD_FORMAT_VERSION,
            "storm_version": __version__,
            "sha256": _sha256(tmp / HEAD_WEIGHTS),
        }
        (tmp / HEAD_CONFIG).write_text(json.dumps(record, indent=2, default=_plain) + "\n")
        _move_into_place(tmp, path)
    finally:
        if tmp.exists():
            for child in tmp.iterdir():
                child.unlink()
            tmp.rmdir()
    return path


def load_head(path: str | os.PathLike[str]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Read a head folder written by :func:`save_head`; the weights' checksum is verified.

    Examples
    --------
    >>> import tempfile
    >>> folder = save_head(SpotHead(4, 2), tempfile.mkdtemp() + "/h", {"init": {"n_features": 4, "n_outputs": 2}})
    >>> module, meta = load_head(folder)
    >>> type(module).__name__, meta["module"]
    ('SpotHead', 'spot')
    """
    from safetensors.torch import load_file

    folder = Path(path)
    config = folder / HEAD_CONFIG
    if not config.is_file():
        raise FileNotFoundError(
            f"{folder} is not a storm head folder (no {HEAD_CONFIG}); pass the folder written by head.save()."
        )
    meta = json.loads(config.read_text())
    if meta.get("format_version", 0) > HEAD_FORMAT_VERSION:
        raise ValueError(f"the head at {folder} needs a newer storm (format {meta['format_version']}); upgrade storm.")
    weights = folder / HEAD_WEIGHTS
    if not weights.is_file() or _sha256(weights) != meta.get("sha256"):
        raise ValueError(f"{weights} is missing or does not match the checksum in {HEAD_CONFIG}; save the head again.")
    module = _MODULES[meta["module"]](**meta["init"])
    module.load_state_dict(load_file(weights))
    return module.eval(), meta


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to {HEAD_CONFIG}")
