"""The dense Gaussian training kernel as compiled loops with the analytic gradient (CPU): the
same values as :func:`snn_delays.synapse.gaussian_kernel` (tested), keeping only weight and delay
for the backward (autograd would keep five (out, in, m, Td) intermediates)."""

from __future__ import annotations

import torch
from torch import Tensor

from .kernels import gaussian as gaussian_loops

__all__ = ["compiled_gaussian_kernel"]


class _CompiledGaussianKernel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, weight: Tensor, delay: Tensor, sigma: float, kernel_size: int, eps: float):
        out_f, in_f, m = weight.shape
        w = weight.detach().contiguous().reshape(-1, m)
        d = delay.detach().contiguous().reshape(-1, m)
        k = torch.empty(out_f * in_f, kernel_size, dtype=weight.dtype)
        gaussian_loops.gaussian_kernel_forward(w.numpy(), d.numpy(), sigma, kernel_size, eps, k.numpy())
        ctx.save_for_backward(w, d)
        ctx.args = (sigma, kernel_size, eps, weight.shape)
        return k.view(out_f, in_f, kernel_size)

    @staticmethod
    def backward(ctx, gk: Tensor):
        w, d = ctx.saved_tensors
        sigma, kernel_size, eps, shape = ctx.args
        gw, gd = torch.empty_like(w), torch.empty_like(d)
        gaussian_loops.gaussian_kernel_backward(w.numpy(), d.numpy(), sigma, kernel_size, eps,
                                                gk.contiguous().reshape(-1, kernel_size).to(w.dtype).numpy(),
                                                gw.numpy(), gd.numpy())
        return gw.view(shape), gd.view(shape), None, None, None


def compiled_gaussian_kernel(weight: Tensor, delay: Tensor, sigma: float, kernel_size: int, eps: float) -> Tensor:
    """Training kernel (out, in, Td) from weight and delay (out, in, m) on CPU (sigma in steps);
    needs the compiled loops (:func:`snn_delays.backends.compiled.fast_available`)."""
    return _CompiledGaussianKernel.apply(weight, delay, float(sigma), kernel_size, eps)
