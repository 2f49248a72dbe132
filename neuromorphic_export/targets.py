"""Per-chip limits, weight quantisation, checks, and clipping with a report.

Delays: ``network.h5`` keeps the model's delay d (steps, 0 = same step). Every hardware runtime
adds one step per hop, so the chip realises D = d + hop_latency_steps; the limits below are on
D, the effective delay (hardware.md). Netx/Lava store D - 1, PyNN D * dt, Brian2 (D - 1) * dt.

Recurrent tables (a hidden layer's synapses onto itself) hold the effective delay D >= 1 itself (a
spike comes back to the layer it left, whose clock the hop latency already shifted): the same
delay range applies to D, the same weight bits and one scale per layer for both tables.

adLIF neurons (model.neuron = "adlif", network.h5 format_version 3) are carried by the generic
target's network.h5 only: every chip target refuses them with the reason (:data:`ADLIF_REFUSED`),
and the generic export writes neither network.nir nor pynn/ for them (:data:`ADLIF_CARRIAGE`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .chip import LayerScale, bias_mantissa, choose_scale, full_scale, round_bias, round_weights, weight_grid
from .errors import ExportError
from .network import INT32_MAX, Layer, Network, Recurrent

__all__ = ["Target", "TARGETS", "get_target", "prepare", "quantise_layer", "Violation",
           "PrepareReport", "check_weight_bits", "max_weight_bits", "LayerScale", "choose_scale",
           "quantisation_errors", "DELAY_CARRIAGE", "RECURRENT_CARRIAGE", "ADLIF_REFUSED", "ADLIF_CARRIAGE",
           "refuse_adaptive"]


@dataclass(frozen=True)
class Target:
    """What a chip (through its software stack) accepts.

    min_delay_D / max_delay_D: effective delay range (steps, hop latency included; None: no bound).
    weight_bits: bits of the integer weight (None: float weights); weight_mode: 'signed' (two's
    complement), 'signed-even' (Loihi mixed sign: even values in [-2^bits, 2^bits - 2]),
    'magnitude-pow2' (unsigned magnitude, power-of-two scale, exc/inh split: SpiNNaker).
    """

    name: str
    description: str
    hop_latency_steps: int = 1
    threshold_rule: str = ">"
    arithmetic: str = "float64"
    min_delay_D: int = 1
    max_delay_D: int | None = None
    delay_granularity: str = "per-synapse"  # or "per-axon"
    one_delay_per_pair: bool = False  # a 2-D (out, in) delay matrix holds one delay per pair
    weight_bits: int | None = None
    weight_mode: str = "signed"
    max_fanin: int | None = None
    bias_bits: int | None = None  # signed mantissa bits of the integer bias
    bias_exp_max: int = 0  # integer bias = mantissa << exponent, exponent in 0..bias_exp_max (Loihi 1: 3 bits)
    threshold_bits: int | None = None  # unsigned bits of the threshold mantissa
    notes: str = ""


TARGETS: dict[str, Target] = {t.name: t for t in [
    Target("generic", "float64, the model's own convention (no hop latency, u >= theta)",
           hop_latency_steps=0, threshold_rule=">=", min_delay_D=0),
    Target("loihi1", "Intel Loihi 1 via lava-dl netx HDF5", arithmetic="loihi", max_delay_D=63,
           one_delay_per_pair=True, weight_bits=8, weight_mode="signed-even", bias_bits=13, bias_exp_max=7,
           threshold_bits=17, notes="netx delay value D - 1 in 0..62"),
    Target("loihi2", "Intel Loihi 2 via lava-dl netx HDF5 (bit-accurate model)", arithmetic="loihi",
           max_delay_D=63, one_delay_per_pair=True, weight_bits=8, weight_mode="signed-even",
           bias_bits=24, threshold_bits=23,
           notes="netx delay value D - 1 in 0..62: lava-dl netx clamps above 62; the chip itself holds 0..63"),
    Target("spinnaker1", "SpiNNaker 1 via PyNN/sPyNNaker (IF_curr_delta)", threshold_rule=">=",
           max_delay_D=288, weight_bits=16, weight_mode="magnitude-pow2",
           notes="32 steps natively at 256 neurons/core; up to 288 with delay extensions (added "
                 "automatically by sPyNNaker); IF_curr_delta's tau_m and i_offset make its exact update "
                 "the model's step (checked in NEST 3.10)"),
    Target("spinnaker2", "SpiNNaker 2 via its NIR importer (int8 weights)", max_delay_D=None,
           weight_bits=8, weight_mode="signed", notes="delay limit not verified"),
]}


# What each target's files carry of the per-synapse delays (docs/export.md, "What the files carry").
DELAY_CARRIAGE: dict[str, dict[str, str]] = {
    "generic": {
        "network.h5": "carried: one integer delay per synapse row",
        "network.nir": "written exactly (one Delay -> Linear branch per distinct delay of a layer, since NIR's "
                       "Delay is per channel) and run exactly in PyTorch by the package's nirtorch map "
                       "(neuromorphic_export.nir_torch); no released NIR consumer runs nir.Delay (snnTorch and "
                       "Norse refuse or fail on it)",
        "pynn/": "carried: delay_ms per synapse in the FromListConnector lists",
    },
    "loihi1": {"network.h5": "carried", "netx.h5": "carried: 2-D (out, in) delay matrix, one delay per (pre, post) "
               "pair, which lava-dl netx loads as per-synapse delays (several delays of one pair are merged)"},
    "loihi2": {"network.h5": "carried", "netx.h5": "carried: 2-D (out, in) delay matrix, one delay per (pre, post) "
               "pair, which lava-dl netx loads as per-synapse delays (several delays of one pair are merged)"},
    "spinnaker1": {"network.h5": "carried", "pynn/": "carried: delay_ms per synapse; sPyNNaker adds delay "
                   "extensions for delays beyond 32 steps (at 256 neurons per core)"},
    "spinnaker2": {
        "network.h5": "carried: one integer delay per synapse row",
        "network.nir": "NOT carried to the chip: the per-synapse delays are written (one Delay -> Linear branch per "
                       "distinct delay, NIR's Delay being per channel) but SpiNNaker 2's NIR importer ignores or "
                       "rejects nir.Delay, so on the chip every synapse would run with delay 0 (+ 1 step per hop). "
                       "No expansion into delay buckets or relay populations is done: map network.h5's delays by "
                       "hand (py-spinnaker2 connection lists take a delay per synapse)",
    },
}


# What each target's files carry of the recurrent tables (only reported for networks that have them).
_NIR_RECURRENT = ("written as a cycle per layer (LIF -> Delay(d * dt) -> Linear -> the same LIF, one branch per "
                  "distinct recurrent delay)")
_NETX_RECURRENT = ("carried: netx 'dense_rec' layers (lava-dl RecurrentDense), whose recurrent synapses read the "
                   "layer's (out, in) delay matrix: each recurrent layer is padded with never-firing neurons so "
                   "that its recurrent synapses get delay columns of their own (value D - 1)")
RECURRENT_CARRIAGE: dict[str, dict[str, str]] = {
    "generic": {
        "network.h5": "carried: layer/<k>/recurrent, one integer delay >= 1 per synapse row",
        "network.nir": _NIR_RECURRENT + "; run exactly by neuromorphic_export.nir_torch, by no released NIR consumer",
        "pynn/": "carried: a Projection of each population onto itself, delay_ms = d * dt per synapse",
    },
    "loihi1": {"network.h5": "carried", "netx.h5": _NETX_RECURRENT},
    "loihi2": {"network.h5": "carried", "netx.h5": _NETX_RECURRENT},
    "spinnaker1": {"network.h5": "carried", "pynn/": "carried: a Projection of each population onto itself, "
                   "delay_ms = d * dt per synapse"},
    "spinnaker2": {
        "network.h5": "carried: layer/<k>/recurrent, one integer delay >= 1 per synapse row",
        "network.nir": "NOT carried to the chip: " + _NIR_RECURRENT + ", but SpiNNaker 2's NIR importer ignores or "
                       "rejects nir.Delay (every recurrent synapse would run with the hop's 1 step); whether it "
                       "maps cycles is not verified",
    },
}


# Why each chip target refuses adLIF layers: its neuron model has no adaptation variable.
_NETX_NEURON = ("netx.h5 describes lava-dl's CUBA LIF neurons (current and voltage decay, threshold, bias), which "
                "have no adaptation variable")
ADLIF_REFUSED: dict[str, str] = {
    "loihi1": _NETX_NEURON,
    "loihi2": _NETX_NEURON + " (a microcoded Loihi 2 neuron could compute the step, but lava-dl netx loads none and "
                             "this package writes none)",
    "spinnaker1": "the export's PyNN cell type IF_curr_delta has no adaptation, and PyNN's adapting cell types "
                  "(EIF_cond_exp_isfa_ista, IF_cond_exp_gsfa_grr) are conductance-based continuous-time models, not "
                  "this discrete step",
    "spinnaker2": "its NIR importer takes NIR's neuron nodes, and NIR 1.0 has none with adaptation (LIF, CubaLIF, "
                  "IF, LI, CubaLI, I)",
}
# What the generic target's files carry of adLIF layers (reported only for networks that have them).
ADLIF_CARRIAGE: dict[str, str] = {
    "network.h5": "carried: layer/<k>/neurons with model 'adlif', decay_u, decay_w, a, b per neuron and q "
                  "(format_version 3); run by neuromorphic_export.simulate",
    "network.nir": "NOT written: NIR 1.0's neuron nodes (LIF, CubaLIF, IF, LI, CubaLI, I) have no adaptation",
    "pynn/": "NOT written: PyNN's IF_curr_delta has no adaptation, and its adapting cell types are conductance-based "
             "continuous-time models, not this discrete step",
}


def refuse_adaptive(net: Network, t: Target) -> None:
    """Refuse a network with adLIF layers for a chip target, with the reason (:data:`ADLIF_REFUSED`)."""
    if net.is_adaptive and t.name in ADLIF_REFUSED:
        raise ExportError(f"target {t.name} cannot run adLIF neurons (model.neuron = adlif): {ADLIF_REFUSED[t.name]}; "
                          "export with --target generic (network.h5, run by neuromorphic_export.simulate)")


def max_weight_bits(t: Target) -> int:
    """The most weight bits ``t`` carries: its chip's, or for float targets what network.h5's int32
    integer weights hold in the target's weight mode (largest integer 2^(b-1) - 1 for 'signed')."""
    if t.weight_bits is not None:
        return t.weight_bits
    return next(b for b in range(64, 1, -1) if max(abs(v) for v in weight_grid(b, t.weight_mode)[:2]) <= INT32_MAX)


