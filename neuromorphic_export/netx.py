"""Lava-dl netx HDF5 (``netx.h5``) for Loihi 1 / Loihi 2, written with h5py only.

Layout read by ``lava.lib.dl.netx.hdf5.Network`` (lava-dl 0.6)::

    /layer/0/{type=b'input', shape}
    /layer/<k+1>/{type=b'dense', shape, inFeatures, outFeatures, weight (out, in) int, bias (out,) int,
                  delay (out, in) int = D - 1 per synapse,
                  neuron/{type=b'CUBA', iDecay=4096, vDecay, vThMant, refDelay=1, gradedSpike=False}}

Weights are the quantised integers of a Loihi export (``prepare(net, 'loihi1'|'loihi2')``); netx
reads them with ``astype(int)`` and finds the exponent itself. Lava's Dense adds one step per hop,
so the value written is D - 1 = the model delay d. Extra attributes (``weight_scale``, ``dt_ms``,
``extra_steps``) let :func:`read_netx` rebuild the network; lava ignores them.

Recurrent layers are refused (:func:`refuse_recurrent`): netx's ``hdf5.Network`` connects each
layer to the one before it and has no layer type whose synapses come back to the same layer.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ExportError
from .network import DELAY_CONVENTION, Layer, Network
from .simulate import LOIHI_DECAY_UNITY, loihi_parameters

__all__ = ["write_netx", "read_netx", "refuse_recurrent", "READOUT_VTH_MANT"]

READOUT_VTH_MANT = 2 ** 17 - 1  # the readout never spikes: the largest Loihi 1 threshold mantissa


def _uniform(values: np.ndarray, what: str, k: int) -> int:
    if values.size and not np.all(values == values[0]):
        raise ExportError(f"netx stores one {what} per layer; layer {k} has several")
    return int(values[0])


def refuse_recurrent(net: Network) -> None:
    """ExportError when ``net`` has recurrent tables, which netx cannot hold."""
    layers = [k for k, l in enumerate(net.layers) if l.recurrent is not None]
    if layers:
        raise ExportError(
            f"netx.h5 cannot hold the recurrent synapses of layer{'s' if len(layers) > 1 else ''} "
            f"{', '.join(map(str, layers))}: lava-dl netx (hdf5.Network) connects every layer to the one before it and "
            "has no recurrent layer type, so a recurrent model cannot be exported for loihi1/loihi2. The chip's "
            "limits do not forbid it (delays and weights were checked): prepare(net, target) + write_network gives "
            "network.h5 with the quantised recurrent tables, for a Lava network connected by hand (a Dense from "
            "each LIF back to itself, delay D - 1)")


def write_netx(net: Network, path: str | os.PathLike) -> Path:
    """Write a Loihi-quantised network as netx HDF5. Needs integer weights and one delay per pair;
    refuses recurrent layers (netx has no recurrent layer type)."""
    import h5py

    refuse_recurrent(net)

    if any(l.weight_scale is None for l in net.layers):
        raise ExportError("netx needs integer weights: export with --target loihi1 or loihi2")
    hop = int(net.attrs.get("hop_latency_steps", 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["dt_ms"] = net.dt_ms
        f.attrs["extra_steps"] = net.extra_steps
        f.attrs["delay_convention"] = "netx delay = D - 1 (Lava adds one step per hop); " + DELAY_CONVENTION
        f.attrs["target"] = net.target
        g = f.create_group("layer/0")
        g.create_dataset("type", data=np.bytes_("input"))
        g.create_dataset("shape", data=np.array([net.input_size], dtype=np.int64))
        for k, layer in enumerate(net.layers):
            g = f.create_group(f"layer/{k + 1}")
            g.attrs["weight_scale"] = layer.weight_scale
            g.attrs["kind"] = layer.kind
            g.create_dataset("type", data=np.bytes_("dense"))
            g.create_dataset("shape", data=np.array([layer.n_out], dtype=np.int64))
            g.create_dataset("inFeatures", data=layer.n_in)
            g.create_dataset("outFeatures", data=layer.n_out)
            w = np.zeros((layer.n_out, layer.n_in), dtype=np.int64)
            d = np.zeros((layer.n_out, layer.n_in), dtype=np.int64)
            keys = layer.post.astype(np.int64) * layer.n_in + layer.pre
            if len(np.unique(keys)) != len(keys):
                raise ExportError(f"layer {k}: netx holds one delay per (pre, post) pair; this layer has "
                                  "pairs with several delays (prepare with a loihi target merges them)")
            w[layer.post, layer.pre] = np.rint(layer.weight).astype(np.int64)
            d[layer.post, layer.pre] = layer.delay.astype(np.int64) + hop - 1  # D - 1
            g.create_dataset("weight", data=w)
            g.create_dataset("delay", data=d)
            p = loihi_parameters(layer)
            g.create_dataset("bias", data=p["bias"])
            exponents = str(net.attrs.get("bias_exponents", "")).split(",")
            exponent = int(exponents[k]) if len(exponents) == net.n_layers else 0
            g.attrs["biasExp"] = exponent  # bias = biasMant << biasExp (Loihi 1: 13-bit mantissa, 3-bit exponent)
            g.create_dataset("biasMant", data=p["bias"] >> exponent if exponent else p["bias"])
            n = g.create_group("neuron")
            n.create_dataset("type", data=np.bytes_("CUBA"))
            n.create_dataset("iDecay", data=LOIHI_DECAY_UNITY)
            n.create_dataset("vDecay", data=_uniform(p["vDecay"], "vDecay", k))
            vth = READOUT_VTH_MANT if layer.kind == "readout" else _uniform(p["vThMant"], "threshold", k)
            n.create_dataset("vThMant", data=vth)
            n.create_dataset("refDelay", data=1)
            n.create_dataset("gradedSpike", data=False)
    return path


def read_netx(path: str | os.PathLike) -> Network:
    """Rebuild a :class:`Network` (integer weights, Loihi conventions) from a netx file written here."""
    import h5py

    with h5py.File(path, "r") as f:
        if f["layer/0/type"][()] != b"input":
            raise ExportError(f"{path}: layer 0 is not an input layer")
        n_in = int(f["layer/0/shape"][()][0])
        layers = []
        k = 1
        while f"layer/{k}" in f:
            g = f[f"layer/{k}"]
            scale = float(g.attrs["weight_scale"])
            w, d = g["weight"][()], g["delay"][()]
            post, pre = np.nonzero(w)
            n = g["neuron"]
            readout = g.attrs.get("kind", "hidden") == "readout"
            threshold = np.inf if readout else (int(n["vThMant"][()]) + 1) / scale
            layers.append(Layer(w.shape[1], w.shape[0], pre, post, w[post, pre].astype(np.float64),
                                d[post, pre], decay=1.0 - int(n["vDecay"][()]) / LOIHI_DECAY_UNITY,
                                threshold=threshold, bias=g["bias"][()] / scale,
                                kind="readout" if readout else "hidden", weight_scale=scale))
            k += 1
        if not layers or layers[0].n_in != n_in:
            raise ExportError(f"{path}: no dense layers, or the first does not match the input shape")
        return Network(layers, dt_ms=float(f.attrs["dt_ms"]), input_size=n_in,
                       extra_steps=int(f.attrs["extra_steps"]),
                       attrs={"target": str(f.attrs.get("target", "loihi2")), "hop_latency_steps": 1,
                              "threshold_rule": ">", "arithmetic": "loihi"})
