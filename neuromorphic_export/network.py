"""The canonical exported network: ``network.h5`` (numpy + h5py only).

Layout (format_version 1, 2 for a file with recurrent tables, 3 for a file with adLIF layers; see
docs/export.md, which is the stable description)::

    /                      attrs: format_version, dt_ms, input_size, n_layers (synapse layers:
                           hidden + readout), n_classes, extra_steps, delay_convention (text),
                           target, hop_latency_steps, threshold_rule ('>=' or '>'), arithmetic,
                           writer, source
    /layer/<k>/            attrs: kind ('hidden' | 'readout'), n_in, n_out, [weight_scale]
    /layer/<k>/synapses/   pre int32, post int32, weight float64 (int32 when quantised), delay int32
    /layer/<k>/recurrent/  (version 2, hidden layers that have one) pre, post (int32, neurons of this
                           layer), weight (as the synapses'), delay int32 >= 1
    /layer/<k>/neurons/    decay, threshold (+inf for the readout), bias: float64 (n_out,);
                           attr model ('lif' | 'adlif', version 3; absent: 'lif'); an adLIF layer also
                           decay_u, decay_w, a, b float64 (n_out,) and attr q (decay = decay_u)

One row per non-zero synapse; a spike of ``pre`` at step t is added to the input of ``post`` at
step t + delay (delay 0: the same step, the model's convention). A recurrent spike of ``pre`` at
step t reaches ``post`` of the same layer at step t + delay on every runtime (delay >= 1; the
hop latency is not added again: it comes back to the layer it left). The membrane of each neuron
is u[t] = decay * u[t-1] + input[t] + bias, it spikes when u >= threshold and is then reset to 0.
An adLIF layer's neurons (:mod:`.adaptive`) compute instead, with I[t] = input[t] + bias::

    v[t] = decay_u * u[t-1] + (1 - decay_u) * (I[t] - w[t-1]);  spike where v >= threshold;
    u[t] = 0 there, else v[t];  w[t] = decay_w * w[t-1] + ((1 - decay_w) * q) * (a * u[t] + b * s[t])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._io import atomic_path
from ._version import __version__
from .checkpoint_reader import Checkpoint, HiddenLayer
from .chip import ADLIF_KEYS, ADLIF_Q, NEURON_MODELS, adlif_limits, fold_batchnorm, round_delays
from .conv import conv_tables, pooled_input
from .errors import ExportError

__all__ = ["Layer", "Network", "Recurrent", "Adaptation", "network_from_checkpoint", "require_lif", "write_network",
           "read_network", "round_delays", "FORMAT_VERSION", "FORMAT_VERSION_FEEDFORWARD", "FORMAT_VERSION_RECURRENT",
           "DELAY_CONVENTION", "THRESHOLD_RULES", "ARITHMETICS", "MAX_EXTRA_STEPS", "INT32_MAX"]

FORMAT_VERSION = 3  # the newest this module writes and reads: 2 = recurrent tables, 3 = adLIF neurons
FORMAT_VERSION_RECURRENT = 2  # written for LIF networks with recurrent tables
FORMAT_VERSION_FEEDFORWARD = 1  # written for LIF networks without recurrent tables (readable by older readers)
THRESHOLD_RULES = (">=", ">")  # spike when u >= threshold (the model) or u > threshold (Loihi, NIR)
ARITHMETICS = ("float64", "loihi")
# Bounds a reader accepts before it allocates anything from a file's attributes (the arrays are
# checked against them too): far beyond any trained model, far below a terabyte.
MAX_NEURONS = 10_000_000  # per layer, and input channels
MAX_LAYERS = 1_000
MAX_EXTRA_STEPS = 1_000_000  # zero steps appended to every input
MAX_HOP_LATENCY = 1_000  # steps per hop
INT32_MAX = 2 ** 31 - 1  # integer weights are stored as int32
DELAY_CONVENTION = (
    "steps; a spike of pre at step t is added to the input of post at step t + delay "
    "(delay 0 = the same step, as in the PyTorch model). A runtime with hop_latency_steps = h "
    "delivers it at t + delay + h: the effective hardware delay is D = delay + h. Recurrent tables "
    "(layer/<k>/recurrent) hold the effective delay D >= 1 itself: a spike of pre at step t reaches post of "
    "the same layer at step t + delay on every runtime."
)


def _dense_table(pre: np.ndarray, post: np.ndarray, delay: np.ndarray, weight: np.ndarray, n_out: int,
                 n_in: int) -> tuple[np.ndarray, np.ndarray]:
    """(W (n_out, n_in, max_delay + 1) weights per delay, the distinct delays) of synapse rows."""
    dmax = int(delay.max()) if len(delay) else 0
    w = np.zeros((n_out, n_in, dmax + 1))
    np.add.at(w, (post, pre, delay), weight)
    return w, np.unique(delay)


@dataclass
class Recurrent:
    """The recurrent synapses of one hidden layer: its ``n`` neurons onto the same ``n`` neurons.

    pre, post, delay: int32 (S,); weight: float64 (S,) in the units of the layer's feed-forward
    weights (real, or integers when the layer's ``weight_scale`` is set: one scale for both, since
    both currents add in the same neurons). delay >= 1 step is the effective delay on every runtime:
    a spike of ``pre`` at step t is added to the input of ``post`` at step t + delay.
    """

    n: int
    pre: np.ndarray
    post: np.ndarray
    weight: np.ndarray
    delay: np.ndarray

    def __post_init__(self) -> None:
        self.pre = np.asarray(self.pre, dtype=np.int32)
        self.post = np.asarray(self.post, dtype=np.int32)
        self.delay = np.asarray(self.delay, dtype=np.int32)
        self.weight = np.asarray(self.weight, dtype=np.float64)
        s = self.pre.shape
        if not (self.post.shape == s == self.weight.shape == self.delay.shape and len(s) == 1):
            raise ExportError(f"recurrent synapse arrays must be 1-D of one length; got pre {self.pre.shape}, post "
                              f"{self.post.shape}, weight {self.weight.shape}, delay {self.delay.shape}")
        if s[0] and (min(self.pre.min(), self.post.min()) < 0 or max(self.pre.max(), self.post.max()) >= self.n):
            raise ExportError(f"recurrent synapse indices out of range for a layer of {self.n} neurons")
        if s[0] and self.delay.min() < 1:
            raise ExportError(f"recurrent synapse with delay {int(self.delay.min())} steps; every recurrent delay "
                              "must be >= 1 step (a spike cannot come back within the step that made it)")

    @property
    def n_synapses(self) -> int:
        return int(self.pre.shape[0])

    def copy(self, **changes: Any) -> "Recurrent":
        base = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}
        base.update(changes)
        return Recurrent(**base)


@dataclass
class Adaptation:
    """The adLIF parameters of a layer's ``n`` neurons (the model's, clamped into their ranges):
    decay_u, decay_w in [0, 1), a, b float64 (n,); q the adaptation's fixed scale."""

    n: int
    decay_u: np.ndarray
    decay_w: np.ndarray
    a: np.ndarray
    b: np.ndarray
    q: float = ADLIF_Q

    def __post_init__(self) -> None:
        for name in ADLIF_KEYS:
            v = np.asarray(getattr(self, name), dtype=np.float64)
            if v.shape not in ((), (self.n,)):
                raise ExportError(f"adLIF {name} must hold one value per neuron ({self.n},); got shape {v.shape}")
            setattr(self, name, np.broadcast_to(v, (self.n,)).copy())
        self.q = float(self.q)
        values = np.stack([getattr(self, name) for name in ADLIF_KEYS] + [np.full(self.n, self.q)])
        if not np.all(np.isfinite(values)):
            raise ExportError("adLIF parameters hold NaN or infinity")
        if not np.all((self.decay_u >= 0) & (self.decay_u < 1) & (self.decay_w >= 0) & (self.decay_w < 1)):
            raise ExportError("adLIF decays must lie in [0, 1)")

    def copy(self) -> "Adaptation":
        return Adaptation(self.n, *(getattr(self, name).copy() for name in ADLIF_KEYS), q=self.q)


