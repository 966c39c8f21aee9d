"""``StormHead``: a head trained on storm embeddings, with what it predicts and the model whose embeddings it needs."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from ...models import StormModel


class StormHead:
    """A trained head (from :func:`storm.tl.fit_head` or :func:`storm.tl.fit_risk`) and its description.

    Save it with :meth:`save` (a folder with ``head.json`` and ``head.safetensors``; put it beside or inside the model's
    folder) and load it with :meth:`load`; every tool that applies a head also takes the folder path.

    Attributes
    ----------
    module
        The ``torch.nn.Module`` (:class:`~storm.tl.SpotHead` or :class:`~storm.tl.AttentionMILHead`).
    meta
        Its description: ``task``, ``target``, ``outputs``, ``modality``, ``model`` (name and weights hash of the
        storm model it was trained on), ``metrics`` and training parameters.

    Examples
    --------
    >>> import storm as st
    >>> head = st.tl.StormHead.load("my_head")  # doctest: +SKIP
    >>> head.task, head.outputs[:2]  # doctest: +SKIP
    ('classification', ['invasive cancer', 'stroma'])
    """

    def __init__(self, module: torch.nn.Module, meta: dict[str, Any]) -> None:
        self.module = module.eval()
        self.meta = meta

    @property
    def task(self) -> str:
        """``"regression"``, ``"classification"`` or ``"risk"``."""
        return self.meta["task"]

    @property
    def target(self) -> str:
        """``"expression"``, the ``obs`` column it was trained on, or ``"survival"``."""
        return self.meta["target"]

    @property
    def outputs(self) -> list[str]:
        """Genes (expression regression), classes (classification) or the target name."""
        return list(self.meta["outputs"])

    @property
    def modality(self) -> str:
        """Modalities of the embeddings it was trained on (``"image"``, ``"expression"`` or ``"both"``)."""
        return self.meta["modality"]

    @property
    def metrics(self) -> dict[str, Any]:
        """Cross-validated scores recorded at training time."""
        return dict(self.meta.get("metrics", {}))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the head to the folder ``path`` (atomically; an existing head there is replaced).

        Examples
        --------
        >>> head.save("heads/her2st_labels")  # doctest: +SKIP
        """
        from ._checkpoint import save_head

        return save_head(self.module, path, self.meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StormHead:
        """Read a head folder written by :meth:`save`.

        Examples
        --------
        >>> head = StormHead.load("heads/her2st_labels")  # doctest: +SKIP
        """
        from ._checkpoint import load_head

        module, meta = load_head(path)
        return cls(module, meta)

    def __repr__(self) -> str:
        shown = ", ".join(self.outputs[:4]) + (", ..." if len(self.outputs) > 4 else "")
        return (
            f"StormHead({self.task} of {self.target!r}: {len(self.outputs)} outputs [{shown}], "
            f"{self.modality} embeddings of model {self.meta['model']['model']!r})"
        )


def as_head(head: StormHead | str | os.PathLike[str]) -> StormHead:
    """A :class:`StormHead` from a head or the path of a saved one."""
    if isinstance(head, StormHead):
        return head
    if isinstance(head, str | os.PathLike):
        return StormHead.load(head)
    raise TypeError(f"`head` must be a StormHead or the folder of a saved head, got {type(head).__name__}.")


def model_for_head(head: StormHead, model: StormModel | str | Path | None) -> StormModel:
    """The storm model to apply ``head`` with: ``model``, or by default the one it was trained on; hashes must match."""
    from .._model_arg import get_model

    record = head.meta["model"]
    if model is None:
        name = record["model"]
        if name in ("in-memory model", "unknown"):
            raise ValueError("this head was trained on embeddings of an unsaved model; pass that model as `model=`.")
        model = None if name == "default" else name
    net = get_model(model)
    sha = (net.checkpoint_info or {}).get("sha256")
    if record.get("model_sha256") and sha and sha != record["model_sha256"]:
        raise ValueError(
            f"this head was trained on embeddings of model {record['model']!r} (weights sha256 "
            f"{record['model_sha256'][:12]}...), not of the model passed (sha256 {sha[:12]}...); pass the model it was "
            "trained with, or fit a new head on this model (st.tl.fit_head)."
        )
    check_encoder(record, net)
    return net


def check_encoder(record: dict, net: StormModel) -> None:
    """Refuse a model whose image branch reads another pathology encoder (or other weights) than ``record`` names.

    ``record`` is what :func:`~storm.tl._model_arg.model_record` wrote when the head (or decoder output) was made.
    """
    want = (record.get("image_encoder"), record.get("image_encoder_sha256"))
    have = (net.config.image_encoder, net.config.image_encoder_sha256)
    if want[0] != have[0] or (want[1] and have[1] and want[1] != have[1]):
        raise ValueError(
            f"this head was trained on a model reading {_branch(*want)}, but the model passed reads {_branch(*have)}; pass "
            "a model on the same encoder and weights, or fit a new head on this one (st.tl.fit_head)."
        )


def _branch(encoder: str | None, sha256: str | None) -> str:
    return "storm's own image branch" if encoder is None else f"{encoder!r} features (weights {str(sha256)[:12]}…)"
