"""Spike tensors kept as exact bytes: spikes, dropout-scaled spikes and counts are s * (small
integers), so a fast path can keep a quarter of the memory for its backward and read a quarter of
it in its loops."""

from __future__ import annotations

import torch
from torch import Tensor

from .compiled import fast_available
from .kernels import pack

__all__ = ["as_scaled_bytes"]


def as_scaled_bytes(x: Tensor) -> tuple[Tensor, float]:
    """(bytes, s) with x = s * bytes exactly when x holds spikes, dropout-scaled spikes or counts
    (s = the first non-zero value, or 1), else (x, 1.0). Needs the compiled loops (else returns x)."""
    if not (fast_available(x) and x.numel()):
        return x, 1.0
    xc = x.detach().contiguous()
    packed = torch.empty(x.shape, dtype=torch.uint8)
    first = abs(pack.first_nonzero(xc.numpy()))
    # counts (an integer first value): s = 1 first; dropout-scaled spikes: s = their one value
    for s in dict.fromkeys((1.0, first) if first.is_integer() else (first, 1.0)):
        if s > 0 and pack.pack_scaled_u8(xc.numpy(), s, packed.numpy()):
            return packed, s
    return x, 1.0