def require_lif(net: "Network", what: str) -> None:
    """Refuse a network with adLIF layers in a format (``what``) whose neuron model has no adaptation."""
    layers = [k for k, l in enumerate(net.layers) if l.adaptation is not None]
    if layers:
        raise ExportError(f"{what} cannot hold adLIF neurons (layers {', '.join(map(str, layers))}, model.neuron = "
                          "adlif): its neuron model has no adaptation; network.h5 of the generic target carries them")


@dataclass
class Layer:
    """One synapse layer and the neurons it feeds.

    pre, post, delay: int32 (S,); weight: float64 (S,) real weights, or integers when
    ``weight_scale`` is set (real weight = weight / weight_scale).
    decay, threshold, bias: float64 (n_out,). recurrent: the hidden layer's synapses onto itself
    (weights in the same units, same ``weight_scale``), or None. adaptation: the adLIF parameters
    of a hidden layer of adaptive neurons (``decay`` is then their decay_u), or None (LIF).
    """

    n_in: int
    n_out: int
    pre: np.ndarray
    post: np.ndarray
    weight: np.ndarray
    delay: np.ndarray
    decay: np.ndarray
    threshold: np.ndarray
    bias: np.ndarray
    kind: str = "hidden"
    weight_scale: float | None = None
    recurrent: Recurrent | None = None
    adaptation: Adaptation | None = None

    def __post_init__(self) -> None:
        self.pre = np.asarray(self.pre, dtype=np.int32)
        self.post = np.asarray(self.post, dtype=np.int32)
        self.delay = np.asarray(self.delay, dtype=np.int32)
        self.weight = np.asarray(self.weight, dtype=np.float64)
        for name in ("decay", "threshold", "bias"):
            v = np.asarray(getattr(self, name), dtype=np.float64)
            setattr(self, name, np.broadcast_to(v, (self.n_out,)).copy())
        s = self.pre.shape
        if not (self.post.shape == s == self.weight.shape == self.delay.shape and len(s) == 1):
            raise ExportError(f"synapse arrays must be 1-D of one length; got pre {self.pre.shape}, post "
                              f"{self.post.shape}, weight {self.weight.shape}, delay {self.delay.shape}")
        if s[0] and (self.pre.min() < 0 or self.pre.max() >= self.n_in or self.post.min() < 0
                     or self.post.max() >= self.n_out):
            raise ExportError(f"synapse indices out of range for a {self.n_in} -> {self.n_out} layer")
        if s[0] and self.delay.min() < 0:
            raise ExportError("negative synaptic delay")
        if self.recurrent is not None and self.recurrent.n != self.n_out:
            raise ExportError(f"a recurrent table of {self.recurrent.n} neurons on a layer of {self.n_out}")
        if self.adaptation is not None and self.adaptation.n != self.n_out:
            raise ExportError(f"adLIF parameters of {self.adaptation.n} neurons on a layer of {self.n_out}")

    @property
    def neuron(self) -> str:
        """The layer's neuron model: "lif" or "adlif"."""
        return "lif" if self.adaptation is None else "adlif"

    @property
    def real_weight(self) -> np.ndarray:
        """Weights in model units (float64)."""
        return self.weight if self.weight_scale is None else self.weight / self.weight_scale

    @property
    def n_synapses(self) -> int:
        return int(self.pre.shape[0])

    @property
    def recurrent_real_weight(self) -> np.ndarray:
        """Recurrent weights in model units (float64); empty without a recurrent table."""
        if self.recurrent is None:
            return np.zeros(0)
        w = self.recurrent.weight
        return w if self.weight_scale is None else w / self.weight_scale

    @property
    def n_recurrent(self) -> int:
        """Recurrent synapses of this layer (0 without a recurrent table)."""
        return 0 if self.recurrent is None else self.recurrent.n_synapses

    def dense(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (n_out, n_in, max_delay + 1) real weights per delay, and the list of distinct delays)."""
        return _dense_table(self.pre, self.post, self.delay, self.real_weight, self.n_out, self.n_in)

    def dense_recurrent(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (n_out, n_out, max_delay + 1) real recurrent weights per delay (index 0 unused: every
        recurrent delay is >= 1), and the distinct recurrent delays); empty without a table."""
        r = self.recurrent
        if r is None:
            return np.zeros((self.n_out, self.n_out, 1)), np.zeros(0, dtype=np.int32)
        return _dense_table(r.pre, r.post, r.delay, self.recurrent_real_weight, self.n_out, self.n_out)

    def copy(self, **changes: Any) -> "Layer":
        base = {k: (v.copy() if isinstance(v, (np.ndarray, Recurrent, Adaptation)) else v)
                for k, v in self.__dict__.items()}
        base.update(changes)
        return Layer(**base)


