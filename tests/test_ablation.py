"""Ablation grid: statistics, summary files, skipping finished cells, locks shared by processes."""

import csv
import json
import math
import os
import subprocess
import sys
import time

import pytest

from snn_delays import ablation, load_config
from snn_delays.cli import main
from snn_delays.ablation import Cell, ablate, ci95, grid_cells, run_grid, t_quantile_975
from snn_delays.workers import FolderLock
from _support import tiny

TINY = tiny({"train.epochs": "1", "train.threads": "1"})
quiet = lambda *a: None


def test_t_interval():
    assert t_quantile_975(1) == pytest.approx(12.7062, abs=1e-3)
    assert t_quantile_975(2) == pytest.approx(4.3027, abs=1e-3)
    assert t_quantile_975(60) == pytest.approx(2.0003, abs=1e-3)
    mean, half, std, n = ci95([0.90, 0.92, 0.94])
    assert (mean, std, n) == (pytest.approx(0.92), pytest.approx(0.02), 3)
    assert half == pytest.approx(4.3027 * 0.02 / math.sqrt(3), rel=1e-4)
    assert math.isnan(ci95([0.5])[1]) and ci95([])[3] == 0


def test_grid_writes_summary_and_skips_finished_cells(tmp_path):
    base = load_config("synthetic", TINY)
    table = ablate(base, tmp_path, seeds=2, variants=["full", "no-delays-wider"], fanin=3, log=quiet)
    rows = list(csv.DictReader(open(tmp_path / "summary.csv")))
    assert list(rows[0])[:6] == ["variant", "mean", "ci95", "std", "n", "params"]
    assert [(r["connectivity"], r["variant"]) for r in rows] == [
        ("full", "full"), ("full", "no-delays-wider"), ("fanin3", "full"), ("fanin3", "no-delays-wider")]
    assert all(r["n"] == "2" for r in rows)
    for r in table:  # params in the table are the trainable counts of the runs
        run = Cell(r["variant"], r["fanin"], 0).folder(tmp_path)
        assert json.loads((run / "summary.json").read_text())["trainable_parameters"] == r["params"]
    md = (tmp_path / "summary.md").read_text()
    assert "| fully connected | no-delays-wider |" in md and "± " in md
    assert (tmp_path / "ablation.png").stat().st_size > 10_000
    # the same command again trains nothing
    counts = run_grid(base, grid_cells(["full", "no-delays-wider"], [0, 1], [0, 3]), tmp_path, log=quiet)
    assert counts == {"ran": 0, "done_before": 8, "busy": 0}
    # one name per connectivity, counts with their plural
    assert "3 inputs/neuron" in md and "fanin3" not in md and md.startswith("# synthetic: 1 epoch, 2 seeds,")
    # --summary-only needs no other flag: it reads the grid's own record (grid.json)
    before = (tmp_path / "summary.csv").read_text()
    for f in ("summary.csv", "summary.md", "ablation.png"):
        (tmp_path / f).unlink()
    assert main(["ablate", "--out", str(tmp_path), "--summary-only"]) == 0
    assert (tmp_path / "summary.csv").read_text() == before and (tmp_path / "ablation.png").exists()
    # a different base config in the same folder is refused
    with pytest.raises(Exception, match=r"another base configuration \(model.dropout: 0.1 -> 0.3\)"):
        ablate(load_config("synthetic", TINY + ["model.dropout=0.3"]), tmp_path, seeds=1, log=quiet)


@pytest.mark.parametrize("args, named", [
    (["--seed", "3"], "--seed"), (["--variant", "full"], "--variant"), (["--seeds", "0"], "--seeds"),
    (["--first-seed", "-1"], "--first-seed"), (["--variants", ","], "--variants"), (["--workers", "0"], "--workers"),
    (["--stale-after", "0"], "--stale-after"), ([], "--dataset")])
def test_flags_ablate_cannot_honour_are_refused(tmp_path, capsys, args, named):
    dataset = [] if named == "--dataset" else ["--dataset", "synthetic"]
    assert main(["ablate", *dataset, "--out", str(tmp_path / "g"), *args]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "g" / "runs").exists()


def test_nothing_finished_is_said_not_drawn(tmp_path, capsys, monkeypatch):
    assert main(["ablate", "--out", str(tmp_path), "--summary-only"]) == 2  # no grid started here
    assert "nothing to summarise yet" in capsys.readouterr().err
    # every cell taken by other processes: nothing finished, no empty figure
    monkeypatch.setattr(ablation, "run_grid", lambda *a, **k: {"ran": 0, "done_before": 0, "busy": 2})
    said = []
    assert ablate(load_config("synthetic", TINY), tmp_path, seeds=1, variants=["full", "fixed-delays"],
                  log=said.append) == []
    assert any("nothing to summarise yet" in m for m in said) and not (tmp_path / "ablation.png").exists()
    assert main(["ablate", "--out", str(tmp_path), "--summary-only"]) == 2
    assert "none of the 2 cells" in capsys.readouterr().err


