"""Compiled CPU loops (numba) behind the fast paths; every one has a pure-PyTorch twin in the
module that uses it, and tests compare the two.

numba is optional: ``AVAILABLE`` is False when it cannot be imported (or ``SNN_DELAYS_NO_NUMBA=1``),
and the callers then fall back to their PyTorch code.

Layouts: the tap convolution works on channel-major, batch-innermost tensors (T, C, B) so that the
innermost loop is a contiguous, vectorisable run over the batch.
"""

from __future__ import annotations

import os

import numpy as np

try:  # pragma: no cover - exercised implicitly
    if os.environ.get("SNN_DELAYS_NO_NUMBA", "") not in ("", "0"):
        raise ImportError("disabled by SNN_DELAYS_NO_NUMBA")
    import numba
    from numba import njit, prange

    AVAILABLE = True
except ImportError:  # pragma: no cover
    numba = None
    AVAILABLE = False

__all__ = ["AVAILABLE", "set_threads", "tap_forward", "tap_backward_input", "tap_backward_values",
           "group_forward", "group_backward_input", "group_backward_values", "pack_scaled_u8",
           "tap_values_forward", "tap_values_backward", "gaussian_kernel_forward", "gaussian_kernel_backward",
           "tap1_lif_ctb", "pack_ctb_u8", "event_layer", "bn_lif_forward", "bn_lif_backward", "lif_forward",
           "lif_backward"]


def set_threads(n: int) -> None:
    if AVAILABLE:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


