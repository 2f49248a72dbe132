"""Figures of a run folder: files made, data beside every PNG, diagnostics that mean what they say."""

import csv
import json
import pathlib
import subprocess

import pytest
import torch

from snn_delays import load_config
from snn_delays.cli import build_parser, main
from snn_delays.plots import delay_histograms, plot_curves, plot_run
from snn_delays.train import train
from _support import tiny

TINY = tiny({"train.epochs": "3", "train.threads": "1", "train.kernel_snapshot_neurons": "2"})


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


def test_no_delay_variant_has_curves_only_and_says_why(tmp_path):
    for variant in ("no-delays-wider", "dense-conv"):
        d = tmp_path / variant
        train(load_config("synthetic", TINY + [f"model.variant=\"{variant}\"", "train.epochs=1"]), d)
        notes = []
        assert [p.name for p in plot_run(d, log=notes.append)] == ["curves.png"]
        assert len(notes) == 1 and "kernels.png skipped" in notes[0] and variant in notes[0]


def _cli(capsys, *args):
    """``snn-delays plot ARGS`` in this process (a subprocess would spend seconds importing torch)."""
    try:
        code = main(["plot", *map(str, args)])
    except SystemExit as e:  # argparse (--help)
        code = e.code
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out.out, out.err)


@pytest.mark.parametrize("args, named", [
    (["--neurons", "0"], "--neurons"), (["--neurons", "-2"], "--neurons"), (["--epochs", "0"], "--columns"),
    (["--columns", "0"], "--columns"), (["--synapses", "0"], "--synapses"), (["--layer", "7"], "--layer 7"),
    (["--layer", "-1"], "--layer -1")])
def test_bad_figure_options_are_one_clear_line(run, args, named, capsys):
    r = _cli(capsys, run, "--out", run / "bad", *args)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert named in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (run / "bad" / "kernels.png").exists()


def test_columns_flag_and_its_old_name(run, tmp_path, capsys):
    assert _cli(capsys, run, "--out", tmp_path, "--epochs", "2").returncode == 0
    assert len(json.loads((tmp_path / "kernels.json").read_text())["epochs"]) == 2
    assert build_parser().parse_args(["plot", "R", "--columns", "3"]).columns == 3
    assert "--epochs" not in _cli(capsys, "--help").stdout  # the old name is hidden (plot --help)


def test_figures_state_their_units(run, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    captured = {}
    real_savefig = matplotlib.figure.Figure.savefig

    def keep(fig, path, *a, **k):
        captured[pathlib.Path(path).name] = fig
        return real_savefig(fig, path, *a, **k)

    close = plt.close
    try:
        matplotlib.figure.Figure.savefig = keep
        plt.close = lambda *a: None
        plot_run(run, tmp_path, log=None)
    finally:
        matplotlib.figure.Figure.savefig = real_savefig
        plt.close = close
    texts = lambda fig: " ".join(t.get_text() for t in fig.findobj(matplotlib.text.Text))
    kernels = captured["kernels.png"]
    assert any(ax.get_label() == "<colorbar>" for ax in kernels.axes), "kernels.png has a colour bar"
    assert "steps" in " ".join(ax.get_title() for ax in kernels.axes if ax.get_title().startswith("epoch"))
    assert "ms" in texts(captured["delays.png"]) and "dt_ms = 10" in texts(captured["delays.png"])
    assert all(fig.get_layout_engine() is not None for fig in captured.values())  # constrained: no cut titles
    assert [l.get_label() for l in captured["curves.png"].axes[0].get_lines()] == ["train", "valid"]  # losses


def test_one_epoch_curves_have_markers(tmp_path):
    d = tmp_path / "one"
    train(load_config("synthetic", TINY + ["train.epochs=1"]), d)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    real_close = plt.close
    figs = []
    plt.close = lambda fig=None: figs.append(fig)
    try:
        plot_curves(d, tmp_path)
    finally:
        plt.close = real_close
    lines = [l for ax in figs[0].axes for l in ax.get_lines() if len(l.get_xdata()) == 1]
    assert lines and all(l.get_marker() not in (None, "", "None") for l in lines)
    real_close(figs[0])
