"""The adaptive LIF (adLIF, symplectic Euler) as the float64 reference simulator computes it.

Torch-free twin of ``snn_delays.adaptive_neuron`` (same equations, same operation order, so in
float64 the membranes, adaptations and spikes equal the PyTorch model's bit for bit). Per neuron,
dt = 1 step, u[-1] = w[-1] = 0, I[t] = input[t] + bias::

    v[t] = decay_u * u[t-1] + (1 - decay_u) * (I[t] - w[t-1])      membrane before reset
    s[t] = v[t] >= threshold  (or > threshold: ``rule``)
    u[t] = 0 where s[t] else v[t]
    w[t] = decay_w * w[t-1] + ((1 - decay_w) * q) * (a * u[t] + b * s[t])

decay_u = exp(-1/tau_u_steps), decay_w = exp(-1/tau_w_steps); decay_u, decay_w, a, b per neuron
(n,), q a scalar. :mod:`.simulate` runs the adLIF layers of a network.h5 (format_version 3) with
:func:`adlif_step`.
"""

from __future__ import annotations

import numpy as np

from .chip import crossed

__all__ = ["adlif_step", "adlif_float"]


def adlif_step(u: np.ndarray, w: np.ndarray, current: np.ndarray, decay_u: np.ndarray, decay_w: np.ndarray,
               a: np.ndarray, b: np.ndarray, q: float, threshold, rule: str = ">="):
    """One float64 step: state u, w and input current (B, n); parameters (n,) ->
    (v: membrane before reset, s: spikes as 0/1 float64, u, w), each (B, n)."""
    v = decay_u * u + (1 - decay_u) * (current - w)
    fired = crossed(v, threshold, rule)
    s = fired.astype(np.float64)
    u = np.where(fired, 0.0, v)
    w = decay_w * w + ((1 - decay_w) * q) * (a * u + b * s)
    return v, s, u, w


def adlif_float(current: np.ndarray, decay_u: np.ndarray, decay_w: np.ndarray, a: np.ndarray, b: np.ndarray,
                q: float, threshold, bias=0.0, rule: str = ">=") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """adLIF neurons over a sequence in float64: current (T, B, n) -> (spikes uint8, membrane before
    reset, adaptation w), each (T, B, n). ``bias`` (n,) or scalar is added to each step's input."""
    current = np.asarray(current, dtype=np.float64)
    if current.ndim != 3:
        raise ValueError(f"adlif_float: expected current (T, B, n), got {current.shape}")
    params = [np.asarray(p, dtype=np.float64) for p in (decay_u, decay_w, a, b)]
    for p in params:
        if p.shape not in ((), (current.shape[2],)):
            raise ValueError(f"adlif_float: expected per-neuron parameters ({current.shape[2]},), got {p.shape}")
    u = np.zeros(current.shape[1:])
    w = np.zeros(current.shape[1:])
    spikes = np.zeros(current.shape, dtype=np.uint8)
    memb = np.empty_like(current)
    adapt = np.empty_like(current)
    for t in range(current.shape[0]):
        memb[t], s, u, w = adlif_step(u, w, current[t] + bias, *params, float(q), threshold, rule)
        spikes[t] = s
        adapt[t] = w
    return spikes, memb, adapt