def check_weight_bits(t: Target, weight_bits: int) -> None:
    """Refuse a ``--weight-bits`` that ``t`` (or network.h5's int32 weights) cannot carry."""
    most = max_weight_bits(t)
    if not 2 <= weight_bits <= most:
        why = f"{t.name}'s weights have {most} bits, its default" if t.weight_bits is not None else \
            "network.h5 stores integer weights as int32; omit --weight-bits for float weights"
        amount = "too few" if weight_bits < 2 else f"more than target {t.name} can hold"
        raise ExportError(f"--weight-bits {weight_bits} is {amount}: choose 2 to {most} ({why})")


def get_target(name: str) -> Target:
    if name not in TARGETS:
        raise ExportError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
    return TARGETS[name]


@dataclass(frozen=True)
class Violation:
    """A limit broken by ``count`` items of layer ``layer`` (None: the whole network)."""

    layer: int | None
    what: str
    count: int
    limit: str

    def __str__(self) -> str:
        where = f"layer {self.layer}" if self.layer is not None else "network"
        what = self.what
        if self.count == 1:  # "1 synapse with ...", "1 neuron whose ...", "1 (pre, post) pair with ..."
            for plural in ("synapses", "neurons", "pairs"):
                what = what.replace(f"{plural} ", f"{plural[:-1]} ", 1)
        return f"{where}: {self.count} {what} (limit: {self.limit})"


