"""Lava-dl netx HDF5 (``netx.h5``) for Loihi 1 / Loihi 2, written with h5py only.

Layout read by ``lava.lib.dl.netx.hdf5.Network`` (lava-dl 0.6)::

    /layer/0/{type=b'input', shape=[N_0]}
    /layer/<k+1>/{type=b'dense' | b'dense_rec', shape=[N_k+1], inFeatures, outFeatures,
                  weight (out, in) int, bias (out,) int, delay (out, in) int = D - 1 per synapse,
                  [weight_rec (out, out) int: dense_rec only],
                  neuron/{type=b'CUBA', iDecay=4096, vDecay, vThMant, refDelay=1, gradedSpike=False}}

Weights are the quantised integers of a Loihi export (``prepare(net, 'loihi1'|'loihi2')``); netx
reads them with ``astype(int)`` and finds the exponent itself. Lava's Dense adds one step per hop,
so the value written is D - 1 = the model delay d. netx clamps delay values above
:data:`NETX_MAX_DELAY` (62, ``max_delay=62`` in its dense blocks) with only a warning; the loihi
targets' limit (D <= 63) keeps every value written within it, and :func:`write_netx` refuses any
other. Extra attributes (``weight_scale``, ``positions``, ``dt_ms``, ``extra_steps``,
``input_message_bits``...) let :func:`read_netx` and the Lava runner rebuild the network; lava
ignores them.

Count-valued input: netx's ``hdf5.Network(input_message_bits=0)`` (its default) makes the first
layer's DelayDense read input spikes as booleans (a bin holding 2 spikes acts as 1). Run the file
with ``input_message_bits=INPUT_MESSAGE_BITS`` (8: graded input, counts 0..255 per bin carried as
they are); the root attribute ``input_message_bits`` and export.json say so.

Recurrent layers (``dense_rec`` -> lava-dl's ``RecurrentDense``): with delays, RecurrentDense gives
its recurrent DelayDense the layer's feed-forward ``delay`` matrix (out, in), so the layer must be
square (in = out) and the recurrent synapse j -> i runs with delay[i, j], the value of input
column j. A recurrent spike is delivered D = delay + 1 steps later (the same buffered step as a
feed-forward hop), so the value written is the recurrent table's D - 1. To give every recurrent
synapse its own delay, a recurrent layer is padded: its N neurons are its n_out real ones at
``positions`` (columns no real input uses) plus never-firing neurons (no synapses, bias 0,
threshold >= 0), and its input vector is widened to N with never-firing entries (padding neurons
appended to the layer before, or zero input channels appended when the first layer is
recurrent: then the file's input is wider than the model's; the extra channels stay 0). Runs of
consecutive recurrent layers share one width. lava-dl 0.6's RecurrentDense also drops the weight
exponent when delays are given, so the layer's integers must use the top of the 8-bit range
(|w| > 128 somewhere; a default loihi export does), or :func:`write_netx` refuses.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .chip import LOIHI_DECAY_UNITY
from .errors import ExportError
from .network import DELAY_CONVENTION, Layer, Network, Recurrent, require_lif
from .simulate import loihi_parameters

__all__ = ["write_netx", "read_netx", "refuse_recurrent", "netx_layout", "netx_report", "NetxLayout",
           "READOUT_VTH_MANT", "NETX_MAX_DELAY", "INPUT_MESSAGE_BITS"]

READOUT_VTH_MANT = 2 ** 17 - 1  # the readout never spikes: the largest Loihi 1 threshold mantissa
NETX_MAX_DELAY = 62  # lava-dl 0.6 netx: Dense/RecurrentDense build DelayDense(max_delay=62) and clamp above
INPUT_MESSAGE_BITS = 8  # hdf5.Network(input_message_bits=8): graded input, counts 0..255 per bin


def _uniform(values: np.ndarray, what: str, k: int) -> int:
    if values.size and not np.all(values == values[0]):
        raise ExportError(f"netx stores one {what} per layer; layer {k} has several")
    return int(values[0])


@dataclass
class NetxLayout:
    """Where each layer's neurons sit in netx.h5: ``widths[0]`` input channels in the file,
    ``widths[k + 1]`` neurons of layer k (padding included); ``input_positions`` (C_in,) the file's
    channel of each model input; ``positions[k]`` (n_out,) the index of each real neuron of layer k
    in its layer of the file."""

    widths: list[int]
    input_positions: np.ndarray
    positions: list[np.ndarray]


def netx_layout(net: Network) -> NetxLayout:
    """Neuron placement of :func:`write_netx` (see the module docstring): identity for feed-forward
    layers, real neurons of a recurrent layer on the first indices its input does not use."""
    rec = [l.recurrent is not None and l.n_recurrent > 0 for l in net.layers]
    before = np.arange(net.input_size)
    widths = [net.input_size] + [l.n_out for l in net.layers]
    positions = []
    for k, layer in enumerate(net.layers):
        if rec[k]:
            free = np.setdiff1d(np.arange(len(before) + layer.n_out), before)[: layer.n_out]
            positions.append(free)
        else:
            positions.append(np.arange(layer.n_out))
        before = positions[-1]
    k = 0
    while k < len(rec):  # a run of recurrent layers k..j-1 and the vector feeding it share one width
        if not rec[k]:
            k += 1
            continue
        j = k
        while j < len(rec) and rec[j]:
            j += 1
        width = max([widths[k]] + [int(positions[i].max()) + 1 for i in range(k, j)])
        for i in range(k, j + 1):
            widths[i] = width
        k = j
    return NetxLayout(widths, np.arange(net.input_size), positions)


def netx_report(net: Network) -> dict:
    """What export.json says about running netx.h5 in Lava: the input_message_bits to pass, the
    delay clamp, and the file's widths where recurrent layers are padded."""
    lay = netx_layout(net)
    rec = [k for k, l in enumerate(net.layers) if l.recurrent is not None and l.n_recurrent > 0]
    return {
        "run": f"lava.lib.dl.netx.hdf5.Network(net_config='netx.h5', input_message_bits={INPUT_MESSAGE_BITS}), "
               "Loihi2SimCfg(select_tag='fixed_pt') (docs/export.md, 'Running netx.h5 in Lava')",
        "input_message_bits": INPUT_MESSAGE_BITS,
        "input_message_bits_why": "netx's default input_message_bits=0 reads input spikes as booleans (a bin holding "
                                  "2 spikes acts as 1); with 8 the first layer takes graded input: counts 0..255 per "
                                  "bin carried as they are (nothing expanded)",
        "max_delay_value": NETX_MAX_DELAY,
        "input_channels": lay.widths[0],
        "model_input_channels": net.input_size,
        "layer_widths": lay.widths[1:],
        "recurrent_layers": rec,
        "padding": ("none" if not rec else
                    "recurrent layers are netx 'dense_rec' padded with never-firing neurons (real neurons at the "
                    "layer attribute 'positions'); feed the file's input_channels, the model's channels first and "
                    "the rest 0"),
    }


