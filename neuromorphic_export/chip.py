"""What the chip computes, written once (numpy-only; no torch, no h5py).

Everything a trained network turns into on a chip, as functions on arrays: BatchNorm folding,
delay rounding, the integer weight and bias grids and the scale choice of a target, the Loihi
fixed-point neuron step, the threshold rule and the readout decision; and the constants of the
training checkpoint schema that the exporter and the trainer both read.

The exporter (:mod:`.network`, :mod:`.targets`) and the simulator (:mod:`.simulate`) call these on
numpy arrays. The training code (``snn_delays.quantize``, ``snn_delays.backends.fast_eval``) calls
the same functions on torch tensors, adding straight-through gradients around them: the functions
marked *array-generic* below use only arithmetic operators, comparisons and the methods numpy
arrays and torch tensors share (``.round()``: half to even in both, ``.clip()``, ``** 0.5``), so one
definition gives bit-identical numbers in both (tests/test_chip.py checks it on random arrays for
every target). This module never imports torch.

Targets are passed duck-typed (anything with the attributes of :class:`neuromorphic_export.targets.Target`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "BN_EPS", "fold_batchnorm", "rounded_delays", "round_delays", "weight_grid", "full_scale", "round_weights",
    "bias_mantissa", "round_bias",
    "LayerScale", "choose_scale", "LOIHI_DECAY_UNITY", "LOIHI_ACT_SHIFT", "LOIHI_MAX_UV", "loihi_v_decay",
    "loihi_threshold_mantissa", "loihi_wrap_activation", "loihi_update", "crossed", "predict_from_readout",
    "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "CHECKPOINT_VERSIONS", "RECURRENT_DELAYS", "DEFAULT_DT_MS",
    "MAX_TIME_STEPS", "MAX_KERNEL_BYTES", "default_extra_steps", "kernel_bytes", "NORM_KEYS", "synapse_key",
    "recurrent_key", "state_shapes", "NEURON_MODELS", "ADLIF_KEYS", "ADLIF_Q", "ADLIF_RANGES", "adlif_limits",
    "neuron_key",
]

# -- checkpoint schema (docs/internals.md): written by snn_delays.checkpoint, read by both packages --
CHECKPOINT_FORMAT = "snn-delays-checkpoint"
CHECKPOINT_VERSION = 1  # the version written
CHECKPOINT_VERSIONS = (1,)  # the versions read
RECURRENT_DELAYS = ("learned", "fixed", "one-step")  # model.recurrent_delays ("one-step": every delay 1 step)
DEFAULT_DT_MS = 10.0  # ms per step when a checkpoint's config omits data.dt_ms (DataConfig.dt_ms's default)
# Sizes a checkpoint's config may give before anything is allocated from them (both readers check
# the stored arrays against the config first): model.kernel_size and model.extra_steps in steps,
# and the model's rounded-delay kernels, out x in x kernel_size float64 summed over the layers.
MAX_TIME_STEPS = 100_000
MAX_KERNEL_BYTES = 8 * 2 ** 30


NORM_KEYS = ("weight", "bias", "running_mean", "running_var")  # hidden.{k}.norm.<key>, (H,) each

# Hidden-layer neuron models (model.neuron): "lif", or "adlif" (adaptive LIF, snn_delays.adaptive_neuron;
# float64 step: neuromorphic_export.adaptive) whose learned per-neuron parameters are stored as
# hidden.{k}.lif.<key>, (H,) each, and used clamped into ADLIF_RANGES (the model clamps them in
# every forward pass; the exporter clips them the same way). q scales the adaptation (fixed).
NEURON_MODELS = ("lif", "adlif")
ADLIF_KEYS = ("decay_u", "decay_w", "a", "b")
ADLIF_Q = 120.0
ADLIF_RANGES = {"tau_u_steps": (5.0, 25.0), "tau_w_steps": (60.0, 300.0), "a": (0.0, 1.0), "b": (0.0, 2.0)}


def adlif_limits(tau_u_steps: tuple[float, float] = ADLIF_RANGES["tau_u_steps"],
                 tau_w_steps: tuple[float, float] = ADLIF_RANGES["tau_w_steps"],
                 a: tuple[float, float] = ADLIF_RANGES["a"],
                 b: tuple[float, float] = ADLIF_RANGES["b"]) -> dict[str, tuple[float, float]]:
    """(low, high) of each stored adLIF parameter (:data:`ADLIF_KEYS`): the decays exp(-1 / tau) of
    the time-constant ranges (steps), a and b as given."""
    return {"decay_u": (math.exp(-1 / tau_u_steps[0]), math.exp(-1 / tau_u_steps[1])),
            "decay_w": (math.exp(-1 / tau_w_steps[0]), math.exp(-1 / tau_w_steps[1])),
            "a": tuple(a), "b": tuple(b)}


def neuron_key(k: int) -> str:
    """State-dict prefix of hidden layer k's neurons (adLIF parameters: ``<prefix>.decay_u`` ...)."""
    return f"hidden.{k}.lif"


