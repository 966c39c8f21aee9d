"""Fitting heads on frozen embeddings: per-spot ridge / softmax heads and the attention-MIL Cox head, cross-validated."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .._metrics import balanced_accuracy, concordance_index, pearson_per_gene

if TYPE_CHECKING:
    import torch

    from ._modules import AttentionMILHead, SpotHead

#: Ridge penalties tried for a linear regression head, relative to the number of spots (standardised features).
RIDGE_PENALTIES = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
#: L2 penalties on the weights tried for heads trained by gradient descent.
L2_PENALTIES = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
#: Ranks tried for a linear regression head with several outputs (below the number of outputs), besides full rank.
RIDGE_RANKS = (4, 8, 16, 32)


def folds(groups: np.ndarray, n_folds: int, seed: int, strata: np.ndarray | None = None) -> list[np.ndarray]:
    """Validation indices of each fold: whole groups (slides, patients) per fold when there are several, else spots.

    With ``strata`` (one value per group), groups of each stratum are spread over the folds in turn.

    Examples
    --------
    >>> [f.tolist() for f in folds(np.array([0, 0, 1, 1, 2]), 3, seed=0)]
    [[4], [0, 1], [2, 3]]
    """
    rng = np.random.default_rng(seed)
    unique = np.unique(groups)
    units, index = (unique, groups) if len(unique) >= 2 else (np.arange(len(groups)), np.arange(len(groups)))
    k = max(2, min(n_folds, len(units)))
    order = rng.permutation(len(units))
    if strata is not None:
        order = order[np.argsort(np.asarray(strata)[order], kind="stable")]
    fold_of_unit = np.empty(len(units), dtype=int)
    fold_of_unit[order] = np.arange(len(units)) % k
    position = np.searchsorted(units, index) if len(unique) >= 2 else index
    return [np.flatnonzero(fold_of_unit[position] == f) for f in range(k)]


def fit_spot_head(
    x: np.ndarray,
    y: np.ndarray,
    *,
    task: str,
    groups: np.ndarray,
    n_classes: int = 0,
    hidden: int | None = None,
    n_folds: int = 5,
    epochs: int = 300,
    seed: int = 0,
    blocks: tuple[int, ...] | None = None,
) -> tuple[SpotHead, dict[str, Any]]:
    """A :class:`~storm.tl.SpotHead` with its penalty chosen by cross-validation over ``groups``, refitted on all.

    Regression ``y`` is ``(n, k)``; classification ``y`` holds class codes ``0..n_classes-1``. A linear regression
    head is solved in closed form (ridge); other heads are trained by full-batch Adam with an L2 penalty.

    A linear regression head with several outputs is also offered reduced ranks (:data:`RIDGE_RANKS`): the ridge
    predicts the leading principal components of the standardised targets, which are mapped back to every output, so
    that genes that vary together share what the features say about them instead of each fitting its own noise. The
    rank is chosen with the penalty by the same cross-validation (full rank is one of the candidates).

    Features are standardised; with ``blocks`` (the widths of consecutive groups of columns, e.g. embeddings and
    tile statistics), each group is also divided by the square root of its width, so that every group carries the
    same total variance under the one penalty, however many columns it has.

    Returns
    -------
    The head, and metrics: the cross-validated score of the chosen penalty and rank (mean Pearson r over outputs, or
    balanced accuracy), the best score of every penalty, the penalty, the rank, and how folds were made.
    """
    x = np.asarray(x, dtype=np.float64)
    weight = _block_weight(x.shape[1], blocks)
    linear_ridge = task == "regression" and not hidden
    penalties = RIDGE_PENALTIES if linear_ridge else L2_PENALTIES
    n_outputs = y.shape[1] if task == "regression" else 0
    ranks = (*(r for r in RIDGE_RANKS if r < n_outputs), None) if linear_ridge else (None,)
    fold_list = folds(groups, n_folds, seed)
    scores = {}
    for penalty in penalties:
        for rank in ranks:
            per_fold = []
            for val in fold_list:
                train = np.setdiff1d(np.arange(len(x)), val)
                if task == "classification" and len(np.unique(y[train])) < 2:
                    continue
                fit = (task, n_classes, hidden, penalty, rank, epochs, seed, linear_ridge, weight)
                per_fold.append(_score(_fit_once(x[train], y[train], *fit), x[val], y[val], task))
            scores[penalty, rank] = float(np.nanmean(per_fold)) if per_fold else float("nan")
    valid = {c: s for c, s in scores.items() if np.isfinite(s)}
    best = max(valid, key=valid.get) if valid else (penalties[len(penalties) // 2], None)
    penalty, rank = best
    head = _fit_once(x, y, task, n_classes, hidden, penalty, rank, epochs, seed, linear_ridge, weight)
    by_penalty = {str(p): max((s for (q, _), s in scores.items() if q == p), default=float("nan")) for p in penalties}
    metrics = {
        "cv_metric": "mean Pearson r over outputs" if task == "regression" else "balanced accuracy",
        "cv_score": scores[best],
        "cv_score_by_penalty": by_penalty,
        "penalty": penalty,
        "rank": rank or n_outputs or None,
        "n_folds": len(fold_list),
        "folds_by": "slide" if len(np.unique(groups)) >= 2 else "spot",
        "n_spots": len(x),
    }
    return head, metrics


def _fit_once(
    x: np.ndarray,
    y: np.ndarray,
    task: str,
    n_classes: int,
    hidden: int | None,
    penalty: float,
    rank: int | None,
    epochs: int,
    seed: int,
    linear_ridge: bool,
    weight: np.ndarray,
) -> SpotHead:
    import torch

    from ._modules import SpotHead

    torch.manual_seed(seed)
    n_out = y.shape[1] if task == "regression" else n_classes
    head = SpotHead(x.shape[1], n_out, hidden=hidden)
    mean, std = x.mean(0), (x.std(0) + 1e-6) / weight
    head.feature_mean.copy_(torch.as_tensor(mean))
    head.feature_std.copy_(torch.as_tensor(std))
    xs = torch.as_tensor((x - mean) / std, dtype=torch.float32)
    if task == "regression":
        y_mean, y_std = y.mean(0), y.std(0) + 1e-6
        head.target_mean.copy_(torch.as_tensor(y_mean))
        head.target_std.copy_(torch.as_tensor(y_std))
        target = torch.as_tensor((y - y_mean) / y_std, dtype=torch.float32)
    else:
        target = torch.as_tensor(y, dtype=torch.long)
    if linear_ridge:
        _solve_ridge(head, xs.double(), target.double(), penalty, rank)
    else:
        _train(head, xs, target, task, n_classes, penalty, epochs)
    return head.eval()


def _block_weight(n_features: int, blocks: tuple[int, ...] | None) -> np.ndarray:
    """Per-column factor on standardised features: 1, or 1 / sqrt(width of the column's block)."""
    if not blocks:
        return np.ones(n_features)
    if sum(blocks) != n_features or min(blocks) < 1:
        raise ValueError(f"`blocks` {blocks} must be positive widths adding up to the {n_features} features.")
    return np.concatenate([np.full(width, 1 / np.sqrt(width)) for width in blocks])


def _solve_ridge(head: SpotHead, xs: torch.Tensor, ys: torch.Tensor, penalty: float, rank: int | None) -> None:
    """Ridge from ``xs`` to ``ys``; with ``rank``, to their ``rank`` leading principal components, mapped back."""
    import torch

    gram = xs.T @ xs + penalty * len(xs) * torch.eye(xs.shape[1], dtype=xs.dtype)
    if rank is None:
        weight = torch.linalg.solve(gram, xs.T @ ys)
    else:
        basis = torch.linalg.svd(ys, full_matrices=False).Vh[:rank]
        weight = torch.linalg.solve(gram, xs.T @ (ys @ basis.T)) @ basis
    layer = head.net[-1]
    with torch.no_grad():
        layer.weight.copy_(weight.T.float())
        layer.bias.zero_()


def _train(
    head: SpotHead, xs: torch.Tensor, target: torch.Tensor, task: str, n_classes: int, penalty: float, epochs: int
) -> None:
    import torch

    if task == "classification":
        counts = torch.bincount(target, minlength=n_classes).float()
        weight = torch.where(counts > 0, counts.sum() / (n_classes * counts.clamp(min=1)), torch.zeros_like(counts))
        loss_fn = torch.nn.CrossEntropyLoss(weight=weight)
    else:
        loss_fn = torch.nn.MSELoss()
    optimiser = torch.optim.Adam(head.parameters(), lr=1e-2)
    weights = [p for name, p in head.named_parameters() if name.endswith("weight")]
    head.train()
    for _ in range(epochs):
        optimiser.zero_grad()
        loss = loss_fn(head(xs), target) + penalty * sum((w**2).sum() for w in weights)
        loss.backward()
        optimiser.step()


def _score(head: SpotHead, x: np.ndarray, y: np.ndarray, task: str) -> float:
    import torch

    with torch.no_grad():
        out = (
            head.predict(torch.as_tensor(x, dtype=torch.float32))
            if task == "regression"
            else head(torch.as_tensor(x, dtype=torch.float32))
        )
    pred = out.numpy()
    if task == "regression":
        return float(pearson_per_gene(pred, y).mean())
    return balanced_accuracy(y, pred.argmax(1))


# -- survival ----------------------------------------------------------------------------------------------------------
def cox_loss(scores: torch.Tensor, time: torch.Tensor, event: torch.Tensor) -> torch.Tensor:
    """Negative Cox partial log-likelihood (Breslow ties), averaged over events.

    Examples
    --------
    >>> import torch
    >>> t, e = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 1.0, 0.0])
    >>> bool(cox_loss(torch.tensor([3.0, 2.0, 1.0]), t, e) < cox_loss(torch.tensor([1.0, 2.0, 3.0]), t, e))
    True
    """
    import torch

    order = torch.argsort(time, descending=True)
    s, t, e = scores[order], time[order], event[order]
    running = torch.logcumsumexp(s, dim=0)
    last_tied = torch.searchsorted(-t, -t, right=True) - 1
    return -((s - running[last_tied]) * e).sum() / e.sum().clamp(min=1)


def fit_mil_head(
    bags: list[np.ndarray],
    time: np.ndarray,
    event: np.ndarray,
    *,
    groups: np.ndarray,
    hidden: int = 64,
    epochs: int = 150,
    max_spots: int = 512,
    n_folds: int = 5,
    seed: int = 0,
) -> tuple[AttentionMILHead, dict[str, Any]]:
    """An :class:`~storm.tl.AttentionMILHead` trained with the Cox loss; C-index cross-validated over ``groups``.

    Folds hold whole groups (patients), with events spread over folds. Each fold's head scores its held-out slides;
    the C-index of every fold and of all held-out scores pooled are reported. The returned head is refitted on all.
    """
    unit_event = np.array([event[groups == g].max() for g in np.unique(groups)])
    fold_list = folds(groups, n_folds, seed, strata=-unit_event)
    held_out = np.full(len(bags), np.nan)
    per_fold = []
    for val in fold_list:
        train = np.setdiff1d(np.arange(len(bags)), val)
        if event[train].sum() == 0:
            continue
        head = _fit_mil_once([bags[i] for i in train], time[train], event[train], hidden, epochs, max_spots, seed)
        held_out[val] = slide_scores(head, [bags[i] for i in val])
        per_fold.append(concordance_index(time[val], held_out[val], event[val]))
    head = _fit_mil_once(bags, time, event, hidden, epochs, max_spots, seed)
    scored = np.isfinite(held_out)
    fold_values = [c for c in per_fold if np.isfinite(c)]
    metrics = {
        "cv_c_index": float(np.mean(fold_values)) if fold_values else float("nan"),
        "cv_c_index_folds": [float(c) for c in per_fold],
        "cv_c_index_pooled": concordance_index(time[scored], held_out[scored], event[scored]),
        "n_folds": len(fold_list),
        "n_slides": len(bags),
        "n_events": int(event.sum()),
    }
    return head, metrics


def _fit_mil_once(
    bags: list[np.ndarray], time: np.ndarray, event: np.ndarray, hidden: int, epochs: int, max_spots: int, seed: int
) -> AttentionMILHead:
    import torch

    from ._modules import AttentionMILHead

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    stacked = np.concatenate(bags)
    head = AttentionMILHead(stacked.shape[1], hidden=hidden)
    head.feature_mean.copy_(torch.as_tensor(stacked.mean(0)))
    head.feature_std.copy_(torch.as_tensor(stacked.std(0) + 1e-6))
    tensors = [torch.as_tensor(b, dtype=torch.float32) for b in bags]
    t = torch.as_tensor(time, dtype=torch.float32)
    e = torch.as_tensor(event, dtype=torch.float32)
    optimiser = torch.optim.AdamW(head.parameters(), lr=1e-3, weight_decay=1e-2)
    head.train()
    for _ in range(epochs):
        optimiser.zero_grad()
        scores = torch.stack([head(_subsample(b, max_spots, rng))[0] for b in tensors])
        cox_loss(scores, t, e).backward()
        optimiser.step()
    return head.eval()


def _subsample(bag: torch.Tensor, max_spots: int, rng: np.random.Generator) -> torch.Tensor:
    if len(bag) <= max_spots:
        return bag
    return bag[np.sort(rng.choice(len(bag), max_spots, replace=False))]


def slide_scores(head: AttentionMILHead, bags: list[np.ndarray]) -> np.ndarray:
    """Slide risk of every bag of spot features (all spots used)."""
    import torch

    with torch.no_grad():
        return np.array([float(head(torch.as_tensor(b, dtype=torch.float32))[0]) for b in bags])
