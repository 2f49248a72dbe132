"""BatchNorm followed by the LIF loop as one autograd node that keeps only the BatchNorm input;
and the BatchNorm running-statistics update, written once.

The plain block keeps two (T, C, B) tensors per layer for its backward (BatchNorm's input and the
LIF's membrane) and makes several more in it. This node keeps the first and recomputes the membrane
in the backward pass. On CPU with numba both directions are one compiled pass per channel (batch
statistics, normalisation, LIF; then the reverse LIF loop and BatchNorm's backward), with no (T, C, B)
intermediate besides the gradient; elsewhere the recomputation uses PyTorch ops. Same spikes and
gradients as ``lif(norm(y))`` (``tests/test_fast_paths.py``), running statistics updated once as
``nn.BatchNorm1d`` does. Used in training for a plain ``nn.BatchNorm1d`` (affine) and a spiking LIF.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .compiled import fast_available, set_threads
from .kernels import norm_lif as norm_lif_loops
from .lif import lif_backward_values, lif_forward_values
from .packing import dropout_scale, remember_scaled_bytes

__all__ = ["norm_lif", "norm_lif_dropout", "dropout_fusable", "supported", "update_running_stats"]


def supported(norm: nn.Module, lif) -> bool:
    """Whether the node applies: a plain affine ``nn.BatchNorm1d`` in training mode (or a module that
    says it computes as one now: ``is_plain_batchnorm``, a chip model's norm before its chip forward
    is on), a spiking LIF (not another neuron model)."""
    plain = type(norm) is nn.BatchNorm1d or getattr(norm, "is_plain_batchnorm", False)
    return plain and norm.affine and norm.training and getattr(lif, "spiking", False) and (
        norm.track_running_stats or norm.running_mean is None)


class _NormLIF(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: Tensor, weight: Tensor, bias: Tensor, norm: nn.BatchNorm1d, decay: float,
                threshold: float, alpha: float):
        ctx.constants = (norm.eps, decay, threshold, alpha)
        ctx.compiled = fast_available(y)
        if not ctx.compiled:
            with torch.no_grad():
                h = norm(y)  # batch statistics; the running statistics are updated here, once
                spikes, _ = lif_forward_values(h, decay, threshold)
            ctx.save_for_backward(y, weight, bias)
            return spikes
        yc = y.detach().contiguous()
        spikes = torch.empty_like(yc)
        mean = torch.empty(yc.shape[1], dtype=torch.float64)
        var = torch.empty(yc.shape[1], dtype=torch.float64)
        set_threads()
        norm_lif_loops.bn_lif_forward(yc.numpy(), weight.detach().double().numpy(), bias.detach().double().numpy(),
                                      norm.eps, decay, threshold, spikes.numpy(), mean.numpy(), var.numpy())
        update_running_stats(norm, mean, var, yc.numel() // yc.shape[1])
        ctx.save_for_backward(yc, weight, bias, mean, var)
        return spikes

    @staticmethod
    def backward(ctx, grad_spikes: Tensor):
        eps, decay, threshold, alpha = ctx.constants
        if ctx.compiled:
            return (*_compiled_backward(ctx, grad_spikes, *ctx.saved_tensors), None, None, None, None)
        y, weight, bias = ctx.saved_tensors
        # the forward's BatchNorm output and batch statistics, then the membrane; each transient
        # is freed as soon as it has been used (this is where the memory peak of a step lies)
        h, mean, invstd = torch.native_batch_norm(y, weight, bias, None, None, True, 0.0, eps)
        spikes, membrane = lif_forward_values(h, decay, threshold)
        del h, spikes
        grad_h = lif_backward_values(grad_spikes, membrane, decay, threshold, alpha)
        del membrane
        gy, gw, gb = torch.ops.aten.native_batch_norm_backward(
            grad_h, y, weight, None, None, mean, invstd, True, eps, [True, True, True])
        return gy, gw, gb, None, None, None, None


class _NormLIFDropout(torch.autograd.Function):
    """BatchNorm + LIF + the dropout product with keep (C, B) as one node (compiled only): the spikes
    are never stored, the product's bytes go to the next synapse, and the backward applies the mask
    to the incoming gradient inside the reverse LIF loop. Keeps y and the mask."""

    @staticmethod
    def forward(ctx, y: Tensor, weight: Tensor, bias: Tensor, keep: Tensor, norm: nn.BatchNorm1d, decay: float,
                threshold: float, alpha: float):
        ctx.constants = (norm.eps, decay, threshold, alpha)
        yc = y.detach().contiguous()
        out = torch.empty_like(yc)
        packed = torch.empty(yc.shape, dtype=torch.uint8)
        mean = torch.empty(yc.shape[1], dtype=torch.float64)
        var = torch.empty(yc.shape[1], dtype=torch.float64)
        scale = dropout_scale(keep)  # the scale as_scaled_bytes would choose first
        set_threads()
        nnz = norm_lif_loops.bn_lif_dropout_forward(
            yc.numpy(), weight.detach().double().numpy(), bias.detach().double().numpy(), norm.eps, decay, threshold,
            keep.numpy(), scale, out.numpy(), packed.numpy(), mean.numpy(), var.numpy())
        update_running_stats(norm, mean, var, yc.numel() // yc.shape[1])
        remember_scaled_bytes(out, packed, scale if nnz else 1.0)  # out = scale * packed exactly (0/1 spikes)
        ctx.save_for_backward(yc, weight, bias, mean, var, keep)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        return (*_compiled_backward(ctx, grad_out, *ctx.saved_tensors), None, None, None, None, None)


def _compiled_backward(ctx, grad: Tensor, y: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, var: Tensor,
                       keep: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """(gy, g_weight, g_bias) of the compiled BatchNorm + LIF node from the gradient of its spikes, or
    (``keep`` given) of their dropout product."""
    eps, decay, threshold, alpha = ctx.constants
    gy = torch.empty_like(y)
    gw = torch.empty(y.shape[1], dtype=torch.float64)
    gb = torch.empty(y.shape[1], dtype=torch.float64)
    set_threads()
    norm_lif_loops.bn_lif_backward(y.numpy(), grad.contiguous().to(y.dtype).numpy(), weight.detach().double().numpy(),
                                   bias.detach().double().numpy(), mean.numpy(), var.numpy(), eps, decay, threshold,
                                   alpha, gy.numpy(), gw.numpy(), gb.numpy(),
                                   keep=None if keep is None else keep.numpy())
    return gy, gw.to(weight.dtype), gb.to(bias.dtype)


def dropout_fusable(y: Tensor) -> bool:
    """Whether :func:`norm_lif_dropout` runs on y (the compiled loops, on CPU, float32 or float64)."""
    return fast_available(y) and y.dtype in (torch.float32, torch.float64) and y.dim() == 3 and y.numel() > 0


def norm_lif_dropout(y: Tensor, norm: nn.BatchNorm1d, lif, keep: Tensor) -> Tensor:
    """``dropout_product_cm(norm_lif(y, norm, lif), keep)`` for y (T, C, B), keep (C, B) (0 or
    1 / (1 - p)): the same values bit for bit, as one node that stores neither the spikes nor the
    product's gradient (``tests/test_dropout_fused.py``). Only where :func:`dropout_fusable`."""
    return _NormLIFDropout.apply(y, norm.weight, norm.bias, keep.to(y.dtype).contiguous(), norm,
                                 1.0 - 1.0 / lif.tau, lif.threshold, lif.alpha)


@torch.no_grad()
def update_running_stats(norm: nn.modules.batchnorm._BatchNorm, mean: Tensor, var: Tensor, n: float) -> None:
    """What ``nn.BatchNorm1d`` does to its running statistics in training mode, given the batch's
    mean and biased variance (C,) over ``n`` values per channel (momentum None: cumulative average)."""
    if not norm.track_running_stats:
        return
    norm.num_batches_tracked.add_(1)
    f = norm.momentum if norm.momentum is not None else 1.0 / float(norm.num_batches_tracked)
    norm.running_mean.mul_(1 - f).add_(mean.to(norm.running_mean.dtype), alpha=f)
    norm.running_var.mul_(1 - f).add_((var * (n / max(n - 1, 1))).to(norm.running_var.dtype), alpha=f)


def norm_lif(y: Tensor, norm: nn.BatchNorm1d, lif) -> Tensor:
    """Spikes of ``lif(norm(y))`` for y (T, C, B) (BatchNorm1d's (N, C, L)), saving only y."""
    return _NormLIF.apply(y, norm.weight, norm.bias, norm, 1.0 - 1.0 / lif.tau, lif.threshold, lif.alpha)
