"""Spike tensors as exact bytes: spikes, dropout-scaled spikes and counts are s * (small
integers), so the loops can read a quarter of the memory (the tap and FFT paths keep such inputs as
bytes for their backward; the evaluation reads its input as bytes)."""

from __future__ import annotations

import sys

import numpy as np

from .runtime import n_threads, njit, prange

__all__ = ["pack_scaled_u8", "pack_ctb_u8", "tbc_to_ctb_u8", "first_nonzero", "dropout_pack_u8"]


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


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _tbc_to_ctb_u8(x, out):  # pragma: no cover
    # out[c, t, b] = x[t, b, c], in tiles of 64 channels (one cache line of x per (t, b)) so that each
    # task writes 64 sequential streams (few pages at a time) and reads each line of x once
    t_len, b_len, n_c = x.shape
    n_tiles = (n_c + 63) // 64
    for tile in prange(n_tiles * t_len):
        c0 = (tile // t_len) * 64
        t = tile % t_len
        c1 = min(n_c, c0 + 64)
        for b in range(b_len):
            row = x[t, b]
            for c in range(c0, c1):
                out[c, t, b] = row[c]


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _swap_blocks(a, b, shift, mask):  # pragma: no cover
    # exchange the masked blocks of b with the blocks of a ``shift`` bits higher
    t = ((a >> shift) ^ b) & mask
    return a ^ (t << shift), b ^ t


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _transpose_8x8(a0, a1, a2, a3, a4, a5, a6, a7):  # pragma: no cover
    # eight 64-bit words as an 8 x 8 byte matrix (word r, byte k = row r, column k) -> its transpose,
    # by three rounds of masked swaps (1-, 2-, 4-byte blocks)
    s, m = np.uint64(8), np.uint64(0x00FF00FF00FF00FF)
    a0, a1 = _swap_blocks(a0, a1, s, m)
    a2, a3 = _swap_blocks(a2, a3, s, m)
    a4, a5 = _swap_blocks(a4, a5, s, m)
    a6, a7 = _swap_blocks(a6, a7, s, m)
    s, m = np.uint64(16), np.uint64(0x0000FFFF0000FFFF)
    a0, a2 = _swap_blocks(a0, a2, s, m)
    a1, a3 = _swap_blocks(a1, a3, s, m)
    a4, a6 = _swap_blocks(a4, a6, s, m)
    a5, a7 = _swap_blocks(a5, a7, s, m)
    s, m = np.uint64(32), np.uint64(0x00000000FFFFFFFF)
    a0, a4 = _swap_blocks(a0, a4, s, m)
    a1, a5 = _swap_blocks(a1, a5, s, m)
    a2, a6 = _swap_blocks(a2, a6, s, m)
    a3, a7 = _swap_blocks(a3, a7, s, m)
    return a0, a1, a2, a3, a4, a5, a6, a7


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _tbc_to_ctb_u8_words(x, out):  # pragma: no cover
    # out[c, t, b] = x[t, b, c] for C and B multiples of 8: 8 x 8 byte blocks moved as eight 64-bit
    # words each (5x the byte loop's speed); tasks are (t, 64 channels) as in _tbc_to_ctb_u8
    t_len, b_len, n_c = x.shape
    xw = x.view(np.uint64)  # (T, B, C / 8): byte k of word w is channel 8 w + k (little-endian)
    ow = out.view(np.uint64)  # (C, T, B / 8)
    n_w = n_c // 8
    n_tiles = (n_w + 7) // 8
    for task in prange(n_tiles * t_len):
        w0 = (task // t_len) * 8
        t = task % t_len
        for bw in range(b_len // 8):
            b = bw * 8
            for w in range(w0, min(n_w, w0 + 8)):
                a0, a1, a2, a3, a4, a5, a6, a7 = _transpose_8x8(
                    xw[t, b, w], xw[t, b + 1, w], xw[t, b + 2, w], xw[t, b + 3, w],
                    xw[t, b + 4, w], xw[t, b + 5, w], xw[t, b + 6, w], xw[t, b + 7, w])
                c = w * 8
                ow[c, t, bw] = a0
                ow[c + 1, t, bw] = a1
                ow[c + 2, t, bw] = a2
                ow[c + 3, t, bw] = a3
                ow[c + 4, t, bw] = a4
                ow[c + 5, t, bw] = a5
                ow[c + 6, t, bw] = a6
                ow[c + 7, t, bw] = a7


def tbc_to_ctb_u8(x, out) -> None:
    """x (T, B, C) uint8 -> out (C, T, B) uint8 (the event layers' spikes to the tap layers' layout);
    as 64-bit words when C and B are multiples of 8 (little-endian machines), else byte by byte."""
    if x.shape[1] % 8 == 0 and x.shape[2] % 8 == 0 and sys.byteorder == "little":
        _tbc_to_ctb_u8_words(x, out)
    else:
        _tbc_to_ctb_u8(x, out)


@njit(fastmath=False, cache=True, nogil=True)
def _first_nonzero(flat):  # pragma: no cover
    for k in range(flat.shape[0]):
        if flat[k] != 0:
            return flat[k]
    return flat[0] * 0


def first_nonzero(x) -> float:
    """The first non-zero value of x in memory order (0 if none): the scale of spikes, dropout-scaled
    spikes or counts, found without a pass over the whole array."""
    return float(_first_nonzero(x.reshape(-1)))


def pack_scaled_u8(x, scale: float, out) -> bool:
    """out (uint8, x's shape) = x / scale; whether that is exact (spikes, dropout-scaled spikes, counts)."""
    return bool(_pack_scaled_u8(x, scale, out))


def pack_ctb_u8(x, out) -> tuple[int, bool]:
    """x (T, B, C) float -> out (C, T, B) uint8; returns (nonzero count, exact)."""
    nnz, exact = _pack_ctb_u8(x, out, max(1, min(x.shape[0], 4 * n_threads())))
    return int(nnz), bool(exact)


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _dropout_pack_u8(s, keep, scale, out, packed):  # pragma: no cover
    # out[t] = s[t] * keep (the float product torch computes), packed[t] = out[t] / scale as uint8 (the
    # bytes _pack_scaled_u8 writes); returns (non-zero count of out, whether every s was 0 or 1 and every
    # quotient an integer in [0, 255])
    t_len, n_c, b_len = s.shape
    nnz = np.zeros(t_len, dtype=np.int64)
    bad = np.zeros(t_len, dtype=np.int64)
    for t in prange(t_len):
        n_nz = 0
        n_bad = 0
        for c in range(n_c):
            a = s[t, c]
            k = keep[c]
            o = out[t, c]
            p = packed[t, c]
            for b in range(b_len):
                v = a[b] * k[b]
                o[b] = v
                q = v / scale
                ok = (q == np.floor(q)) & (q >= 0) & (q <= 255) & ((a[b] == 0) | (a[b] == 1))
                n_bad += np.int64(not ok)
                n_nz += np.int64(v != 0)
                p[b] = np.uint8(q if ok else 0.0)
        nnz[t] = n_nz
        bad[t] = n_bad
    return nnz.sum(), bad.sum() == 0


def dropout_pack_u8(s, keep, scale: float, out, packed) -> tuple[int, bool]:
    """s (T, C, B) spikes, keep (C, B) -> out = s * keep (float, s's dtype) and packed = out / scale
    (uint8), in one pass; returns (non-zero count of out, whether s held only 0 and 1 and the bytes are
    exact)."""
    nnz, ok = _dropout_pack_u8(s, keep, scale, out, packed)
    return int(nnz), bool(ok)
