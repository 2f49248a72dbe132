"""``snn-delays cv``: leave-one-speaker-out cross-validation (:mod:`snn_delays.crossval`)."""

from __future__ import annotations

import argparse
from dataclasses import replace

from ..ablation import ABLATION_VARIANTS, DEFAULT_VARIANTS
from ..crossval import VALID_MODES, cross_validate
from ..errors import UserError
from ..launchers import job_threads
from .config_args import add_config_args, config_from_args
from .launch_args import add_launch_args, launch_from_args

__all__ = ["add_parser", "run_cv"]


def add_parser(sub) -> None:
    p = sub.add_parser(
        "cv", help="leave-one-speaker-out cross-validation (FSDD): per-fold and mean accuracy with 95 %% intervals",
        description="Hold out each speaker in turn (never used for training or model selection), for each "
                    "variant and seed; resumable (several processes may share --out); writes summary.md, "
                    "summary.csv and folds.csv in --out.")
    p.add_argument("--dataset", help="fsdd (not needed with --summary-only)")
    p.add_argument("--out", required=True, help="cross-validation folder (shared by every process running it)")
    p.add_argument("--speakers", help="comma-separated test speakers, one fold each (default: every speaker)")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated, from {', '.join(ABLATION_VARIANTS)} (default {','.join(DEFAULT_VARIANTS)})")
    p.add_argument("--valid", default="slice", choices=VALID_MODES,
                   help="validation set: 'slice' = 10 %% of the training speakers' files (default), 'next' = the "
                        "next speaker (sorted), never trained on")
    p.add_argument("--seeds", type=int, default=1, help="seeds per fold (default 1)")
    p.add_argument("--first-seed", type=int, default=0, help="seeds are first-seed .. first-seed + seeds - 1")
    p.add_argument("--workers", type=int, default=1, help="parallel training processes on this machine (1 thread each)")
    p.add_argument("--stale-after", type=float, default=3600.0,
                   help="seconds after which a lock not refreshed by its owner is considered stale (default 3600)")
    p.add_argument("--ensemble", action="store_true",
                   help="also classify each held-out speaker with the average of its seeds' summed softmax outputs "
                        "(best.pt of every finished seed, one evaluation pass each, cached in the run folders): "
                        "a table in summary.md and ensemble.csv")
    p.add_argument("--summary-only", action="store_true",
                   help="train nothing; rewrite the summary of the finished runs recorded in OUT/cv.json")
    add_launch_args(p, "run")
    add_config_args(p)
    p.set_defaults(func=run_cv)


def run_cv(args: argparse.Namespace) -> int:
    if args.summary_only:
        cross_validate(None, args.out, summary_only=True, ensemble=args.ensemble)  # type: ignore[arg-type]
        return 0
    if args.dataset is None and args.config is None:
        raise UserError("give --dataset fsdd or --config")
    if args.variant is not None:
        raise UserError(f"--variant does not apply to cv: list the variants with --variants (e.g. --variants {args.variant})")
    if args.seed is not None:
        raise UserError(f"--seed does not apply to cv: use --first-seed {args.seed} --seeds 1")
    for flag, value, low in (("--seeds", args.seeds, 1), ("--first-seed", args.first_seed, 0),
                             ("--workers", args.workers, 1)):
        if value < low:
            raise UserError(f"{flag} must be >= {low}; got {value}")
    if args.stale_after <= 0:
        raise UserError(f"--stale-after must be > 0 seconds; got {args.stale_after}")
    launch = launch_from_args(args)
    base = config_from_args(args)
    if args.workers > 1 and base.train.threads == 0:
        base = replace(base, train=replace(base.train, threads=1))
    base = replace(base, train=replace(base.train, threads=job_threads(launch, base.train.threads),
                                       progress=base.train.progress and args.workers <= 1 and not launch.uses_submitit))
    speakers = [s.strip() for s in (args.speakers or "").split(",") if s.strip()] or None
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    cross_validate(base, args.out, speakers=speakers, variants=variants,
                   seeds=list(range(args.first_seed, args.first_seed + args.seeds)), valid=args.valid,
                   workers=args.workers, stale_after_s=args.stale_after, launch=launch, ensemble=args.ensemble)
    return 0
