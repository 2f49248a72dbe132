"""The trainer: schedules against torch's schedulers, resume equality, NaN handling, run folder."""

import json
import math

import pytest
import torch

from snn_delays import UserError, load_config, load_model
from snn_delays.errors import TrainingDiverged
from snn_delays.train import cosine_lr, one_cycle_lr, sigma_at_epoch, train
from _support import tiny

TINY = tiny({"model.hidden_size": "12", "model.kernel_size": "9", "data.synthetic_train": "120",
    "data.synthetic_valid": "40", "data.synthetic_test": "40", "data.batch_size": "40", "train.epochs": "3",
    "model.dropout": "0.2"})


@pytest.mark.parametrize("epochs", [1, 5, 150])
def test_one_cycle_matches_torch(epochs):
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=1.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=5e-3, total_steps=epochs)
    for e in range(epochs):
        assert math.isclose(opt.param_groups[0]["lr"], one_cycle_lr(e, epochs, 5e-3), rel_tol=1e-9)
        opt.step()
        sched.step()


def test_cosine_matches_torch():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=0.1)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=40)
    for e in range(40):
        assert math.isclose(opt.param_groups[0]["lr"], cosine_lr(e, 40, 0.1), rel_tol=1e-9, abs_tol=1e-15)
        opt.step()
        sched.step()


def test_sigma_schedule():
    s = [sigma_at_epoch(e, 100, 12.0, 0.5, 0.25) for e in range(100)]
    assert s[0] == 12.0 and s[25] == pytest.approx(0.5) and all(v == pytest.approx(0.5) for v in s[25:])
    assert all(a > b for a, b in zip(s[:25], s[1:26]))
    ratios = [b / a for a, b in zip(s[:24], s[1:25])]
    assert max(ratios) - min(ratios) < 1e-9  # exponential


def test_resume_gives_same_metrics_as_uninterrupted(tmp_path):
    cfg = load_config("synthetic", TINY)
    full = train(cfg, tmp_path / "full")
    part = tmp_path / "part"
    train(cfg, part, max_epochs=1)  # "killed" after the first epoch
    assert len((part / "metrics.jsonl").read_text().splitlines()) == 1
    with open(part / "metrics.jsonl", "a") as f:  # a line written after the checkpoint, then killed
        f.write('{"epoch": 99}\n')
    resumed = train(cfg, part)
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_s")} for r in rows]
    a = [json.loads(l) for l in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (part / "metrics.jsonl").read_text().splitlines()]
    assert strip(a) == strip(b)
    assert full["test_acc"] == resumed["test_acc"]
    ma, mb = load_model(tmp_path / "full", "last"), load_model(part, "last")
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(va, vb), ka


def test_run_folder_contents(tmp_path):
    cfg = load_config("synthetic", TINY + ["train.epochs=2"])
    summary = train(cfg, tmp_path)
    for f in ("config.toml", "metrics.jsonl", "best.pt", "last.pt", "summary.json"):
        assert (tmp_path / f).exists(), f
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    for key in ("epoch", "train_loss", "train_acc", "valid_acc", "test_acc", "sigma", "lr_weights", "lr_delays",
                "delay_mean_0", "delay_std_0", "delay_at_limits_0"):
        assert key in row
    assert summary["seed"] == 0 and "torch" in summary["versions"] and "git_commit" in summary
    assert summary["allocator"]  # what snn_delays.allocator did in this process, one line
    assert load_config(tmp_path / "config.toml").model.hidden_size == 12
    model = load_model(tmp_path)
    assert not model.training
    # delays stay in range after every step
    for syn in model.synapses():
        assert float(syn.delay.detach().min()) >= 0 and float(syn.delay.detach().max()) <= syn.kernel_size - 1


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    cfg = load_config("synthetic", TINY + ["train.epochs=3"])
    train(cfg, tmp_path, max_epochs=1)
    before = (tmp_path / "last.pt").read_bytes()
    bad = load_config("synthetic", TINY + ["train.epochs=3", "train.lr_weights=1e30"])
    # a different config refuses to resume
    with pytest.raises(UserError, match="different configuration"):
        train(bad, tmp_path)
    with pytest.raises(TrainingDiverged, match="last good checkpoint"):
        train(bad, tmp_path / "fresh")
    assert (tmp_path / "last.pt").read_bytes() == before


def test_dataset_size_mismatch_is_clear(tmp_path):
    cfg = load_config("synthetic", TINY + ["model.input_size=100"])
    with pytest.raises(UserError, match="input_size is 100 but dataset 'synthetic' has 140"):
        train(cfg, tmp_path)


def test_killed_process_resumes_to_the_same_metrics(tmp_path):
    """SIGKILL a real training process in the middle, run the same command again, compare."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["--dataset", "synthetic", "--epochs", "4"] + [a for kv in TINY if kv != "train.epochs=3"
                                                         for a in ("--set", kv)]
    cmd = [sys.executable, "-m", "snn_delays.cli", "train", *args]
    subprocess.run(cmd + ["--out", str(tmp_path / "ref")], check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(cmd + ["--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not (tmp_path / "killed" / "last.pt").exists():
        time.sleep(0.05)
    time.sleep(0.3)  # somewhere inside the next epoch
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(cmd + ["--out", str(tmp_path / "killed")], check=True, capture_output=True, timeout=300)
    strip = lambda p: [{k: v for k, v in json.loads(l).items() if not k.endswith("_s")}
                       for l in (p / "metrics.jsonl").read_text().splitlines()]
    assert strip(tmp_path / "ref") == strip(tmp_path / "killed")
    assert len(strip(tmp_path / "ref")) == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_trains_on_cuda(tmp_path):
    cfg = load_config("synthetic", TINY + ["train.epochs=1", 'train.device="cuda"'])
    summary = train(cfg, tmp_path)
    assert summary["device"].startswith("cuda")


def test_eval_every_skips_evaluation_but_not_training(tmp_path):
    """eval_every=2 over 3 epochs evaluates after epochs 2 and 3 (the last); the other rows hold null
    accuracies, best.pt comes from an evaluated epoch, and training itself is unchanged."""
    every = train(load_config("synthetic", TINY), tmp_path / "every")
    sparse = train(load_config("synthetic", TINY + ["train.eval_every=2"]), tmp_path / "sparse")
    a = [json.loads(l) for l in (tmp_path / "every" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(l) for l in (tmp_path / "sparse" / "metrics.jsonl").read_text().splitlines()]
    assert [r["valid_acc"] is None for r in b] == [True, False, False]
    assert [r["test_acc"] is None for r in b] == [True, False, False]
    keep = lambda r: {k: v for k, v in r.items() if k not in ("valid_acc", "test_acc", "valid_loss", "spike_rate")
                          and not k.endswith("_s")}
    assert [keep(r) for r in a] == [keep(r) for r in b]
    assert [r["valid_acc"] for r in a[1:]] == [r["valid_acc"] for r in b[1:]]
    assert [r["valid_loss"] is None for r in b] == [True, False, False]
    assert [r["valid_loss"] for r in a[1:]] == [r["valid_loss"] for r in b[1:]]
    assert sparse["best_epoch"] in (2, 3) and sparse["final_test_acc"] == every["final_test_acc"]
    assert load_model(tmp_path / "sparse").training is False  # best.pt exists
