"""Batches of a dataset: the one iterator that training, evaluation, fine-tuning and
``DelaySNN.predict_dataset`` use."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Subset

__all__ = ["iterate_batches"]


def iterate_batches(dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                    device: torch.device | str = "cpu", num_workers: int = 0,
                    indices: "np.ndarray | None" = None, time_major: bool = True) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(x, y (B,) int64)`` batches of ``dataset`` (items ``(x (T, C), y)``), in order or
    shuffled from ``seed``, over all samples or the rows ``indices``. ``time_major``: x (T, B, C)
    float32 on ``device``; else x (B, T, C) as stored. Datasets exposing ``x`` (N, T, C) and ``y``
    (torch tensors or numpy arrays) are indexed a whole batch at a time; others go through a
    DataLoader (``num_workers`` processes)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    order = np.arange(len(dataset)) if indices is None else np.asarray(indices)
    if shuffle:
        order = order[np.random.default_rng(seed).permutation(len(order))]
    xs, ys = getattr(dataset, "x", None), getattr(dataset, "y", None)
    if xs is not None and ys is not None:
        batches = ((_rows(xs, order[s:s + batch_size]), _rows(ys, order[s:s + batch_size]))
                   for s in range(0, len(order), batch_size))
    else:
        batches = iter(DataLoader(Subset(dataset, order.tolist()), batch_size=batch_size, shuffle=False,
                                  num_workers=num_workers))
    for x, y in batches:
        if time_major:
            x = x.to(device=device, dtype=torch.float32).transpose(0, 1)  # (T, B, C)
        yield x, y.to(device)


def _rows(a: "Tensor | np.ndarray", idx: np.ndarray) -> Tensor:
    """Rows ``idx`` of a tensor or array, copied into a tensor."""
    if isinstance(a, torch.Tensor):
        return a[torch.from_numpy(idx)]
    return torch.as_tensor(np.asarray(a)[idx])
