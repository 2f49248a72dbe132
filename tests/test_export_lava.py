"""Loihi exports (netx.h5) run in Intel Lava itself (lava-nc 0.10.0 + lava-dl 0.6.0, fixed point):
identical classes, identical spikes for every hidden neuron at every step and an identical readout
voltage against our simulator in the loihi target's convention, on count-valued input (counts 1-3),
feed-forward and recurrent.

Lava lives in a side environment (Python 3.10) built by scripts/test-env-lava.sh (scripts/test.sh
runs it before pytest); these tests skip, saying so, only where it could not be built."""

import re
import shutil
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from neuromorphic_export import Convention, export_run, read_network, simulate
from _support import add_recurrent_state, save_synthetic_checkpoint, synthetic_state
from neuromorphic_export.vendor_lava import LAVA_ENV, run_lava
from neuromorphic_export.vendor_run import envs_root, side_env_python

LAVA_PYTHON = side_env_python(LAVA_ENV, required=False)
pytestmark = pytest.mark.skipif(
    LAVA_PYTHON is None, reason=f"Lava side environment {LAVA_ENV} not built under {envs_root()} (scripts/test-env-"
                                "lava.sh builds it; it needs Python 3.10 and PyPI)")

DOCS = Path(__file__).resolve().parents[1] / "docs" / "export.md"
T, B = 30, 3


def _export(tmp_path, name, recurrent):
    rng = np.random.default_rng(7)
    state = synthetic_state(rng, input_size=12, hidden_size=10, n_layers=2, n_classes=4, kernel_size=9, fanin=8)
    extra = {}
    if recurrent:
        add_recurrent_state(state, rng, 2, 5)
        extra = {"recurrent": True, "recurrent_kernel_size": 5, "recurrent_delays": "learned", "recurrent_fanin": 0}
    path = save_synthetic_checkpoint(tmp_path / f"run-{name}", state, n_layers=2, kernel_size=9, extra_steps=6,
                                     **extra)
    out = tmp_path / f"export-{name}"
    report = export_run(path, "loihi2", out)
    return out, report


@pytest.fixture(scope="module")
def counts():
    """(T, B, 12) counts 1-3 in about 5 % of the bins."""
    rng = np.random.default_rng(11)
    x = (rng.random((T, B, 12)) < 0.05) * rng.integers(1, 4, (T, B, 12))
    assert (x > 1).sum() > 5
    return x.astype(np.float64)


def _check_counts_matter(chip, x, sim):
    """Reading the counts as booleans (netx's default input_message_bits=0) would change the spikes."""
    as_bool = simulate(chip, (x > 0).astype(np.float64))
    assert any(not np.array_equal(a, b) for a, b in zip(as_bool.spikes, sim.spikes))


def test_feedforward_export_runs_in_lava_spike_for_spike(tmp_path, counts):
    out, report = _export(tmp_path, "ff", recurrent=False)
    assert report["netx"]["input_message_bits"] == 8 and report["netx"]["recurrent_layers"] == []
    chip = read_network(out)
    assert Convention.of(chip) == Convention(1, ">", "loihi")
    sim = simulate(chip, counts)
    _check_counts_matter(chip, counts, sim)
    run = run_lava(out, counts)  # hidden spikes on the model's axis
    assert "lava-nc 0.10.0" in run.software and "lava-dl 0.6.0" in run.software
    np.testing.assert_array_equal(run.predictions, sim.predictions)
    np.testing.assert_array_equal(run.readout, sim.readout)  # integer voltage / (scale * 64): exact
    for k, s in enumerate(sim.spikes):
        expected = s[k + 1:k + 1 + T + chip.extra_steps]
        assert run.spikes[k].shape == expected.shape == (T + chip.extra_steps, B, 10)
        np.testing.assert_array_equal(run.spikes[k], expected, err_msg=f"layer {k}")
        assert expected.sum() > 20  # the layer is active



def test_recurrent_export_runs_in_lava_spike_for_spike(tmp_path, counts):
    out, report = _export(tmp_path, "rec", recurrent=True)
    assert report["netx"]["recurrent_layers"] == [0, 1] and report["delays"]["carried_to_chip"] is True
    with h5py.File(out / "netx.h5") as f:
        assert [f[f"layer/{k}/type"][()] for k in (1, 2, 3)] == [b"dense_rec", b"dense_rec", b"dense"]
        assert f["layer/0/shape"][()][0] == report["netx"]["input_channels"] > 12  # padded: 12 + 10
    chip = read_network(out)
    assert all(l.n_recurrent > 0 for l in chip.layers[:-1])
    sim = simulate(chip, counts)
    _check_counts_matter(chip, counts, sim)
    plain = chip.copy()
    for layer in plain.layers:
        layer.recurrent = None
    assert not np.array_equal(simulate(plain, counts).spikes[1], sim.spikes[1])  # the recurrence matters
    run = run_lava(out, counts, model_axis=False)  # the runtime's axis: every step compared
    np.testing.assert_array_equal(run.predictions, sim.predictions)
    np.testing.assert_array_equal(run.readout, sim.readout)
    for k, s in enumerate(sim.spikes):
        assert run.spikes[k].shape == s.shape
        np.testing.assert_array_equal(run.spikes[k], s, err_msg=f"layer {k}")
    assert not any("padding neurons fired" in n for n in run.notes)


def test_the_python_in_docs_runs_netx_in_lava_and_a_copy_without_delays_differs(tmp_path, counts):
    """docs/export.md's "Running netx.h5 in Lava" block, run as written on one sample of a recurrent
    export (its input is wider than the model's), and on a copy of the file with every delay set to
    0 (negative check: Lava applies the delays), both in one Python of the Lava environment."""
    text = DOCS.read_text()
    block = re.search(r"## Running netx\.h5 in Lava.*?```python\n(.*?)```", text, re.S)
    assert block, "docs/export.md has no python block under '## Running netx.h5 in Lava'"
    out, _ = _export(tmp_path, "docs", recurrent=True)
    for name in ("as-exported", "no-delays"):
        (tmp_path / name).mkdir()
        shutil.copy(out / "netx.h5", tmp_path / name / "netx.h5")
        np.save(tmp_path / name / "x.npy", counts[:, 0].astype(np.int64))  # (T, C_in) one sample
    with h5py.File(tmp_path / "no-delays" / "netx.h5", "r+") as f:
        for k in (1, 2, 3):
            f[f"layer/{k}/delay"][...] = 0
    (tmp_path / "user.py").write_text(block.group(1))
    driver = ("import os, runpy, sys\n"
              "for name in sys.argv[1:]:\n"
              "    os.chdir(name); print('run', name, flush=True)\n"
              "    runpy.run_path('../user.py', run_name='__main__'); os.chdir('..')\n")
    proc = subprocess.run([str(LAVA_PYTHON), "-c", driver, "as-exported", "no-delays"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = re.findall(r"^run (\S+)$.*?^class (\d+)$\s*^hidden spikes per layer \[(\d+), (\d+)\]$", proc.stdout,
                      re.S | re.M)  # (lava-dl prints a warning of its own at the first import)
    assert [r[0] for r in runs] == ["as-exported", "no-delays"], proc.stdout
    sim = simulate(read_network(out), counts[:, :1])
    expected = [int(s.sum()) for s in sim.spikes]
    assert int(runs[0][1]) == sim.predictions[0]
    assert [int(runs[0][2]), int(runs[0][3])] == expected
    assert [int(runs[1][2]), int(runs[1][3])] != expected  # the delays are applied
