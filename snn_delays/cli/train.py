"""``snn-delays train``: build the config from the arguments, call :func:`snn_delays.train.train`
(looked up when called, so that a test may replace it)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import UserError
from .. import train as training
from ._common import Interrupted
from .config_args import add_config_args, config_from_args

__all__ = ["add_parser", "run_train"]


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model; writes a run folder")
    p.add_argument("--dataset", default=None, help="synthetic, shd, ssc, gsc or fsdd; alone, it also picks the "
                   "config of that name (with --config: replaces the config's dataset)")
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--restart", action="store_true", help="ignore an existing last.pt and start over")
    p.add_argument("--target", help="train for a chip (loihi1, loihi2, spinnaker1, spinnaker2): its delay range "
                   "from the first epoch, its quantised forward in the last train.target_fraction of the epochs "
                   "(shortcut for --set train.target=T)")
    add_config_args(p)
    p.set_defaults(func=run_train)


def run_train(args: argparse.Namespace) -> int:
    if args.target:
        if any(o.split("=", 1)[0].strip() == "train.target" for o in args.overrides):
            raise UserError("give the target once: --target or --set train.target")
        args.overrides = args.overrides + [f"train.target={args.target}"]
    cfg = config_from_args(args)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    try:
        result = training.train(cfg, out, resume=not args.restart)
    except KeyboardInterrupt:
        raise Interrupted(_resume_hint(out)) from None
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    print(f"run folder: {out}")
    files = [f for f in ("config.toml", "metrics.jsonl", "best.pt", "last.pt", "summary.json") if (out / f).exists()]
    print(f"  {', '.join(files)}")
    if result.get("best_epoch", -1) < 0:
        print("  no epoch was evaluated on the validation set, so there is no best.pt")
    else:
        print(f"  best valid accuracy {result['best_valid_acc']:.4f} (epoch {result['best_epoch']}), "
              f"test accuracy at that epoch {result['test_acc']:.4f}")
    return 0


def _resume_hint(run_dir: Path) -> str:
    if (run_dir / "last.pt").exists():
        return f"{run_dir / 'last.pt'} holds the last finished epoch; run the same command to resume"
    return "no epoch had finished, so there is nothing to resume; the same command starts over"
