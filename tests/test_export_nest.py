"""The SpiNNaker 1 export's run_pynn.py run unmodified in NEST 3.10 through PyNN 0.13 (the vendor's
own software) gives our simulator's classes, hidden spikes and readout on count-valued input,
feed-forward and recurrent.

NEST and PyNN live in the side environment nest-3.10.0-pynn-0.13.0 built by
``bash scripts/test-env-nest.sh`` (scripts/test.sh runs it); without it the NEST tests skip.
The arithmetic that makes IF_curr_delta's exact update the model's Euler step, the count levels
and the script's self-containment are checked here without NEST.
"""

import ast
import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neuromorphic_export import Convention, export_run, read_network, simulate, write_pynn
from _support import add_recurrent_state, save_synthetic_checkpoint, synthetic_state
from neuromorphic_export.pynn_runner import ONSET_STEP, if_curr_delta_parameters, level_spike_times
from neuromorphic_export.vendor_nest import NEST_ENV, run_nest
from neuromorphic_export.vendor_run import side_env_python

RUNNER = Path(__file__).resolve().parent.parent / "neuromorphic_export" / "pynn_runner.py"
NEST_PYTHON = side_env_python(NEST_ENV, required=False)
needs_nest = pytest.mark.skipif(NEST_PYTHON is None, reason=f"no side environment {NEST_ENV}: run "
                                "`bash scripts/test-env-nest.sh` (it prints why it could not build one)")


@pytest.mark.parametrize("dt_ms", [10.0, 1.0, 0.1])
def test_if_curr_delta_parameters_make_the_exact_update_the_euler_step(dt_ms):
    tau_steps = np.array([1.005, 1.5, 2.0, 3.0, 10.05, 100.0])
    decay = 1.0 - 1.0 / tau_steps
    bias = np.array([0.3, -0.2, 0.0, 0.7, -1.1, 0.05])
    tau_m, i_offset, exact = if_curr_delta_parameters(decay, bias, dt_ms, cm_nF=1.0)
    assert exact
    for a, b, tau, i in zip(decay, bias, tau_m, i_offset):
        p33 = math.exp(-dt_ms / tau)  # NEST iaf_psc_delta: V <- P33 V + P30 I_e + jumps
        if a >= 1 - 1 / 3:
            assert p33 == a  # the leak bit for bit
        else:  # a steep exp: one ulp of tau_m moves p33 by about |ln a| ulps
            assert abs(p33 - a) <= max(1.0, 1.5 * abs(math.log(a))) * np.spacing(a)
        p30 = (1.0 - p33) * tau / 1.0
        assert p30 * i == pytest.approx(b, rel=1e-12, abs=1e-15)
    # tau_steps = 1 (decay 0: nothing kept) and no leak without a bias are exact; no leak with a bias is not
    tau, cur, exact = if_curr_delta_parameters([0.0, 1.0], [0.4, 0.0], dt_ms)
    assert exact and math.exp(-dt_ms / tau[0]) == 0.0 and (1 - math.exp(-dt_ms / tau[0])) * tau[0] * cur[0] == 0.4
    assert math.exp(-dt_ms / tau[1]) == 1.0 and cur[1] == 0.0
    assert not if_curr_delta_parameters([1.0], [0.4], dt_ms)[2]


def test_counts_become_levels_of_spikes_after_the_onset():
    x = np.zeros((5, 2, 3), dtype=np.int64)
    x[0, 0, 1], x[3, 1, 2], x[4, 1, 0] = 3, 1, 2
    levels = level_spike_times(x, dt_ms=2.0)
    assert len(levels) == 3  # level m: the bins holding >= m spikes
    per_source = [sum(len(level[s]) for level in levels) for s in range(6)]
    assert per_source == [0, 3, 0, 2, 0, 1]  # source b * C + c
    assert levels[0][1] == levels[2][1] == [ONSET_STEP * 2.0]  # step 0 at the onset: past min_delay
    assert levels[1][3] == [(4 + ONSET_STEP) * 2.0] and levels[2][3] == []


