"""Target-aware training: a DelaySNN that computes what a chip computes, with straight-through gradients.

:func:`apply_target` changes a built :class:`~snn_delays.model.DelaySNN` from the outside (no code
of the model changes; its state dict keeps its keys, so checkpoints stay ordinary):

- every synapse's ``weight`` is parametrized (``torch.nn.utils.parametrize``) to the folded,
  fake-quantised weight: ``W * gamma / sqrt(var + eps)`` (the BatchNorm scale, with its running
  statistics frozen) rounded to the target's integer grid at the scale the exporter chooses
  (:func:`neuromorphic_export.targets.choose_scale`, the same function on the same float64
  values, so the integers are those the export writes), divided by that scale; the gradient passes
  straight through the rounding;
- every BatchNorm becomes :class:`FrozenNorm` (its gain is folded into the weights; its bias,
  ``beta - mean * gain``, rounded to the target's bias grid, is added by the neuron), and every
  LIF becomes :class:`ChipNeuron`: one step of latency per hop, the target's threshold rule and, on
  Loihi, the chip's fixed-point update (``v = signmag((v * (4096 - vDecay)) >> 12) + (a_in << 6) +
  (bias << 6)``, spike on ``v > vThMant << 6``), computed in float64 where every value is an exact
  integer; spikes take the arctan surrogate gradient;
- synapses run with rounded delays (the chip's; synapses stay in eval mode), delays held within
  the target's range (``clamp_``); the model appends ``hop * (layers + 1)`` more zero steps, as the
  export's simulator does.

The forward pass then equals ``neuromorphic_export.simulate`` of the run's export in the target's
convention (tests/test_quantize.py), up to float32 sums of the synapses (the simulator sums in float64).
With several elements per connection (``model.kernel_count`` > 1) each element is rounded on its own,
while the export merges elements of one pair first: an approximation there.
"""

from __future__ import annotations

import math
import types
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from neuromorphic_export.checkpoint import BN_EPS
from neuromorphic_export.simulate import LOIHI_ACT_SHIFT, LOIHI_DECAY_UNITY, LOIHI_MAX_UV
from neuromorphic_export.targets import Target, choose_scale, get_target

from .errors import UserError
from .neuron import spike_atan

__all__ = ["apply_target", "is_applied", "FrozenNorm", "ChipNeuron", "WeightQuantiser", "chip_targets",
           "delay_limit"]

_SHIFT = float(1 << LOIHI_ACT_SHIFT)


def chip_targets() -> list[str]:
    """The targets a model can be trained for (every exporter target but the float ``generic``)."""
    from neuromorphic_export.targets import TARGETS

    return [name for name in TARGETS if name != "generic"]


def check_target(name: str) -> Target:
    if name not in chip_targets():
        raise UserError(f"unknown target {name!r} for training; choose one of {', '.join(chip_targets())}")
    return get_target(name)


def delay_limit(t: Target, kernel_size: int) -> int:
    """The largest model delay d (steps) the target holds: D = d + hop <= max_delay_D."""
    top = kernel_size - 1
    return top if t.max_delay_D is None else min(top, t.max_delay_D - t.hop_latency_steps)


def _ste(x: Tensor, q: Tensor) -> Tensor:
    """q forward, identity gradient (straight-through)."""
    return x + (q - x).detach()


class _Layer:
    """What one synapse layer's quantisers share (a plain object, not a module: no state dict)."""

    def __init__(self, t: Target, bits: int, synapse: nn.Module, norm: nn.Module | None, threshold: float):
        self.t, self.bits, self.synapse, self.norm, self.threshold = t, bits, synapse, norm, threshold
        self.integer_bias = t.arithmetic == "loihi"
        self.choice = None

    def gain(self, like: Tensor) -> Tensor:
        """BatchNorm gain gamma / sqrt(var + eps) (out,), float64 (ones for the readout)."""
        if self.norm is None:
            return torch.ones(like.shape[0], dtype=torch.float64, device=like.device)
        return self.norm.weight.double() / torch.sqrt(self.norm.running_var.double() + BN_EPS)

    def float_bias(self) -> Tensor:
        """The folded bias beta - mean * gain (out,), float64."""
        n = self.norm
        return n.bias.double() - n.running_mean.double() * self.gain(n.bias)

    def bias(self) -> Tensor:
        """The bias in the target's format (float64, model units; straight-through)."""
        b = self.float_bias()
        if not self.integer_bias:
            return b
        s, step = self.choice.scale, 2.0 ** self.choice.bias_exponent
        return _ste(b, torch.round(b * s / step) * step / s)


