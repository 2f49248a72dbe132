"""Target-aware training: the chip's model, with straight-through gradients.

A chip model is built as one (:func:`snn_delays.build_model` with ``target=``, or ``DelaySNN(cfg,
target=...)``): its synapses are :class:`ChipSynapse`, its BatchNorms :class:`FrozenNorm`, its neurons
:class:`ChipNeuron`, all sharing one :class:`ChipLayer` per layer. Their state dict is the plain
model's (same keys, same tensors), so checkpoints stay ordinary. What they compute is
:mod:`neuromorphic_export.chip`'s functions, called on tensors, with straight-through gradients
around the rounding (this module adds only the gradients):

- the synapse's weight is the folded weight ``W * gain`` (``chip.fold_batchnorm`` of the BatchNorm
  with its running statistics frozen) on the target's integer grid (``chip.round_weights``) at the
  scale the exporter chooses (``chip.choose_scale``, on the same float64 values, so the integers are
  those the export writes), divided by that scale; the synapse stays in eval mode (rounded delays,
  the chip's) and its delays within the target's range;
- the BatchNorm is the identity (its gain is folded into the weights); its bias, on the target's
  bias grid (``chip.round_bias``), is added by the neuron;
- the neuron runs the target's step: one step of latency per hop, the threshold rule
  (``chip.crossed``) and on Loihi the fixed-point update (``chip.loihi_update``, float64 holding
  exact integers); spikes take the arctan surrogate gradient;
- the model appends ``hop * (layers + 1)`` more zero steps, as the export's simulator does.

The chip forward can be switched on and off (``model.set_chip_forward``): ``train.target`` trains
the chip model with the plain forward (and the target's delay range) first and switches the chip
forward on for its last epochs. The forward then equals ``neuromorphic_export.simulate`` of the
run's export in the target's convention (tests/test_quantize.py), up to float32 sums of the
synapses (the simulator sums in float64). With several elements per connection
(``model.kernel_count`` > 1) each element is rounded on its own, while the export merges elements
of one pair first: an approximation there.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn

from neuromorphic_export import chip
from neuromorphic_export.targets import TARGETS, Target, get_target

from .checkpoint import load_checkpoint
from .errors import UserError
from .neuron import LIF, spike_atan
from .synapse import DelaySynapse

__all__ = ["apply_target", "is_applied", "FrozenNorm", "ChipNeuron", "ChipSynapse", "ChipLayer", "chip_targets",
           "delay_limit", "check_target"]


def chip_targets() -> list[str]:
    """The targets a model can be trained for (every exporter target but the float ``generic``)."""
    return [name for name in TARGETS if name != "generic"]


def check_target(name: str) -> Target:
    if name not in chip_targets():
        raise UserError(f"unknown target {name!r} for training; choose one of {', '.join(chip_targets())}")
    return get_target(name)


def delay_limit(t: Target, kernel_size: int) -> int:
    """The largest model delay d (steps) the target holds: D = d + hop <= max_delay_D."""
    top = kernel_size - 1
    return top if t.max_delay_D is None else min(top, t.max_delay_D - t.hop_latency_steps)


def refuse_unsupported(cfg, target: str) -> None:
    """UserError for a model config that cannot be a chip model (dense-conv, recurrent)."""
    if cfg.dense_kernel:
        raise UserError("a dense kernel (model.dense_kernel, variant dense-conv) cannot be exported, so it cannot "
                        "be trained for a target")
    if getattr(cfg, "recurrent", False):
        raise UserError(f"training for a chip (--target {target}) is not available for recurrent models "
                        "(model.recurrent): the chip forward here has no recurrent synapses; train without "
                        "--target and export with `snn-delays export --target ...`, which quantises and "
                        "checks the recurrent tables too (docs/export.md)")


def _ste(x: Tensor, q: Tensor) -> Tensor:
    """q forward, identity gradient (straight-through)."""
    return x + (q - x).detach()


class ChipLayer:
    """What one layer's chip modules share (a plain object, not a module: no state dict): the target,
    the weight bits, the threshold (inf: the readout), the layer's BatchNorm (None: the readout),
    whether the chip forward is on, and the scale the synapse chose in its last forward."""

    def __init__(self, t: Target, threshold: float, active: bool = True):
        self.t, self.bits, self.threshold = t, t.weight_bits, threshold
        self.integer_bias = t.arithmetic == "loihi"
        self.norm: nn.Module | None = None
        self.active = active
        self.choice: chip.LayerScale | None = None

    def gain(self, like: Tensor) -> Tensor:
        """BatchNorm gain (out,), float64 (ones for the readout)."""
        if self.norm is None:
            return torch.ones(like.shape[0], dtype=torch.float64, device=like.device)
        return self.folded()[0]

    def folded(self) -> tuple[Tensor, Tensor]:
        """(gain, bias) (out,) float64 of the BatchNorm: ``chip.fold_batchnorm`` on its tensors."""
        n = self.norm
        return chip.fold_batchnorm(n.weight.double(), n.bias.double(), n.running_mean.double(),
                                   n.running_var.double(), n.eps)

    def bias(self) -> Tensor:
        """The bias in the target's format (float64, model units; straight-through)."""
        b = self.folded()[1]
        if not self.integer_bias:
            return b
        return _ste(b, chip.round_bias(b, self.choice.scale, self.choice.bias_exponent))

    def weight(self, w: Tensor, mask: Tensor) -> Tensor:
        """The folded weight (out, in, m) on the target's integer grid / scale (straight-through),
        of ``w``'s dtype; chooses the layer's scale (``self.choice``) from the masked weights."""
        folded = w.double() * self.gain(w)[:, None, None]
        with torch.no_grad():
            masked = folded * mask.double().unsqueeze(-1)
            bias = self.folded()[1].cpu().numpy() if self.norm is not None else np.zeros(0)
            self.choice = chip.choose_scale(float(masked.abs().max()), bias, self.threshold, self.t, self.bits,
                                            self.integer_bias)
        s = self.choice.scale
        return _ste(folded, chip.round_weights(folded, s, self.bits, self.t.weight_mode) / s).to(w.dtype)


