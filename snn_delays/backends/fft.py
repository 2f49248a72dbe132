"""Causal convolution in the frequency domain: the dense delay kernel applied per frequency.

The same operation as :func:`snn_delays.backends.dense.causal_conv_cm` (y[t] = sum_d h[d] x[t - d], with
h the kernel reversed, on channel-major (T, C, B) tensors), computed as, per frequency f,
Y[f] = H[f] @ X[f] (real and imaginary parts as four real batched matrix products) over the
n / 2 + 1 frequencies of a real transform of length n = T + Td - 1, so that the circular convolution
equals the linear one.

The transforms along time are matrix products too: X = [cos; -sin] (2F, T) @ x viewed as (T, C B), and
y = [cos, -sin] / n (T, 2F) @ Y viewed as (2F, O B). On the (T, C, B) layout they need no transpose
(an FFT along time needed four copies of a permuted spectrum per product, half the step at SHD
sizes), never touch the zero padding, take any n, and run at the matrix product's rate: per sample
and synapse they add ~4 F / C real multiply-adds per step, the products ~4 F / T (~2.5 at SHD
sizes, instead of Td = 25 for the direct convolution), whatever sigma is. The backward is written
out (correlations in the same form) and recomputes the transform of x instead of saving it, so
autograd keeps only x (as bytes when it is spikes or counts: x = s * small integers, exactly) and
the kernel. The batch is processed in chunks of ``CHUNK`` columns to bound the transient memory.

Float error: relative ~1e-6 in float32 (tests compare with the direct convolution in float64 to 1e-10).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from .packing import as_scaled_bytes

__all__ = ["fft_causal_conv_cm", "fft_input_grad", "fft_size"]


def fft_size(n: int) -> int:
    """The transform length for a linear convolution of total length ``n``: n itself (the
    transforms are matrix products, so no length is faster than another)."""
    return max(1, int(n))


@lru_cache(maxsize=32)
def _forward_basis(t_len: int, n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(2F, T): rows [cos; -sin](2 pi f t / n), f = 0 .. n // 2: [Re X; Im X] = basis @ x."""
    f = torch.arange(n // 2 + 1, dtype=torch.float64)
    angle = 2 * torch.pi * torch.outer(f, torch.arange(t_len, dtype=torch.float64)) / n
    return torch.cat([torch.cos(angle), -torch.sin(angle)]).to(dtype=dtype, device=device)


@lru_cache(maxsize=32)
def _inverse_basis(steps: int, n: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(steps, 2F): the first ``steps`` samples of the real inverse transform of [Re Y; Im Y]
    (the bins between 0 and n / 2 count twice, their conjugates being implied)."""
    f = torch.arange(n // 2 + 1, dtype=torch.float64)
    weight = torch.full_like(f, 2.0)
    weight[0] = 1.0
    if n % 2 == 0:
        weight[-1] = 1.0  # the Nyquist bin appears once
    angle = 2 * torch.pi * torch.outer(torch.arange(steps, dtype=torch.float64), f) / n
    return (torch.cat([torch.cos(angle), -torch.sin(angle)], dim=1) * torch.cat([weight, weight]) / n).to(
        dtype=dtype, device=device)


# Batch columns per chunk: a chunk's spectra are 2F x C x CHUNK reals (8 MB at SHD sizes); chunks
# bound the transient memory (the products stay large enough to run at full rate).
CHUNK = 64


def _spectrum_of_kernel(kernel: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The kernel's spectrum as (real, imaginary), each (F, out, in) contiguous: one product
    with the transform's basis written straight into that layout (no complex temporary)."""
    out_f, in_f, td = kernel.shape
    taps = kernel.flip(-1).permute(2, 0, 1).reshape(td, out_f * in_f)  # (Td, out in): h[d] for delay d
    spec = torch.matmul(_forward_basis(td, n, kernel.dtype, kernel.device), taps).view(2, -1, out_f, in_f)
    return spec[0], spec[1]


def _transform(basis: Tensor, x: Tensor) -> Tensor:
    """basis (R, T) @ x (T, C, b) -> (R, C, b)."""
    t_len, c, b = x.shape
    return torch.matmul(basis, x.reshape(t_len, c * b)).view(-1, c, b)


def _complex_bmm(a_re: Tensor, a_im: Tensor, b_re: Tensor, b_im: Tensor, conj_a: bool = False,
                 conj_b: bool = False, acc: Tensor | None = None) -> Tensor:
    """[Re; Im] of a @ b, a or b conjugated if asked, from batched real and imaginary parts
    (F, M, K) and (F, K, N) (transposed views are read as such, not copied): (2, F, M, N), or
    added into ``acc`` of that shape (no temporary)."""
    sa = -1.0 if conj_a else 1.0
    sb = -1.0 if conj_b else 1.0
    if acc is None:
        out = a_re.new_empty(2, a_re.shape[0], a_re.shape[1], b_re.shape[2])
        torch.bmm(a_re, b_re, out=out[0])
        torch.bmm(a_re, b_im, out=out[1])
        if conj_b:
            out[1].neg_()
    else:
        out = acc
        out[0].baddbmm_(a_re, b_re)
        out[1].baddbmm_(a_re, b_im, alpha=sb)
    out[0].baddbmm_(a_im, b_im, alpha=-sa * sb)  # Re = ar br - (sa ai)(sb bi)
    out[1].baddbmm_(a_im, b_re, alpha=sa)  # Im = (sa ai) br + ar (sb bi)
    return out


class _FFTConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, kernel: Tensor):
        t_len, b_len, td = x.shape[0], x.shape[2], kernel.shape[-1]
        n = fft_size(t_len + td - 1)
        f_len = n // 2 + 1
        fwd = _forward_basis(t_len, n, x.dtype, x.device)
        inv = _inverse_basis(t_len, n, x.dtype, x.device)
        h_re, h_im = _spectrum_of_kernel(kernel, n)
        y = x.new_empty(t_len, kernel.shape[0], b_len) if b_len > CHUNK else None
        for b0 in range(0, b_len, CHUNK):
            spec_x = _transform(fwd, x[:, :, b0:b0 + CHUNK])  # (2F, in, b)
            spec_y = _complex_bmm(h_re, h_im, spec_x[:f_len], spec_x[f_len:])  # (2, F, out, b)
            part = _transform(inv, spec_y.view(2 * f_len, *spec_y.shape[2:]))  # (T, out, b)
            if b_len <= CHUNK:
                y = part
            else:
                y[:, :, b0:b0 + CHUNK] = part
        saved, ctx.scale = as_scaled_bytes(x)  # x = scale * bytes exactly, or x itself
        ctx.save_for_backward(saved, kernel)
        ctx.n = n
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, kernel = ctx.saved_tensors
        n, t_len, b_len, td = ctx.n, x.shape[0], x.shape[2], kernel.shape[-1]
        f_len = n // 2 + 1
        x_dtype = kernel.dtype
        fwd = _forward_basis(t_len, n, x_dtype, kernel.device)
        gx = gk = None
        need_x, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if need_x:
            h_re, h_im = _spectrum_of_kernel(kernel, n)
            h_re, h_im = h_re.transpose(1, 2), h_im.transpose(1, 2)  # H^T (F, in, out), read transposed
            inv = _inverse_basis(t_len, n, x_dtype, kernel.device)
            gx = torch.empty(x.shape, dtype=x_dtype, device=x.device)
        spec_gk = None
        for b0 in range(0, b_len, CHUNK):
            spec_gy = _transform(fwd, gy[:, :, b0:b0 + CHUNK])  # (2F, out, b)
            gy_re, gy_im = spec_gy[:f_len], spec_gy[f_len:]
            if need_k:  # GK[f] = GY[f] @ X[f]^H: the correlation sum_t gy[t] x[t - d]^T, summed over chunks
                x_chunk = x[:, :, b0:b0 + CHUNK].to(x_dtype)
                if ctx.scale != 1.0:
                    x_chunk *= ctx.scale
                spec_x = _transform(fwd, x_chunk)  # (2F, in, b)
                del x_chunk
                spec_gk = _complex_bmm(gy_re, gy_im, spec_x[:f_len].transpose(1, 2), spec_x[f_len:].transpose(1, 2),
                                       conj_b=True, acc=spec_gk)  # (2, F, out, in), summed over chunks
                del spec_x
            if need_x:  # GX[f] = H[f]^H @ GY[f]: gx[s] = sum_d h[d]^T gy[s + d]
                spec_gx = _complex_bmm(h_re, h_im, gy_re, gy_im, conj_a=True)  # (2, F, in, b)
                part = _transform(inv, spec_gx.view(2 * f_len, *spec_gx.shape[2:]))
                gx[:, :, b0:b0 + CHUNK] = part
                del spec_gx, part
            del spec_gy
        if need_k:
            first = _inverse_basis(td, n, x_dtype, kernel.device)  # (Td, 2F)
            gk = torch.matmul(first, spec_gk.reshape(2 * f_len, -1)).view(td, *spec_gk.shape[2:])
            gk = gk.permute(1, 2, 0).flip(-1)  # (out, in, Td)
        return gx, gk


@torch.no_grad()
def fft_input_grad(gy: Tensor, kernel: Tensor) -> Tensor:
    """The input gradient of the causal convolution alone, gx[s] = sum_d h[d]^T gy[s + d], by the same
    frequency-domain products as the backward above: gy (T, C_out, B), kernel (C_out, C_in, Td) ->
    (T, C_in, B) (for a product computed another way, e.g. driven by the input's events)."""
    t_len, _, b_len = gy.shape
    n = fft_size(t_len + kernel.shape[-1] - 1)
    f_len = n // 2 + 1
    fwd = _forward_basis(t_len, n, kernel.dtype, kernel.device)
    inv = _inverse_basis(t_len, n, kernel.dtype, kernel.device)
    h_re, h_im = _spectrum_of_kernel(kernel, n)
    h_re, h_im = h_re.transpose(1, 2), h_im.transpose(1, 2)  # H^T (F, in, out), read transposed
    gx = gy.new_empty(t_len, kernel.shape[1], b_len)
    for b0 in range(0, b_len, CHUNK):
        spec_gy = _transform(fwd, gy[:, :, b0:b0 + CHUNK])  # (2F, out, b)
        spec_gx = _complex_bmm(h_re, h_im, spec_gy[:f_len], spec_gy[f_len:], conj_a=True)  # (2, F, in, b)
        gx[:, :, b0:b0 + CHUNK] = _transform(inv, spec_gx.view(2 * f_len, *spec_gx.shape[2:]))
    return gx


def fft_causal_conv_cm(x: Tensor, kernel: Tensor) -> Tensor:
    """x (T, C_in, B), kernel (C_out, C_in, Td) -> (T, C_out, B); tap index Td - 1 - d multiplies
    the input d steps in the past (the layout of :func:`snn_delays.backends.dense.causal_conv_cm`)."""
    return _FFTConv.apply(x, kernel)