class WeightQuantiser(nn.Module):
    """Parametrization of a synapse's ``weight``: the folded weight on the target's integer grid."""

    def __init__(self, layer: _Layer):
        super().__init__()
        self.__dict__["layer"] = layer  # not a submodule

    def forward(self, w: Tensor) -> Tensor:
        L = self.layer
        folded = w.double() * L.gain(w)[:, None, None]
        with torch.no_grad():
            masked = folded * L.synapse.mask.double().unsqueeze(-1)
            bias = L.float_bias().cpu().numpy() if L.norm is not None else np.zeros(0)
            L.choice = choose_scale(float(masked.abs().max()), bias, L.threshold, L.t, L.bits, L.integer_bias)
        s = L.choice.scale
        if L.t.weight_mode == "signed-even":
            q, lo, hi = 2 * torch.round(folded * s / 2), -2 ** L.bits, 2 ** L.bits - 2
        elif L.t.weight_mode == "signed":
            q, hi = torch.round(folded * s), 2 ** (L.bits - 1) - 1
            lo = -hi
        else:  # magnitude-pow2
            q, hi = torch.round(folded * s), 2 ** L.bits - 1
            lo = -hi
        return _ste(folded, q.clamp(lo, hi) / s).to(w.dtype)


class FrozenNorm(nn.BatchNorm1d):
    """A BatchNorm whose gain is folded into the synapse weights and whose bias the neuron adds:
    the identity here; running statistics frozen (the same parameters and buffers: same state dict)."""

    def forward(self, x: Tensor) -> Tensor:
        return x


def _spike(exact: Tensor, x: Tensor, alpha: float) -> Tensor:
    """Spikes ``exact`` (0/1) with the arctan surrogate gradient of x = u - theta (model units)."""
    s = spike_atan(x, alpha)
    return s + (exact.to(s.dtype) - s).detach()


class ChipNeuron(nn.Module):
    """The target's neuron over a sequence (T, N, B) of synaptic currents (model units): hop latency,
    bias, threshold rule and arithmetic as the export's simulator runs them. ``spiking`` is False so
    that the compiled evaluation path (which knows only the plain LIF) is not taken."""

    spiking = False

    def __init__(self, layer: _Layer, tau: float, alpha: float, readout: bool):
        super().__init__()
        self.__dict__["layer"] = layer
        self.decay = 1.0 - 1.0 / tau
        self.alpha, self.readout = alpha, readout

    def forward(self, current: Tensor) -> Tensor:
        L = self.layer
        t, hop = L.t, L.t.hop_latency_steps
        c = current.double()
        if hop:
            c = torch.cat([c.new_zeros((hop,) + c.shape[1:]), c[:-hop]], 0)
        shape = (1, -1, 1)  # neurons on dim 1 (channel-major)
        bias = c.new_zeros(c.shape[1]) if self.readout else L.bias().to(c.device)
        out = []
        if t.arithmetic == "loihi":
            s = L.choice.scale
            keep = LOIHI_DECAY_UNITY - int(np.rint(LOIHI_DECAY_UNITY * (1.0 - self.decay)))
            vth = (round(L.threshold * s) - 1) * _SHIFT if not self.readout else math.inf
            a = _ste(c * s, torch.round(c * s)) * _SHIFT  # a_in << 6
            b = _ste(bias * s, torch.round(bias * s)).view(shape) * _SHIFT
            v = c.new_zeros(c.shape[1:])
            for a_k in a.unbind(0):  # unbind: one gradient node, not a full-size zero tensor per step
                dv = v * keep / LOIHI_DECAY_UNITY  # exact: v and keep are integers, 4096 a power of two
                v = _ste(dv, dv.detach().long().to(dv.dtype))  # sign-magnitude >> 12 (truncation toward 0)
                v = v + a_k + b[0]
                v = _ste(v, v.clamp(-LOIHI_MAX_UV + 1, LOIHI_MAX_UV - 1))
                if self.readout:
                    out.append(v / (s * _SHIFT))
                    continue
                spk = _spike(v > vth, v / (s * _SHIFT) - L.threshold, self.alpha)
                out.append(spk)
                v = v * (1 - spk.detach())
        else:
            u = c.new_zeros(c.shape[1:])
            b = bias.view(shape)[0]
            for c_k in c.unbind(0):
                u = self.decay * u + c_k + b
                if self.readout:
                    out.append(u)
                    continue
                exact = u > L.threshold if t.threshold_rule == ">" else u >= L.threshold
                spk = _spike(exact, u - L.threshold, self.alpha)
                out.append(spk)
                u = u * (1 - spk.detach())
        return torch.stack(out).to(current.dtype)


