"""The adaptive LIF (adLIF, symplectic-Euler discretisation of Baronig et al. 2024) in PyTorch,
written once, and its time loop as one autograd node with a hand-written backward.

One step, per neuron h (dt = 1 step; ``decay_u`` = alpha, ``decay_w`` = beta of the papers)::

    v[t] = decay_u * u[t-1] + (1 - decay_u) * (I[t] - w[t-1])      membrane before reset
    s[t] = Heaviside(v[t] - threshold)                             fires on v >= threshold
    u[t] = 0 where s[t] else v[t]                                  hard reset, detached
    w[t] = decay_w * w[t-1] + ((1 - decay_w) * q) * (a * u[t] + b * s[t])

u[-1] = w[-1] = 0. The adaptation w uses the membrane *after* this step's update and reset
(symplectic Euler); the spike s[t] in it carries the arctan surrogate gradient, the reset does not.

:func:`adlif_update` is that step; the plain loop (:mod:`snn_delays.adaptive_neuron`, autograd op by
op), the value loop here, and the numba twins in :mod:`.kernels.adlif` compute it in the same
operation order. The fused node keeps only v (T, ...) and recomputes w in its backward, a reverse
loop (keep[t] = 1 - s[t], k = (1 - decay_w) * q, surrogate' at v[t] - threshold)::

    gw = carry_w                                   dL/dw[t]
    gu = carry_u + gw * k * a                      dL/du[t]
    gv = gu * keep[t] + (g_s[t] + gw * k * b) * surrogate'
    g_I[t] = gv * (1 - decay_u);  carry_u = gv * decay_u;  carry_w = gw * decay_w - g_I[t]
    g_decay_u += gv * (u[t-1] - v[t]) / (1 - decay_u)        (= gv * (u[t-1] - I[t] + w[t-1]))
    g_decay_w += gw * (w[t-1] - q * (a * u[t] + b * s[t]));  g_a += gw * k * u[t];  g_b += gw * k * s[t]

Parameters are per neuron, (H,), along ``channel_axis`` (2 for (T, B, H), 1 for the model's
channel-major (T, H, B)). Compiled (numba) on CPU, PyTorch loops elsewhere.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from .compiled import fast_available, set_threads
from .kernels import adlif as adlif_loops
from .lif import surrogate_grad

__all__ = ["adlif_update", "adlif_fused", "adlif_forward_loop", "adlif_backward_loop", "adlif_forward_values",
           "adlif_backward_values"]


def heaviside(x: Tensor) -> Tensor:
    """1 where x >= 0, else 0, in x's dtype (no gradient)."""
    return (x >= 0).to(x.dtype)


def adlif_update(u: Tensor, w: Tensor, current: Tensor, decay_u: Tensor, decay_w: Tensor, a: Tensor, b: Tensor,
                 q: float, threshold: float, spike: Callable[[Tensor], Tensor] = heaviside):
    """One adLIF step (the equations of this module, once). All tensors broadcast to the state's
    shape. ``spike`` maps v - threshold to spikes (Heaviside, or ``spike_atan`` for a surrogate).
    Returns (v: membrane before reset, s: spikes, u: membrane after reset, w: adaptation)."""
    v = decay_u * u + (1 - decay_u) * (current - w)
    s = spike(v - threshold)
    u = v.masked_fill(v >= threshold, 0.0)  # hard reset; masked_fill passes no gradient where it fired
    w = decay_w * w + ((1 - decay_w) * q) * (a * u + b * s)
    return v, s, u, w


def _shape_params(params, x: Tensor, channel_axis: int):
    """(H,) parameters -> broadcastable to one step x[t] (B, H) or (H, B), in x's dtype."""
    view = (1, -1) if channel_axis == x.dim() - 1 else (-1, 1)
    return [p.to(x.dtype).reshape(view) for p in params]


def adlif_forward_loop(current: Tensor, params, q: float, threshold: float, channel_axis: int) -> tuple[Tensor, Tensor]:
    """PyTorch loop, no autograd: (spikes, membrane before reset), both like ``current`` (T, X, Y)."""
    du, dw, a, b = _shape_params(params, current, channel_axis)
    u = current.new_zeros(current.shape[1:])
    w = current.new_zeros(current.shape[1:])
    membrane = torch.empty_like(current)
    for t in range(current.shape[0]):
        membrane[t], _, u, w = adlif_update(u, w, current[t], du, dw, a, b, q, threshold)
    return heaviside(membrane - threshold), membrane


