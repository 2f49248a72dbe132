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
``nir.Delay`` today: this file is checked by :func:`nir_predict`, which runs the graph step by step (so
cycles through a Delay of >= 1 step are fine), and runs exactly in PyTorch through nirtorch with the
node map of :mod:`.nir_torch`.

Consumer flavours (``consumer="snntorch"`` / ``"norse"``) write a delay-free network in the conventions
those importers read, so that their own ``import_from_nir`` / ``from_nir`` run it as written (float32):

* no ``Delay`` nodes: refused unless every feed-forward delay is 0 and there is no recurrent table;
* ``input -> layer{k}.w: Affine(W, b) -> layer{k}.lif: LIF -> ... -> readout: LIF -> output``; the
  readout is a LIF whose threshold is +inf (neither has LI): read its membrane;
* snnTorch 1.0 fixes dt = 1e-4 s, so time is rescaled: tau = tau_steps * 1e-4 s, r = tau_steps (its
  weight scale r * dt / tau is then 1), one threshold per layer;
* Norse 1.1 ignores ``r`` and defaults to dt = 1e-3 s: tau = tau_steps * 1e-3 s, r = 1, and
  tau_steps folded into the Affine's weights and bias;
* v_threshold = the float32 just below theta (both fire on v > v_threshold in float32).

Each is still an exact NIR graph of the model with Euler steps of its metadata['dt'].
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import ExportError
from .network import DELAY_CONVENTION, Network, require_lif
from .simulate import predict_from_readout

__all__ = ["write_nir", "read_nir", "network_to_nir", "nir_predict", "NIR_READOUT_NODE", "NIR_CONSUMERS",
           "CONSUMER_DT_S", "consumer_file_name", "delay_free_problem", "nir_consumer_report"]

NIR_READOUT_NODE = "readout"
NIR_CONSUMERS = ("nir", "snntorch", "norse")  # "nir": the exact graph, Delay nodes included
CONSUMER_DT_S = {"snntorch": 1e-4, "norse": 1e-3}  # snntorch.import_nir's fixed dt; norse.from_nir's default
_CONSUMER_NAMES = {"snntorch": "snnTorch 1.0", "norse": "Norse 1.1"}


def _nir():
    try:
        import nir
    except ModuleNotFoundError:
        raise ExportError("the NIR format needs nir, which is not installed: pip install 'snn-delays[nir]'") from None
    return nir


def consumer_file_name(consumer: str) -> str:
    """network.nir, network.snntorch.nir, network.norse.nir."""
    _check_consumer(consumer)
    return "network.nir" if consumer == "nir" else f"network.{consumer}.nir"


def _check_consumer(consumer: str) -> None:
    if consumer not in NIR_CONSUMERS:
        raise ExportError(f"unknown NIR consumer {consumer!r}; choose one of {', '.join(NIR_CONSUMERS)}")


def delay_free_problem(net: Network) -> str | None:
    """Why ``net`` cannot be written without Delay nodes (None when every feed-forward delay is 0 and
    no layer has a recurrent table)."""
    if net.is_recurrent:
        return ("it has recurrent tables (recurrent delays are >= 1 step, and snnTorch's RLeaky / Norse's "
                "importer do not take a Delay on the cycle)")
    delayed = [(k, int((l.delay > 0).sum()), int(l.delay.max())) for k, l in enumerate(net.layers)
               if l.n_synapses and l.delay.max() > 0]
    if delayed:
        where = ", ".join(f"layer {k}: {n} synapses, up to {d} steps" for k, n, d in delayed)
        return f"its delays are not all 0 ({where})"
    return None


def network_to_nir(net: Network, consumer: str = "nir"):
    """Build the ``nir.NIRGraph`` of ``net`` (real weights; model delay convention).

    consumer: "nir" (the exact graph, a Delay -> Linear branch per distinct delay) or "snntorch" /
    "norse" (a delay-free graph in that importer's conventions, see the module docstring; raises
    ExportError naming the delays when ``net`` has any).
    """
    _check_consumer(consumer)
    require_lif(net, "NIR")
    if consumer != "nir":
        return _consumer_graph(net, consumer)
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


