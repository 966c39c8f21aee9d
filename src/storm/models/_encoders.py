"""Shallow modality-specific encoders: the image branch (timm backbone + transformer) and the gene branch."""

from __future__ import annotations

import math

import torch
from torch import nn

from ._backbone_weights import load_backbone_weights
from ._config import StormConfig
from ._layers import Block, key_padding_bias


def grid_sincos(h: int, w: int, dim: int, device: torch.device) -> torch.Tensor:
    """Fixed 2-D sine-cosine encoding of an ``h`` x ``w`` token grid, (h * w, dim)."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / max(quarter, 1)))
    yy, xx = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    parts = [f(c.reshape(-1, 1) * omega) for c in (yy, xx) for f in (torch.sin, torch.cos)]
    enc = torch.cat(parts, dim=1)
    return torch.nn.functional.pad(enc, (0, dim - enc.shape[1]))


class ImageEncoder(nn.Module):
    """A timm backbone (any name) turns a tile into feature tokens; shallow transformer layers make the spot token.

    Precomputed backbone features ``(N, C)`` or ``(N, T, C)`` can replace the tiles. With ``config.image_encoder`` (a
    frozen pathology encoder such as UNI) there is no backbone: the branch reads that encoder's ``(N, C)`` features.
    """

    def __init__(self, config: StormConfig) -> None:
        super().__init__()
        self.encoder_name = config.image_encoder
        if config.image_encoder is not None:  # a frozen pathology encoder's cached features, not tiles
            self.backbone = None
            self.feature_dim = int(config.image_encoder_dim)
        else:
            import timm

            self.backbone = timm.create_model(
                config.backbone, pretrained=config.backbone_pretrained, num_classes=0, global_pool=""
            )
            if config.backbone_weights:
                load_backbone_weights(self.backbone, config.backbone_weights)
            self.feature_dim = int(self.backbone.num_features)
            data = timm.data.resolve_data_config({}, model=self.backbone)
            self.register_buffer("mean", torch.tensor(data["mean"]).view(1, 3, 1, 1) * 255.0, persistent=False)
            self.register_buffer("std", torch.tensor(data["std"]).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.prefix_tokens = int(getattr(self.backbone, "num_prefix_tokens", 0))
        dim = config.dim
        self.proj = nn.Linear(self.feature_dim, dim)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            Block(dim, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.image_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.token_head = nn.Linear(dim, self.feature_dim)
        nn.init.trunc_normal_(self.cls, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def backbone_tokens(self, images: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Backbone feature tokens (N, T, C) and their grid shape from tiles.

        ``images``: (N, H, W, 3) uint8 RGB as produced by :class:`storm.pp.TileSet`, or (N, 3, H, W) floats already
        normalised for the backbone; with a pathology encoder (``config.image_encoder``), ``(N, C)`` float features.
        """
        if self.backbone is None:
            if images.dtype == torch.uint8 or images.ndim != 2:
                raise ValueError(
                    f"This model reads {self.encoder_name!r} features, not tiles: build its niches with "
                    "Corpus.for_model (the storm tools do), which computes or reads them."
                )
            return images[:, None].to(self.proj.weight.dtype), (1, 1)
        if images.dtype == torch.uint8:
            images = (images.permute(0, 3, 1, 2).float() - self.mean) / self.std
        feats = self.backbone.forward_features(images.to(self.proj.weight.dtype))
        if feats.ndim == 4:
            n, c, h, w = feats.shape
            return feats.flatten(2).transpose(1, 2), (h, w)
        tokens = feats[:, self.prefix_tokens :]
        side = math.isqrt(tokens.shape[1])
        grid = (side, side) if side * side == tokens.shape[1] else (1, tokens.shape[1])
        return tokens, grid

    def forward(
        self, features: torch.Tensor, grid: tuple[int, int] | None = None, token_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Spot tokens (N, dim) and reconstructed backbone features of every token (N, T, C).

        ``features``: (N, T, C) backbone tokens or (N, C) pooled features; ``token_mask`` (N, T) hides tokens (their
        features are replaced by a learned mask token) for masked image modelling.
        """
        if features.ndim == 2:
            features = features[:, None]
        n, t, _ = features.shape
        x = self.proj(features.to(self.proj.weight.dtype))
        if token_mask is not None:
            x = torch.where(token_mask[..., None], self.mask_token.to(x.dtype), x)
        if grid is None:
            side = math.isqrt(t)
            grid = (side, side) if side * side == t else (1, t)
        h, w = grid
        x = x + grid_sincos(h, w, x.shape[-1], x.device).to(x.dtype)
        x = torch.cat([self.cls.expand(n, -1, -1).to(x.dtype), x], dim=1)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        return x[:, 0], self.token_head(x[:, 1:])


#: Smallest standard deviation a gene is divided by (log1p units): genes (almost) constant on a slide stay near 0.
GENE_STD_FLOOR = 0.05


def whiten(z: torch.Tensor, components: torch.Tensor | None, scale: torch.Tensor | None) -> torch.Tensor:
    """Standardised values (N, G) within the slide's principal axes, rescaled; still over the same genes.

    ``components`` (G, r) are the axes and ``scale`` (r,) their weights (``residual_axes`` or ``whitening_axes``);
    ``z`` is returned unchanged without axes.

    Examples
    --------
    >>> axes = torch.eye(3)[:, :1]  # the first gene is the only axis
    >>> whiten(torch.ones(2, 3), axes, torch.tensor([2.0])).tolist()
    [[2.0, 0.0, 0.0], [2.0, 0.0, 0.0]]
    """
    if components is None or scale is None or components.shape[-1] == 0:
        return z
    return ((z @ components.float()) * scale.float()) @ components.float().T


class GeneEncoder(nn.Module):
    """Panel-agnostic gene branch: one token per spot from its expression over the vocabulary genes of the panel.

    Two encodings (``config.gene_encoding``):

    * ``"panel"``: every known gene of the panel counts. Each gene's log1p expression is standardised
      with the slide's mean and standard deviation of that gene (``gene_mean``, ``gene_std``; as PCA on scaled data,
      or novae), clipped to ``[-Z_CLIP, Z_CLIP]``, optionally whitened within the slide's principal axes
      (``components``; ``StormConfig.gene_components``), and the spot is the sum of its genes' vocabulary embeddings weighted by
      those values (divided by the square root of the number of known genes), refined by ``gene_layers`` residual MLPs.
      Markers weigh as much as housekeeping genes, whatever their level, and the token is the same for any order of
      the panel.
    * ``"top"`` (the default, and the shipped checkpoint): of the known genes, the ``max_genes`` with the highest values become
      tokens (identity + value embeddings, ties broken by vocabulary index), pooled by a shallow transformer. The most
      expressed genes crowd out the markers that separate regions.

    Genes absent from the vocabulary (index -1) are ignored. Masked values (``value_mask``, masked gene modelling) are
    hidden: the slide mean (panel) or a learned mask vector (top) takes their place; the gene identity stays.
    """

    #: Standardised values are clipped to this many standard deviations (as ``scanpy.pp.scale(max_value=10)``).
    Z_CLIP = 10.0

    def __init__(self, config: StormConfig, vocab_size: int) -> None:
        super().__init__()
        dim = config.dim
        self.encoding = config.gene_encoding
        self.vocab_size = vocab_size
        self.max_genes = config.max_genes
        self.gene_embedding = nn.Embedding(max(vocab_size, 1), dim)
        self.norm = nn.LayerNorm(dim)
        if self.encoding == "panel":
            self.panel_norm = nn.LayerNorm(dim)
            self.mlps = nn.ModuleList(
                _ResidualMLP(dim, config.mlp_ratio, config.dropout) for _ in range(config.gene_layers)
            )
        else:
            self.value_embedding = nn.Parameter(torch.zeros(config.value_bins, dim))
            self.mask_value = nn.Parameter(torch.zeros(dim))
            self.cls = nn.Parameter(torch.zeros(1, 1, dim))
            self.blocks = nn.ModuleList(
                Block(dim, config.heads, config.mlp_ratio, config.dropout) for _ in range(config.gene_layers)
            )
            for p in (self.value_embedding, self.mask_value, self.cls):
                nn.init.trunc_normal_(p, std=0.02)
        nn.init.trunc_normal_(self.gene_embedding.weight, std=0.02)

    def embed_values(self, values: torch.Tensor) -> torch.Tensor:
        """(…,) log1p values -> (…, dim) embeddings (``"top"`` encoding)."""
        bins = self.value_embedding.shape[0]
        pos = values.float().clamp(0.0, 10.0) / 10.0 * (bins - 1)
        lo = pos.floor().long().clamp(max=bins - 1)
        hi = (lo + 1).clamp(max=bins - 1)
        frac = (pos - lo.float())[..., None].to(self.value_embedding.dtype)
        return self.value_embedding[lo] * (1 - frac) + self.value_embedding[hi] * frac

    def forward(
        self,
        values: torch.Tensor,
        gene_index: torch.Tensor,
        value_mask: torch.Tensor | None = None,
        *,
        gene_mean: torch.Tensor | None = None,
        gene_std: torch.Tensor | None = None,
        components: torch.Tensor | None = None,
        component_scale: torch.Tensor | None = None,
        valid: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Spot tokens (N, dim) from values (N, G), vocabulary indices (N, G) or (G,) (-1 = unknown).

        ``value_mask`` (N, G) hides values for masked gene modelling. ``gene_mean`` and ``gene_std`` (G,) are the
        slide's statistics of each column (``"panel"`` encoding); without them, those of the rows ``valid`` (N,) of
        this call are used. ``components`` (G, r) and ``component_scale`` (r,) whiten the standardised values within
        the slide's principal axes (see ``StormConfig.gene_components``).
        """
        if self.encoding == "panel":
            z = self.standardise(values, gene_index, value_mask, gene_mean, gene_std, valid)
            return self._panel(whiten(z, components, component_scale), gene_index)
        return self._top(values, gene_index, value_mask)

    def standardise(
        self,
        values: torch.Tensor,
        gene_index: torch.Tensor,
        value_mask: torch.Tensor | None,
        mean: torch.Tensor | None,
        std: torch.Tensor | None,
        valid: torch.Tensor | None,
    ) -> torch.Tensor:
        """(N, G) values standardised per gene and clipped; unknown genes and masked values are 0 (the mean).

        Without ``mean`` and ``std``, those of the ``valid`` rows' values not hidden by ``value_mask`` are used, so that
        hidden values cannot leak through the statistics.
        """
        x = values.float()
        if mean is None or std is None:
            seen = torch.ones_like(x, dtype=torch.bool)
            if valid is not None and bool(valid.any()):
                seen = seen & valid[:, None]
            if value_mask is not None:
                seen = seen & ~value_mask
            weight = seen.float()
            count = weight.sum(0).clamp(min=1)
            mean = (x * weight).sum(0) / count
            std = ((x - mean).pow(2) * weight).sum(0).div(count).sqrt()
        z = ((x - mean.float()) / std.float().clamp(min=GENE_STD_FLOOR)).clamp(-self.Z_CLIP, self.Z_CLIP)
        known = gene_index >= 0
        z = torch.where(known, z, torch.zeros_like(z))
        if value_mask is not None:
            z = torch.where(value_mask, torch.zeros_like(z), z)
        return z

    def _panel(self, z: torch.Tensor, gene_index: torch.Tensor) -> torch.Tensor:
        known = gene_index >= 0
        weight = self.gene_embedding.weight
        if gene_index.ndim == 1:
            h = z @ weight[gene_index.clamp(min=0)].float()
            n_known = known.sum().clamp(min=1).float()
        else:
            h = torch.einsum("ng,ngd->nd", z, weight[gene_index.clamp(min=0)].float())
            n_known = known.sum(1, keepdim=True).clamp(min=1).float()
        x = self.panel_norm((h / n_known.sqrt()).to(weight.dtype))
        for mlp in self.mlps:
            x = mlp(x)
        return self.norm(x)

    def _top(self, values: torch.Tensor, gene_index: torch.Tensor, value_mask: torch.Tensor | None) -> torch.Tensor:
        n, g = values.shape
        index = gene_index.expand(n, g) if gene_index.ndim == 1 else gene_index
        known = index >= 0
        score = torch.where(known, values.float(), torch.full_like(values, -1.0, dtype=torch.float32))
        if value_mask is not None:
            score = torch.where(value_mask, torch.zeros_like(score), score)
        top = _top_genes(score, gene_index, min(self.max_genes, g))
        idx = index.gather(1, top)
        vals = values.gather(1, top)
        valid = idx >= 0
        tokens = self.gene_embedding(idx.clamp(min=0)) + self.embed_values(vals)
        if value_mask is not None:
            hidden = value_mask.gather(1, top)
            tokens = torch.where(hidden[..., None], self.gene_embedding(idx.clamp(min=0)) + self.mask_value, tokens)
        x = torch.cat([self.cls.expand(n, -1, -1).to(tokens.dtype), tokens], dim=1)
        valid = torch.cat([torch.ones(n, 1, dtype=torch.bool, device=valid.device), valid], dim=1)
        bias = key_padding_bias(valid)
        for block in self.blocks:
            x = block(x, bias=bias)
        return self.norm(x[:, 0])


