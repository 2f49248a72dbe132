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
the kernel. The whole batch goes through each product; the frequencies are taken in blocks
(``BLOCK_BYTES`` of spectrum per operand) to bound the transient memory, the inverse transforms
adding the blocks up; the backward sweeps the blocks twice (kernel gradient, then input gradient) so
that the input as floats and its gradient are never held together.

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


# The products run on the whole batch (large products, no copies of batch slices) in
# blocks of frequencies: each block's spectra (per operand, 2 f x C x B reals) stay near BLOCK_BYTES,
# which bounds the transient memory as the batch chunks did; the inverse transforms add the blocks
# up. One block (the whole spectrum) wherever that fits.
BLOCK_BYTES = 16 * 2**20


def _frequency_blocks(f_len: int, channels: int, b_len: int, itemsize: int) -> list[tuple[int, int]]:
    """[f0, f1) blocks of the f_len frequencies, of near-equal sizes, each block's spectrum of
    ``channels`` x ``b_len`` under BLOCK_BYTES where a block of one frequency is."""
    per_frequency = 2 * channels * b_len * itemsize
    n_blocks = max(1, min(f_len, -(-f_len * per_frequency // BLOCK_BYTES)))
    size = -(-f_len // n_blocks)
    return [(f0, min(f_len, f0 + size)) for f0 in range(0, f_len, size)]


def _frequency_slice(full: Tensor, f_len: int, f0: int, f1: int, dim: int) -> Tensor:
    """The [Re; Im] halves of a basis along ``dim`` cut to frequencies f0 .. f1 - 1 (the basis
    itself for all of them)."""
    if (f0, f1) == (0, f_len):
        return full
    return torch.cat([full.narrow(dim, f0, f1 - f0), full.narrow(dim, f_len + f0, f1 - f0)], dim=dim).contiguous()


@lru_cache(maxsize=64)
def _forward_block(t_len: int, n: int, f0: int, f1: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(2 f, T): the rows of :func:`_forward_basis` for frequencies f0 .. f1 - 1 ([cos; -sin])."""
    return _frequency_slice(_forward_basis(t_len, n, dtype, device), n // 2 + 1, f0, f1, 0)


@lru_cache(maxsize=64)
def _inverse_block(steps: int, n: int, f0: int, f1: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(steps, 2 f): the columns of :func:`_inverse_basis` for frequencies f0 .. f1 - 1."""
    return _frequency_slice(_inverse_basis(steps, n, dtype, device), n // 2 + 1, f0, f1, 1)


def _kernel_taps(kernel: Tensor) -> Tensor:
    """(Td, out in): h[d] for delay d (the kernel reversed in time), each row one delay."""
    out_f, in_f, td = kernel.shape
    return kernel.flip(-1).permute(2, 0, 1).reshape(td, out_f * in_f)


def _spectrum_of_kernel(kernel: Tensor, n: int, f0: int = 0, f1: int | None = None,
                        taps: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The kernel's spectrum at frequencies f0 .. f1 - 1 (default all) as (real, imaginary), each
    (f, out, in) contiguous: one product with the transform's basis written straight into that
    layout (no complex temporary). ``taps``: :func:`_kernel_taps` of the kernel, if at hand."""
    out_f, in_f, td = kernel.shape
    f1 = n // 2 + 1 if f1 is None else f1
    taps = _kernel_taps(kernel) if taps is None else taps
    spec = torch.matmul(_forward_block(td, n, f0, f1, kernel.dtype, kernel.device), taps).view(2, -1, out_f, in_f)
    return spec[0], spec[1]


def _transform(basis: Tensor, x: Tensor) -> Tensor:
    """basis (R, T) @ x (T, C, b) -> (R, C, b)."""
    t_len, c, b = x.shape
    return torch.matmul(basis, x.reshape(t_len, c * b)).view(-1, c, b)


def _inverse_into(acc: Tensor | None, basis: Tensor, spec: Tensor) -> Tensor:
    """basis (T, 2 f) @ spec (2 f, C, b) -> (T, C, b), added into ``acc`` when given (one more
    frequency block of the same inverse transform)."""
    if acc is None:
        return _transform(basis, spec)
    acc.view(acc.shape[0], -1).addmm_(basis, spec.reshape(spec.shape[0], -1))
    return acc


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
        t_len, in_f, b_len, td = x.shape[0], x.shape[1], x.shape[2], kernel.shape[-1]
        out_f = kernel.shape[0]
        n = fft_size(t_len + td - 1)
        taps = _kernel_taps(kernel)
        y = None
        for f0, f1 in _frequency_blocks(n // 2 + 1, max(in_f, out_f), b_len, x.element_size()):
            f = f1 - f0
            h_re, h_im = _spectrum_of_kernel(kernel, n, f0, f1, taps)
            spec_x = _transform(_forward_block(t_len, n, f0, f1, x.dtype, x.device), x)  # (2f, in, B)
            spec_y = _complex_bmm(h_re, h_im, spec_x[:f], spec_x[f:])  # (2, f, out, B)
            del spec_x, h_re, h_im
            y = _inverse_into(y, _inverse_block(t_len, n, f0, f1, x.dtype, x.device), spec_y.view(2 * f, out_f, b_len))
            del spec_y
        saved, ctx.scale = as_scaled_bytes(x)  # x = scale * bytes exactly, or x itself
        ctx.save_for_backward(saved, kernel)
        ctx.n = n
        return y

    @staticmethod
    def backward(ctx, gy: Tensor):
        x, kernel = ctx.saved_tensors
        n, t_len, b_len, td = ctx.n, x.shape[0], x.shape[2], kernel.shape[-1]
        out_f, in_f = kernel.shape[0], kernel.shape[1]
        x_dtype = kernel.dtype
        need_x, need_k = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if need_k:
            x = x.to(x_dtype)  # the saved bytes as floats (a copy), or x itself (then scale is 1)
            if ctx.scale != 1.0:
                x.mul_(ctx.scale)
        # two sweeps over the frequency blocks, the kernel gradient first, so that the input as floats
        # and the input gradient are never held together (the step's memory peak lies here); the
        # second sweep transforms gy again (~2 % of a step at SHD sizes)
        blocks = _frequency_blocks(n // 2 + 1, max(in_f, out_f), b_len, gy.element_size())
        gy = gy.contiguous()  # read by every block's transform
        gx = gk_taps = None
        if need_k:
            for f0, f1 in blocks:  # GK[f] = GY[f] @ X[f]^H: the correlation sum_t gy[t] x[t - d]^T
                f = f1 - f0
                fwd = _forward_block(t_len, n, f0, f1, x_dtype, kernel.device)
                spec_gy = _transform(fwd, gy)  # (2f, out, B)
                spec_x = _transform(fwd, x)  # (2f, in, B)
                spec_gk = _complex_bmm(spec_gy[:f], spec_gy[f:], spec_x[:f].transpose(1, 2),
                                       spec_x[f:].transpose(1, 2), conj_b=True)  # (2, f, out, in)
                del spec_x, spec_gy
                first = _inverse_block(td, n, f0, f1, x_dtype, kernel.device)  # (Td, 2f)
                gk_taps = _inverse_into(gk_taps, first, spec_gk.view(2 * f, out_f, in_f))  # (Td, out, in)
                del spec_gk
            del x
        if need_x:
            gx = _input_grad(gy, kernel, n, blocks)
        gk = gk_taps.permute(1, 2, 0).flip(-1) if need_k else None  # (out, in, Td)
        return gx, gk


def _input_grad(gy: Tensor, kernel: Tensor, n: int, blocks: list[tuple[int, int]]) -> Tensor:
    """gx[s] = sum_d h[d]^T gy[s + d] for gy (T, out, B) contiguous, block by block of frequencies:
    GX[f] = H[f]^H @ GY[f], inverse transforms summed -> (T, in, B)."""
    t_len, _, b_len = gy.shape
    in_f = kernel.shape[1]
    taps = _kernel_taps(kernel)
    gx = None
    for f0, f1 in blocks:
        f = f1 - f0
        spec_gy = _transform(_forward_block(t_len, n, f0, f1, kernel.dtype, kernel.device), gy)  # (2f, out, B)
        h_re, h_im = _spectrum_of_kernel(kernel, n, f0, f1, taps)
        spec_gx = _complex_bmm(h_re.transpose(1, 2), h_im.transpose(1, 2), spec_gy[:f], spec_gy[f:],
                               conj_a=True)  # (2, f, in, B)
        del h_re, h_im, spec_gy
        gx = _inverse_into(gx, _inverse_block(t_len, n, f0, f1, kernel.dtype, kernel.device),
                           spec_gx.view(2 * f, in_f, b_len))
        del spec_gx
    return gx


@torch.no_grad()
def fft_input_grad(gy: Tensor, kernel: Tensor) -> Tensor:
    """The input gradient of the causal convolution alone, gx[s] = sum_d h[d]^T gy[s + d], by the same
    frequency-domain products as the backward above: gy (T, C_out, B), kernel (C_out, C_in, Td) ->
    (T, C_in, B) (for a product computed another way, e.g. driven by the input's events)."""
    t_len, out_f, b_len = gy.shape
    n = fft_size(t_len + kernel.shape[-1] - 1)
    blocks = _frequency_blocks(n // 2 + 1, max(kernel.shape[1], out_f), b_len, gy.element_size())
    return _input_grad(gy.contiguous(), kernel, n, blocks)


def fft_causal_conv_cm(x: Tensor, kernel: Tensor) -> Tensor:
    """x (T, C_in, B), kernel (C_out, C_in, Td) -> (T, C_out, B); tap index Td - 1 - d multiplies
    the input d steps in the past (the layout of :func:`snn_delays.backends.dense.causal_conv_cm`)."""
    return _FFTConv.apply(x, kernel)
