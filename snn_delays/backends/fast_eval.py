"""The compiled evaluation of a :class:`~snn_delays.model.DelaySNN` with rounded delays (CPU, no grad).

In evaluation every synapse element has one integer delay, BatchNorm is a fixed per-neuron affine
map (``scale * x + shift``) and dropout is the identity, so each layer is one synaptic product
followed by the LIF (or the readout's leaky integrator) with BatchNorm folded in, all compiled
(:mod:`.kernels.eval`, :mod:`.kernels.eval_bits`) and with no autograd bookkeeping. Each layer
takes one of three forms, chosen from the density of its input (nonzero entries / all entries):

- **event-driven** (where :func:`event_cheaper` says so): for every input event (a nonzero count or a spike at step s of neuron j) add ``w``
  to the current of each target at step s + d - the way a neuromorphic chip computes; work ~
  events x fan-out. Works per sample on (T, B, C).
- **bits** (a layer fed by the previous layer's 0/1 spikes): the spikes bit-packed, (C, T, B / 8)
  with zero steps in front, and one rounded tap per element as masked adds: the 16 bits of 16
  batch lanes loaded as an AVX-512 mask, the weight added on the set lanes (no conversion, no
  multiply); work ~ steps x synapses x batch / 16 mask loads, independent of activity.
- **taps** (the first layer, whose input may hold counts): one compiled pass over (C, T, B) bytes
  (exact for counts 0..255): the one-tap-per-element current of eight steps accumulates in an
  (8, B) block in L1, then BatchNorm and the LIF turn it into spikes stored as bytes.

The choice is a cost model (``COST_NS``, measured per part of each loop: the event loop's scan
of the inputs, its scattered adds, its LIF; the tap loops' taps and LIF): the event form wins below
~10 % input density for the SHD input layer against the byte taps, below ~5 % for a 256 -> 256
hidden layer against the bits, and never for a 256 -> 20 readout (scanning 256 inputs per step
costs more than its 5,120 taps); benchmarks/README.md (issue 27 evaluation notes) has the figures.
Spikes move between the forms in
their layouts: (T, B, C) bytes from an event layer, packed to bits for a bit layer (its density is
counted on the bits), unpacked for an event layer after a bit layer. With the SHD bench (5 %
non-zero counts, hidden layers at 0.1-0.36 per neuron and step) the input layer is event-driven
and the two later ones take the bit form.

Same numbers as the model's plain eval path (rounded kernel, dense convolution, BatchNorm, LIF) up
to float summation order; ``tests/test_fast_paths.py`` and ``tests/test_fast_eval_bits.py`` check
identical spikes and predictions for every form and pairing of forms. ``DelaySNN.forward`` uses it
under ``torch.no_grad()`` in eval mode on CPU when numba is available; ``backend="dense"`` in the
model config turns it off. Shapes: time-major (T, B, C).
"""

from __future__ import annotations

import itertools
import weakref

import numpy as np
import torch
from torch import Tensor

from neuromorphic_export.chip import fold_batchnorm

from .compiled import fast_available, set_threads
from .events import nonzero_fraction
from .kernels import eval as eval_loops
from .kernels import eval_bits as bit_loops
from .kernels import pack
from .taps import tap_structure

__all__ = ["applicable", "fast_eval_forward", "synapse_table", "EVENT_MAX_DENSITY", "BIT_EVENT_MAX_DENSITY",
           "COST_NS", "event_cheaper"]

# Fixed limits (None: the cost model below decides): event form below this input density, against
# the byte tap loop (EVENT_MAX_DENSITY) and against the bit loop (BIT_EVENT_MAX_DENSITY, a layer fed
# by spikes). Tests and callers set them (or ``event_max_density``) to force a form.
EVENT_MAX_DENSITY: float | None = None
BIT_EVENT_MAX_DENSITY: float | None = None
# The cost model: nanoseconds per step and sample (2 threads, SHD sizes, AVX-512 Xeon, 2026-12-06;
# benchmarks/README.md, issue 27 evaluation note 69) of each part of each form:
# event = scan x inputs + add x (density x synapse elements) + out x outputs;
# taps = tap x synapse elements + out x outputs (tap: "bits" or "bytes").
COST_NS = {"event_scan": 0.4, "event_add": 0.2, "event_out": 0.25, "bits_tap": 0.0107, "bytes_tap": 0.0217,
           "tap_out": 0.3}
