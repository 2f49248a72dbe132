"""Compiled event-driven training loops of the delay synapse: the product and the kernel gradient
computed from the input's non-zero entries ("events") instead of every (step, input, sample).

With the dense kernel laid out as W[j, d, o] = k[o, j, Td - 1 - d] (input j, delay d in steps,
output o; the layout of :func:`snn_delays.backends.dense.causal_conv_cm`):

    y[t, o, b]  = sum_{events (s, j, b, v)} v * W[j, t - s, o]          (0 <= t - s < Td)
    gW[j, d, o] = sum_{events (s, j, b, v)} v * gy[s + d, o, b]          (s + d < T)

Work: events x Td x out multiply-adds per pass, against T x B x in x Td x out for the direct
convolution (a fraction ``density`` of it), whatever the Gaussian's width; every inner loop is a
contiguous run of ``out`` elements. PyTorch twin: :func:`snn_delays.backends.dense.causal_conv_cm`
(and its autograd) - :mod:`snn_delays.backends.events` is tested against it.
"""

from __future__ import annotations

import numpy as np

from .runtime import njit, prange

__all__ = ["events_by_sample", "pack_kernel", "event_forward", "event_kernel_grad", "OB", "SB"]


@njit(cache=True, nogil=True)
def _count_nonzero_per(x, per_b):  # pragma: no cover
    # counts[k] = non-zero entries of x (T, C, B) with b == k (per_b) or with j == k (else)
    t_len, c_len, b_len = x.shape
    counts = np.zeros(b_len if per_b else c_len, dtype=np.int64)
    for t in range(t_len):
        for j in range(c_len):
            row = x[t, j]
            for b in range(b_len):
                if row[b] != 0:
                    counts[b if per_b else j] += 1
    return counts


@njit(cache=True, nogil=True)
def _fill_events(x, ptr, per_b, ev_t, ev_k, ev_v):  # pragma: no cover
    # the events of x (T, C, B) in CSR rows by sample b (per_b: columns (t, j), ascending) or by
    # input j ((t, b), ascending); values as float
    t_len, c_len, b_len = x.shape
    pos = ptr[:-1].copy()
    for t in range(t_len):
        for j in range(c_len):
            row = x[t, j]
            for b in range(b_len):
                v = row[b]
                if v != 0:
                    r = b if per_b else j
                    p = pos[r]
                    ev_t[p] = t
                    ev_k[p] = j if per_b else b
                    ev_v[p] = v
                    pos[r] = p + 1


def _events(x, per_b: bool):
    counts = _count_nonzero_per(x, per_b)
    ptr = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=ptr[1:])
    n = int(ptr[-1])
    ev_t = np.empty(n, dtype=np.int32)
    ev_k = np.empty(n, dtype=np.int32)
    ev_v = np.empty(n, dtype=x.dtype)
    _fill_events(x, ptr, per_b, ev_t, ev_k, ev_v)
    return ptr, ev_t, ev_k, ev_v


def events_by_sample(x):
    """The non-zero entries of x (T, C, B) as CSR rows by sample: (ptr (B + 1,), t, j, value),
    each row ordered by (t, j)."""
    return _events(x, True)