@dataclass
class Network:
    """A delay SNN: ``layers[:-1]`` hidden spiking layers (each may have a recurrent table),
    ``layers[-1]`` the readout.

    ``attrs`` carries the target's conventions (``target``, ``hop_latency_steps``,
    ``threshold_rule``, ``arithmetic``) and provenance; they are written as root attributes.
    """

    layers: list[Layer]
    dt_ms: float
    input_size: int
    extra_steps: int
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_classes(self) -> int:
        return self.layers[-1].n_out

    @property
    def target(self) -> str:
        return str(self.attrs.get("target", "generic"))

    @property
    def is_recurrent(self) -> bool:
        """Whether any layer has a recurrent table (then network.h5 is written as format_version 2)."""
        return any(l.recurrent is not None for l in self.layers)

    @property
    def is_adaptive(self) -> bool:
        """Whether any layer has adLIF neurons (then network.h5 is written as format_version 3)."""
        return any(l.adaptation is not None for l in self.layers)

    @property
    def format_version(self) -> int:
        """The oldest network.h5 format_version that holds this network (older readers refuse newer files)."""
        return FORMAT_VERSION if self.is_adaptive else (
            FORMAT_VERSION_RECURRENT if self.is_recurrent else FORMAT_VERSION_FEEDFORWARD)

    def copy(self, layers: list[Layer] | None = None, **attrs: Any) -> "Network":
        return replace(self, layers=[l.copy() for l in (layers or self.layers)],
                       attrs={**self.attrs, **attrs})


