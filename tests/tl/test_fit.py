"""Heads fitted on frozen features: blocks of features weighed equally under one penalty."""

import numpy as np
import pytest

from storm.tl._fit import fit_spot_head


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
