"""The event-driven ("event") backend of the delay synapse: the product and the kernel gradient
driven by the input's non-zero entries.

The same operation as :func:`snn_delays.backends.dense.causal_conv_cm` (y[t] = sum_d h[d] x[t - d]
on channel-major (T, C, B) tensors, the dense (out, in, Td) kernel: interpolated in training,
rounded in evaluation), computed from the events (s, j, b, v) of x - each non-zero entry scatters
v times its input's kernel column into the Td output steps that follow it, and the kernel gradient
gathers v times the output gradient at those steps (:mod:`.kernels.events`). Work per pass: events
x Td x out multiply-adds, a fraction ``density`` of the direct convolution's, for any sigma.

For a sparse input that needs no gradient (the first layer's input: spikes or binned counts):
autograd keeps only the events (smaller than x at any density below ~1/3). An input that needs a
gradient gets it from the frequency-domain products of :mod:`.fft` (not event-driven).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .compiled import fast_available, set_threads
from .dense import causal_conv_cm
from .fft import fft_input_grad
from .kernels import events as event_loops

__all__ = ["event_causal_conv_cm", "nonzero_fraction"]


def nonzero_fraction(x: Tensor) -> float:
    """The fraction of non-zero entries of x (the training cost model and evaluation's choice of
    form). On CPU counted by numpy, floats on their bits (~5x faster than torch's count; -0.0
    counts as non-zero, harmless for a cost estimate)."""
    if x.numel() == 0:
        return 0.0
    a = x.detach()
    if a.device.type == "cpu" and a.dtype in (torch.float32, torch.float64, torch.uint8):
        n = a.numpy()
        if n.dtype.kind == "f":
            n = n.view(np.uint32 if n.dtype.itemsize == 4 else np.uint64)
        return float(np.count_nonzero(n)) / a.numel()
    return float(torch.count_nonzero(a)) / a.numel()


class _EventConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, kernel: Tensor):
        # x (T, in, B), kernel (out, in, Td) -> y (T, out, B)
        xc = x.detach().contiguous()
        if xc.dtype != kernel.dtype:
            xc = xc.to(kernel.dtype)
        t_len, in_f, b_len = xc.shape
        out_f, _, td = kernel.shape
        set_threads()
        ptr, ev_t, ev_j, ev_v = event_loops.events_by_sample(xc.numpy())
        y = torch.empty(t_len, out_f, b_len, dtype=kernel.dtype)
        event_loops.event_forward(ptr, ev_t, ev_j, ev_v, event_loops.pack_kernel(kernel.detach().contiguous().numpy()),
                                  y.numpy())
        ctx.shape = (t_len, in_f, b_len, td)
        ctx.dtype = kernel.dtype
        ctx.events = (ptr, ev_t, ev_j, ev_v)  # by sample, numpy arrays: freed with the graph
        ctx.save_for_backward(kernel if ctx.needs_input_grad[0] else None)
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):
        (kernel,) = ctx.saved_tensors
        t_len, in_f, b_len, td = ctx.shape
        gyc = gy.detach().contiguous()
        gx = gk = None
        if ctx.needs_input_grad[1]:
            set_threads()
            gk = torch.from_numpy(np.ascontiguousarray(  # (out, in, Td)
                event_loops.event_kernel_grad(*ctx.events, gyc.to(ctx.dtype).numpy(), in_f, td)))
        if ctx.needs_input_grad[0]:  # not from the events: the frequency-domain products (fft.py)
            gx = fft_input_grad(gyc.to(kernel.dtype), kernel.detach())
        return gx, gk


def event_causal_conv_cm(x: Tensor, kernel: Tensor) -> Tensor:
    """x (T, C_in, B), kernel (C_out, C_in, Td) -> (T, C_out, B), driven by the non-zero entries of x;
    the layout of :func:`snn_delays.backends.dense.causal_conv_cm`, which runs instead where the
    compiled loops do not (CUDA, no numba, ``use_compiled(False)``)."""
    if fast_available(kernel) and x.device.type == "cpu":
        return _EventConv.apply(x, kernel)
    return causal_conv_cm(x, kernel)