def _count(n: int, singular: str, plural: str | None = None) -> str:
    """'1 synapse', '3 synapses'."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


@dataclass
class PrepareReport:
    target: str
    violations: list[Violation] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)  # what --clip changed
    notes: list[str] = field(default_factory=list)  # quantisation facts (not violations)
    quantisation: list[dict] = field(default_factory=list)  # per layer: scale, exponents, errors

    def lines(self) -> list[str]:
        out = [f"target {self.target}"]
        out += [f"  clipped: {c}" for c in self.changes]
        out += [f"  note: {n}" for n in self.notes]
        return out


def quantise_layer(layer: Layer, bits: int, mode: str, integer_bias: bool,
                   choice: LayerScale | None = None) -> tuple[Layer, int]:
    """Integer weights (real = integer / scale) for one layer, its recurrent table at the same scale;
    returns (layer, synapses that became 0 and were dropped, feed-forward and recurrent). ``choice``:
    the scale and bias exponent (default: the largest |weight| of both tables takes the full range,
    exponent 0). With ``integer_bias`` the bias is rounded to the grid of 2^bias_exponent / scale."""
    w, wr = layer.real_weight, layer.recurrent_real_weight
    max_abs = _max_abs(w, wr)
    if max_abs == 0.0:
        return layer.copy(weight=w.copy(), weight_scale=1.0,
                          recurrent=None if layer.recurrent is None else layer.recurrent.copy(weight=wr.copy())), 0
    if choice is None:
        choice = LayerScale(full_scale(max_abs, bits, mode))
    scale = choice.scale
    q = round_weights(w, scale, bits, mode)
    keep = q != 0
    bias = round_bias(layer.bias, scale, choice.bias_exponent) if integer_bias else layer.bias
    recurrent, dropped = None, int((~keep).sum())
    if layer.recurrent is not None:
        r = layer.recurrent
        qr = round_weights(wr, scale, bits, mode)
        kr = qr != 0
        recurrent = Recurrent(r.n, r.pre[kr], r.post[kr], qr[kr], r.delay[kr])
        dropped += int((~kr).sum())
    return layer.copy(pre=layer.pre[keep], post=layer.post[keep], weight=q[keep],
                      delay=layer.delay[keep], bias=bias, weight_scale=scale, recurrent=recurrent), dropped


def _max_abs(*weights: np.ndarray) -> float:
    """Largest |w| over the given weight arrays (0 when all are empty)."""
    return max((float(np.abs(w).max()) for w in weights if w.size), default=0.0)


def quantisation_errors(before: Layer, after: Layer, t: Target) -> dict[str, float]:
    """How far the quantised layer is from the float one, in the model's units: largest and RMS
    weight error (over the float layer's synapses, dropped ones counted as errors; the same for the
    recurrent table as ``recurrent_weight_*`` when there is one), largest bias error, and the threshold error (Loihi: (vThMant + 1) / scale - theta; the chip fires on
    v > vThMant)."""
    dense_b, _ = before.dense()
    dense_a, _ = after.dense()
    n = max(dense_a.shape[2], dense_b.shape[2])
    pad = lambda a: np.pad(a, ((0, 0), (0, 0), (0, n - a.shape[2])))
    err = (pad(dense_a) - pad(dense_b))[pad(dense_b) != 0]
    out = {"weight_max_error": float(np.abs(err).max()) if err.size else 0.0,
           "weight_rms_error": float(np.sqrt(np.mean(err ** 2))) if err.size else 0.0,
           "bias_max_error": float(np.abs(after.bias - before.bias).max()) if before.n_out else 0.0,
           "threshold_error": 0.0}
    if before.recurrent is not None and after.recurrent is not None:
        rb, _ = before.dense_recurrent()
        ra, _ = after.dense_recurrent()
        n = max(ra.shape[2], rb.shape[2])
        err = (pad(ra) - pad(rb))[pad(rb) != 0]
        out["recurrent_weight_max_error"] = float(np.abs(err).max()) if err.size else 0.0
        out["recurrent_weight_rms_error"] = float(np.sqrt(np.mean(err ** 2))) if err.size else 0.0
    finite = np.isfinite(before.threshold)
    if t.arithmetic == "loihi" and after.weight_scale is not None and finite.any():
        s = after.weight_scale
        chip = np.rint(after.threshold[finite] * s) / s  # (vThMant + 1) / scale
        out["threshold_error"] = float(np.abs(chip - before.threshold[finite]).max())
    elif finite.any():
        out["threshold_error"] = float(np.abs(after.threshold[finite] - before.threshold[finite]).max())
    return out


def _pair_keys(layer: Layer) -> np.ndarray:
    return layer.post.astype(np.int64) * layer.n_in + layer.pre


def _one_delay_per_pair(layer: Layer) -> tuple[Layer, int]:
    """Merge the elements of a (pre, post) pair onto the delay of its largest |w| element."""
    keys = _pair_keys(layer)
    order = np.lexsort((-np.abs(layer.weight), keys))
    first = np.ones(len(keys), dtype=bool)
    first[1:] = keys[order][1:] != keys[order][:-1]
    n_multi = int(len(np.unique(keys[order][~first])))
    if n_multi == 0:
        return layer, 0
    group = np.cumsum(first) - 1
    w = np.zeros(int(first.sum()))
    np.add.at(w, group, layer.weight[order])
    sel = order[first]
    return layer.copy(pre=layer.pre[sel], post=layer.post[sel], weight=w, delay=layer.delay[sel]), n_multi


def _per_axon(layer: Layer) -> tuple[Layer, int]:
    """Give every synapse of a pre neuron the delay of that neuron's largest |w| synapse."""
    d = layer.delay.copy()
    changed = 0
    for j in np.unique(layer.pre):
        idx = np.nonzero(layer.pre == j)[0]
        if len(np.unique(d[idx])) > 1:
            changed += 1
            d[idx] = d[idx[np.argmax(np.abs(layer.weight[idx]))]]
    return layer.copy(delay=d), changed


