"""The launcher options of ``ablate``, ``cv`` and ``tune`` (:mod:`snn_delays.launchers`)."""

from __future__ import annotations

import argparse

from ..launchers import LAUNCHERS, Launch

__all__ = ["add_launch_args", "launch_from_args"]


def add_launch_args(p: argparse.ArgumentParser, unit: str) -> None:
    """``--launcher`` and the submitit options; ``unit`` names what one job runs ("cell", "trial")."""
    g = p.add_argument_group("launcher", "where the jobs run (docs/experiments.md#launchers-this-machine-or-slurm)")
    g.add_argument("--launcher", choices=LAUNCHERS, default="local",
                   help=f"local: --workers processes here, sharing --out through lock files (default); submitit: "
                        f"each {unit} a Slurm job (pip install 'snn-delays[slurm]'); submitit-local: the same jobs "
                        f"through submitit's local executor on this machine")
    g.add_argument("--max-parallel", type=int, metavar="N",
                   help="submitit: jobs running at once (Slurm: the array's %%N, default all; submitit-local: "
                        "default 1)")
    g.add_argument("--slurm-partition", metavar="NAME", help="Slurm partition of the jobs")
    g.add_argument("--slurm-time", type=int, metavar="MINUTES",
                   help=f"minutes per job (default 60 on Slurm; a timed-out {unit} is requeued and resumes)")
    g.add_argument("--slurm-cpus", type=int, metavar="N", help="CPUs per job (also the torch threads when train.threads is 0)")
    g.add_argument("--slurm-gpus", type=int, metavar="N",
                   help="GPUs per job (add --device cuda; submitit-local: the GPUs each job sees, none without it)")
    g.add_argument("--slurm-mem", type=float, metavar="GB", help="memory per job in GB")
    g.add_argument("--slurm-account", metavar="NAME", help="Slurm account charged for the jobs")
    g.add_argument("--no-wait", action="store_true",
                   help="submitit: submit and return; the same command again collects (submits only what is missing)")


def launch_from_args(args: argparse.Namespace) -> Launch:
    """The checked :class:`Launch` of the parsed options (a :class:`UserError` naming a bad one)."""
    return Launch(launcher=args.launcher, workers=args.workers, max_parallel=args.max_parallel,
                  partition=args.slurm_partition, time_min=args.slurm_time, cpus=args.slurm_cpus,
                  gpus=args.slurm_gpus, mem_gb=args.slurm_mem, account=args.slurm_account,
                  wait=not args.no_wait).validate()
