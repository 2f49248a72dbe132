"""The dense causal convolution: the plain formulation of the delay synapse's product, which the
other backends are tested against (and the one used on CUDA, by cuDNN)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["causal_conv", "causal_conv_cm"]


def causal_conv(x: Tensor, kernel: Tensor) -> Tensor:
    """Dense causal convolution: x (T, B, C_in), kernel (C_out, C_in, Td) -> (T, B, C_out); tap
    index Td - 1 - d multiplies the input d steps in the past."""
    return causal_conv_cm(x.permute(0, 2, 1), kernel).permute(0, 2, 1)


def causal_conv_cm(x: Tensor, kernel: Tensor) -> Tensor:
    """The same on channel-major tensors: x (T, C_in, B) -> (T, C_out, B)."""
    td = kernel.shape[-1]
    xb = x.permute(2, 1, 0)  # (B, C_in, T)
    xb = F.pad(xb, (td - 1, 0))  # (B, C_in, T + Td - 1)
    y = F.conv1d(xb, kernel)  # (B, C_out, T)
    return y.permute(2, 1, 0)  # (T, C_out, B)
