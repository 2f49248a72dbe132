"""The canonical exported network: ``network.h5`` (numpy + h5py only).

Layout (format_version 1; see docs/export.md, which is the stable description)::

    /                      attrs: format_version, dt_ms, input_size, n_layers (synapse layers:
                           hidden + readout), n_classes, extra_steps, delay_convention (text),
                           target, hop_latency_steps, threshold_rule ('>=' or '>'), arithmetic,
                           writer, source
    /layer/<k>/            attrs: kind ('hidden' | 'readout'), n_in, n_out, [weight_scale]
    /layer/<k>/synapses/   pre int32, post int32, weight float64 (int32 when quantised), delay int32
    /layer/<k>/neurons/    decay, threshold (+inf for the readout), bias: float64 (n_out,)

One row per non-zero synapse; a spike of ``pre`` at step t is added to the input of ``post`` at
step t + delay (delay 0: the same step, the model's convention). The membrane of each neuron is
u[t] = decay * u[t-1] + input[t] + bias, it spikes when u >= threshold and is then reset to 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import BN_EPS, Checkpoint, HiddenLayer
from .errors import ExportError

__all__ = ["Layer", "Network", "network_from_checkpoint", "write_network", "read_network",
           "round_delays", "FORMAT_VERSION", "DELAY_CONVENTION"]

FORMAT_VERSION = 1
DELAY_CONVENTION = (
    "steps; a spike of pre at step t is added to the input of post at step t + delay "
    "(delay 0 = the same step, as in the PyTorch model). A runtime with hop_latency_steps = h "
    "delivers it at t + delay + h: the effective hardware delay is D = delay + h."
)


def round_delays(delay: np.ndarray, kernel_size: int) -> np.ndarray:
    """The model's evaluation rounding: clamp to [0, Td - 1], round half to even (== torch.round)."""
    return np.rint(np.clip(delay, 0, kernel_size - 1)).astype(np.int32)


@dataclass
class Layer:
    """One synapse layer and the neurons it feeds.

    pre, post, delay: int32 (S,); weight: float64 (S,) real weights, or integers when
    ``weight_scale`` is set (real weight = weight / weight_scale).
    decay, threshold, bias: float64 (n_out,).
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

    @property
    def real_weight(self) -> np.ndarray:
        """Weights in model units (float64)."""
        return self.weight if self.weight_scale is None else self.weight / self.weight_scale

    @property
    def n_synapses(self) -> int:
        return int(self.pre.shape[0])

    def dense(self) -> tuple[np.ndarray, np.ndarray]:
        """(W (n_out, n_in, max_delay + 1) real weights per delay, and the list of distinct delays)."""
        dmax = int(self.delay.max()) if self.n_synapses else 0
        w = np.zeros((self.n_out, self.n_in, dmax + 1))
        np.add.at(w, (self.post, self.pre, self.delay), self.real_weight)
        return w, np.unique(self.delay)

    def copy(self, **changes: Any) -> "Layer":
        base = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}
        base.update(changes)
        return Layer(**base)


@dataclass
class Network:
    """A feed-forward delay SNN: ``layers[:-1]`` hidden spiking layers, ``layers[-1]`` the readout.

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

    def copy(self, layers: list[Layer] | None = None, **attrs: Any) -> "Network":
        return replace(self, layers=[l.copy() for l in (layers or self.layers)],
                       attrs={**self.attrs, **attrs})


