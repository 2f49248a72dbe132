"""PyNN connection lists (SpiNNaker 1 through sPyNNaker, or any PyNN backend) and a runnable script.

``DIR/pynn/`` holds, per synapse layer k:

    layer<k>_excitatory.csv, layer<k>_inhibitory.csv   rows: pre, post, weight, delay_ms
                                                       (|w| in mV of a delta synapse; delay D * dt)
    layer<k>_recurrent_excitatory.csv, ..._inhibitory.csv   (hidden layers with a recurrent table)
                                                       the same rows, pre and post both in layer k,
                                                       delay_ms = d * dt (d >= 1: the effective delay)
    neurons.json      per layer: n, tau_m_ms and i_offset_nA per neuron (IF_curr_delta parameters
                      whose exact update equals the model's step), v_thresh, the model's decay and
                      bias, readout and recurrent flags; dt_ms, extra_steps, hop_latency_steps
    run_pynn.py       a copy of :mod:`neuromorphic_export.pynn_runner`: builds the network with
                      FromListConnector and IF_curr_delta populations and runs it:
                      python run_pynn.py --simulator nest --input x.npy [--save out.npz]

One projection must not mix signs, hence the excitatory/inhibitory split; the lists hold |w| and
run_pynn.py projects the inhibitory ones with -|w| (PyNN's sign rule for current synapses). Delays
follow the runtime's convention D = d + 1 (every hop adds one step; sPyNNaker's minimum delay is 1
step); recurrent delays are effective already (D = d >= 1), so their delay_ms = d * dt.
IF_curr_delta integrates the exact exponential leak and treats the bias as a constant current;
tau_m = -dt / ln(decay) and i_offset = bias * cm / ((1 - decay) * tau_m) make that update equal the
model's Euler step (:func:`neuromorphic_export.pynn_runner.if_curr_delta_parameters`): run in NEST
3.10 through PyNN 0.13, the export gives the simulator's spikes (tests/test_export_nest.py).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from .network import DELAY_CONVENTION, Network, require_lif
from .pynn_runner import CM_NF, if_curr_delta_parameters

__all__ = ["write_pynn", "connection_lists", "recurrent_connection_lists"]


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
    """Write the connection lists, ``neurons.json`` and ``run_pynn.py`` (a copy of
    :mod:`neuromorphic_export.pynn_runner`) into ``folder``."""
    require_lif(net, "pynn/ (PyNN)")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    hop = max(int(net.attrs.get("hop_latency_steps", 1)), 1)
    neurons, exact = [], True
    for k, layer in enumerate(net.layers):
        exc, inh = connection_lists(net, k)
        for name, rows in (("excitatory", exc), ("inhibitory", inh)):
            _save_rows(folder / f"layer{k}_{name}.csv", rows)
        if layer.recurrent is not None:
            for name, rows in zip(("excitatory", "inhibitory"), recurrent_connection_lists(net, k)):
                _save_rows(folder / f"layer{k}_recurrent_{name}.csv", rows)
        tau_m, i_offset, layer_exact = if_curr_delta_parameters(layer.decay, layer.bias, net.dt_ms, CM_NF)
        exact = exact and layer_exact
        readout = layer.kind == "readout"
        neurons.append({
            "layer": k, "n": layer.n_out, "readout": readout, "recurrent": layer.recurrent is not None,
            "tau_m_ms": tau_m.tolist(), "i_offset_nA": i_offset.tolist(),
            "v_thresh": None if readout else layer.threshold.astype(np.float64).tolist(),
            "decay": layer.decay.astype(np.float64).tolist(), "bias": layer.bias.astype(np.float64).tolist(),
        })
    meta = {"dt_ms": net.dt_ms, "input_size": net.input_size, "extra_steps": net.extra_steps,
            "hop_latency_steps": hop, "cm_nF": CM_NF, "threshold_rule": "V >= v_thresh",
            "delay_convention": f"delay_ms = D * dt with D = d + {hop} (recurrent lists: D = d); " + DELAY_CONVENTION,
            "neuron": "IF_curr_delta, v_rest = v_reset = 0 mV, tau_refrac 0; tau_m_ms and i_offset_nA make its exact "
                      "update equal the model's step u[t] = decay * u[t-1] + input[t] + bias (decay, bias: the "
                      "model's values, mV)" + ("" if exact else "; NOT exact for decay 1 with a bias"),
            "exact": exact, "layers": neurons}
    (folder / "neurons.json").write_text(json.dumps(meta, indent=1))
    shutil.copyfile(Path(__file__).with_name("pynn_runner.py"), folder / "run_pynn.py")
    return folder