OB = 16  # outputs per block: one 16-float (AVX-512) vector per kernel row
SB = 16  # samples per block


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _pack_kernel(k, tiny, wp):  # pragma: no cover
    # wp[ob, j, d, :] = k[ob * OB + q, j, Td - 1 - d] (q < OB; 0 past the last output), values below
    # the smallest normal float set to 0 (a narrow Gaussian's far taps: denormal products run ~10x slower)
    n_out, n_in, td = k.shape
    for ob in prange(wp.shape[0]):
        for j in range(n_in):
            for d in range(td):
                row = wp[ob, j, d]
                for q in range(OB):
                    o = ob * OB + q
                    v = k[o, j, td - 1 - d] if o < n_out else 0.0
                    row[q] = v if abs(v) >= tiny else 0.0


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _event_forward(ptr, ev_t, ev_j, ev_v, wp, y):  # pragma: no cover
    # y[t, o, b] = sum over the events (s, j, v) of sample b of v * w[j, t - s, o], by tasks of OB
    # outputs x SB samples: that block of the kernel (in x Td x OB, 224 KB in float32) and a local
    # accumulator (SB, T, OB) stay in L2; each (event, delay) is one vector multiply-add
    t_len, n_out, b_len = y.shape
    n_ob, n_in, td, _ = wp.shape
    n_sb = (b_len + SB - 1) // SB
    for task in prange(n_ob * n_sb):
        ob = task // n_sb
        b0 = (task % n_sb) * SB
        b1 = min(b_len, b0 + SB)
        w = wp[ob].reshape(n_in, td * OB)  # w[j] = (Td, OB) flat
        acc = np.zeros((SB, t_len * OB), dtype=y.dtype)
        for b in range(b0, b1):
            ab = acc[b - b0]
            e = ptr[b]
            e_end = ptr[b + 1]
            while e < e_end:
                s = ev_t[e]
                # rows s .. s + n_d - 1 of the accumulator += v * the kernel's first n_d delays: one
                # run; the events of one step four at a time (one load and store of the run per four)
                n = min(td, t_len - s) * OB
                at = ab[s * OB:s * OB + n]
                if e + 3 < e_end and ev_t[e + 3] == s:
                    v0 = ev_v[e]; v1 = ev_v[e + 1]; v2 = ev_v[e + 2]; v3 = ev_v[e + 3]
                    w0 = w[ev_j[e]]; w1 = w[ev_j[e + 1]]; w2 = w[ev_j[e + 2]]; w3 = w[ev_j[e + 3]]
                    for q in range(n):
                        at[q] += v0 * w0[q] + v1 * w1[q] + v2 * w2[q] + v3 * w3[q]
                    e += 4
                elif e + 1 < e_end and ev_t[e + 1] == s:
                    v0 = ev_v[e]; v1 = ev_v[e + 1]
                    w0 = w[ev_j[e]]; w1 = w[ev_j[e + 1]]
                    for q in range(n):
                        at[q] += v0 * w0[q] + v1 * w1[q]
                    e += 2
                else:
                    v0 = ev_v[e]
                    w0 = w[ev_j[e]]
                    for q in range(n):
                        at[q] += v0 * w0[q]
                    e += 1
        o1 = min(n_out, ob * OB + OB)
        for t in range(t_len):
            for o in range(ob * OB, o1):
                dst = y[t, o]
                q = t * OB + o - ob * OB
                for b in range(b0, b1):
                    dst[b] = acc[b - b0, q]


