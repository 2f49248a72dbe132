"""snn-delays cv: leave-one-speaker-out on a tiny synthetic FSDD folder (tiny model, one epoch)."""

from __future__ import annotations

import csv
import json
import math
import statistics

import pytest

from snn_delays.config import load_config
from snn_delays.crossval import FoldCell, cross_validate, fold_cells, summarize_folds, valid_speaker_for
from snn_delays.data import open_dataset
from snn_delays.errors import UserError

from test_data_fsdd import write_tiny_fsdd

SPEAKERS = ["anna", "bob", "carl"]


@pytest.fixture()
def base(tmp_path):
    root = write_tiny_fsdd(tmp_path / "fsdd", speakers=SPEAKERS)
    return load_config("fsdd", [("data.root", str(root)), ("data.cache_dir", str(tmp_path / "cache")),
                                ("data.n_steps", 20), ("data.batch_size", 8), ("model.hidden_size", 4),
                                ("model.kernel_size", 3), ("train.epochs", 1), ("train.progress", False),
                                ("train.threads", 1), ("train.device", "cpu")])


def _speakers_of(cell: FoldCell, base) -> dict[str, set[str]]:
    cfg = cell.config(base)
    opts = cfg.data.dataset_options()
    return {s: set(open_dataset("fsdd", cfg.data.root, s, **opts).speakers) for s in ("train", "valid", "test")}


@pytest.mark.parametrize("valid", ["slice", "next"])
def test_test_speaker_never_trained_on_or_selected_with(base, valid):
    cells = fold_cells(["full"], SPEAKERS, [0], valid)
    assert sorted(c.speaker for c in cells) == SPEAKERS
    valid_speakers = []
    for cell in cells:
        got = _speakers_of(cell, base)
        assert got["test"] == {cell.speaker}
        assert cell.speaker not in got["train"] | got["valid"]
        if valid == "next":
            assert len(got["valid"]) == 1 and got["valid"].isdisjoint(got["train"])
            valid_speakers.append(next(iter(got["valid"])))
        else:
            assert got["train"] == set(SPEAKERS) - {cell.speaker} and got["valid"] <= got["train"]
    if valid == "next":  # every speaker validates exactly one fold, never its own
        assert sorted(valid_speakers) == SPEAKERS
    assert valid_speaker_for("carl", SPEAKERS, "next") == "anna"


def test_run_resume_and_summary(base, tmp_path):
    out = tmp_path / "cv"
    logs: list[str] = []
    cross_validate(base, out, speakers=["bob"], variants=["full", "no-delays-wider"], log=logs.append)
    first = (out / "runs" / "full" / "bob" / "seed0" / "summary.json").stat().st_mtime_ns
    logs.clear()
    table = cross_validate(base, out, variants=["full", "no-delays-wider"], log=logs.append)
    assert (out / "runs" / "full" / "bob" / "seed0" / "summary.json").stat().st_mtime_ns == first  # not retrained
    assert any("2 were done before" in line for line in logs)
    plan = json.loads((out / "cv.json").read_text())
    assert plan["speakers"] == ["bob", "anna", "carl"]
    # mean and interval against an independent computation from the runs' own summary.json files
    for row in table:
        accs = {s: json.loads((out / "runs" / row["variant"] / s / "seed0" / "summary.json").read_text())["test_acc"]
                for s in SPEAKERS}
        assert row["per_fold"] == pytest.approx(accs)
        values = list(accs.values())
        assert row["mean"] == pytest.approx(statistics.fmean(values))
        half = 4.302652729911275 * statistics.stdev(values) / math.sqrt(3)  # t_{0.975, 2}
        assert row["ci95"] == pytest.approx(half, rel=1e-4, abs=1e-12)
        assert row["n_folds"] == 3 and row["train_s_per_fold"] > 0
    rows = list(csv.DictReader(open(out / "folds.csv")))
    assert len(rows) == 6 and all(r["done"] == "True" for r in rows)
    assert "± " in (out / "summary.md").read_text()
    # --summary-only reads the plan and writes the same table
    again = cross_validate(None, out, summary_only=True, log=lambda s: None)
    assert [r["mean"] for r in again] == [r["mean"] for r in table]


def test_summary_of_several_seeds_averages_each_fold_first():
    recs = [{"variant": "full", "speaker": s, "seed": k, "done": True, "test_acc": a, "best_valid_acc": 0.5,
             "params": 10, "train_s": 1.0}
            for s, k, a in [("a", 0, 0.8), ("a", 1, 0.6), ("b", 0, 0.9), ("b", 1, 0.9), ("c", 0, 0.5)]]
    recs.append({**recs[-1], "seed": 1, "done": False, "test_acc": float("nan")})
    (row,) = summarize_folds(recs)
    assert row["per_fold"] == pytest.approx({"a": 0.7, "b": 0.9, "c": 0.5})
    assert row["mean"] == pytest.approx(0.7) and row["n_folds"] == 3


