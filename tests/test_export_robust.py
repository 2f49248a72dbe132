"""The exporter under adversarial use: bit widths a table cannot hold, whole-folder atomic exports
(SIGKILL at random moments, a previous export of another target, foreign files, a read-only folder,
a full disk), tampered network.h5 files and crafted checkpoints, another run's export, progress."""

import errno
import sys
import json
import os
import random
import signal
import time

import h5py
import numpy as np
import pytest

from neuromorphic_export import ExportError, export_run, load_checkpoint, network_from_checkpoint, read_network
from neuromorphic_export._io import Progress
from _support import save_synthetic_checkpoint, synthetic_state
from neuromorphic_export.targets import Violation

cli = pytest.importorskip("snn_delays.cli")


def _run(tmp_path, name="run", seed=0, width=10, **config):
    state = synthetic_state(np.random.default_rng(seed), input_size=12, hidden_size=width, n_layers=2,
                            n_classes=4, kernel_size=9, kernel_count=2)
    save_synthetic_checkpoint(tmp_path / name, state, n_layers=2, kernel_size=config.pop("kernel_size", 9),
                              **config)
    return tmp_path / name


def _cli(capsys, *argv):
    """(exit status, stderr) of one command; asserts no traceback."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    return code, captured.err


def _snapshot(folder):
    """{relative path: bytes} of every file under folder."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _staging_left(parent):
    return [p.name for p in parent.iterdir() if ".export-" in p.name]


# -- weight bits ------------------------------------------------------------------------------------
@pytest.mark.parametrize("bits", [33, 40])
def test_weight_bits_beyond_int32_are_refused(tmp_path, capsys, bits):
    run = _run(tmp_path)
    code, err = _cli(capsys, "export", run, "--target", "generic", "--weight-bits", bits, "--out", tmp_path / "o")
    assert code == 2 and f"--weight-bits {bits}" in err and "int32" in err and "2 to 32" in err
    assert not (tmp_path / "o").exists()


def test_32_weight_bits_keep_every_sign_in_every_file(tmp_path):
    run = _run(tmp_path)
    export_run(run, "generic", tmp_path / "o", weight_bits=32)
    float_net = network_from_checkpoint(load_checkpoint(run))
    back = read_network(tmp_path / "o")
    for a, b in zip(float_net.layers, back.layers):
        np.testing.assert_array_equal(np.sign(a.weight), np.sign(b.weight))
        np.testing.assert_allclose(b.real_weight, a.weight, rtol=0, atol=np.abs(a.weight).max() / 2 ** 31)
    exc = np.loadtxt(tmp_path / "o/pynn/layer0_excitatory.csv", delimiter=",", skiprows=1, ndmin=2)
    assert len(exc) == int((back.layers[0].weight > 0).sum())  # PyNN agrees with network.h5


def test_loihi_weight_bits_message_names_the_request_and_the_limit(tmp_path, capsys):
    run = _run(tmp_path)
    code, err = _cli(capsys, "export", run, "--target", "loihi1", "--weight-bits", 16, "--out", tmp_path / "o")
    assert code == 2 and "--weight-bits 16" in err and "2 to 8" in err and "1 weight bits" not in err
    code, err = _cli(capsys, "export", run, "--target", "loihi1", "--weight-bits", 1, "--out", tmp_path / "o")
    assert code == 2 and "too few" in err


def test_counts_of_one_read_in_the_singular():
    assert "1 synapse with effective delay" in str(Violation(0, "synapses with effective delay up to 9 steps", 1, "x"))
    assert "1 (pre, post) pair with" in str(Violation(0, "(pre, post) pairs with several delays", 1, "x"))
    assert "3 neurons whose" in str(Violation(0, "neurons whose bias is out of range", 3, "x"))


# -- the export folder ------------------------------------------------------------------------------
def test_export_replaces_another_targets_export_completely(tmp_path, capsys):
    run, out = _run(tmp_path), tmp_path / "exp"
    assert _cli(capsys, "export", run, "--target", "generic", "--out", out)[0] == 0
    assert (out / "network.nir").exists() and (out / "pynn").is_dir()
    assert _cli(capsys, "export", run, "--target", "loihi2", "--out", out, "--clip")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "network.h5", "netx.h5"]
    assert json.loads((out / "export.json").read_text())["target"] == "loihi2"
    assert _staging_left(tmp_path) == []


def test_folder_with_other_files_is_refused_unless_force(tmp_path, capsys):
    run, out = _run(tmp_path), tmp_path / "exp"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, err = _cli(capsys, "export", run, "--out", out)
    assert code == 2 and "notes.txt" in err and "--force" in err
    assert (out / "notes.txt").read_text() == "mine" and not (out / "network.h5").exists()
    assert _cli(capsys, "export", run, "--out", out, "--force")[0] == 0
    assert not (out / "notes.txt").exists() and read_network(out).n_layers == 3


def test_out_holding_the_checkpoint_is_refused_even_with_force(tmp_path, capsys):
    run = _run(tmp_path)
    for out in (run, tmp_path):
        code, err = _cli(capsys, "export", run, "--out", out, "--force")
        assert code == 2 and "holds the checkpoint" in err
    assert load_checkpoint(run).n_classes == 4