def _merge(layer: HiddenLayer, kernel_size: int, scale: np.ndarray, offset: int = 0) -> tuple[np.ndarray, ...]:
    """Rows (pre, post, weight, delay) of one layer: masked, delays rounded as in eval (plus ``offset``
    steps: 1 for recurrent synapses, which store d - 1), elements of a connection with the same
    rounded delay summed (in element order, as the model's scatter_add), ``scale`` (the BatchNorm
    scale, per post neuron) folded in, exact zeros dropped."""
    w = layer.weight * layer.mask[:, :, None]  # (out, in, m)
    d = round_delays(layer.delay, kernel_size)  # (out, in, m)
    n_out, n_in, m = w.shape
    acc = np.zeros((n_out, n_in, int(d.max()) + 1 if d.size else 1))  # the taps in use, not kernel_size
    oi, ii = np.meshgrid(np.arange(n_out), np.arange(n_in), indexing="ij")
    for e in range(m):  # sequential adds keep the model's float order
        acc[oi, ii, d[:, :, e]] += w[:, :, e]
    acc *= scale[:, None, None]
    post, pre, delay = np.nonzero(acc)
    return pre, post, acc[post, pre, delay], delay + offset


def _recurrent(h: HiddenLayer, kernel_size: int) -> Recurrent | None:
    """The recurrent table of a checkpoint layer: delays d = 1 + round-half-even(clip(stored d - 1,
    0, kernel_size - 1)), weights NOT scaled by BatchNorm (the model adds the recurrent current
    after the normalisation)."""
    r = h.recurrent
    if r is None:
        return None
    pre, post, w, d = _merge(r, kernel_size, np.ones(r.weight.shape[0]), offset=1)
    return Recurrent(r.weight.shape[0], pre, post, w, d)


