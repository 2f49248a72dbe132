"""Spike tensors as exact bytes: spikes, dropout-scaled spikes and counts are s * (small
integers), so the loops can read a quarter of the memory (the tap and FFT paths keep such inputs as
bytes for their backward; the evaluation reads its input as bytes)."""

from __future__ import annotations

import numpy as np

from .runtime import n_threads, njit, prange

__all__ = ["pack_scaled_u8", "pack_ctb_u8", "tbc_to_ctb_u8", "first_nonzero"]


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


def tbc_to_ctb_u8(x, out) -> None:
    """x (T, B, C) uint8 -> out (C, T, B) uint8 (the event layers' spikes to the tap layers' layout)."""
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
