"""``snn-delays bench``: parse arguments and call :mod:`snn_delays.bench.measure`; print and write
the results."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..bench.measure import (CONFIGS, describe_cpu, environment, markdown_table, run_benchmark, run_scaling,
                             scaling_plot, scaling_table)

__all__ = ["add_parser", "run_bench", "default_json_path"]


def default_json_path() -> Path:
    """``benchmarks/results/bench.json`` of the source checkout this package runs from (where the
    recorded results live), or ``./bench.json`` for an installed package."""
    results = Path(__file__).resolve().parents[2] / "benchmarks" / "results"  # snn_delays/cli/ -> the checkout
    return results / "bench.json" if results.is_dir() else Path.cwd() / "bench.json"


def add_parser(sub) -> None:
    p = sub.add_parser("bench", help="speed and memory against the reference stack (dcls + SpikingJelly)",
                              description="Training samples/s at sigma = Td//2 and 0.5, evaluation samples/s "
                              "with rounded delays, peak memory and every ratio to the reference stack, "
                              "same process, same inputs. Prints a Markdown table and writes JSON.")
    p.add_argument("--config", choices=["shd", "ssc", "both"], default="shd")
    p.add_argument("--batch", type=int, help="batch size (default: the configuration's, SHD 256, SSC 128)")
    p.add_argument("--steps", type=int, help="input time steps per sample (default 100)")
    p.add_argument("--input", choices=["counts", "binary"], default="counts",
                   help="counts: binned spike counts like SHD at 10 ms / pool 5 (5 %% non-zero, counts 1-3; "
                   "the default); binary: 0/1 spikes at 10 %%")
    p.add_argument("--density", type=float, help="non-zero fraction of the input (default 0.05 counts, 0.10 binary)")
    p.add_argument("--rates", choices=["random", "trained", "both"], default="both",
                   help="spiking setting of the evaluation: random (the random weights, BatchNorm calibrated on the "
                   "batch), trained (each hidden BatchNorm's shift set so that its layer spikes at 0.1 per neuron "
                   "and step, as trained models do; same procedure for both stacks), both (the default)")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per mode and stack (median; default 3)")
    p.add_argument("--threads", type=int, default=2, help="torch/numba threads (default 2)")
    p.add_argument("--json", dest="json_out", help="write the results here (default: benchmarks/results/bench.json "
                   "in a source checkout, else ./bench.json)")
    p.add_argument("--scaling", action="store_true",
                   help="also time/memory vs kernel size 25, 50, 100, 250 at SHD sizes (steps = 4 Td) and a plot")
    p.add_argument("--kernel-sizes", default="25,50,100,250", help="with --scaling (comma-separated)")
    p.add_argument("--malloc", choices=["system", "reuse"], default="system",
                   help="system (the default): glibc's allocator as it comes, for both stacks; reuse: freed memory "
                   "kept and reused (snn_delays.allocator, what SNN_DELAYS_MALLOC=reuse sets for any command; faster "
                   "steps at SHD sizes, a higher peak), for both stacks too")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--no-reference", action="store_true", help="time this project's model only")
    p.add_argument("--quick", action="store_true", help="a tiny configuration for smoke tests (seconds)")
    p.set_defaults(func=run_bench)


def run_bench(args: argparse.Namespace) -> int:
    names = ["tiny"] if args.quick else (["shd", "ssc"] if args.config == "both" else [args.config])
    out: dict = {"environment": environment(), "results": []}
    for name in names:
        cfg = CONFIGS[name].with_(batch=args.batch, steps=args.steps, input=args.input, density=args.density)
        print(f"benchmark {name}: batch {cfg.batch}, {cfg.steps} steps, Td {cfg.kernel_size}, {args.threads} threads")
        out["results"].append(run_benchmark(cfg, repeats=args.repeats, threads=args.threads,
                                            memory=not args.no_memory, reference=not args.no_reference,
                                            rates=args.rates))
    print()
    print(f"CPU: {describe_cpu(out['environment'])}")
    print(f"input: {out['results'][0]['input']}")
    print()
    print(markdown_table(out["results"]))
    json_path = Path(args.json_out) if args.json_out else default_json_path()
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(out, indent=1))  # now, and again with the scaling rows
    if args.scaling:
        base = CONFIGS["tiny" if args.quick else "shd"].with_(batch=args.batch, input=args.input, density=args.density)
        sizes = [int(k) for k in args.kernel_sizes.split(",")]
        if args.quick:
            sizes = [s for s in sizes if s <= 14] or [7, 14]
        print(f"\nscaling: batch {base.batch}, steps = {base.steps} * Td / {base.kernel_size}")
        rows = run_scaling(base, sizes, repeats=max(1, min(args.repeats, 2)), threads=args.threads,
                           memory=not args.no_memory)
        for r in rows:
            r["batch"] = base.batch
        out["scaling"] = rows
        print()
        print(scaling_table(rows))
        png = json_path.with_name(json_path.stem + "_scaling.png")
        png.parent.mkdir(parents=True, exist_ok=True)
        scaling_plot(rows, png)
        print(f"plot: {png}")
        json_path.write_text(json.dumps(out, indent=1))
    print(f"results: {json_path}")
    return 0