def refuse_recurrent(net: Network) -> None:
    """ExportError when a recurrent layer cannot be written as netx ``dense_rec`` (see the module
    docstring): recurrent integers that do not reach beyond the 7-bit range (lava-dl 0.6's
    RecurrentDense drops the weight exponent netx would give them)."""
    for k, layer in enumerate(net.layers):
        if layer.recurrent is None or layer.n_recurrent == 0 or layer.weight_scale is None:
            continue
        w = np.concatenate([np.rint(layer.weight), np.rint(layer.recurrent.weight)])
        hi, lo = float(w.max()), float(w.min())
        reach = (hi > 127 or lo < -128) if (hi > 0 and lo < 0) else (hi > 127 if hi > 0 else lo < -128)
        if not reach:
            raise ExportError(
                f"netx.h5 cannot hold the recurrent layer {k}: its integer weights lie in [{lo:.0f}, {hi:.0f}], and "
                "lava-dl 0.6's RecurrentDense (netx 'dense_rec') drops the weight exponent netx gives such a "
                "layer when it has delays, so Lava would run it with weights scaled by a power of two. Export "
                "with the target's full 8 weight bits (no --weight-bits), which puts the largest |w| at the top "
                "of the range")


def _check_delays(values: np.ndarray, k: int, what: str) -> None:
    if values.size and int(values.max()) > NETX_MAX_DELAY:
        raise ExportError(f"layer {k}: {what} delay value {int(values.max())} > {NETX_MAX_DELAY}: lava-dl netx "
                          f"clamps delay values to 0..{NETX_MAX_DELAY} (D <= {NETX_MAX_DELAY + 1} steps); prepare "
                          "the network for loihi1/loihi2, which refuses longer delays or clips them under --clip")


