"""PyNN connection lists (SpiNNaker 1 through sPyNNaker, or any PyNN backend) and a runnable script.

``DIR/pynn/`` holds, per synapse layer k:

    layer<k>_excitatory.csv, layer<k>_inhibitory.csv   rows: pre, post, weight, delay_ms
                                                       (|w| in mV of a delta synapse; delay D * dt)
    layer<k>_recurrent_excitatory.csv, ..._inhibitory.csv   (hidden layers with a recurrent table)
                                                       the same rows, pre and post both in layer k,
                                                       delay_ms = d * dt (d >= 1: the effective delay)
    neurons.json      per layer: n, tau_m_ms, v_thresh, i_offset_nA (bias as a current), readout flag
    run_pynn.py       builds the network with FromListConnector and IF_curr_delta populations and
                      runs one input sample:  python run_pynn.py --simulator nest --input x.npy

One projection must not mix signs, hence the excitatory/inhibitory split. Delays follow the
runtime's convention D = d + 1 (every hop adds one step; sPyNNaker's minimum delay is 1 step);
recurrent delays are effective already (D = d >= 1), so their delay_ms = d * dt.
IF_curr_delta integrates with an exponential leak and treats the bias as a constant current: it
approximates the model's Euler update (exact for the weights and delays, not for the leak).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .network import DELAY_CONVENTION, Network

__all__ = ["write_pynn", "connection_lists", "recurrent_connection_lists"]

CM_NF = 1.0  # membrane capacitance used to turn the per-step bias into a current


def connection_lists(net: Network, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(excitatory, inhibitory) rows (pre, post, |weight|, delay_ms) of layer k, D = d + hop."""
    layer = net.layers[k]
    hop = max(int(net.attrs.get("hop_latency_steps", 1)), 1)
    w = layer.real_weight
    rows = np.stack([layer.pre, layer.post, np.abs(w), (layer.delay + hop) * net.dt_ms], axis=1)
    return rows[w > 0], rows[w < 0]


def recurrent_connection_lists(net: Network, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(excitatory, inhibitory) rows (pre, post, |weight|, delay_ms) of layer k's recurrent table,
    delay_ms = d * dt (the effective delay: no hop added). Empty without a recurrent table."""
    layer = net.layers[k]
    if layer.recurrent is None:
        return np.zeros((0, 4)), np.zeros((0, 4))
    r, w = layer.recurrent, layer.recurrent_real_weight
    rows = np.stack([r.pre, r.post, np.abs(w), r.delay * net.dt_ms], axis=1)
    return rows[w > 0], rows[w < 0]


def _save_rows(path: Path, rows: np.ndarray) -> None:
    np.savetxt(path, rows, delimiter=",", fmt=["%d", "%d", "%.17g", "%.10g"], header="pre,post,weight,delay_ms",
               comments="")


def write_pynn(net: Network, folder: str | os.PathLike) -> Path:
    """Write the connection lists, ``neurons.json`` and ``run_pynn.py`` into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    neurons = []
    for k, layer in enumerate(net.layers):
        exc, inh = connection_lists(net, k)
        for name, rows in (("excitatory", exc), ("inhibitory", inh)):
            _save_rows(folder / f"layer{k}_{name}.csv", rows)
        if layer.recurrent is not None:
            for name, rows in zip(("excitatory", "inhibitory"), recurrent_connection_lists(net, k)):
                _save_rows(folder / f"layer{k}_recurrent_{name}.csv", rows)
        tau_steps = float(1.0 / (1.0 - layer.decay[0])) if layer.decay[0] < 1 else float("inf")
        neurons.append({
            "layer": k, "n": layer.n_out, "readout": layer.kind == "readout",
            "recurrent": layer.recurrent is not None,
            "tau_m_ms": tau_steps * net.dt_ms,
            "v_thresh": None if layer.kind == "readout" else float(layer.threshold[0]),
            "i_offset_nA": (layer.bias * CM_NF / net.dt_ms).tolist(),
        })
    meta = {"dt_ms": net.dt_ms, "input_size": net.input_size, "extra_steps": net.extra_steps,
            "cm_nF": CM_NF, "delay_convention": "delay_ms = D * dt with D = d + 1 (recurrent lists: D = d); "
                                                + DELAY_CONVENTION,
            "layers": neurons}
    (folder / "neurons.json").write_text(json.dumps(meta, indent=1))
    (folder / "run_pynn.py").write_text(_SCRIPT)
    return folder


_SCRIPT = '''"""Run the exported network on one input sample with PyNN (written by neuromorphic_export).

    python run_pynn.py --simulator nest --input x.npy     # x: (T, C) spike counts of one sample
    python run_pynn.py --simulator spiNNaker --input x.npy

Prints the predicted class (argmax over classes of the sum over time of softmax(readout v)).
"""
import argparse
import importlib
import json
from pathlib import Path

import numpy as np

here = Path(__file__).resolve().parent


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--simulator", default="nest", help="nest, brian2, spiNNaker, ...")
    ap.add_argument("--input", required=True, help=".npy array (T, C) of one sample")
    args = ap.parse_args()
    sim = importlib.import_module(f"pyNN.{args.simulator}")
    meta = json.loads((here / "neurons.json").read_text())
    dt = meta["dt_ms"]
    x = np.load(args.input)
    steps = x.shape[0] + meta["extra_steps"] + len(meta["layers"])
    sim.setup(timestep=dt, min_delay=dt)
    times = [[(t + 1) * dt for t in np.nonzero(x[:, c])[0]] for c in range(x.shape[1])]
    prev = sim.Population(meta["input_size"], sim.SpikeSourceArray(spike_times=times))
    for layer in meta["layers"]:
        k = layer["layer"]
        params = dict(tau_m=layer["tau_m_ms"], cm=meta["cm_nF"], v_rest=0.0, v_reset=0.0, tau_refrac=0.0,
                      v_thresh=1e9 if layer["readout"] else layer["v_thresh"])
        pop = sim.Population(layer["n"], sim.IF_curr_delta(**params), initial_values={"v": 0.0})
        pop.set(i_offset=layer["i_offset_nA"])
        sources = [(prev, "")] + ([(pop, "recurrent_")] if layer.get("recurrent") else [])  # a layer onto itself
        for source, kind in sources:
            for receptor in ("excitatory", "inhibitory"):
                rows = np.loadtxt(here / f"layer{k}_{kind}{receptor}.csv", delimiter=",", skiprows=1, ndmin=2)
                if len(rows):
                    conn = sim.FromListConnector([(int(a), int(b), w, d) for a, b, w, d in rows],
                                                 column_names=["weight", "delay"])
                    sim.Projection(source, pop, conn, receptor_type=receptor)
        prev = pop
    prev.record("v")
    sim.run(steps * dt)
    v = prev.get_data().segments[0].analogsignals[0].magnitude  # (steps, n_classes)
    z = np.exp(v - v.max(1, keepdims=True))
    print("predicted class", int((z / z.sum(1, keepdims=True)).sum(0).argmax()))
    sim.end()


if __name__ == "__main__":
    main()
'''