def _adaptation(h: HiddenLayer) -> Adaptation | None:
    """A checkpoint layer's adLIF parameters clipped into their ranges, as the model clamps them in
    every forward pass (clip is exact: stored values inside the range are kept bit for bit)."""
    if h.adaptation is None:
        return None
    limits = adlif_limits()
    n = h.weight.shape[0]
    return Adaptation(n, *(np.clip(h.adaptation[key], *limits[key]) for key in ADLIF_KEYS), q=ADLIF_Q)


def _conv_front(ckpt: Checkpoint, layers: list[Layer]) -> list[Layer]:
    """The conv layers of a checkpoint (model.conv) expanded into per-synapse tables and put before
    the dense ``layers``, whose first layer is re-indexed from the conv output's pooled units onto the
    last conv layer's neurons (:func:`neuromorphic_export.conv.conv_tables`); ``layers`` as they are
    without conv layers. ExportError for max pooling."""
    if not ckpt.conv:
        return layers
    first = layers[0]
    try:
        tables = conv_tables(list(ckpt.conv), ckpt.kernel_size)
        pre, post, w, d, n_in = pooled_input(first.pre, first.post, first.weight, first.delay, ckpt.conv[-1],
                                             "the first dense layer")
    except ValueError as e:
        raise ExportError(f"{ckpt.path}: {e}") from None
    conv = [Layer(n_i, n_o, p, q, wt, dl, decay=1.0 - 1.0 / ckpt.tau_steps, threshold=ckpt.threshold, bias=b)
            for n_i, n_o, p, q, wt, dl, b in tables]
    return conv + [first.copy(n_in=n_in, pre=pre, post=post, weight=w, delay=d)] + layers[1:]


def network_from_checkpoint(ckpt: Checkpoint) -> Network:
    """Fold BatchNorm, round delays and merge elements: the float64 network the model evaluates."""
    layers = []
    for k, h in enumerate(ckpt.hidden):
        n = h.norm
        scale, bias = fold_batchnorm(n["weight"], n["bias"], n["running_mean"], n["running_var"])
        pre, post, w, d = _merge(h, ckpt.kernel_size, scale)
        adaptation = _adaptation(h)
        layers.append(Layer(h.weight.shape[1], h.weight.shape[0], pre, post, w, d,
                            decay=1.0 - 1.0 / ckpt.tau_steps if adaptation is None else adaptation.decay_u,
                            threshold=ckpt.threshold, bias=bias,
                            recurrent=_recurrent(h, ckpt.recurrent_kernel_size), adaptation=adaptation))
    r = ckpt.readout
    pre, post, w, d = _merge(r, ckpt.kernel_size, np.ones(r.weight.shape[0]))
    layers.append(Layer(r.weight.shape[1], r.weight.shape[0], pre, post, w, d,
                        decay=1.0 - 1.0 / ckpt.readout_tau_steps, threshold=np.inf, bias=0.0,
                        kind="readout"))
    layers = _conv_front(ckpt, layers)
    attrs = {"target": "generic", "hop_latency_steps": 0, "threshold_rule": ">=", "arithmetic": "float64",
             "source": str(ckpt.path), "kernel_size": ckpt.kernel_size, "dataset": ckpt.dataset}
    if ckpt.conv:  # what the first layers were (their tables are ordinary synapse rows)
        attrs["conv"] = ", ".join(c.spec.text() for c in ckpt.conv)
        attrs["input_frame"] = "x".join(str(v) for v in ckpt.conv[0].shapes[0])
    if ckpt.recurrent_kernel_size:
        attrs["recurrent_kernel_size"] = ckpt.recurrent_kernel_size
    return Network(layers, dt_ms=ckpt.dt_ms, input_size=ckpt.input_size, extra_steps=ckpt.extra_steps,
                   attrs=attrs)


