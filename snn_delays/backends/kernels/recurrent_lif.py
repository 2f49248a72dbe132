"""Compiled loops of a LIF layer with recurrent delay synapses. The time loop is sequential (step
t reads the layer's own spikes of earlier steps), so the work is split over the batch: the arrays
are chunk-major, (C, T, H, W) = C chunks of W samples each laid out as channel-major,
batch-innermost (T, H, W) blocks (contiguous rows: the inner loops vectorise), and each thread runs
the whole time loop for its chunks. Taps are stored per post-synaptic neuron (CSR: ``indptr``, ``src``, ``step``, ``value``)
and, for the backward, per pre-synaptic neuron (the transposed order). Every ``step`` is >= 1.
PyTorch twin: :func:`snn_delays.backends.recurrent_lif.recurrent_lif_reference`.
"""

from __future__ import annotations

import numpy as np

from .neuron import lif_step, surrogate_grad
from .runtime import njit, prange
from .taps import _dot_rows, _gather_rows

__all__ = ["recurrent_forward", "recurrent_backward", "recurrent_value_grad"]


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _recurrent_forward(current, indptr, src, step, value, decay, threshold, spikes, membrane):  # pragma: no cover
    # per chunk c of samples: v[t, i] = decay * u[t-1, i] + current[t, i]
    #                                   + sum_{k in row i} value[k] * spikes[t - step[k], src[k]]
    # spikes = (v >= threshold), hard reset; membrane = v (before reset)
    n_chunks, t_len, n, w = current.shape
    for c in prange(n_chunks):
        cur = current[c]
        spk = spikes[c]
        mem = membrane[c]
        u = np.zeros((n, w), dtype=current.dtype)
        acc = np.zeros(w, dtype=current.dtype)
        zero = np.zeros(w, dtype=current.dtype)
        for t in range(t_len):
            for i in range(n):
                # the recurrent current: rows of steps < t only (every step >= 1)
                _gather_rows(acc, spk, t, -1, indptr[i], indptr[i + 1], src, step, value, t, zero)
                row = cur[t, i]
                for b in range(w):
                    acc[b] += row[b]
                m = mem[t, i]
                s_row = spk[t, i]
                ui = u[i]
                for b in range(w):
                    v, s, ui[b] = lif_step(ui[b], acc[b], decay, threshold)
                    m[b] = v
                    s_row[b] = s


@njit(parallel=True, fastmath=False, cache=True, nogil=True)
def _recurrent_backward(grad_spikes, membrane, indptr_t, dst_t, step_t, value_t, decay, threshold, alpha,
                        grad_current):  # pragma: no cover
    # reverse loop per chunk: the gradient reaching spikes[t, j] is the outside one plus, through
    # every recurrent tap k leaving j, value[k] * grad_current[t + step[k], dst[k]] (later steps,
    # already known); then the LIF's reverse step (detached reset, arctan surrogate)
    n_chunks, t_len, n, w = membrane.shape
    for c in prange(n_chunks):
        gsp = grad_spikes[c]
        mem = membrane[c]
        gcur = grad_current[c]
        carry = np.zeros((n, w), dtype=membrane.dtype)  # decay * dL/dv[t + 1]
        gs = np.zeros(w, dtype=membrane.dtype)
        zero = np.zeros(w, dtype=membrane.dtype)
        for t in range(t_len - 1, -1, -1):
            for j in range(n):
                _gather_rows(gs, gcur, t, 1, indptr_t[j], indptr_t[j + 1], dst_t, step_t, value_t, t_len, zero)
                row = gsp[t, j]
                for b in range(w):
                    gs[b] += row[b]
                m_row = mem[t, j]
                g_row = gcur[t, j]
                cj = carry[j]
                for b in range(w):
                    m = m_row[b]
                    g = surrogate_grad(gs[b], m - threshold, alpha) + (cj[b] * 0 if m >= threshold else cj[b])
                    g_row[b] = g
                    cj[b] = decay * g


@njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _recurrent_value_grad(grad_current, spikes, indptr, src, step, partial):  # pragma: no cover
    # partial[c, k] = sum_t sum_b grad_current[c, t, i, b] * spikes[c, t - step[k], src[k], b]  (k in row i)
    n_chunks, t_len, n, w = spikes.shape
    zero = np.zeros(w, dtype=spikes.dtype)
    for c in prange(n_chunks):
        g = grad_current[c]
        x = spikes[c]
        for t in range(t_len):
            for i in range(n):
                k0 = indptr[i]
                _dot_rows(partial[c, k0:indptr[i + 1]], g[t, i], x, t, k0, indptr[i + 1], src, step, zero)


def recurrent_forward(current, indptr, src, step, value, decay, threshold, spikes, membrane) -> None:
    """current (C, T, H, W) (C chunks of W samples) -> spikes and membrane before reset, same
    shape, overwritten; every step[k] >= 1."""
    _recurrent_forward(current, indptr, src, step, value, float(decay), float(threshold), spikes, membrane)


def recurrent_backward(grad_spikes, membrane, indptr_t, dst_t, step_t, value_t, decay, threshold, alpha,
                       grad_current) -> None:
    """The reverse loop: grad_current (C, T, H, W) overwritten from grad_spikes (C, T, H, W)."""
    _recurrent_backward(grad_spikes, membrane, indptr_t, dst_t, step_t, value_t, float(decay), float(threshold),
                        float(alpha), grad_current)


def recurrent_value_grad(grad_current, spikes, indptr, src, step, grad_value) -> None:
    """grad_value[k] = sum over chunks, steps and samples of grad_current[., t, i] * spikes[., t - step[k], src[k]]."""
    partial = np.zeros((spikes.shape[0], grad_value.shape[0]), dtype=np.float64)
    _recurrent_value_grad(grad_current, spikes, indptr, src, step, partial)
    grad_value[:] = partial.sum(0)
