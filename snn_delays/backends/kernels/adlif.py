"""The adaptive LIF (symplectic-Euler adLIF) step as an inlined numba helper, and its time loop
(forward, reverse with the parameters' gradients) on (T, X, Y) arrays with per-neuron parameters
along X (``cm``: channel-major (T, H, B)) or Y ((T, B, H)). PyTorch twin and equations:
:mod:`snn_delays.backends.adlif` (same operation order, so float64 values agree bit for bit)."""

from __future__ import annotations

import numpy as np

from .neuron import surrogate_grad
from .runtime import njit, prange

__all__ = ["adlif_step", "adlif_forward", "adlif_backward"]


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def adlif_step(u, w, current, decay_u, one_minus_du, decay_w, k, a, b, zero, one, threshold):  # pragma: no cover
    # v = decay_u u + (1 - decay_u)(I - w); s = v >= threshold; u = 0 where s else v;
    # w = decay_w w + k (a u + b s), k = (1 - decay_w) q. (1 - decay_u), k, zero and one come in the
    # arrays' dtype (a Python 1 would promote float32 to float64 here, and PyTorch computes in float32).
    # Returns (v, s as 0/1, u, w).
    v = decay_u * u + one_minus_du * (current - w)
    fired = v >= threshold
    s = one if fired else zero
    un = zero if fired else v
    wn = decay_w * w + k * (a * un + b * s)
    return v, s, un, wn


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _row(param, x, n_y, cm):  # pragma: no cover
    # the parameters of the neurons along a row of Y: param itself (neurons along Y), or param[x]
    # repeated (neurons along X); either way the inner loop indexes it by y and vectorises
    if cm:
        r = np.empty(n_y, dtype=param.dtype)
        r[:] = param[x]
        return r
    return param


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _adlif_forward(current, decay_u, one_minus_du, decay_w, k, a, b, consts, threshold, cm, spikes,
                   membrane):  # pragma: no cover
    t_len, n_x, n_y = current.shape
    zero = consts[0]
    one = consts[1]
    for x in prange(n_x):
        du = _row(decay_u, x, n_y, cm)
        omdu = _row(one_minus_du, x, n_y, cm)
        dw = _row(decay_w, x, n_y, cm)
        kk = _row(k, x, n_y, cm)
        pa = _row(a, x, n_y, cm)
        pb = _row(b, x, n_y, cm)
        u = np.zeros(n_y, dtype=current.dtype)
        w = np.zeros(n_y, dtype=current.dtype)
        for t in range(t_len):
            cur = current[t, x]
            mem = membrane[t, x]
            spk = spikes[t, x]
            for y in range(n_y):
                mem[y], spk[y], u[y], w[y] = adlif_step(u[y], w[y], cur[y], du[y], omdu[y], dw[y], kk[y], pa[y], pb[y],
                                                        zero, one, threshold)


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _adlif_backward(grad_spikes, membrane, decay_u, one_minus_du, decay_w, k, a, b, consts, q, threshold, alpha,
                    cm, grad_current, acc):  # pragma: no cover
    # acc (4, X, Y) float64: per element, summed over time, the gradients of decay_u, decay_w, a, b
    t_len, n_x, n_y = membrane.shape
    zero = consts[0]
    one = consts[1]
    for x in prange(n_x):
        du = _row(decay_u, x, n_y, cm)
        omdu = _row(one_minus_du, x, n_y, cm)
        dw = _row(decay_w, x, n_y, cm)
        kk = _row(k, x, n_y, cm)
        pa = _row(a, x, n_y, cm)
        pb = _row(b, x, n_y, cm)
        w_seq = np.empty((t_len + 1, n_y), dtype=membrane.dtype)  # w_seq[t + 1] = w[t], recomputed; w_seq[0] = 0
        w_seq[0] = zero
        for t in range(t_len):
            mem = membrane[t, x]
            for y in range(n_y):
                v = mem[y]
                s = one if v >= threshold else zero
                un = zero if v >= threshold else v
                w_seq[t + 1, y] = dw[y] * w_seq[t, y] + kk[y] * (pa[y] * un + pb[y] * s)
        carry_u = np.zeros(n_y, dtype=membrane.dtype)
        carry_w = np.zeros(n_y, dtype=membrane.dtype)
        g_du = np.zeros(n_y)  # sum of gv * (u[t-1] - v[t]); divided by (1 - decay_u) at the end
        g_dw = np.zeros(n_y)
        g_a = np.zeros(n_y)
        g_b = np.zeros(n_y)
        for t in range(t_len - 1, -1, -1):
            mem = membrane[t, x]
            gs = grad_spikes[t, x]
            gc = grad_current[t, x]
            prev = membrane[t - 1, x] if t > 0 else mem  # unused at t = 0
            for y in range(n_y):
                v = mem[y]
                fired = v >= threshold
                s = one if fired else zero
                un = zero if fired else v
                keep = zero if fired else one
                up = zero if (t == 0 or prev[y] >= threshold) else prev[y]
                gw = carry_w[y]
                gu = carry_u[y] + gw * kk[y] * pa[y]
                gv = gu * keep + surrogate_grad(gs[y] + gw * kk[y] * pb[y], v - threshold, alpha)
                gi = gv * omdu[y]
                gc[y] = gi
                carry_u[y] = gv * du[y]
                carry_w[y] = gw * dw[y] - gi
                g_du[y] += gv * (up - v)
                g_dw[y] += gw * (w_seq[t, y] - q * (pa[y] * un + pb[y] * s))
                g_a[y] += gw * kk[y] * un
                g_b[y] += gw * kk[y] * s
        for y in range(n_y):
            acc[0, x, y] = g_du[y] / omdu[y]
            acc[1, x, y] = g_dw[y]
            acc[2, x, y] = g_a[y]
            acc[3, x, y] = g_b[y]


def _derived(decay_u, decay_w, q):
    # (1 - decay_u), k = (1 - decay_w) * q and the constants 0, 1, all in the parameters' dtype
    dt = decay_u.dtype.type
    return dt(1) - decay_u, (dt(1) - decay_w) * dt(q), np.array([0, 1], dtype=decay_u.dtype)


def adlif_forward(current, decay_u, decay_w, a, b, q, threshold, cm, spikes, membrane) -> None:
    """current (T, X, Y), parameters (H,) in current's dtype -> spikes and membrane before reset
    (T, X, Y), overwritten. ``cm``: the neurons lie along X (channel-major), else along Y."""
    omdu, k, consts = _derived(decay_u, decay_w, q)
    _adlif_forward(current, decay_u, omdu, decay_w, k, a, b, consts, float(threshold), bool(cm), spikes, membrane)


def adlif_backward(grad_spikes, membrane, decay_u, decay_w, a, b, q, threshold, alpha, cm, grad_current,
                   acc) -> None:
    """The reverse loop: gradient (T, X, Y) of the current, and acc (4, X, Y) float64, the gradients
    of decay_u, decay_w, a, b per element summed over time (the caller sums over the non-neuron axis)."""
    omdu, k, consts = _derived(decay_u, decay_w, q)
    _adlif_backward(grad_spikes, membrane, decay_u, omdu, decay_w, k, a, b, consts, float(q), float(threshold),
                    float(alpha), bool(cm), grad_current, acc)
