"""NIR (Neuromorphic Intermediate Representation, nir 1.0.8) export, and a small interpreter.

Each synapse layer k becomes one branch per distinct delay value d::

    <previous> -> layer{k}.delay{d}: Delay(d * dt seconds per input channel)
               -> layer{k}.w{d}: Linear(W masked to delay d)   (the first branch: Affine, carrying
                                                                the folded-BatchNorm bias)
               -> layer{k}.lif: LIF(tau = tau_steps * dt, r = tau_steps, v_leak = 0,
                                    v_threshold = next float below theta, v_reset = 0)

and the readout ``readout``: LI(tau, r, v_leak = 0). A hidden layer with a recurrent table gets a
cycle per distinct recurrent delay d (>= 1 step)::

    layer{k}.lif -> layer{k}.rec.delay{d}: Delay(d * dt per channel) -> layer{k}.rec.w{d}: Linear
                 -> layer{k}.lif

(NIR graphs may contain cycles; the recurrent Delay holds the effective delay, see network.py).
The Euler discretisation with step dt maps
these exactly onto the model (v[t] = (1 - 1/tau_steps) v[t-1] + I[t]); NIR defines no
discretisation, so dt and the delays in steps are stored in the graph's metadata. Delays use
the model's convention (a spike at step t arrives at t + d). No released NIR consumer executes
``nir.Delay`` today: this file is for interchange and archiving, checked by :func:`nir_predict`,
which runs the graph step by step (so cycles through a Delay of >= 1 step are fine).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ExportError
from .network import DELAY_CONVENTION, Network
from .simulate import predict_from_readout

__all__ = ["write_nir", "read_nir", "network_to_nir", "nir_predict", "NIR_READOUT_NODE"]

NIR_READOUT_NODE = "readout"


def _nir():
    try:
        import nir
    except ModuleNotFoundError:
        raise ExportError("the NIR format needs nir, which is not installed: pip install 'snn-delays[nir]'") from None
    return nir


def network_to_nir(net: Network):
    """Build the ``nir.NIRGraph`` of ``net`` (real weights; model delay convention)."""
    nir = _nir()
    dt_s = net.dt_ms / 1000.0
    nodes = {"input": nir.Input(input_type={"input": np.array([net.input_size])})}
    edges = []
    prev = "input"
    for k, layer in enumerate(net.layers):
        w_all, delays = layer.dense()  # (out, in, dmax + 1)
        readout = layer.kind == "readout"
        neuron = NIR_READOUT_NODE if readout else f"layer{k}.lif"
        tau_steps = 1.0 / (1.0 - layer.decay)
        tau = tau_steps * dt_s
        if readout:
            nodes[neuron] = nir.LI(tau=tau, r=tau_steps.copy(), v_leak=np.zeros(layer.n_out))
        else:
            nodes[neuron] = nir.LIF(tau=tau, r=tau_steps.copy(), v_leak=np.zeros(layer.n_out),
                                    v_threshold=np.nextafter(layer.threshold, -np.inf),
                                    v_reset=np.zeros(layer.n_out))
        if len(delays) == 0:
            delays = np.array([0])
        for i, d in enumerate(delays):
            dn, wn = f"layer{k}.delay{d}", f"layer{k}.w{d}"
            nodes[dn] = nir.Delay(delay=np.full(layer.n_in, d * dt_s))
            w = np.ascontiguousarray(w_all[:, :, d])
            nodes[wn] = nir.Affine(weight=w, bias=layer.bias.copy()) if i == 0 else nir.Linear(weight=w)
            edges += [(prev, dn), (dn, wn), (wn, neuron)]
        if layer.recurrent is not None:
            w_rec, rec_delays = layer.dense_recurrent()  # (n, n, dmax + 1)
            for d in rec_delays:
                dn, wn = f"layer{k}.rec.delay{d}", f"layer{k}.rec.w{d}"
                nodes[dn] = nir.Delay(delay=np.full(layer.n_out, d * dt_s))
                nodes[wn] = nir.Linear(weight=np.ascontiguousarray(w_rec[:, :, d]))
                edges += [(neuron, dn), (dn, wn), (wn, neuron)]
        prev = neuron
    nodes["output"] = nir.Output(output_type={"output": np.array([net.n_classes])})
    edges.append((prev, "output"))
    metadata = {"dt": dt_s, "dt_ms": net.dt_ms, "extra_steps": net.extra_steps,
                "delay_convention": DELAY_CONVENTION + " Delay nodes hold d * dt seconds.",
                "recurrent_delay_convention": "layer{k}.rec.delay{d} nodes hold the recurrent delay d * dt (d >= 1 "
                                              "steps): a spike of step t re-enters its layer at step t + d",
                "discretisation": "Euler: v[t] = (1 - dt/tau) v[t-1] + dt/tau * (v_leak + r * I[t])",
                "readout_node": NIR_READOUT_NODE, "target": net.target,
                "prediction": "argmax over classes of sum over t of softmax(readout membrane[t])"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write_nir(net: Network, path: str | os.PathLike) -> Path:
    """Write ``net`` as a NIR HDF5 file (``nir.write``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _nir().write(path, network_to_nir(net))
    return path


def read_nir(path: str | os.PathLike):
    """``nir.read`` with a clear error for a missing or unreadable file."""
    if not Path(path).exists():
        raise ExportError(f"{path} does not exist")
    try:
        return _nir().read(path)
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"{path} is not a readable NIR file: {e}") from None


