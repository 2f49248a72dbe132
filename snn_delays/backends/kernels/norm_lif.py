"""BatchNorm (batch statistics) + LIF on (T, C, B) as one compiled pass per channel, forward and
backward, keeping only the BatchNorm input (the recomputation happens in the backward). PyTorch
twin: the non-compiled branch of :mod:`snn_delays.backends.norm_lif`."""

from __future__ import annotations

import numpy as np

from .neuron import lif_step, surrogate_grad
from .runtime import njit, prange

__all__ = ["bn_lif_forward", "bn_lif_backward"]


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _lane_sum(lanes):  # pragma: no cover
    # the per-lane partial sums of a channel, in lane order (float64: ~1e-16 relative to a serial sum)
    total = 0.0
    for b in range(lanes.shape[0]):
        total += lanes[b]
    return total


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _bn_lif_forward(y, weight, bias, eps, decay, threshold, spikes, mean, var):  # pragma: no cover
    # per channel c: mean, biased var over (T, B) (sums per batch lane in float64, then over the
    # lanes: a serial sum would run at one add per add latency); h = (y - mean) * invstd * w + b; LIF -> spikes
    t_len, n_c, b_len = y.shape
    n = t_len * b_len
    for c in prange(n_c):
        lanes = np.zeros(b_len, dtype=np.float64)  # one partial sum per batch lane: the lanes vectorise
        for t in range(t_len):
            row = y[t, c]
            for b in range(b_len):
                lanes[b] += row[b]
        mu = _lane_sum(lanes) / n
        lanes[:] = 0.0
        for t in range(t_len):
            row = y[t, c]
            for b in range(b_len):
                dv = row[b] - mu
                lanes[b] += dv * dv
        sq = _lane_sum(lanes)
        mean[c] = mu
        var[c] = sq / n
        invstd = 1.0 / np.sqrt(sq / n + eps)
        alpha = invstd * weight[c]
        beta = bias[c] - mu * alpha
        u = np.zeros(b_len, dtype=y.dtype)
        for t in range(t_len):
            row = y[t, c]
            srow = spikes[t, c]
            for b in range(b_len):
                _, srow[b], u[b] = lif_step(u[b], row[b] * alpha + beta, decay, threshold)


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _bn_lif_backward(y, grad_spikes, weight, bias, mean, var, eps, decay, threshold, sg_alpha, gy, gw,
                     gb):  # pragma: no cover
    # recompute h and the membrane per channel, reverse LIF loop -> g_h, then BatchNorm's backward
    t_len, n_c, b_len = y.shape
    n = t_len * b_len
    for c in prange(n_c):
        mu = mean[c]
        invstd = 1.0 / np.sqrt(var[c] + eps)
        alpha = invstd * weight[c]
        beta = bias[c] - mu * alpha
        mem = np.empty((t_len, b_len), dtype=y.dtype)
        u = np.zeros(b_len, dtype=y.dtype)
        for t in range(t_len):
            row = y[t, c]
            for b in range(b_len):
                mem[t, b], _, u[b] = lif_step(u[b], row[b] * alpha + beta, decay, threshold)
        gh = np.empty((t_len, b_len), dtype=y.dtype)
        carry = np.zeros(b_len, dtype=y.dtype)
        for t in range(t_len - 1, -1, -1):
            gs = grad_spikes[t, c]
            for b in range(b_len):
                keep = 0.0 if mem[t, b] >= threshold else 1.0
                g = surrogate_grad(gs[b], mem[t, b] - threshold, sg_alpha) + carry[b] * keep
                gh[t, b] = g
                carry[b] = decay * g
        lanes1 = np.zeros(b_len, dtype=np.float64)  # sum g_h, per batch lane
        lanes2 = np.zeros(b_len, dtype=np.float64)  # sum g_h * xhat, per batch lane
        for t in range(t_len):
            row = y[t, c]
            for b in range(b_len):
                lanes1[b] += gh[t, b]
                lanes2[b] += gh[t, b] * (row[b] - mu) * invstd
        s1 = _lane_sum(lanes1)
        s2 = _lane_sum(lanes2)
        gb[c] = s1
        gw[c] = s2
        scale = weight[c] * invstd / n
        for t in range(t_len):
            row = y[t, c]
            grow = gy[t, c]
            for b in range(b_len):
                xhat = (row[b] - mu) * invstd
                grow[b] = scale * (n * gh[t, b] - s1 - xhat * s2)


def bn_lif_forward(y, weight, bias, eps, decay, threshold, spikes, mean, var) -> None:
    """BatchNorm with batch statistics + LIF on (T, C, B); spikes, mean (C,), biased var (C,) written."""
    _bn_lif_forward(y, weight, bias, float(eps), float(decay), float(threshold), spikes, mean, var)


def bn_lif_backward(y, grad_spikes, weight, bias, mean, var, eps, decay, threshold, alpha, gy, gw, gb) -> None:
    """Gradients of y (T, C, B), BatchNorm weight and bias (C,) from the spikes' gradient."""
    _bn_lif_backward(y, grad_spikes, weight, bias, mean, var, float(eps), float(decay), float(threshold),
                     float(alpha), gy, gw, gb)
