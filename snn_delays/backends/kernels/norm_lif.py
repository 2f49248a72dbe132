"""BatchNorm (batch statistics) + LIF on (T, C, B) as one compiled pass per channel, forward and
backward, keeping only the BatchNorm input (the recomputation happens in the backward). PyTorch
twin: the non-compiled branch of :mod:`snn_delays.backends.norm_lif`."""

from __future__ import annotations

import numpy as np

from .neuron import lif_step, surrogate_grad
from .runtime import njit, prange

__all__ = ["bn_lif_forward", "bn_lif_dropout_forward", "bn_lif_backward"]


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _lane_sum(lanes):  # pragma: no cover
    # the per-lane partial sums of a channel, in lane order (float64: ~1e-16 relative to a serial sum)
    total = 0.0
    for b in range(lanes.shape[0]):
        total += lanes[b]
    return total


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _channel_stats(y, c, lanes):  # pragma: no cover
    # mean and biased variance of channel c of y (T, C, B) over (T, B): sums per batch lane in float64
    # (lanes: a (B,) scratch; the lanes vectorise), then over the lanes (a serial sum would run at one
    # add per add latency)
    t_len, _, b_len = y.shape
    n = t_len * b_len
    lanes[:] = 0.0
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
    return mu, _lane_sum(lanes) / n


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _channel_affine(y, c, weight, bias, eps, mean, var):  # pragma: no cover
    # channel c's batch statistics written to mean[c], var[c]; returns (alpha, beta) of the BatchNorm
    # as h = y * alpha + beta
    lanes = np.empty(y.shape[2], dtype=np.float64)
    mu, v = _channel_stats(y, c, lanes)
    mean[c] = mu
    var[c] = v
    alpha = 1.0 / np.sqrt(v + eps) * weight[c]
    return alpha, bias[c] - mu * alpha


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _bn_lif_forward(y, weight, bias, eps, decay, threshold, spikes, mean, var):  # pragma: no cover
    # per channel c: mean, biased var over (T, B); h = (y - mean) * invstd * w + b; LIF -> spikes
    t_len, n_c, b_len = y.shape
    for c in prange(n_c):
        alpha, beta = _channel_affine(y, c, weight, bias, eps, mean, var)
        u = np.zeros(b_len, dtype=y.dtype)
        for t in range(t_len):
            row = y[t, c]
            srow = spikes[t, c]
            for b in range(b_len):
                _, srow[b], u[b] = lif_step(u[b], row[b] * alpha + beta, decay, threshold)


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _bn_lif_dropout_forward(y, weight, bias, eps, decay, threshold, keep, scale, out, packed, mean, var,
                            nnz):  # pragma: no cover
    # as _bn_lif_forward, then the dropout product of each spike, out[t, c, b] = s * keep[c, b] (the
    # float product torch computes), and its bytes packed = out / scale (the bytes
    # kernels.pack._dropout_pack_u8 writes; exact: s is 0 or 1 and keep 0 or scale * an integer);
    # the spikes themselves are not stored. nnz[c]: non-zero entries of out in channel c.
    t_len, n_c, b_len = y.shape
    for c in prange(n_c):
        alpha, beta = _channel_affine(y, c, weight, bias, eps, mean, var)
        u = np.zeros(b_len, dtype=y.dtype)
        spk = np.empty(b_len, dtype=y.dtype)
        k = keep[c]
        n_nz = 0
        for t in range(t_len):
            row = y[t, c]
            for b in range(b_len):
                _, spk[b], u[b] = lif_step(u[b], row[b] * alpha + beta, decay, threshold)
            o = out[t, c]
            p = packed[t, c]
            for b in range(b_len):
                w = spk[b] * k[b]
                o[b] = w
                p[b] = np.uint8(w / scale)
                n_nz += np.int64(w != 0)
        nnz[c] = n_nz


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _bn_lif_backward(y, grad_spikes, weight, bias, mean, var, eps, decay, threshold, sg_alpha, keep, masked, gy, gw,
                     gb):  # pragma: no cover
    # recompute h and the membrane per channel, reverse LIF loop -> g_h, then BatchNorm's backward;
    # masked: grad_spikes is the gradient of the dropout product s * keep (keep (C, B)), so the
    # spikes' gradient is grad_spikes * keep (the float product torch's backward computes)
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
        gsk = np.empty(b_len, dtype=grad_spikes.dtype)
        for t in range(t_len - 1, -1, -1):
            gs = grad_spikes[t, c]
            if masked:
                k = keep[c]
                for b in range(b_len):
                    gsk[b] = gs[b] * k[b]
            else:
                gsk[:] = gs
            for b in range(b_len):
                stay = 0.0 if mem[t, b] >= threshold else 1.0
                g = surrogate_grad(gsk[b], mem[t, b] - threshold, sg_alpha) + carry[b] * stay
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


def bn_lif_dropout_forward(y, weight, bias, eps, decay, threshold, keep, scale, out, packed, mean, var) -> int:
    """BatchNorm with batch statistics + LIF on (T, C, B), then the dropout product with keep (C, B):
    out = spikes * keep and its bytes packed = out / scale written, mean (C,) and biased var (C,);
    returns the non-zero count of out."""
    nnz = np.empty(y.shape[1], dtype=np.int64)
    _bn_lif_dropout_forward(y, weight, bias, float(eps), float(decay), float(threshold), keep, float(scale), out,
                            packed, mean, var, nnz)
    return int(nnz.sum())


def bn_lif_backward(y, grad_spikes, weight, bias, mean, var, eps, decay, threshold, alpha, gy, gw, gb,
                    keep=None) -> None:
    """Gradients of y (T, C, B), BatchNorm weight and bias (C,) from the spikes' gradient, or, with
    ``keep`` (C, B), from the gradient of the dropout product spikes * keep."""
    masked = keep is not None
    keep = keep if masked else np.ones((1, 1), dtype=y.dtype)
    _bn_lif_backward(y, grad_spikes, weight, bias, mean, var, float(eps), float(decay), float(threshold),
                     float(alpha), keep, masked, gy, gw, gb)
