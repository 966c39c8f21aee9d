"""Hugging Face hub conventions for checkpoints.

Where a checkpoint lives (a local folder, the bundled default, storm's cache, or the hub) and its model card
(``README.md`` with YAML front matter).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._settings import settings
from .._version import __version__

#: The files of a checkpoint folder; the hub download fetches only these.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
VOCAB_NAME = "vocab.tsv"
CARD_NAME = "README.md"
CHECKSUMS_NAME = "checksums.json"
CHECKPOINT_FILES = (CONFIG_NAME, WEIGHTS_NAME, VOCAB_NAME, CARD_NAME, CHECKSUMS_NAME)

_TRUE = {"1", "true", "yes", "on"}
#: A hub repo id: ``name`` or ``org/name`` (letters, digits, ``.``, ``_``, ``-``).
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_REVISION = re.compile(r"^[A-Za-z0-9._/-]+$")


@dataclass(frozen=True)
class Resolved:
    """A checkpoint folder found on this machine, and how it was named."""

    path: Path
    name: str
    revision: str | None
    source: str  # "local", "bundled", "cache" or "hub"


def bundled_default_dir() -> Path:
    """Folder of the default checkpoint shipped inside the package (``storm/models/weights/default``)."""
    return Path(str(importlib.resources.files("storm.models") / "weights" / "default"))


def cache_path(name: str, revision: str | None = None) -> Path:
    """Folder in ``storm.settings.cache_dir`` for a hub checkpoint: ``models/<org>--<name>[@<revision>]``."""
    folder = name.replace("/", "--")
    if revision is not None:
        folder += "@" + revision.replace("/", "--")
    return Path(settings.cache_dir).expanduser() / "models" / folder


def is_complete(folder: Path) -> bool:
    """Whether ``folder`` holds at least ``config.json`` and ``model.safetensors``."""
    return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def offline_reason() -> str | None:
    """Why the hub must not be contacted (``STORM_OFFLINE`` or ``HF_HUB_OFFLINE``), or ``None`` when online.

    Reads the environment first, so that huggingface_hub is imported only when a download may happen.
    """
    for variable in ("STORM_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in _TRUE:
            return f"offline: {variable}={os.environ[variable]}"
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    if getattr(constants, "HF_HUB_OFFLINE", False):
        return "offline: huggingface_hub.constants.HF_HUB_OFFLINE is set"
    return None


def resolve(name_or_path: str | os.PathLike[str], revision: str | None = None) -> Resolved:
    """Find a checkpoint folder: local path, bundled default, storm's cache, then the hub (online only).

    Parameters
    ----------
    name_or_path
        A checkpoint folder, ``"default"`` for the bundled checkpoint, or a hub repo id (``"org/model"``).
    revision
        Hub branch, tag or commit (hub names only).

    Returns
    -------
    The folder, its name and where it was found.

    Raises
    ------
    FileNotFoundError
        When no checkpoint was found; the message lists every place looked at.
    """
    if revision is not None and (not isinstance(revision, str) or not _REVISION.match(revision) or ".." in revision):
        raise ValueError(f"`revision={revision!r}` is not a hub branch, tag or commit name.")
    name = os.fspath(name_or_path) if isinstance(name_or_path, str | os.PathLike) else None
    if not isinstance(name, str):
        raise TypeError(f"`name_or_path` must be a folder path or a hub repo id string, not {name_or_path!r}.")
    explicit_path = isinstance(name_or_path, os.PathLike) or _looks_like_path(name)
    local = Path(name).expanduser()
    if name != "default" or explicit_path:
        if local.is_dir():
            if revision is not None:
                raise ValueError(
                    f"`revision={revision!r}` applies to hub repo ids, but {name!r} is a local folder; drop `revision`."
                )
            return Resolved(local, name, None, "local")
        if local.exists():
            raise ValueError(
                f"{local} is a file; pass the checkpoint folder that holds {CONFIG_NAME} and {WEIGHTS_NAME}."
            )
        if explicit_path or not _REPO_ID.match(name) or "--" in name or ".." in name:
            raise FileNotFoundError(
                f"no checkpoint folder at {local.absolute()} (and {name!r} is not a hub repo id such as 'org/model')."
            )

    if name == "default":
        if revision is not None:
            raise ValueError("`revision` applies to hub repo ids, not to the bundled 'default' checkpoint.")
        bundled = bundled_default_dir()
        if not bundled.is_dir():
            raise FileNotFoundError(
                f"the bundled default storm checkpoint is not present in this installation (looked for {bundled}). "
                "Pass the path of a checkpoint folder instead, e.g. StormModel.from_pretrained('path/to/checkpoint') "
                "(a folder with config.json and model.safetensors written by save_pretrained), or a Hugging Face hub "
                "repo id such as 'org/model'. A local folder named 'default' is loaded with './default'."
            )
        return Resolved(bundled, "default", None, "bundled")

    looked = [f"local folder {local.absolute()} (not found)"]
    cached = cache_path(name, revision)
    if is_complete(cached):
        return Resolved(cached, name, revision, "cache")
    looked.append(f"storm cache {cached} ({'incomplete' if cached.exists() else 'not found'})")
    where = f"{name!r}" + (f" at revision {revision!r}" if revision else "")

    reason = offline_reason()
    if reason is not None:
        looked.append(f"Hugging Face hub repo {name} (skipped, {reason})")
        raise _not_found(
            where,
            looked,
            "Pass the path of a checkpoint folder, put the checkpoint in the cache folder above, or allow downloads "
            "by unsetting STORM_OFFLINE / HF_HUB_OFFLINE.",
        )
    try:
        import huggingface_hub
    except ImportError:
        looked.append(f"Hugging Face hub repo {name} (skipped: huggingface_hub is not installed)")
        raise _not_found(
            where,
            looked,
            "Install huggingface_hub (pip install huggingface_hub) to download it, or pass a checkpoint folder.",
        ) from None
    cached.parent.mkdir(parents=True, exist_ok=True)
    try:
        huggingface_hub.snapshot_download(
            repo_id=name,
            revision=revision,
            allow_patterns=list(CHECKPOINT_FILES),
            local_dir=cached,
            library_name="storm",
            library_version=__version__,
        )
    except OSError as error:
        looked.append(f"Hugging Face hub repo {name} (download failed: {error})")
        raise _not_found(
            where,
            looked,
            "Check the repo id, revision, network and access token (HF_TOKEN), or pass a checkpoint folder.",
        ) from error
    if not is_complete(cached):
        missing = [f for f in (CONFIG_NAME, WEIGHTS_NAME) if not (cached / f).is_file()]
        raise FileNotFoundError(
            f"the Hugging Face hub repo {where} has no {' or '.join(missing)}: it is not a storm checkpoint "
            f"(downloaded to {cached})."
        )
    return Resolved(cached, name, revision, "hub")


def _looks_like_path(name: str) -> bool:
    """Strings that are meant as filesystem paths, never as hub repo ids."""
    return (
        os.path.isabs(name)
        or name.startswith(("./", "../", "~", ".\\", "..\\"))
        or name in (".", "..")
        or "\\" in name
        or name.count("/") > 1
    )


# -- model card ----------------------------------------------------------------------------------------------------
_TAGS = ["storm", "spatial-transcriptomics", "histology", "pathology", "pytorch", "safetensors"]
_TITLES = {
    "data": "Training data",
    "steps": "Training steps",
    "time": "Training time",
    "hardware": "Hardware",
    "losses": "Losses",
    "evaluation": "Evaluation",
}


def render_card(config: Mapping[str, Any], *, num_parameters: int, vocab_size: int, **card: Any) -> str:
    """The ``README.md`` model card: YAML front matter for the hub, a summary table and one section per card field.

    Parameters
    ----------
    config
        The ``config.json`` contents.
    num_parameters
        The model's parameter count.
    vocab_size
        Genes in the vocabulary.
    **card
        ``name`` (the title), ``description`` (an opening paragraph), ``license`` and ``tags`` (front matter), and
        any other fields, rendered as sections: scalars as text, lists as bullets, mappings and lists of mappings as
        tables.

    Returns
    -------
    The markdown text.
    """
    card = dict(card)
    title = card.pop("name", None) or f"storm {config.get('preset', 'custom')} model"
    description = card.pop("description", None)
    license_ = card.pop("license", None)
    extra_tags = card.pop("tags", None) or []
    tags = list(dict.fromkeys([*_TAGS, *([extra_tags] if isinstance(extra_tags, str) else extra_tags)]))
    # JSON strings are valid YAML scalars, so every value is quoted safely.
    front = ["---", "library_name: storm"]
    if license_ is not None:
        front.append(f"license: {json.dumps(str(license_))}")
    front += ["tags:", *(f"- {json.dumps(str(tag))}" for tag in tags), "---"]
    lines = [*front, "", f"# {_cell(title)}", ""]
    if description:
        lines += [str(description), ""]
    summary = {
        "Preset": config.get("preset"),
        "Parameters": f"{num_parameters:,} ({num_parameters / 1e6:.1f}M)",
        "Vocabulary": f"{vocab_size:,} genes"
        + (f" (content hash {config['vocab_hash'][:16]})" if config.get("vocab_hash") else ""),
        "Backbone": config.get("backbone"),
        "Width / heads": f"{config.get('dim')} / {config.get('heads')}",
        "Layers (image / gene / fusion / decoder)": " / ".join(
            str(config.get(k)) for k in ("image_layers", "gene_layers", "fusion_layers", "decoder_layers")
        ),
        "Niche size": config.get("niche_size"),
        "storm version": config.get("storm_version"),
        "Checkpoint format": config.get("format_version"),
    }
    lines += ["## Model", "", *_render(summary), ""]
    for key, value in card.items():
        lines += [f"## {_TITLES.get(key, str(key).replace('_', ' ').capitalize())}", "", *_render(value), ""]
    lines += [
        "## Usage",
        "",
        "```python",
        "from storm.models import StormModel",
        "",
        'model = StormModel.from_pretrained("path/to/this/folder")  # or the hub repo id',
        "```",
        "",
        "Files: `config.json` (hyper-parameters, storm version), `model.safetensors` (weights), `vocab.tsv` (gene "
        "vocabulary), `checksums.json` (sha256 of each file, verified on load).",
        "",
    ]
    return "\n".join(lines)


def _render(value: Any) -> list[str]:
    """Markdown lines for one card value."""
    if isinstance(value, Mapping):
        if value and all(isinstance(v, Mapping) for v in value.values()):
            columns = list(dict.fromkeys(k for row in value.values() for k in row))
            return _table(["", *columns], [[key, *(row.get(c, "") for c in columns)] for key, row in value.items()])
        return _table(["", ""], [[k, v] for k, v in value.items()])
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if value and all(isinstance(v, Mapping) for v in value):
            columns = list(dict.fromkeys(k for row in value for k in row))
            return _table(columns, [[row.get(c, "") for c in columns] for row in value])
        return [f"- {_cell(v)}" for v in value]
    return [_cell(value)]


def _table(header: list[Any], rows: list[list[Any]]) -> list[str]:
    return [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(_cell(v) for v in row) + " |" for row in rows),
    ]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.6g}"
    elif isinstance(value, Mapping | list | tuple):
        text = json.dumps(value, default=str)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", "<br>")


def _not_found(where: str, looked: list[str], advice: str) -> FileNotFoundError:
    """The error listing every place a checkpoint was looked for."""
    places = "".join(f"  - {place}\n" for place in looked)
    return FileNotFoundError(f"could not find the storm checkpoint {where}. Looked in:\n{places}{advice}")
