"""The dropout product of a hidden layer, x (T, N, B) * keep (N, B) (one mask per neuron and
sample, shared by all steps), as one autograd node.

On CPU with the compiled loops the forward writes, in the same pass, the product and its bytes
(x = s * bytes, s the kept units' scale 1 / (1 - p)), and hands the bytes to the next synapse's
:func:`~snn_delays.backends.packing.as_scaled_bytes` (which would otherwise read the product once
more to pack it). The backward is the same product on the gradient, with the mask contiguous in
(N, B) (the broadcast of a transposed mask over T ran at half the rate). Every value is the single
float product ``x * keep`` that PyTorch computes, so spikes, gradients and the bytes are those of
the plain formulation bit for bit (``tests/test_dropout_fused.py``)."""

from __future__ import annotations

import torch
from torch import Tensor

from .compiled import fast_available, set_threads
from .kernels import pack
from .packing import dropout_scale, remember_scaled_bytes

__all__ = ["dropout_product_cm"]


class _DropoutProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, keep: Tensor):
        ctx.save_for_backward(keep)
        if not (fast_available(x) and x.dtype == keep.dtype and x.numel()):
            return x * keep
        xc = x.detach().contiguous()
        out = torch.empty_like(xc)
        packed = torch.empty(xc.shape, dtype=torch.uint8)
        scale = dropout_scale(keep)  # the scale as_scaled_bytes would choose first
        set_threads()
        nnz, exact = pack.dropout_pack_u8(xc.numpy(), keep.numpy(), scale, out.numpy(), packed.numpy())
        if exact:  # x held spikes (0 or 1) and the bytes are exact: what as_scaled_bytes would return
            remember_scaled_bytes(out, packed, scale if nnz else 1.0)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        (keep,) = ctx.saved_tensors
        return grad * keep, None


def dropout_product_cm(x: Tensor, keep: Tensor) -> Tensor:
    """x (T, N, B) (spikes) * keep (N, B) (0 or 1 / (1 - p), contiguous) -> (T, N, B), the values of
    ``x * keep`` exactly."""
    return _DropoutProduct.apply(x, keep.contiguous())
