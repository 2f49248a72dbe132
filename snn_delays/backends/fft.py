"""Causal convolution by FFT: the dense delay kernel applied in the frequency domain.

The same operation as :func:`snn_delays.backends.dense.causal_conv_cm` (y[t] = sum_d h[d] x[t - d], with
h the kernel reversed, on channel-major (T, C, B) tensors), computed as, per frequency f,
Y[f] = H[f] @ X[f] (a batched complex matrix product) with transforms of length n >= T + Td - 1
(2- and 3-smooth; along a contiguous time axis),
so that the circular convolution equals the linear one; the batch is processed in chunks of
``CHUNK`` columns to bound the memory of the complex spectra. Per sample and synapse it costs about
4 (n / 2 + 1) / T real multiply-adds per step instead of Td: ~2.4 instead of 25 at SHD sizes, whatever
sigma is. The backward is written out (correlations by FFT) and recomputes the transforms of x and
of the kernel instead of saving them, so autograd keeps only x (as bytes when it is spikes or
counts: x = s * small integers, exactly) and the kernel.

Float error: relative ~1e-6 in float32 (tests compare with the direct convolution in float64 to 1e-10).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .packing import as_scaled_bytes

__all__ = ["fft_causal_conv_cm", "fft_size"]


def fft_size(n: int) -> int:
    """The smallest m >= n whose prime factors are 2 and 3: torch's CPU transforms of such lengths
    run 2-3x faster than those with a factor 5 (128 against 125 at SHD sizes), more than the few
    extra frequencies cost the matrix products."""
    m = max(1, int(n))
    while True:
        k = m
        for p in (2, 3):
            while k % p == 0:
                k //= p
        if k == 1:
            return m
        m += 1


def _rfft_time(x: Tensor, n: int) -> Tensor:
    """x (T, C, b) -> its spectrum along time, (F, C, b) contiguous. The transforms run along a
    contiguous last axis (2-6x faster than along the strided first one) and the product wants (F, C, b)."""
    return torch.fft.rfft(x.permute(1, 2, 0).contiguous(), n=n, dim=-1).permute(2, 0, 1).contiguous()


def _irfft_time(spec: Tensor, n: int, t_len: int) -> Tensor:
    """spec (F, C, b) -> the first ``t_len`` steps of its inverse transform, (t_len, C, b) (a view)."""
    return torch.fft.irfft(spec.permute(1, 2, 0).contiguous(), n=n, dim=-1)[..., :t_len].permute(2, 0, 1)


# Batch columns per chunk: the complex spectra of one chunk are (n/2 + 1) x C x CHUNK; chunking
# bounds the transient memory (the matrix products stay large enough to run at full rate).
CHUNK = 64


def _spectrum_of_kernel(kernel: Tensor, n: int) -> Tensor:
    """(F, out, in), contiguous: a batched matmul copies a strided operand at every call (twice the
    product's time at SHD sizes), and the spectrum is used once per chunk."""
    return torch.fft.rfft(kernel.flip(-1), n=n, dim=-1).permute(2, 0, 1).contiguous()


class _FFTConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, kernel: Tensor):
        t_len, b_len, td = x.shape[0], x.shape[2], kernel.shape[-1]
        n = fft_size(t_len + td - 1)
        spec_h = _spectrum_of_kernel(kernel, n)
        y = x.new_empty(t_len, kernel.shape[0], b_len)
        for b0 in range(0, b_len, CHUNK):
            spec_x = _rfft_time(x[:, :, b0:b0 + CHUNK], n)  # (F, in, b)
            y[:, :, b0:b0 + CHUNK] = _irfft_time(torch.matmul(spec_h, spec_x), n, t_len)
        saved, ctx.scale = as_scaled_bytes(x)  # x = scale * bytes exactly, or x itself
        ctx.save_for_backward(saved, kernel)
        ctx.n = n
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, kernel = ctx.saved_tensors
        n, t_len, b_len, td = ctx.n, x.shape[0], x.shape[2], kernel.shape[-1]
        x_dtype = kernel.dtype
        gx = gk = None
        # two passes (the kernel's gradient, then the input's) so that only one (F, out, in)
        # complex array is alive at a time
        if ctx.needs_input_grad[1]:  # gh[d] = sum_t gy[t] x[t - d]^T: a correlation, summed over chunks
            spec_gk = None
            for b0 in range(0, b_len, CHUNK):
                spec_gy = _rfft_time(gy[:, :, b0:b0 + CHUNK], n)  # (F, out, b)
                x_chunk = x[:, :, b0:b0 + CHUNK].to(x_dtype)
                if ctx.scale != 1.0:
                    x_chunk *= ctx.scale
                spec_x = _rfft_time(x_chunk, n)  # (F, in, b)
                # conj_physical: a lazily conjugated operand costs matmul a copy per batch entry
                part = torch.matmul(spec_gy, torch.conj_physical(spec_x).transpose(1, 2))  # (F, out, in)
                spec_gk = part if spec_gk is None else spec_gk.add_(part)
                del spec_gy, spec_x, part
            gk = _first_steps_of_irfft(spec_gk, n, td).permute(1, 2, 0).flip(-1)  # (out, in, Td)
            del spec_gk
        if ctx.needs_input_grad[0]:  # gx[s] = sum_d h[d]^T gy[s + d]
            spec_h_adj = torch.conj_physical(_spectrum_of_kernel(kernel, n)).transpose(1, 2).contiguous()  # (F, in, out)
            gx = torch.empty(x.shape, dtype=x_dtype, device=x.device)
            for b0 in range(0, b_len, CHUNK):
                spec_gy = _rfft_time(gy[:, :, b0:b0 + CHUNK], n)
                gx[:, :, b0:b0 + CHUNK] = _irfft_time(torch.matmul(spec_h_adj, spec_gy), n, t_len)
        return gx, gk


def _first_steps_of_irfft(spec: Tensor, n: int, steps: int) -> Tensor:
    """``torch.fft.irfft(spec, n, dim=0)[:steps]`` for spec (F, ...) as one small matrix product
    (steps x F), without the (n, ...) intermediate."""
    f = torch.arange(spec.shape[0], dtype=torch.float64, device=spec.device)
    t = torch.arange(steps, dtype=torch.float64, device=spec.device)
    weight = torch.full((spec.shape[0],), 2.0, dtype=torch.float64, device=spec.device)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0  # the Nyquist bin appears once
    phase = 2 * torch.pi * torch.outer(t, f) / n  # (steps, F)
    basis = (torch.polar(weight.expand_as(phase) / n, phase)).to(spec.dtype)  # (steps, F) complex
    out = torch.matmul(basis, spec.reshape(spec.shape[0], -1))  # (steps, rest)
    return out.real.reshape(steps, *spec.shape[1:]).contiguous()


def fft_causal_conv_cm(x: Tensor, kernel: Tensor) -> Tensor:
    """x (T, C_in, B), kernel (C_out, C_in, Td) -> (T, C_out, B); tap index Td - 1 - d multiplies
    the input d steps in the past (the layout of :func:`snn_delays.backends.dense.causal_conv_cm`)."""
    return _FFTConv.apply(x, kernel)