def test_run_pynn_is_the_module_and_imports_only_pynn_and_numpy(tmp_path):
    state = synthetic_state(np.random.default_rng(0), input_size=6, hidden_size=5, n_layers=1, n_classes=3,
                            kernel_size=4)
    run = save_synthetic_checkpoint(tmp_path / "run", state, n_layers=1, kernel_size=4, extra_steps=2)
    export_run(run, "spinnaker1", tmp_path / "out")
    folder = tmp_path / "out" / "pynn"
    assert (folder / "run_pynn.py").read_bytes() == RUNNER.read_bytes()
    imported = set()
    for node in ast.walk(ast.parse(RUNNER.read_text())):
        if isinstance(node, ast.Import):
            imported |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "run_pynn.py must not import from the package"
            imported.add(node.module.split(".")[0])
    assert imported <= {"__future__", "argparse", "importlib", "json", "math", "sys", "pathlib", "numpy"}
    proc = subprocess.run([sys.executable, str(folder / "run_pynn.py"), "--help"], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0 and "--save" in proc.stdout
    meta = json.loads((folder / "neurons.json").read_text())
    net = read_network(tmp_path / "out")
    for layer, entry in zip(net.layers, meta["layers"]):
        tau, cur, _ = if_curr_delta_parameters(layer.decay, layer.bias, net.dt_ms)
        np.testing.assert_array_equal(entry["tau_m_ms"], tau)
        np.testing.assert_array_equal(entry["i_offset_nA"], cur)
    assert meta["hop_latency_steps"] == 1 and meta["exact"]


def _export(tmp_path, recurrent: bool):
    rng = np.random.default_rng(1)
    state = synthetic_state(rng, input_size=16, hidden_size=12, n_layers=2, n_classes=4, kernel_size=8)
    extra = {}
    if recurrent:
        add_recurrent_state(state, rng, n_layers=2, kernel_size=6, weight_gain=1.5)
        extra = {"recurrent": True, "recurrent_kernel_size": 6, "recurrent_delays": "learned", "recurrent_fanin": 0}
    run = save_synthetic_checkpoint(tmp_path / "run", state, n_layers=2, kernel_size=8, tau_steps=3.0,
                                    readout_tau_steps=2.0, extra_steps=4, **extra)
    export_run(run, "spinnaker1", tmp_path / "exp")
    net = read_network(tmp_path / "exp")
    x = (rng.random((30, 8, 16)) < 0.05) * rng.integers(1, 4, (30, 8, 16))  # counts 1-3 in ~5 % of the bins
    return net, x


def _check_against_simulator(net, x, got):
    ours = simulate(net, x.astype(np.float64), convention="target")
    assert Convention.of(net) == Convention(1, ">=", "float64")  # the SpiNNaker 1 target
    np.testing.assert_array_equal(got.predictions, ours.predictions)
    assert len(set(ours.predictions.tolist())) > 1, "the test network should predict more than one class"
    model_steps = x.shape[0] + net.extra_steps
    for k, s in enumerate(got.spikes):
        assert s.shape == (model_steps, x.shape[1], net.layers[k].n_out)
        np.testing.assert_array_equal(s, ours.spikes[k][k + 1:k + 1 + model_steps], err_msg=f"hidden layer {k}")
        assert s.sum() > 100, "the test network should spike"
    np.testing.assert_allclose(got.readout, ours.readout, rtol=0, atol=1e-9)
    # what the run exercises: counts above 1, inhibitory synapses, biases of both signs
    assert (x > 1).any() and all((l.weight < 0).any() for l in net.layers)
    assert all((l.bias < 0).any() and (l.bias > 0).any() for l in net.layers[:-1])
    binary = simulate(net, np.minimum(x, 1).astype(np.float64), convention="target")
    assert not np.array_equal(binary.spikes[0], ours.spikes[0]), "the counts should matter"
    return ours


@needs_nest
def test_nest_runs_the_spinnaker1_export_spike_for_spike(tmp_path):
    net, x = _export(tmp_path, recurrent=False)
    got = run_nest(tmp_path / "exp", x, batch_size=5)  # two NEST runs: 5 + 3 copies
    assert got.software == "PyNN 0.13.0 + NEST 3.10.0"
    ours = _check_against_simulator(net, x, got)
    # the README's command on one (T, C) sample: prints the class, --save writes (T', n) arrays
    np.save(tmp_path / "x.npy", x[:, 2])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run([str(NEST_PYTHON), "run_pynn.py", "--simulator", "nest", "--input", str(tmp_path / "x.npy"),
                           "--save", str(tmp_path / "one.npz")], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path / "exp" / "pynn", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"predicted class {ours.predictions[2]}" in proc.stdout
    one = np.load(tmp_path / "one.npz")
    assert int(one["pred"]) == ours.predictions[2]
    for k in range(net.n_layers - 1):
        np.testing.assert_array_equal(one[f"layer{k}"], ours.spikes[k][:, 2])  # (T', H): the runtime's axis


@needs_nest
def test_nest_runs_the_recurrent_spinnaker1_export_spike_for_spike(tmp_path):
    net, x = _export(tmp_path, recurrent=True)
    assert all(l.n_recurrent > 0 for l in net.layers[:-1])
    assert sorted(p.name for p in (tmp_path / "exp" / "pynn").glob("layer*_recurrent_*.csv")) == [
        f"layer{k}_recurrent_{kind}.csv" for k in range(2) for kind in ("excitatory", "inhibitory")]
    got = run_nest(tmp_path / "exp", x)
    ours = _check_against_simulator(net, x, got)
    plain = dataclasses.replace(net, layers=[dataclasses.replace(l, recurrent=None) for l in net.layers])
    without = simulate(plain, x.astype(np.float64), convention="target")
    assert not np.array_equal(without.spikes[0], ours.spikes[0]), "the recurrent synapses should matter"


def test_write_pynn_keeps_the_lists_unsigned(tmp_path):
    """The lists stay |w| per receptor (sPyNNaker's format); the sign is the script's."""
    rng = np.random.default_rng(2)
    state = synthetic_state(rng, input_size=6, hidden_size=5, n_layers=1, n_classes=3, kernel_size=4)
    run = save_synthetic_checkpoint(tmp_path / "run", state, n_layers=1, kernel_size=4, extra_steps=2)
    export_run(run, "spinnaker1", tmp_path / "out")
    net = read_network(tmp_path / "out")
    folder = write_pynn(net, tmp_path / "again")
    for k in range(net.n_layers):
        inh = np.loadtxt(folder / f"layer{k}_inhibitory.csv", delimiter=",", skiprows=1, ndmin=2)
        assert len(inh) and (inh[:, 2] > 0).all()


def test_run_nest_refuses_input_that_is_not_counts(tmp_path):
    from neuromorphic_export import ExportError

    state = synthetic_state(np.random.default_rng(3), input_size=6, hidden_size=5, n_layers=1, n_classes=3,
                            kernel_size=4)
    run = save_synthetic_checkpoint(tmp_path / "run", state, n_layers=1, kernel_size=4, extra_steps=2)
    export_run(run, "spinnaker1", tmp_path / "out")
    with pytest.raises(ExportError, match="spike counts"):
        run_nest(tmp_path / "out", np.full((5, 2, 6), 0.5), python=sys.executable)
    with pytest.raises(ValueError, match=r"expected input \(T, B, 6\)"):
        run_nest(tmp_path / "out", np.zeros((5, 6)), python=sys.executable)
    with pytest.raises(ExportError, match="no PyNN export"):
        run_nest(tmp_path / "run", np.zeros((5, 2, 6)), python=sys.executable)