def test_figure_has_a_chance_line(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kept = []
    monkeypatch.setattr(plt, "close", kept.append)
    records = lambda accs: [{"connectivity": "full", "fanin": 0, "variant": "full", "seed": s, "done": True,
                             "test_acc": a, "params": 100, "n_classes": 10} for s, a in enumerate(accs)]
    ablation.plot_summary(tmp_path, records([0.15, 0.2]), "t")
    labels = [t.get_text() for t in kept[0].legends[0].get_texts()]
    assert "chance (10.0 %)" in labels
    assert any(abs(l.get_ydata()[0] - 10.0) < 1e-9 for l in kept[0].axes[0].get_lines())
    ablation.plot_summary(tmp_path, records([0.9, 0.95]), "t")  # the axis starts above chance: said in the title
    assert "chance 10.0 %, below the axis" in kept[1]._suptitle.get_text()


def test_locks_live_stale_and_dead(tmp_path):
    a, b = FolderLock(tmp_path / "cell"), FolderLock(tmp_path / "cell")
    assert a.acquire() and b.acquire() and b.reentered  # this process holds it (a cell's train): re-entered
    b.release()
    assert a.path.exists()  # only the owner releases it
    a.release()
    live = FolderLock(tmp_path / "busy")
    live.path.parent.mkdir()
    live.path.write_text(json.dumps({"host": os.uname().nodename, "pid": os.getppid(), "time": time.time()}))
    assert not live.acquire()  # held by another live process of this machine
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock = tmp_path / "cell" / ".lock"
    lock.write_text(json.dumps({"host": os.uname().nodename, "pid": int(dead.stdout), "time": 0}))
    assert FolderLock(tmp_path / "cell").acquire()  # its owner is gone: broken and taken
    other = FolderLock(tmp_path / "cell2", stale_after_s=10)
    other.path.parent.mkdir()
    other.path.write_text(json.dumps({"host": "elsewhere", "pid": 1, "time": 0}))
    assert not other.acquire()  # another machine, fresh: respected
    os.utime(other.path, (0, 0))
    assert other.acquire()  # not refreshed for longer than stale_after_s: broken


def test_two_processes_share_a_grid_without_running_a_cell_twice(tmp_path):
    base = load_config("synthetic", TINY)
    ablate(base, tmp_path, seeds=2, variants=["full", "no-delays-wider"], workers=2, log=quiet)
    cells = list((tmp_path / "runs").glob("*/*/seed*"))
    assert len(cells) == 4
    starts = [len((c / "runs.log").read_text().splitlines()) for c in cells]
    assert starts == [1] * 4  # every cell trained exactly once
    assert all(r["n"] == "2" for r in csv.DictReader(open(tmp_path / "summary.csv")))


def test_threads_and_progress_do_not_split_a_grid(tmp_path):
    base = load_config("synthetic", TINY)
    ablate(base, tmp_path, seeds=1, variants=["no-delays-wider"], log=quiet)
    other = load_config("synthetic", TINY + ["train.threads=2", "train.progress=true"])
    counts = run_grid(other, grid_cells(["no-delays-wider"], [0], [0]), tmp_path, log=quiet)
    assert counts["done_before"] == 1
    ablate(other, tmp_path, seeds=1, variants=["no-delays-wider"], log=quiet)  # same grid: accepted


def test_interpolation_variants_in_one_grid(tmp_path):
    """interp-*/…-learned-sigma cells are the full model with another training kernel, from the same
    initial weights and delays; the table has them with their parameter counts."""
    base = load_config("synthetic", TINY)
    variants = ["full", "interp-triangle", "interp-bilinear", "gauss-learned-sigma", "triangle-learned-sigma"]
    table = ablate(base, tmp_path, seeds=1, variants=variants, log=quiet)
    assert [r["variant"] for r in table] == variants
    n_full = next(r["params"] for r in table if r["variant"] == "full")
    for r in table:
        cfg = Cell(r["variant"], 0, 0).config(base).model
        assert cfg.variant == "full"
        want = {"full": ("gauss", False), "interp-triangle": ("triangle", False), "interp-bilinear": ("bilinear", False),
                "gauss-learned-sigma": ("gauss", True), "triangle-learned-sigma": ("triangle", True)}[r["variant"]]
        assert (cfg.interpolation, cfg.learn_sigma) == want
        # one learned width per element: the delays' count again, i.e. the synapses' (params - BatchNorm) / 2
        syn = n_full - 2 * cfg.hidden_size * cfg.n_layers
        assert r["params"] == n_full + (syn // 2 if want[1] else 0)
    assert "| fully connected | triangle-learned-sigma |" in (tmp_path / "summary.md").read_text()
    with pytest.raises(Exception, match="unknown variant"):
        grid_cells(["interp-cubic"], [0], [0])