DENSITY_STRIDE = 4  # the input's density is counted on every 4th step


def applicable(model, x: Tensor) -> bool:
    """Whether :func:`fast_eval_forward` can run ``model`` on ``x``: the model says its layers are
    the plain ones these loops compute (``model.fast_eval_eligible``: not a chip model), and eval
    mode, no grad, compiled loops on, CPU, delay synapses not forced to the dense backend (a
    dense-conv synapse's backend is "dense"), BatchNorm with running statistics."""
    if not getattr(model, "fast_eval_eligible", True):
        return False
    if not fast_available(x) or torch.is_grad_enabled() or model.training:
        return False
    for syn in model.synapses():
        if syn.backend == "dense" or syn.weight.dtype != x.dtype:
            return False
    for blk in model.hidden:
        norm = blk.norm
        if getattr(blk, "recurrent", None) is not None:  # the layer runs step by step (its own loop)
            return False
        if norm.training or norm.running_mean is None:
            return False
    return True


def synapse_table(syn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The synapse as lists per input neuron: (indptr (in + 1,), offset (E,), weight (E,)) with
    offset = rounded delay * out + target, one entry per existing element."""
    w = syn.masked_weight().detach()
    d = syn.rounded_delay().detach().long()
    inp, out = torch.nonzero(syn.mask.detach().t() != 0, as_tuple=True)  # (input, target), by input
    m = syn.kernel_count
    weight = w[out, inp].reshape(-1)  # (E,) = pairs x m
    delay = d[out, inp].reshape(-1)
    offset = (delay * syn.out_features + out.repeat_interleave(m)).numpy().astype(np.int64)
    counts = np.bincount(inp.repeat_interleave(m).numpy(), minlength=syn.in_features)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return indptr, offset, np.ascontiguousarray(weight.numpy())


def _bn_affine(norm: torch.nn.BatchNorm1d | None, n: int, dtype) -> tuple[np.ndarray, np.ndarray]:
    """BatchNorm in eval mode as y = scale * x + shift (the form PyTorch's CPU kernel uses)."""
    if norm is None:
        return torch.ones(n, dtype=dtype).numpy(), torch.zeros(n, dtype=dtype).numpy()
    var, mean = norm.running_var, norm.running_mean
    gamma = norm.weight.detach() if norm.affine else torch.ones_like(var)
    beta = norm.bias.detach() if norm.affine else torch.zeros_like(var)
    scale, shift = fold_batchnorm(gamma, beta, mean, var, norm.eps)  # the exporter's folding, on tensors
    return scale.to(dtype).numpy().copy(), shift.to(dtype).numpy().copy()


class _Tables:
    """The weight-derived tables of one model's evaluation (BatchNorm's scale and shift, the event
    and tap tables of each layer), made on first use and kept while every parameter and buffer is
    unchanged: they cost 15-20 % of a batch at SHD sizes to rebuild. The check compares copies of
    the tensors (exact, and blind to how they changed: optimiser, ``.data``, ``load_state_dict``)."""

    def __init__(self, state: list[Tensor], dtype):
        self.state = [t.clone() for t in state]
        self.dtype = dtype
        self.tables: dict = {}

    def matches(self, state: list[Tensor], dtype) -> bool:
        return dtype == self.dtype and len(state) == len(self.state) and all(
            a.shape == b.shape and a.dtype == b.dtype and _equal(a, b) for a, b in zip(state, self.state))

    def get(self, key, make):
        if key not in self.tables:
            self.tables[key] = make()
        return self.tables[key]


def _equal(a: Tensor, b: Tensor) -> bool:
    """Exact equality of two CPU tensors (numpy's: ~50x faster than torch.equal here)."""
    try:
        return bool(np.array_equal(a.numpy(), b.numpy()))
    except (TypeError, RuntimeError):  # a dtype numpy lacks (bfloat16)
        return torch.equal(a, b)


_TABLES: "weakref.WeakKeyDictionary[torch.nn.Module, _Tables]" = weakref.WeakKeyDictionary()


def _tables_of(model, dtype) -> _Tables:
    """The cached tables of ``model`` for ``dtype``, rebuilt (lazily) if any tensor changed."""
    state = [t.detach() for t in itertools.chain(model.parameters(), model.buffers())]
    entry = _TABLES.get(model)
    if entry is None or not entry.matches(state, dtype):
        entry = _Tables(state, dtype)
        _TABLES[model] = entry
    return entry


def _event_table(syn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`synapse_table` with unsigned offsets of the narrowest width that holds them (uint16
    at SHD sizes: 6 instead of 12 bytes per synapse to stream per event, ~15 % faster; the loop's
    scattered adds skip wraparound checks); the weights are already of the input's dtype
    (:func:`applicable`)."""
    indptr, offset, weight = synapse_table(syn)
    top = int(offset.max()) if len(offset) else 0
    kind = np.uint16 if top < 2**16 else np.uint32 if top < 2**32 else np.uint64
    return indptr, offset.astype(kind), weight


def _tap_table(syn, dtype) -> tuple:
    plan = syn.tap_plan(1)
    value, steps = tap_structure(syn.masked_weight().detach(), syn.rounded_delay().detach(), plan, 0.0,
                                 syn.kernel_size)
    return plan.indptr, plan.src, steps.contiguous().numpy(), value.to(dtype).contiguous().numpy()


def _max_delay(table) -> int:
    """The largest delay (steps) of a tap table: the zero steps a bit input needs in front."""
    steps = table[2]
    return int(steps.max()) if len(steps) else 0


def _event_layer(x: Tensor, table, scale, shift, lif, t_len: int, td: int, n_out: int) -> Tensor:
    """x (T_in, B, in) float, or uint8 0/1 spikes -> uint8 spikes or the membrane of the weights'
    dtype (t_len, B, out), t_len >= T_in (the steps after T_in have no input events), event-driven;
    ``table`` from :func:`_event_table`."""
    indptr, offset, weight = table
    xs = x.contiguous().numpy()
    spiking = lif.spiking
    out = np.empty((t_len, xs.shape[1], n_out), dtype=np.uint8 if spiking else weight.dtype)
    eval_loops.event_layer(xs, indptr, offset, weight, scale, shift,
                           1.0 - 1.0 / lif.tau, lif.threshold if spiking else 0.0, spiking, max(1, td), out)
    return torch.from_numpy(out)


def _tap_layer(x_ctb: Tensor, table, scale, shift, lif, n_out: int, dtype) -> Tensor:
    """x (in, T, B) -> uint8 spikes or membrane (out, T, B) of ``dtype``, one tap per element, the
    synaptic current never leaving the cache (compiled, one pass); ``table`` from :func:`_tap_table`."""
    indptr, src, steps, value = table
    xs = x_ctb.contiguous().numpy()  # float, or uint8 spikes/counts (4x less to read, exact)
    _, t_len, b_len = xs.shape
    spiking = lif.spiking
    out = torch.empty(n_out, t_len, b_len, dtype=torch.uint8 if spiking else dtype)
    eval_loops.tap1_lif_ctb(xs, indptr, src, steps, value, scale, shift, 1.0 - 1.0 / lif.tau,
                            lif.threshold if spiking else 0.0, spiking, out.numpy())
    return out


def _bit_tap_layer(xb: np.ndarray, x_pad: int, t_len: int, b_len: int, table, scale, shift, lif, n_out: int,
                   dtype, o_pad: int):
    """Bits (in, x_pad + T8, nb) of 0/1 spikes -> bits (out, o_pad + T8, nb) (spiking) or the
    membrane (out, T, B) of ``dtype``; one rounded tap per element as masked adds
    (:mod:`.kernels.eval_bits`); x_pad >= the table's largest delay."""
    indptr, src, steps, value = table
    spiking = lif.spiking
    if spiking:
        out = bit_loops.empty_bits(n_out, t_len, b_len, o_pad)
    else:
        out = np.empty((n_out, t_len, b_len), dtype=torch.empty(0, dtype=dtype).numpy().dtype)
    bit_loops.tap1_lif_bits(xb, x_pad, t_len, b_len, indptr, src, steps, value, scale, shift, 1.0 - 1.0 / lif.tau,
                            lif.threshold if spiking else 0.0, spiking, out, o_pad if spiking else 0)
    return out


def _bits_density(xb: np.ndarray, t_len: int, b_len: int) -> float:
    """Set bits / (C T B) of a bit tensor whose padding (rows, lanes) is zero."""
    flat = xb.reshape(-1)
    words = flat.view(np.uint64) if flat.size % 8 == 0 else flat
    return float(np.bitwise_count(words).sum(dtype=np.int64)) / max(1, xb.shape[0] * t_len * b_len)


def event_cheaper(density: float, n_in: int, n_out: int, n_elements: int, tap_form: str) -> bool:
    """Whether the event form of a layer costs less than its tap form ("bits" or "bytes") by
    ``COST_NS``: ``n_elements`` synapse elements (pairs x kernel elements), input ``density``."""
    c = COST_NS
    event = c["event_scan"] * n_in + c["event_add"] * density * n_elements + c["event_out"] * n_out
    return event < c[tap_form + "_tap"] * n_elements + c["tap_out"] * n_out


def _pad_ctb(x: Tensor, extra_steps: int) -> Tensor:
    """x (T, B, C) -> (C, T + extra_steps, B), zeros after T."""
    t_in, b_len, c_in = x.shape
    out = x.new_zeros(c_in, t_in + extra_steps, b_len)
    out[:, :t_in] = x.permute(2, 0, 1)
    return out


def _to_ctb(h: Tensor) -> Tensor:
    """(T, B, C) -> (C, T, B) contiguous (uint8 spikes: a compiled tiled transpose)."""
    if h.dtype == torch.uint8:
        out = torch.empty(h.shape[2], h.shape[0], h.shape[1], dtype=torch.uint8)
        pack.tbc_to_ctb_u8(h.numpy(), out.numpy())
        return out
    return h.permute(2, 0, 1).contiguous()


@torch.no_grad()
def fast_eval_forward(model, x: Tensor, return_spikes: bool = False, event_max_density: float | None = None,
                      kinds: list | None = None, extra_steps: int = 0):
    """x (T, B, C), then ``extra_steps`` zero steps -> readout membrane (T', B, K)
    (and the hidden spike trains (T', B, H) if ``return_spikes``). Each layer is event-driven where
    :func:`event_cheaper` says so for its input density (or, if ``event_max_density`` or the module's
    fixed limits are set, below that density); the form taken by each layer ("event", "taps" or
    "bits": taps on bit-packed spikes) is appended to ``kinds`` if given."""
    limit = EVENT_MAX_DENSITY if event_max_density is None else event_max_density
    limit_bits = BIT_EVENT_MAX_DENSITY if event_max_density is None else event_max_density  # None: COST_NS
    set_threads()
    dtype = x.dtype
    h = x.detach().contiguous()  # (T, B, C) float
    t_in, b_len, c_in = h.shape
    t_len = t_in + extra_steps
    # the work of the event form / that of the taps; the input is packed into bytes only for a tap layer
    # (counted on every DENSITY_STRIDE-th step: an estimate for the choice of form, 4x cheaper)
    sample = h[::DENSITY_STRIDE]
    input_density = nonzero_fraction(sample) * t_in / max(1, t_len)
    # h is, with ``form``: "tbc": (T_in, B, C) float (the input) or (T, B, C) uint8 spikes / float
    # (what the event layers write); "ctb": (C, T, B) (uint8 when exact, else float; what the byte
    # tap layer reads and writes); "bits": (C, pad + T8, nb) uint8 numpy, 0/1 spikes as bits after
    # ``pad`` zero steps (what the bit tap layers read and write, pad = the next layer's largest delay)
    form, pad = "tbc", 0
    spikes = []
    stages = [(blk.synapse, blk.norm, blk.lif) for blk in model.hidden] + [(model.readout, None, model.readout_lif)]
    tables = _tables_of(model, dtype)
    n_stages = len(stages)

    def tap_table(k):
        return tables.get((k, "taps"), lambda: _tap_table(stages[k][0], dtype))

    for k, (syn, norm, lif) in enumerate(stages):
        scale, shift = tables.get((k, "norm"), lambda: _bn_affine(norm, syn.out_features, dtype))
        binary_in = k > 0 and stages[k - 1][2].spiking  # the previous layer's 0/1 spikes
        layer_limit = limit_bits if binary_in else limit
        tap_form = "bits" if binary_in else "bytes"
        n_elements = len(tap_table(k)[3])
        if layer_limit is None:  # the cost model; the density is not counted where events cannot win
            never = not event_cheaper(0.0, syn.in_features, syn.out_features, n_elements, tap_form)
        else:
            never = layer_limit <= 0
        if k == 0:
            density = input_density
        elif never:
            density = 1.0
        elif form == "bits":
            density = _bits_density(h, t_len, b_len)
        elif binary_in and form == "tbc" and h.dtype == torch.uint8:  # pack first: its density is cheap
            x_pad = _max_delay(tap_table(k))
            h, pad, form = bit_loops.pack_tbc_bits(h.numpy(), x_pad), x_pad, "bits"
            density = _bits_density(h, t_len, b_len)
        else:
            density = nonzero_fraction(h)
        if layer_limit is None:
            use_events = not never and event_cheaper(density, syn.in_features, syn.out_features, n_elements, tap_form)
        else:
            use_events = density < layer_limit
        if use_events:
            kind = "event"
            if form == "ctb":
                h = h.permute(1, 2, 0)
            elif form == "bits":
                h = torch.from_numpy(bit_loops.bits_to_tbc(h, t_len, b_len, pad))
            form = "tbc"
            table = tables.get((k, "event"), lambda: _event_table(syn))
            xin = h if h.dtype == torch.uint8 else h.to(dtype)  # 0/1 spike bytes as they are: exact, 4x less to read
            h = _event_layer(xin, table, scale, shift, lif, t_len, syn.kernel_size, syn.out_features)
        elif binary_in:  # taps as masked adds on bit-packed spikes
            kind = "bits"
            table = tap_table(k)
            x_pad = _max_delay(table)
            if form == "tbc":
                h, pad = bit_loops.pack_tbc_bits(h.contiguous().numpy(), x_pad), x_pad
            elif form == "ctb":
                h, pad = bit_loops.pack_ctb_bits(h.contiguous().numpy(), x_pad), x_pad
            elif pad < x_pad:  # (the previous layer wrote it with the pad this layer needs)
                h, pad = bit_loops.pack_tbc_bits(bit_loops.bits_to_tbc(h, t_len, b_len, pad), x_pad), x_pad
            o_pad = _max_delay(tap_table(k + 1)) if k + 1 < n_stages else 0
            h = _bit_tap_layer(h, pad, t_len, b_len, table, scale, shift, lif, syn.out_features, dtype, o_pad)
            if lif.spiking:
                form, pad = "bits", o_pad
            else:
                form, h = "ctb", torch.from_numpy(h)
        else:
            kind = "taps"
            if k == 0:
                packed_np = np.zeros((c_in, t_len, b_len), dtype=np.uint8)
                _, exact = pack.pack_ctb_u8(h.numpy(), packed_np)
                h = torch.from_numpy(packed_np) if exact else _pad_ctb(h, extra_steps)
            elif form == "tbc":  # (T, B, C) from an event layer
                h = _to_ctb(h)
            elif form == "bits":
                h = _to_ctb(torch.from_numpy(bit_loops.bits_to_tbc(h, t_len, b_len, pad)))
            form = "ctb"
            h = _tap_layer(h, tap_table(k), scale, shift, lif, syn.out_features, dtype)
        if kinds is not None:
            kinds.append(kind)
        if return_spikes and k < len(model.hidden):
            spikes.append(_as_tbc(h, form, t_len, b_len, pad).to(dtype))
    u = _as_tbc(h, form, t_len, b_len, pad)
    return (u, spikes) if return_spikes else u


def _as_tbc(h, form: str, t_len: int, b_len: int, pad: int) -> Tensor:
    """A layer's output in the time-major (T, B, C) view."""
    if form == "bits":
        return torch.from_numpy(bit_loops.bits_to_tbc(h, t_len, b_len, pad))
    return h.permute(1, 2, 0) if form == "ctb" else h