def test_refusals(base, tmp_path):
    from dataclasses import replace

    with pytest.raises(UserError, match="test-speakers"):
        cross_validate(replace(base, data=replace(base.data, test_speakers="bob")), tmp_path / "x")
    with pytest.raises(UserError, match="zed"):
        cross_validate(base, tmp_path / "x", speakers=["zed"])
    with pytest.raises(UserError, match="fsdd"):
        cross_validate(replace(base, data=replace(base.data, dataset="synthetic")), tmp_path / "x")
    with pytest.raises(UserError, match="nothing to summarise"):
        cross_validate(None, tmp_path / "empty", summary_only=True)


def test_loso_validation_objective(base, tmp_path):
    from snn_delays.crossval import loso_validation

    seen = []
    res = loso_validation(base, tmp_path / "trial", on_fold_end=lambda k, mean: seen.append((k, mean)))
    valid = {s: json.loads((tmp_path / "trial" / s / "summary.json").read_text())["best_valid_acc"] for s in SPEAKERS}
    assert res["folds"] == pytest.approx(valid)
    assert res["valid_acc"] == pytest.approx(statistics.fmean(valid.values()))
    assert [k for k, _ in seen] == [0, 1, 2] and seen[-1][1] == pytest.approx(res["valid_acc"])
    for s in SPEAKERS:  # each fold validated on another speaker, never its test speaker
        note = json.loads((tmp_path / "trial" / s / "summary.json").read_text())["protocol_note"]
        assert f"test = speakers {s}," in note and f"valid = speakers {valid_speaker_for(s, SPEAKERS, 'next')}" in note


def test_tune_loso_objective_is_the_mean_over_speakers(base, tmp_path):
    pytest.importorskip("optuna")
    from snn_delays.tuning import tune

    report = tune(base, tmp_path / "tune", trials=1, params=["dropout"], pruner="none", seed=0, log=lambda s: None,
                  loso=True)
    trial_dir = tmp_path / "tune" / "trials" / "trial_0000"
    valid = [json.loads((trial_dir / s / "summary.json").read_text())["best_valid_acc"] for s in SPEAKERS]
    assert report["best_valid_acc"] == pytest.approx(statistics.fmean(valid))
    with pytest.raises(UserError, match="another base configuration"):  # a loso study is not a plain one
        tune(base, tmp_path / "tune", trials=1, params=["dropout"], pruner="none", log=lambda s: None)


@pytest.mark.parametrize("extra, message", [
    (["--seed", "3"], "--first-seed 3 --seeds 1"),
    (["--variant", "full"], "--variants full"),
    (["--test-speakers", "anna"], "drop --test-speakers"),
    (["--speakers", "zed"], "zed not in the folder"),
    (["--seeds", "0"], "--seeds must be >= 1"),
])
def test_cli_refusals_are_one_line(extra, message, tmp_path, capsys):
    from snn_delays.cli import main

    root = write_tiny_fsdd(tmp_path / "fsdd", speakers=SPEAKERS, digits=range(2), takes=range(1))
    code = main(["cv", "--dataset", "fsdd", "--data-dir", str(root), "--out", str(tmp_path / "cv"), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_folds_take_the_model_variants_of_ablate():
    # the recurrent and interpolation variants are the full model with other model keys
    base = load_config("fsdd")
    cells = fold_cells(["recurrent-one-step", "interp-triangle"], ["a", "b", "c"], [0])
    rec = cells[0].config(base).model
    assert rec.variant == "full" and rec.recurrent and rec.recurrent_delays == "one-step"
    assert cells[3].config(base).model.interpolation == "triangle"
    with pytest.raises(UserError, match="unknown variant"):
        fold_cells(["recurrent-sideways"], ["a", "b", "c"], [0])


def test_every_variant_runs_on_the_fsdd_defaults():
    """experiments/fsdd.toml's hidden neurons are adLIF; every variant must still make a valid config
    on it (the recurrent ones run LIF neurons: their compiled loop is the LIF's), and the others keep
    the config's neuron."""
    from neuromorphic_export.model_variants import VARIANT_NAMES

    base = load_config("fsdd")
    cells = fold_cells(list(VARIANT_NAMES), ["a", "b"], [0])
    for cell in cells:
        model = cell.config(base).model  # validates
        if model.recurrent:
            assert model.neuron == "lif", cell.variant
        else:
            assert model.neuron == base.model.neuron, cell.variant
