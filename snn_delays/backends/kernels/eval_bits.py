"""Compiled evaluation loops on bit-packed spikes: a hidden layer's 0/1 spikes stored as bits,
eight batch lanes per byte, (C, T, ceil(B / 8)) uint8, bit l of byte g holding lane 8 g + l.

One rounded tap (weight w, input j, delay d) adds w to the current of the lanes whose input bit
is set: the byte of eight lanes is loaded straight into an AVX-512 mask register and the add is
masked (``kmovb`` + ``vaddps {k}``, four taps per load and store of the accumulator), with no byte
-> float conversion and no multiply (:func:`_masked_add4`, an LLVM-level intrinsic: numba's own
vectoriser turns the same code into a byte test and a blend per tap). Without AVX-512 LLVM lowers
the same IR to AVX2 blends (correct, slower). Used by :mod:`snn_delays.backends.fast_eval` for
the layers after the first; same sums as :func:`.eval._tap1_lif_ctb` up to their order.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .neuron import lif_step
from .runtime import balanced_cuts, n_threads, njit, prange

__all__ = ["tap1_lif_bits", "pack_tbc_bits", "pack_ctb_bits", "bits_to_tbc", "empty_bits", "bit_rows", "bit_bytes",
           "LANES"]

LANES = 16  # batch lanes per masked add (one AVX-512 register of float32): rows hold a multiple of LANES bits

_PACK_MAGIC = np.uint64(0x0102040810204080)  # eight 0/1 bytes (little-endian u64) -> one byte, lane l at bit l


def _splat(builder, value, vty):
    undef = ir.Constant(vty, ir.Undefined)
    v = builder.insert_element(undef, value, ir.IntType(32)(0))
    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(ir.IntType(32), vty.count),
                                                        [0] * vty.count))


def _masked_adds_codegen(n_taps):
    """The code of acc[pos:pos + 8] += w_k on the lanes whose bit is set in the byte bits[p_k], for
    each k < n_taps: one load and one store of the eight lanes of acc, each byte loaded as a mask.
    Arguments (acc, pos, bits, p_0..p_{n-1}, w_0..w_{n-1})."""

    def codegen(context, builder, signature, args):
        acc_a = context.make_array(signature.args[0])(context, builder, args[0])
        bits_a = context.make_array(signature.args[2])(context, builder, args[2])
        fty = context.get_value_type(signature.args[0].dtype)
        vty = ir.VectorType(fty, LANES)
        mty = ir.VectorType(ir.IntType(1), LANES)
        align = context.get_abi_sizeof(fty)  # the array's elements: no wider alignment known
        vptr = builder.bitcast(builder.gep(acc_a.data, [args[1]]), vty.as_pointer())
        a = builder.load(vptr, align=align)
        partial = None  # taps 4..: a second chain from zero (two dependency chains), added at the end
        for k in range(n_taps):
            bptr = builder.bitcast(builder.gep(bits_a.data, [args[3 + k]]), ir.IntType(LANES).as_pointer())
            mask = builder.bitcast(builder.load(bptr, align=1), mty)
            w = _splat(builder, context.cast(builder, args[3 + n_taps + k], signature.args[3 + n_taps + k],
                                             signature.args[0].dtype), vty)
            if k < 4:
                a = builder.select(mask, builder.fadd(a, w), a)
            elif partial is None:
                partial = builder.select(mask, w, ir.Constant(vty, None))
            else:
                partial = builder.select(mask, builder.fadd(partial, w), partial)
        if partial is not None:
            a = builder.fadd(a, partial)
        builder.store(a, vptr, align=align)
        return context.get_dummy_value()

    return codegen


@intrinsic
def _masked_add1(typingctx, acc, pos, bits, p0, w0):
    return types.void(acc, pos, bits, p0, w0), _masked_adds_codegen(1)


@intrinsic
def _masked_add8(typingctx, acc, pos, bits, p0, p1, p2, p3, p4, p5, p6, p7, w0, w1, w2, w3, w4, w5, w6, w7):
    return (types.void(acc, pos, bits, p0, p1, p2, p3, p4, p5, p6, p7, w0, w1, w2, w3, w4, w5, w6, w7),
            _masked_adds_codegen(8))


@intrinsic
def _masked_add4(typingctx, acc, pos, bits, p0, p1, p2, p3, w0, w1, w2, w3):
    return types.void(acc, pos, bits, p0, p1, p2, p3, w0, w1, w2, w3), _masked_adds_codegen(4)


@njit(fastmath=False, cache=True, nogil=True, inline="always")
def _lif_rows_bits(acc, spk, nq, out_i, t0, u, sc, sh, decay, threshold, spiking, n):  # pragma: no cover
    # BatchNorm + LIF over the nq steps of one block of one neuron, u (nb * 8,) the membrane (lanes
    # past n are padding). spiking: out_i (T, nb) uint8 bits (spk: an (nb * 8,) byte scratch);
    # else out_i (T, B) floats, the membrane.
    nl = u.shape[0]
    nb = nl // 8
    words = spk.view(np.uint64)
    for q in range(nq):
        a = acc[q]
        if spiking:
            for b in range(nl):
                _, s, u[b] = lif_step(u[b], sc * a[b] + sh, decay, threshold)  # vectorises
                spk[b] = s
            spk[n:] = 0  # padding lanes stay silent (densities count bits)
            o = out_i[t0 + q]
            for g in range(nb):
                o[g] = np.uint8((words[g] * _PACK_MAGIC) >> np.uint64(56))
        else:
            o = out_i[t0 + q]
            for b in range(n):
                v = decay * u[b] + (sc * a[b] + sh)
                o[b] = v
                u[b] = v


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _tap1_lif_bits(xb, x_pad, t_len, n, indptr, src, delay, value, scale, shift, decay, threshold, spiking, out,
                   o_pad, n_split):  # pragma: no cover
    # The layer in one pass, as eval._tap1_lif_ctb but on bits: step t of the input is row x_pad + t
    # of xb (in, x_pad + T8, nb), zero rows before (x_pad >= the largest delay) and after (up to a
    # multiple of 8 steps), so every tap's run of 8 steps lies inside xb; step t of the output is
    # row o_pad + t of out: (out, o_pad + T8, nb) bits (spiking) or (out, T, n) membrane (o_pad 0).
    # For every output i and block of 8 steps, the current of the 8 steps x nb * 8 lanes accumulates
    # in a local buffer, four taps per pass, each tap's 8 steps one run of 8 nb bytes of xb. Each
    # thread owns a slice of outputs, balanced by tap count, and walks time in order.
    n_in, x_rows, nb = xb.shape
    xflat = xb.reshape(n_in * x_rows * nb)
    row_len = x_rows * nb
    m = 8 * nb  # bytes of one tap's run (8 steps)
    nl = 8 * nb  # lanes per step
    n_out = out.shape[0]
    n_blk = (t_len + 7) // 8
    cut = balanced_cuts(indptr, n_out, n_split)
    for part in prange(n_split):
        acc = np.empty((8, nl), dtype=scale.dtype)
        acc_flat = acc.reshape(8 * nl)
        spk = np.zeros(nl, dtype=np.uint8)
        u = np.zeros((cut[part + 1] - cut[part], nl), dtype=scale.dtype)
        for blk in range(n_blk):
            t0 = blk * 8
            nq = min(8, t_len - t0)
            r0 = x_pad + t0  # the row of step t0
            for i in range(cut[part], cut[part + 1]):
                acc[:] = 0
                k = indptr[i]
                k1 = indptr[i + 1]
                while k + 4 <= k1:
                    b0 = src[k] * row_len + (r0 - delay[k]) * nb
                    b1 = src[k + 1] * row_len + (r0 - delay[k + 1]) * nb
                    b2 = src[k + 2] * row_len + (r0 - delay[k + 2]) * nb
                    b3 = src[k + 3] * row_len + (r0 - delay[k + 3]) * nb
                    w0 = value[k]
                    w1 = value[k + 1]
                    w2 = value[k + 2]
                    w3 = value[k + 3]
                    for g in range(0, m, LANES // 8):
                        _masked_add4(acc_flat, g * 8, xflat, b0 + g, b1 + g, b2 + g, b3 + g, w0, w1, w2, w3)
                    k += 4
                while k < k1:
                    b0 = src[k] * row_len + (r0 - delay[k]) * nb
                    w0 = value[k]
                    for g in range(0, m, LANES // 8):
                        _masked_add1(acc_flat, g * 8, xflat, b0 + g, w0)
                    k += 1
                _lif_rows_bits(acc, spk, nq, out[i], o_pad + t0 if spiking else t0, u[i - cut[part]], scale[i],
                               shift[i], decay, threshold, spiking, n)


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _pack_tbc_bits(x, out, pad):  # pragma: no cover
    # out[c, pad + t, g] = bits of x[t, 8 g + l, c] (l = 0..7, lanes past B zero); x (T, B, C) 0/1
    # bytes; the other rows of out are left as they are.
    # Per (t, g): eight rows of x combine into one byte per channel (vectorised over c), then the
    # bytes go to their channels' rows.
    t_len, b_len, n_c = x.shape
    nb = out.shape[2]
    for t in prange(t_len):
        acc = np.empty(n_c, dtype=np.uint8)
        for g in range(nb):
            acc[:] = 0
            for lane in range(8):
                b = g * 8 + lane
                if b < b_len:
                    row = x[t, b]
                    for c in range(n_c):
                        acc[c] |= row[c] << lane
            for c in range(n_c):
                out[c, pad + t, g] = acc[c]


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _pack_ctb_bits(x, out, pad):  # pragma: no cover
    # out[c, pad + t, g] = bits of x[c, t, 8 g + l]; x (C, T, B) 0/1 bytes
    n_c, t_len, b_len = x.shape
    nb = out.shape[2]
    for c in prange(n_c):
        for t in range(t_len):
            row = x[c, t]
            o = out[c, pad + t]
            for g in range(nb):
                v = 0
                for lane in range(8):
                    b = g * 8 + lane
                    if b < b_len:
                        v |= row[b] << lane
                o[g] = v


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _bits_to_tbc(xb, pad, out):  # pragma: no cover
    # out[t, b, c] = bit (b % 8) of xb[c, pad + t, b // 8]
    t_len, b_len, n_c = out.shape
    for t in prange(t_len):
        for b in range(b_len):
            o = out[t, b]
            g = b >> 3
            lane = b & 7
            for c in range(n_c):
                o[c] = (xb[c, pad + t, g] >> lane) & 1


def bit_bytes(b_len: int) -> int:
    """Bytes per step of a bit row of ``b_len`` lanes: whole groups of LANES lanes (zero padding)."""
    return (b_len + LANES - 1) // LANES * (LANES // 8)


def bit_rows(t_len: int, pad: int) -> int:
    """Rows of a bit tensor holding ``t_len`` steps after ``pad`` zero steps, up to a multiple of 8
    steps (the tap loop reads whole blocks of 8)."""
    return pad + 8 * ((t_len + 7) // 8)


def empty_bits(n_c: int, t_len: int, b_len: int, pad: int) -> np.ndarray:
    """(C, bit_rows(T, pad), bit_bytes(B)) uint8 with the pad rows and the rows after T zero (the
    lanes past B are written as zeros by the loops)."""
    out = np.empty((n_c, bit_rows(t_len, pad), bit_bytes(b_len)), dtype=np.uint8)
    out[:, :pad] = 0
    out[:, pad + t_len:] = 0
    return out


def pack_tbc_bits(x: np.ndarray, pad: int = 0) -> np.ndarray:
    """(T, B, C) uint8 0/1 spikes -> bits (C, pad + T8, bit_bytes(B)) (:func:`empty_bits`; bit l of
    byte g of row pad + t: lane 8 g + l at step t)."""
    t_len, b_len, n_c = x.shape
    out = empty_bits(n_c, t_len, b_len, pad)
    _pack_tbc_bits(x, out, pad)
    return out


def pack_ctb_bits(x: np.ndarray, pad: int = 0) -> np.ndarray:
    """(C, T, B) uint8 0/1 spikes -> bits as :func:`pack_tbc_bits`."""
    n_c, t_len, b_len = x.shape
    out = empty_bits(n_c, t_len, b_len, pad)
    _pack_ctb_bits(x, out, pad)
    return out


def bits_to_tbc(xb: np.ndarray, t_len: int, b_len: int, pad: int = 0) -> np.ndarray:
    """Bits (C, rows, nb) from row ``pad`` -> (T, B, C) uint8 0/1 spikes."""
    out = np.empty((t_len, b_len, xb.shape[0]), dtype=np.uint8)
    _bits_to_tbc(xb, pad, out)
    return out


def tap1_lif_bits(xb, x_pad, t_len, b_len, indptr, src, delay, value, scale, shift, decay, threshold, spiking,
                  out, o_pad=0) -> None:
    """A whole eval layer on bit-packed 0/1 spikes: xb (in, x_pad + T8, nb) bits of ``b_len`` lanes,
    step t in row x_pad + t, x_pad >= every delay (:func:`pack_tbc_bits`) -> out: bits (out,
    o_pad + T8, nb) from :func:`empty_bits` (spiking) or the membrane (out, T, b_len) of ``scale``'s
    dtype; one rounded tap per element (``indptr``/``src``/``delay``/``value`` as for
    :func:`.eval.tap1_lif_ctb`), BatchNorm as (scale, shift), LIF (or the readout's integration)."""
    if len(delay) and (int(delay.max()) > x_pad or int(delay.min()) < 0):
        raise ValueError(f"delays must lie in [0, x_pad = {x_pad}]")
    _tap1_lif_bits(xb, x_pad, t_len, b_len, indptr, src, delay, value, scale, shift, decay, threshold, spiking,
                   out, o_pad, n_threads())