def _merge(layer: HiddenLayer, kernel_size: int, scale: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows (pre, post, weight, delay) of one layer: masked, delays rounded as in eval, elements of a
    connection with the same rounded delay summed (in element order, as the model's scatter_add),
    BatchNorm scale folded in, exact zeros dropped."""
    w = layer.weight * layer.mask[:, :, None]  # (out, in, m)
    d = round_delays(layer.delay, kernel_size)  # (out, in, m)
    n_out, n_in, m = w.shape
    acc = np.zeros((n_out, n_in, kernel_size))
    oi, ii = np.meshgrid(np.arange(n_out), np.arange(n_in), indexing="ij")
    for e in range(m):  # sequential adds keep the model's float order
        acc[oi, ii, d[:, :, e]] += w[:, :, e]
    acc *= scale[:, None, None]
    post, pre, delay = np.nonzero(acc)
    return pre, post, acc[post, pre, delay], delay


def network_from_checkpoint(ckpt: Checkpoint) -> Network:
    """Fold BatchNorm, round delays and merge elements: the float64 network the model evaluates."""
    layers = []
    for k, h in enumerate(ckpt.hidden):
        n = h.norm
        scale = n["weight"] / np.sqrt(n["running_var"] + BN_EPS)
        bias = n["bias"] - n["running_mean"] * scale
        pre, post, w, d = _merge(h, ckpt.kernel_size, scale)
        layers.append(Layer(h.weight.shape[1], h.weight.shape[0], pre, post, w, d,
                            decay=1.0 - 1.0 / ckpt.tau_steps, threshold=ckpt.threshold, bias=bias))
    r = ckpt.readout
    pre, post, w, d = _merge(r, ckpt.kernel_size, np.ones(r.weight.shape[0]))
    layers.append(Layer(r.weight.shape[1], r.weight.shape[0], pre, post, w, d,
                        decay=1.0 - 1.0 / ckpt.readout_tau_steps, threshold=np.inf, bias=0.0,
                        kind="readout"))
    return Network(layers, dt_ms=ckpt.dt_ms, input_size=ckpt.input_size, extra_steps=ckpt.extra_steps,
                   attrs={"target": "generic", "hop_latency_steps": 0, "threshold_rule": ">=",
                          "arithmetic": "float64", "source": str(ckpt.path),
                          "kernel_size": ckpt.kernel_size, "dataset": ckpt.dataset})


def write_network(net: Network, path: str | os.PathLike) -> Path:
    """Write ``net`` to ``path`` (usually ``DIR/network.h5``); returns the path."""
    import h5py

    from ._version import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # written beside the target, then renamed: a crash leaves the old file or none. (Not
    # snn_delays._atomic: importing it runs snn_delays/__init__, i.e. torch and the model, and the
    # exporter must work where only numpy and h5py are installed.)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = "snn-delays-network"
            f.attrs["format_version"] = FORMAT_VERSION
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
                nrn = g.create_group("neurons")
                for name in ("decay", "threshold", "bias"):
                    nrn.create_dataset(name, data=getattr(layer, name), dtype=np.float64)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_network(path: str | os.PathLike) -> Network:
    """Read a ``network.h5`` (or the ``network.h5`` inside a folder)."""
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
        version = f.attrs.get("format_version")
        if f.attrs.get("format") != "snn-delays-network" or version is None:
            raise ExportError(f"{p} is not an snn-delays network.h5 (no format attribute)")
        if int(version) > FORMAT_VERSION:
            raise ExportError(f"{p} has format_version {int(version)}; this reader knows <= {FORMAT_VERSION}")
        try:
            n_layers = int(f.attrs["n_layers"])
            layers = []
            for k in range(n_layers):
                g = f[f"layer/{k}"]
                s, nrn = g["synapses"], g["neurons"]
                scale = g.attrs.get("weight_scale")
                layers.append(Layer(
                    int(g.attrs["n_in"]), int(g.attrs["n_out"]), s["pre"][()], s["post"][()],
                    s["weight"][()].astype(np.float64), s["delay"][()], nrn["decay"][()],
                    nrn["threshold"][()], nrn["bias"][()], kind=str(g.attrs.get("kind", "hidden")),
                    weight_scale=None if scale is None else float(scale)))
            known = {"format", "format_version", "dt_ms", "input_size", "n_layers", "n_classes",
                     "extra_steps", "delay_convention", "prediction", "writer"}
            attrs = {k: (v.item() if hasattr(v, "item") else v) for k, v in f.attrs.items() if k not in known}
            return Network(layers, dt_ms=float(f.attrs["dt_ms"]), input_size=int(f.attrs["input_size"]),
                           extra_steps=int(f.attrs["extra_steps"]), attrs=attrs)
        except KeyError as e:
            raise ExportError(f"{p} is incomplete: missing {e}") from None