class ChipSynapse(DelaySynapse):
    """A :class:`~snn_delays.synapse.DelaySynapse` whose weight is the chip's (folded, quantised)
    while its layer's chip forward is on, then always in eval mode (rounded delays); its delays are
    held within the target's range (``clamp_``). Same parameters and state dict as DelaySynapse."""

    def __init__(self, *args, chip_layer: ChipLayer, **kwargs):
        super().__init__(*args, **kwargs)
        self.chip_layer = chip_layer
        self.delay_top = delay_limit(chip_layer.t, self.kernel_size)

    def masked_weight(self) -> Tensor:
        if not self.chip_layer.active:
            return super().masked_weight()
        return self.chip_layer.weight(self.weight, self.mask) * self.mask.unsqueeze(-1)

    def train(self, mode: bool = True) -> "ChipSynapse":
        return super().train(mode and not self.chip_layer.active)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Delays within [0, the target's largest model delay] (the chip's range)."""
        self.delay.clamp_(0, self.delay_top)


class FrozenNorm(nn.BatchNorm1d):
    """A BatchNorm that, while its layer's chip forward is on, is the identity with its running
    statistics frozen (its gain is folded into the synapse weights, its bias added by the neuron);
    an ordinary BatchNorm otherwise. Same parameters and buffers: same state dict."""

    def __init__(self, num_features: int, chip_layer: ChipLayer):
        super().__init__(num_features, eps=chip.BN_EPS)
        self.chip_layer = chip_layer

    @property
    def is_plain_batchnorm(self) -> bool:
        """Whether it computes as nn.BatchNorm1d now (the fused BatchNorm + LIF node may run it)."""
        return not self.chip_layer.active

    def forward(self, x: Tensor) -> Tensor:
        return x if self.chip_layer.active else super().forward(x)


def _spike(exact: Tensor, x: Tensor, alpha: float) -> Tensor:
    """Spikes ``exact`` (0/1) with the arctan surrogate gradient of x = u - theta (model units)."""
    s = spike_atan(x, alpha)
    return s + (exact.to(s.dtype) - s).detach()


class ChipNeuron(LIF):
    """The target's neuron over a sequence (T, N, B) of synaptic currents (model units) while its
    layer's chip forward is on: hop latency, bias, threshold rule and arithmetic as the export's
    simulator runs them (:mod:`neuromorphic_export.chip`); the plain :class:`LIF` otherwise."""

    def __init__(self, chip_layer: ChipLayer, tau: float, threshold: float, alpha: float = 5.0):
        super().__init__(tau, threshold, alpha)
        self.chip_layer = chip_layer
        self.readout = not math.isfinite(threshold)
        self.decay = 1.0 - 1.0 / tau

    def forward(self, current: Tensor) -> Tensor:
        L = self.chip_layer
        if not L.active:
            return super().forward(current)
        t, hop = L.t, L.t.hop_latency_steps
        c = current.double()
        if hop:
            c = torch.cat([c.new_zeros((hop,) + c.shape[1:]), c[:-hop]], 0)
        bias = c.new_zeros(c.shape[1]) if self.readout else L.bias().to(c.device)
        b = bias.view(-1, 1)  # neurons on dim 1 (channel-major): (N, 1) against (N, B)
        out = []
        if t.arithmetic == "loihi":
            s = L.choice.scale
            unit = s * (1 << chip.LOIHI_ACT_SHIFT)  # membrane units per model unit
            keep = chip.LOIHI_DECAY_UNITY - int(chip.loihi_v_decay(self.decay))
            shift = chip.LOIHI_ACT_SHIFT
            vth = math.inf if self.readout else int(chip.loihi_threshold_mantissa(L.threshold, s)) << shift
            a = _ste(c * s, (c * s).round())  # integer input activation a_in
            b = _ste(b * s, (b * s).round()) * (1 << chip.LOIHI_ACT_SHIFT)  # bias << 6
            v = c.new_zeros(c.shape[1:])
            for a_k in a.unbind(0):  # unbind: one gradient node, not a full-size zero tensor per step
                smooth = v * keep / chip.LOIHI_DECAY_UNITY + a_k * (1 << chip.LOIHI_ACT_SHIFT) + b
                v = _ste(smooth, chip.loihi_update(v.detach(), a_k.detach(), b.detach(), keep))
                if self.readout:
                    out.append(v / unit)
                    continue
                spk = _spike(chip.crossed(v, vth, ">"), v / unit - L.threshold, self.alpha)
                out.append(spk)
                v = v * (1 - spk.detach())
        else:
            u = c.new_zeros(c.shape[1:])
            for c_k in c.unbind(0):
                u = self.decay * u + c_k + b
                if self.readout:
                    out.append(u)
                    continue
                spk = _spike(chip.crossed(u, L.threshold, t.threshold_rule), u - L.threshold, self.alpha)
                out.append(spk)
                u = u * (1 - spk.detach())
        return torch.stack(out).to(current.dtype)


def is_applied(model: nn.Module) -> bool:
    """Whether ``model`` computes as a chip does now (a chip model with its chip forward on)."""
    return bool(getattr(model, "chip_forward", False))


def apply_target(model: nn.Module, target: str) -> nn.Module:
    """The chip model for ``target`` with the weights of ``model`` (a DelaySNN), chip forward on, in
    ``model``'s mode, dtype and device. A chip model of ``target`` is switched on and returned itself;
    a plain model is left as it is and a new chip model returned (``build_model(cfg, target=...)``
    builds one directly)."""
    if getattr(model, "target", None) == target:
        model.set_chip_forward(True)
        return model
    ref = next(model.parameters())
    out = type(model)(model.config, target=target).to(device=ref.device, dtype=ref.dtype)
    out.load_state_dict(model.state_dict())
    out.sigma = model.sigma
    out.input_steps = model.input_steps
    return out.train(model.training)


def target_start_epoch(train_cfg) -> int:
    """The first epoch trained with the target's quantised forward: the last ``target_fraction``
    of ``train.epochs`` (at least one epoch)."""
    n = train_cfg.epochs
    return max(0, n - max(1, round(train_cfg.target_fraction * n)))


def constraints_for_epoch(model: nn.Module, train_cfg, epoch: int) -> None:
    """``train.target``'s schedule for ``epoch`` on the run's chip model (built with
    ``target=train.target``, which holds the target's delay range from the first epoch): the chip's
    quantised forward from :func:`target_start_epoch` on (nothing without a target)."""
    if train_cfg.target:
        model.set_chip_forward(epoch >= target_start_epoch(train_cfg))


def init_from(model: nn.Module, path: str) -> None:
    """Start ``model`` from the weights of checkpoint ``path`` (a run folder's best.pt)."""
    ckpt = load_checkpoint(path)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"train.init_from {path}: its model does not fit this config "
                        f"({str(e).splitlines()[0]})") from None
