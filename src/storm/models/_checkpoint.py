"""Checkpoint folders: ``config.json``, ``model.safetensors``, ``vocab.tsv``, ``README.md`` and ``checksums.json``.

Loading never unpickles: weights are read with safetensors, the vocabulary and config as text. Files listed in
``checksums.json`` are verified before anything is built from them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch

from .._version import __version__
from ._config import StormConfig
from ._hub import CARD_NAME, CHECKSUMS_NAME, CONFIG_NAME, VOCAB_NAME, WEIGHTS_NAME, render_card, resolve
from ._vocab import GeneVocab

#: The model class a checkpoint builds (:class:`~storm.models.StormModel` or a subclass); named here without importing
#: it, so that ``_model`` imports this module and not the other way round.
Model = TypeVar("Model", bound=torch.nn.Module)

#: Version of the folder layout; a checkpoint with a higher one needs a newer storm.
FORMAT_VERSION = 1
#: Keys of ``config.json`` that describe the checkpoint rather than the model.
_META_KEYS = ("model_type", "format_version", "storm_version", "vocab_hash", "weights_dtype")
#: Storage dtypes of :func:`save_pretrained` (floating-point tensors are cast back to the model's dtype on load).
_STORAGE_DTYPES = ("float32", "float16", "bfloat16")
#: Entries an existing target folder may hold and still be replaced by :func:`save_pretrained`.
_REPLACEABLE = {CONFIG_NAME, WEIGHTS_NAME, VOCAB_NAME, CARD_NAME, CHECKSUMS_NAME, ".cache", ".gitattributes"}
_ALIASES_KEY = "storm_aliases"
_SHOWN = 5


def save_pretrained(
    model: torch.nn.Module, path: str | os.PathLike[str], *, weights_dtype: str | None = None, **card: Any
) -> Path:
    """Write ``model`` as a checkpoint folder, atomically.

    The folder is written next to ``path`` under a temporary name and renamed into place once complete; an existing
    checkpoint at ``path`` is replaced only then, so a failed save leaves it intact.

    Parameters
    ----------
    model
        The model; its ``config``, ``vocab`` (if any) and weights (the state dict) are saved.
    path
        The checkpoint folder to create or replace.
    weights_dtype
        Store floating-point weights as ``"float16"`` or ``"bfloat16"`` (half the size; loading casts them back to
        the model's float32) or ``"float32"``; default: as they are.
    **card
        Model card fields rendered into ``README.md``: ``description``, ``license``, ``tags`` and any others (e.g.
        ``data``, ``steps``, ``time``, ``hardware``, ``losses``, ``evaluation``) as sections; mappings and lists of
        mappings become tables.

    Returns
    -------
    The checkpoint folder.
    """
    if weights_dtype is not None and weights_dtype not in _STORAGE_DTYPES:
        raise ValueError(f"`weights_dtype` must be one of {_STORAGE_DTYPES} or None, got {weights_dtype!r}.")
    path = Path(path).expanduser().resolve()
    _check_replaceable(path)
    vocab = model.vocab
    config = {
        "model_type": "storm",
        "format_version": FORMAT_VERSION,
        "storm_version": __version__,
        **model.config.to_dict(),
        "vocab_hash": None if vocab is None else vocab.content_hash(),
    }
    tensors, aliases = _tensors_for_saving(model)
    if weights_dtype is not None:
        dtype = getattr(torch, weights_dtype)
        tensors = {k: t.to(dtype) if t.is_floating_point() else t for k, t in tensors.items()}
        config["weights_dtype"] = weights_dtype
    metadata = {"format": "pt", **({_ALIASES_KEY: json.dumps(aliases, sort_keys=True)} if aliases else {})}

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.tmp-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        from safetensors.torch import save_file

        save_file(tensors, str(tmp / WEIGHTS_NAME), metadata=metadata)
        if vocab is not None:
            vocab.save(tmp / VOCAB_NAME)
        text = render_card(config, num_parameters=model.num_parameters(), vocab_size=model.config.vocab_size, **card)
        (tmp / CARD_NAME).write_text(text, encoding="utf-8")
        files = [f for f in (WEIGHTS_NAME, CONFIG_NAME, VOCAB_NAME) if (tmp / f).is_file()]
        checksums = {"algorithm": "sha256", "files": {f: _sha256(tmp / f) for f in files}}
        (tmp / CHECKSUMS_NAME).write_text(json.dumps(checksums, indent=2) + "\n", encoding="utf-8")
        _move_into_place(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_pretrained(
    name_or_path: str | os.PathLike[str] = "default",
    revision: str | None = None,
    *,
    cls: type[Model],
) -> Model:
    """Load a checkpoint: a local folder, ``"default"`` (bundled), a cached hub name, or a hub repo id (online only).

    Parameters
    ----------
    name_or_path
        A checkpoint folder; ``"default"`` for the checkpoint shipped with storm (``"./default"`` for a local folder of
        that name); or a Hugging Face hub repo id such as ``"org/model"``, looked up in
        ``storm.settings.cache_dir / "models"`` first and downloaded there unless ``HF_HUB_OFFLINE=1`` or
        ``STORM_OFFLINE=1``.
    revision
        Hub branch, tag or commit.
    cls
        The class to build: :class:`~storm.models.StormModel`, or the subclass whose ``from_pretrained`` was called.

    Returns
    -------
    The model in eval mode on the CPU, with ``checkpoint_info`` (name, path, sha256 of the weights, storm version that
    wrote it, and where it was found: ``"local"``, ``"bundled"``, ``"cache"`` or ``"hub"``).
    """
    found = resolve(name_or_path, revision)
    model = load_folder(found.path, name=found.name, revision=found.revision, cls=cls)
    model.checkpoint_info["source"] = found.source
    return model


def load_folder(folder: Path, *, cls: type[Model], name: str | None = None, revision: str | None = None) -> Model:
    """Build a ``cls`` (a :class:`~storm.models.StormModel`) from a checkpoint folder (see :func:`load_pretrained`)."""
    missing = [f for f in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / f).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder} is not a storm checkpoint: it has no {' or '.join(missing)} (write one with save_pretrained)."
        )
    digests = _verify_checksums(folder)
    raw = _read_config(folder / CONFIG_NAME)
    try:
        config = StormConfig.from_dict({k: v for k, v in raw.items() if k not in _META_KEYS})
    except (TypeError, ValueError) as error:
        raise ValueError(f"{folder / CONFIG_NAME} is not a valid storm config: {error}") from None
    vocab = _read_vocab(folder, raw.get("vocab_hash"), config)
    # The weights come from the file: never fetch the backbone's published weights while building.
    config = dataclasses.replace(config, backbone_pretrained=False, backbone_weights=None)
    with torch.random.fork_rng(devices=[]):  # building initialises weights; leave the caller's RNG alone
        model = cls(config, vocab)
    state = _read_weights(folder / WEIGHTS_NAME)
    _check_state(model, state, folder)
    model.load_state_dict(state, strict=True)
    model.eval()
    model.checkpoint_info = {
        "name": os.fspath(folder) if name is None else name,
        "path": str(folder),
        "revision": revision,
        "sha256": digests.get(WEIGHTS_NAME) or _sha256(folder / WEIGHTS_NAME),
        "storm_version": raw.get("storm_version"),
    }
    return model


# -- saving ------------------------------------------------------------------------------------------------------------
def _check_replaceable(path: Path) -> None:
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"cannot save a checkpoint to {path}: it is a file; choose a folder path.")
    foreign = sorted(p.name for p in path.iterdir() if p.name not in _REPLACEABLE)
    if foreign:
        shown = ", ".join(foreign[:_SHOWN]) + (" ..." if len(foreign) > _SHOWN else "")
        raise ValueError(
            f"cannot save a checkpoint to {path}: the folder holds files that are not part of a storm checkpoint "
            f"({shown}) and replacing it would delete them; choose a new or empty folder."
        )


def _tensors_for_saving(model: torch.nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """CPU, contiguous tensors of the state dict without shared storage, and ``{dropped name: kept name}`` of ties.

    Identical views of one storage (tied weights) are written once and restored on load; other tensors sharing storage
    (partial views) are copied so that safetensors can write them.
    """
    state = model.state_dict()
    groups: dict[tuple[str, int], list[str]] = {}
    for key, tensor in state.items():
        if tensor.device.type == "meta":
            raise ValueError(f"cannot save the model: tensor {key!r} is on the meta device (it holds no values).")
        ptr = tensor.untyped_storage().data_ptr() if tensor.numel() else id(tensor)
        groups.setdefault((str(tensor.device), ptr), []).append(key)
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    for keys in groups.values():
        first = min(keys)
        tied = {k for k in keys if k != first and _same_view(state[k], state[first])}
        aliases.update(dict.fromkeys(tied, first))
        written = sorted(set(keys) - tied)
        for key in written:
            tensor = state[key].detach()
            if len(written) > 1 and tensor.device.type == "cpu":  # partial views of one storage: copy each
                tensors[key] = tensor.clone(memory_format=torch.contiguous_format)
            else:
                tensors[key] = tensor.to("cpu").contiguous()
    return tensors, aliases


def _same_view(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (a.dtype, a.shape, a.stride(), a.storage_offset()) == (b.dtype, b.shape, b.stride(), b.storage_offset())


def _move_into_place(tmp: Path, path: Path) -> None:
    """Rename the complete ``tmp`` folder to ``path``; an existing folder there is removed only afterwards."""
    old = None
    if path.exists():
        old = path.parent / f".{path.name}.old-{secrets.token_hex(4)}"
        os.replace(path, old)
    try:
        os.replace(tmp, path)
    except BaseException:
        if old is not None:
            os.replace(old, path)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# -- loading -----------------------------------------------------------------------------------------------------------
def _verify_checksums(folder: Path) -> dict[str, str]:
    """Check the files listed in ``checksums.json`` (when present); returns their verified digests."""
    file = folder / CHECKSUMS_NAME
    if not file.is_file():
        return {}
    try:
        listed = json.loads(file.read_text(encoding="utf-8"))
        algorithm, digests = listed["algorithm"], listed["files"]
        if algorithm != "sha256" or not isinstance(digests, Mapping):
            raise ValueError(f"unsupported algorithm {algorithm!r}")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as error:
        raise ValueError(f"{file} is not a valid checksum list ({error}); restore it or delete it.") from None
    for name, expected in digests.items():
        target = folder / str(name)
        if Path(str(name)).name != name:
            raise ValueError(f"{file} lists {name!r}, which is not a file of the checkpoint folder.")
        if not target.is_file():
            raise FileNotFoundError(f"checkpoint file {target} is listed in {CHECKSUMS_NAME} but missing.")
        if _sha256(target) != expected:
            raise ValueError(
                f"checkpoint file {target} was modified/corrupted: sha256 differs from {CHECKSUMS_NAME}; refusing to "
                "load it. Download or save the checkpoint again."
            )
    return dict(digests)


def _read_config(file: Path) -> dict[str, Any]:
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{file} is not valid JSON: {error}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{file} must hold a JSON object, found {type(raw).__name__}.")
    version = raw.get("format_version")
    if version is None:
        raise ValueError(f"{file} has no 'format_version': it is not a storm checkpoint config.")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ValueError(f"{file}: 'format_version' must be a positive integer, found {version!r}.")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{file} was written by storm {raw.get('storm_version', '?')} in checkpoint format {version}; this storm "
            f"({__version__}) reads format {FORMAT_VERSION} at most. Upgrade storm (pip install -U storm-st)."
        )
    return raw


def _read_vocab(folder: Path, expected_hash: str | None, config: StormConfig) -> GeneVocab | None:
    file = folder / VOCAB_NAME
    if not file.is_file():
        if expected_hash is not None:
            raise FileNotFoundError(f"{file} is missing, but {folder / CONFIG_NAME} says the model has a vocabulary.")
        return None
    vocab = GeneVocab.load(file)
    if expected_hash is not None and vocab.content_hash() != expected_hash:
        raise ValueError(
            f"checkpoint file {file} was modified/corrupted: its content hash differs from 'vocab_hash' in "
            f"{CONFIG_NAME}; refusing to load it."
        )
    if len(vocab) != config.vocab_size:
        raise ValueError(
            f"{file} has {len(vocab)} genes but {folder / CONFIG_NAME} has vocab_size={config.vocab_size}; the "
            "vocabulary belongs to another model. Save the checkpoint again with save_pretrained."
        )
    return vocab


def _read_weights(file: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    try:
        state = load_file(str(file), device="cpu")
        with safe_open(str(file), framework="pt") as handle:
            metadata = handle.metadata() or {}
        aliases = json.loads(metadata.get(_ALIASES_KEY, "{}"))
    except (SafetensorError, OSError, ValueError) as error:
        raise ValueError(f"checkpoint file {file} is not a readable safetensors file: {error}") from None
    for dropped, kept in aliases.items():
        if kept not in state:
            raise ValueError(f"checkpoint file {file} ties {dropped!r} to {kept!r}, which it does not hold.")
        state[dropped] = state[kept]
    return state


def _check_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], folder: Path) -> None:
    """Raise one error naming the file and the first differing keys when the weights do not fit the model."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} (expected {tuple(expected[k].shape)}, found {tuple(state[k].shape)})"
        for k in expected
        if k in state and expected[k].shape != state[k].shape
    ]
    if not (missing or unexpected or shapes):
        return
    problems = []
    for label, keys in (("with other shapes", shapes), ("missing from the file", missing), ("unexpected", unexpected)):
        if keys:
            more = f", ... ({len(keys) - _SHOWN} more)" if len(keys) > _SHOWN else ""
            problems.append(f"{len(keys)} tensor(s) {label}: {', '.join(keys[:_SHOWN])}{more}")
    config = model.config
    raise ValueError(
        f"checkpoint file {folder / WEIGHTS_NAME} does not fit the model described by {folder / CONFIG_NAME} "
        f"(preset {config.preset!r}, dim {config.dim}, backbone {config.backbone!r}, vocab_size {config.vocab_size}): "
        + "; ".join(problems)
        + ". The weights and config.json come from different models; save the checkpoint again with save_pretrained."
    )