@njit(cache=True, nogil=True)
def _by_block_input(ptr, ev_t, ev_j, ev_v, n_in):  # pragma: no cover
    # the events by sample regrouped into rows (sample block of SB, input j): (ptr2, t, b, v),
    # each row ordered by (b, t) - a counting sort
    b_len = len(ptr) - 1
    n_sb = (b_len + SB - 1) // SB
    ptr2 = np.zeros(n_sb * n_in + 1, dtype=np.int64)
    for b in range(b_len):
        base = (b // SB) * n_in
        for e in range(ptr[b], ptr[b + 1]):
            ptr2[base + ev_j[e] + 1] += 1
    for r in range(n_sb * n_in):
        ptr2[r + 1] += ptr2[r]
    pos = ptr2[:-1].copy()
    n = len(ev_t)
    out_t = np.empty(n, dtype=ev_t.dtype)
    out_b = np.empty(n, dtype=ev_t.dtype)
    out_v = np.empty(n, dtype=ev_v.dtype)
    for b in range(b_len):
        base = (b // SB) * n_in
        for e in range(ptr[b], ptr[b + 1]):
            r = base + ev_j[e]
            p = pos[r]
            out_t[p] = ev_t[e]
            out_b[p] = b
            out_v[p] = ev_v[e]
            pos[r] = p + 1
    return ptr2, out_t, out_b, out_v


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _event_kernel_grad(ptr2, ev_t, ev_b, ev_v, gy, gwp):  # pragma: no cover
    # gwp[ob, j, d, q] = sum over the events (s, j, b, v) of v * gy[s + d, ob * OB + q, b]: a task per
    # block of OB outputs owns its block of the gradient (in x Td x OB, in L2) and walks the samples
    # in blocks of SB, their output gradient re-laid out to a local (SB, T, OB), the block's events
    # by input (ptr2 rows (sample block, input)), four at a time (one load and store of the
    # gradient's run per four events)
    t_len, n_out, b_len = gy.shape
    n_ob, n_in, td, _ = gwp.shape
    full = td * OB
    for ob in prange(n_ob):
        g = gwp[ob].reshape(n_in, td * OB)  # g[j] = (Td, OB) flat
        g[:] = 0
        o0 = ob * OB
        o1 = min(n_out, o0 + OB)
        loc = np.zeros((SB, t_len * OB), dtype=gwp.dtype)
        for b0 in range(0, b_len, SB):
            b1 = min(b_len, b0 + SB)
            for t in range(t_len):
                for o in range(o0, o1):
                    src = gy[t, o]
                    q = t * OB + o - o0
                    for b in range(b0, b1):
                        loc[b - b0, q] = src[b]
            row0 = (b0 // SB) * n_in
            for j in range(n_in):
                gj = g[j]
                e = ptr2[row0 + j]
                e_end = ptr2[row0 + j + 1]
                while e < e_end:
                    s0 = ev_t[e]
                    if e + 3 < e_end and max(s0, ev_t[e + 1], ev_t[e + 2], ev_t[e + 3]) + td <= t_len:
                        v0 = ev_v[e]; v1 = ev_v[e + 1]; v2 = ev_v[e + 2]; v3 = ev_v[e + 3]
                        l0 = loc[ev_b[e] - b0, s0 * OB:s0 * OB + full]
                        s1 = ev_t[e + 1]
                        l1 = loc[ev_b[e + 1] - b0, s1 * OB:s1 * OB + full]
                        s2 = ev_t[e + 2]
                        l2 = loc[ev_b[e + 2] - b0, s2 * OB:s2 * OB + full]
                        s3 = ev_t[e + 3]
                        l3 = loc[ev_b[e + 3] - b0, s3 * OB:s3 * OB + full]
                        for q in range(full):
                            gj[q] += v0 * l0[q] + v1 * l1[q] + v2 * l2[q] + v3 * l3[q]
                        e += 4
                    else:
                        n = min(td, t_len - s0) * OB
                        v0 = ev_v[e]
                        l0 = loc[ev_b[e] - b0, s0 * OB:s0 * OB + n]
                        for q in range(n):
                            gj[q] += v0 * l0[q]
                        e += 1


def pack_kernel(k):
    """The kernel k (out, in, Td) as blocks (ceil(out / OB), in, Td, OB) by delay d (w[j, d, o] =
    k[o, j, Td - 1 - d]), the outputs past the last zero, denormal values zero."""
    n_out, n_in, td = k.shape
    wp = np.empty(((n_out + OB - 1) // OB, n_in, td, OB), dtype=k.dtype)
    _pack_kernel(k, np.finfo(k.dtype).tiny, wp)
    return wp


def event_forward(ptr, ev_t, ev_j, ev_v, wp, y) -> None:
    """y (T, out, B) overwritten with the product of the events (by sample, :func:`events_by_sample`)
    and the packed kernel wp (:func:`pack_kernel`)."""
    _event_forward(ptr, ev_t, ev_j, ev_v, wp, y)


def event_kernel_grad(ptr, ev_t, ev_j, ev_v, gy, n_in: int, td: int):
    """The kernel gradient (out, in, Td) (tap index Td - 1 - d for delay d) from the events (by
    sample) and the output gradient gy (T, out, B)."""
    t_len, n_out, b_len = gy.shape
    gwp = np.empty(((n_out + OB - 1) // OB, n_in, td, OB), dtype=gy.dtype)
    _event_kernel_grad(*_by_block_input(ptr, ev_t, ev_j, ev_v, n_in), gy, gwp)
    return gwp.transpose(0, 3, 1, 2).reshape(-1, n_in, td)[:n_out, :, ::-1]
