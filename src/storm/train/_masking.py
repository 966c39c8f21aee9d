"""Random masks for masked gene and masked image-token modelling, drawn from an explicit generator."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch


def modality_valid(batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """Which spots of a niche batch carry an image and which carry expression, both (B, S) bool.

    A spot has a modality when the batch has that input (``tiles``, ``images`` or ``image_features``; ``expression``), the spot is
    valid (``spot_mask``) and its per-modality mask (``image_mask`` / ``expression_mask``) allows it.
    """
    offsets = batch["offsets_um"]
    b, s = offsets.shape[:2]
    spot_mask = batch.get("spot_mask")
    if spot_mask is None:
        spot_mask = torch.ones(b, s, dtype=torch.bool, device=offsets.device)
    spot_mask = spot_mask.bool()
    nothing = torch.zeros_like(spot_mask)
    has_images = any(batch.get(k) is not None for k in ("images", "tiles", "features", "image_features"))
    image = spot_mask if batch.get("image_mask") is None else spot_mask & batch["image_mask"].bool()
    expression = spot_mask if batch.get("expression_mask") is None else spot_mask & batch["expression_mask"].bool()
    return (image if has_images else nothing), (expression if batch.get("expression") is not None else nothing)


def spot_gene_index(gene_index: torch.Tensor, b: int, s: int) -> torch.Tensor:
    """Vocabulary index of every spot's genes, (B, S, G), from a shared (G,), per-niche (B, G) or per-spot index."""
    if gene_index.ndim == 1:
        return gene_index.expand(b, s, -1)
    if gene_index.ndim == 2 and gene_index.shape[0] == b * s:
        return gene_index.view(b, s, -1)
    if gene_index.ndim == 2 and gene_index.shape[0] == b:
        return gene_index[:, None].expand(b, s, -1)
    if gene_index.ndim == 3 and gene_index.shape[:2] == (b, s):
        return gene_index
    raise ValueError(
        f"`gene_index` has shape {tuple(gene_index.shape)}; expected (G,), (B, G), (B, S, G) or (B * S, G) with "
        f"B={b}, S={s}."
    )


def uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) draws of ``shape`` from ``generator`` (on its own device, CPU without one), moved to ``device``."""
    source = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(shape, generator=generator, device=source).to(device)


def _choose(eligible: torch.Tensor, count: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Mask ``count`` (…,) random entries among the ``eligible`` (…, N) ones of each row."""
    scores = uniform(eligible.shape, generator, eligible.device)
    scores = torch.where(eligible, scores, torch.full_like(scores, 2.0))
    ordered = scores.sort(dim=-1).values
    threshold = ordered.gather(-1, (count - 1).clamp(min=0)[..., None])
    return eligible & (scores <= threshold) & (count > 0)[..., None]


def _count(n: torch.Tensor, ratio: float, upper: torch.Tensor) -> torch.Tensor:
    """round(ratio * n), at least one when ``n`` > 0 and ``ratio`` > 0, at most ``upper``."""
    k = torch.round(n.float() * ratio).long()
    if ratio > 0:
        k = torch.where(n > 0, k.clamp(min=1), k)
    return torch.minimum(k, upper)


def make_masks(
    batch: Mapping[str, Any],
    num_tokens: int | None = None,
    *,
    gene_ratio: float = 0.15,
    token_ratio: float = 0.5,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor | None]:
    """Draw the masks of masked gene and masked image-token modelling for a niche batch.

    Parameters
    ----------
    batch
        A niche batch with the inputs of :meth:`~storm.models.StormModel.forward` (``offsets_um``, ``expression``,
        ``gene_index``, ``images`` or ``image_features``, and the optional ``image_mask``, ``expression_mask``,
        ``spot_mask``).
    num_tokens
        T, the backbone feature tokens per tile. Taken from ``image_features`` of shape (B, S, T, C) when omitted;
        required with raw ``images`` (``model.image.backbone_tokens`` tells it).
    gene_ratio
        Fraction of each expressing spot's measured genes (those in the vocabulary, index ≥ 0) to hide; at least one
        when the ratio is positive.
    token_ratio
        Fraction of each imaged spot's T tokens to hide; at least one and at most T - 1 (nothing when T = 1).
    generator
        Source of randomness (CPU or on the batch's device); the same seed gives the same masks.

    Returns
    -------
    ``{"value_mask": (B, S, G) bool, "image_token_mask": (B, S, T) bool}``, each ``None`` when the batch lacks that
    modality, on the batch's device and ready to pass to the model.
    """
    for name, ratio in (("gene_ratio", gene_ratio), ("token_ratio", token_ratio)):
        if not 0.0 <= ratio <= 1.0:
            raise ValueError(f"`{name}` must lie in [0, 1], got {ratio!r}.")
    offsets = batch["offsets_um"]
    b, s = offsets.shape[:2]
    image_valid, expression_valid = modality_valid(batch)
    value_mask = token_mask = None
    if batch.get("expression") is not None:
        if batch.get("gene_index") is None:
            raise ValueError("`gene_index` is needed with `expression` to know which genes are measured.")
        eligible = (spot_gene_index(batch["gene_index"], b, s) >= 0) & expression_valid[..., None]
        n = eligible.sum(-1)
        value_mask = _choose(eligible, _count(n, gene_ratio, n), generator)
    if batch.get("images") is not None or batch.get("image_features") is not None:
        if num_tokens is None:
            features = batch.get("image_features")
            if features is None:
                raise ValueError("Pass `num_tokens` (backbone tokens per tile) when the batch has raw `images`.")
            num_tokens = features.shape[2] if features.ndim == 4 else 1
        if num_tokens < 1:
            raise ValueError(f"`num_tokens` must be at least 1, got {num_tokens!r}.")
        eligible = image_valid[..., None].expand(b, s, num_tokens)
        n = eligible.sum(-1)
        token_mask = _choose(eligible, _count(n, token_ratio, (n - 1).clamp(min=0)), generator)
    return {"value_mask": value_mask, "image_token_mask": token_mask}
