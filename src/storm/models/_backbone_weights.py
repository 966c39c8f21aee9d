"""Backbone weights from a local ``.safetensors`` file, and what keeps a weights file from fitting a module."""

from __future__ import annotations

import torch
from torch import nn

#: Parameter prefixes of classifier heads, which weights files may carry and feature extractors do not use.
CLASSIFIER_PREFIXES = ("head.", "fc.", "classifier.")


def state_mismatch(module: nn.Module, state: dict[str, torch.Tensor]) -> tuple[list[str], list[str], list[str]]:
    """What keeps ``state`` (classifier heads already dropped) from loading into ``module``.

    Returns the missing keys, the unexpected keys and ``"key (file shape) vs (module shape)"`` for mismatched shapes.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state and not k.startswith(CLASSIFIER_PREFIXES)]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}"
        for k, v in state.items()
        if k in expected and v.shape != expected[k].shape
    ]
    return missing, unexpected, shapes


def load_backbone_weights(backbone: nn.Module, path: str) -> None:
    """Load backbone weights from a local ``.safetensors`` file (never a pickle), with errors naming what differs."""
    from pathlib import Path

    from safetensors.torch import load_file

    file = Path(path)
    if file.suffix != ".safetensors" or not file.is_file():
        raise FileNotFoundError(
            f"`backbone_weights={path!r}` must be an existing .safetensors file (convert .pth/.bin weights with "
            "safetensors.torch.save_file); storm never unpickles weight files."
        )
    state = {k: v for k, v in load_file(file).items() if not k.startswith(CLASSIFIER_PREFIXES)}
    missing, unexpected, shapes = state_mismatch(backbone, state)
    if missing or unexpected or shapes:
        raise ValueError(
            f"Backbone weights {file} do not fit the backbone: missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shapes (file vs backbone) {shapes[:5]}. Check that `backbone` names the architecture of these weights."
        )
    backbone.load_state_dict(state, strict=False)
