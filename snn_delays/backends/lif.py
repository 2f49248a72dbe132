"""The LIF equations in PyTorch, written once, and the LIF time loop as one autograd node.

:func:`lif_step` (the update, threshold and hard reset) and :func:`surrogate_grad` (the arctan
surrogate's chain rule) are used by :mod:`snn_delays.neuron` (the plain loop autograd
differentiates), by the fused nodes here and in :mod:`.norm_lif`; the compiled loops use their numba
twins in :mod:`.kernels.neuron`.

The fused node's forward keeps only the pre-reset membrane (T, B, N); its backward is one reverse
loop (detached hard reset, arctan surrogate; u = membrane before reset)::

    g_u[t]    = g_s[t] * surrogate'(u[t] - threshold) + carry[t] * (1 - s[t])
    carry[t-1] = decay * g_u[t]           (carry[T-1] = 0);      g_current[t] = g_u[t]

Same spikes and gradients as :func:`snn_delays.neuron.lif_sequence` with ``fused=False``, which the
tests compare it with. Compiled (numba) on CPU, PyTorch step loops elsewhere.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .compiled import fast_available, set_threads
from .kernels import neuron as neuron_loops

__all__ = ["lif_step", "surrogate_grad", "spike_atan", "lif_fused", "lif_forward_values", "lif_backward_values",
           "lif_forward_loop", "lif_backward_loop", "leaky_fused"]


def lif_step(u: Tensor, current: Tensor, decay: float, threshold: float) -> tuple[Tensor, Tensor, Tensor]:
    """One LIF step: (membrane before reset v = decay * u + current, spikes v >= threshold (bool),
    membrane after the hard reset: 0 where it spiked; no gradient flows through the reset)."""
    v = decay * u + current
    fired = v >= threshold
    return v, fired, v.masked_fill(fired, 0.0)


def surrogate_grad(grad: Tensor, x: Tensor, alpha: float) -> Tensor:
    """``grad`` times the arctan surrogate derivative at x = u - threshold:
    d/dx [atan(pi/2 alpha x) / pi + 1/2] = alpha / 2 / (1 + (pi/2 alpha x)^2)."""
    return grad * (alpha / 2) / (1 + (math.pi / 2 * alpha * x) ** 2)


class _SpikeATan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, alpha: float) -> Tensor:
        ctx.save_for_backward(x)
        ctx.alpha = alpha
        return (x >= 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (x,) = ctx.saved_tensors
        return surrogate_grad(grad, x, ctx.alpha), None


def spike_atan(x: Tensor, alpha: float = 5.0) -> Tensor:
    """Heaviside(x) forward (1 where x >= 0), arctan surrogate gradient backward."""
    return _SpikeATan.apply(x, alpha)


def lif_forward_loop(current: Tensor, decay: float, threshold: float) -> tuple[Tensor, Tensor]:
    """PyTorch loop: (spikes, membrane before reset), both like ``current`` (T, ...)."""
    u = torch.zeros_like(current[0])
    membrane = torch.empty_like(current)
    for t in range(current.shape[0]):
        membrane[t], _, u = lif_step(u, current[t], decay, threshold)
    return (membrane >= threshold).to(current.dtype), membrane


def lif_backward_loop(grad_spikes: Tensor, membrane: Tensor, decay: float, threshold: float,
                      alpha: float) -> Tensor:
    """PyTorch reverse loop: gradient w.r.t. the input current, (T, ...)."""
    through_spikes = surrogate_grad(grad_spikes, membrane - threshold, alpha)
    keep = (membrane < threshold).to(membrane.dtype)
    grad = torch.empty_like(membrane)
    carry = torch.zeros_like(membrane[0])
    for t in range(membrane.shape[0] - 1, -1, -1):
        g = through_spikes[t] + carry * keep[t]
        grad[t] = g
        carry = decay * g
    return grad


def lif_forward_values(current: Tensor, decay: float, threshold: float) -> tuple[Tensor, Tensor]:
    """(spikes, membrane before reset) of the loop, no autograd; compiled on CPU."""
    c = current.detach().contiguous()
    if fast_available(c):
        flat = c.reshape(c.shape[0], -1)
        spikes = torch.empty_like(flat)
        membrane = torch.empty_like(flat)
        set_threads()
        neuron_loops.lif_forward(flat.numpy(), float(decay), float(threshold), spikes.numpy(), membrane.numpy())
        return spikes.view_as(c), membrane.view_as(c)
    return lif_forward_loop(c, decay, threshold)


def lif_backward_values(grad_spikes: Tensor, membrane: Tensor, decay: float, threshold: float,
                        alpha: float) -> Tensor:
    """Gradient w.r.t. the current from the membrane before reset; compiled on CPU."""
    g = grad_spikes.contiguous()
    if fast_available(membrane):
        flat_m = membrane.reshape(membrane.shape[0], -1)
        out = torch.empty_like(flat_m)
        set_threads()
        neuron_loops.lif_backward(g.reshape(flat_m.shape).numpy(), flat_m.numpy(), float(decay), float(threshold),
                                  float(alpha), out.numpy())
        return out.view_as(membrane)
    return lif_backward_loop(g, membrane, decay, threshold, alpha)


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
        return lif_backward_values(grad_spikes, membrane, decay, threshold, alpha), None, None, None


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
