"""Figures of a run folder: files made, data beside every PNG, diagnostics that mean what they say."""

import csv
import json

import pytest
import torch

from snn_delays import load_config
from snn_delays.plots import delay_histograms, plot_run
from snn_delays.train import train

TINY = [
    "model.hidden_size=8", "model.kernel_size=7", "data.synthetic_train=60", "data.synthetic_valid=30",
    "data.synthetic_test=30", "data.batch_size=30", "train.epochs=3", "train.progress=false", "train.threads=1",
    "train.kernel_snapshot_neurons=2",
]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("plots") / "run"
    train(load_config("synthetic", TINY), d)
    return d


def test_plot_run_writes_pngs_with_their_data(run):
    made = plot_run(run)
    assert sorted(p.name for p in made) == ["curves.png", "delays.png", "kernels.png"]
    out = run / "plots"
    for p in made:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
    curves = list(csv.DictReader(open(out / "curves.csv")))
    assert [int(r["epoch"]) for r in curves] == [1, 2, 3] and "valid_acc" in curves[0]
    h = json.loads((out / "delays.json").read_text())
    assert list(h["layers"]) == ["hidden.0", "hidden.1", "readout"]
    assert h["layers"]["hidden.0"]["n"] == 8 * 140 and sum(h["layers"]["hidden.0"]["counts"]) == 8 * 140
    rows = list(csv.reader(open(out / "delays.csv")))
    assert rows[0] == ["bin_start", "bin_end", "hidden.0", "hidden.1", "readout"] and len(rows) == 1 + 60
    k = json.loads((out / "kernels.json").read_text())
    assert [e["epoch"] for e in k["epochs"]] == [0, 1, 2, 3] and len(k["epochs"][0]["weight"]) == 2


def test_delay_diagnostics():
    td = 7
    state = {"a.synapse.delay": torch.tensor([[[0.0], [3.02]], [[6.0], [2.5]]]),
             "a.synapse.mask": torch.tensor([[1.0, 1.0], [1.0, 0.0]])}
    L = delay_histograms(state, td)["layers"]["a"]
    assert L["n"] == 3  # the masked-out synapse is not counted
    assert L["near_integer"] == 1.0 and L["at_lower_limit"] == pytest.approx(1 / 3)
    assert L["at_upper_limit"] == pytest.approx(1 / 3) and L["exactly_at_limits"] == pytest.approx(2 / 3)


def test_no_delay_variant_has_curves_only(tmp_path):
    d = tmp_path / "nd"
    train(load_config("synthetic", TINY + ["model.variant=\"no-delays-wider\"", "train.epochs=1"]), d)
    assert [p.name for p in plot_run(d)] == ["curves.png"]