def synapse_key(k: int, n_layers: int) -> str:
    """State-dict prefix of synapse layer k of a model of ``n_layers`` hidden layers (k = n_layers: the readout)."""
    return f"hidden.{k}.synapse" if k < n_layers else "readout"


def recurrent_key(k: int) -> str:
    """State-dict prefix of hidden layer k's recurrent synapses (H, H, 1), delays stored minus one step."""
    return f"hidden.{k}.recurrent"


def state_shapes(n_layers: int, input_size: int, hidden_size: int, n_classes: int, taps: int, kernel_size: int,
                 dense_conv: bool = False, recurrent: bool = False,
                 adaptive: bool = False) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of the size-defining arrays of a checkpoint's model (the table in
    docs/internals.md): ``taps`` elements per connection (model.kernel_count; 1 without delays,
    model.delays "none"), with ``dense_conv`` (model.dense_kernel) kernels of ``kernel_size`` taps
    instead of weight/delay; ``adaptive`` (model.neuron "adlif") adds the neurons' :data:`ADLIF_KEYS`."""
    sizes = [input_size] + [hidden_size] * n_layers + [n_classes]
    want: dict[str, tuple[int, ...]] = {}
    for k in range(n_layers + 1):
        fan_in, fan_out = sizes[k], sizes[k + 1]
        prefix = synapse_key(k, n_layers) + "."
        want[prefix + "mask"] = (fan_out, fan_in)
        if dense_conv:
            want[prefix + "kernel_weight"] = (fan_out, fan_in, kernel_size)
        else:
            want[prefix + "weight"] = want[prefix + "delay"] = (fan_out, fan_in, taps)
        if k < n_layers:
            for part in NORM_KEYS:
                want[f"hidden.{k}.norm.{part}"] = (fan_out,)
            if adaptive:
                for part in ADLIF_KEYS:
                    want[f"{neuron_key(k)}.{part}"] = (fan_out,)
            if recurrent:
                r = recurrent_key(k) + "."
                want[r + "mask"] = (fan_out, fan_out)
                want[r + "weight"] = want[r + "delay"] = (fan_out, fan_out, 1)
    return want


