"""Compiled tap products in groups of four consecutive delays (training with a Gaussian of
P = 2R taps per element): forward, input gradient and value gradient, eight output steps per block
in a local accumulator, on (T, C, B) arrays re-laid out to (C, T, B). PyTorch twin:
:func:`snn_delays.backends.taps.tap_conv_reference`."""

from __future__ import annotations

import numpy as np

from .runtime import balanced_cuts, n_threads, njit, prange

__all__ = ["group_forward", "group_backward_input", "group_backward_values", "DELAY_BAND"]

DELAY_BAND = 32  # delays per sweep of the input-gradient loop (its gy window: ~(band + 11) rows x out x B)


# -- groups of four consecutive taps (training with a Gaussian) ------------------------------
# A group k holds the taps at integer delays base[k] + p, p = 0..3, with values v4[k, p]. Eight
# output steps are computed together in a local (8, B) accumulator: the eleven input rows they
# need are loaded once and each feeds up to four multiply-adds (the flat loops of :mod:`.taps`
# load one row per multiply-add). The input is first re-laid out to (C, T, B): in (T, C, B) the time
# stride (C * B * 4 bytes = 256 KB at SHD sizes) maps a group's rows to one cache set. Each
# thread owns a slice of outputs balanced by tap count. Rows outside [0, T) count as zero, so
# base may be negative or run past Td - 1 (those taps carry 0). About 13 of the 16 fp32
# multiply-adds per cycle per core the FMA units allow (Zen 4, measured; see the benchmark notes).

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
    cut = balanced_cuts(indptr, n_out, n_split)
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
    cut = balanced_cuts(indptr_t, n_in, n_split)
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


def group_forward(x, indptr, src, base, v4, y) -> None:
    """x (T, in, B), y (T, out, B); groups of four taps (base (G,), v4 (G, 4)) in CSR rows by output."""
    _group_forward(_relayout_ct(x), indptr, src, base, v4, y, n_threads())


def group_backward_input(gy, indptr_t, dst_t, base_t, v4_t, gx) -> None:
    """gy (T, out, B), gx (T, in, B) overwritten; groups in CSR rows by input (the transposed order)."""
    order, band_ptr = _delay_bands(indptr_t, base_t)
    if order is not None:  # each column's taps sorted by delay
        dst_t, base_t, v4_t = dst_t[order], base_t[order], np.ascontiguousarray(v4_t[order])
    gyt = _relayout_ct(gy)
    for band in range(band_ptr.shape[1] - 1):
        _group_backward_input(gyt, indptr_t, band_ptr, band, dst_t, base_t, v4_t, gx, n_threads())


def group_backward_values(gy, x, indptr, src, base, gv4) -> None:
    """gv4 (G, 4) = gradient of the group values, overwritten."""
    order, band_ptr = _delay_bands(indptr, base)
    if order is None:
        _group_backward_values(gy, x, band_ptr, src, base, gv4, n_threads())
        return
    out = np.empty_like(gv4)
    _group_backward_values(gy, x, band_ptr, src[order], base[order], out, n_threads())
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
