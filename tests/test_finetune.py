"""snn-delays finetune: an ordinary, resumable run folder whose export fits the chip without --clip
and reproduces the fine-tuned forward bit for bit in Loihi arithmetic (verify)."""

import json

import numpy as np
import pytest
import torch

from snn_delays.cli import main as cli_main
from snn_delays.config import load_config
import snn_delays.finetune as finetune_module
from snn_delays.finetune import SELECT_ALPHA, finetune, finetune_config, keep_start_if_better, sign_test_p
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
    assert start["kept"] == (sign_test_p(start["gained"], start["lost"]) > SELECT_ALPHA)
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


def test_sign_test_p_hand_computed_and_by_enumeration():
    # hand-computed: P(X >= gained), X ~ Binomial(gained + lost, 1/2)
    assert sign_test_p(0, 0) == 1.0  # the models never differ
    assert sign_test_p(1, 0) == 0.5
    assert sign_test_p(6, 5) == 0.5  # FSDD seed 1 on Loihi: one recording up, out of 11 that changed
    assert sign_test_p(4, 0) == 1 / 16 and sign_test_p(5, 0) == 1 / 32  # 5 clean gains are the fewest that pass
    assert sign_test_p(9, 1) == 11 / 1024 and sign_test_p(12, 0) == 1 / 4096
    assert sign_test_p(2, 3) == 1 - 1 / 32 - 5 / 32 + 10 / 32 - 10 / 32  # 26/32: more lost than gained
    # an independent reference: count the sign patterns of n differing samples with at least `gained` gains
    import itertools
    for n in range(0, 11):
        patterns = list(itertools.product([0, 1], repeat=n))
        for gained in range(n + 1):
            expected = sum(sum(pt) >= gained for pt in patterns) / len(patterns)
            assert sign_test_p(gained, n - gained) == pytest.approx(expected, abs=1e-15)
    with pytest.raises(ValueError):
        sign_test_p(-1, 2)


def test_selection_keeps_the_start_unless_the_gain_is_significant(base_run, tmp_path, monkeypatch):
    """The selection rule on hand-made per-sample results: a gain of one validation sample (or five
    gained against three lost) keeps the start in best.pt; six clean gains (p = 1/64) replace it."""
    import shutil

    run = tmp_path / "tuned"
    summary = finetune(base_run, "loihi1", run, epochs=1)
    n = 40
    start = np.zeros(n, dtype=bool); start[:30] = True  # the start gets 30 of 40 right

    def with_tuned(tuned):
        calls = iter([start, tuned])
        monkeypatch.setattr(finetune_module, "_correct", lambda model, dataset, batch_size: next(calls))

    cases = {"one_more": ([30], [], True), "five_vs_three": ([30, 31, 32, 33, 34], [0, 1, 2], True),
             "six_clean": ([30, 31, 32, 33, 34, 35], [], False)}
    for name, (gain, loss, kept) in cases.items():
        out = tmp_path / name
        shutil.copytree(run, out)
        tuned = start.copy(); tuned[gain] = True; tuned[loss] = False
        with_tuned(tuned)
        best_before = torch.load(out / "best.pt", weights_only=True)
        res = keep_start_if_better(out, {**summary, "best_valid_acc": float(tuned.mean()), "best_epoch": 1})
        fs = res["finetune_start"]
        assert (fs["gained"], fs["lost"], fs["kept"]) == (len(gain), len(loss), kept), name
        assert fs["valid_acc"] == 0.75 and fs["p"] == sign_test_p(len(gain), len(loss))
        on_disk = json.loads((out / "summary.json").read_text())
        assert on_disk["finetune_start"] == fs
        best = torch.load(out / "best.pt", weights_only=True)
        if kept:  # best.pt is the starting weights, epoch 0, with the start's validation accuracy
            assert best["epoch"] == 0 and res["best_epoch"] == 0 and res["best_valid_acc"] == 0.75
            init = torch.load(base_run / "best.pt", weights_only=True)["model"]
            for k in init:
                torch.testing.assert_close(best["model"][k].double(), init[k].double())
        else:  # the training loop's best.pt stays as it was
            assert res["best_epoch"] == 1 and best["epoch"] == best_before["epoch"]
            for k in best_before["model"]:
                assert torch.equal(best["model"][k], best_before["model"][k])