if AVAILABLE:

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

    # -- groups of four consecutive taps (training with a Gaussian) ------------------------------
    # A group k holds the taps at integer delays base[k] + p, p = 0..3, with values v4[k, p]. Eight
    # output steps are computed together in a local (8, B) accumulator: the eleven input rows they
    # need are loaded once and each feeds up to four multiply-adds (the flat loops above load one
    # row per multiply-add). The input is first re-laid out to (C, T, B): in (T, C, B) the time
    # stride (C * B * 4 bytes = 256 KB at SHD sizes) maps a group's rows to one cache set. Each
    # thread owns a slice of outputs balanced by tap count. Rows outside [0, T) count as zero, so
    # base may be negative or run past Td - 1 (those taps carry 0). About 13 of the 16 fp32
    # multiply-adds per cycle per core the FMA units allow (Zen 4, measured; benchmarks/README.md).

    @njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def _relayout_ct(x):  # pragma: no cover
        # (T, C, B) -> (C, T, B)
        t_len, c, n = x.shape
        xt = np.empty((c, t_len, n), dtype=x.dtype)
        for j in prange(c):
            for t in range(t_len):
                src = x[t, j]; dst = xt[j, t]
                for b in range(n):
                    dst[b] = src[b]
        return xt

    @njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def _group_forward(xt, indptr, src, base, v4, y, n_split):  # pragma: no cover
        # y[t, i, :] = sum_{k in row i} sum_p v4[k, p] * xt[src[k], t - base[k] - p, :]
        # xt is x re-laid out to (C, T, B) so a group's 11 rows are contiguous (the (T, C, B) time stride of
        # C*B*4 = 256 KB puts them all in one L1/L2 set); 8 output steps per block accumulate in a local
        # (8, n) buffer; each of n_split threads owns an nnz-balanced slice of outputs over all time blocks.
        n_in, t_len, n = xt.shape; n_out = y.shape[1]
        n_blk = (t_len + 7) // 8
        cut = np.searchsorted(indptr, (np.arange(n_split + 1) * indptr[n_out]) // n_split)
        cut[0] = 0; cut[n_split] = n_out
        for task in prange(n_blk * n_split):
            part = task // n_blk; blk = task % n_blk
            t0 = blk * 8
            acc = np.empty((8, n), dtype=y.dtype)
            for i in range(cut[part], cut[part + 1]):
                acc[:] = 0
                for k in range(indptr[i], indptr[i + 1]):
                    s = t0 - base[k]
                    j = src[k]
                    v0 = v4[k, 0]; v1 = v4[k, 1]; v2 = v4[k, 2]; v3 = v4[k, 3]
                    xj = xt[j]
                    if s - 3 >= 0 and s + 7 < t_len and t0 + 7 < t_len:
                        rm3 = xj[s - 3]; rm2 = xj[s - 2]; rm1 = xj[s - 1]; r0 = xj[s]
                        r1 = xj[s + 1]; r2 = xj[s + 2]; r3 = xj[s + 3]; r4 = xj[s + 4]
                        r5 = xj[s + 5]; r6 = xj[s + 6]; r7 = xj[s + 7]
                        y0 = acc[0]; y1 = acc[1]; y2 = acc[2]; y3 = acc[3]
                        y4 = acc[4]; y5 = acc[5]; y6 = acc[6]; y7 = acc[7]
                        for b in range(n):
                            a_3 = rm3[b]; a_2 = rm2[b]; a_1 = rm1[b]; a0 = r0[b]; a1 = r1[b]; a2 = r2[b]; a3 = r3[b]
                            a4 = r4[b]; a5 = r5[b]; a6 = r6[b]; a7 = r7[b]
                            y0[b] += v0 * a0 + v1 * a_1 + v2 * a_2 + v3 * a_3
                            y1[b] += v0 * a1 + v1 * a0 + v2 * a_1 + v3 * a_2
                            y2[b] += v0 * a2 + v1 * a1 + v2 * a0 + v3 * a_1
                            y3[b] += v0 * a3 + v1 * a2 + v2 * a1 + v3 * a0
                            y4[b] += v0 * a4 + v1 * a3 + v2 * a2 + v3 * a1
                            y5[b] += v0 * a5 + v1 * a4 + v2 * a3 + v3 * a2
                            y6[b] += v0 * a6 + v1 * a5 + v2 * a4 + v3 * a3
                            y7[b] += v0 * a7 + v1 * a6 + v2 * a5 + v3 * a4
                    else:
                        for q in range(8):
                            if t0 + q >= t_len:
                                break
                            yq = acc[q]
                            for p in range(4):
                                ss = s + q - p
                                if 0 <= ss < t_len:
                                    xr = xj[ss]
                                    vp = v4[k, p]
                                    for b in range(n):
                                        yq[b] += vp * xr[b]
                for q in range(8):
                    if t0 + q < t_len:
                        yq = y[t0 + q, i]; aq = acc[q]
                        for b in range(n):
                            yq[b] = aq[b]


    @njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def _group_backward_input(gyt, indptr_t, band_ptr, band, dst_t, base_t, v4_t, gx, n_split):  # pragma: no cover
        # gx[s, j, :] (+)= sum_{k in column j, delay band} sum_p v4_t[k, p] * gyt[dst_t[k], s + base_t[k] + p, :]
        # same scheme as _group_forward: gy re-laid out to (C, T, B), 8-step blocks, local accumulator.
        # The taps of each column are sorted by delay and swept one band of delays per call
        # (band_ptr[j, band] .. band_ptr[j, band + 1]; band 0 overwrites gx, later bands add), so the
        # rows of gy one call reads stay in L3 when Td is large.
        n_out, t_len, n = gyt.shape; n_in = gx.shape[1]
        n_blk = (t_len + 7) // 8
        cut = np.searchsorted(indptr_t, (np.arange(n_split + 1) * indptr_t[n_in]) // n_split)
        cut[0] = 0; cut[n_split] = n_in
        for task in prange(n_blk * n_split):
            part = task // n_blk; blk = task % n_blk
            s0 = blk * 8
            acc = np.empty((8, n), dtype=gx.dtype)
            for j in range(cut[part], cut[part + 1]):
                if band == 0:
                    acc[:] = 0
                else:
                    if band_ptr[j, band] == band_ptr[j, band + 1]:
                        continue
                    for q in range(8):
                        if s0 + q < t_len:
                            gq = gx[s0 + q, j]; aq = acc[q]
                            for b in range(n):
                                aq[b] = gq[b]
                for k in range(band_ptr[j, band], band_ptr[j, band + 1]):
                    u = s0 + base_t[k]
                    gi = gyt[dst_t[k]]
                    v0 = v4_t[k, 0]; v1 = v4_t[k, 1]; v2 = v4_t[k, 2]; v3 = v4_t[k, 3]
                    if u >= 0 and u + 10 < t_len and s0 + 7 < t_len:
                        r0 = gi[u]; r1 = gi[u + 1]; r2 = gi[u + 2]; r3 = gi[u + 3]; r4 = gi[u + 4]
                        r5 = gi[u + 5]; r6 = gi[u + 6]; r7 = gi[u + 7]; r8 = gi[u + 8]; r9 = gi[u + 9]; r10 = gi[u + 10]
                        g0 = acc[0]; g1 = acc[1]; g2 = acc[2]; g3 = acc[3]
                        g4 = acc[4]; g5 = acc[5]; g6 = acc[6]; g7 = acc[7]
                        for b in range(n):
                            a0 = r0[b]; a1 = r1[b]; a2 = r2[b]; a3 = r3[b]; a4 = r4[b]; a5 = r5[b]
                            a6 = r6[b]; a7 = r7[b]; a8 = r8[b]; a9 = r9[b]; a10 = r10[b]
                            g0[b] += v0 * a0 + v1 * a1 + v2 * a2 + v3 * a3
                            g1[b] += v0 * a1 + v1 * a2 + v2 * a3 + v3 * a4
                            g2[b] += v0 * a2 + v1 * a3 + v2 * a4 + v3 * a5
                            g3[b] += v0 * a3 + v1 * a4 + v2 * a5 + v3 * a6
                            g4[b] += v0 * a4 + v1 * a5 + v2 * a6 + v3 * a7
                            g5[b] += v0 * a5 + v1 * a6 + v2 * a7 + v3 * a8
                            g6[b] += v0 * a6 + v1 * a7 + v2 * a8 + v3 * a9
                            g7[b] += v0 * a7 + v1 * a8 + v2 * a9 + v3 * a10
                    else:
                        for q in range(8):
                            if s0 + q >= t_len:
                                break
                            gq = acc[q]
                            for p in range(4):
                                uu = u + q + p
                                if 0 <= uu < t_len:
                                    gr = gi[uu]
                                    vp = v4_t[k, p]
                                    for b in range(n):
                                        gq[b] += vp * gr[b]
                for q in range(8):
                    if s0 + q < t_len:
                        gq = gx[s0 + q, j]; aq = acc[q]
                        for b in range(n):
                            gq[b] = aq[b]

    @njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def _group_backward_values(gy, x, band_ptr, src, base, gv4, n_chunks):  # pragma: no cover
        # gv4[k, p] = sum_t sum_b gy[t, i, b] * x[t - base[k] - p, src[k], b]; the groups of row i are
        # sorted by delay and swept one band of delays at a time (band_ptr[i, g] .. band_ptr[i, g + 1])
        # so the rows of x one sweep reads stay in cache when Td is large
        t_len = x.shape[0]; n_out = gy.shape[1]; n = x.shape[2]
        n_groups = gv4.shape[0]
        n_bands = band_ptr.shape[1] - 1
        n_blk = (t_len + 3) // 4
        partial = np.zeros((n_chunks, n_groups, 4), dtype=np.float64)
        for c in prange(n_chunks):
            b0 = c * n_blk // n_chunks
            b1 = (c + 1) * n_blk // n_chunks
            acc = partial[c]
            for band in range(n_bands):
                for blk in range(b0, b1):
                    t0 = blk * 4
                    for i in range(n_out):
                        for k in range(band_ptr[i, band], band_ptr[i, band + 1]):
                            s = t0 - base[k]
                            j = src[k]
                            if s - 3 >= 0 and s + 3 < t_len and t0 + 3 < t_len:
                                rm3 = x[s - 3, j]; rm2 = x[s - 2, j]; rm1 = x[s - 1, j]; r0 = x[s, j]
                                r1 = x[s + 1, j]; r2 = x[s + 2, j]; r3 = x[s + 3, j]
                                G0 = gy[t0, i]; G1 = gy[t0 + 1, i]; G2 = gy[t0 + 2, i]; G3 = gy[t0 + 3, i]
                                c0 = np.float32(0); c1 = np.float32(0); c2 = np.float32(0); c3 = np.float32(0)
                                for b in range(n):
                                    g0 = G0[b]; g1 = G1[b]; g2 = G2[b]; g3 = G3[b]
                                    a_3 = rm3[b]; a_2 = rm2[b]; a_1 = rm1[b]; a0 = r0[b]; a1 = r1[b]; a2 = r2[b]; a3 = r3[b]
                                    c0 += g0 * a0 + g1 * a1 + g2 * a2 + g3 * a3
                                    c1 += g0 * a_1 + g1 * a0 + g2 * a1 + g3 * a2
                                    c2 += g0 * a_2 + g1 * a_1 + g2 * a0 + g3 * a1
                                    c3 += g0 * a_3 + g1 * a_2 + g2 * a_1 + g3 * a0
                                acc[k, 0] += c0; acc[k, 1] += c1; acc[k, 2] += c2; acc[k, 3] += c3
                            else:
                                for q in range(4):
                                    if t0 + q >= t_len:
                                        break
                                    G = gy[t0 + q, i]
                                    for p in range(4):
                                        ss = s + q - p
                                        if 0 <= ss < t_len:
                                            xr = x[ss, j]
                                            cc = np.float32(0)
                                            for b in range(n):
                                                cc += G[b] * xr[b]
                                            acc[k, p] += cc
        for k in prange(n_groups):
            for p in range(4):
                a = 0.0
                for c in range(n_chunks):
                    a += partial[c, k, p]
                gv4[k, p] = a

    @njit(fastmath=False, cache=True, nogil=True, inline="always")
    def _fire(v, threshold):  # pragma: no cover
        # one LIF threshold test: (spike 0/1, membrane after the hard reset)
        if v >= threshold:
            return 1, v * 0
        return 0, v

    # -- event-driven evaluation (rounded delays): work proportional to the input events -------------
    @njit(parallel=True, fastmath=False, cache=True, nogil=True)
    def _event_layer(x, indptr, offset, weight, scale, shift, decay, threshold, spiking, td, out,
                     n_chunks):  # pragma: no cover
        # For every sample b: the current cur[t, i] = sum over events x[s, b, j] != 0 and synapses
        # e of j (target i, delay d) with s + d = t of weight[e] * x[s, b, j]; offset[e] = d * out + i.
        # Then v = decay * u + scale * cur + shift; spiking: out = (v >= threshold), u = v * (1 - out);
        # else out = u = v (the readout's membrane). x (T, B, in), out (T, B, out).
        t_len, b_len, n_in = x.shape
        n_out = out.shape[2]
        for c in prange(n_chunks):
            b0 = c * b_len // n_chunks
            b1 = (c + 1) * b_len // n_chunks
            cur = np.empty((t_len + td) * n_out, dtype=out.dtype)
            u = np.empty(n_out, dtype=out.dtype)
            for b in range(b0, b1):
                cur[:] = 0
                for t in range(t_len):
                    row = x[t, b]
                    base = t * n_out
                    for j in range(n_in):
                        xv = row[j]
                        if xv != 0:
                            for e in range(indptr[j], indptr[j + 1]):
                                cur[base + offset[e]] += weight[e] * xv
                u[:] = 0
                for t in range(t_len):
                    o = out[t, b]
                    base = t * n_out
                    for i in range(n_out):
                        v = decay * u[i] + (scale[i] * cur[base + i] + shift[i])
                        if spiking:
                            o[i], u[i] = _fire(v, threshold)
                        else:
                            o[i] = v
                            u[i] = v

    # -- Gaussian tap values (training): value[e, p] = w[e] * g(pos_p - d[e]) / (eps + sum_n g(n - d[e])) --
    @njit(fastmath=False, cache=True, nogil=True, inline="always")
    def _tap_norm(de, sigma, td, rn, full, eps):  # pragma: no cover
        # (normaliser, its derivative w.r.t. d) over the window the PyTorch twin sums
        base = np.floor(de)
        lo, hi = (0.0, td - 1.0) if full else (max(0.0, base - rn + 1), min(td - 1.0, base + rn))
        norm = eps
        dnorm = 0.0
        n = lo
        while n <= hi:
            z = (n - de) / sigma
            g = np.exp(-0.5 * z * z)
            norm += g
            dnorm += g * z / sigma
            n += 1.0
        return norm, dnorm

    @njit(parallel=True, fastmath=False, cache=True, nogil=True)
    def _tap_values_forward(w, d, sigma, td, r, rn, full, eps, values, steps):  # pragma: no cover
        n_el, p_len = values.shape
        for e in prange(n_el):
            de = np.float64(d[e])
            norm, _ = _tap_norm(de, sigma, td, rn, full, eps)
            first = np.floor(de) - r + 1
            scale = np.float64(w[e]) / norm
            for p in range(p_len):
                pos = first + p
                steps[e, p] = np.int64(pos)
                if 0.0 <= pos <= td - 1.0:
                    z = (pos - de) / sigma
                    values[e, p] = scale * np.exp(-0.5 * z * z)
                else:
                    values[e, p] = 0.0

    @njit(parallel=True, fastmath=False, cache=True, nogil=True)
    def _tap_values_backward(w, d, sigma, td, r, rn, full, eps, gv, gw, gd):  # pragma: no cover
        n_el, p_len = gv.shape
        for e in prange(n_el):
            de = np.float64(d[e])
            norm, dnorm = _tap_norm(de, sigma, td, rn, full, eps)
            first = np.floor(de) - r + 1
            a = 0.0  # sum_p gv_p g_p
            b = 0.0  # sum_p gv_p dg_p/dd
            for p in range(p_len):
                pos = first + p
                if 0.0 <= pos <= td - 1.0:
                    z = (pos - de) / sigma
                    g = np.exp(-0.5 * z * z)
                    a += gv[e, p] * g
                    b += gv[e, p] * g * z / sigma
            gw[e] = a / norm
            gd[e] = np.float64(w[e]) * (b / norm - a * dnorm / (norm * norm))

    # -- the dense Gaussian kernel (training, dense and FFT backends) --------------------------------
    @njit(parallel=True, fastmath=False, cache=True, nogil=True)
    def _gaussian_kernel_forward(w, d, sigma, td, eps, out):  # pragma: no cover
        # out[s, n] = sum_e w[s, e] g(n) / (eps + sum_n g(n)), g(n) = exp(-z^2 / 2), z = (n - Td + 1 + d) / sigma
        n_syn, m = w.shape
        for s in prange(n_syn):
            row = out[s]
            for n in range(td):
                row[n] = 0.0
            for e in range(m):
                de = np.float64(d[s, e])
                norm = eps
                for n in range(td):
                    z = (n - td + 1 + de) / sigma
                    norm += np.exp(-0.5 * z * z)
                scale = np.float64(w[s, e]) / norm
                for n in range(td):
                    z = (n - td + 1 + de) / sigma
                    row[n] += scale * np.exp(-0.5 * z * z)

    @njit(parallel=True, fastmath=False, cache=True, nogil=True)
    def _gaussian_kernel_backward(w, d, sigma, td, eps, gk, gw, gd):  # pragma: no cover
        n_syn, m = w.shape
        for s in prange(n_syn):
            grow = gk[s]
            for e in range(m):
                de = np.float64(d[s, e])
                norm = eps
                dnorm = 0.0
                a = 0.0  # sum_n gk[n] g(n)
                b = 0.0  # sum_n gk[n] dg(n)/dd
                for n in range(td):
                    z = (n - td + 1 + de) / sigma
                    g = np.exp(-0.5 * z * z)
                    dg = -g * z / sigma
                    norm += g
                    dnorm += dg
                    a += grow[n] * g
                    b += grow[n] * dg
                gw[s, e] = a / norm
                gd[s, e] = np.float64(w[s, e]) * (b / norm - a * dnorm / (norm * norm))

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
                    v = decay * u[b] + (sc * a[b] + sh)
                    s = v >= threshold  # branch-free: this loop vectorises
                    o[b] = s
                    u[b] = 0 if s else v
            else:
                for b in range(n):
                    v = decay * u[b] + (sc * a[b] + sh)
                    o[b] = v
                    u[b] = v

    @njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def _tap1_lif_ctb(xt, indptr, src, delay, value, scale, shift, decay, threshold, spiking, out,
                      n_split):  # pragma: no cover
        # The layer in one pass: for every output i and block of 8 steps, the current (one rounded tap
        # per element, four per pass) accumulates in a local (8, B) buffer, then BatchNorm + LIF
        # (or the readout's integration) turn it into out[i, t0:t0 + 8] (uint8 spikes or the membrane).
        # Each thread owns a slice of outputs, balanced by tap count, and walks time in order.
        n_in, t_len, n = xt.shape
        n_out = out.shape[0]
        n_blk = (t_len + 7) // 8
        cut = np.searchsorted(indptr, (np.arange(n_split + 1) * indptr[n_out]) // n_split)
        cut[0] = 0
        cut[n_split] = n_out
        for part in prange(n_split):
            acc = np.empty((8, n), dtype=scale.dtype)
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
                        x0 = xt[src[k]]
                        x1 = xt[src[k + 1]]
                        x2 = xt[src[k + 2]]
                        x3 = xt[src[k + 3]]
                        w0 = value[k]
                        w1 = value[k + 1]
                        w2 = value[k + 2]
                        w3 = value[k + 3]
                        if min(min(s0, s1), min(s2, s3)) >= 0 and nq == 8:
                            for q in range(8):
                                a = acc[q]
                                r0 = x0[s0 + q]
                                r1 = x1[s1 + q]
                                r2 = x2[s2 + q]
                                r3 = x3[s3 + q]
                                for b in range(n):
                                    a[b] += w0 * r0[b] + w1 * r1[b] + w2 * r2[b] + w3 * r3[b]
                        else:
                            for q in range(nq):
                                a = acc[q]
                                if s0 + q >= 0:
                                    r0 = x0[s0 + q]
                                    for b in range(n):
                                        a[b] += w0 * r0[b]
                                if s1 + q >= 0:
                                    r1 = x1[s1 + q]
                                    for b in range(n):
                                        a[b] += w1 * r1[b]
                                if s2 + q >= 0:
                                    r2 = x2[s2 + q]
                                    for b in range(n):
                                        a[b] += w2 * r2[b]
                                if s3 + q >= 0:
                                    r3 = x3[s3 + q]
                                    for b in range(n):
                                        a[b] += w3 * r3[b]
                        k += 4
                    while k < k1:
                        s0 = t0 - delay[k]
                        x0 = xt[src[k]]
                        w0 = value[k]
                        for q in range(nq):
                            if s0 + q >= 0:
                                a = acc[q]
                                r0 = x0[s0 + q]
                                for b in range(n):
                                    a[b] += w0 * r0[b]
                        k += 1
                    _lif_rows(acc, nq, out[i], t0, u[i - cut[part]], scale[i], shift[i], decay, threshold,
                              spiking)

    @njit(parallel=True, fastmath=False, cache=True, nogil=True)
    def _pack_ctb_u8(x, out, n_chunks):  # pragma: no cover
        # out[c, t, b] = x[t, b, c] as uint8; returns (nonzero count, whether every value was an
        # integer in [0, 255] so that the bytes are exact)
        t_len, b_len, n_c = x.shape
        nnz = np.zeros(n_chunks, dtype=np.int64)
        bad = np.zeros(n_chunks, dtype=np.int64)
        for k in prange(n_chunks):
            t0 = k * t_len // n_chunks
            t1 = (k + 1) * t_len // n_chunks
            for t in range(t0, t1):
                for b in range(b_len):
                    row = x[t, b]
                    for c in range(n_c):
                        v = row[c]
                        if v != 0:
                            nnz[k] += 1
                            if not (v >= 0 and v <= 255 and v == np.floor(v)):
                                bad[k] += 1
                                v = 0
                        out[c, t, b] = np.uint8(v)
        return nnz.sum(), bad.sum() == 0

    @njit(parallel=True, fastmath=False, cache=True, nogil=True)
    def _pack_scaled_u8(x, scale, out):  # pragma: no cover
        # out = x / scale as uint8; False unless every quotient is an integer in [0, 255]
        t_len = x.shape[0]
        bad = np.zeros(t_len, dtype=np.int64)
        for t in prange(t_len):
            xr = x[t]
            orow = out[t]
            for c in range(xr.shape[0]):
                a = xr[c]
                o = orow[c]
                for b in range(a.shape[0]):
                    q = a[b] / scale
                    if q != np.floor(q) or q < 0 or q > 255:
                        bad[t] += 1
                        q = 0
                    o[b] = np.uint8(q)
        return bad.sum() == 0

    # -- BatchNorm (batch statistics) + LIF on (T, C, B), keeping only the BatchNorm input ----------
    @njit(parallel=True, fastmath=False, cache=True, nogil=True)
    def _bn_lif_forward(y, weight, bias, eps, decay, threshold, spikes, mean, var):  # pragma: no cover
        # per channel c: mean, biased var over (T, B); h = (y - mean) * invstd * w + b; LIF -> spikes
        t_len, n_c, b_len = y.shape
        n = t_len * b_len
        for c in prange(n_c):
            acc = 0.0
            for t in range(t_len):
                row = y[t, c]
                for b in range(b_len):
                    acc += row[b]
            mu = acc / n
            acc = 0.0
            for t in range(t_len):
                row = y[t, c]
                for b in range(b_len):
                    dv = row[b] - mu
                    acc += dv * dv
            mean[c] = mu
            var[c] = acc / n
            invstd = 1.0 / np.sqrt(acc / n + eps)
            alpha = invstd * weight[c]
            beta = bias[c] - mu * alpha
            u = np.zeros(b_len, dtype=y.dtype)
            for t in range(t_len):
                row = y[t, c]
                srow = spikes[t, c]
                for b in range(b_len):
                    v = decay * u[b] + (row[b] * alpha + beta)
                    srow[b], u[b] = _fire(v, threshold)

    @njit(parallel=True, fastmath=False, cache=True, nogil=True)
    def _bn_lif_backward(y, grad_spikes, weight, bias, mean, var, eps, decay, threshold, sg_alpha, gy, gw,
                         gb):  # pragma: no cover
        # recompute h and the membrane per channel, reverse LIF loop -> g_h, then BatchNorm's backward
        t_len, n_c, b_len = y.shape
        n = t_len * b_len
        k = np.pi / 2 * sg_alpha
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
                    v = decay * u[b] + (row[b] * alpha + beta)
                    mem[t, b] = v
                    u[b] = 0 if v >= threshold else v
            gh = np.empty((t_len, b_len), dtype=y.dtype)
            carry = np.zeros(b_len, dtype=y.dtype)
            for t in range(t_len - 1, -1, -1):
                gs = grad_spikes[t, c]
                for b in range(b_len):
                    x = mem[t, b] - threshold
                    keep = 0.0 if mem[t, b] >= threshold else 1.0
                    g = gs[b] * (sg_alpha / 2) / (1 + (k * x) * (k * x)) + carry[b] * keep
                    gh[t, b] = g
                    carry[b] = decay * g
            s1 = 0.0  # sum g_h
            s2 = 0.0  # sum g_h * xhat
            for t in range(t_len):
                row = y[t, c]
                for b in range(b_len):
                    s1 += gh[t, b]
                    s2 += gh[t, b] * (row[b] - mu) * invstd
            gb[c] = s1
            gw[c] = s2
            scale = weight[c] * invstd / n
            for t in range(t_len):
                row = y[t, c]
                grow = gy[t, c]
                for b in range(b_len):
                    xhat = (row[b] - mu) * invstd
                    grow[b] = scale * (n * gh[t, b] - s1 - xhat * s2)

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
                    v = decay * u[m] + cur[m]
                    s = np.float32(1.0) if v >= threshold else np.float32(0.0)
                    mem[m] = v
                    spk[m] = s
                    u[m] = v - v * s

    @njit(parallel=True, fastmath=False, cache=True, nogil=True)
    def _lif_backward(grad_spikes, membrane, decay, threshold, alpha, grad_current):  # pragma: no cover
        # reverse loop of the LIF with detached reset and the arctan surrogate
        t_len, n = membrane.shape
        n_chunks = (n + 511) // 512
        k = np.pi / 2 * alpha
        for c in prange(n_chunks):
            m0 = c * 512
            m1 = min(n, m0 + 512)
            carry = np.zeros(m1 - m0, dtype=membrane.dtype)  # decay * dL/du[t + 1]
            for t in range(t_len - 1, -1, -1):
                mem = membrane[t, m0:m1]
                gs = grad_spikes[t, m0:m1]
                gc = grad_current[t, m0:m1]
                for m in range(m1 - m0):
                    x = mem[m] - threshold
                    keep = np.float32(0.0) if mem[m] >= threshold else np.float32(1.0)
                    g = gs[m] * (alpha / 2) / (1 + (k * x) * (k * x)) + carry[m] * keep
                    gc[m] = g
                    carry[m] = decay * g


def tap_forward(x, indptr, src, delay, value, y) -> None:
    """x (T, in, B), y (T, out, B) C-contiguous numpy arrays; y is overwritten."""
    _tap_forward(x, indptr, src, delay, value, y)


def tap_backward_input(gy, indptr_t, dst_t, delay_t, value_t, gx) -> None:
    """gy (T, out, B), gx (T, in, B); gx is overwritten."""
    _tap_backward_input(gy, indptr_t, dst_t, delay_t, value_t, gx)


def tap_backward_values(gy, x, indptr, src, delay, gv) -> None:
    """gy (T, out, B), x (T, in, B); gv (n_taps,) is overwritten."""
    _tap_backward_values(gy, x, indptr, src, delay, gv, numba.get_num_threads())


def group_forward(x, indptr, src, base, v4, y) -> None:
    """x (T, in, B), y (T, out, B); groups of four taps (base (G,), v4 (G, 4)) in CSR rows by output."""
    _group_forward(_relayout_ct(x), indptr, src, base, v4, y, numba.get_num_threads())


def pack_scaled_u8(x, scale: float, out) -> bool:
    """out (uint8, x's shape) = x / scale; whether that is exact (spikes, dropout-scaled spikes, counts)."""
    return bool(_pack_scaled_u8(x, scale, out))


DELAY_BAND = 32  # delays per sweep of the input-gradient loop (its gy window: ~(band + 11) rows x out x B)


def group_backward_input(gy, indptr_t, dst_t, base_t, v4_t, gx) -> None:
    """gy (T, out, B), gx (T, in, B) overwritten; groups in CSR rows by input (the transposed order)."""
    order, band_ptr = _delay_bands(indptr_t, base_t)
    if order is not None:  # each column's taps sorted by delay
        dst_t, base_t, v4_t = dst_t[order], base_t[order], np.ascontiguousarray(v4_t[order])
    gyt = _relayout_ct(gy)
    for band in range(band_ptr.shape[1] - 1):
        _group_backward_input(gyt, indptr_t, band_ptr, band, dst_t, base_t, v4_t, gx, numba.get_num_threads())


def group_backward_values(gy, x, indptr, src, base, gv4) -> None:
    """gv4 (G, 4) = gradient of the group values, overwritten."""
    order, band_ptr = _delay_bands(indptr, base)
    if order is None:
        _group_backward_values(gy, x, band_ptr, src, base, gv4, numba.get_num_threads())
        return
    out = np.empty_like(gv4)
    _group_backward_values(gy, x, band_ptr, src[order], base[order], out, numba.get_num_threads())
    gv4[order] = out


def _delay_bands(indptr, base):
    """Each CSR row's entries in bands of DELAY_BAND delays: (order sorting every row by delay, or
    None when one band holds them all; band_ptr (rows, n_bands + 1) into the sorted order)."""
    n_rows = len(indptr) - 1
    lo = int(base.min()) if len(base) else 0
    span = (int(base.max()) - lo + 1) if len(base) else 1
    n_bands = -(-span // DELAY_BAND)
    row = np.repeat(np.arange(n_rows), np.diff(indptr))
    keys = row * span + (base - lo)
    order = None
    if n_bands > 1:
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
    edges = np.arange(n_rows)[:, None] * span + np.minimum(np.arange(n_bands + 1) * DELAY_BAND, span)[None, :]
    band_ptr = np.searchsorted(keys, edges, side="left").astype(np.int64)
    band_ptr[:, -1] = indptr[1:]
    return order, band_ptr


def event_layer(x, indptr, offset, weight, scale, shift, decay, threshold, spiking, td, out) -> None:
    """One layer of event-driven evaluation; see ``_event_layer``. x (T, B, in), out (T, B, out)."""
    n_chunks = max(1, min(x.shape[1], 8 * numba.get_num_threads()))
    _event_layer(x, indptr, offset, weight, scale, shift, decay, threshold, spiking, td, out, n_chunks)


def tap_values_forward(w, d, sigma, td, r, rn, full, eps, values, steps) -> None:
    """Gaussian tap values (E, P) and integer delays (E, P) of elements w, d (E,); see _sparse_delay."""
    _tap_values_forward(w, d, float(sigma), int(td), int(r), int(rn), bool(full), float(eps), values, steps)


def tap_values_backward(w, d, sigma, td, r, rn, full, eps, gv, gw, gd) -> None:
    """Gradients (E,) of the weights and delays from the value gradient gv (E, P)."""
    _tap_values_backward(w, d, float(sigma), int(td), int(r), int(rn), bool(full), float(eps), gv, gw, gd)


def gaussian_kernel_forward(w, d, sigma, td, eps, out) -> None:
    """The dense training kernel (S, Td) of elements w, d (S, m); see synapse.gaussian_kernel."""
    _gaussian_kernel_forward(w, d, float(sigma), int(td), float(eps), out)


def gaussian_kernel_backward(w, d, sigma, td, eps, gk, gw, gd) -> None:
    """Gradients (S, m) of weights and delays from the kernel gradient gk (S, Td)."""
    _gaussian_kernel_backward(w, d, float(sigma), int(td), float(eps), gk, gw, gd)


def tap1_lif_ctb(xt, indptr, src, delay, value, scale, shift, decay, threshold, spiking, out) -> None:
    """A whole eval layer: one rounded tap per element, BatchNorm as (scale, shift), LIF (or the
    readout's integration); xt (in, T, B) float or uint8 -> out (out, T, B) uint8 spikes / membrane."""
    _tap1_lif_ctb(xt, indptr, src, delay, value, scale, shift, decay, threshold, spiking, out,
                  numba.get_num_threads())


def pack_ctb_u8(x, out) -> tuple[int, bool]:
    """x (T, B, C) float -> out (C, T, B) uint8; returns (nonzero count, exact)."""
    nnz, exact = _pack_ctb_u8(x, out, max(1, min(x.shape[0], 4 * numba.get_num_threads())))
    return int(nnz), bool(exact)


def bn_lif_forward(y, weight, bias, eps, decay, threshold, spikes, mean, var) -> None:
    """BatchNorm with batch statistics + LIF on (T, C, B); spikes, mean (C,), biased var (C,) written."""
    _bn_lif_forward(y, weight, bias, float(eps), float(decay), float(threshold), spikes, mean, var)


def bn_lif_backward(y, grad_spikes, weight, bias, mean, var, eps, decay, threshold, alpha, gy, gw, gb) -> None:
    """Gradients of y (T, C, B), BatchNorm weight and bias (C,) from the spikes' gradient."""
    _bn_lif_backward(y, grad_spikes, weight, bias, mean, var, float(eps), float(decay), float(threshold),
                     float(alpha), gy, gw, gb)


def lif_forward(current, decay, threshold, spikes, membrane) -> None:
    _lif_forward(current, decay, threshold, spikes, membrane)


def lif_backward(grad_spikes, membrane, decay, threshold, alpha, grad_current) -> None:
    _lif_backward(grad_spikes, membrane, decay, threshold, alpha, grad_current)
