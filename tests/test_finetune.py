"""snn-delays finetune: an ordinary, resumable run folder whose export fits the chip without --clip
and reproduces the fine-tuned forward bit for bit in Loihi arithmetic (verify)."""

import json

import numpy as np
import pytest
import torch

from snn_delays.cli import main as cli_main
from snn_delays.config import load_config
from snn_delays.finetune import finetune, finetune_config
from snn_delays.train import train

from test_export_model import _save_run, _spiking_model

SMALL = {"model.hidden_size": 16, "model.kernel_size": 9, "model.tau_steps": 2.0, "model.readout_tau_steps": 2.0,
         "data.synthetic_train": 64, "data.synthetic_valid": 32, "data.synthetic_test": 32, "data.batch_size": 32,
         "train.epochs": 3, "train.threads": 1, "train.progress": False, "train.device": "cpu"}


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A finished run whose model spikes (test_export_model's hand-set model) on a small synthetic task."""
    cfg, model = _spiking_model(seed=0, **{"train.threads": 1, "train.progress": False, "train.device": "cpu",
                                           "data.batch_size": 16})
    return _save_run(tmp_path_factory.mktemp("ft"), cfg, model, "base")


def test_finetune_resumes_to_the_same_result(base_run, tmp_path):
    cfg = finetune_config(base_run, "loihi1", epochs=2)
    assert cfg.train.target == "loihi1" and cfg.train.init_from.endswith("best.pt")
    assert cfg.train.lr_delays == 0.0 and cfg.train.target_fraction == 1.0
    whole = finetune(base_run, "loihi1", tmp_path / "whole", epochs=2)
    train(cfg, tmp_path / "parts", max_epochs=1)  # interrupted after one epoch
    parts = finetune(base_run, "loihi1", tmp_path / "parts", epochs=2)  # the same command resumes
    assert parts["epochs_done"] == whole["epochs_done"] == 2
    start = whole["finetune_start"]  # best.pt is never worse on validation than the starting weights
    assert whole["best_valid_acc"] >= start["valid_acc"] and (whole["best_epoch"] == 0) == start["kept"]
    a = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "parts" / "last.pt", weights_only=True)["model"]
    for k in a:  # the same up to float summation order
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6)
    ma = torch.load(tmp_path / "whole" / "last.pt", weights_only=True)["metrics"]
    mb = torch.load(tmp_path / "parts" / "last.pt", weights_only=True)["metrics"]
    assert [m["valid_acc"] for m in ma] == [m["valid_acc"] for m in mb]
    assert set(a) == set(torch.load(base_run / "best.pt", weights_only=True)["model"])  # ordinary keys


def test_export_of_a_finetuned_run_verifies_bit_for_bit(base_run, tmp_path, capsys):
    tuned = tmp_path / "tuned"
    assert cli_main(["finetune", str(base_run), "--target", "loihi1", "--out", str(tuned), "--epochs", "2"]) == 0
    assert cli_main(["export", str(tuned), "--target", "loihi1", "--out", str(tmp_path / "exp")]) == 0  # no --clip
    out = capsys.readouterr().out
    assert "clipped" not in out and "bias exponent" in out
    report = json.loads((tmp_path / "exp" / "export.json").read_text())
    assert report["clipped"] == [] and report["quantisation"][0]["weight_range_used"] <= 1.0
    capsys.readouterr()
    assert cli_main(["verify", str(tuned), str(tmp_path / "exp"), "--export-only", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    row = next(r for r in res["results"] if r["name"] == "export file as loihi1")
    assert row["agreement"] == 1.0 and row["spike_mismatches"] == [0, 0]  # the chip forward, bit for bit
    assert sum(row["spikes_model"]) > 0
    # side by side: the base run's plain export and the fine-tuned export for every target
    base_exp = tmp_path / "base_exp"
    assert cli_main(["export", str(base_run), "--out", str(base_exp)]) == 0
    capsys.readouterr()
    assert cli_main(["verify", str(base_run), str(base_exp), "--finetuned", str(tuned)]) == 0
    text = capsys.readouterr().out
    line = next(l for l in text.splitlines() if l.startswith("loihi1 "))
    assert len(line.split()) == 5 and line.split()[-1] != "-"


def test_train_with_a_target_quantises_the_last_epochs(tmp_path):
    from snn_delays.quantize import target_start_epoch

    cfg = load_config("synthetic", {**SMALL, "train.epochs": 4, "train.target": "spinnaker2"})
    assert target_start_epoch(cfg.train) == 3
    summary = train(cfg, tmp_path / "run")
    assert summary["epochs_done"] == 4
    assert cli_main(["export", str(tmp_path / "run"), "--target", "spinnaker2", "--out", str(tmp_path / "e")]) == 0


def test_finetune_refusals(base_run, tmp_path, capsys):
    assert cli_main(["finetune", str(base_run), "--target", "truenorth", "--out", str(tmp_path / "x")]) == 2
    assert "unknown target 'truenorth'" in capsys.readouterr().err
    assert cli_main(["finetune", str(base_run), "--target", "loihi1", "--out", str(base_run)]) == 2
    assert cli_main(["finetune", str(tmp_path / "none"), "--target", "loihi1", "--out", str(tmp_path / "y")]) == 2
