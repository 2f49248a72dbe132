"""TensorBoard event files of a run: the scalars of metrics.jsonl, histograms, resume without
duplicate steps, and the one-line message when the package is missing."""

import json
import sys

import pytest

from snn_delays import load_config
from snn_delays.cli import main
from snn_delays.train import train

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from _support import tiny

TINY = tiny({"model.kernel_size": "5", "model.dropout": "0.0", "model.threshold": "0.2", "train.sigma_init": "1",
    "data.synthetic_train": "40", "data.synthetic_valid": "20", "data.synthetic_test": "20",
    "data.batch_size": "20", "train.epochs": "3", "train.tensorboard": "true"})


def _events(run):
    acc = EventAccumulator(str(run / "tensorboard"), size_guidance={"scalars": 0, "histograms": 0})
    acc.Reload()
    return acc


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _series(acc, tag):
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.fixture(scope="module")
def resumed_run(tmp_path_factory):
    """3 epochs: killed after epoch 1's checkpoint and epoch 2's events, then resumed."""
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path_factory.mktemp("tb") / "run"
    cfg = load_config("synthetic", TINY)
    train(cfg, run, max_epochs=1)
    stray = SummaryWriter(str(run / "tensorboard"))  # epoch 2 logged, then killed before last.pt
    stray.add_scalar("loss/train", 999.0, global_step=2)
    stray.close()
    train(cfg, run)
    return run


def test_event_files_hold_the_scalars_of_metrics_and_histograms(resumed_run):
    acc, rows = _events(resumed_run), _rows(resumed_run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    expected = {"loss/train": "train_loss", "loss/valid": "valid_loss", "accuracy/train": "train_acc",
                "accuracy/valid": "valid_acc", "accuracy/test": "test_acc", "sigma_steps": "sigma",
                "learning_rate/weights": "lr_weights", "learning_rate/delays": "lr_delays"}
    for tag, key in expected.items():  # each epoch once, the value of metrics.jsonl (the stray 999 purged)
        assert _series(acc, tag) == [(r["epoch"], pytest.approx(r[key], rel=1e-6, abs=1e-12)) for r in rows], tag
    for k in range(2):
        assert _series(acc, f"spike_rate/hidden_{k}") == [
            (r["epoch"], pytest.approx(r["spike_rate"][k], rel=1e-6, abs=1e-12)) for r in rows]
    histograms = acc.Tags()["histograms"]
    for layer in ("hidden_0", "hidden_1", "readout"):
        assert f"weights/{layer}" in histograms and f"delays_steps/{layer}" in histograms
        assert [e.step for e in acc.Histograms(f"delays_steps/{layer}")] == [1, 2, 3]
    delays = acc.Histograms("delays_steps/hidden_0")[-1].histogram_value
    assert 0 <= delays.min and delays.max <= 4 and delays.num == 8 * 140  # every connection, in steps


def test_switched_on_when_resuming_writes_the_earlier_epochs_from_metrics(tmp_path):
    run = tmp_path / "run"
    train(load_config("synthetic", TINY[:-1]), run, max_epochs=1)  # without TensorBoard
    assert not (run / "tensorboard").exists()
    train(load_config("synthetic", TINY), run, max_epochs=1)
    rows = _rows(run)
    assert _series(_events(run), "loss/train") == [(r["epoch"], pytest.approx(r["train_loss"])) for r in rows]
    assert len(rows) == 2


def test_restart_drops_the_previous_runs_events(tmp_path):
    run = tmp_path / "run"
    cfg = load_config("synthetic", TINY)
    train(cfg, run, max_epochs=1)
    train(cfg, run, resume=False, max_epochs=1)  # --restart: a new run
    assert [step for step, _ in _series(_events(run), "loss/train")] == [1]


def test_missing_tensorboard_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now fails
    run = tmp_path / "run"
    argv = ["train", "--dataset", "synthetic", "--out", str(run), "--tensorboard", "--epochs", "1",
            *[a for kv in TINY[:-2] for a in ("--set", kv)]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "tensorboard" in err and "pip install 'snn-delays[tensorboard]'" in err
    assert not (run / "last.pt").exists()
