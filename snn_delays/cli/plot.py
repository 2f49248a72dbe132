"""``snn-delays plot``: the figures of a run (:func:`snn_delays.plots.plot_run`)."""

from __future__ import annotations

import argparse

from ..plots import plot_run

__all__ = ["add_parser", "run_plot"]


def add_parser(sub) -> None:
    p = sub.add_parser("plot", help="training curves, delay histograms and kernels of a run (PNG + data)")
    p.add_argument("run_dir")
    p.add_argument("--out", help="folder for the figures (default RUN_DIR/plots)")
    p.add_argument("--layer", type=int, default=0,
                   help="synapse layer whose kernels are drawn (0 = first hidden, n_layers = readout)")
    p.add_argument("--neurons", type=int, default=3, help="neurons (rows) in the kernel figure")
    p.add_argument("--columns", type=int, default=5,
                   help="epochs shown as columns in the kernel figure, spread over training (not training epochs)")
    p.add_argument("--epochs", dest="columns", type=int, default=argparse.SUPPRESS, help=argparse.SUPPRESS)  # old name
    p.add_argument("--synapses", type=int, default=24, help="strongest input synapses per neuron in the kernel figure")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="checkpoint for the delay histogram")
    p.set_defaults(func=run_plot)


def run_plot(args: argparse.Namespace) -> int:
    made = plot_run(args.run_dir, args.out, args.layer, args.neurons, args.columns, args.checkpoint, args.synapses)
    for p in made:
        print(p)
    return 0
