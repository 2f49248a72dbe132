"""Leaky integrate-and-fire neuron with a hard reset and the arctan surrogate gradient.

Discrete time, dt = 1 step::

    u[t] = (1 - 1/tau) * u[t-1] + I[t]          tau in steps (>= 1), u[-1] = 0
    S[t] = Heaviside(u[t] - threshold)          (fires on u >= threshold)
    u[t] <- 0 where S[t] = 1                    (hard reset; the reset is detached from the graph)

Backward: dS/du = alpha / 2 / (1 + (pi/2 * alpha * (u - threshold))^2), the derivative of
``atan_surrogate``. Same spikes, membranes and gradients as SpikingJelly's multi-step
``LIFNode(decay_input=False, v_reset=0, detach_reset=True, surrogate_function=ATan(alpha))``.
A neuron with ``threshold=inf`` never spikes (the readout): it returns its membrane.

The step and the surrogate's derivative are written once, in :mod:`snn_delays.backends.lif`
(``lif_step``, ``surrogate_grad``), and used here, by the fused nodes and (as numba twins) by the
compiled loops. Shapes: (T, B, N) time-major. No state is kept between calls.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .backends.lif import leaky_fused, lif_fused, lif_step, spike_atan

__all__ = ["LIF", "lif_sequence", "leaky_integrate", "spike_atan", "atan_surrogate"]


def atan_surrogate(x: Tensor, alpha: float = 5.0) -> Tensor:
    """The smooth function whose derivative is the surrogate gradient: atan(pi/2 alpha x)/pi + 1/2."""
    return torch.atan(math.pi / 2 * alpha * x) / math.pi + 0.5


def lif_sequence(current: Tensor, tau: float, threshold: float = 1.0, alpha: float = 5.0,
                 return_membrane: bool = False, fused: bool | None = None):
    """Run the LIF update over a whole sequence. current (T, B, N) -> spikes (T, B, N)
    (and, if ``return_membrane``, the membrane after reset, (T, B, N)).

    ``fused`` (default: whenever the membrane is not requested) runs the loop as one autograd
    node with a hand-written backward (:mod:`snn_delays.backends.lif`), compiled on CPU: same
    spikes and gradients, far fewer stored intermediates. ``fused=False`` is the plain loop below,
    which autograd differentiates op by op (the reference the fused one is tested against)."""
    if fused is None:
        fused = not return_membrane
    if fused and not return_membrane:
        return lif_fused(current, tau, threshold, alpha)
    decay = 1.0 - 1.0 / tau
    u = torch.zeros_like(current[0])
    spikes, membranes = [], []
    for t in range(current.shape[0]):
        v, _, u = lif_step(u, current[t], decay, threshold)
        s = spike_atan(v - threshold, alpha)  # the same spikes, with the surrogate gradient
        spikes.append(s)
        if return_membrane:
            membranes.append(u)
    out = torch.stack(spikes)
    return (out, torch.stack(membranes)) if return_membrane else out


def leaky_integrate(current: Tensor, tau: float, fused: bool = True) -> Tensor:
    """A neuron that never spikes: membrane u[t] = (1 - 1/tau) u[t-1] + I[t]; (T, B, N) -> (T, B, N).

    ``fused`` runs the loop as one autograd node with a hand-written reverse loop (no per-step
    graph); ``fused=False`` is the plain loop autograd differentiates, its reference."""
    decay = 1.0 - 1.0 / tau
    if decay == 0.0:
        return current
    if fused:
        return leaky_fused(current, tau)
    u = torch.zeros_like(current[0])
    out = []
    for t in range(current.shape[0]):
        u = decay * u + current[t]
        out.append(u)
    return torch.stack(out)


class LIF(nn.Module):
    """LIF neurons over a sequence: (T, B, N) currents -> (T, B, N) spikes (or membrane if
    ``threshold`` is infinite). ``tau`` in steps."""

    def __init__(self, tau: float, threshold: float = 1.0, alpha: float = 5.0):
        super().__init__()
        if tau < 1.0:
            raise ValueError(f"tau is in steps and must be >= 1; got {tau}")
        self.tau, self.threshold, self.alpha = float(tau), float(threshold), float(alpha)

    @property
    def spiking(self) -> bool:
        return math.isfinite(self.threshold)

    def forward(self, current: Tensor) -> Tensor:
        if current.dim() != 3:
            raise ValueError(f"LIF: expected input (T, B, N) or (T, N, B), got {tuple(current.shape)}")
        if not self.spiking:
            return leaky_integrate(current, self.tau)
        return lif_sequence(current, self.tau, self.threshold, self.alpha)

    def extra_repr(self) -> str:
        return f"tau={self.tau} steps, threshold={self.threshold}, alpha={self.alpha}"