def adlif_backward_loop(grad_spikes: Tensor, membrane: Tensor, params, q: float, threshold: float, alpha: float,
                        channel_axis: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """PyTorch reverse loop: gradients of the current (T, X, Y) and of decay_u, decay_w, a, b (H,)."""
    du, dw, a, b = _shape_params(params, membrane, channel_axis)
    zero = membrane.new_zeros(membrane.shape[1:])
    fired = membrane >= threshold
    s = fired.to(membrane.dtype)
    keep = 1 - s
    u = membrane.masked_fill(fired, 0.0)
    k = (1 - dw) * q
    w = torch.empty_like(membrane)  # w[t] recomputed from the membrane
    w_prev = zero
    for t in range(membrane.shape[0]):
        w_prev = w[t] = dw * w_prev + k * (a * u[t] + b * s[t])
    through_spikes = surrogate_grad(torch.ones_like(membrane), membrane - threshold, alpha)
    grad = torch.empty_like(membrane)
    carry_u = carry_w = zero
    acc = [zero.clone() for _ in range(4)]
    for t in range(membrane.shape[0] - 1, -1, -1):
        gw = carry_w
        gu = carry_u + gw * k * a
        gv = gu * keep[t] + (grad_spikes[t] + gw * k * b) * through_spikes[t]
        grad[t] = gi = gv * (1 - du)
        carry_u = gv * du
        carry_w = gw * dw - gi
        u_prev = u[t - 1] if t else zero
        w_prev = w[t - 1] if t else zero
        acc[0] += gv * (u_prev - membrane[t]) / (1 - du)
        acc[1] += gw * (w_prev - q * (a * u[t] + b * s[t]))
        acc[2] += gw * k * u[t]
        acc[3] += gw * k * s[t]
    other = 1 if channel_axis == membrane.dim() - 1 else 2  # the non-channel axis of a step
    return (grad, *(g.sum(other - 1) for g in acc))


def adlif_forward_values(current: Tensor, params, q: float, threshold: float, channel_axis: int):
    """(spikes, membrane before reset) of the loop for current (T, X, Y); compiled on CPU."""
    c = current.detach().contiguous()
    if fast_available(c):
        spikes = torch.empty_like(c)
        membrane = torch.empty_like(c)
        set_threads()
        adlif_loops.adlif_forward(c.numpy(), *[p.detach().to(c.dtype).contiguous().numpy() for p in params],
                                  float(q), float(threshold), channel_axis == 1, spikes.numpy(), membrane.numpy())
        return spikes, membrane
    return adlif_forward_loop(c, [p.detach() for p in params], q, threshold, channel_axis)


def adlif_backward_values(grad_spikes: Tensor, membrane: Tensor, params, q: float, threshold: float, alpha: float,
                          channel_axis: int):
    """Gradients of the current and of the four parameters from the membrane before reset; compiled on CPU."""
    g = grad_spikes.contiguous().to(membrane.dtype)
    if fast_available(membrane):
        gc = torch.empty_like(membrane)
        acc = torch.empty((4,) + membrane.shape[1:], dtype=torch.float64)  # summed over time, per element
        set_threads()
        adlif_loops.adlif_backward(g.numpy(), membrane.numpy(),
                                   *[p.detach().to(membrane.dtype).contiguous().numpy() for p in params],
                                   float(q), float(threshold), float(alpha), channel_axis == 1, gc.numpy(),
                                   acc.numpy())
        other = 1 if channel_axis == 2 else 2  # the non-channel axis within acc[i] (X, Y)
        return (gc, *(acc[i].sum(other - 1).to(membrane.dtype) for i in range(4)))
    return adlif_backward_loop(g, membrane, [p.detach() for p in params], q, threshold, alpha, channel_axis)


class _AdLIFFused(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current: Tensor, decay_u: Tensor, decay_w: Tensor, a: Tensor, b: Tensor, q: float,
                threshold: float, alpha: float, channel_axis: int):
        params = (decay_u, decay_w, a, b)
        spikes, membrane = adlif_forward_values(current, params, q, threshold, channel_axis)
        ctx.save_for_backward(membrane, *params)
        ctx.constants = (q, threshold, alpha, channel_axis)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):
        membrane, *params = ctx.saved_tensors
        q, threshold, alpha, channel_axis = ctx.constants
        gc, *gp = adlif_backward_values(grad_spikes, membrane, params, q, threshold, alpha, channel_axis)
        gp = [g.to(p.dtype) for g, p in zip(gp, params)]
        return (gc, *gp, None, None, None, None)


def adlif_fused(current: Tensor, decay_u: Tensor, decay_w: Tensor, a: Tensor, b: Tensor, q: float,
                threshold: float = 1.0, alpha: float = 5.0, channel_axis: int = 2) -> Tensor:
    """Spikes like ``current`` (T, B, H) (``channel_axis=2``) or (T, H, B) (``channel_axis=1``) of
    adLIF neurons with per-neuron parameters (H,); one autograd node."""
    return _AdLIFFused.apply(current, decay_u, decay_w, a, b, q, threshold, alpha, channel_axis)
