"""The command line: end-to-end train/evaluate and clear errors without tracebacks."""

import errno
import os
import importlib.metadata
import json
import subprocess
import sys

import pytest

import snn_delays
import snn_delays.train
from snn_delays import load_config
from snn_delays.cli import build_parser, main
from snn_delays.cli.config_args import config_from_args
from snn_delays.data import available_datasets
from _support import tiny_args

TINY = tiny_args({"model.kernel_size": "5", "data.synthetic_valid": "20", "data.synthetic_test": "20",
    "data.batch_size": "20"})


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "synthetic", "--out", str(out), "--epochs", "1", *TINY]) == 0
    assert "run folder" in capsys.readouterr().out
    assert main(["evaluate", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert 0.0 <= res["accuracy"] <= 1.0 and res["n"] == 20
    assert {"loss", "confusion", "per_class_accuracy", "spike_rate"} <= set(res)
    assert main(["evaluate", str(out), "--split", "all"]) == 0
    text = capsys.readouterr().out
    assert "accuracy" in text and "loss" in text and "spike rate" in text


@pytest.mark.parametrize("argv, message", [
    (["train", "--dataset", "synthetic", "--set", "model.kernel_sise=3"], "valid keys of [model]"),
    (["evaluate", "/no/such/run"], "does not exist"),
    (["train", "--dataset", "nosuchset"], "unknown dataset 'nosuchset'; datasets: "),
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


def _run(argv, capsys):
    """(exit code, stdout, stderr) of the command line run in this process; an exception that
    escapes (a traceback for the user) fails the test."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors, --version, --help
        code = e.code
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, out.out, out.err


def _config(argv):
    return config_from_args(build_parser().parse_args(["train", *argv]))


def test_version(capsys):
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and snn_delays.__version__ in out
    assert snn_delays.__version__ == importlib.metadata.version("snn-delays")


def test_dataset_names_a_config_even_beside_a_same_named_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "fsdd").mkdir()
    (tmp_path / "synthetic").write_text("[model]\nhidden_size = 3\n")
    assert _config(["--dataset", "synthetic"]) == load_config("synthetic")
    assert _config(["--config", "fsdd"]).data.dataset == "fsdd"


def test_shortcut_values_are_values_not_toml(tmp_path):
    odd = 'a "quoted" \\ path'
    cfg = _config(["--dataset", "synthetic", "--data-dir", odd, "--test-speakers", 'x"y\\z', "--device", "cpu"])
    assert cfg.data.root == odd and cfg.data.test_speakers == 'x"y\\z' and cfg.train.device == "cpu"


@pytest.mark.parametrize("argv, words", [
    (["--dataset", "mnist"], ["unknown dataset 'mnist'", *available_datasets(), "named configs"]),
    ([], ["--dataset", "--config", *available_datasets()]),
    (["--dataset", "synthetic", "--epochs", "2", "--set", "train.epochs=0"], ["--epochs 2", "train.epochs=0"]),
    (["--dataset", "synthetic", "--seed", "3", "--set", "train.seed=4"], ["--seed 3", "train.seed=4"]),
    (["--config", "synthetic", "--dataset", "shd", "--set", 'data.dataset="gsc"'], ["--dataset shd", "gsc"]),
    (["--dataset", "synthetic", "--epochs", "-1"], ["train.epochs must be >= 1"]),
    (["--dataset", "synthetic", "--seed", "99999999999999999999"], ["train.seed must be at most"]),
    (["--dataset", "synthetic", "--set", "train.epochs"], ["train.epochs", "section.key=value"]),
    (["--dataset", "synthetic", "--set", "model.kernel_sise=3"], ["did you mean model.kernel_size?", "hidden_size"]),
    (["--dataset", "synthetic", "--set", "model.kernel_size=big"], ["model.kernel_size expects an integer", "big"]),
    (["--dataset", "synthetic", "--variant", "magic"], ["unknown variant 'magic'", "constant-sigma", "recurrent-one-step"]),
    (["--dataset", "synthetic", "--device", "gpu"], ["train.device must be", "gpu"]),
    (["--dataset", "synthetic", "--fanin", "1000"], ["model.fanin=1000", "0 for fully connected"]),
    (["--dataset", "synthetic", "--set", "model.threshold=nan"], ["model.threshold must be a finite number"]),
    (["--dataset", "synthetic", "--set", "train.sigma_final=99.0"], ["train.sigma_final", "larger"]),
    (["--dataset", "synthetic", "--set", "train.lr_weights=-1.0"], ["train.lr_weights must be >= 0"]),
    (["--dataset", "synthetic", "--set", 'name="a\\nb"'], ["name must be one line"]),
    (["--config", "./nowhere.toml"], ["nowhere.toml does not exist"]),
    (["--dataset", "synthetic", "--set", 'data.dataset="mnist"'], ["unknown dataset 'mnist'", "synthetic"]),
    (["--config", "mnist"], ["no config named 'mnist'", "named configs: ", "synthetic"]),
])
def test_train_argument_errors_are_one_clear_line(argv, words, capsys):
    code, out, err = _run(["train", *argv], capsys)
    assert code == 2
    assert err.startswith("snn-delays train: error: ") and err.count("\n") == 1
    for word in words:
        assert word in err


def test_same_value_twice_is_no_conflict():
    cfg = _config(["--dataset", "synthetic", "--epochs", "2", "--set", "train.epochs=2", "--set", "train.seed=1",
                   "--set", "train.seed=5"])
    assert cfg.train.epochs == 2 and cfg.train.seed == 5  # a --set repeated: the last one


@pytest.mark.parametrize("content, words", [
    ("", ["is empty"]),
    ("[model]\nhidden_size 3\n", ["not valid TOML", "line 2, column"]),
    ("[model]\nhidden_size = 'wide'\n", ["model.hidden_size expects an integer", "wide"]),
])
def test_bad_config_files_are_one_clear_line(content, words, tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text(content)
    code, _, err = _run(["train", "--config", str(path)], capsys)
    assert code == 2 and str(path) in err
    for word in words:
        assert word in err
    code, _, err = _run(["train", "--config", str(tmp_path)], capsys)
    assert code == 2 and "is a folder" in err


@pytest.mark.parametrize("argv, flag", [
    (["train", "--dataset", "synthetic", "--seed", "x"], "--seed"),
    (["train", "--dataset", "synthetic", "--epochs", "1.5"], "--epochs"),
    (["evaluate", "run", "--split", "nope"], "--split"),
])
def test_argparse_errors_exit_2(argv, flag, capsys):
    code, _, err = _run(argv, capsys)
    assert code == 2 and flag in err


def test_interrupt_says_whether_a_checkpoint_is_kept(tmp_path, monkeypatch, capsys):
    def interrupted(cfg, out, resume):
        raise KeyboardInterrupt

    monkeypatch.setattr(snn_delays.train, "train", interrupted)
    run = tmp_path / "run"
    code, _, err = _run(["train", "--dataset", "synthetic", "--out", str(run)], capsys)
    assert code == 130 and "nothing to resume" in err and "checkpoint is kept" not in err
    run.mkdir()
    (run / "last.pt").write_bytes(b"")
    code, _, err = _run(["train", "--dataset", "synthetic", "--out", str(run)], capsys)
    assert code == 130 and "last.pt" in err and "resume" in err


@pytest.mark.parametrize("number, words", [(errno.EACCES, "Permission denied"), (errno.ENOSPC, "No space")])
def test_permission_and_disk_errors_are_one_line(number, words, tmp_path, monkeypatch, capsys):
    def fails(cfg, out, resume):
        raise OSError(number, os.strerror(number), str(out / "metrics.jsonl"))

    monkeypatch.setattr(snn_delays.train, "train", fails)
    code, _, err = _run(["train", "--dataset", "synthetic", "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and words in err and "metrics.jsonl" in err and err.count("\n") == 1


def test_closed_output_pipe_is_not_a_traceback(tmp_path, monkeypatch, capsys):
    def reader_went_away(cfg, out, resume):
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    monkeypatch.setattr(sys, "stdout", sys.stdout)  # restored after the test: main points it at os.devnull
    monkeypatch.setattr(snn_delays.train, "train", reader_went_away)
    assert main(["train", "--dataset", "synthetic", "--out", str(tmp_path / "r")]) == 141  # as a SIGPIPE would
    assert "Traceback" not in capsys.readouterr().err
