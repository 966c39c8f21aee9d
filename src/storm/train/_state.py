"""Resume points: model weights (safetensors) plus optimiser, schedule, sampler and RNG state (tensor-only pickle-free)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

_STATE = "trainer_state.pt"


def save_resume_point(folder: Path, model: Any, state: dict[str, Any]) -> Path:
    """Write ``folder`` atomically: the model checkpoint and ``trainer_state.pt`` (loaded with ``weights_only=True``)."""
    tmp = folder.with_name(f".{folder.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    torch.save(state, tmp / _STATE)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def latest_resume_point(checkpoints: Path) -> Path | None:
    """The resume point with the highest step under ``checkpoints``, or ``None``."""
    if not checkpoints.is_dir():
        return None
    points = sorted(p for p in checkpoints.glob("step_*") if (p / _STATE).is_file())
    return points[-1] if points else None


def load_state(folder: Path) -> dict[str, Any]:
    """The trainer state of a resume point; never unpickles arbitrary objects."""
    return torch.load(folder / _STATE, map_location="cpu", weights_only=True)


def rng_state(generator: np.random.Generator) -> dict[str, Any]:
    """Torch and numpy RNG states as plain data."""
    out: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": _plain(generator.bit_generator.state)}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def restore_rng(state: dict[str, Any], generator: np.random.Generator) -> None:
    """Inverse of :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    generator.bit_generator.state = state["numpy"]
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    return value
