"""Transformer building blocks: attention with an additive bias (SDPA), pre-norm blocks, positional encodings."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    """Multi-head (self- or cross-) attention on :func:`torch.nn.functional.scaled_dot_product_attention`."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend from ``x`` (B, Tq, D) to ``context`` (B, Tk, D; ``x`` itself by default).

        ``bias`` is added to the attention logits: (B, heads or 1, Tq, Tk), ``-inf`` masks a key.
        """
        context = x if context is None else context
        b, tq, d = x.shape
        tk = context.shape[1]
        q = self.q(x).view(b, tq, self.heads, d // self.heads).transpose(1, 2)
        k, v = self.kv(context).view(b, tk, 2, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if bias is not None:
            bias = bias.to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=self.dropout if self.training else 0.0)
        return self.out(y.transpose(1, 2).reshape(b, tq, d))


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, MLP."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0, cross: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.cross = Attention(dim, heads, dropout) if cross else None
        self.norm_cross = nn.LayerNorm(dim) if cross else None
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor | None = None,
        context: torch.Tensor | None = None,
        context_bias: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Apply the block; ``context`` feeds the cross-attention (when built with ``cross=True``)."""
        x = x + self.attn(self.norm1(x), bias=bias)
        if self.cross is not None and context is not None:
            x = x + self.cross(self.norm_cross(x), context=context, bias=context_bias)
        return x + self.mlp(self.norm2(x))


def key_padding_bias(valid: torch.Tensor, n_queries: int | None = None) -> torch.Tensor:
    """Additive bias (B, 1, Tq, Tk) that masks invalid keys; a query with no valid key keeps its own position."""
    b, t = valid.shape
    tq = t if n_queries is None else n_queries
    allowed = valid[:, None, None, :].expand(b, 1, tq, t)
    if n_queries is None:
        eye = torch.eye(t, dtype=torch.bool, device=valid.device)[None, None]
        allowed = allowed | (eye & ~valid.any(dim=1)[:, None, None, None])
    zeros = torch.zeros((), dtype=torch.float32, device=valid.device)
    return torch.where(allowed, zeros, torch.tensor(float("-inf"), device=valid.device))


class Sincos2D(nn.Module):
    """Absolute 2-D positional encoding of offsets in µm: sines/cosines at wavelengths ``min_um`` .. ``max_um``."""

    def __init__(self, dim: int, min_um: float, max_um: float, n_freq: int = 16) -> None:
        super().__init__()
        wavelengths = torch.logspace(math.log10(min_um), math.log10(max_um), n_freq)
        self.register_buffer("freqs", 2 * math.pi / wavelengths, persistent=False)
        self.proj = nn.Linear(4 * n_freq, dim)

    def forward(self, offsets_um: torch.Tensor) -> torch.Tensor:
        """(…, 2) offsets in µm -> (…, dim) encodings."""
        angles = offsets_um[..., :, None].float() * self.freqs  # (..., 2, F)
        feats = torch.cat([angles.sin(), angles.cos()], dim=-1).flatten(-2)
        return self.proj(feats.to(self.proj.weight.dtype))


class DistanceBias(nn.Module):
    """Relative attention bias per head from the distance (µm) between two tokens' spots.

    A small MLP on log-scaled distance features, so the bias is translation- and rotation-invariant and works from
    cell-level (µm) to legacy-ST (200 µm pitch) scales.
    """

    def __init__(self, heads: int, hidden: int = 32) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(3, hidden), nn.GELU(), nn.Linear(hidden, heads))

    def forward(self, pos_um: torch.Tensor) -> torch.Tensor:
        """(B, T, 2) positions -> (B, heads, T, T) bias."""
        dist = torch.cdist(pos_um.float(), pos_um.float())
        feats = torch.stack([torch.log1p(dist / 10.0), torch.log1p(dist / 100.0), torch.log1p(dist / 1000.0)], dim=-1)
        return self.mlp(feats.to(self.mlp[0].weight.dtype)).permute(0, 3, 1, 2)
