"""Optuna search: the space, the best config as a TOML train accepts, pruning hook, kill + resume."""

import json
import os
import signal
import subprocess
import sys
import time

import optuna
import pytest

from snn_delays import load_config
from snn_delays.train import train
from snn_delays.cli import main
from snn_delays.tuning import SEARCH_SPACE, kernel_size_choices, mask_url, suggest_overrides, tune
from _support import tiny

TINY = tiny({"train.epochs": "4", "train.threads": "1"})


def test_search_space_covers_the_documented_keys():
    base = load_config("synthetic", TINY)
    trial = optuna.trial.FixedTrial({"lr_weights": 2e-3, "lr_delays": 0.2, "kernel_size": 9, "sigma_init_fraction": 0.5,
                                     "sigma_decay_fraction": 0.3, "dropout": 0.1, "tau_steps": 2.0, "hidden_size": 16})
    o = suggest_overrides(trial, base, SEARCH_SPACE)
    assert o["model.kernel_size"] == 9 and o["train.sigma_init"] == 4.5  # sigma relative to the drawn Td
    assert set(o) == {"train.lr_weights", "train.lr_delays", "model.kernel_size", "train.sigma_init",
                      "train.sigma_decay_fraction", "model.dropout", "model.tau_steps", "model.hidden_size"}
    assert all(k % 2 == 1 for k in kernel_size_choices(25)) and 25 in kernel_size_choices(25)


def test_on_epoch_end_can_stop_training(tmp_path):
    seen = []

    def stop(row):
        seen.append(row["epoch"])
        if row["epoch"] == 2:
            raise optuna.TrialPruned()

    with pytest.raises(optuna.TrialPruned):
        train(load_config("synthetic", TINY), tmp_path / "r", on_epoch_end=stop)
    assert seen == [1, 2]
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 2  # written before the callback


def _cmd(out):
    return [sys.executable, "-m", "snn_delays.cli", "tune", "--dataset", "synthetic", "--trials", "3", "--out",
            str(out), "--params", "lr_weights,lr_delays", "--sampler-seed", "0", *sum((["--set", s] for s in TINY), [])]


def test_killed_study_continues_with_the_next_invocation(tmp_path):
    out = tmp_path / "tune"
    proc = subprocess.Popen(_cmd(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    victim = out / "trials" / "trial_0001" / "metrics.jsonl"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if victim.exists() and victim.read_text().count("\n") >= 1:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # killed in the middle of trial 1
    proc.wait()
    assert victim.exists(), "the tuning process did not reach its second trial"
    epochs_before_kill = victim.read_text().count("\n")
    assert epochs_before_kill < 4, "trial 1 finished before it could be killed"

    storage = f"sqlite:///{out / 'optuna.db'}"
    study = optuna.load_study(study_name="synthetic-tune", storage=storage)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[0] == optuna.trial.TrialState.COMPLETE and states[1] == optuna.trial.TrialState.RUNNING

    # the next invocation (same arguments): finishes the study, retrying trial 1 from its folder
    report = tune(load_config("synthetic", TINY), out, trials=3, params=["lr_weights", "lr_delays"], seed=0,
                  log=lambda *a: None)
    assert report["finished"] == 3 and report["finished_before"] == 1
    study = optuna.load_study(study_name="synthetic-tune", storage=storage)
    trials = study.get_trials()
    assert trials[1].state == optuna.trial.TrialState.FAIL
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == 1)
    assert retry.state == optuna.trial.TrialState.COMPLETE and retry.params == trials[1].params
    rows = [json.loads(l) for l in victim.read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]  # resumed, not restarted: one line per epoch
    assert sorted(retry.intermediate_values) == [1, 2, 3, 4]
    assert len([t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]) == 3

    # best.toml is a config `snn-delays train --config` accepts, with the winning values
    best = load_config(out / "best.toml")
    bt = study.best_trial
    assert best.train.lr_weights == pytest.approx(bt.params["lr_weights"])
    assert best.model.hidden_size == 8 and best.train.epochs == 4
    # a third invocation has nothing left to do
    again = tune(load_config("synthetic", TINY), out, trials=3, params=["lr_weights", "lr_delays"], log=lambda *a: None)
    assert again["finished_before"] == 3 and len(optuna.load_study(study_name="synthetic-tune",
                                                                  storage=storage).get_trials()) == len(trials)


def test_storage_password_is_masked():
    url = "postgresql://alice:S3cretPW@db.example:5432/optuna"
    assert mask_url(url) == "postgresql://alice:***@db.example:5432/optuna"
    assert mask_url(f"cannot open {url!r}: refused") == "cannot open 'postgresql://alice:***@db.example:5432/optuna': refused"
    assert mask_url("sqlite:////tmp/x/optuna.db") == "sqlite:////tmp/x/optuna.db"
    assert mask_url("postgresql://alice@host/db") == "postgresql://alice@host/db"  # no password: unchanged


def test_unreachable_storage_error_hides_the_password(tmp_path, capsys):
    code = main(["tune", "--dataset", "synthetic", "--trials", "1", "--out", str(tmp_path),
                 "--storage", "postgresql://alice:S3cretPW@127.0.0.1:1/db", *sum((["--set", s] for s in TINY), [])])
    err = capsys.readouterr().err
    assert code == 2 and "S3cretPW" not in err and "alice:***@127.0.0.1" in err and "Traceback" not in err


@pytest.mark.parametrize("args, named", [(["--workers", "0"], "--workers"), (["--heartbeat", "0"], "--heartbeat"),
                                         (["--timeout", "-5"], "--timeout"), (["--params", ","], "--params"),
                                         (["--trials", "-1"], "--trials")])
def test_bad_tune_flags_are_one_clear_line(tmp_path, capsys, args, named):
    argv = ["tune", "--dataset", "synthetic", "--trials", "1", "--out", str(tmp_path / "t"), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t" / "optuna.db").exists()


def test_tune_writes_figures_and_prints_a_table(tmp_path, capsys):
    out = tmp_path / "t"
    argv = ["tune", "--dataset", "synthetic", "--trials", "2", "--out", str(out), "--params", "lr_weights,dropout",
            "--sampler-seed", "0", "--pruner", "none", *sum((["--set", s] for s in TINY + ["train.epochs=1"]), [])]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for name in ("history.png", "importances.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = json.loads((out / "best.json").read_text())
    assert "{" not in printed  # a table, not a JSON dump
    assert f"best trial    {best['trial']}: validation accuracy {best['valid_acc']:.4f}" in printed
    assert any(line.split() == ["lr_weights", f"{best['params']['lr_weights']:.4g}"] for line in printed.splitlines())
    assert main([*argv, "--json"]) == 0  # the machine-readable report on request
    assert json.loads(capsys.readouterr().out.split("\n", 1)[1])["figures"][0].endswith("history.png")
