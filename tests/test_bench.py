"""The benchmark command in its quick mode (a tiny configuration, seconds): table and JSON."""

import json

import pytest
import torch

from snn_delays import allocator
from snn_delays.bench import measure
from snn_delays.bench.reference import missing_reason
from snn_delays.cli import main


@pytest.mark.parametrize("kind", ["counts", "binary"])
def test_bench_quick_writes_table_and_json(tmp_path, capsys, kind):
    args = ["bench", "--quick", "--repeats", "1", "--no-memory", "--input", kind, "--json", str(tmp_path / "b.json")]
    if missing_reason() is not None:
        args.append("--no-reference")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "| config | mode |" in out and "eval, rounded delays" in out
    assert "CPU: " in out and ("AVX-512" in out) and f"input: {'spike counts' if kind == 'counts' else 'binary'}" in out
    data = json.loads((tmp_path / "b.json").read_text())
    env = data["environment"]
    assert env["cpu_model"] and isinstance(env["vector_isa"], list) and isinstance(env["avx512"], bool)
    assert env["allocator"] == allocator.allocator_setting()  # the process's setting, recorded
    (res,) = data["results"]
    assert res["config"]["input"] == kind
    assert set(res["samples_per_s"]) == {"train_sigma_large", "train_sigma_0.5", "eval_rounded", "eval_rounded_trained"}
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


@pytest.mark.parametrize("kind,density,top", [("counts", 0.05, 3.0), ("binary", 0.10, 1.0)])
def test_bench_input_density_and_counts(kind, density, top):
    """The bench input: its non-zero fraction and values (counts 1..3, or 0/1 spikes)."""
    cfg = measure.CONFIGS["shd"].with_(input=kind, batch=64)
    x, y = measure.make_batch(cfg)
    assert x.shape == (cfg.steps, 64, cfg.n_in) and y.shape == (64,)
    nz = x[x != 0]
    assert abs(nz.numel() / x.numel() - density) < 0.005
    assert float(nz.min()) == 1.0 and float(nz.max()) == top and torch.equal(nz, nz.round())
    if kind == "counts":  # 70 / 20 / 10 % of the non-zero entries hold 1 / 2 / 3
        shares = [float((nz == k).float().mean()) for k in (1, 2, 3)]
        assert all(abs(a - b) < 0.02 for a, b in zip(shares, measure.COUNT_PROBS))


def test_bench_quick_reports_both_spiking_settings(tmp_path, capsys):
    """The default bench times evaluation at the random-weight and the trained-like setting and
    reports the measured hidden rates of each (the trained-like ones near TRAINED_RATE)."""
    args = ["bench", "--quick", "--repeats", "1", "--no-memory", "--json", str(tmp_path / "b.json")]
    if missing_reason() is not None:
        args.append("--no-reference")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "random weights (hidden" in out and "trained-like (hidden" in out
    (res,) = json.loads((tmp_path / "b.json").read_text())["results"]
    assert {"eval_rounded", "eval_rounded_trained"} <= set(res["samples_per_s"])
    stacks = ["ours"] + (["reference"] if missing_reason() is None else [])
    for s in stacks:
        assert all(abs(v - measure.TRAINED_RATE) < 0.02 for v in res["eval_rates"]["trained"][s]), res["eval_rates"]
        assert len(res["eval_rates"]["random"][s]) == measure.CONFIGS["tiny"].n_layers
    assert res["eval_hidden_rates"] == res["eval_rates"]["random"]["ours"]


def test_set_hidden_rates_at_shd_sizes():
    """The trained-like setting at SHD sizes (this model, 32 samples): every hidden layer within
    0.01 of the target, by lowering the BatchNorm shifts."""
    cfg = measure.CONFIGS["shd"].with_(batch=32)
    r = measure.Runner("ours", cfg, None, rates="trained")
    rates = r.hidden_rates()
    assert all(abs(v - measure.TRAINED_RATE) < 0.01 for v in rates), rates
    assert all(d > 0 for d in r.rate_shifts)  # the random-weight layers spike more than trained ones
    with pytest.raises(ValueError):
        measure.Runner("ours", measure.CONFIGS["tiny"], None, rates="silent")


def test_backend_column_names_what_each_layer_runs_in_training():
    """The table's backend column for training comes from one real step: each layer decides on its
    own input, so only the first (sparse input, no gradient) may take the event form; the hidden
    layers' inputs need their gradient."""
    cfg = measure.CONFIGS["tiny"]
    runner = measure.Runner("ours", cfg, 0.5)
    chosen = measure.backends_in_step(runner)
    assert len(chosen) == len(list(runner.model.synapses())) == cfg.n_layers + 1
    assert chosen[0] == "event"  # 5 % non-zero counts, no input gradient
    assert "event" not in chosen[1:], chosen
    # the same synapses decide as before once the recorder is gone (no instance attribute left)
    assert all("resolved_backend" not in vars(s) for s in runner.model.synapses())
