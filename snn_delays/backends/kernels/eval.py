"""Compiled evaluation loops (rounded delays, no gradient): a whole layer (synaptic product,
BatchNorm as a per-neuron affine map, LIF or the readout's integration) in one pass, either
event-driven per sample on (T, B, C) or one rounded tap per element on (C, T, B) blocks. Used by
:mod:`snn_delays.backends.fast_eval`."""

from __future__ import annotations

import numpy as np

from .neuron import lif_step
from .runtime import balanced_cuts, n_threads, njit, prange

__all__ = ["event_layer", "tap1_lif_ctb", "EVENT_WINDOW"]


# -- event-driven evaluation (rounded delays): work proportional to the input events -------------
EVENT_WINDOW = 8  # steps per window of the event loop: its current buffer is (EVENT_WINDOW + Td - 1, out)


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _event_layer(x, indptr, offset, weight, scale, shift, decay, threshold, spiking, td, out,
                 n_chunks, window):  # pragma: no cover
    # For every sample b: the current cur[t, i] = sum over events x[s, b, j] != 0 and synapses
    # e of j (target i, delay d) with s + d = t of weight[e] * x[s, b, j]; offset[e] = d * out + i
    # (unsigned: no wraparound checks on the scattered adds). Then v = decay * u + scale * cur + shift;
    # spiking: out = (v >= threshold), u = v * (1 - out); else out = u = v (the readout's membrane).
    # Time runs in windows of `window` steps over a buffer of window + td - 1 rows (32 KB at SHD
    # sizes: the scattered adds hit L1, not a (T + Td, out) buffer in L2): the events of the window
    # scatter into it, its first `window` rows are complete and go through the LIF, then the rest
    # moves to the front. x (T_in, B, in), out (T, B, out), T >= T_in (later steps have no events).
    t_in, b_len, n_in = x.shape
    t_len = out.shape[0]
    n_out = out.shape[2]
    n_rows = window + td - 1
    keep = (n_rows - window) * n_out
    for c in prange(n_chunks):
        b0 = c * b_len // n_chunks
        b1 = (c + 1) * b_len // n_chunks
        cur = np.empty(n_rows * n_out, dtype=scale.dtype)
        u = np.empty(n_out, dtype=scale.dtype)
        active = np.empty(n_in, dtype=np.int64)
        for b in range(b0, b1):
            cur[:] = 0
            u[:] = 0
            for w0 in range(0, t_len, window):
                for t in range(w0, min(w0 + window, t_in)):
                    row = x[t, b]
                    cw = cur[(t - w0) * n_out:]
                    # the non-zero inputs of the step, listed without a branch per input (at a few
                    # per cent non-zero, a test-and-branch per input mispredicts: 5.7 of 7.3 ms of
                    # the SHD input layer's time outside its scattered adds)
                    n_active = 0
                    for j in range(n_in):
                        active[n_active] = j
                        n_active += row[j] != 0
                    for a in range(n_active):
                        j = active[a]
                        xv = row[j]
                        e0 = indptr[j]
                        e1 = indptr[j + 1]
                        ow = offset[e0:e1]
                        ww = weight[e0:e1]
                        for e in range(e1 - e0):
                            cw[ow[e]] += ww[e] * xv
                for q in range(min(window, t_len - w0)):
                    o = out[w0 + q, b]
                    cq = cur[q * n_out:(q + 1) * n_out]
                    for i in range(n_out):
                        current = scale[i] * cq[i] + shift[i]
                        if spiking:
                            _, o[i], u[i] = lif_step(u[i], current, decay, threshold)
                        else:
                            v = decay * u[i] + current
                            o[i] = v
                            u[i] = v
                cur[:keep] = cur[window * n_out:]
                cur[keep:] = 0


# -- evaluation, one rounded tap per element, time-major blocks (C, T, B) -----------------------
@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _lif_rows(acc, nq, out_i, t0, u, sc, sh, decay, threshold, spiking):  # pragma: no cover
    # BatchNorm + LIF over the nq steps of one block of one neuron; u (B,) carries the membrane
    n = u.shape[0]
    for q in range(nq):
        a = acc[q]
        o = out_i[t0 + q]
        if spiking:
            for b in range(n):
                _, o[b], u[b] = lif_step(u[b], sc * a[b] + sh, decay, threshold)  # vectorises
        else:
            for b in range(n):
                v = decay * u[b] + (sc * a[b] + sh)
                o[b] = v
                u[b] = v