def write_network(net: Network, path: str | os.PathLike) -> Path:
    """Write ``net`` to ``path`` (usually ``DIR/network.h5``); returns the path."""
    import h5py

    path = Path(path)
    for k, layer in enumerate(net.layers):
        both = np.concatenate([layer.weight, layer.recurrent.weight if layer.recurrent is not None else []])
        if layer.weight_scale is not None and both.size and np.abs(both).max() > INT32_MAX:
            raise ExportError(f"layer {k}: integer weights up to {np.abs(both).max():.0f} do not fit "
                              "network.h5's int32 weights (use at most 32 weight bits)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:  # written beside the target, then renamed: the old file or none after a crash
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "snn-delays-network"
            f.attrs["format_version"] = net.format_version
            f.attrs["dt_ms"] = float(net.dt_ms)
            f.attrs["input_size"] = int(net.input_size)
            f.attrs["n_layers"] = net.n_layers
            f.attrs["n_classes"] = net.n_classes
            f.attrs["extra_steps"] = int(net.extra_steps)
            f.attrs["delay_convention"] = DELAY_CONVENTION
            f.attrs["prediction"] = "argmax over classes of sum over t of softmax(readout membrane[t])"
            f.attrs["writer"] = f"neuromorphic_export {__version__}"
            for k, v in net.attrs.items():
                f.attrs[k] = v
            for k, layer in enumerate(net.layers):
                g = f.create_group(f"layer/{k}")
                g.attrs["kind"] = layer.kind
                g.attrs["n_in"] = layer.n_in
                g.attrs["n_out"] = layer.n_out
                if layer.weight_scale is not None:
                    g.attrs["weight_scale"] = float(layer.weight_scale)
                s = g.create_group("synapses")
                s.create_dataset("pre", data=layer.pre, dtype=np.int32)
                s.create_dataset("post", data=layer.post, dtype=np.int32)
                wdt = np.int32 if layer.weight_scale is not None else np.float64
                s.create_dataset("weight", data=layer.weight.astype(wdt), dtype=wdt)
                s.create_dataset("delay", data=layer.delay, dtype=np.int32)
                if layer.recurrent is not None:
                    r = g.create_group("recurrent")
                    r.create_dataset("pre", data=layer.recurrent.pre, dtype=np.int32)
                    r.create_dataset("post", data=layer.recurrent.post, dtype=np.int32)
                    r.create_dataset("weight", data=layer.recurrent.weight.astype(wdt), dtype=wdt)
                    r.create_dataset("delay", data=layer.recurrent.delay, dtype=np.int32)
                nrn = g.create_group("neurons")
                for name in ("decay", "threshold", "bias"):
                    nrn.create_dataset(name, data=getattr(layer, name), dtype=np.float64)
                if layer.adaptation is not None:
                    nrn.attrs["model"] = "adlif"
                    nrn.attrs["q"] = layer.adaptation.q
                    for name in ADLIF_KEYS:
                        nrn.create_dataset(name, data=getattr(layer.adaptation, name), dtype=np.float64)
    return path


def _int_attr(attrs, name: str, where: str, low: int, high: int) -> int:
    """An integer attribute in [low, high], or ExportError naming it and its value."""
    if name not in attrs:
        raise ExportError(f"{where} has no attribute {name!r}")
    value = attrs[name]
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        number = float("nan")
    if not (number == number and number == int(number) and low <= number <= high):  # NaN fails
        raise ExportError(f"{where}: attribute {name} = {value!r} must be an integer in {low}..{high}")
    return int(number)


def _check_network(net: Network) -> None:
    """Sizes chained layer to layer, per-neuron arrays of n_out entries, known conventions."""
    sizes = [net.input_size] + [l.n_out for l in net.layers]
    for k, layer in enumerate(net.layers):
        if layer.n_in != sizes[k]:
            raise ExportError(f"layer {k} has n_in = {layer.n_in} but feeds on "
                              f"{'the input' if k == 0 else f'layer {k - 1}'} of {sizes[k]} neurons")
        kind = "readout" if k == net.n_layers - 1 else "hidden"
        if layer.kind != kind:
            raise ExportError(f"layer {k} has kind {layer.kind!r}; expected {kind!r}")
        if layer.recurrent is not None and kind == "readout":
            raise ExportError(f"layer {k} is the readout and has a recurrent table; only hidden layers can")
        if layer.adaptation is not None and kind == "readout":
            raise ExportError(f"layer {k} is the readout and has adLIF neurons; only hidden layers can")
        if layer.recurrent is not None and not np.all(np.isfinite(layer.recurrent.weight)):
            raise ExportError(f"layer {k} holds NaN/inf recurrent weights")
        if layer.weight_scale is not None and not (np.isfinite(layer.weight_scale) and layer.weight_scale > 0):
            raise ExportError(f"layer {k} has weight_scale {layer.weight_scale}; must be finite and > 0")
        if not (np.all(np.isfinite(layer.weight)) and np.all(np.isfinite(layer.bias))
                and np.all((layer.decay >= 0) & (layer.decay <= 1)) and not np.isnan(layer.threshold).any()):
            raise ExportError(f"layer {k} holds NaN/inf weights or biases, a decay outside [0, 1] or a NaN "
                              "threshold")
    rule, arithmetic = net.attrs.get("threshold_rule", ">="), net.attrs.get("arithmetic", "float64")
    if rule not in THRESHOLD_RULES:
        raise ExportError(f"threshold_rule {rule!r} is unknown; expected one of {', '.join(THRESHOLD_RULES)}")
    if arithmetic not in ARITHMETICS:
        raise ExportError(f"arithmetic {arithmetic!r} is unknown; expected one of {', '.join(ARITHMETICS)}")
    if arithmetic == "loihi" and any(l.weight_scale is None for l in net.layers):
        raise ExportError("arithmetic 'loihi' needs integer weights (weight_scale) in every layer")
    if not (np.isfinite(net.dt_ms) and net.dt_ms > 0):
        raise ExportError(f"dt_ms = {net.dt_ms} must be a positive number of milliseconds")


def _read_layer(g, k: int, where: str, version: int) -> Layer:
    """Layer k of an open network.h5, its sizes checked against the arrays actually stored."""
    s, nrn = g["synapses"], g["neurons"]
    recurrent = None
    if "recurrent" in g:
        if version < 2:
            raise ExportError(f"{where} layer {k} has a recurrent table but the file says format_version {version}; "
                              "recurrent tables need format_version 2 (a corrupt or edited file)")
        r = g["recurrent"]
        recurrent = {name: r[name][()] for name in ("pre", "post", "weight", "delay")}
    adaptation = None
    model = nrn.attrs.get("model", "lif")
    model = model.decode() if isinstance(model, bytes) else str(model)
    if model not in NEURON_MODELS:
        raise ExportError(f"{where} layer {k}: neuron model {model!r} is unknown; expected one of "
                          f"{', '.join(NEURON_MODELS)}")
    if model == "adlif":
        if version < 3:
            raise ExportError(f"{where} layer {k} has adLIF neurons but the file says format_version {version}; "
                              "adLIF layers need format_version 3 (a corrupt or edited file)")
        try:
            q = float(nrn.attrs["q"])
        except (KeyError, TypeError, ValueError):
            raise ExportError(f"{where} layer {k}: an adLIF layer needs a numeric attribute q") from None
        adaptation = {name: nrn[name][()] for name in ADLIF_KEYS}
        adaptation["q"] = q
    arrays = {name: s[name][()] for name in ("pre", "post", "weight", "delay")}
    arrays.update({name: nrn[name][()] for name in ("decay", "threshold", "bias")})
    n_neurons = {name: np.shape(arrays[name]) for name in ("decay", "threshold", "bias")}
    n_out = _int_attr(g.attrs, "n_out", f"{where} layer {k}", 1, MAX_NEURONS)
    if any(shape != (n_out,) for shape in n_neurons.values()):
        raise ExportError(f"{where} layer {k}: n_out = {n_out} but its neuron arrays have shapes "
                          + ", ".join(f"{name} {shape}" for name, shape in n_neurons.items()))
    n_in = _int_attr(g.attrs, "n_in", f"{where} layer {k}", 1, MAX_NEURONS)
    scale = g.attrs.get("weight_scale")
    try:
        scale = None if scale is None else float(scale)
    except (TypeError, ValueError):
        raise ExportError(f"{where} layer {k}: weight_scale {scale!r} is not a number") from None
    kind = g.attrs.get("kind", "hidden")
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    try:
        if recurrent is not None:
            recurrent = Recurrent(n_out, recurrent["pre"], recurrent["post"],
                                  np.asarray(recurrent["weight"], dtype=np.float64), recurrent["delay"])
        if adaptation is not None:
            shapes = {name: np.shape(adaptation[name]) for name in ADLIF_KEYS}
            if any(shape != (n_out,) for shape in shapes.values()):
                raise ExportError(f"n_out = {n_out} but its adLIF arrays have shapes "
                                  + ", ".join(f"{name} {shape}" for name, shape in shapes.items()))
            adaptation = Adaptation(n_out, *(adaptation[name] for name in ADLIF_KEYS), q=adaptation["q"])
        return Layer(n_in, n_out, arrays["pre"], arrays["post"], np.asarray(arrays["weight"], dtype=np.float64),
                     arrays["delay"], arrays["decay"], arrays["threshold"], arrays["bias"], kind=kind,
                     weight_scale=scale, recurrent=recurrent, adaptation=adaptation)
    except ExportError as e:
        raise ExportError(f"{where} layer {k}: {e}") from None


def read_network(path: str | os.PathLike) -> Network:
    """Read a ``network.h5`` (or the ``network.h5`` inside a folder).

    Every attribute and size is checked against the arrays actually stored before anything is
    allocated from it: a corrupt or tampered file raises :class:`ExportError` naming the field.
    """
    import h5py

    p = Path(path)
    if p.is_dir():
        p = p / "network.h5"
    if not p.exists():
        raise ExportError(f"{p} does not exist (run `snn-delays export` first)")
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise ExportError(f"{p} is not a readable HDF5 file: {e}") from None
    with f:
        if f.attrs.get("format") != "snn-delays-network" or f.attrs.get("format_version") is None:
            raise ExportError(f"{p} is not an snn-delays network.h5 (no format attribute)")
        version = _int_attr(f.attrs, "format_version", str(p), 1, 2 ** 31)
        if version > FORMAT_VERSION:
            raise ExportError(f"{p} has format_version {version}; this reader knows <= {FORMAT_VERSION}")
        try:
            n_layers = _int_attr(f.attrs, "n_layers", str(p), 1, MAX_LAYERS)
            stored = len(f["layer"]) if "layer" in f else 0
            if stored != n_layers:
                raise ExportError(f"{p}: attribute n_layers = {n_layers} but the file holds {stored} layer groups")
            layers = [_read_layer(f[f"layer/{k}"], k, str(p), version) for k in range(n_layers)]
            known = {"format", "format_version", "dt_ms", "input_size", "n_layers", "n_classes",
                     "extra_steps", "delay_convention", "prediction", "writer"}
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items() if k not in known}
            attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()}
            attrs["hop_latency_steps"] = _int_attr(f.attrs, "hop_latency_steps", str(p), 0, MAX_HOP_LATENCY) \
                if "hop_latency_steps" in f.attrs else 0
            input_size = _int_attr(f.attrs, "input_size", str(p), 1, MAX_NEURONS)
            n_classes = _int_attr(f.attrs, "n_classes", str(p), 1, MAX_NEURONS)
            if n_classes != layers[-1].n_out:
                raise ExportError(f"{p}: attribute n_classes = {n_classes} but the readout has "
                                  f"{layers[-1].n_out} neurons")
            net = Network(layers, dt_ms=float(f.attrs["dt_ms"]), input_size=input_size,
                          extra_steps=_int_attr(f.attrs, "extra_steps", str(p), 0, MAX_EXTRA_STEPS), attrs=attrs)
        except KeyError as e:
            raise ExportError(f"{p} is incomplete: missing {e}") from None
        except (TypeError, ValueError, AttributeError) as e:  # a dataset of the wrong kind or type
            raise ExportError(f"{p} is corrupt: {e}") from None
    try:
        _check_network(net)
    except ExportError as e:
        raise ExportError(f"{p}: {e}") from None
    return net