def _consumer_graph(net: Network, consumer: str):
    """The delay-free graph of ``net`` for snnTorch or Norse (module docstring)."""
    nir = _nir()
    who = _CONSUMER_NAMES[consumer]
    problem = delay_free_problem(net)
    if problem:
        raise ExportError(f"a NIR graph for {who} has no Delay nodes ({who} does not run nir.Delay), but this "
                          f"network cannot do without them: {problem}. Run network.nir (with its delays) in PyTorch "
                          "through neuromorphic_export.nir_torch instead, or export a model trained without delays "
                          "(variant no-delays-wider / no-delays-deeper)")
    dt_s = CONSUMER_DT_S[consumer]
    nodes = {"input": nir.Input(input_type={"input": np.array([net.input_size])})}
    edges = []
    prev = "input"
    for k, layer in enumerate(net.layers):
        readout = layer.kind == "readout"
        neuron = NIR_READOUT_NODE if readout else f"layer{k}.lif"
        w_all, _ = layer.dense()  # (out, in, 1): every delay is 0
        w = np.ascontiguousarray(w_all[:, :, 0]) if w_all.shape[2] else np.zeros((layer.n_out, layer.n_in))
        bias = np.broadcast_to(np.asarray(layer.bias, dtype=np.float64), (layer.n_out,)).copy()
        tau_steps = 1.0 / (1.0 - np.asarray(layer.decay, dtype=np.float64)) * np.ones(layer.n_out)
        if readout:
            threshold = np.full(layer.n_out, np.inf)
        else:
            theta = np.broadcast_to(np.asarray(layer.threshold, dtype=np.float64), (layer.n_out,))
            if consumer == "snntorch" and np.unique(theta).size > 1:
                raise ExportError(f"snnTorch 1.0 takes one threshold per LIF layer; layer {k} has "
                                  f"{np.unique(theta).size} different thresholds")
            # the float32 just below theta: fires on v > it in float32, i.e. on v >= theta
            threshold = np.nextafter(theta.astype(np.float32), np.float32(-np.inf)).astype(np.float64)
        if consumer == "snntorch":
            r = tau_steps.copy()  # snnTorch's weight scale r * dt / tau is then 1
        else:  # Norse ignores r: fold it into the weights
            r = np.ones(layer.n_out)
            w = w * tau_steps[:, None]
            bias = bias * tau_steps
        nodes[f"layer{k}.w"] = nir.Affine(weight=w, bias=bias)
        nodes[neuron] = nir.LIF(tau=tau_steps * dt_s, r=r, v_leak=np.zeros(layer.n_out), v_threshold=threshold,
                                v_reset=np.zeros(layer.n_out))
        edges += [(prev, f"layer{k}.w"), (f"layer{k}.w", neuron)]
        prev = neuron
    nodes["output"] = nir.Output(output_type={"output": np.array([net.n_classes])})
    edges.append((prev, "output"))
    how = ("snntorch.import_nir.import_from_nir(graph); per step out = net(x_t); the readout membrane is "
           "net.readout.mem (snntorch.utils.reset(net) before each sequence)" if consumer == "snntorch" else
           "norse.torch.from_nir(graph) (its default dt = 1e-3); per step out, state = net(x_t, state); the "
           "readout membrane is state.state['readout'][0].v")
    metadata = {"dt": dt_s, "model_dt_ms": net.dt_ms, "extra_steps": net.extra_steps, "consumer": consumer,
                "time_scale": f"one step of the model ({net.dt_ms} ms) is one step of dt = {dt_s} s here",
                "discretisation": "Euler: v[t] = (1 - dt/tau) v[t-1] + dt/tau * (v_leak + r * I[t])",
                "delay_convention": "no delays: every synapse of the model has delay 0",
                "readout_node": NIR_READOUT_NODE,
                "readout": "a LIF with v_threshold = inf (never fires): read its membrane",
                "threshold": "v_threshold is the float32 just below the model's theta (fires on v >= theta)",
                "run_with": how, "target": net.target,
                "prediction": "argmax over classes of sum over t of softmax(readout membrane[t])"}
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=metadata)


def write_nir(net: Network, path: str | os.PathLike, consumer: str = "nir") -> Path:
    """Write ``net`` as a NIR HDF5 file (``nir.write``); ``consumer`` as in :func:`network_to_nir`."""
    graph = network_to_nir(net, consumer)  # before the folder: a refusal leaves nothing
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _nir().write(path, graph)
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