def _fanin(layer: Layer, limit: int) -> tuple[Layer, int]:
    """Keep the ``limit`` largest |w| incoming synapses of each neuron."""
    order = np.lexsort((-np.abs(layer.weight), layer.post))
    post = layer.post[order]
    rank = np.arange(len(post)) - np.searchsorted(post, post)
    keep = order[rank < limit]
    over = int((np.bincount(layer.post, minlength=layer.n_out) > limit).sum())
    keep.sort()
    return layer.copy(pre=layer.pre[keep], post=layer.post[keep], weight=layer.weight[keep],
                      delay=layer.delay[keep]), over


def prepare(net: Network, target: str | Target, clip: bool = False,
            weight_bits: int | None = None) -> tuple[Network, PrepareReport]:
    """Check ``net`` (float, model convention) against a target; quantise; clip if allowed.

    Without ``clip`` any violation raises :class:`ExportError` naming the layer, the count and the
    limit. Returns the network for the target (conventions in its attrs) and a report.
    """
    t = target if isinstance(target, Target) else get_target(target)
    refuse_adaptive(net, t)
    rep = PrepareReport(t.name)
    bits = t.weight_bits
    if weight_bits is not None:
        check_weight_bits(t, weight_bits)
        bits = weight_bits
    hop = t.hop_latency_steps
    layers = []
    for k, layer in enumerate(net.layers):
        layer = layer.copy()
        layer = _limit_delays(layer, k, t, rep, hop, t.min_delay_D)
        if layer.recurrent is not None:  # effective delays already: no hop added, and at least one step
            layer = _with_table(layer, _limit_delays(_table(layer), k, t, rep, 0, max(t.min_delay_D, hop, 1),
                                                     "recurrent "))
        if t.max_fanin is not None:
            layer, n = _fanin_with_recurrent(layer, t.max_fanin)
            if n:
                rep.violations.append(Violation(k, "neurons with too many inputs", n, f"fan-in <= {t.max_fanin}"))
                rep.changes.append(f"layer {k}: {_count(n, 'neuron')} pruned to their {t.max_fanin} largest inputs")
        if bits is not None:
            integer_bias = t.arithmetic == "loihi"
            theta = float(layer.threshold[0]) if layer.n_out else math.inf
            # one scale for both tables: their currents add in the same neurons
            choice = choose_scale(_max_abs(layer.real_weight, layer.recurrent_real_weight), layer.bias, theta, t,
                                  bits, integer_bias)
            before = layer
            layer, zeroed = quantise_layer(layer, bits, t.weight_mode, integer_bias, choice)
            _check_ranges(layer, k, t, rep, choice.bias_exponent)
            errors = quantisation_errors(before, layer, t)
            rep.quantisation.append({"layer": k, "weight_bits": bits, "scale": layer.weight_scale,
                                     "weight_range_used": choice.weight_range_used,
                                     "bias_exponent": choice.bias_exponent, "synapses_dropped": zeroed,
                                     **errors, "why": choice.reason})
            rep.notes.append(
                f"layer {k}: {bits}-bit weights, scale {layer.weight_scale:.6g}"
                + (f", bias exponent {choice.bias_exponent}" if t.bias_exp_max else "")
                + f"; {_count(zeroed, 'synapse')} rounded to 0 and dropped; error: weights max "
                f"{errors['weight_max_error']:.3g} rms {errors['weight_rms_error']:.3g}, biases max "
                f"{errors['bias_max_error']:.3g}, threshold {errors['threshold_error']:.3g}"
                + (f", recurrent weights max {errors['recurrent_weight_max_error']:.3g} rms "
                   f"{errors['recurrent_weight_rms_error']:.3g}" if "recurrent_weight_max_error" in errors else "")
                + (f" ({choice.reason})" if choice.reason else ""))
        layers.append(layer)
    if rep.violations and not clip:
        raise ExportError(
            f"the network breaks the limits of {t.name}:\n  " + "\n  ".join(map(str, rep.violations))
            + "\nuse --clip to clip instead (the report gives the accuracy before and after), or retrain "
              "within the limits" + (" (e.g. model.kernel_size <= the delay limit)" if any(
                  "delay" in v.what and "recurrent" not in v.what for v in rep.violations) else "")
            + (" (recurrent delays: model.recurrent_kernel_size <= the delay limit)" if any(
                "recurrent" in v.what and "delay" in v.what for v in rep.violations) else ""))
    if net.is_recurrent:
        rep.notes.append("recurrent synapses per layer " + str([l.n_recurrent for l in layers[:-1]])
                         + ", delays (effective, steps) up to " + str([int(l.recurrent.delay.max()) if l.n_recurrent
                                                                    else 0 for l in layers[:-1]]))
    attrs = {"target": t.name, "hop_latency_steps": hop, "threshold_rule": t.threshold_rule,
             "arithmetic": t.arithmetic,
             "weight_bits": bits if bits is not None else 0, "clipped": bool(rep.changes)}
    if t.bias_exp_max:  # per layer, "e0,e1,...": integer bias = mantissa << e (network.h5 root attribute)
        attrs["bias_exponents"] = ",".join(str(q["bias_exponent"]) for q in rep.quantisation)
    return net.copy(layers=layers, **attrs), rep