def write_netx(net: Network, path: str | os.PathLike) -> Path:
    """Write a Loihi-quantised network as netx HDF5. Needs integer weights and one delay per pair;
    recurrent layers become ``dense_rec`` (padded, see the module docstring)."""
    import h5py

    require_lif(net, "netx.h5 (Loihi)")
    refuse_recurrent(net)
    if any(l.weight_scale is None for l in net.layers):
        raise ExportError("netx needs integer weights: export with --target loihi1 or loihi2")
    hop = int(net.attrs.get("hop_latency_steps", 1))
    lay = netx_layout(net)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.attrs["dt_ms"] = net.dt_ms
        f.attrs["extra_steps"] = net.extra_steps
        f.attrs["delay_convention"] = ("netx delay = D - 1 (Lava adds one step per hop, and one per recurrent loop); "
                                       + DELAY_CONVENTION)
        f.attrs["target"] = net.target
        f.attrs["input_size"] = net.input_size  # the model's input channels (the file's may be wider)
        f.attrs["input_message_bits"] = INPUT_MESSAGE_BITS
        g = f.create_group("layer/0")
        g.create_dataset("type", data=np.bytes_("input"))
        g.create_dataset("shape", data=np.array([lay.widths[0]], dtype=np.int64))
        in_pos = lay.input_positions
        for k, layer in enumerate(net.layers):
            n_in, n_out = lay.widths[k], lay.widths[k + 1]
            pos = lay.positions[k]
            g = f.create_group(f"layer/{k + 1}")
            g.attrs["weight_scale"] = layer.weight_scale
            g.attrs["kind"] = layer.kind
            g.attrs["positions"] = pos.astype(np.int64)
            rec = layer.recurrent is not None and layer.n_recurrent > 0
            g.create_dataset("type", data=np.bytes_("dense_rec" if rec else "dense"))
            g.create_dataset("shape", data=np.array([n_out], dtype=np.int64))
            g.create_dataset("inFeatures", data=n_in)
            g.create_dataset("outFeatures", data=n_out)
            w = np.zeros((n_out, n_in), dtype=np.int64)
            d = np.zeros((n_out, n_in), dtype=np.int64)
            keys = layer.post.astype(np.int64) * layer.n_in + layer.pre
            if len(np.unique(keys)) != len(keys):
                raise ExportError(f"layer {k}: netx holds one delay per (pre, post) pair; this layer has "
                                  "pairs with several delays (prepare with a loihi target merges them)")
            rows, cols = pos[layer.post], in_pos[layer.pre]
            w[rows, cols] = np.rint(layer.weight).astype(np.int64)
            d[rows, cols] = layer.delay.astype(np.int64) + hop - 1  # D - 1
            _check_delays(d[rows, cols], k, "feed-forward")
            if rec:
                r = layer.recurrent
                keys = r.post.astype(np.int64) * r.n + r.pre
                if len(np.unique(keys)) != len(keys):
                    raise ExportError(f"layer {k}: netx holds one recurrent delay per (pre, post) pair; this layer "
                                      "has pairs with several (prepare with a loihi target merges them)")
                wr = np.zeros((n_out, n_out), dtype=np.int64)
                rr, rc = pos[r.post], pos[r.pre]
                if np.any(w[rr, rc] != 0):  # the layout keeps recurrent and feed-forward columns apart
                    raise ExportError(f"layer {k}: recurrent and feed-forward synapses share delay entries")
                wr[rr, rc] = np.rint(r.weight).astype(np.int64)
                d[rr, rc] = r.delay.astype(np.int64) - 1  # recurrent D - 1: RecurrentDense reads `delay`
                _check_delays(d[rr, rc], k, "recurrent")
                g.create_dataset("weight_rec", data=wr)
            g.create_dataset("weight", data=w)
            g.create_dataset("delay", data=d)
            p = loihi_parameters(layer)
            bias = np.zeros(n_out, dtype=np.int64)
            bias[pos] = p["bias"]
            g.create_dataset("bias", data=bias)
            exponents = str(net.attrs.get("bias_exponents", "")).split(",")
            exponent = int(exponents[k]) if len(exponents) == net.n_layers else 0
            g.attrs["biasExp"] = exponent  # bias = biasMant << biasExp (Loihi 1: 13-bit mantissa, 3-bit exponent)
            g.create_dataset("biasMant", data=bias >> exponent if exponent else bias)
            n = g.create_group("neuron")
            n.create_dataset("type", data=np.bytes_("CUBA"))
            n.create_dataset("iDecay", data=LOIHI_DECAY_UNITY)
            n.create_dataset("vDecay", data=_uniform(p["vDecay"], "vDecay", k))
            vth = READOUT_VTH_MANT if layer.kind == "readout" else _uniform(p["vThMant"], "threshold", k)
            n.create_dataset("vThMant", data=vth)
            n.create_dataset("refDelay", data=1)
            n.create_dataset("gradedSpike", data=False)
            in_pos = pos
    return path