def _delay_steps(graph, dt: float) -> dict[str, np.ndarray]:
    """Per Delay node, its per-channel delay in steps of ``dt``."""
    nir = _nir()
    return {name: np.rint(np.asarray(node.delay, dtype=np.float64).reshape(-1) / dt).astype(np.int64)
            for name, node in graph.nodes.items() if isinstance(node, nir.Delay)}


def _topological(graph, cut: set[str] = frozenset()) -> list[str]:
    """Nodes in an order where each comes after its inputs, ignoring the edges out of ``cut`` (Delay
    nodes of >= 1 step, whose output at step t only needs inputs of earlier steps)."""
    incoming = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        if a not in cut:
            incoming[b].append(a)
    order, seen = [], set()

    def visit(n: str, stack: tuple = ()) -> None:
        if n in seen:
            return
        if n in stack:
            raise ExportError("the NIR graph has a cycle without a Delay of >= 1 step; it cannot be run step by step")
        for m in incoming[n]:
            visit(m, stack + (n,))
        seen.add(n)
        order.append(n)

    for n in graph.nodes:
        visit(n)
    return order


def nir_predict(graph, x: np.ndarray, dt: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run a NIR graph step by step with Euler steps of ``dt`` seconds (default: metadata['dt']).

    x (T, B, C_in), padded here with metadata['extra_steps'] zero steps. Returns (readout
    membrane (T', B, n_classes), predictions (B,)). Supports Input, Output, Delay, Linear,
    Affine, LIF (v > v_threshold, hard reset), LI; cycles (recurrent layers) must pass through a
    Delay of >= 1 step.
    """
    nir = _nir()
    meta = dict(getattr(graph, "metadata", {}) or {})
    dt = float(dt if dt is not None else meta.get("dt", 0.0))
    if dt <= 0:
        raise ExportError("NIR graph has no dt in its metadata; pass dt (seconds)")
    x = np.asarray(x, dtype=np.float64)
    extra = int(meta.get("extra_steps", 0))
    x = np.concatenate([x, np.zeros((extra,) + x.shape[1:])])
    n_steps, batch = x.shape[:2]
    incoming = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        incoming[b].append(a)
    steps = _delay_steps(graph, dt)
    cut = {name for name, s in steps.items() if s.size and s.min() >= 1}
    order = _topological(graph, cut)
    history: dict[str, np.ndarray] = {}  # Delay node -> its inputs (T, B, C)
    state: dict[str, np.ndarray] = {}  # LIF / LI node -> membrane (B, n)
    traces: dict[str, np.ndarray] = {}  # LIF / LI node -> membrane over time (T, B, n)

    def delayed(name: str, t: int) -> np.ndarray:
        s = steps[name]
        y = np.zeros((batch, len(s)))
        if name in history:
            src = t - s
            ok = np.nonzero(src >= 0)[0]
            y[:, ok] = history[name][src[ok], :, ok].T
        return y

    for t in range(n_steps):
        out = {name: delayed(name, t) for name in cut}
        for name in order:
            node = graph.nodes[name]
            inp = sum(out[m] for m in incoming[name]) if incoming[name] else None
            if isinstance(node, nir.Input):
                out[name] = x[t]
            elif isinstance(node, nir.Output):
                out[name] = inp
            elif isinstance(node, nir.Delay):
                if name not in history:
                    history[name] = np.zeros((n_steps,) + np.shape(inp))
                history[name][t] = inp
                if name not in cut:
                    out[name] = delayed(name, t)
            elif isinstance(node, (nir.Linear, nir.Affine)):
                y = inp @ np.asarray(node.weight).T
                out[name] = y + np.asarray(node.bias) if isinstance(node, nir.Affine) else y
            elif isinstance(node, (nir.LIF, nir.LI)):
                tau = np.asarray(node.tau, dtype=np.float64)
                v = state.get(name, np.zeros(np.shape(inp)))
                v = (1.0 - dt / tau) * v + dt / tau * np.asarray(node.r) * inp + dt / tau * np.asarray(node.v_leak)
                traces.setdefault(name, np.empty((n_steps,) + v.shape))[t] = v
                if isinstance(node, nir.LIF):
                    s = v > np.asarray(node.v_threshold)
                    out[name] = s.astype(np.float64)
                    v = np.where(s, np.asarray(node.v_reset), v)
                else:
                    out[name] = v
                state[name] = v
            else:
                raise ExportError(f"NIR node {name!r} of type {type(node).__name__} is not supported here")
    readout_name = meta.get("readout_node", NIR_READOUT_NODE)
    if readout_name not in traces:
        raise ExportError(f"NIR graph has no readout node {readout_name!r}")
    readout = traces[readout_name]
    return readout, predict_from_readout(readout)
