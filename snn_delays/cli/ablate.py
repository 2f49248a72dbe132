"""``snn-delays ablate``: the control-experiment grid of :mod:`snn_delays.ablation`."""

from __future__ import annotations

import argparse
from dataclasses import replace

from ..ablation import ABLATION_VARIANTS, DEFAULT_VARIANTS, ablate, summarize_grid
from ..errors import UserError
from ..launchers import job_threads
from .config_args import add_config_args, config_from_args
from .launch_args import add_launch_args, launch_from_args

__all__ = ["add_parser", "run_ablate"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "ablate", help="control experiments over seeds: variants x connectivity x seeds, with a summary table",
        description="Run the ablation grid (resumable; several processes may share --out) and write "
                    "summary.csv, summary.md and ablation.png in --out.")
    p.add_argument("--dataset", help="synthetic, shd, ssc, gsc, fsdd (not needed with --summary-only)")
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (default 3)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated, from {', '.join(ABLATION_VARIANTS)} (default {','.join(DEFAULT_VARIANTS)}); "
                        "interp-*/…-learned-sigma: the full model with another interpolation kernel")
    p.add_argument("--out", required=True, help="grid folder (shared by every process running this grid)")
    p.add_argument("--sparse-only", action="store_true", help="with --fanin: skip the fully connected runs")
    p.add_argument("--summary-only", action="store_true",
                   help="train nothing; rewrite the summary of the finished cells of the grid recorded in "
                        "OUT/grid.json (no other option needed)")
    p.add_argument("--workers", type=int, default=1, help="parallel training processes on this machine (1 thread each)")
    p.add_argument("--threads", type=int, help="torch threads per training process (train.threads)")
    p.add_argument("--stale-after", type=float, default=3600.0,
                   help="seconds after which a lock not refreshed by its owner is considered stale (default 3600)")
    add_launch_args(p, "cell")
    add_config_args(p)
    p.set_defaults(func=run_ablate)


def run_ablate(args: argparse.Namespace) -> int:
    if args.summary_only:
        summarize_grid(args.out)
        return 0
    if args.seed is not None:
        raise UserError(f"--seed does not apply to ablate: the grid runs seeds --first-seed .. --first-seed + "
                        f"--seeds - 1; for seed {args.seed} alone use --first-seed {args.seed} --seeds 1")
    if args.variant is not None:
        raise UserError(f"--variant does not apply to ablate: list the variants with --variants "
                        f"(comma-separated, e.g. --variants {args.variant})")
    if args.dataset is None and args.config is None:
        raise UserError("give --dataset (synthetic, shd, ssc, gsc, fsdd) or --config")
    for flag, value, low in (("--seeds", args.seeds, 1), ("--first-seed", args.first_seed, 0),
                             ("--workers", args.workers, 1)):
        if value < low:
            raise UserError(f"{flag} must be >= {low}; got {value}")
    if args.threads is not None and args.threads < 0:
        raise UserError(f"--threads must be >= 0 (0: torch's default); got {args.threads}")
    launch = launch_from_args(args)
    fanin, args.fanin = args.fanin or 0, None  # the grid sets variant and fan-in per cell
    base = config_from_args(args)
    if args.threads is not None:
        base = replace(base, train=replace(base.train, threads=args.threads))
    if args.workers > 1 and base.train.threads == 0:
        base = replace(base, train=replace(base.train, threads=1))
    base = replace(base, train=replace(base.train, threads=job_threads(launch, base.train.threads),
                                       progress=base.train.progress and args.workers <= 1 and not launch.uses_submitit))
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    ablate(base, args.out, seeds=list(range(args.first_seed, args.first_seed + args.seeds)), variants=variants,
           fanin=fanin, sparse_only=args.sparse_only, workers=args.workers, stale_after_s=args.stale_after,
           launch=launch)
    return 0
