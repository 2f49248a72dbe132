"""NIR (Neuromorphic Intermediate Representation, nir 1.0.8) export, and a small interpreter.

Each synapse layer k becomes one branch per distinct delay value d::

    <previous> -> layer{k}.delay{d}: Delay(d * dt seconds per input channel)
               -> layer{k}.w{d}: Linear(W masked to delay d)   (the first branch: Affine, carrying
                                                                the folded-BatchNorm bias)
               -> layer{k}.lif: LIF(tau = tau_steps * dt, r = tau_steps, v_leak = 0,
                                    v_threshold = next float below theta, v_reset = 0)

and the readout ``readout``: LI(tau, r, v_leak = 0). The Euler discretisation with step dt maps
these exactly onto the model (v[t] = (1 - 1/tau_steps) v[t-1] + I[t]); NIR defines no
discretisation, so dt and the delays in steps are stored in the graph's metadata. Delays use
the model's convention (a spike at step t arrives at t + d). No released NIR consumer executes
``nir.Delay`` today: this file is for interchange and archiving, checked by :func:`nir_predict`.
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
        prev = neuron
    nodes["output"] = nir.Output(output_type={"output": np.array([net.n_classes])})
    edges.append((prev, "output"))
    metadata = {"dt": dt_s, "dt_ms": net.dt_ms, "extra_steps": net.extra_steps,
                "delay_convention": DELAY_CONVENTION + " Delay nodes hold d * dt seconds.",
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


def _topological(graph) -> list[str]:
    incoming = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        incoming[b].append(a)
    order, seen = [], set()

    def visit(n: str, stack: tuple = ()) -> None:
        if n in seen:
            return
        if n in stack:
            raise ExportError("the NIR graph has a cycle; this interpreter runs feed-forward graphs")
        for m in incoming[n]:
            visit(m, stack + (n,))
        seen.add(n)
        order.append(n)

    for n in graph.nodes:
        visit(n)
    return order


def nir_predict(graph, x: np.ndarray, dt: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run a feed-forward NIR graph with Euler steps of ``dt`` seconds (default: metadata['dt']).

    x (T, B, C_in), padded here with metadata['extra_steps'] zero steps. Returns (readout
    membrane (T', B, n_classes), predictions (B,)). Supports Input, Output, Delay, Linear,
    Affine, LIF (v > v_threshold, hard reset), LI.
    """
    nir = _nir()
    meta = dict(getattr(graph, "metadata", {}) or {})
    dt = float(dt if dt is not None else meta.get("dt", 0.0))
    if dt <= 0:
        raise ExportError("NIR graph has no dt in its metadata; pass dt (seconds)")
    x = np.asarray(x, dtype=np.float64)
    extra = int(meta.get("extra_steps", 0))
    x = np.concatenate([x, np.zeros((extra,) + x.shape[1:])])
    incoming = {n: [] for n in graph.nodes}
    for a, b in graph.edges:
        incoming[b].append(a)
    out: dict[str, np.ndarray] = {}
    readout_name = meta.get("readout_node", NIR_READOUT_NODE)
    membranes: dict[str, np.ndarray] = {}
    for name in _topological(graph):
        node = graph.nodes[name]
        inp = sum(out[m] for m in incoming[name]) if incoming[name] else None
        if isinstance(node, nir.Input):
            out[name] = x
        elif isinstance(node, nir.Output):
            out[name] = inp
        elif isinstance(node, nir.Delay):
            steps = np.rint(np.asarray(node.delay) / dt).astype(int)
            y = np.zeros_like(inp)
            for c in range(inp.shape[-1]):
                s = steps[c]
                if s < inp.shape[0]:
                    y[s:, :, c] = inp[: inp.shape[0] - s, :, c]
            out[name] = y
        elif isinstance(node, (nir.Linear, nir.Affine)):
            y = inp @ np.asarray(node.weight).T
            if isinstance(node, nir.Affine):
                y = y + np.asarray(node.bias)
            out[name] = y
        elif isinstance(node, (nir.LIF, nir.LI)):
            tau = np.asarray(node.tau, dtype=np.float64)
            decay = 1.0 - dt / tau
            gain = dt / tau * np.asarray(node.r)
            leak = dt / tau * np.asarray(node.v_leak)
            v = np.zeros(inp.shape[1:])
            trace = np.empty_like(inp)
            spikes = np.zeros_like(inp)
            for t in range(inp.shape[0]):
                v = decay * v + gain * inp[t] + leak
                trace[t] = v
                if isinstance(node, nir.LIF):
                    s = v > np.asarray(node.v_threshold)
                    spikes[t] = s
                    v = np.where(s, np.asarray(node.v_reset), v)
            membranes[name] = trace
            out[name] = spikes if isinstance(node, nir.LIF) else trace
        else:
            raise ExportError(f"NIR node {name!r} of type {type(node).__name__} is not supported here")
    if readout_name not in membranes:
        raise ExportError(f"NIR graph has no readout node {readout_name!r}")
    readout = membranes[readout_name]
    return readout, predict_from_readout(readout)
