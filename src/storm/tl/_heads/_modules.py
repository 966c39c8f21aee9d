"""Heads trained on frozen storm embeddings: a per-spot head and an attention-MIL survival head."""

from __future__ import annotations

import torch
from torch import nn


class SpotHead(nn.Module):
    """Per-spot regression or classification on standardised embeddings.

    ``features -> (x - mean) / std -> [Linear -> GELU -> Dropout] -> Linear``; without ``hidden`` it is a linear
    model, which suits the few-label setting it is made for. Regression outputs are standardised targets; the stored
    ``target_mean`` / ``target_std`` map them back.

    Parameters
    ----------
    n_features
        Width of the input features.
    n_outputs
        Genes (regression) or classes (classification).
    hidden
        Width of one hidden layer; ``None`` for a linear head.
    dropout
        Dropout before the output layer.

    Examples
    --------
    >>> head = SpotHead(8, 3)
    >>> head(torch.zeros(5, 8)).shape
    torch.Size([5, 3])
    """

    def __init__(self, n_features: int, n_outputs: int, *, hidden: int | None = None, dropout: float = 0.1) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.register_buffer("target_mean", torch.zeros(n_outputs))
        self.register_buffer("target_std", torch.ones(n_outputs))
        layers: list[nn.Module] = []
        width = n_features
        if hidden:
            layers += [nn.Linear(n_features, hidden), nn.GELU()]
            width = hidden
        layers += [nn.Dropout(dropout), nn.Linear(width, n_outputs)]
        self.net = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Standardised outputs (regression) or logits (classification) of ``(n, n_features)`` features."""
        return self.net((features - self.feature_mean) / self.feature_std)

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Regression outputs on the targets' own scale."""
        return self(features) * self.target_std + self.target_mean


class AttentionMILHead(nn.Module):
    """Slide-level risk from a bag of spot embeddings: gated attention pooling of per-spot risks.

    Each spot ``i`` gets a risk ``r_i = w^T h_i`` and an attention weight ``a_i`` (softmax over the slide of a gated
    tanh-sigmoid score, Ilse et al. 2018); the slide's risk is ``sum_i a_i r_i``, so every spot's contribution
    ``a_i r_i`` is explicit and they add up to the slide score.

    Parameters
    ----------
    n_features
        Width of the spot features.
    hidden
        Width of the shared projection and of the attention layer.
    dropout
        Dropout on the projected features.

    Examples
    --------
    >>> head = AttentionMILHead(8)
    >>> score, attention, risks = head(torch.zeros(5, 8))
    >>> round(float(attention.detach().sum()), 6)
    1.0
    """

    def __init__(self, n_features: int, *, hidden: int = 64, dropout: float = 0.25) -> None:
        super().__init__()
        self.register_buffer("feature_mean", torch.zeros(n_features))
        self.register_buffer("feature_std", torch.ones(n_features))
        self.project = nn.Sequential(nn.Linear(n_features, hidden), nn.GELU(), nn.Dropout(dropout))
        self.attention_v = nn.Linear(hidden, hidden)
        self.attention_u = nn.Linear(hidden, hidden)
        self.attention_w = nn.Linear(hidden, 1)
        self.risk = nn.Linear(hidden, 1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Slide score (scalar), attention ``(n,)`` and per-spot risk ``(n,)`` of one slide's ``(n, n_features)``."""
        h = self.project((features - self.feature_mean) / self.feature_std)
        gate = torch.tanh(self.attention_v(h)) * torch.sigmoid(self.attention_u(h))
        attention = torch.softmax(self.attention_w(gate).squeeze(-1), dim=0)
        risks = self.risk(h).squeeze(-1)
        return (attention * risks).sum(), attention, risks
