"""The benchmark command in its quick mode (a tiny configuration, seconds): table and JSON."""

import json

import pytest

from snn_delays.bench import measure
from snn_delays.bench.reference import missing_reason
from snn_delays.cli import main


def test_bench_quick_writes_table_and_json(tmp_path, capsys):
    args = ["bench", "--quick", "--repeats", "1", "--no-memory", "--json", str(tmp_path / "b.json")]
    if missing_reason() is not None:
        args.append("--no-reference")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| config | mode |" in out and "eval, rounded delays" in out
    data = json.loads((tmp_path / "b.json").read_text())
    (res,) = data["results"]
    assert set(res["samples_per_s"]) == {"train_sigma_large", "train_sigma_0.5", "eval_rounded"}
    assert all(v["ours"] > 0 for v in res["samples_per_s"].values())
    if missing_reason() is None:
        assert res["speed_ratio"]["eval_rounded"] > 0


def test_memory_child_reports_growth():
    """A tensor of known size held during the measured step shows up in the reported growth."""
    cfg = measure.CONFIGS["tiny"]
    ballast = 64 * 2**20
    m = measure.measure_memory("ours", cfg, 0.5, threads=1, ballast_bytes=ballast)
    assert m["base_rss_bytes"] > 50 * 2**20  # torch is loaded: tens of MB resident before the step
    # at least the ballast, less 1 MB: pages resident at the baseline may leave while it is held
    assert ballast - 2**20 <= m["extra_peak_bytes"] < ballast + 256 * 2**20, m


def test_reference_stack_shapes():
    if missing_reason() is not None:
        pytest.skip("dcls / spikingjelly not installed")
    cfg = measure.CONFIGS["tiny"]
    r = measure.Runner("reference", cfg, 0.5)
    out = r.model(r.x)
    td = cfg.kernel_size
    assert out.shape == (cfg.steps + (cfg.n_layers + 1) * ((td - 1) // 2), cfg.batch, cfg.n_classes)
