"""The LIF update and the arctan surrogate gradient as inlined numba helpers, and the LIF time
loop (forward, reverse) on (T, M) arrays; every compiled loop with a LIF in it uses these two
helpers. PyTorch twins: :mod:`snn_delays.backends.lif`."""

from __future__ import annotations

import numpy as np

from .runtime import njit, prange

__all__ = ["lif_step", "surrogate_grad", "lif_forward", "lif_backward"]


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def lif_step(u, current, decay, threshold):  # pragma: no cover
    # One step: v = decay * u + current (membrane before reset), spike s = (v >= threshold) (bool),
    # membrane after the hard reset (0 where s). Branch-free (a select): the loops using it vectorise.
    v = decay * u + current
    s = v >= threshold
    return v, s, (v * 0 if s else v)


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def surrogate_grad(grad, x, alpha):  # pragma: no cover
    # grad times the arctan surrogate derivative at x = u - threshold:
    # d/dx [atan(pi/2 alpha x) / pi + 1/2] = alpha / 2 / (1 + (pi/2 alpha x)^2)
    k = np.pi / 2 * alpha
    return grad * (alpha / 2) / (1 + (k * x) * (k * x))


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _lif_forward(current, decay, threshold, spikes, membrane):  # pragma: no cover
    # current (T, M); membrane = u before reset; spikes = (u >= threshold); branch-free so
    # the loop over a chunk of neurons vectorises
    t_len, n = current.shape
    n_chunks = (n + 511) // 512
    for c in prange(n_chunks):
        m0 = c * 512
        m1 = min(n, m0 + 512)
        u = np.zeros(m1 - m0, dtype=current.dtype)
        for t in range(t_len):
            cur = current[t, m0:m1]
            mem = membrane[t, m0:m1]
            spk = spikes[t, m0:m1]
            for m in range(m1 - m0):
                v, s, u[m] = lif_step(u[m], cur[m], decay, threshold)
                mem[m] = v
                spk[m] = s


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _lif_backward(grad_spikes, membrane, decay, threshold, alpha, grad_current):  # pragma: no cover
    # reverse loop of the LIF with detached reset and the arctan surrogate
    t_len, n = membrane.shape
    n_chunks = (n + 511) // 512
    for c in prange(n_chunks):
        m0 = c * 512
        m1 = min(n, m0 + 512)
        carry = np.zeros(m1 - m0, dtype=membrane.dtype)  # decay * dL/du[t + 1]
        for t in range(t_len - 1, -1, -1):
            mem = membrane[t, m0:m1]
            gs = grad_spikes[t, m0:m1]
            gc = grad_current[t, m0:m1]
            for m in range(m1 - m0):
                keep = np.float32(0.0) if mem[m] >= threshold else np.float32(1.0)
                g = surrogate_grad(gs[m], mem[m] - threshold, alpha) + carry[m] * keep
                gc[m] = g
                carry[m] = decay * g


def lif_forward(current, decay, threshold, spikes, membrane) -> None:
    """current (T, M) -> spikes (T, M) and membrane before reset (T, M), both overwritten."""
    _lif_forward(current, decay, threshold, spikes, membrane)


def lif_backward(grad_spikes, membrane, decay, threshold, alpha, grad_current) -> None:
    """The reverse loop: gradient (T, M) of the current from that of the spikes, overwritten."""
    _lif_backward(grad_spikes, membrane, decay, threshold, alpha, grad_current)
