"""The embedded task: spike patterns whose class lives only in the *timing* between channel groups.

Shaped like binned SHD: 140 channels, 100 steps of spike counts. How it is made:

* The 140 channels are split (by a fixed random permutation) into ``n_groups`` = 5 groups of 28.
* Each of the 10 classes is a *sequence* that visits **every** group exactly once, in a
  class-specific order, with class-specific gaps of 2-9 steps between visits (span <= 36 steps).
* A sample places its class's sequence at a random onset. At each visit, each channel of the
  group fires with probability 0.5, one step early or late with probability 0.15 each;
  background noise adds a spike with probability 0.02 per channel and step (both adjustable:
  ``data.synthetic_p_fire``, ``data.synthetic_noise``).

Every class uses the same groups the same number of times, so any one time step - and any
sum of per-step evidence - carries no information about the class: a network without delays
and with a near-memoryless neuron (tau 1.005 steps) stays near chance (10 %). A network that
delays groups to make them coincide can read order and gaps and solves it.

The class definitions depend only on ``task_seed``; each split draws its samples from its own
stream, so splits never share samples and every call gives the same tensors.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .arrays import require_samples
from .registry import DatasetError, register

__all__ = ["SyntheticDelayTask", "open_synthetic"]

N_CHANNELS = 140
N_CLASSES = 10
N_GROUPS = 5
GAP_RANGE = (2, 9)  # steps between consecutive visits, inclusive
P_FIRE = 0.5
P_JITTER = 0.15  # each of -1 and +1 step
P_NOISE = 0.02

_SPLIT_STREAM = {"train": 1, "valid": 2, "test": 3, "all": 4}


def class_definitions(task_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (groups (G, C/G) channel ids, order (K, G) group order per class, offsets (K, G) steps)."""
    rng = np.random.default_rng([task_seed, 0])
    channels = rng.permutation(N_CHANNELS).reshape(N_GROUPS, -1)
    orders: list[tuple[int, ...]] = []
    while len(orders) < N_CLASSES:
        perm = tuple(int(v) for v in rng.permutation(N_GROUPS))
        if perm not in orders:
            orders.append(perm)
    gaps = rng.integers(GAP_RANGE[0], GAP_RANGE[1] + 1, size=(N_CLASSES, N_GROUPS - 1))
    offsets = np.concatenate([np.zeros((N_CLASSES, 1), dtype=np.int64), np.cumsum(gaps, axis=1)], axis=1)
    return channels, np.asarray(orders), offsets


class SyntheticDelayTask(Dataset):
    """``n_samples`` samples of the timing task; items are (x float32 (T, 140), y int)."""

    def __init__(self, n_samples: int, split: str = "train", n_steps: int = 100, task_seed: int = 1234,
                 p_fire: float = P_FIRE, p_noise: float = P_NOISE):
        if split not in _SPLIT_STREAM:
            raise ValueError(f"unknown split {split!r}")
        channels, orders, offsets = class_definitions(task_seed)
        span = int(offsets.max())
        if n_steps < span + 4:
            raise ValueError(f"n_steps must be >= {span + 4} for this task; got {n_steps}")
        rng = np.random.default_rng([task_seed, _SPLIT_STREAM[split]])
        labels = rng.permutation(np.arange(n_samples) % N_CLASSES)
        x = (rng.random((n_samples, n_steps, N_CHANNELS)) < p_noise).astype(np.uint8)
        onset = rng.integers(1, n_steps - span - 2, size=n_samples)
        per_group = channels.shape[1]
        for visit in range(N_GROUPS):
            group = orders[labels, visit]  # (N,)
            t_visit = onset + offsets[labels, visit]  # (N,)
            fire = rng.random((n_samples, per_group)) < p_fire
            jitter = rng.choice([-1, 0, 1], p=[P_JITTER, 1 - 2 * P_JITTER, P_JITTER], size=(n_samples, per_group))
            t = np.clip(t_visit[:, None] + jitter, 0, n_steps - 1)
            ch = channels[group]  # (N, per_group)
            idx = np.nonzero(fire)
            np.add.at(x, (idx[0], t[idx], ch[idx]), 1)
        self.x = torch.from_numpy(x)
        self.y = torch.from_numpy(labels.astype(np.int64))
        self.n_channels = N_CHANNELS
        self.n_classes = N_CLASSES
        self.n_steps = n_steps

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i].float(), int(self.y[i])


@register("synthetic")
def open_synthetic(
    root=None,
    split: str = "train",
    synthetic_train: int = 2000,
    synthetic_valid: int = 400,
    synthetic_test: int = 1000,
    synthetic_seed: int = 1234,
    synthetic_p_fire: float = P_FIRE,
    synthetic_noise: float = P_NOISE,
    n_steps: int = 0,
) -> SyntheticDelayTask:
    """Open a split of the synthetic timing task (no files; ``root`` is ignored)."""
    sizes = {
        "train": synthetic_train,
        "valid": synthetic_valid,
        "test": synthetic_test,
        "all": synthetic_train + synthetic_valid + synthetic_test,
    }
    if any(v < 0 for v in sizes.values()):
        raise DatasetError(f"synthetic split sizes must be >= 0; got train {synthetic_train}, valid {synthetic_valid}, "
                           f"test {synthetic_test}")
    require_samples(split, {k: v for k, v in sizes.items() if k != "all"}, "data.synthetic_train/valid/test",
                    f"set data.synthetic_{'train' if split == 'all' else split} to 1 or more")
    if synthetic_seed < 0:
        raise DatasetError(f"data.synthetic_seed must be >= 0; got {synthetic_seed}")
    for name, p in (("synthetic_p_fire", synthetic_p_fire), ("synthetic_noise", synthetic_noise)):
        if not 0.0 <= p <= 1.0:
            raise DatasetError(f"data.{name} is a probability in [0, 1]; got {p}")
    try:
        return SyntheticDelayTask(sizes[split], split=split, n_steps=n_steps or 100, task_seed=synthetic_seed,
                                  p_fire=synthetic_p_fire, p_noise=synthetic_noise)
    except ValueError as e:  # n_steps too short for the task
        raise DatasetError(f"synthetic task: {e}") from None