@njit(fastmath=True, cache=True, nogil=True, inline="always")
def _tap_run(acc_flat, x_rows, j, s, w, nq, n):  # pragma: no cover
    # acc[q] += w * x[j, s + q] for the steps q < nq with s + q >= 0, as one run of (C, T, B) memory
    q_lo = max(0, -s)
    if q_lo < nq:
        r = x_rows[j, (s + q_lo) * n:(s + nq) * n]
        a = acc_flat[q_lo * n:nq * n]
        for e in range(r.shape[0]):
            a[e] += w * r[e]


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _tap1_lif_ctb(xt, indptr, src, delay, value, scale, shift, decay, threshold, spiking, out,
                  n_split):  # pragma: no cover
    # The layer in one pass: for every output i and block of 8 steps, the current (one rounded tap
    # per element, four per pass; a tap's 8 steps x B inputs are one contiguous run of xt, read in
    # one loop rather than a loop per step) accumulates in a local (8, B) buffer,
    # then BatchNorm + LIF (or the readout's integration) turn it into out[i, t0:t0 + 8] (uint8
    # spikes or the membrane).
    # Each thread owns a slice of outputs, balanced by tap count, and walks time in order.
    n_in, t_len, n = xt.shape
    x_rows = xt.reshape(n_in, t_len * n)  # a neuron's 8 steps from s are one run of 8 n elements
    m = 8 * n
    n_out = out.shape[0]
    n_blk = (t_len + 7) // 8
    cut = balanced_cuts(indptr, n_out, n_split)
    for part in prange(n_split):
        acc = np.empty((8, n), dtype=scale.dtype)
        acc_flat = acc.reshape(m)
        u = np.zeros((cut[part + 1] - cut[part], n), dtype=scale.dtype)
        for blk in range(n_blk):
            t0 = blk * 8
            nq = min(8, t_len - t0)
            for i in range(cut[part], cut[part + 1]):
                acc[:] = 0
                k = indptr[i]
                k1 = indptr[i + 1]
                while k + 4 <= k1:
                    s0 = t0 - delay[k]
                    s1 = t0 - delay[k + 1]
                    s2 = t0 - delay[k + 2]
                    s3 = t0 - delay[k + 3]
                    if min(min(s0, s1), min(s2, s3)) >= 0 and nq == 8:  # one loop of 8 n elements
                        w0 = value[k]
                        w1 = value[k + 1]
                        w2 = value[k + 2]
                        w3 = value[k + 3]
                        r0 = x_rows[src[k], s0 * n:s0 * n + m]
                        r1 = x_rows[src[k + 1], s1 * n:s1 * n + m]
                        r2 = x_rows[src[k + 2], s2 * n:s2 * n + m]
                        r3 = x_rows[src[k + 3], s3 * n:s3 * n + m]
                        for e in range(m):
                            acc_flat[e] += w0 * r0[e] + w1 * r1[e] + w2 * r2[e] + w3 * r3[e]
                    else:  # near the start (or end) of time: each tap over the steps it reaches
                        for kk in range(k, k + 4):
                            _tap_run(acc_flat, x_rows, src[kk], t0 - delay[kk], value[kk], nq, n)
                    k += 4
                while k < k1:
                    _tap_run(acc_flat, x_rows, src[k], t0 - delay[k], value[k], nq, n)
                    k += 1
                _lif_rows(acc, nq, out[i], t0, u[i - cut[part]], scale[i], shift[i], decay, threshold,
                          spiking)


def event_layer(x, indptr, offset, weight, scale, shift, decay, threshold, spiking, td, out) -> None:
    """One layer of event-driven evaluation; see ``_event_layer``. x (T_in, B, in) float, offset
    uint64; out (T, B, out), T >= T_in: uint8 spikes (spiking) or the float membrane."""
    n_chunks = max(1, min(x.shape[1], 8 * n_threads()))
    _event_layer(x, indptr, offset, weight, scale, shift, decay, threshold, spiking, td, out, n_chunks,
                 EVENT_WINDOW)


def tap1_lif_ctb(xt, indptr, src, delay, value, scale, shift, decay, threshold, spiking, out) -> None:
    """A whole eval layer: one rounded tap per element, BatchNorm as (scale, shift), LIF (or the
    readout's integration); xt (in, T, B) float or uint8 -> out (out, T, B) uint8 spikes / membrane."""
    _tap1_lif_ctb(xt, indptr, src, delay, value, scale, shift, decay, threshold, spiking, out, n_threads())
