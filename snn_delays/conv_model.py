"""The convolutional front end of :class:`snn_delays.model.DelaySNN` (``model.conv``).

Each layer of the spec (:mod:`neuromorphic_export.conv`) is a :class:`ConvBlock`::

    DelayConv2d (delays in [0, Td - 1], Td = model.kernel_size) -> BatchNorm2d (statistics over time,
    batch and pixels) -> LIF (model.tau_steps, threshold, surrogate) -> dropout (one mask per sample
    and neuron, shared by all steps) -> pooling (avg or max, N x N, stride N)

on time-major (T, B, C, H, W) tensors; the last block's output is flattened C-major into the dense
delay layers. ``model.delays`` reaches the conv synapses as it reaches the dense ones: "learned",
"fixed" (random, frozen) or "none" (Td = 1: one tap, no delay); so do ``learn_weights``, the
interpolation kernel and the sigma schedule (``DelaySNN.sigma``) and the clamping (``DelaySNN.clamp_``).
In eval mode every conv synapse computes its exact rounded-delay product (:class:`DelayConv2d`).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from neuromorphic_export.chip import BN_EPS
from neuromorphic_export.conv import ConvSpec, conv_shapes, flat_size, parse_conv, parse_frame

from .config import ConfigError, ModelConfig
from .conv_synapse import DelayConv2d
from .neuron import LIF

__all__ = ["ConvBlock", "build_conv_blocks", "dense_input_size", "conv_trainable_count", "input_frame", "frames_of"]

_CONV_LAYER_OFFSET = 1000  # conv layer j draws its initial weights and delays from stream layer 1000 + j


def input_frame(cfg: ModelConfig) -> tuple[int, int, int]:
    """(C, H, W) of a conv model's input; ConfigError when ``model.input_frame`` is unset."""
    if not cfg.input_frame:
        raise ConfigError("model.conv needs model.input_frame (CxHxW, e.g. 2x16x16); training takes it from the "
                          "data's frame_shape (an event dataset)")
    return parse_frame(cfg.input_frame)


def dense_input_size(cfg: ModelConfig) -> int:
    """Inputs of the first dense delay layer: the flattened output of the conv layers, or model.input_size."""
    specs = parse_conv(cfg.conv)
    return flat_size(specs, input_frame(cfg)) if specs else cfg.input_size


def conv_trainable_count(cfg: ModelConfig) -> int:
    """Trainable parameters of the conv layers of a resolved config: weights (learn_weights), delays
    (delays "learned", Td > 1; per element or per pair), BatchNorm gain and shift."""
    specs = parse_conv(cfg.conv)
    if not specs:
        return 0
    n = 0
    learned_delays = cfg.delays == "learned" and cfg.kernel_size > 1
    for s, (ins, _, _) in zip(specs, conv_shapes(specs, input_frame(cfg))):
        weights = s.out_channels * ins[0] * s.kernel ** 2
        delays = weights if cfg.conv_delay_per == "element" else s.out_channels * ins[0]
        n += weights * int(cfg.learn_weights) + delays * int(learned_delays) + 2 * s.out_channels
    return n


class ConvBlock(nn.Module):
    """DelayConv2d -> BatchNorm2d -> LIF -> dropout -> pooling; (T, B, C_in, H, W) -> (T, B, C_out, H', W').

    ``dropout``: a module mapping (T, B, N) to (T, B, N) (the model's time-shared dropout)."""

    def __init__(self, synapse: DelayConv2d, spec: ConvSpec, tau: float, threshold: float, alpha: float,
                 dropout: nn.Module):
        super().__init__()
        self.synapse = synapse
        self.norm = nn.BatchNorm2d(spec.out_channels, eps=BN_EPS)
        self.lif = LIF(tau, threshold, alpha)
        self.dropout = dropout
        self.pool, self.pool_size = spec.pool, spec.pool_size

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (T, B, C_in, H, W) -> (pooled spikes after dropout (T, B, C_out, H_p, W_p), spikes before
        dropout and pooling (T, B, C_out, H_out, W_out))."""
        i = self.synapse(x)  # (T, B, C, Ho, Wo)
        t, b, c, ho, wo = i.shape
        i = self.norm(i.reshape(t * b, c, ho, wo))  # statistics over time, batch and pixels
        s = self.lif(i.reshape(t, b, c * ho * wo))  # (T, B, N): elementwise in time order
        a = self.dropout(s).reshape(t * b, c, ho, wo)
        if self.pool == "avg":
            a = F.avg_pool2d(a, self.pool_size)
        elif self.pool == "max":
            a = F.max_pool2d(a, self.pool_size)
        return a.reshape(t, b, *a.shape[1:]), s.reshape(t, b, c, ho, wo)


def build_conv_blocks(cfg: ModelConfig, generator, dropout, sigma_init: float | None) -> nn.ModuleList:
    """The conv blocks of ``cfg`` (empty ModuleList without ``model.conv``). ``generator(layer, kind)``
    returns the seeded torch.Generator of a layer; ``dropout()`` a new dropout module."""
    specs = parse_conv(cfg.conv)
    blocks = nn.ModuleList()
    if not specs:
        return blocks
    no_delays = cfg.delays == "none"
    for j, (s, (ins, _, _)) in enumerate(zip(specs, conv_shapes(specs, input_frame(cfg)))):
        syn = DelayConv2d(ins[0], s.out_channels, s.kernel, 1 if no_delays else cfg.kernel_size, stride=s.stride,
                          padding=s.padding, delay_per=cfg.conv_delay_per, sigma=sigma_init,
                          interpolation=cfg.interpolation, learn_delays=cfg.delays == "learned",
                          learn_weights=cfg.learn_weights, generator=generator(_CONV_LAYER_OFFSET + j, 1))
        blocks.append(ConvBlock(syn, s, cfg.tau_steps, cfg.threshold, cfg.surrogate_alpha, dropout()))
    return blocks


def frames_of(x: Tensor, frame: tuple[int, int, int]) -> Tensor:
    """(T, B, C H W) or (T, B, C, H, W) -> (T, B, C, H, W); ValueError naming the shapes otherwise."""
    if x.dim() == 3 and x.shape[-1] == frame[0] * frame[1] * frame[2]:
        return x.reshape(x.shape[0], x.shape[1], *frame)
    if x.dim() == 5 and tuple(x.shape[2:]) == tuple(frame):
        return x
    raise ValueError(f"DelaySNN: expected input (T, B, {frame[0]}, {frame[1]}, {frame[2]}) or "
                     f"(T, B, {frame[0] * frame[1] * frame[2]}), got {tuple(x.shape)}")

