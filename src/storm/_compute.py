"""Device and precision choices shared by inference and training (imports torch only when called)."""

from __future__ import annotations

import platform
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def torch_device(name: str) -> torch.device:
    """``storm.settings.device`` as a torch device: ``"auto"`` is CUDA, else MPS, else CPU."""
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    return torch.device(name)


def autocast(precision: str, device: torch.device):
    """Autocast context for ``precision``: ``"auto"`` is bf16 (fp16 without bf16 support) on CUDA, fp32 elsewhere."""
    import torch

    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return nullcontext()
    if precision == "auto":
        precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux, else :func:`platform.processor`)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