def test_read_only_folder_is_refused_and_the_previous_export_kept(tmp_path, capsys):
    run, out = _run(tmp_path), tmp_path / "exp"
    export_run(run, "generic", out)
    before = _snapshot(out)
    out.chmod(0o555)
    try:
        code, err = _cli(capsys, "export", run, "--target", "spinnaker1", "--out", out)
    finally:
        out.chmod(0o755)
    assert code == 2 and "read-only" in err and str(out) in err
    assert _snapshot(out) == before


def test_full_disk_ends_in_one_line_and_keeps_the_previous_export(tmp_path, capsys, monkeypatch):
    import neuromorphic_export.nir_format as nir_format

    run, out = _run(tmp_path), tmp_path / "exp"
    export_run(run, "spinnaker1", out)
    before = _snapshot(out)

    def full_disk(net, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(nir_format, "write_nir", full_disk)
    code, err = _cli(capsys, "export", run, "--target", "generic", "--out", out)
    assert code == 2 and "No space left on device" in err and "unchanged" in err
    assert len(err.strip().splitlines()) == 1
    assert _snapshot(out) == before and _staging_left(tmp_path) == []


def _is_complete_export(folder):
    """network.h5 readable, every file export.json lists present and readable, nothing else."""
    from neuromorphic_export import read_netx, read_nir

    report = json.loads((folder / "export.json").read_text())
    net = read_network(folder)
    assert net.target == report["target"]
    names = sorted(os.path.basename(f) for f in report["files"]) + ["export.json"]
    assert sorted(p.name for p in folder.iterdir()) == sorted(names)
    if "network.nir" in names:
        read_nir(folder / "network.nir")
    if "netx.h5" in names:
        read_netx(folder / "netx.h5")
    if "pynn" in names:
        assert len(list((folder / "pynn").glob("layer*_*.csv"))) == 2 * net.n_layers
        json.loads((folder / "pynn" / "neurons.json").read_text())
    return report["target"]


def test_sigkill_at_random_moments_leaves_the_old_or_the_new_export(tmp_path):
    run, out = _run(tmp_path), tmp_path / "exp"
    t0 = time.monotonic()
    export_run(run, "loihi2", out, clip=True)
    duration = time.monotonic() - t0
    rng = random.Random(0)
    targets = []
    for attempt in range(5):
        pid = os.fork()
        if pid == 0:  # the child exports alternately for two targets until it is killed
            try:
                for k in range(1000):
                    export_run(run, ("generic", "loihi2")[k % 2], out, clip=True)
            finally:
                os._exit(0)
        time.sleep(rng.uniform(0.2, 3.0) * duration)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        targets.append(_is_complete_export(out))
    export_run(run, "generic", out)  # the next export removes what the killed ones left
    assert _is_complete_export(out) == "generic"
    assert _staging_left(tmp_path) == []


# -- tampered network.h5 ----------------------------------------------------------------------------
TAMPERED = [
    ("/", "format_version", "abc", "format_version"),
    ("/", "n_layers", 0, "n_layers"),
    ("/", "n_layers", 7, "n_layers"),
    ("layer/1", "n_out", 7, "n_out"),
    ("/", "n_classes", 9, "n_classes"),
    ("/", "hop_latency_steps", -1, "hop_latency_steps"),
    ("/", "threshold_rule", "=>", "threshold_rule"),
    ("/", "arithmetic", "fixed", "arithmetic"),
    ("/", "extra_steps", 1e9, "extra_steps"),
    ("layer/0", "n_in", 10 ** 9, "n_in"),
    ("/", "dt_ms", -10.0, "dt_ms"),
]


@pytest.mark.parametrize("group, key, value, needle", TAMPERED, ids=[f"{t[1]}={t[2]}" for t in TAMPERED])
def test_tampered_network_h5_gives_one_clear_line(tmp_path, capsys, group, key, value, needle):
    run, out = _run(tmp_path), tmp_path / "exp"
    export_run(run, "generic", out)
    with h5py.File(out / "network.h5", "r+") as f:
        f[group].attrs[key] = value
    with pytest.raises(ExportError, match=needle):
        read_network(out)
    code, err = _cli(capsys, "verify", run, out)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1


def test_network_h5_with_a_missing_dataset_or_wrong_type(tmp_path):
    run, out = _run(tmp_path), tmp_path / "exp"
    export_run(run, "generic", out)
    with h5py.File(out / "network.h5", "r+") as f:
        del f["layer/0/neurons/bias"]
    with pytest.raises(ExportError, match="bias"):
        read_network(out)


# -- crafted checkpoints ----------------------------------------------------------------------------
@pytest.mark.parametrize("config, needle", [
    ({"kernel_size": 10 ** 9}, "kernel_size"),
    ({"hidden_size": 10 ** 6}, "hidden_size"),
    ({"extra_steps": 10 ** 9}, "extra_steps"),
    ({"input_size": 10 ** 9}, "input_size"),
    ({"dt_ms": 0.0}, "dt_ms"),
])
def test_crafted_checkpoint_sizes_are_refused_before_allocating(tmp_path, capsys, config, needle):
    run = _run(tmp_path, **config)
    t0 = time.monotonic()
    with pytest.raises(ExportError, match=needle):
        load_checkpoint(run)
    code, err = _cli(capsys, "export", run, "--out", tmp_path / "o")
    assert code == 2 and needle in err
    assert time.monotonic() - t0 < 5


def test_simulation_beyond_the_memory_limit_is_refused(tmp_path, monkeypatch):
    sim = sys.modules["neuromorphic_export.simulate"]

    net = network_from_checkpoint(load_checkpoint(_run(tmp_path)))
    monkeypatch.setattr(sim, "MEMORY_LIMIT_BYTES", 10_000)
    with pytest.raises(ExportError, match="GiB"):
        sim.simulate(net, np.zeros((50, 8, 12)))


# -- verify -----------------------------------------------------------------------------------------
def test_verify_refuses_another_runs_export(tmp_path, capsys):
    run_a = _run(tmp_path, "a")
    run_b = _run(tmp_path, "b", seed=1, width=7)
    run_c = _run(tmp_path, "c", seed=2)  # the sizes of a, other weights
    export_run(run_b, "generic", tmp_path / "exp_b")
    export_run(run_c, "generic", tmp_path / "exp_c")
    code, err = _cli(capsys, "verify", run_a, tmp_path / "exp_b")
    assert code == 2 and "does not belong to this run" in err and "12 -> 7 -> 7 -> 4" in err and "b/best.pt" in err
    code, err = _cli(capsys, "verify", run_a, tmp_path / "exp_c")
    assert code == 2 and "does not belong to this checkpoint" in err and "c/best.pt" in err


def test_export_records_the_source_checkpoint_digest(tmp_path):
    import hashlib

    run = _run(tmp_path)
    report = export_run(run, "generic", tmp_path / "o")
    digest = hashlib.sha256((run / "best.pt").read_bytes()).hexdigest()
    assert report["source_sha256"] == digest
    assert json.loads((tmp_path / "o/export.json").read_text())["source_sha256"] == digest
    assert read_network(tmp_path / "o").attrs["source_sha256"] == digest


def test_negative_samples_are_refused(tmp_path, capsys):
    run = _run(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(["verify", str(run), str(tmp_path), "--samples", "-5"])
    assert e.value.code == 2 and ">= 0" in capsys.readouterr().err


def test_progress_lines_say_what_how_far_and_time_left(capsys):


    p = Progress(40, "verify", stream=sys.stderr, interval_s=0.0)
    p.phase("simulating target loihi1")
    p.update(10)
    p.close()
    lines = capsys.readouterr().err.strip().splitlines()
    assert any("simulating target loihi1: 10/40 samples (25%)" in line and "left" in line for line in lines)
    assert "done: 10/40" in lines[-1]


def test_verify_shows_progress_in_logs(tmp_path, capsys):
    from snn_delays import build_model
    from snn_delays.checkpoint import save_checkpoint
    from snn_delays.config import config_to_dict, load_config

    cfg = load_config("synthetic", {"model.hidden_size": 8, "model.kernel_size": 5, "data.synthetic_train": 4,
                                    "data.synthetic_valid": 4, "data.synthetic_test": 12})
    run = tmp_path / "run"
    save_checkpoint(run / "best.pt", {"config": config_to_dict(cfg), "model": build_model(cfg).state_dict(),
                                      "epoch": 1, "metrics": []})
    export_run(run, "loihi2", tmp_path / "exp", clip=True)
    code = cli.main(["verify", str(run), str(tmp_path / "exp"), "--samples", "12"])
    captured = capsys.readouterr()
    assert code == 0 and "Traceback" not in captured.err
    lines = [l for l in captured.err.splitlines() if l.startswith("verify:")]
    assert any("PyTorch model" in l for l in lines) and any("simulating target spinnaker1" in l for l in lines)
    assert "12 samples through the PyTorch model and 8 simulated networks" in captured.err
    assert "left" in captured.err and lines[-1].startswith("verify: done:") and "108/108 sample runs (100%)" in lines[-1]


def test_verify_of_an_export_of_last_pt_suggests_the_checkpoint_flag(tmp_path, capsys):
    import shutil

    run = _run(tmp_path)
    other = _run(tmp_path, "other", seed=3)
    shutil.copy(other / "best.pt", run / "last.pt")  # a last.pt with other weights of the same sizes
    export_run(run, "generic", tmp_path / "exp", which="last")
    code, err = _cli(capsys, "verify", run, tmp_path / "exp")
    assert code == 2 and "--checkpoint last" in err


def test_report_data_flags_without_clip_are_refused(tmp_path, capsys):
    run = _run(tmp_path)
    code, err = _cli(capsys, "export", run, "--out", tmp_path / "o", "--samples", 10)
    assert code == 2 and "--samples" in err and "--clip" in err and not (tmp_path / "o").exists()
