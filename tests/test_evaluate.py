"""The numbers of an evaluation: per-epoch valid_loss and spike_rate, evaluate's report, progress."""

import io
import json
import math

import pytest
import torch

from snn_delays import load_config, load_model
from snn_delays.backends import use_compiled
from snn_delays.cli import main
from snn_delays.data import open_dataset
from snn_delays.evaluate import evaluate_run, format_report
from neuromorphic_export._io import track
from snn_delays.train import train

# threshold 0.2, no dropout, sigma 1: the tiny model spikes in eval mode after one epoch
SPIKING = [
    "model.hidden_size=12", "model.kernel_size=5", "model.dropout=0.0", "model.threshold=0.2",
    "train.sigma_init=1", "data.synthetic_train=80", "data.synthetic_valid=40", "data.synthetic_test=30",
    "data.batch_size=40", "train.progress=false",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 3-epoch run evaluated after epochs 2 and 3 (eval_every=2)."""
    folder = tmp_path_factory.mktemp("run")
    train(load_config("synthetic", SPIKING + ["train.epochs=3", "train.eval_every=2"]), folder)
    return folder


def _reference(model, split: str):
    """Spike rates, mean cross-entropy and accuracy computed directly from the plain (PyTorch) forward."""
    cfg = model.config
    data_cfg = load_config("synthetic", SPIKING).data
    ds = open_dataset("synthetic", None, split, **data_cfg.dataset_options())
    x = ds.x.float().transpose(0, 1)  # (N, T, C) -> (T, N, C)
    with torch.no_grad(), use_compiled(False):
        membrane, spikes = model(x, return_spikes=True)
    scores = membrane.softmax(-1).sum(0)  # (N, K)
    loss = torch.nn.functional.cross_entropy(scores.double(), ds.y).item()
    accuracy = (scores.argmax(-1) == ds.y).double().mean().item()
    assert len(spikes) == cfg.n_layers
    return [float((s > 0).double().mean()) for s in spikes], loss, accuracy, ds.y


def test_epoch_rows_hold_valid_loss_and_spike_rate(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert rows[0]["valid_loss"] is None and rows[0]["spike_rate"] is None  # skipped by eval_every
    for row in rows[1:]:
        assert len(row["spike_rate"]) == 2 and all(0.0 <= v <= 1.0 for v in row["spike_rate"])
        assert math.isfinite(row["valid_loss"]) and row["valid_loss"] > 0
    rates, loss, accuracy, _ = _reference(load_model(run, "last"), "valid")  # last.pt = after epoch 3
    assert any(v > 0 for v in rates)  # the comparison means something
    assert rows[-1]["spike_rate"] == pytest.approx(rates, rel=1e-9, abs=1e-12)
    assert rows[-1]["valid_loss"] == pytest.approx(loss, rel=1e-5)
    assert rows[-1]["valid_acc"] == pytest.approx(accuracy)


def test_epoch_line_on_the_console_shows_valid_loss_and_spike_rate(tmp_path, capsys):
    train(load_config("synthetic", SPIKING + ["train.epochs=1"]), tmp_path / "one")
    out = capsys.readouterr().out
    assert "valid loss" in out and "spike rate" in out


def test_evaluate_json_holds_consistent_numbers(run, capsys):
    assert main(["evaluate", str(run), "--json", "--checkpoint", "last"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    confusion = torch.tensor(res["confusion"])
    k = load_config("synthetic", SPIKING).model.n_classes or 10
    assert confusion.shape == (k, k) and int(confusion.sum()) == res["n"] == 30
    assert int(confusion.trace()) / res["n"] == pytest.approx(res["accuracy"])
    rates, loss, accuracy, y = _reference(load_model(run, "last"), "test")
    assert res["accuracy"] == pytest.approx(accuracy)
    assert res["loss"] == pytest.approx(loss, rel=1e-5)
    assert res["spike_rate"] == pytest.approx(rates, rel=1e-9, abs=1e-12)
    assert confusion.sum(1).tolist() == torch.bincount(y, minlength=k).tolist()  # rows are the true classes
    for c, acc in enumerate(res["per_class_accuracy"]):
        total = int(confusion[c].sum())
        assert acc is None if total == 0 else acc == pytest.approx(int(confusion[c, c]) / total)


def test_report_text_shows_loss_spike_rates_and_confusion(run):
    res = evaluate_run(run, checkpoint="last")
    text = format_report(res)
    assert f"{res['accuracy']:.4f}" in text and f"{res['loss']:.4f}" in text
    assert "spike rate" in text and f"{res['spike_rate'][1]:.4f}" in text
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("confusion matrix"))
    table = [line.split() for line in lines[start + 2:start + 2 + len(res["confusion"])]]
    assert [[int(v) for v in row[1:]] for row in table] == res["confusion"]  # row label, then the counts


def test_report_of_many_classes_names_the_weakest_instead_of_a_table():
    k = 35
    confusion = [[3 if i == j else 0 for j in range(k)] for i in range(k)]
    confusion[7][8], confusion[7][7] = 2, 1
    per_class = [confusion[c][c] / 3 for c in range(k)]
    res = {"dataset": "ssc", "split": "test", "accuracy": 103 / 105, "correct": 103, "n": 105, "epoch": 4,
           "loss": 0.1, "spike_rate": [0.05], "confusion": confusion, "per_class_accuracy": per_class}
    text = format_report(res)
    assert "confusion matrix (counts" not in text and "7: 0.33" in text and "--json" in text


def test_progress_lines_when_not_a_terminal(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    assert list(track(range(4), total=4, desc="evaluating shd/test", interval_s=0.0)) == [0, 1, 2, 3]
    lines = err.getvalue().splitlines()
    assert lines and lines[0].startswith("evaluating shd/test: 1/4 batches (25%)") and "left" in lines[0]
    err.truncate(0)
    list(track(range(4), total=4, desc="quiet", interval_s=30.0))  # short work: no lines in a log
    assert err.getvalue() == ""


def test_evaluate_device_error_names_the_option(run, capsys):
    assert main(["evaluate", str(run), "--device", "cuda:99"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "evaluate --device" in err and "train.device" not in err
