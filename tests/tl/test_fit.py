"""Heads fitted on frozen features: blocks of features weighed equally under one penalty; reduced-rank ridge."""

import numpy as np
import pytest
import torch

from storm.tl._heads._fitting import RIDGE_RANKS, _fit_once, fit_spot_head
from storm.tl._metrics import pearson_per_gene


def test_blocks_give_every_group_the_same_total_variance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 12)) * np.arange(1, 13)
    y = x[:, :1] + 0.1 * rng.normal(size=(120, 1))
    plain, _ = fit_spot_head(x, y, task="regression", groups=np.zeros(120))
    head, metrics = fit_spot_head(x, y, task="regression", groups=np.zeros(120), blocks=(2, 10))
    np.testing.assert_allclose(plain.feature_std.numpy(), x.std(0) + 1e-6, rtol=1e-5)
    widths = np.r_[np.full(2, np.sqrt(2)), np.full(10, np.sqrt(10))]
    np.testing.assert_allclose(head.feature_std.numpy(), (x.std(0) + 1e-6) * widths, rtol=1e-5)
    scaled = (x - x.mean(0)) / head.feature_std.numpy()
    np.testing.assert_allclose([scaled[:, :2].var(0).sum(), scaled[:, 2:].var(0).sum()], [1.0, 1.0], rtol=1e-4)
    assert metrics["cv_score"] > 0.95  # the signal in the narrow block is found
    with pytest.raises(ValueError, match="`blocks`"):
        fit_spot_head(x, y, task="regression", groups=np.zeros(120), blocks=(2, 5))


def test_outputs_that_vary_together_get_a_reduced_rank_head():
    """40 noisy outputs driven by 2 hidden factors: CV picks a low rank, whose fit beats full rank on new spots."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(240, 30))
    loadings = rng.normal(size=(2, 40))
    y = x[:, :2] @ loadings + 3.0 * rng.normal(size=(240, 40))
    groups = np.repeat(np.arange(4), 60)
    head, metrics = fit_spot_head(x[:180], y[:180], task="regression", groups=groups[:180])
    assert metrics["rank"] == RIDGE_RANKS[0]
    weight = head.net[-1].weight.detach().double().numpy()
    assert np.linalg.matrix_rank(weight, tol=1e-4 * np.abs(weight).max()) == RIDGE_RANKS[0]
    truth = x[180:, :2] @ loadings

    def held_out_r(h):
        with torch.no_grad():
            out = h.predict(torch.as_tensor(x[180:], dtype=torch.float32)).numpy()
        return pearson_per_gene(out, truth).mean()

    fit = ("regression", 0, None, metrics["penalty"], None, 1, 0, True, np.ones(30))  # the same penalty, full rank
    assert held_out_r(head) > held_out_r(_fit_once(x[:180], y[:180], *fit)) + 0.02
    _, single = fit_spot_head(x, y[:, :1], task="regression", groups=groups)
    assert single["rank"] == 1  # one output: full rank is the only candidate
