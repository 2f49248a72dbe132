"""The command line: end-to-end train/evaluate and clear errors without tracebacks."""

import json
import subprocess
import sys

import pytest

from snn_delays.cli import main

TINY = ["--set", "model.hidden_size=8", "--set", "model.kernel_size=5", "--set", "data.synthetic_train=60",
        "--set", "data.synthetic_valid=20", "--set", "data.synthetic_test=20", "--set", "data.batch_size=20",
        "--set", "train.progress=false"]


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--out", str(out), "--epochs", "1", *TINY]) == 0
    assert "run folder" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= res["accuracy"] <= 1.0 and res["n"] == 20
    assert main(["evaluate", str(out), "--split", "all"]) == 0
    assert "accuracy" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "synthetic", "--set", "model.kernel_sise=3"], "valid keys of [model]"),
    (["evaluate", "/no/such/run"], "does not exist"),
    (["train", "--dataset", "nosuchset"], "no config named 'nosuchset'"),
])
def test_errors_are_clear_without_traceback(argv, message, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "snn_delays.cli", *argv, "--help"][:0] or
                          [sys.executable, "-m", "snn_delays.cli", *argv],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_evaluate_on_folder_without_checkpoint(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["evaluate", str(tmp_path / "empty")]) == 2
    assert "not a finished run folder" in capsys.readouterr().err


def test_corrupt_checkpoint(tmp_path, capsys):
    run = tmp_path / "r"
    run.mkdir()
    (run / "best.pt").write_bytes(b"not a checkpoint")
    assert main(["evaluate", str(run)]) == 2
    assert "not a readable checkpoint" in capsys.readouterr().err
