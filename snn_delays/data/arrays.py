"""What every file-backed source returns: whole arrays in a Dataset, plus the seeded split and padding helpers.

``ArrayDataset.x`` is (N, T, C) (uint8/uint16 spike counts or float32 features, possibly
memory-mapped) and ``.y`` is (N,) int64, so the trainer can index whole batches.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .registry import DatasetError

__all__ = ["ArrayDataset", "stratified_split", "fit_steps", "require_samples"]


def _as_tensor(a) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a
    if isinstance(a, np.memmap) and not a.flags.writeable:
        a = np.asarray(a)  # (callers pass copy-on-write maps; this only guards read-only ones)
    return torch.from_numpy(a)


class ArrayDataset(Dataset):
    """Items ``(x float32 (T, C), y int)`` backed by ``x`` (N, T, C) and ``y`` (N,) int64 tensors.

    Extra keyword attributes (``speakers``, ``keys``, ``protocol_note``, ``files`` ...) are stored as
    attributes for the trainer and the tests.
    """

    def __init__(self, x, y, n_classes: int, **attrs):
        x = _as_tensor(x)
        y = _as_tensor(np.asarray(y, dtype=np.int64) if not isinstance(y, torch.Tensor) else y).long()
        self._check_shape(x)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
        self.x = x
        self.y = y
        self.n_steps = int(x.shape[1])
        self.n_channels = int(np.prod(x.shape[2:]))  # what a dense first layer sees per step
        self.n_classes = int(n_classes)
        self.protocol_note = ""
        for k, v in attrs.items():
            setattr(self, k, v)

    @staticmethod
    def _check_shape(x: torch.Tensor) -> None:
        if x.dim() != 3:
            raise ValueError(f"expected x of shape (N, T, C), got {tuple(x.shape)}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i].float(), int(self.y[i])


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified hold-out: ``round(fraction * n_c)`` samples of every class c go to the
    second part (at least one where a class has two or more). Returns sorted index arrays
    (kept, held_out); the same labels, fraction and seed always give the same split."""
    if not 0.0 <= float(fraction) < 1.0:
        raise DatasetError(f"valid_fraction must be in [0, 1); got {fraction}")
    labels = np.asarray(labels)
    kept, held = [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        rng = np.random.default_rng([int(seed), int(c)])
        idx = rng.permutation(idx)
        n_held = int(round(fraction * len(idx)))
        if n_held == 0 and len(idx) >= 2 and fraction > 0:
            n_held = 1
        held.append(idx[:n_held])
        kept.append(idx[n_held:])
    cat = lambda parts: np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)  # noqa: E731
    return cat(kept).astype(np.int64), cat(held).astype(np.int64)


def fit_steps(x: np.ndarray, n_steps: int, fill: float) -> np.ndarray:
    """Pad (with ``fill``) or cut (N, T, C) features along T to ``n_steps`` (0: unchanged)."""
    if n_steps <= 0 or x.shape[1] == n_steps:
        return x
    if x.shape[1] > n_steps:
        return x[:, :n_steps]
    pad = np.full((x.shape[0], n_steps - x.shape[1], x.shape[2]), fill, dtype=x.dtype)
    return np.concatenate([x, pad], axis=1)


def require_samples(split: str, sizes: dict[str, int], source: str,
                    fix: str = "use more recordings, or change data.valid_fraction or the split options") -> None:
    """Raise DatasetError unless split ``split`` holds samples; the message gives every split's size
    (``sizes``, e.g. {"train": 9, "valid": 0, "test": 4}), where they come from (``source``) and ``fix``."""
    if (sum(sizes.values()) if split == "all" else sizes.get(split, 0)) > 0:
        return
    listed = ", ".join(f"{k} {v}" for k, v in sizes.items())
    raise DatasetError(f"split {split!r} would hold no samples ({source}: {listed}); {fix}")
