"""The embedded timing task: deterministic, shaped like binned SHD, class only in the timing."""

import numpy as np
import torch

from snn_delays.data import open_dataset
from snn_delays.data.synthetic import class_definitions


def test_deterministic_and_shaped_like_shd():
    a = open_dataset("synthetic", None, "train", synthetic_train=50)
    b = open_dataset("synthetic", None, "train", synthetic_train=50)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    x, y = a[0]
    assert x.dtype == torch.float32 and x.shape == (100, 140) and isinstance(y, int)
    assert (a.n_channels, a.n_classes, a.n_steps) == (140, 10, 100)
    test = open_dataset("synthetic", None, "test", synthetic_test=50)
    assert not torch.equal(a.x, test.x)


def test_every_class_uses_every_group_equally():
    """Summed over time, the per-group spike counts do not depend on the class."""
    ds = open_dataset("synthetic", None, "train", synthetic_train=2000)
    groups, orders, offsets = class_definitions(1234)
    assert all(sorted(o) == list(range(len(groups))) for o in orders)
    counts = ds.x.float().sum(1).numpy()  # (N, C)
    per_group = np.stack([counts[:, g].sum(1) for g in groups], 1)  # (N, G)
    means = np.stack([per_group[ds.y.numpy() == c].mean(0) for c in range(10)])  # (K, G)
    assert np.ptp(means, axis=0).max() < 0.15 * means.mean()
    # ...while the order of the groups in time does depend on the class
    assert len({tuple(o) for o in orders}) == 10
