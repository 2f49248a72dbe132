"""Spike tensors kept as exact bytes: spikes, dropout-scaled spikes and counts are s * (small
integers), so a fast path can keep a quarter of the memory for its backward and read a quarter of
it in its loops.

A producer that has the bytes already (the dropout product, :mod:`.dropout`, writes them in the
same pass as its float output) hands them over with :func:`remember_scaled_bytes`; the next
:func:`as_scaled_bytes` of that very tensor (same memory, shape, strides, unmodified) returns them
instead of packing again: the same bytes and scale it would compute."""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from .compiled import fast_available
from .kernels import pack

__all__ = ["as_scaled_bytes", "remember_scaled_bytes", "scale_for", "dropout_scale"]

# one slot: (weak reference to the tensor, its data pointer, shape, strides, version, bytes, scale)
_known: list = [None]


def scale_for(first: float) -> tuple[float, ...]:
    """The scales :func:`as_scaled_bytes` tries, in order, for a tensor whose first non-zero value
    (in memory order, absolute) is ``first``: counts (an integer first value) s = 1 first; dropout-
    scaled spikes their one value."""
    return tuple(dict.fromkeys((1.0, first) if float(first).is_integer() else (first, 1.0)))


def dropout_scale(keep: Tensor) -> float:
    """The scale :func:`as_scaled_bytes` would choose first for spikes times the dropout mask
    ``keep`` (0 or 1 / (1 - p)): from the mask's one non-zero value (1 if every unit is dropped)."""
    kept = float(keep.max()) if keep.numel() else 0.0
    return scale_for(kept)[0] if kept > 0 else 1.0


def remember_scaled_bytes(x: Tensor, packed: Tensor, scale: float) -> None:
    """Record that x = scale * packed exactly, with (packed, scale) what :func:`as_scaled_bytes`
    would return for x; its next call on x returns them (once). Not for inference tensors (no
    version counter to check)."""
    if x.is_inference():
        _known[0] = None
        return
    _known[0] = (weakref.ref(x), x.data_ptr(), tuple(x.shape), x.stride(), x._version, packed, scale)


def _recall(x: Tensor) -> tuple[Tensor, float] | None:
    known, _known[0] = _known[0], None
    if known is None or x.is_inference():
        return None
    ref, ptr, shape, strides, version, packed, scale = known
    src = ref()
    # the recorded tensor is alive (so its memory is not another tensor's), x views the same memory
    # the same way, and neither was written since (a detached view shares the version counter)
    if src is None or src._version != version or x.dtype != src.dtype or x.data_ptr() != ptr or \
            tuple(x.shape) != shape or x.stride() != strides or x._version != version:
        return None
    return packed, scale


def as_scaled_bytes(x: Tensor) -> tuple[Tensor, float]:
    """(bytes, s) with x = s * bytes exactly when x holds spikes, dropout-scaled spikes or counts
    (s = the first non-zero value, or 1), else (x, 1.0). Needs the compiled loops (else returns x)."""
    if not (fast_available(x) and x.numel()):
        return x, 1.0
    known = _recall(x)
    if known is not None:
        return known
    xc = x.detach().contiguous()
    packed = torch.empty(x.shape, dtype=torch.uint8)
    first = abs(pack.first_nonzero(xc.numpy()))
    for s in scale_for(first):
        if s > 0 and pack.pack_scaled_u8(xc.numpy(), s, packed.numpy()):
            return packed, s
    return x, 1.0