class _ResidualMLP(nn.Module):
    def __init__(self, dim: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(self.norm(x))


def _top_genes(score: torch.Tensor, gene_index: torch.Tensor, k: int) -> torch.Tensor:
    """Columns of the ``k`` highest ``score`` per row, highest first, ties broken by vocabulary index then column.

    Counts are integers, so many genes tie at the cut-off; ``topk`` alone picks among them differently on CPU and CUDA
    and by the order of the table's columns. Only the cut-off is resolved exactly, so the cost stays that of ``topk``.
    """
    n, g = score.shape
    if gene_index.ndim == 1:
        rank = _tie_rank(gene_index)[None].expand(n, g)
    else:
        rank = torch.vstack([_tie_rank(row) for row in gene_index])
    best = score.topk(k, dim=1)
    cutoff = best.values[:, -1:]
    n_above = (best.values > cutoff).sum(1, keepdim=True)  # these are all the columns above the cut-off
    at_cutoff = torch.where(score == cutoff, rank, torch.full_like(rank, float("inf"))).topk(k, dim=1, largest=False)
    slot = torch.arange(k, device=score.device)[None]
    cols = torch.where(slot < n_above, best.indices, at_cutoff.indices.gather(1, (slot - n_above).clamp(min=0)))
    by_rank = torch.sort(rank.gather(1, cols), dim=1, stable=True).indices
    cols = cols.gather(1, by_rank)
    by_score = torch.sort(score.gather(1, cols), dim=1, descending=True, stable=True).indices
    return cols.gather(1, by_score)


def _tie_rank(gene_index: torch.Tensor) -> torch.Tensor:
    """(G,) float rank of each column by (vocabulary index, column): the tie-breaking order of ``_top_genes``."""
    order = torch.sort(gene_index, stable=True).indices
    rank = torch.empty(gene_index.shape, dtype=torch.float32, device=gene_index.device)
    rank[order] = torch.arange(len(gene_index), dtype=torch.float32, device=gene_index.device)
    return rank