def _table(layer: Layer) -> Layer:
    """The recurrent table of ``layer`` as a Layer of its own (n -> n), for the per-table helpers."""
    r = layer.recurrent
    return Layer(r.n, r.n, r.pre, r.post, r.weight, r.delay, decay=0.0, threshold=np.inf, bias=0.0,
                 weight_scale=layer.weight_scale)


def _with_table(layer: Layer, table: Layer) -> Layer:
    return layer.copy(recurrent=Recurrent(layer.n_out, table.pre, table.post, table.weight, table.delay))


def _limit_delays(table: Layer, k: int, t: Target, rep: PrepareReport, hop: int, low: int,
                  what: str = "") -> Layer:
    """The target's delay limits on one synapse table of layer k (effective delay D = delay + hop,
    at least ``low``; ``what``: "recurrent " for a recurrent table): delay range, one delay per pair
    and per axon where the target needs them. Violations go to ``rep``; the table returned is clipped
    (the caller refuses it unless clipping is allowed)."""
    D = table.delay.astype(np.int64) + hop
    if t.max_delay_D is not None and (D > t.max_delay_D).any():
        n = int((D > t.max_delay_D).sum())
        rep.violations.append(Violation(k, f"{what}synapses with effective delay up to {int(D.max())} steps",
                                        n, f"D <= {t.max_delay_D} steps ({t.notes or t.name})"))
        rep.changes.append(f"layer {k}: {_count(n, what + 'synapse delay')} clipped to D = {t.max_delay_D} steps")
        table.delay = np.minimum(table.delay, t.max_delay_D - hop).astype(np.int32)
    if (D < low).any():
        n = int((D < low).sum())
        rep.violations.append(Violation(k, f"{what}synapses with too short a delay", n, f"D >= {low}"))
        rep.changes.append(f"layer {k}: {_count(n, what + 'synapse delay')} raised to D = {low}")
        table.delay = np.maximum(table.delay, low - hop).astype(np.int32)
    if t.one_delay_per_pair:
        table, n = _one_delay_per_pair(table)
        if n:
            rep.violations.append(Violation(k, f"{what}(pre, post) pairs with several delays", n,
                                            "one delay per pair (2-D delay matrix)"))
            rep.changes.append(f"layer {k}: {_count(n, what + 'pair')} merged onto the delay of their largest weight")
    if t.delay_granularity == "per-axon":
        table, n = _per_axon(table)
        if n:
            rep.violations.append(Violation(k, f"{what}pre-synaptic neurons with several delays", n,
                                            "one delay per axon"))
            rep.changes.append(f"layer {k}: {_count(n, what + 'axon')} given one delay (their largest weight's)")
    return table


