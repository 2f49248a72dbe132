"""Event-driven numpy reference simulator for ``network.h5``.

Shapes are time-major: input x (T, B, C_in) spike counts (or graded values); outputs
(T', B, n) with T' = T + extra_steps + hop_latency_steps * n_layers.

Per layer, every non-zero input value (an event: step t, sample b, neuron j, value v) is
fanned out along j's synapses, adding v * w to the input of ``post`` at step
t + delay + hop_latency; so the cost follows the number of spikes times their fan-out (an input
denser than ``DENSE_FRACTION``, such as real-valued audio features, takes one matrix product per
distinct delay instead: same sums, another order). The neurons then integrate (one vectorised
update per step)::

    u[t] = decay * u[t-1] + input[t] + bias;  spike where u >= threshold (or u > threshold); u = 0 there

A layer of adLIF neurons (``layer.adaptation``, network.h5 format_version 3) is integrated by
:func:`neuromorphic_export.adaptive.adlif_step` instead (float64 only: the Loihi arithmetic has no
adaptation and refuses it), in the model convention and the generic target's.

A hidden layer with a recurrent table is integrated step by step: the spikes of step t are fanned
out along the recurrent synapses into the layer's own input at step t + delay (delay >= 1, the
same on every runtime: the hop latency is not added to a spike that comes back to its layer), so
input[t] = feed-forward current[t] + sum_j w_ij * s_j[t - d_ij].

A :class:`Convention` says how a runtime differs from the model:

* ``Convention.model()``: hop latency 0, ``>=``, float64 - reproduces the PyTorch model's
  rounded-delay evaluation spike for spike.
* hardware targets: one step of latency per hop, ``>`` on Loihi and NIR, and on Loihi the
  chip's fixed-point arithmetic (``arithmetic='loihi'``): integer weights (file weights are
  integers, ``weight_scale`` given), u = a_in << 6, v = signmag((v * (4096 - vDecay)) >> 12) + u +
  (bias << 6), spike when v > vThMant << 6, reset to 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .adaptive import adlif_step
from .chip import (LOIHI_ACT_SHIFT, LOIHI_DECAY_UNITY, LOIHI_MAX_UV, crossed, loihi_threshold_mantissa,  # noqa: F401
                   loihi_update, loihi_v_decay, predict_from_readout)
from .errors import ExportError
from .network import ARITHMETICS, THRESHOLD_RULES, Layer, Network

__all__ = ["Convention", "SimResult", "simulate", "predict_from_readout", "loihi_parameters",
           "simulation_bytes", "MEMORY_LIMIT_BYTES"]

EVENTS_PER_CHUNK = 4_000_000  # synapse activations scattered at once (bounds memory)
DENSE_FRACTION = 0.3  # inputs denser than this (real-valued features) take one matmul per delay
MEMORY_LIMIT_BYTES = 16 * 2 ** 30  # a simulation that would hold more is refused before it starts


@dataclass(frozen=True)
class Convention:
    """How a runtime executes network.h5: per-hop latency (steps), threshold rule, arithmetic."""

    hop_latency_steps: int = 0
    threshold_rule: str = ">="
    arithmetic: str = "float64"  # or "loihi" (integer fixed point)

    def __post_init__(self) -> None:
        if self.threshold_rule not in THRESHOLD_RULES:
            raise ValueError(f"threshold_rule must be '>=' or '>'; got {self.threshold_rule!r}")
        if self.arithmetic not in ARITHMETICS:
            raise ValueError(f"arithmetic must be 'float64' or 'loihi'; got {self.arithmetic!r}")
        if self.hop_latency_steps < 0:
            raise ValueError("hop_latency_steps must be >= 0")

    @classmethod
    def model(cls) -> "Convention":
        return cls(0, ">=", "float64")

    @classmethod
    def of(cls, net: Network) -> "Convention":
        """The convention stored in the file's attributes (the target's)."""
        a = net.attrs
        return cls(int(a.get("hop_latency_steps", 0)), str(a.get("threshold_rule", ">=")),
                   str(a.get("arithmetic", "float64")))


@dataclass
class SimResult:
    """readout (T', B, n_classes) float64 membrane in model units; spikes: per hidden layer
    (T', B, H) uint8 (empty if not recorded); predictions (B,) int64."""

    readout: np.ndarray
    spikes: list[np.ndarray]
    predictions: np.ndarray


class _FanOut:
    """Synapse rows (pre, post, delay, weight) sorted by pre-synaptic neuron (CSR), for event fan-out."""

    def __init__(self, pre: np.ndarray, post: np.ndarray, delay: np.ndarray, weight: np.ndarray, n_in: int,
                 n_out: int):
        self.n_out = n_out
        self._per_delay: list[tuple[int, np.ndarray]] | None = None
        order = np.argsort(pre, kind="stable")
        self.post = post[order].astype(np.int64)
        self.delay = delay[order].astype(np.int64)
        self.weight = weight[order]
        self.ptr = np.zeros(n_in + 1, dtype=np.int64)
        np.cumsum(np.bincount(pre, minlength=n_in), out=self.ptr[1:])

    @classmethod
    def feedforward(cls, layer: Layer, integer: bool) -> "_FanOut":
        """The layer's feed-forward synapses, real weights (or the file's integers)."""
        w = layer.weight if integer else layer.real_weight
        return cls(layer.pre, layer.post, layer.delay, w, layer.n_in, layer.n_out)

    @classmethod
    def recurrent(cls, layer: Layer, integer: bool) -> "_FanOut | None":
        """The layer's recurrent synapses (n_out -> n_out), or None without a recurrent table."""
        r = layer.recurrent
        if r is None or r.n_synapses == 0:
            return None
        w = r.weight if integer else layer.recurrent_real_weight
        return cls(r.pre, r.post, r.delay, w, layer.n_out, layer.n_out)

    def add_step(self, spikes: np.ndarray, t: int, current: np.ndarray) -> None:
        """Fan the spikes of step t, (B, n_in) counts, out into ``current`` (T, B, n_out) at steps
        t + delay (dropped beyond T). Every delay >= 1, so only later steps change."""
        b, j = np.nonzero(spikes)
        if len(b) == 0:
            return
        counts = self.ptr[j + 1] - self.ptr[j]
        ev = np.repeat(np.arange(len(b)), counts)
        syn = np.repeat(self.ptr[j] - (np.cumsum(counts) - counts), counts) + np.arange(len(ev))
        tt = t + self.delay[syn]
        keep = tt < current.shape[0]
        np.add.at(current, (tt[keep], b[ev][keep], self.post[syn][keep]),
                  (spikes[b, j].astype(np.float64)[ev] * self.weight[syn])[keep])

    def dense_currents(self, s: np.ndarray, hop: int) -> np.ndarray:
        """The same currents by one matrix product per distinct delay, for dense input such as
        real-valued features: s (T, B, n_in) -> (T, B, n_out)."""
        n_steps, batch, n_in = s.shape
        if self._per_delay is None:  # (delay, W_d (n_in, n_out)) built once per layer
            pre = np.repeat(np.arange(n_in), np.diff(self.ptr))
            self._per_delay = []
            for d in np.unique(self.delay):
                sel = self.delay == d
                w = np.zeros((n_in, self.n_out))
                np.add.at(w, (pre[sel], self.post[sel]), self.weight[sel])
                self._per_delay.append((int(d), w))
        out = np.zeros((n_steps, batch, self.n_out))
        for d, w in self._per_delay:
            shift = d + hop
            if shift < n_steps:
                out[shift:] += s[: n_steps - shift] @ w
        return out

    def currents(self, events: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], n_steps: int,
                 batch: int, n_out: int, hop: int) -> np.ndarray:
        """events (t, b, j, value) -> input currents (n_steps, batch, n_out)."""
        t, b, j, v = events
        total = np.zeros(n_steps * batch * n_out)
        counts = self.ptr[j + 1] - self.ptr[j]
        if counts.sum() == 0:
            return total.reshape(n_steps, batch, n_out)
        ends = np.cumsum(counts)
        start = 0
        while start < len(t):  # chunks of events whose fan-out fits EVENTS_PER_CHUNK
            base = ends[start - 1] if start else 0
            stop = max(int(np.searchsorted(ends, base + EVENTS_PER_CHUNK, side="right")), start + 1)
            c = counts[start:stop]
            ev = np.repeat(np.arange(start, stop), c)  # event of each activation
            first = np.repeat(self.ptr[j[start:stop]] - (np.cumsum(c) - c), c)
            syn = first + np.arange(len(ev))
            tt = t[ev] + self.delay[syn] + hop
            keep = tt < n_steps
            flat = (tt[keep] * batch + b[ev][keep]) * n_out + self.post[syn][keep]
            total += np.bincount(flat, weights=(v[ev] * self.weight[syn])[keep], minlength=total.size)
            start = stop
        return total.reshape(n_steps, batch, n_out)


def _events(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    t, b, j = np.nonzero(s)
    return t, b, j, s[t, b, j].astype(np.float64)


def _lif_float(current: np.ndarray, layer: Layer, rule: str,
               recurrent: _FanOut | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Float64 neurons over a sequence: current (T, B, n) -> (spikes uint8, membrane before reset).
    With ``recurrent``, each step's spikes are added to ``current`` (changed in place) at later steps."""
    u = np.zeros(current.shape[1:])
    spikes = np.zeros(current.shape, dtype=np.uint8)
    memb = np.empty_like(current)
    spiking = bool(np.isfinite(layer.threshold).any())
    for t in range(current.shape[0]):
        u = layer.decay * u + current[t] + layer.bias
        memb[t] = u
        if spiking:
            s = crossed(u, layer.threshold, rule)
            spikes[t] = s
            u = np.where(s, 0.0, u)
            if recurrent is not None:
                recurrent.add_step(spikes[t], t, current)
    return spikes, memb


def _adlif_layer(current: np.ndarray, layer: Layer, rule: str,
                 recurrent: _FanOut | None = None) -> tuple[np.ndarray, np.ndarray]:
    """adLIF neurons in float64 (:mod:`.adaptive`, the model's step bit for bit): current (T, B, n)
    -> (spikes uint8, membrane before reset). With ``recurrent``, each step's spikes are added to
    ``current`` (changed in place) at later steps."""
    p = layer.adaptation
    u = np.zeros(current.shape[1:])
    w = np.zeros(current.shape[1:])
    spikes = np.zeros(current.shape, dtype=np.uint8)
    memb = np.empty_like(current)
    for t in range(current.shape[0]):
        memb[t], s, u, w = adlif_step(u, w, current[t] + layer.bias, p.decay_u, p.decay_w, p.a, p.b, p.q,
                                      layer.threshold, rule)
        spikes[t] = s
        if recurrent is not None:
            recurrent.add_step(spikes[t], t, current)
    return spikes, memb


def loihi_parameters(layer: Layer) -> dict[str, np.ndarray]:
    """Loihi CUBA constants of a quantised layer (hardware.md): vDecay, bias mantissa, vThMant."""
    if layer.weight_scale is None:
        raise ExportError("Loihi arithmetic needs integer weights: export with a loihi target")
    s = layer.weight_scale
    v_decay = loihi_v_decay(layer.decay)
    bias = np.rint(layer.bias * s).astype(np.int64)
    finite = np.isfinite(layer.threshold)
    vth = np.full(layer.n_out, np.iinfo(np.int64).max >> 8, dtype=np.int64)  # readout: never reached
    vth[finite] = loihi_threshold_mantissa(layer.threshold[finite], s)
    return {"vDecay": v_decay, "bias": bias, "vThMant": vth}


def _lif_loihi(current: np.ndarray, layer: Layer, recurrent: _FanOut | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Loihi fixed point (lava's bit-accurate LIF with iDecay = 4096): integer currents
    (T, B, n) -> (spikes uint8, membrane in model units). With ``recurrent`` (integer weights), each
    step's spikes are added to ``current`` (changed in place) at later steps."""
    p = loihi_parameters(layer)
    keep = LOIHI_DECAY_UNITY - p["vDecay"]
    bias = p["bias"] << LOIHI_ACT_SHIFT
    finite = np.isfinite(layer.threshold)
    vth = np.where(finite, p["vThMant"] << LOIHI_ACT_SHIFT, 0)
    v = np.zeros(current.shape[1:], dtype=np.int64)
    spikes = np.zeros(current.shape, dtype=np.uint8)
    memb = np.empty(current.shape)
    for t in range(current.shape[0]):
        a_in = np.rint(current[t]).astype(np.int64)  # integer weights x counts: integral
        v = loihi_update(v, a_in, bias, keep)
        memb[t] = v / (layer.weight_scale * (1 << LOIHI_ACT_SHIFT))
        s = finite & (v > vth)
        spikes[t] = s
        v = np.where(s, 0, v)
        if recurrent is not None:
            recurrent.add_step(spikes[t], t, current)
    return spikes, memb


def simulation_bytes(net: Network, n_steps: int, n_samples: int, record_spikes: bool, batch_size: int) -> int:
    """Bytes :func:`simulate` holds at its peak: per batch the padded input, currents and membranes
    (float64, n_steps x batch x widest layer), and for all samples the readout and recorded spikes."""
    widest = max([net.input_size] + [l.n_out for l in net.layers])
    per_batch = 4 * n_steps * min(batch_size, n_samples) * widest * 8
    kept = n_steps * n_samples * net.n_classes * 8
    if record_spikes:
        kept += n_steps * n_samples * sum(l.n_out for l in net.layers[:-1])
    return per_batch + kept


def simulate(net: Network, x: np.ndarray, convention: "Convention | str | None" = "target",
             record_spikes: bool = True, batch_size: int = 64,
             progress: Callable[[int], None] | None = None) -> SimResult:
    """Run ``net`` on input x (T, B, C_in) and return readout, hidden spikes and predictions.

    convention: ``"model"`` (the PyTorch evaluation), ``"target"`` (the conventions stored in the
    file; the default) or a :class:`Convention`. Samples are processed ``batch_size`` at a time;
    ``progress(n)`` is called after each batch with its number of samples. A run that would need
    more than ``MEMORY_LIMIT_BYTES`` raises :class:`ExportError` before allocating.
    """
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[2] != net.input_size:
        raise ValueError(f"simulate: expected input (T, B, {net.input_size}), got {tuple(x.shape)}")
    if convention is None or convention == "target":
        conv = Convention.of(net)
    elif convention == "model":
        conv = Convention.model()
    elif isinstance(convention, Convention):
        conv = convention
    else:
        raise ValueError(f"convention must be 'model', 'target' or a Convention; got {convention!r}")
    if conv.arithmetic == "loihi" and net.is_adaptive:
        raise ExportError("Loihi arithmetic has no adaptive neurons: this network's adLIF layers run in float64 only "
                          "(convention 'model', or the generic target's)")
    if conv.arithmetic == "loihi" and any(l.weight_scale is None for l in net.layers):
        raise ExportError("Loihi arithmetic needs a quantised network (export with --target loihi1/loihi2)")
    hop = conv.hop_latency_steps
    n_steps = x.shape[0] + net.extra_steps + hop * net.n_layers
    need = simulation_bytes(net, n_steps, x.shape[1], record_spikes, batch_size)
    if need > MEMORY_LIMIT_BYTES:
        raise ExportError(f"simulating {x.shape[1]} samples of {n_steps} steps (input {x.shape[0]} + extra_steps "
                          f"{net.extra_steps} + latency) needs about {need / 2 ** 30:.0f} GiB (limit "
                          f"{MEMORY_LIMIT_BYTES / 2 ** 30:.0f} GiB): check extra_steps and the layer sizes, or "
                          "use fewer samples")
    integer = conv.arithmetic == "loihi"
    fan = [_FanOut.feedforward(l, integer) for l in net.layers]
    rec = [_FanOut.recurrent(l, integer) for l in net.layers]
    readouts, preds = [], []
    spikes: list[list[np.ndarray]] = [[] for _ in net.layers[:-1]]
    for b0 in range(0, x.shape[1], batch_size):
        xb = x[:, b0:b0 + batch_size]
        batch = xb.shape[1]
        s = np.zeros((n_steps, batch, net.input_size), dtype=xb.dtype)
        s[: xb.shape[0]] = xb  # the input padded with zero steps at the end
        for k, (layer, f, r) in enumerate(zip(net.layers, fan, rec)):
            if np.count_nonzero(s) > DENSE_FRACTION * s.size:  # e.g. real-valued input features
                current = f.dense_currents(s.astype(np.float64), hop)
            else:
                current = f.currents(_events(s), n_steps, batch, layer.n_out, hop)
            if layer.adaptation is not None:
                s, memb = _adlif_layer(current, layer, conv.threshold_rule, r)
            elif integer:
                s, memb = _lif_loihi(current, layer, r)
            else:
                s, memb = _lif_float(current, layer, conv.threshold_rule, r)
            if layer.kind != "readout" and record_spikes:
                spikes[k].append(s)
        readouts.append(memb)
        preds.append(predict_from_readout(memb))
        if progress is not None:
            progress(batch)
    return SimResult(np.concatenate(readouts, axis=1),
                     [np.concatenate(v, axis=1) for v in spikes] if record_spikes else [],
                     np.concatenate(preds))
