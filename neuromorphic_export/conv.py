"""Convolutional delay layers: the ``model.conv`` spec, their shapes, and their expansion into
per-synapse rows (numpy only; no torch). The trainer (``snn_delays.model``), both checkpoint
readers and the exporter (:mod:`.network`) read the spec here, so that one grammar and one shape
rule hold everywhere.

Spec (``model.conv``): layers separated by commas, each a few space-separated tokens::

    "c8 k5 avg2, c16 k3 s1 p1 avg2"

``c<N>`` out channels (required), ``k<N>`` spatial kernel k x k (default 3), ``s<N>`` stride
(default 1), ``p<N>`` zero padding (default k // 2), ``avg<N>`` / ``max<N>`` pooling N x N with
stride N after the layer's LIF (default none). Each layer is DelayConv2d -> BatchNorm2d -> LIF ->
dropout -> pooling; the last layer's (C, H, W) output is flattened (C-major) into the dense layers.

Frames (``model.input_frame``): ``"CxHxW"`` (e.g. ``"2x16x16"``), the input's (C, H, W); the model
takes (T, B, C, H, W) or its flattened (T, B, C H W).

Expansion: output neuron (o, y, x) of a conv layer (flattened o * H_out W_out + y W_out + x) receives
from input (i, s y + u - p, s x + v - p) (flattened likewise) with weight w[o, i, u, v] and the
element's rounded delay; out-of-frame taps are no synapse. An average pooling P = (1/N^2) sum over a
window feeding the next layer is linear: each synapse from a pooled unit becomes N^2 synapses from
the window's neurons with weight w / N^2. Max pooling of spikes (an OR) is no sum of synapses: the
exporter refuses it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .chip import fold_batchnorm, round_delays

__all__ = ["ConvSpec", "parse_conv", "parse_frame", "conv_shapes", "conv_rows", "pool_rows", "flat_size",
           "POOLS", "DELAY_PER", "conv_key", "conv_state_shapes", "ConvLayer", "conv_tables", "pooled_input",
           "conv_report"]

POOLS = ("", "avg", "max")
DELAY_PER = ("element", "pair")  # model.conv_delay_per: one delay per kernel element, or per channel pair
NORM_KEYS = ("weight", "bias", "running_mean", "running_var")  # conv.{j}.norm.<key>, (C_out,) each
_TOKEN = re.compile(r"^(c|k|s|p|avg|max)(\d+)$")


@dataclass(frozen=True)
class ConvSpec:
    """One convolutional layer: ``out_channels``, k x k ``kernel``, ``stride``, ``padding``, then
    ``pool`` ("", "avg", "max") of ``pool_size`` x ``pool_size`` with stride ``pool_size``."""

    out_channels: int
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    pool: str = ""
    pool_size: int = 1

    def text(self) -> str:
        pool = f" {self.pool}{self.pool_size}" if self.pool else ""
        return f"c{self.out_channels} k{self.kernel} s{self.stride} p{self.padding}{pool}"


def parse_conv(text: str) -> tuple[ConvSpec, ...]:
    """The layers of a ``model.conv`` spec ("" -> none); ValueError naming the bad token."""
    layers = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            if str(text).strip():
                raise ValueError(f"model.conv {text!r} has an empty layer (two commas, or a trailing one)")
            continue
        vals: dict[str, int] = {}
        for tok in part.split():
            m = _TOKEN.match(tok)
            if not m:
                raise ValueError(f"model.conv layer {part!r}: unknown token {tok!r}; use c<channels> k<kernel> "
                                 "s<stride> p<padding> avg<N>|max<N>, e.g. \"c8 k5 avg2, c16 k3\"")
            key = m.group(1)
            if key in vals or (key in ("avg", "max") and ("avg" in vals or "max" in vals)):
                raise ValueError(f"model.conv layer {part!r}: {tok!r} given twice")
            vals[key] = int(m.group(2))
        if "c" not in vals:
            raise ValueError(f"model.conv layer {part!r} has no out-channel count c<N>")
        k = vals.get("k", 3)
        pool = "avg" if "avg" in vals else "max" if "max" in vals else ""
        spec = ConvSpec(vals["c"], k, vals.get("s", 1), vals.get("p", k // 2), pool, vals.get(pool, 1) if pool else 1)
        if min(spec.out_channels, spec.kernel, spec.stride, spec.pool_size) < 1:
            raise ValueError(f"model.conv layer {part!r}: channels, kernel, stride and pooling must be >= 1")
        layers.append(spec)
    return tuple(layers)


def parse_frame(text: str) -> tuple[int, int, int]:
    """``"CxHxW"`` -> (C, H, W); ValueError otherwise."""
    parts = str(text).lower().split("x")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) >= 1 for p in parts):
        raise ValueError(f"model.input_frame must look like CxHxW (e.g. 2x16x16); got {text!r}")
    c, h, w = (int(p) for p in parts)
    return c, h, w


def conv_shapes(specs: "tuple[ConvSpec, ...]", frame: tuple[int, int, int]) \
        -> list[tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]]:
    """Per layer (input (C, H, W), output before pooling, output after pooling); ValueError when a
    frame becomes smaller than a kernel or a pooling window."""
    out = []
    shape = tuple(frame)
    for j, s in enumerate(specs):
        c, h, w = shape
        ho, wo = (h + 2 * s.padding - s.kernel) // s.stride + 1, (w + 2 * s.padding - s.kernel) // s.stride + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"model.conv layer {j} ({s.text()}): its input frame {h} x {w} is smaller than the "
                             f"kernel {s.kernel} with padding {s.padding}")
        conv_out = (s.out_channels, ho, wo)
        pooled = (s.out_channels, ho // s.pool_size, wo // s.pool_size)
        if pooled[1] < 1 or pooled[2] < 1:
            raise ValueError(f"model.conv layer {j} ({s.text()}): pooling {s.pool_size} on a {ho} x {wo} frame")
        out.append((shape, conv_out, pooled))
        shape = pooled
    return out


def flat_size(specs: "tuple[ConvSpec, ...]", frame: tuple[int, int, int]) -> int:
    """Inputs of the first dense layer: the last conv layer's pooled C H W (the frame's without conv)."""
    shape = conv_shapes(specs, frame)[-1][2] if specs else tuple(frame)
    return int(np.prod(shape))


def conv_rows(weight: np.ndarray, delay_steps: np.ndarray, in_shape: tuple[int, int, int], stride: int,
              padding: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Synapse rows (pre, post, weight, delay) of one conv layer: weight (C_out, C_in, k, k), integer
    delays of the same shape; pre indexes the flattened input (C_in, H, W), post the flattened output
    (C_out, H_out, W_out). Exact zero weights and out-of-frame taps make no row. Rows are ordered by
    (post, i, u, v)."""
    c_out, c_in, k, _ = weight.shape
    _, h, w = in_shape
    ho, wo = (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1
    o, yo, xo, i, u, v = np.meshgrid(np.arange(c_out), np.arange(ho), np.arange(wo), np.arange(c_in),
                                     np.arange(k), np.arange(k), indexing="ij")
    yi, xi = stride * yo + u - padding, stride * xo + v - padding
    keep = (yi >= 0) & (yi < h) & (xi >= 0) & (xi < w) & (weight[o, i, u, v] != 0)
    o, yo, xo, i, u, v, yi, xi = (a[keep] for a in (o, yo, xo, i, u, v, yi, xi))
    post = (o * ho + yo) * wo + xo
    pre = (i * h + yi) * w + xi
    return pre, post, weight[o, i, u, v].astype(np.float64), delay_steps[o, i, u, v].astype(np.int64)


def pool_rows(pre: np.ndarray, post: np.ndarray, weight: np.ndarray, delay: np.ndarray,
              unpooled: tuple[int, int, int], pool_size: int) -> tuple[np.ndarray, ...]:
    """Rows from pooled units (pre indexes the pooled (C, H // N, W // N)) turned into rows from the
    unpooled neurons (C, H, W) of their N x N windows, weight / N^2 (average pooling)."""
    if pool_size == 1:
        return pre, post, weight, delay
    c, h, w = unpooled
    n = pool_size
    hp, wp = h // n, w // n
    ch, rem = np.divmod(pre, hp * wp)
    yp, xp = np.divmod(rem, wp)
    du, dv = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    du, dv = du.ravel(), dv.ravel()
    new_pre = ((ch[:, None] * h + yp[:, None] * n + du[None]) * w + xp[:, None] * n + dv[None]).ravel()
    rep = n * n
    return (new_pre, np.repeat(post, rep), np.repeat(weight / rep, rep), np.repeat(delay, rep))


def conv_key(j: int) -> str:
    """State-dict prefix of conv layer j (``conv.{j}.synapse.weight``, ``conv.{j}.norm.running_mean`` ...)."""
    return f"conv.{j}"


def conv_state_shapes(specs: "tuple[ConvSpec, ...]", frame: tuple[int, int, int],
                      delay_per: str = "element") -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of the conv layers' arrays: ``conv.{j}.synapse.weight`` (C_out, C_in,
    k, k), ``.delay`` the same (per element) or (C_out, C_in) (per pair), ``conv.{j}.norm.*`` (C_out,)."""
    want: dict[str, tuple[int, ...]] = {}
    for j, (s, (ins, _, _)) in enumerate(zip(specs, conv_shapes(specs, frame))):
        o, i, k = s.out_channels, ins[0], s.kernel
        want[f"{conv_key(j)}.synapse.weight"] = (o, i, k, k)
        want[f"{conv_key(j)}.synapse.delay"] = (o, i, k, k) if delay_per == "element" else (o, i)
        for part in NORM_KEYS:
            want[f"{conv_key(j)}.norm.{part}"] = (o,)
    return want


@dataclass(frozen=True)
class ConvLayer:
    """One conv layer read from a checkpoint (float64 arrays): weight (C_out, C_in, k, k), delay (real
    steps; (C_out, C_in, k, k) or (C_out, C_in)), norm (BatchNorm2d's weight, bias, running_mean,
    running_var, (C_out,) each), its ``spec`` and ``shapes`` (input, output, pooled (C, H, W))."""

    weight: np.ndarray
    delay: np.ndarray
    norm: dict
    spec: ConvSpec
    shapes: tuple


def conv_tables(layers: "list[ConvLayer]", kernel_size: int) -> list[tuple]:
    """Per conv layer its synapse table as the exporter stores it: (n_in, n_out, pre, post, weight,
    delay, bias (n_out,)): delays rounded as in eval (clamp to [0, Td - 1], half to even), the
    BatchNorm folded (gain into the weights per output channel, shift as the bias of each of the
    channel's neurons), the previous layer's average pooling expanded (:func:`pool_rows`). n_in counts
    the previous layer's neurons before pooling (or the input frame's C H W). ValueError for max pooling
    feeding a layer."""
    out = []
    for j, c in enumerate(layers):
        ins, conv_out, _ = c.shapes
        d = round_delays(c.delay, kernel_size)
        if d.ndim == 2:
            d = np.broadcast_to(d[:, :, None, None], c.weight.shape)
        pre, post, w, dd = conv_rows(c.weight, d, ins, c.spec.stride, c.spec.padding)
        gain, shift = fold_batchnorm(c.norm["weight"], c.norm["bias"], c.norm["running_mean"], c.norm["running_var"])
        per_channel = conv_out[1] * conv_out[2]
        w = w * gain[post // per_channel]
        n_in = int(np.prod(ins))
        if j > 0:
            pre, post, w, dd, n_in = pooled_input(pre, post, w, dd, layers[j - 1], f"conv layer {j}")
        out.append((n_in, int(np.prod(conv_out)), pre, post, w, dd, np.repeat(shift, per_channel)))
    return out


def pooled_input(pre, post, w, d, previous: ConvLayer, what: str) -> tuple:
    """Rows whose ``pre`` indexes ``previous``'s pooled output, re-indexed onto its neurons before
    pooling (average pooling: weight / N^2); returns (pre, post, w, d, n_in). ValueError for max pooling."""
    spec, (_, conv_out, _) = previous.spec, previous.shapes
    if spec.pool == "max":
        raise ValueError(f"{what} reads a max pooling ({spec.text()}): the maximum of spikes is an OR, not a sum of "
                         "weighted synapses, and no export target computes it; train with avg pooling")
    if spec.pool == "avg":
        pre, post, w, d = pool_rows(pre, post, w, d, conv_out, spec.pool_size)
    return pre, post, w, d, int(np.prod(conv_out))


def conv_report(net) -> dict:
    """The sizes of a network's conv layers as exported (export.json's "conv"): the spec, and per conv
    layer (and the first dense layer, which reads the last conv layer's neurons) its neurons in and out,
    synapse rows, largest fan-in and delay range (steps, the file's: before any hop latency)."""
    specs = parse_conv(str(net.attrs.get("conv", "")))
    rows = []
    for k, layer in enumerate(net.layers[:len(specs) + 1]):
        fanin = np.bincount(layer.post, minlength=layer.n_out) if layer.n_synapses else np.zeros(1, dtype=int)
        rows.append({"layer": k, "what": specs[k].text() if k < len(specs) else "dense, reads the last conv layer",
                     "n_in": int(layer.n_in), "n_out": int(layer.n_out), "synapses": int(layer.n_synapses),
                     "max_fanin": int(fanin.max()),
                     "delay_steps": [int(layer.delay.min()), int(layer.delay.max())] if layer.n_synapses else [0, 0],
                     "distinct_delays": int(len(np.unique(layer.delay)))})
    return {"spec": str(net.attrs.get("conv", "")), "input_frame": str(net.attrs.get("input_frame", "")),
            "layers": rows}
