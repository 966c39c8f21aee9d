"""Head folders: ``head.json`` (what the head is, which model it needs) and ``head.safetensors``, written atomically."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch

from ..._version import __version__
from ...models._checkpoint import _move_into_place, _sha256
from ._modules import AttentionMILHead, SpotHead

HEAD_CONFIG = "head.json"
HEAD_WEIGHTS = "head.safetensors"
HEAD_FORMAT_VERSION = 1
#: Key of ``head.json`` holding the hash of the rest of it (heads saved before it existed load without the check).
CONFIG_CHECKSUM = "config_sha256"
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
        record = json.loads(json.dumps(record, default=_plain))  # plain JSON values, as read back
        record[CONFIG_CHECKSUM] = _config_sha256(record)
        (tmp / HEAD_CONFIG).write_text(json.dumps(record, indent=2) + "\n")
        _move_into_place(tmp, path)
    finally:
        if tmp.exists():
            for child in tmp.iterdir():
                child.unlink()
            tmp.rmdir()
    return path


def load_head(path: str | os.PathLike[str]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Read a head folder written by :func:`save_head`; the checksums of the weights and of ``head.json`` are verified.

    An edited, truncated or foreign ``head.json`` is refused with its path and what is wrong.

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
    try:
        meta = json.loads(config.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config} is not valid JSON ({err}); restore the file, or save the head again.") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{config} holds a {type(meta).__name__}, not a head description; save the head again.")
    if meta.get("format_version", 0) > HEAD_FORMAT_VERSION:
        raise ValueError(f"the head at {folder} needs a newer storm (format {meta['format_version']}); upgrade storm.")
    if CONFIG_CHECKSUM in meta and meta[CONFIG_CHECKSUM] != _config_sha256(meta):
        raise ValueError(
            f"{config} was changed after the head was saved (it no longer matches its checksum): the genes, classes "
            "or model it lists may not be those its weights were trained on. Restore the file, or train and save the "
            "head again."
        )
    missing = [key for key in ("module", "init", "sha256") if key not in meta]
    if missing or meta.get("module") not in _MODULES or not isinstance(meta.get("init"), dict):
        what = f"lacks {missing}" if missing else f"names module {meta.get('module')!r} or an init that storm lacks"
        raise ValueError(f"{config} {what}; it is not a head saved by storm: save the head again.")
    weights = folder / HEAD_WEIGHTS
    if not weights.is_file() or _sha256(weights) != meta.get("sha256"):
        raise ValueError(f"{weights} is missing or does not match the checksum in {HEAD_CONFIG}; save the head again.")
    try:
        module = _MODULES[meta["module"]](**meta["init"])
        module.load_state_dict(load_file(weights))
    except (TypeError, RuntimeError) as err:
        reason = " ".join(str(err).split())[:300]
        raise ValueError(
            f"{config} does not describe the weights in {weights} ({reason}); restore the file, or save the head again."
        ) from None
    return module.eval(), meta


def _config_sha256(meta: dict[str, Any]) -> str:
    """Hash of a head description (all but the hash itself), over its keys in sorted order."""
    body = {k: v for k, v in meta.items() if k != CONFIG_CHECKSUM}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to {HEAD_CONFIG}")
