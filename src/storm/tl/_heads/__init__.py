"""Heads on frozen storm embeddings, in one place: fitting, applying, input features, torch modules, checkpoints.

* :func:`fit_head` / :func:`apply_head`: few-label spot heads (expression genes or an ``obs`` column);
* :func:`fit_risk` / :func:`apply_risk`: a slide-level survival head (attention-MIL, Cox loss);
* ``_head``: :class:`StormHead`, the trained head with its description; ``_inputs``: what a head reads from a slide;
  ``_fitting``: the cross-validated fits; ``_modules``: the ``torch.nn`` modules; ``_checkpoint``: ``head.json`` +
  ``head.safetensors``.

Importing this package does not import torch.
"""

from ._head import StormHead
from ._risk import apply_risk, fit_risk
from ._spot import apply_head, fit_head

__all__ = ["StormHead", "apply_head", "apply_risk", "fit_head", "fit_risk"]
