"""BatchNorm (batch statistics) + LIF on (T, C, B) as one compiled pass per block of channels,
forward and backward, keeping only the BatchNorm input (the recomputation happens in the backward). PyTorch
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


# Channels per block: every pass walks time outermost over a block of channels, reading (and
# writing) CHANNEL_BLOCK x B contiguous values per step. A pass per single channel read one row of
# B values every C x B x 4 bytes (256 KB at SHD sizes): rows that all fall into the same few cache
# sets, so the three passes over a channel went to L3 or memory, and at 1,000+ steps the per-channel
# scratch of the backward did not stay in L2 either. Per (channel, lane) the arithmetic and its
# order are those of a per-channel loop, so the results do not depend on the block size.
CHANNEL_BLOCK = 8


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _block_affine(y, c0, c1, weight, bias, eps, mean, var, lanes, alpha, beta):  # pragma: no cover
    # channels c0 .. c1 - 1: mean, biased variance over (T, B) (sums per batch lane in float64, the
    # lanes vectorise, then over the lanes in order; a serial sum would run at one add per add
    # latency) written to mean[c], var[c]; the BatchNorm as h = y * alpha[k] + beta[k], k = c - c0.
    # lanes: a (CHANNEL_BLOCK, B) float64 scratch.
    t_len, _, b_len = y.shape
    n = t_len * b_len
    lanes[:] = 0.0
    for t in range(t_len):
        for c in range(c0, c1):
            row = y[t, c]
            ln = lanes[c - c0]
            for b in range(b_len):
                ln[b] += row[b]
    for c in range(c0, c1):
        mean[c] = _lane_sum(lanes[c - c0]) / n
    lanes[:] = 0.0
    for t in range(t_len):
        for c in range(c0, c1):
            row = y[t, c]
            ln = lanes[c - c0]
            mu = mean[c]
            for b in range(b_len):
                dv = row[b] - mu
                ln[b] += dv * dv
    for c in range(c0, c1):
        v = _lane_sum(lanes[c - c0]) / n
        var[c] = v
        a = 1.0 / np.sqrt(v + eps) * weight[c]
        alpha[c - c0] = a
        beta[c - c0] = bias[c] - mean[c] * a


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _bn_lif_forward(y, weight, bias, eps, decay, threshold, dropout, keep, scale, out, packed, mean, var,
                    nnz):  # pragma: no cover
    # per channel c: mean, biased var over (T, B); h = (y - mean) * invstd * w + b; LIF -> spikes,
    # written to out; with dropout, out[t, c, b] = s * keep[c, b] instead (the float product torch
    # computes) and its bytes packed = out / scale (the bytes kernels.pack._dropout_pack_u8 writes;
    # exact: s is 0 or 1 and keep 0 or scale * an integer), nnz[c] the non-zero entries of out in
    # channel c; the spikes themselves are then not stored.
    t_len, n_c, b_len = y.shape
    n_blocks = (n_c + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK
    for blk in prange(n_blocks):
        c0 = blk * CHANNEL_BLOCK
        c1 = min(n_c, c0 + CHANNEL_BLOCK)
        lanes = np.empty((CHANNEL_BLOCK, b_len), dtype=np.float64)
        alpha = np.empty(CHANNEL_BLOCK, dtype=np.float64)
        beta = np.empty(CHANNEL_BLOCK, dtype=np.float64)
        _block_affine(y, c0, c1, weight, bias, eps, mean, var, lanes, alpha, beta)
        u = np.zeros((CHANNEL_BLOCK, b_len), dtype=y.dtype)
        spk = np.empty(b_len, dtype=y.dtype)
        counts = np.zeros(CHANNEL_BLOCK, dtype=np.int64)
        for t in range(t_len):
            for c in range(c0, c1):
                k = c - c0
                row = y[t, c]
                uk = u[k]
                a = alpha[k]
                bt = beta[k]
                o = out[t, c]
                if not dropout:
                    for b in range(b_len):
                        _, o[b], uk[b] = lif_step(uk[b], row[b] * a + bt, decay, threshold)
                    continue
                for b in range(b_len):
                    _, spk[b], uk[b] = lif_step(uk[b], row[b] * a + bt, decay, threshold)
                kc = keep[c]
                p = packed[t, c]
                n_nz = 0
                for b in range(b_len):
                    w = spk[b] * kc[b]
                    o[b] = w
                    p[b] = np.uint8(w / scale)
                    n_nz += np.int64(w != 0)
                counts[k] += n_nz
        for c in range(c0, c1):
            nnz[c] = counts[c - c0]


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _bn_lif_backward(y, grad_spikes, weight, bias, mean, var, eps, decay, threshold, sg_alpha, keep, masked, gy, gw,
                     gb):  # pragma: no cover
    # per block of channels: recompute h and the membrane, reverse LIF loop -> g_h (in the same
    # scratch), then BatchNorm's backward; masked: grad_spikes is the gradient of the dropout product
    # s * keep (keep (C, B)), so the spikes' gradient is grad_spikes * keep (the float product torch's
    # backward computes)
    t_len, n_c, b_len = y.shape
    n = t_len * b_len
    n_blocks = (n_c + CHANNEL_BLOCK - 1) // CHANNEL_BLOCK
    for blk in prange(n_blocks):
        c0 = blk * CHANNEL_BLOCK
        c1 = min(n_c, c0 + CHANNEL_BLOCK)
        nb = c1 - c0
        mu = np.empty(CHANNEL_BLOCK, dtype=np.float64)
        invstd = np.empty(CHANNEL_BLOCK, dtype=np.float64)
        alpha = np.empty(CHANNEL_BLOCK, dtype=np.float64)
        beta = np.empty(CHANNEL_BLOCK, dtype=np.float64)
        for k in range(nb):
            c = c0 + k
            mu[k] = mean[c]
            invstd[k] = 1.0 / np.sqrt(var[c] + eps)
            alpha[k] = invstd[k] * weight[c]
            beta[k] = bias[c] - mu[k] * alpha[k]
        mem = np.empty((t_len, CHANNEL_BLOCK, b_len), dtype=y.dtype)  # the membrane, then g_h in place
        u = np.zeros((CHANNEL_BLOCK, b_len), dtype=y.dtype)
        for t in range(t_len):
            for k in range(nb):
                row = y[t, c0 + k]
                mrow = mem[t, k]
                uk = u[k]
                a = alpha[k]
                bt = beta[k]
                for b in range(b_len):
                    mrow[b], _, uk[b] = lif_step(uk[b], row[b] * a + bt, decay, threshold)
        carry = np.zeros((CHANNEL_BLOCK, b_len), dtype=y.dtype)
        gsk = np.empty(b_len, dtype=grad_spikes.dtype)
        for t in range(t_len - 1, -1, -1):
            for k in range(nb):
                gs = grad_spikes[t, c0 + k]
                if masked:
                    kc = keep[c0 + k]
                    for b in range(b_len):
                        gsk[b] = gs[b] * kc[b]
                else:
                    gsk[:] = gs
                mrow = mem[t, k]
                ck = carry[k]
                for b in range(b_len):
                    stay = 0.0 if mrow[b] >= threshold else 1.0
                    g = surrogate_grad(gsk[b], mrow[b] - threshold, sg_alpha) + ck[b] * stay
                    mrow[b] = g
                    ck[b] = decay * g
        gh = mem
        lanes1 = np.zeros((CHANNEL_BLOCK, b_len), dtype=np.float64)  # sum g_h, per batch lane
        lanes2 = np.zeros((CHANNEL_BLOCK, b_len), dtype=np.float64)  # sum g_h * xhat, per batch lane
        for t in range(t_len):
            for k in range(nb):
                row = y[t, c0 + k]
                grow = gh[t, k]
                l1 = lanes1[k]
                l2 = lanes2[k]
                m = mu[k]
                s = invstd[k]
                for b in range(b_len):
                    l1[b] += grow[b]
                    l2[b] += grow[b] * (row[b] - m) * s
        s1 = np.empty(CHANNEL_BLOCK, dtype=np.float64)
        s2 = np.empty(CHANNEL_BLOCK, dtype=np.float64)
        scale = np.empty(CHANNEL_BLOCK, dtype=np.float64)
        for k in range(nb):
            s1[k] = _lane_sum(lanes1[k])
            s2[k] = _lane_sum(lanes2[k])
            gb[c0 + k] = s1[k]
            gw[c0 + k] = s2[k]
            scale[k] = weight[c0 + k] * invstd[k] / n
        for t in range(t_len):
            for k in range(nb):
                row = y[t, c0 + k]
                grow = gh[t, k]
                orow = gy[t, c0 + k]
                m = mu[k]
                s = invstd[k]
                sc = scale[k]
                a1 = s1[k]
                a2 = s2[k]
                for b in range(b_len):
                    xhat = (row[b] - m) * s
                    orow[b] = sc * (n * grow[b] - a1 - xhat * a2)


def bn_lif_forward(y, weight, bias, eps, decay, threshold, spikes, mean, var) -> None:
    """BatchNorm with batch statistics + LIF on (T, C, B); spikes, mean (C,), biased var (C,) written."""
    nnz = np.empty(y.shape[1], dtype=np.int64)
    _bn_lif_forward(y, weight, bias, float(eps), float(decay), float(threshold), False, np.ones((1, 1), y.dtype),
                    1.0, spikes, np.empty((1, 1, 1), np.uint8), mean, var, nnz)


def bn_lif_dropout_forward(y, weight, bias, eps, decay, threshold, keep, scale, out, packed, mean, var) -> int:
    """BatchNorm with batch statistics + LIF on (T, C, B), then the dropout product with keep (C, B):
    out = spikes * keep and its bytes packed = out / scale written, mean (C,) and biased var (C,);
    returns the non-zero count of out."""
    nnz = np.empty(y.shape[1], dtype=np.int64)
    _bn_lif_forward(y, weight, bias, float(eps), float(decay), float(threshold), True, keep, float(scale), out,
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