def default_extra_steps(n_layers: int, kernel_size: int) -> int:
    """model.extra_steps when the config leaves it at -1: (L + 1) * ((Td - 1) // 2) zero steps,
    what the reference's per-layer right padding adds up to."""
    return (n_layers + 1) * ((kernel_size - 1) // 2)


def kernel_bytes(pairs: list[int], kernel_size: int, recurrent_pairs: list[int] = (),
                 recurrent_kernel_size: int = 0) -> int:
    """Bytes of the model's rounded-delay kernels: float64 (out x in) ``pairs`` per layer x
    ``kernel_size`` taps, plus the recurrent layers' x ``recurrent_kernel_size``."""
    return (sum(pairs) * kernel_size + sum(recurrent_pairs) * recurrent_kernel_size) * 8


# -- BatchNorm and delays -----------------------------------------------------------------------
BN_EPS = 1e-5  # the model's BatchNorm epsilon (snn_delays.model builds its BatchNorms with it)


def fold_batchnorm(gamma: Any, beta: Any, mean: Any, var: Any, eps: float = BN_EPS) -> tuple[Any, Any]:
    """Eval-mode BatchNorm as ``y = gain * x + bias`` per channel (array-generic): gain =
    gamma / sqrt(var + eps) (computed as 1 / sqrt(var + eps) * gamma, the order of PyTorch's CPU
    kernel), bias = beta - mean * gain. All (C,) arrays of one dtype; returns two (C,) arrays."""
    gain = 1.0 / (var + eps) ** 0.5 * gamma
    return gain, beta - mean * gain


def rounded_delays(delay: Any, kernel_size: int) -> Any:
    """The model's evaluation rounding of real-valued delays (steps): clamp to [0, Td - 1], round half
    to even; same dtype (array-generic: the synapses' ``rounded_delay`` is this on tensors)."""
    return delay.clip(0, kernel_size - 1).round()


def round_delays(delay: np.ndarray, kernel_size: int) -> np.ndarray:
    """:func:`rounded_delays` as int32 (the exporter's integer delays)."""
    return rounded_delays(np.asarray(delay, dtype=np.float64), kernel_size).astype(np.int32)


# -- weight and bias grids, scale choice --------------------------------------------------------
def weight_grid(bits: int, mode: str) -> tuple[int, int, int]:
    """(lowest, highest integer weight, q) of a weight mode, q the integer the largest |weight|
    maps to at full scale: 'signed' two's complement, 'signed-even' (Loihi mixed sign: k in
    [-2^(b-1), 2^(b-1) - 1] written as 2k), 'magnitude-pow2' (unsigned magnitude + sign, SpiNNaker)."""
    if mode == "signed":
        q = 2 ** (bits - 1) - 1
        return -q, q, q
    if mode == "signed-even":
        q = 2 ** (bits - 1) - 1
        return -2 ** bits, 2 ** bits - 2, 2 * q
    if mode == "magnitude-pow2":
        q = 2 ** bits - 1
        return -q, q, q
    raise ValueError(f"unknown weight mode {mode!r}")


def full_scale(max_abs: float, bits: int, mode: str) -> float:
    """The scale (integer = real * scale) at which the largest |weight| ``max_abs`` takes the whole
    integer range (a power of two for 'magnitude-pow2')."""
    q = weight_grid(bits, mode)[2]
    if mode == "magnitude-pow2":
        return float(2.0 ** math.floor(math.log2(q / max_abs)))
    return q / max_abs


def round_weights(w: Any, scale: float, bits: int, mode: str) -> Any:
    """Integer weights (as floats) of real weights ``w`` at ``scale`` in the weight mode, clipped to
    its range (array-generic; half to even)."""
    lo, hi, _ = weight_grid(bits, mode)
    q = (w * (scale / 2)).round() * 2 if mode == "signed-even" else (w * scale).round()
    return q.clip(lo, hi)


def bias_mantissa(b: Any, scale: float, exponent: int = 0) -> Any:
    """The integer bias mantissa (as floats) of real biases ``b``: round(b * scale / 2^exponent), half to
    even; the chip's integer bias is mantissa << exponent (array-generic)."""
    return (b * scale / 2.0 ** exponent).round()


def round_bias(b: Any, scale: float, exponent: int = 0) -> Any:
    """Real biases ``b`` on the integer bias grid (mantissa << ``exponent``) / ``scale``, back in real
    units (array-generic)."""
    step = 2.0 ** exponent
    return bias_mantissa(b, scale, exponent) * step / scale


@dataclass(frozen=True)
class LayerScale:
    """The number formats chosen for one layer: real value = integer / ``scale``; the integer
    bias is ``mantissa << bias_exponent``; ``weight_range_used`` = scale / the scale that would
    give the largest weight the full integer range (1: full weight resolution)."""

    scale: float
    bias_exponent: int = 0
    weight_range_used: float = 1.0
    reason: str = ""


def choose_scale(max_abs_weight: float, bias: np.ndarray, threshold: float, t: Any, bits: int,
                 integer_bias: bool) -> LayerScale:
    """Per-layer scale and bias exponent so that weights, biases and the threshold all fit target ``t``.

    Weights come first: the largest |weight| takes the full integer range (a weight error adds up
    over the fan-in, a bias error is one per neuron). The bias then takes the smallest exponent
    (0..``t.bias_exp_max``) whose ``bias_bits`` mantissa holds it, which costs bias resolution
    (steps of 2^exponent / scale) but no weight bits. Only when the largest bias does not fit even
    at the largest exponent, or the threshold mantissa would overflow, is the scale lowered, and
    the weights give up resolution (``weight_range_used`` < 1, said in ``reason``)."""
    full = full_scale(max_abs_weight, bits, t.weight_mode)
    s, reasons = full, []
    bias = np.asarray(bias, dtype=np.float64)
    bmax = float(np.abs(bias).max()) if bias.size else 0.0
    if integer_bias and t.bias_bits is not None and bmax > 0:
        top = (2 ** (t.bias_bits - 1) - 1) * 2 ** t.bias_exp_max  # largest integer bias
        if bmax * s > top:
            s = top / bmax
            reasons.append(f"biases up to {bmax:.4g} need scale <= {s:.6g} ({t.bias_bits}-bit mantissa"
                           + (f" << {t.bias_exp_max}" if t.bias_exp_max else "") + ")")
    if t.threshold_bits is not None and np.isfinite(threshold) and threshold > 0:
        top = 2 ** t.threshold_bits  # vThMant = round(theta * s) - 1 <= 2^bits - 1
        if threshold * s > top:
            s = top / threshold
            reasons.append(f"threshold {threshold:.4g} needs scale <= {s:.6g} ({t.threshold_bits}-bit vThMant)")
    if t.weight_mode == "magnitude-pow2" and s < full:
        s = float(2.0 ** math.floor(math.log2(s)))
    exponent = 0
    if integer_bias and t.bias_bits is not None and bmax > 0:
        lim = 2 ** (t.bias_bits - 1) - 1
        while exponent < t.bias_exp_max and np.rint(bmax * s / 2 ** exponent) > lim:
            exponent += 1
    reason = "; ".join(reasons)
    if s < full:
        reason += f": weights use {s / full:.3g} of the {bits}-bit range"
    return LayerScale(s, exponent, s / full, reason)


# -- neurons ------------------------------------------------------------------------------------
def crossed(u: Any, threshold: Any, rule: str) -> Any:
    """Where the membrane ``u`` fires under the threshold rule ('>=': the model, '>': Loihi, NIR)
    (array-generic)."""
    return u >= threshold if rule == ">=" else u > threshold


# Loihi CUBA neuron in fixed point (lava's bit-accurate LIF with iDecay = 4096; hardware.md):
#   u = wrap24(a_in << 6);  v = clip(signmag((v * (4096 - vDecay)) >> 12) + u + (bias << 6), +-(2^23 - 1))
#   spike where v > vThMant << 6; v = 0 there.
LOIHI_DECAY_UNITY = 4096
LOIHI_ACT_SHIFT = 6
LOIHI_MAX_UV = 2 ** 23


def loihi_v_decay(decay: Any) -> Any:
    """vDecay (integer, 0..4096) of the per-step membrane decay factor (1 - 1/tau)."""
    return np.rint(LOIHI_DECAY_UNITY * (1.0 - np.asarray(decay, dtype=np.float64))).astype(np.int64)


def loihi_threshold_mantissa(threshold: Any, scale: float) -> Any:
    """vThMant = round(theta * scale) - 1 (the chip fires on v > vThMant << 6, i.e. on an integer
    membrane >= round(theta * scale)); int64 array of ``threshold``'s shape (finite entries)."""
    return (np.rint(np.asarray(threshold, dtype=np.float64) * scale) - 1).astype(np.int64)


def loihi_wrap_activation(u: Any) -> Any:
    """The chip's 24-bit current register: u (integer values, a_in << 6) wrapped into
    (-2^23, 2^23] as lava's bit-accurate model wraps it (array-generic)."""
    u = u - (u > LOIHI_MAX_UV) * (2 * LOIHI_MAX_UV)
    return u + (u <= -LOIHI_MAX_UV) * (2 * LOIHI_MAX_UV)


def loihi_update(v: Any, a_in: Any, bias_shifted: Any, keep: Any) -> Any:
    """One step of the Loihi membrane before the spike test (array-generic on integer values: numpy
    int64, or float64 tensors holding integers, where every product here is exact):
    ``clip(signmag((v * keep) >> 12) + wrap24(a_in << 6) + bias_shifted, +-(2^23 - 1))``.

    v: membrane (integer units << 6); a_in: integer input activation (not shifted);
    bias_shifted: bias mantissa << exponent << 6; keep: 4096 - vDecay."""
    dv = v * keep
    dv = (abs(dv) // LOIHI_DECAY_UNITY) * ((dv >= 0) * 2 - 1)  # sign-magnitude shift: truncation toward 0
    u = loihi_wrap_activation(a_in * (1 << LOIHI_ACT_SHIFT))
    return (dv + u + bias_shifted).clip(-LOIHI_MAX_UV + 1, LOIHI_MAX_UV - 1)


# -- readout ------------------------------------------------------------------------------------
def predict_from_readout(readout: np.ndarray) -> np.ndarray:
    """The network's decision: (T, B, n_classes) readout membrane -> (B,) argmax over classes of the
    sum over t of softmax(readout[t])."""
    z = readout - readout.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return (e / e.sum(-1, keepdims=True)).sum(0).argmax(-1)
