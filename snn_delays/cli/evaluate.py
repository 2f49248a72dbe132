"""``snn-delays evaluate``: call :func:`snn_delays.evaluate.evaluate_run`, print its report."""

from __future__ import annotations

import argparse
import sys

from neuromorphic_export._io import dumps_standard

from ..evaluate import evaluate_run, format_report

__all__ = ["add_parser", "run_evaluate"]


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="accuracy of a trained run with rounded delays")
    p.add_argument("run_dir")
    p.add_argument("--dataset", help="evaluate on another dataset than the run's")
    p.add_argument("--data-dir", help="folder holding the dataset's files (default: the run's data.root)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test", "all"])
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object: accuracy, loss, confusion (rows = "
                   "true class), per_class_accuracy, spike_rate (per hidden layer), ...")
    p.set_defaults(func=run_evaluate)


def run_evaluate(args: argparse.Namespace) -> int:
    res = evaluate_run(args.run_dir, dataset=args.dataset, data_dir=args.data_dir, split=args.split,
                       checkpoint=args.checkpoint, device=args.device)
    for warning in res.get("warnings", []):
        print(f"snn-delays evaluate: warning: {warning}", file=sys.stderr)
    print(dumps_standard(res) if args.json else format_report(res))
    return 0
