"""Compiled tap products, one tap at a time (evaluation with one rounded tap per element, or
any tap list not in groups of four): forward, input gradient and value gradient on channel-major,
batch-innermost (T, C, B) arrays, so that the innermost loop is a contiguous run over the batch.
PyTorch twin: :func:`snn_delays.backends.taps.tap_conv_reference`."""

from __future__ import annotations

import numpy as np

from .runtime import n_threads, njit, prange

__all__ = ["tap_forward", "tap_backward_input", "tap_backward_values"]


@njit(fastmath=True, cache=True, nogil=True)
def _gather_rows(y_row, x, t, sign, indptr_row0, indptr_row1, src, delay, value, t_len, zero):  # pragma: no cover
    # y_row[:] = sum_k value[k] * x[t + sign * delay[k], src[k], :], rows outside [0, T) are zero.
    # Four taps per pass: one load and one store of y_row per four rows of x.
    b_len = y_row.shape[0]
    for b in range(b_len):
        y_row[b] = 0
    k = indptr_row0
    while k + 4 <= indptr_row1:
        s0 = t + sign * delay[k]
        s1 = t + sign * delay[k + 1]
        s2 = t + sign * delay[k + 2]
        s3 = t + sign * delay[k + 3]
        x0 = x[s0, src[k]] if 0 <= s0 < t_len else zero
        x1 = x[s1, src[k + 1]] if 0 <= s1 < t_len else zero
        x2 = x[s2, src[k + 2]] if 0 <= s2 < t_len else zero
        x3 = x[s3, src[k + 3]] if 0 <= s3 < t_len else zero
        a0 = value[k]
        a1 = value[k + 1]
        a2 = value[k + 2]
        a3 = value[k + 3]
        for b in range(b_len):
            y_row[b] += a0 * x0[b] + a1 * x1[b] + a2 * x2[b] + a3 * x3[b]
        k += 4
    while k < indptr_row1:
        s0 = t + sign * delay[k]
        if 0 <= s0 < t_len:
            x0 = x[s0, src[k]]
            a0 = value[k]
            for b in range(b_len):
                y_row[b] += a0 * x0[b]
        k += 1

@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _tap_forward(x, indptr, src, delay, value, y):  # pragma: no cover
    # y[t, i, :] = sum_{k in row i} value[k] * x[t - delay[k], src[k], :]   (0 where t < delay)
    t_len = x.shape[0]
    n_out = y.shape[1]
    zero = np.zeros(x.shape[2], dtype=x.dtype)
    for t in prange(t_len):
        for i in range(n_out):
            _gather_rows(y[t, i], x, t, -1, indptr[i], indptr[i + 1], src, delay, value, t_len, zero)

@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _tap_backward_input(gy, indptr_t, dst_t, delay_t, value_t, gx):  # pragma: no cover
    # gx[s, j, :] = sum_{k in column j} value[k] * gy[s + delay[k], dst[k], :]  (0 past the end)
    t_len = gy.shape[0]
    n_in = gx.shape[1]
    zero = np.zeros(gy.shape[2], dtype=gy.dtype)
    for s in prange(t_len):
        for j in range(n_in):
            _gather_rows(gx[s, j], gy, s, 1, indptr_t[j], indptr_t[j + 1], dst_t, delay_t, value_t, t_len, zero)

@njit(fastmath=True, cache=True, nogil=True)
def _dot_rows(acc, g, x, t, k0, k1, src, delay, zero):  # pragma: no cover
    # acc[k - k0] += g . x[t - delay[k], src[k], :] for k in [k0, k1); four rows per pass
    b_len = g.shape[0]
    k = k0
    while k + 4 <= k1:
        s0 = t - delay[k]
        s1 = t - delay[k + 1]
        s2 = t - delay[k + 2]
        s3 = t - delay[k + 3]
        x0 = x[s0, src[k]] if s0 >= 0 else zero
        x1 = x[s1, src[k + 1]] if s1 >= 0 else zero
        x2 = x[s2, src[k + 2]] if s2 >= 0 else zero
        x3 = x[s3, src[k + 3]] if s3 >= 0 else zero
        c0 = zero[0]
        c1 = zero[0]
        c2 = zero[0]
        c3 = zero[0]
        for b in range(b_len):
            gb = g[b]
            c0 += gb * x0[b]
            c1 += gb * x1[b]
            c2 += gb * x2[b]
            c3 += gb * x3[b]
        acc[k - k0] += c0
        acc[k + 1 - k0] += c1
        acc[k + 2 - k0] += c2
        acc[k + 3 - k0] += c3
        k += 4
    while k < k1:
        s0 = t - delay[k]
        if s0 >= 0:
            x0 = x[s0, src[k]]
            c0 = zero[0]
            for b in range(b_len):
                c0 += g[b] * x0[b]
            acc[k - k0] += c0
        k += 1

@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _tap_backward_values(gy, x, indptr, src, delay, gv, n_chunks):  # pragma: no cover
    # gv[k] = sum_{t >= delay[k]} sum_b gy[t, i, b] * x[t - delay[k], src[k], b]   (k in row i)
    # Time is split into n_chunks slices (one per thread), each sweeping all outputs so the
    # rows of x it reads stay in cache; per-slice partial sums are added at the end.
    t_len = x.shape[0]
    n_out = gy.shape[1]
    n_taps = gv.shape[0]
    zero = np.zeros(x.shape[2], dtype=x.dtype)
    partial = np.zeros((n_chunks, n_taps), dtype=np.float64)
    for c in prange(n_chunks):
        t0 = c * t_len // n_chunks
        t1 = (c + 1) * t_len // n_chunks
        for t in range(t0, t1):
            for i in range(n_out):
                k0 = indptr[i]
                _dot_rows(partial[c, k0:indptr[i + 1]], gy[t, i], x, t, k0, indptr[i + 1], src, delay, zero)
    for k in prange(n_taps):
        a = 0.0
        for c in range(n_chunks):
            a += partial[c, k]
        gv[k] = a


def tap_forward(x, indptr, src, delay, value, y) -> None:
    """x (T, in, B), y (T, out, B) C-contiguous numpy arrays; y is overwritten."""
    _tap_forward(x, indptr, src, delay, value, y)


def tap_backward_input(gy, indptr_t, dst_t, delay_t, value_t, gx) -> None:
    """gy (T, out, B), gx (T, in, B); gx is overwritten."""
    _tap_backward_input(gy, indptr_t, dst_t, delay_t, value_t, gx)


def tap_backward_values(gy, x, indptr, src, delay, gv) -> None:
    """gy (T, out, B), x (T, in, B); gv (n_taps,) is overwritten."""
    _tap_backward_values(gy, x, indptr, src, delay, gv, n_threads())