def read_netx(path: str | os.PathLike) -> Network:
    """Rebuild a :class:`Network` (integer weights, Loihi conventions) from a netx file written here
    (padding neurons of recurrent layers dropped)."""
    import h5py

    with h5py.File(path, "r") as f:
        if f["layer/0/type"][()] != b"input":
            raise ExportError(f"{path}: layer 0 is not an input layer")
        width = int(f["layer/0/shape"][()][0])
        n_in = int(f.attrs.get("input_size", width))
        in_pos = np.arange(n_in)
        layers = []
        k = 1
        while f"layer/{k}" in f:
            g = f[f"layer/{k}"]
            scale = float(g.attrs["weight_scale"])
            w_full, d_full = g["weight"][()], g["delay"][()]
            pos = np.asarray(g.attrs.get("positions", np.arange(w_full.shape[0])), dtype=np.int64)
            w, d = w_full[np.ix_(pos, in_pos)], d_full[np.ix_(pos, in_pos)]
            post, pre = np.nonzero(w)
            recurrent = None
            if "weight_rec" in g:
                wr = g["weight_rec"][()][np.ix_(pos, pos)]
                dr = d_full[np.ix_(pos, pos)]
                rpost, rpre = np.nonzero(wr)
                recurrent = Recurrent(len(pos), rpre, rpost, wr[rpost, rpre].astype(np.float64), dr[rpost, rpre] + 1)
            n = g["neuron"]
            readout = g.attrs.get("kind", "hidden") == "readout"
            threshold = np.inf if readout else (int(n["vThMant"][()]) + 1) / scale
            layers.append(Layer(w.shape[1], w.shape[0], pre, post, w[post, pre].astype(np.float64),
                                d[post, pre], decay=1.0 - int(n["vDecay"][()]) / LOIHI_DECAY_UNITY,
                                threshold=threshold, bias=g["bias"][()][pos] / scale,
                                kind="readout" if readout else "hidden", weight_scale=scale,
                                recurrent=recurrent))
            in_pos = pos
            k += 1
        if not layers or layers[0].n_in != n_in:
            raise ExportError(f"{path}: no dense layers, or the first does not match the input shape")
        return Network(layers, dt_ms=float(f.attrs["dt_ms"]), input_size=n_in,
                       extra_steps=int(f.attrs["extra_steps"]),
                       attrs={"target": str(f.attrs.get("target", "loihi2")), "hop_latency_steps": 1,
                              "threshold_rule": ">", "arithmetic": "loihi"})
