"""The one input contract of the model: a batch of niches, with each distinct tile once."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import torch

#: Fields of :class:`NicheBatch` that are model inputs (the keyword arguments of ``StormModel.forward``).
MODEL_INPUTS = (
    "offsets_um",
    "spot_mask",
    "image_mask",
    "tiles",
    "features",
    "tile_index",
    "expression",
    "gene_index",
    "gene_mean",
    "gene_std",
    "gene_components",
    "component_scale",
    "expression_mask",
)


@dataclass
class NicheBatch(Mapping):
    """B niches of S = K + 1 spots (centre first), as the model and the objectives take them.

    Neighbouring niches share spots, so each distinct tile is stored (and run through the backbone) once: ``tiles``
    holds the N distinct tiles and ``tile_index`` says which one fills each niche slot. The batch is a read-only
    mapping of its non-``None`` fields, so ``model(**batch)`` and ``batch.get("tiles")`` work.

    Attributes
    ----------
    offsets_um
        (B, S, 2) float32 offsets ``(dx, dy)`` of each spot from its niche's centre, in µm.
    spot_mask
        (B, S) bool: the slot holds a spot (False pads slides with fewer spots than a niche).
    image_mask
        (B, S) bool: the spot has a tile.
    expression_mask
        (B, S) bool: the spot has expression.
    tiles
        (N, H, W, 3) uint8 distinct tiles of the batch, or ``None`` without images.
    features
        (N, C) float32 pathology-encoder features of the distinct spots of the batch (for a model whose image branch
        is a frozen encoder, ``config.image_encoder``), instead of ``tiles``; ``tile_index`` points into them.
    tile_index
        (B, S) int64 row of ``tiles`` (or ``features``) for each slot (-1: no tile), or ``None``.
    expression
        (B, S, G) float32 log1p(CP10k) expression over the slide's G genes found in the vocabulary, or ``None``.
    gene_index
        (G,) int64 vocabulary index of each expression column, or ``None``.
    gene_mean, gene_std
        (G,) float32 mean and standard deviation of each column over the slide's spots with expression (the
        per-slide standardisation of the ``"panel"`` gene encoding), or ``None``.
    gene_components, component_scale
        (G, r) principal axes of the slide's standardised expression and (r,) their whitening factors (the
        per-slide whitening of the ``"panel"`` gene encoding), or ``None``.
    views
        (V, n, H, W, 3) uint8 views of ``n`` crops drawn anywhere over the slide's tissue, for the image branch's
        self-supervised objective (``image_views``; not a model input), or ``None``.
    index
        (B,) int64 global spot index of each centre (not a model input).
    slide
        Corpus slide number of the batch (one slide per batch; not a model input).
    """

    offsets_um: torch.Tensor
    spot_mask: torch.Tensor
    image_mask: torch.Tensor
    expression_mask: torch.Tensor
    tiles: torch.Tensor | None = None
    features: torch.Tensor | None = None
    tile_index: torch.Tensor | None = None
    expression: torch.Tensor | None = None
    gene_index: torch.Tensor | None = None
    gene_mean: torch.Tensor | None = None
    gene_std: torch.Tensor | None = None
    gene_components: torch.Tensor | None = None
    component_scale: torch.Tensor | None = None
    views: torch.Tensor | None = None
    index: torch.Tensor | None = None
    slide: int = -1

    def __getitem__(self, key: str) -> torch.Tensor:
        if key not in MODEL_INPUTS or getattr(self, key) is None:
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return (k for k in MODEL_INPUTS if getattr(self, k) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    @property
    def n_niches(self) -> int:
        """Niches B in the batch."""
        return int(self.offsets_um.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> NicheBatch:
        """The batch on ``device`` (pinned host memory makes ``non_blocking`` copies asynchronous)."""
        moved = {
            f.name: v.to(device, non_blocking=non_blocking)
            for f in fields(self)
            if isinstance(v := getattr(self, f.name), torch.Tensor)
        }
        return replace(self, **moved)

    def pin_memory(self) -> NicheBatch:
        """The batch in pinned host memory (called by ``DataLoader(pin_memory=True)``)."""
        pinned = {f.name: v.pin_memory() for f in fields(self) if isinstance(v := getattr(self, f.name), torch.Tensor)}
        return replace(self, **pinned)

    def select(self, modality: str) -> NicheBatch:
        """The batch with only the inputs of ``modality`` (``"image"``, ``"expression"`` or ``"both"``)."""
        drop: dict[str, Any] = {}
        if modality == "image":
            genes = ("expression", "gene_index", "gene_mean", "gene_std", "gene_components", "component_scale")
            drop = dict.fromkeys(genes)
        elif modality == "expression":
            drop = {"tiles": None, "features": None, "tile_index": None}
        return replace(self, **drop)
