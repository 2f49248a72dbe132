"""Compiled loops of a LIF layer with recurrent delay synapses (channel-major, batch-innermost
(T, H, B) arrays). The time loop is sequential (step t reads the layer's own spikes of earlier
steps), so the work is split over the batch: each thread runs the whole time loop for a slice of
samples. Taps are stored per post-synaptic neuron (CSR: ``indptr``, ``src``, ``step``, ``value``)
and, for the backward, per pre-synaptic neuron (the transposed order). Every ``step`` is >= 1.
PyTorch twin: :func:`snn_delays.backends.recurrent.recurrent_lif_reference`.
"""

from __future__ import annotations

import numpy as np

from .neuron import lif_step, surrogate_grad
from .runtime import njit, prange

__all__ = ["recurrent_forward", "recurrent_backward"]


@njit(fastmath=True, cache=True, nogil=True)
def _gather(acc, y, t, sign, k0, k1, nbr, step, value, t_len, b0, b1):  # pragma: no cover
    # acc[:] += sum_k value[k] * y[t + sign * step[k], nbr[k], b0:b1] over rows inside [0, T);
    # four taps per pass (one load/store of acc per four rows)
    k = k0
    while k + 4 <= k1:
        s0 = t + sign * step[k]
        s1 = t + sign * step[k + 1]
        s2 = t + sign * step[k + 2]
        s3 = t + sign * step[k + 3]
        if 0 <= s0 < t_len and 0 <= s1 < t_len and 0 <= s2 < t_len and 0 <= s3 < t_len:
            y0 = y[s0, nbr[k]]
            y1 = y[s1, nbr[k + 1]]
            y2 = y[s2, nbr[k + 2]]
            y3 = y[s3, nbr[k + 3]]
            a0 = value[k]
            a1 = value[k + 1]
            a2 = value[k + 2]
            a3 = value[k + 3]
            for b in range(b0, b1):
                acc[b - b0] += a0 * y0[b] + a1 * y1[b] + a2 * y2[b] + a3 * y3[b]
            k += 4
            continue
        for q in range(4):
            s = t + sign * step[k + q]
            if 0 <= s < t_len:
                yq = y[s, nbr[k + q]]
                a = value[k + q]
                for b in range(b0, b1):
                    acc[b - b0] += a * yq[b]
        k += 4
    while k < k1:
        s = t + sign * step[k]
        if 0 <= s < t_len:
            yq = y[s, nbr[k]]
            a = value[k]
            for b in range(b0, b1):
                acc[b - b0] += a * yq[b]
        k += 1


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _recurrent_forward(current, indptr, src, step, value, decay, threshold, spikes, membrane,
                       chunk):  # pragma: no cover
    # v[t, i] = decay * u[t-1, i] + current[t, i] + sum_{k in row i} value[k] * spikes[t - step[k], src[k]]
    # spikes = (v >= threshold), hard reset; membrane = v (before reset)
    t_len, n, b_len = current.shape
    n_chunks = (b_len + chunk - 1) // chunk
    for c in prange(n_chunks):
        b0 = c * chunk
        b1 = min(b_len, b0 + chunk)
        w = b1 - b0
        u = np.zeros((n, w), dtype=current.dtype)
        acc = np.zeros(w, dtype=current.dtype)
        for t in range(t_len):
            for i in range(n):
                for b in range(w):
                    acc[b] = current[t, i, b0 + b]
                _gather(acc, spikes, t, -1, indptr[i], indptr[i + 1], src, step, value, t, b0, b1)
                mem = membrane[t, i]
                spk = spikes[t, i]
                ui = u[i]
                for b in range(w):
                    v, s, ui[b] = lif_step(ui[b], acc[b], decay, threshold)
                    mem[b0 + b] = v
                    spk[b0 + b] = s


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _recurrent_backward(grad_spikes, membrane, indptr_t, dst_t, step_t, value_t, decay, threshold, alpha,
                        grad_current, chunk):  # pragma: no cover
    # reverse loop: the gradient reaching spikes[t, j] is the outside one plus, through every
    # recurrent tap k leaving j, value[k] * grad_current[t + step[k], dst[k]] (later steps, already
    # known); then the LIF's reverse step (detached reset, arctan surrogate)
    t_len, n, b_len = membrane.shape
    n_chunks = (b_len + chunk - 1) // chunk
    for c in prange(n_chunks):
        b0 = c * chunk
        b1 = min(b_len, b0 + chunk)
        w = b1 - b0
        carry = np.zeros((n, w), dtype=membrane.dtype)  # decay * dL/dv[t + 1]
        gs = np.zeros(w, dtype=membrane.dtype)
        for t in range(t_len - 1, -1, -1):
            for j in range(n):
                for b in range(w):
                    gs[b] = grad_spikes[t, j, b0 + b]
                _gather(gs, grad_current, t, 1, indptr_t[j], indptr_t[j + 1], dst_t, step_t, value_t, t_len, b0, b1)
                mem = membrane[t, j]
                gc = grad_current[t, j]
                cj = carry[j]
                for b in range(w):
                    m = mem[b0 + b]
                    g = surrogate_grad(gs[b], m - threshold, alpha) + (cj[b] * 0 if m >= threshold else cj[b])
                    gc[b0 + b] = g
                    cj[b] = decay * g


def recurrent_forward(current, indptr, src, step, value, decay, threshold, spikes, membrane, chunk) -> None:
    """current (T, H, B) -> spikes, membrane before reset (T, H, B), both overwritten (``spikes``
    must start zeroed: rows not yet computed are read as zero through taps of value 0)."""
    _recurrent_forward(current, indptr, src, step, value, float(decay), float(threshold), spikes, membrane, chunk)


def recurrent_backward(grad_spikes, membrane, indptr_t, dst_t, step_t, value_t, decay, threshold, alpha,
                       grad_current, chunk) -> None:
    """The reverse loop: grad_current (T, H, B) overwritten from grad_spikes (T, H, B)."""
    _recurrent_backward(grad_spikes, membrane, indptr_t, dst_t, step_t, value_t, float(decay), float(threshold),
                        float(alpha), grad_current, chunk)
