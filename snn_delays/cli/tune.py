"""``snn-delays tune``: Optuna hyperparameter search (:mod:`snn_delays.tuning`)."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from .. import tuning
from ..errors import UserError, check_option_bounds
from ..launchers import job_threads
from ..tuning import SEARCH_SPACE, format_report, tune_in_workers, tune_with_launch
from .config_args import add_config_args, config_from_args
from .launch_args import add_launch_args, launch_from_args

__all__ = ["add_parser", "run_tune"]


def add_parser(sub) -> None:
    p = sub.add_parser("tune", help="Optuna hyperparameter search (resumable, shareable storage)",
                              description=tuning.__doc__.split("\n\n")[1] if tuning.__doc__ else None)
    p.add_argument("--dataset", required=True, help="synthetic, shd, ssc, gsc, fsdd")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study should have")
    p.add_argument("--out", required=True, help="folder for trial runs, optuna.db, best.toml")
    p.add_argument("--storage", help="Optuna RDB URL (default sqlite:///OUT/optuna.db)")
    p.add_argument("--study", help="study name (default <dataset>-tune)")
    p.add_argument("--params", help=f"comma-separated subset of the search space: {','.join(SEARCH_SPACE)}")
    p.add_argument("--pruner", default="median", choices=["median", "none"])
    p.add_argument("--warmup-epochs", type=int, help="epochs before pruning may stop a trial (default epochs // 4)")
    p.add_argument("--heartbeat", type=int, default=30, help="seconds between trial heartbeats in the storage")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes on this machine")
    p.add_argument("--sampler-seed", type=int, help="seed of the TPE sampler (one worker: reproducible proposals)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    p.add_argument("--loso", action="store_true",
                   help="FSDD: optimise the leave-one-speaker-out validation accuracy (each fold validates on "
                        "another speaker, never its test speaker; a trial is one training per speaker)")
    add_launch_args(p, "trial")
    add_config_args(p)
    p.set_defaults(func=run_tune)


def _check_tune_flags(args: argparse.Namespace) -> None:
    check_option_bounds((("--trials", args.trials, 0), ("--workers", args.workers, 1),
                         ("--heartbeat", args.heartbeat, 1), ("--warmup-epochs", args.warmup_epochs, 0)),
                        positive=(("--timeout", args.timeout, " seconds"),))
    if args.params is not None and not [p for p in args.params.split(",") if p.strip()]:
        raise UserError(f"--params is empty; choose from {', '.join(SEARCH_SPACE)}")


def run_tune(args: argparse.Namespace) -> int:
    _check_tune_flags(args)
    launch = launch_from_args(args)
    base = config_from_args(args)
    if args.workers > 1 and base.train.threads == 0:
        base = replace(base, train=replace(base.train, threads=1))
    base = replace(base, train=replace(base.train, progress=False, threads=job_threads(launch, base.train.threads)))
    params = [p.strip() for p in args.params.split(",") if p.strip()] if args.params else list(SEARCH_SPACE)
    out = Path(args.out)
    kwargs = dict(out=str(out), trials=args.trials, storage=args.storage, study_name=args.study, params=params,
                  pruner=args.pruner, warmup_epochs=args.warmup_epochs, heartbeat_s=args.heartbeat,
                  timeout_s=args.timeout, seed=args.sampler_seed, loso=args.loso)
    if launch.uses_submitit:
        report = tune_with_launch(base, launch, **kwargs)
    else:
        report = tune_in_workers(base, args.workers, **kwargs)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
