"""Run the project's NIR graphs in PyTorch exactly, through nirtorch with a node map of our own.

No released NIR consumer executes ``nir.Delay`` (snnTorch 1.0 and nirtorch 2.6's default map reject
it, Norse 1.1 drops it, Sinabs 3.1.3 and Rockpool 3.1 reject it and ``LIF.v_reset``; see
docs/export.md, "NIR consumers"). nirtorch's ``nir_to_torch`` takes a node map, so this module
supplies one that computes what ``network.nir`` says with Euler steps of ``dt`` (the graph's
metadata), in float64:

* ``Delay``: a ring buffer per node holding the last max(delay) + 1 steps of its (B, C) input;
  channel c outputs its input of ``delay_steps[c]`` steps ago (0: the same step);
* ``LIF``: v = (1 - dt/tau) v + dt/tau (r I + v_leak); spike where v > v_threshold; v = v_reset there
  (the model's Euler neuron: with tau = tau_steps dt, r = tau_steps and v_leak = 0 this is
  u = decay u + I, as ``simulate.py`` computes it);
* ``LI``: the same without threshold (the readout);
* ``Affine`` / ``Linear``: x W^T (+ b). (nirtorch 2.6's default Affine map leaves the bias at
  torch's random initialisation, so ours replaces it.)

nirtorch feeds a cycle's back edge from the previous step (its ``*_prev_output`` state), which adds
one step to every recurrent path; a Delay on a cycle is therefore built one step shorter (the
project's recurrent delays are >= 1 step), so recurrent graphs run exactly too.

Needs torch and nirtorch (``pip install 'snn-delays[nir]'``); both are imported inside the
functions, so ``neuromorphic_export`` itself stays torch-free.

    module = nir_to_torch(read_nir("export/network.nir"))
    result = run_nir_torch(module, x)           # x (T, B, C_in) spike counts
    result.predictions, result.readout, result.spikes["layer0.lif"]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ExportError
from .nir_format import _nir, read_nir
from .simulate import predict_from_readout

__all__ = ["nir_node_map", "nir_to_torch", "run_nir_torch", "NirTorchResult"]

_MISSING = "running NIR graphs in PyTorch needs {0}, which is not installed: pip install 'snn-delays[nir]'"


def _imports():
    try:
        import torch
    except ModuleNotFoundError:
        raise ExportError(_MISSING.format("torch")) from None
    try:
        import nirtorch
    except ModuleNotFoundError:
        raise ExportError(_MISSING.format("nirtorch")) from None
    return torch, nirtorch, _nir()


@dataclass
class NirTorchResult:
    """What the graph computed on B samples of T input steps, padded with the graph's extra_steps
    (T' = T + extra_steps): readout (T', B, n_classes) float64 membrane of the readout node;
    predictions (B,) int64; spikes: per LIF node name (graph order), (T', B, n) uint8."""

    readout: np.ndarray
    predictions: np.ndarray
    spikes: dict[str, np.ndarray] = field(default_factory=dict)


def _cycle_nodes(graph) -> set[str]:
    """Nodes that lie on a cycle of the graph (they can reach themselves)."""
    succ: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        succ[a].append(b)
    on_cycle = set()
    for start in graph.nodes:
        stack, seen = list(succ[start]), set()
        while stack:
            n = stack.pop()
            if n == start:
                on_cycle.add(start)
                break
            if n not in seen:
                seen.add(n)
                stack.extend(succ[n])
    return on_cycle


def _modules():
    """The torch modules of the node map (built on first use: torch is imported lazily)."""
    torch, _, _ = _imports()
    nn = torch.nn

    class Delay(nn.Module):
        """Per channel c, the input of ``delay_steps[c]`` steps ago; state (ring (L, B, C), step)."""

        def __init__(self, delay_steps: np.ndarray):
            super().__init__()
            self.register_buffer("delay_steps", torch.as_tensor(np.asarray(delay_steps, dtype=np.int64)))
            self.length = int(self.delay_steps.max()) + 1 if self.delay_steps.numel() else 1
            self.register_buffer("channels", torch.arange(self.delay_steps.numel()))

        def forward(self, x, state=None):  # x (B, C) -> (B, C)
            if state is None:
                ring, t = torch.zeros((self.length,) + tuple(x.shape), dtype=x.dtype, device=x.device), 0
            else:
                ring, t = state
            ring[t % self.length] = x
            src = (t - self.delay_steps) % self.length  # steps before 0 read the zeros never written
            y = ring[src, :, self.channels].T  # (C, B) -> (B, C)
            return y, (ring, t + 1)

    class Neuron(nn.Module):
        """Euler LIF (threshold given) or LI (threshold None); state (v after reset, v before, spikes)."""

        def __init__(self, node, dt: float, spiking: bool):
            super().__init__()
            tau = np.asarray(node.tau, dtype=np.float64)
            k = dt / tau
            self.register_buffer("keep", torch.as_tensor(1.0 - k))
            self.register_buffer("gain", torch.as_tensor(k * np.asarray(node.r, dtype=np.float64)))
            self.register_buffer("leak", torch.as_tensor(k * np.asarray(node.v_leak, dtype=np.float64)))
            self.spiking = spiking
            if spiking:
                self.register_buffer("v_threshold", torch.as_tensor(np.asarray(node.v_threshold, dtype=np.float64)))
                self.register_buffer("v_reset", torch.as_tensor(np.asarray(node.v_reset, dtype=np.float64)))

        def forward(self, x, state=None):  # x (B, n) -> spikes (LIF) or membrane (LI), (B, n)
            v = torch.zeros_like(x) if state is None else state[0]
            v = self.keep * v + self.gain * x + self.leak
            if not self.spiking:
                return v, (v, v, None)
            s = v > self.v_threshold
            after = torch.where(s, self.v_reset.to(v.dtype).expand_as(v), v)
            out = s.to(x.dtype)
            return out, (after, v, out)

    class Weights(nn.Module):
        """x W^T (+ b): nir.Linear / nir.Affine."""

        def __init__(self, node):
            super().__init__()
            self.register_buffer("weight", torch.as_tensor(np.asarray(node.weight, dtype=np.float64)))
            bias = getattr(node, "bias", None)
            self.register_buffer("bias", None if bias is None else torch.as_tensor(np.asarray(bias, dtype=np.float64)))

        def forward(self, x):
            y = x @ self.weight.T
            return y if self.bias is None else y + self.bias

    return Delay, Neuron, Weights


def nir_node_map(graph, dt: float | None = None) -> dict[type, Any]:
    """The nirtorch node map for ``graph``: NIR type -> function(node) -> torch module.

    dt: Euler step in seconds (default: the graph's metadata['dt']). Delays are rounded to whole
    steps of dt; a Delay on a cycle is built one step shorter (nirtorch adds one step to back edges).
    """
    _, _, nir = _imports()
    Delay, Neuron, Weights = _modules()
    dt = _dt(graph, dt)
    on_cycle = {id(graph.nodes[n]) for n in _cycle_nodes(graph) if isinstance(graph.nodes[n], nir.Delay)}

    def delay(node):
        steps = np.rint(np.asarray(node.delay, dtype=np.float64).reshape(-1) / dt).astype(np.int64)
        if id(node) in on_cycle:
            if steps.size and steps.min() < 1:
                raise ExportError("a Delay on a cycle of the NIR graph holds less than 1 step; it cannot run step "
                                  "by step")
            steps = steps - 1
        return Delay(steps)

    return {nir.Delay: delay, nir.Linear: Weights, nir.Affine: Weights,
            nir.LIF: lambda node: Neuron(node, dt, True), nir.LI: lambda node: Neuron(node, dt, False)}


def _dt(graph, dt: float | None) -> float:
    meta = dict(getattr(graph, "metadata", {}) or {})
    dt = float(dt if dt is not None else meta.get("dt", 0.0))
    if not dt > 0:
        raise ExportError("the NIR graph has no dt in its metadata; pass dt (seconds)")
    return dt


def nir_to_torch(graph, dt: float | None = None):
    """``graph`` (a ``nir.NIRGraph`` or a path to a .nir file) as a float64 ``torch.fx.GraphModule``
    built by ``nirtorch.nir_to_torch`` with :func:`nir_node_map`.

    One call runs one step: ``out, state = module(x_t, state)`` with x_t (B, C_in) and state None
    at step 0; out (B, n_classes) is the readout membrane. :func:`run_nir_torch` runs whole
    sequences. The graph and dt are kept as ``module.nir_graph`` and ``module.nir_dt``.
    """
    torch, nirtorch, nir = _imports()
    if not isinstance(graph, nir.NIRGraph):
        graph = read_nir(graph)
    dt = _dt(graph, dt)
    unknown = sorted({type(n).__name__ for n in graph.nodes.values()}
                     - {"Input", "Output", "Delay", "Linear", "Affine", "LIF", "LI"})
    if unknown:
        raise ExportError(f"NIR node types {', '.join(unknown)} are not supported by this mapping (it runs Input, "
                          "Output, Delay, Linear, Affine, LIF, LI)")
    module = nirtorch.nir_to_torch(graph, nir_node_map(graph, dt), dtype=torch.float64)
    module.nir_graph, module.nir_dt = graph, dt
    return module


def run_nir_torch(module_or_graph, x: np.ndarray, dt: float | None = None) -> NirTorchResult:
    """Run x (T, B, C_in) (spike counts or graded values) through the graph in PyTorch, float64.

    ``module_or_graph``: what :func:`nir_to_torch` returned, a ``nir.NIRGraph``, or a path. The input is
    padded with metadata['extra_steps'] zero steps, as the model evaluates it. Returns the readout
    membrane (metadata['readout_node'], default "readout"), the predictions (argmax over classes of
    the summed softmax of the readout, as ``simulate``) and the spikes of every LIF node.
    """
    torch, _, nir = _imports()
    module = module_or_graph if hasattr(module_or_graph, "nir_graph") else nir_to_torch(module_or_graph, dt)
    graph = module.nir_graph
    meta = dict(getattr(graph, "metadata", {}) or {})
    x = np.asarray(x, dtype=np.float64)
    inputs = [n for n in graph.nodes.values() if isinstance(n, nir.Input)]
    c_in = int(np.prod(next(iter(inputs[0].input_type.values())))) if inputs else None
    if x.ndim != 3 or (c_in is not None and x.shape[2] != c_in):
        raise ValueError(f"run_nir_torch: expected input (T, B, {c_in}), got {tuple(x.shape)}")
    extra = int(meta.get("extra_steps", 0))
    x = np.concatenate([x, np.zeros((extra,) + x.shape[1:])])
    readout_name = str(meta.get("readout_node", "readout"))
    if readout_name not in graph.nodes:
        raise ExportError(f"the NIR graph has no readout node {readout_name!r}")
    lifs = [n for n, node in graph.nodes.items() if isinstance(node, nir.LIF)]
    key = {n: n.replace(".", "_") for n in lifs + [readout_name]}  # nirtorch's sanitised names
    n_steps = x.shape[0]
    readout = None
    spikes = {n: None for n in lifs if n != readout_name}
    state = None
    with torch.no_grad():
        xt = torch.from_numpy(x)
        for t in range(n_steps):
            _, state = module(xt[t], state)
            memb = state[key[readout_name]][1]  # the readout's membrane before any reset (LI: v)
            if readout is None:
                readout = np.empty((n_steps,) + tuple(memb.shape))
            readout[t] = memb.numpy()
            for n in spikes:
                s = state[key[n]][2].numpy()
                if spikes[n] is None:
                    spikes[n] = np.zeros((n_steps,) + s.shape, dtype=np.uint8)
                spikes[n][t] = s
    return NirTorchResult(readout, predict_from_readout(readout), spikes)
