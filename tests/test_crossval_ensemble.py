"""snn-delays cv --ensemble: seed ensembles at evaluation, against a direct per-sample computation."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch

from snn_delays.checkpoint import load_checkpoint
from snn_delays.config import config_from_dict, load_config
from snn_delays.crossval import SCORES_FILE, cross_validate, summarize_ensembles
from snn_delays.data import open_dataset
from snn_delays.model import DelaySNN

from test_data_fsdd import write_tiny_fsdd

SPEAKERS = ["anna", "bob", "carl"]


@pytest.fixture()
def base(tmp_path):
    root = write_tiny_fsdd(tmp_path / "fsdd", speakers=SPEAKERS, digits=range(4))
    return load_config("fsdd", [("data.root", str(root)), ("data.cache_dir", str(tmp_path / "cache")),
                                ("data.n_steps", 20), ("data.batch_size", 8), ("model.hidden_size", 4),
                                ("model.kernel_size", 3), ("train.epochs", 1), ("train.progress", False),
                                ("train.threads", 1), ("train.device", "cpu")])


def _direct_softmax_sums(run) -> tuple[np.ndarray, np.ndarray]:
    """Each test sample alone through the run's best.pt: softmax over classes at every output step,
    summed over steps (written out here, not through the evaluation code)."""
    ckpt = load_checkpoint(run, "best")
    cfg = config_from_dict(ckpt["config"])
    model = DelaySNN(cfg.model, seed=cfg.train.seed)
    model.load_state_dict(ckpt["model"])
    model.eval()
    ds = open_dataset("fsdd", cfg.data.root, "test", **cfg.data.dataset_options())
    rows, labels = [], []
    with torch.no_grad():
        for i in range(len(ds)):
            x, y = ds[i]
            membrane = model(torch.as_tensor(np.asarray(x), dtype=torch.float32).unsqueeze(1))  # (T', 1, K)
            p = torch.exp(membrane - membrane.logsumexp(-1, keepdim=True))
            rows.append(p.sum(0)[0].double().numpy())
            labels.append(int(y))
    return np.stack(rows), np.array(labels)


def test_ensemble_averages_the_seeds_softmax_sums(base, tmp_path):
    out = tmp_path / "cv"
    logs: list[str] = []
    cross_validate(base, out, speakers=["bob"], variants=["full"], seeds=[0, 1, 2], ensemble=True, log=logs.append)
    runs = [out / "runs" / "full" / "bob" / f"seed{s}" for s in range(3)]
    direct = [_direct_softmax_sums(r) for r in runs]
    labels = direct[0][1]
    assert all(np.array_equal(d[1], labels) for d in direct) and len(labels) == 4 * 2
    # a single seed's accuracy from its scores is the trainer's own test accuracy
    for run, (scores, y) in zip(runs, direct):
        assert float((scores.argmax(1) == y).mean()) == pytest.approx(json.loads((run / "summary.json").read_text())
                                                                       ["test_acc"])
        cached = np.load(run / SCORES_FILE)
        np.testing.assert_allclose(cached["scores"], scores, rtol=1e-5, atol=1e-6)
    expected = float((sum(d[0] for d in direct).argmax(1) == labels).mean())
    (row,) = list(csv.DictReader(open(out / "ensemble.csv")))
    assert row["variant"] == "full" and row["speaker"] == "bob" and row["seeds"] == "0 1 2"
    assert float(row["ensemble_acc"]) == pytest.approx(expected)
    singles = np.mean([(d[0].argmax(1) == labels).mean() for d in direct])
    assert float(row["single_acc"]) == pytest.approx(singles)
    assert "## Seed ensembles at evaluation" in (out / "summary.md").read_text()
    assert any("full ensemble" in line for line in logs)

    # the scores are cached per run, and recomputed when best.pt changes
    stamp = (runs[0] / SCORES_FILE).stat().st_mtime_ns
    cross_validate(None, out, summary_only=True, ensemble=True, log=lambda s: None)
    assert (runs[0] / SCORES_FILE).stat().st_mtime_ns == stamp
    best = runs[0] / "best.pt"
    os.utime(best, ns=(best.stat().st_atime_ns, best.stat().st_mtime_ns + 10**9))
    cross_validate(None, out, summary_only=True, ensemble=True, log=lambda s: None)
    assert (runs[0] / SCORES_FILE).stat().st_mtime_ns != stamp


def test_ensemble_table_pairs_the_gain_per_fold():
    recs = [{"variant": "full", "speaker": s, "seeds": [0, 1, 2], "ensemble_acc": e, "single_acc": a}
            for s, e, a in [("a", 0.8, 0.7), ("b", 0.9, 0.85), ("c", 0.6, 0.6)]]
    (row,) = summarize_ensembles(recs)
    assert row["per_fold"] == pytest.approx({"a": 0.8, "b": 0.9, "c": 0.6})
    assert row["mean"] == pytest.approx(np.mean([0.8, 0.9, 0.6]))
    assert row["gain"] == pytest.approx(np.mean([0.1, 0.05, 0.0]))
    assert row["min_seeds"] == 3 and row["n_folds"] == 3


def test_cli_ensemble_flag(base, tmp_path, capsys):
    from snn_delays.cli import main

    out = tmp_path / "cv"
    cross_validate(base, out, speakers=["anna"], variants=["full"], seeds=[0, 1], log=lambda s: None)
    assert not (out / "ensemble.csv").exists()
    assert main(["cv", "--summary-only", "--ensemble", "--out", str(out)]) == 0
    assert "full ensemble" in capsys.readouterr().out
    (row,) = list(csv.DictReader(open(out / "ensemble.csv")))
    assert row["seeds"] == "0 1"
