"""A LIF layer whose neurons also receive their own layer's spikes through recurrent delay synapses.

Channel-major, batch-innermost tensors (T, H, B), as the model keeps between layers. With c the
layer's (batch-normalised) feed-forward current, for neuron i at step t::

    I_i[t] = c_i[t] + sum_j sum_{n=1..Dr} k_ij[n] * S_j[t - n]          (S_j[t'] = 0 for t' < 0)
    v_i[t] = decay * u_i[t-1] + I_i[t];  S_i[t] = (v_i[t] >= threshold);  u_i[t] = v_i[t] (1 - S_i[t])

k_ij[n] is the recurrent synapse's kernel at delay n >= 1 (a Gaussian bump around the real delay in
training, one tap at the rounded delay in evaluation). Only earlier steps' spikes enter, so the
layer runs step by step. Backward: detached reset and arctan surrogate as for the plain LIF
(:mod:`.lif`), plus the recurrent path, in one reverse loop::

    g_S[t] = g_out[t] + sum_{i, n} k_ij[n] g_I_i[t + n];   g_I[t] = g_S[t] surrogate'(v[t] - th) + decay g_I[t + 1] (1 - S[t])

Two forms, same numbers: :func:`recurrent_lif_reference` (PyTorch, the dense kernel, autograd over
the step loop: any device) and :func:`recurrent_lif_taps` (only the taps that carry weight,
compiled loops parallel over the batch, hand-written backward; CPU).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .compiled import set_threads
from .kernels import recurrent_lif as recurrent_loops
from .kernels.runtime import n_threads
from .lif import lif_step, spike_atan, surrogate_grad
from .taps import TapPlan

__all__ = ["recurrent_lif_reference", "recurrent_lif_dense", "recurrent_lif_taps"]


def batch_chunk(batch: int) -> int:
    """Samples per thread of the compiled loops: the batch split evenly over the threads, in
    multiples of 8 (whole vectors)."""
    per = -(-batch // max(1, n_threads()))
    return max(8, -(-per // 8) * 8)


def recurrent_lif_reference(current: Tensor, kernel: Tensor, decay: float, threshold: float,
                            alpha: float) -> Tensor:
    """PyTorch step loop: current (T, H, B), kernel (H, H, Dr) with kernel[..., n - 1] the weight at
    delay n steps (n = 1 .. Dr) -> spikes (T, H, B). Autograd differentiates it op by op."""
    t_len, h, b = current.shape
    dr = kernel.shape[-1]
    by_delay = kernel.permute(0, 2, 1).reshape(h, dr * h)  # columns: (delay n - 1, pre j)
    zero = current.new_zeros(h, b)
    history = [zero] * dr  # history[n - 1] = S[t - n]
    u = zero
    spikes = []
    for t in range(t_len):
        recurrent = by_delay @ torch.cat(history, 0) if dr > 1 else by_delay @ history[0]  # (H, B)
        v, _, u = lif_step(u, current[t] + recurrent, decay, threshold)
        s = spike_atan(v - threshold, alpha)
        spikes.append(s)
        history = [s] + history[:-1]
    return torch.stack(spikes)


class _RecurrentLIFDense(torch.autograd.Function):
    """The step loop on the dense kernel with a hand-written reverse loop: one (H, Dr H) x (Dr H, B)
    matrix product per step and direction, nothing stored per step but spikes and membranes.
    The form for wide kernels (many taps per connection) and for any device."""

    @staticmethod
    def forward(ctx, current: Tensor, kernel: Tensor, decay: float, threshold: float, alpha: float):
        t_len, h, b = current.shape
        dr = kernel.shape[-1]
        k = kernel.detach()
        # columns of block q hold delay dr - q: block q multiplies padded[t + q] = S[t - (dr - q)]
        by_lag = k.flip(-1).permute(0, 2, 1).reshape(h, dr * h)
        padded = current.new_zeros(t_len + dr, h, b)  # padded[dr + t] = S[t]
        membrane = torch.empty_like(current)
        u = current.new_zeros(h, b)
        c = current.detach()
        for t in range(t_len):
            v = torch.addmm(c[t], by_lag, padded[t:t + dr].reshape(dr * h, b))
            v.add_(u, alpha=decay)
            membrane[t] = v
            fired = v >= threshold
            padded[dr + t] = fired
            u = v.masked_fill(fired, 0.0)
        spikes = padded[dr:]
        ctx.save_for_backward(membrane, padded, k)
        ctx.constants = (decay, threshold, alpha)
        return spikes.clone()

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):
        membrane, padded, k = ctx.saved_tensors
        decay, threshold, alpha = ctx.constants
        t_len, h, b = membrane.shape
        dr = k.shape[-1]
        # block q (0-based) of by_delay^T holds K_{q+1}^T: multiplies g_I[t + 1 + q]
        by_delay_t = k.permute(1, 2, 0).reshape(h, dr * h)  # [j, (n - 1) * h + i] = k[i, j, n - 1]
        g_pad = membrane.new_zeros(t_len + dr + 1, h, b)  # g_pad[t] = dL/dI[t], zero past the end
        carry = membrane.new_zeros(h, b)
        g = grad_spikes.to(membrane.dtype)
        for t in range(t_len - 1, -1, -1):
            gs = torch.addmm(g[t], by_delay_t, g_pad[t + 1:t + 1 + dr].reshape(dr * h, b))
            m = membrane[t]
            gi = surrogate_grad(gs, m - threshold, alpha) + carry * (m < threshold)
            g_pad[t] = gi
            carry = decay * gi
        grad_current = g_pad[:t_len]
        grad_kernel = None
        if ctx.needs_input_grad[1]:
            # dL/dk[i, j, n - 1] = sum_t sum_b g_I[t, i, b] S[t - n, j, b], S[t - n] = padded[dr + t - n]
            gi_flat = grad_current.permute(1, 0, 2).reshape(h, t_len * b)
            grad_kernel = torch.empty_like(k)
            for n in range(1, dr + 1):
                s_lag = padded[dr - n:dr - n + t_len].permute(1, 0, 2).reshape(h, t_len * b)
                grad_kernel[:, :, n - 1] = gi_flat @ s_lag.t()
        return grad_current.clone(), grad_kernel, None, None, None


def recurrent_lif_dense(current: Tensor, kernel: Tensor, decay: float, threshold: float, alpha: float) -> Tensor:
    """:func:`recurrent_lif_reference`'s result and gradients with one autograd node: current
    (T, H, B), kernel (H, H, Dr) (index n - 1 = delay n) -> spikes (T, H, B). Any device."""
    return _RecurrentLIFDense.apply(current, kernel, float(decay), float(threshold), float(alpha))


def _to_chunks(x: Tensor, width: int) -> Tensor:
    """(T, H, B) -> (C, T, H, W) contiguous, the batch zero-padded to C * W samples."""
    t_len, h, b = x.shape
    n = -(-b // width)
    if n * width != b:
        x = torch.cat([x, x.new_zeros(t_len, h, n * width - b)], 2)
    return x.reshape(t_len, h, n, width).permute(2, 0, 1, 3).contiguous()


def _from_chunks(x: Tensor, batch: int) -> Tensor:
    """(C, T, H, W) -> (T, H, B), the padding dropped."""
    n, t_len, h, w = x.shape
    return x.permute(1, 2, 0, 3).reshape(t_len, h, n * w)[:, :, :batch].contiguous()


class _RecurrentLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, current: Tensor, value: Tensor, step: Tensor, valid: Tensor, plan: TapPlan, decay: float,
                threshold: float, alpha: float):
        batch = current.shape[2]
        set_threads()
        c = _to_chunks(current.detach(), batch_chunk(batch))
        v = value.detach().to(c.dtype).contiguous()
        st = step.contiguous()
        spikes = torch.empty_like(c)
        membrane = torch.empty_like(c)
        recurrent_loops.recurrent_forward(c.numpy(), plan.indptr, plan.src, st.numpy(), v.numpy(), decay, threshold,
                                          spikes.numpy(), membrane.numpy())
        ctx.save_for_backward(membrane, spikes, v, st, valid)
        ctx.plan = plan
        ctx.constants = (decay, threshold, alpha, batch)
        return _from_chunks(spikes, batch)

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):
        membrane, spikes, v, st, valid = ctx.saved_tensors
        plan = ctx.plan
        decay, threshold, alpha, batch = ctx.constants
        g = _to_chunks(grad_spikes.to(membrane.dtype), membrane.shape[3])
        grad_current = torch.empty_like(membrane)
        set_threads()
        order = plan.order
        recurrent_loops.recurrent_backward(g.numpy(), membrane.numpy(), plan.indptr_t, plan.dst_t,
                                           np.ascontiguousarray(st.numpy()[order]),
                                           np.ascontiguousarray(v.numpy()[order]), decay, threshold, alpha,
                                           grad_current.numpy())
        grad_value = None
        if ctx.needs_input_grad[1]:
            grad_value = torch.empty_like(v)
            recurrent_loops.recurrent_value_grad(grad_current.numpy(), spikes.numpy(), plan.indptr, plan.src,
                                                 st.numpy(), grad_value.numpy())
            grad_value *= valid
        return _from_chunks(grad_current, batch), grad_value, None, None, None, None, None, None


def recurrent_lif_taps(current: Tensor, value: Tensor, offset: Tensor, plan: TapPlan, kernel_size: int,
                       decay: float, threshold: float, alpha: float) -> Tensor:
    """Compiled step loop on the tap form of the recurrent synapse: current (T, H, B) -> spikes
    (T, H, B). ``value``/``offset`` (n_taps,) as :meth:`snn_delays.synapse.DelaySynapse.taps` gives
    them for a synapse of ``kernel_size`` taps: tap k sits at delay ``offset[k] + 1`` steps (taps
    with offsets outside [0, kernel_size - 1] carry 0 and are skipped). CPU float tensors."""
    valid = (offset >= 0) & (offset <= kernel_size - 1)
    step = torch.where(valid, offset + 1, torch.ones_like(offset))  # every step >= 1: only earlier spikes
    return _RecurrentLIF.apply(current, value, step, valid.to(current.dtype), plan, float(decay), float(threshold),
                               float(alpha))