def _fanin_with_recurrent(layer: Layer, limit: int) -> tuple[Layer, int]:
    """:func:`_fanin` over the feed-forward and recurrent inputs of each neuron together (both
    count against a chip's fan-in): recurrent rows take pre indices n_in.. in a combined table."""
    if layer.recurrent is None:
        return _fanin(layer, limit)
    r = layer.recurrent
    both = Layer(layer.n_in + r.n, layer.n_out, np.concatenate([layer.pre, r.pre + layer.n_in]),
                 np.concatenate([layer.post, r.post]), np.concatenate([layer.weight, r.weight]),
                 np.concatenate([layer.delay, r.delay]), decay=0.0, threshold=np.inf, bias=0.0)
    kept, n = _fanin(both, limit)
    ff = kept.pre < layer.n_in
    return layer.copy(pre=kept.pre[ff], post=kept.post[ff], weight=kept.weight[ff], delay=kept.delay[ff],
                      recurrent=Recurrent(r.n, kept.pre[~ff] - layer.n_in, kept.post[~ff], kept.weight[~ff],
                                          kept.delay[~ff])), n


def _check_ranges(layer: Layer, k: int, t: Target, rep: PrepareReport, bias_exponent: int = 0) -> None:
    """Loihi-style integer bias / threshold mantissa ranges (clipped in place when reported)."""
    s = layer.weight_scale
    if t.bias_bits is not None and t.arithmetic == "loihi":
        lim = 2 ** (t.bias_bits - 1) - 1
        step = 2 ** bias_exponent
        b = bias_mantissa(layer.bias, s, bias_exponent)
        n = int((np.abs(b) > lim).sum())
        if n:
            rep.violations.append(Violation(k, "neurons whose integer bias is out of range", n,
                                            f"|bias| <= {lim} << {bias_exponent} ({t.bias_bits}-bit mantissa)"))
            rep.changes.append(f"layer {k}: {_count(n, 'bias', 'biases')} clipped to +-{lim * step}/scale")
            layer.bias = np.clip(b, -lim, lim) * step / s
    if t.threshold_bits is not None and layer.kind != "readout":
        lim = 2 ** t.threshold_bits - 1
        th = np.rint(layer.threshold * s) - 1
        n = int(((th > lim) | (th < 0)).sum())
        if n:
            rep.violations.append(Violation(k, "neurons whose threshold mantissa is out of range", n,
                                            f"0 <= vThMant <= {lim}"))
            rep.changes.append(f"layer {k}: {_count(n, 'threshold')} clipped into the mantissa range")
            layer.threshold = (np.clip(th, 0, lim) + 1) / s