def _pin_eval(module: nn.Module) -> None:
    """Keep ``module`` in eval mode whatever ``model.train()`` says (rounded delays: the chip's)."""
    module.train = types.MethodType(lambda self, mode=True: nn.Module.train(self, False), module)
    nn.Module.train(module, False)


def _clamp_delays(synapse: nn.Module, top: int) -> None:
    """Delays within [0, top] now and after every optimiser step (``model.clamp_()``)."""
    def clamp_(self) -> None:
        with torch.no_grad():
            self.delay.clamp_(0, top)
    synapse.clamp_ = types.MethodType(clamp_, synapse)
    synapse.clamp_()


def _state_dict_hook(module, state, prefix, local_metadata):
    """Parametrized ``X.parametrizations.weight.original`` saved as ``X.weight`` (the latent weight):
    checkpoints keep the model's own keys."""
    for key in [k for k in state if k.endswith("parametrizations.weight.original")]:
        state[key.replace("parametrizations.weight.original", "weight")] = state.pop(key)
    return state


def _load_pre_hook(state, prefix, *args):
    for key in [k for k in state if k.startswith(prefix) and (k.endswith("synapse.weight") or k == prefix + "readout.weight")]:
        state[key[: -len("weight")] + "parametrizations.weight.original"] = state.pop(key)


def _refuse_recurrent(model: nn.Module, target: str) -> None:
    if getattr(model.config, "recurrent", False):
        raise UserError(f"training for a chip (--target {target}) is not available for recurrent models "
                        "(model.recurrent): the chip forward here has no recurrent synapses; train without "
                        "--target and export with `snn-delays export --target ...`, which quantises and "
                        "checks the recurrent tables too (docs/export.md)")


def is_applied(model: nn.Module) -> bool:
    return getattr(model, "chip_target", None) is not None


def delay_range(model: nn.Module, target: str) -> None:
    """Only the target's delay range (``train --target`` before its quantisation phase)."""
    t = check_target(target)
    _refuse_recurrent(model, target)
    for syn in model.synapses():
        if hasattr(syn, "delay") and delay_limit(t, syn.kernel_size) < syn.kernel_size - 1:
            _clamp_delays(syn, delay_limit(t, syn.kernel_size))


def apply_target(model: nn.Module, target: str) -> nn.Module:
    """Make ``model`` (a DelaySNN) compute as ``target`` does (see the module doc); idempotent.
    Returns the model. Its parameters stay the same tensors (an optimiser built before keeps them)."""
    if is_applied(model):
        return model
    t = check_target(target)
    cfg = model.config
    if cfg.variant == "dense-conv":
        raise UserError("variant dense-conv cannot be exported, so it cannot be trained for a target")
    _refuse_recurrent(model, target)
    bits = t.weight_bits
    blocks = list(model.hidden)
    for k, syn in enumerate(model.synapses()):
        readout = k == len(blocks)
        norm = None if readout else blocks[k].norm
        layer = _Layer(t, bits, syn, norm, math.inf if readout else float(cfg.threshold))
        parametrize.register_parametrization(syn, "weight", WeightQuantiser(layer))
        _pin_eval(syn)
        _clamp_delays(syn, delay_limit(t, syn.kernel_size))
        tau = cfg.readout_tau_steps if readout else cfg.tau_steps
        neuron = ChipNeuron(layer, tau, cfg.surrogate_alpha, readout)
        if readout:
            model.readout_lif = neuron
        else:
            norm.__class__ = FrozenNorm
            blocks[k].lif = neuron
    model.extra_steps = model.extra_steps + t.hop_latency_steps * (len(blocks) + 1)
    model._register_state_dict_hook(_state_dict_hook)
    model._register_load_state_dict_pre_hook(_load_pre_hook)
    model.chip_target = t.name
    return model


def target_start_epoch(train_cfg) -> int:
    """The first epoch trained with the target's quantised forward: the last ``target_fraction``
    of ``train.epochs`` (at least one epoch)."""
    n = train_cfg.epochs
    return max(0, n - max(1, round(train_cfg.target_fraction * n)))


def constraints_for_epoch(model: nn.Module, train_cfg, epoch: int) -> None:
    """``train.target``'s constraints for ``epoch``: the delay range from the first epoch, the chip's
    quantised forward from :func:`target_start_epoch` on (nothing without a target)."""
    if not train_cfg.target or is_applied(model):
        return
    if epoch >= target_start_epoch(train_cfg):
        apply_target(model, train_cfg.target)
    else:
        delay_range(model, train_cfg.target)


def init_from(model: nn.Module, path: str) -> None:
    """Start ``model`` from the weights of checkpoint ``path`` (a run folder's best.pt)."""
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(path)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise UserError(f"train.init_from {path}: its model does not fit this config "
                        f"({str(e).splitlines()[0]})") from None
