"""The LIF time loop as one autograd node: forward keeps only the pre-reset membrane (T, B, N),
backward is one reverse loop. Same spikes and gradients as :func:`snn_delays.neuron.lif_sequence`
(the plain, op-by-op loop that autograd differentiates), which the tests compare it with.

Backward of the loop (detached hard reset, arctan surrogate; u = membrane before reset)::

    g_u[t]    = g_s[t] * surrogate'(u[t] - threshold) + carry[t] * (1 - s[t])
    carry[t-1] = decay * g_u[t]           (carry[T-1] = 0);      g_current[t] = g_u[t]

The loops run compiled (numba) on CPU and as PyTorch step loops elsewhere.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import _kernels

__all__ = ["lif_fused", "lif_forward_values", "lif_forward_loop", "lif_backward_loop", "leaky_fused"]


def lif_forward_loop(current: Tensor, decay: float, threshold: float) -> tuple[Tensor, Tensor]:
    """PyTorch loop: (spikes, membrane before reset), both like ``current`` (T, ...)."""
    u = torch.zeros_like(current[0])
    membrane = torch.empty_like(current)
    for t in range(current.shape[0]):
        u = decay * u + current[t]
        membrane[t] = u
        u = u.masked_fill(u >= threshold, 0.0)
    return (membrane >= threshold).to(current.dtype), membrane


def lif_backward_loop(grad_spikes: Tensor, membrane: Tensor, decay: float, threshold: float,
                      alpha: float) -> Tensor:
    """PyTorch reverse loop: gradient w.r.t. the input current, (T, ...)."""
    k = math.pi / 2 * alpha
    surrogate = (alpha / 2) / (1 + (k * (membrane - threshold)) ** 2)
    keep = (membrane < threshold).to(membrane.dtype)
    grad = torch.empty_like(membrane)
    carry = torch.zeros_like(membrane[0])
    for t in range(membrane.shape[0] - 1, -1, -1):
        g = grad_spikes[t] * surrogate[t] + carry * keep[t]
        grad[t] = g
        carry = decay * g
    return grad


def _compiled(x: Tensor) -> bool:
    return _kernels.AVAILABLE and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def lif_forward_values(current: Tensor, decay: float, threshold: float) -> tuple[Tensor, Tensor]:
    """(spikes, membrane before reset) of the loop, no autograd; compiled on CPU."""
    c = current.detach().contiguous()
    if _compiled(c):
        flat = c.reshape(c.shape[0], -1)
        spikes = torch.empty_like(flat)
        membrane = torch.empty_like(flat)
        _kernels.set_threads(torch.get_num_threads())
        _kernels.lif_forward(flat.numpy(), float(decay), float(threshold), spikes.numpy(), membrane.numpy())
        return spikes.view_as(c), membrane.view_as(c)
    return lif_forward_loop(c, decay, threshold)


class _LIFFused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current: Tensor, decay: float, threshold: float, alpha: float):
        spikes, membrane = lif_forward_values(current, decay, threshold)
        ctx.save_for_backward(membrane)
        ctx.constants = (decay, threshold, alpha)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):
        (membrane,) = ctx.saved_tensors
        decay, threshold, alpha = ctx.constants
        return _LIFFused.backward_values(grad_spikes, membrane, decay, threshold, alpha), None, None, None

    @staticmethod
    def backward_values(grad_spikes: Tensor, membrane: Tensor, decay: float, threshold: float,
                        alpha: float) -> Tensor:
        """Gradient w.r.t. the current from the membrane before reset; compiled on CPU."""
        g = grad_spikes.contiguous()
        if _compiled(membrane):
            flat_m = membrane.reshape(membrane.shape[0], -1)
            out = torch.empty_like(flat_m)
            _kernels.set_threads(torch.get_num_threads())
            _kernels.lif_backward(g.reshape(flat_m.shape).numpy(), flat_m.numpy(), float(decay), float(threshold),
                                  float(alpha), out.numpy())
            return out.view_as(membrane)
        return lif_backward_loop(g, membrane, decay, threshold, alpha)


def lif_fused(current: Tensor, tau: float, threshold: float = 1.0, alpha: float = 5.0) -> Tensor:
    """Spikes (T, B, N) of LIF neurons driven by ``current`` (T, B, N); one autograd node."""
    return _LIFFused.apply(current, 1.0 - 1.0 / tau, threshold, alpha)


class _LeakyFused(torch.autograd.Function):
    """u[t] = decay * u[t-1] + I[t] as one node; backward g_I[t] = g_u[t] + decay * g_I[t+1]."""

    @staticmethod
    def forward(ctx, current: Tensor, decay: float):
        out = torch.empty_like(current)
        u = torch.zeros_like(current[0])
        for t in range(current.shape[0]):
            u = torch.add(current[t], u, alpha=decay, out=out[t])
        ctx.decay = decay
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        out = torch.empty_like(grad)
        g = torch.zeros_like(grad[0])
        for t in range(grad.shape[0] - 1, -1, -1):
            g = torch.add(grad[t], g, alpha=ctx.decay, out=out[t])
        return out, None


def leaky_fused(current: Tensor, tau: float) -> Tensor:
    """Membrane (T, B, N) of non-spiking leaky integrators driven by ``current``; one autograd node."""
    return _LeakyFused.apply(current, 1.0 - 1.0 / tau)