# What each NIR consumer ran of our graphs, measured 2026-12-06 on this project's graphs (network.nir of a
# synthetic model with delays, its no-delays variant, and the consumer flavours), tests/test_export_nir_consumers.py.
_CONSUMER_FACTS: dict[str, dict[str, str]] = {
    "nirtorch+nir_torch": {
        "software": "nirtorch 2.6 nir_to_torch with neuromorphic_export.nir_torch's node map (torch, float64)",
        "file": "network.nir",
        "carries": "everything in network.nir: Delay (a ring buffer per channel), Affine/Linear, the Euler LIF "
                   "(threshold, v_reset) and the LI readout, recurrent cycles; readout, hidden spikes and classes "
                   "equal the simulator's (model convention), count-valued input included",
        "does_not_carry": "nothing of our graphs (other NIR node types, e.g. Conv, CubaLIF, are refused)",
    },
    "nirtorch": {
        "software": "nirtorch 2.6 nir_to_torch with its default map only",
        "file": "none",
        "carries": "Input, Output, Linear, Affine",
        "does_not_carry": "Delay, LIF, LI: refused ('Unknown node type ... mapping does not exist'); its default "
                          "Affine map also leaves the bias at torch's random initialisation",
    },
    "snntorch": {
        "software": "snnTorch 1.0.0, snntorch.import_nir.import_from_nir (float32)",
        "file": "network.snntorch.nir (delay-free networks only)",
        "carries": "Affine, LIF as Leaky (reset to zero, fires on v > v_threshold) with dt fixed at 1e-4 s; the "
                   "consumer flavour rescales time to that dt and writes the readout as a LIF that never fires "
                   "(read net.readout.mem): classes equal the simulator's",
        "does_not_carry": "Delay and LI: network.nir is refused ('Unknown node type'); per-neuron thresholds; any dt "
                          "other than 1e-4 s (tau is read as tau / 1e-4 steps); float64",
    },
    "norse": {
        "software": "Norse 1.1.0, norse.torch.from_nir (nirtorch.load, float32)",
        "file": "network.norse.nir (delay-free networks only)",
        "carries": "Affine, LIF as LIFBoxCell (fires on v > v_threshold, resets to 0) with dt = 1e-3 s by default; "
                   "the consumer flavour folds r into the weights and writes the readout as a LIF that never fires "
                   "(read state.state['readout'][0].v): classes equal the simulator's",
        "does_not_carry": "Delay: network.nir fails to load (KeyError on the first Delay node, which it maps to "
                          "nothing); LI: mapped to nothing and skipped silently (the graph's output becomes the "
                          "readout's input current, not integrated); r (ignored, with a warning); v_reset (always 0); "
                          "float64",
    },
    "sinabs": {
        "software": "Sinabs 3.1.3 (sinabs.from_nir; it installs nir 1.0.4 and nirtorch 2.0.2)",
        "file": "none",
        "carries": "nothing of ours as written. With LIF.v_reset removed by hand it builds our delay-free graphs, but "
                   "its LIF (LIFSqueeze) reads tau in steps with the exponential decay exp(-1/tau), ignores r, emits "
                   "several spikes per step and resets by subtraction: not the model's neuron (read in its source, "
                   "not run)",
        "does_not_carry": "nir 1.0.4 cannot read our files (TypeError: LIF got an unexpected keyword argument "
                          "'v_reset'); Delay; LI with r != 1 ('`r` must be 1')",
    },
    "rockpool": {
        "software": "Rockpool 3.1.0 (rockpool.nn.modules.from_nir; with nir 1.0.4)",
        "file": "none",
        "carries": "nothing of ours",
        "does_not_carry": "nir 1.0.4 cannot read our files (LIF.v_reset); with v_reset removed by hand, Delay is "
                          "refused ('Cannot convert Delay to rockpool module') and a delay-free graph's LIF fails "
                          "(AttributeError: 'LIF' object has no attribute 'tau_mem')",
    },
    "lava": {
        "software": "lava-nc 0.10.0 + lava-dl 0.6.0",
        "file": "none (netx.h5 of the loihi1/loihi2 targets is the Loihi route)",
        "carries": "no NIR importer in either package",
        "does_not_carry": "network.nir",
    },
}


def nir_consumer_report(net: Network) -> dict[str, dict[str, str]]:
    """Per NIR consumer, what it runs of ``net``'s NIR files (export.json's ``nir_consumers``): software and
    version measured, the file to give it (or why none), what it carries and what it does not."""
    problem = delay_free_problem(net)
    report = {}
    for name, facts in _CONSUMER_FACTS.items():
        entry = dict(facts)
        if name in ("snntorch", "norse"):
            entry["file"] = consumer_file_name(name) if problem is None else \
                f"none for this network: {problem} (the {name} flavour has no Delay nodes)"
        report[name] = entry
    return report
