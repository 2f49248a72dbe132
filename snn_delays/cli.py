"""The ``snn-delays`` command line: parse, build configs, call a library function.

Every sub-command lives in the module that owns its concept; this file only wires arguments (the
options that build a config are in :mod:`snn_delays.config_args`). No library module imports it.
Errors the user can fix (:class:`UserError` and its kin) end with one clear message and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from pathlib import Path

from . import __version__
from ._atomic import dumps_standard
from .config_args import add_config_args, config_from_args
from .errors import UserError

__all__ = ["main", "build_parser"]


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    if args.target:
        if any(o.split("=", 1)[0].strip() == "train.target" for o in args.overrides):
            raise UserError("give the target once: --target or --set train.target")
        args.overrides = args.overrides + [f"train.target={args.target}"]
    cfg = config_from_args(args)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    try:
        result = train(cfg, out, resume=not args.restart)
    except KeyboardInterrupt:
        raise _Interrupted(_resume_hint(out)) from None
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


class _Interrupted(Exception):
    """Ctrl-C during a command; the message says what was kept."""


def _resume_hint(run_dir: Path) -> str:
    if (run_dir / "last.pt").exists():
        return f"{run_dir / 'last.pt'} holds the last finished epoch; run the same command to resume"
    return "no epoch had finished, so there is nothing to resume; the same command starts over"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run, format_report

    res = evaluate_run(args.run_dir, dataset=args.dataset, data_dir=args.data_dir, split=args.split,
                       checkpoint=args.checkpoint, device=args.device)
    for warning in res.get("warnings", []):
        print(f"snn-delays evaluate: warning: {warning}", file=sys.stderr)
    print(dumps_standard(res) if args.json else format_report(res))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="snn-delays", description="Learn synaptic delays in SNNs (DCLS).")
    parser.add_argument("--version", action="version", version=f"snn-delays {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model; writes a run folder")
    p.add_argument("--dataset", default=None, help="synthetic, shd, ssc, gsc or fsdd; alone, it also picks the "
                   "config of that name (with --config: replaces the config's dataset)")
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--restart", action="store_true", help="ignore an existing last.pt and start over")
    p.add_argument("--target", help="train for a chip (loihi1, loihi2, spinnaker1, spinnaker2): its delay range "
                   "from the first epoch, its quantised forward in the last train.target_fraction of the epochs "
                   "(shortcut for --set train.target=T)")
    add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy of a trained run with rounded delays")
    p.add_argument("run_dir")
    p.add_argument("--dataset", help="evaluate on another dataset than the run's")
    p.add_argument("--data-dir", help="folder holding the dataset's files (default: the run's data.root)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test", "all"])
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default cpu)")
    p.add_argument("--json", action="store_true", help="print one JSON object: accuracy, loss, confusion (rows = "
                   "true class), per_class_accuracy, spike_rate (per hidden layer), ...")
    p.set_defaults(func=cmd_evaluate)

    _add_optional_commands(sub)
    return parser


def _add_optional_commands(sub) -> None:
    """Sub-commands owned by other modules register themselves through ``add_arguments``."""
    import importlib

    for module, name in [
        ("snn_delays.data.cli", "data"),
        ("snn_delays.data.cli", "encode-audio"),
        ("snn_delays.ablation", "ablate"),
        ("snn_delays.crossval", "cv"),
        ("snn_delays.tuning", "tune"),
        ("snn_delays.plots", "plot"),
        ("neuromorphic_export.cli", "export"),
        ("neuromorphic_export.cli", "verify"),
        ("snn_delays.finetune", "finetune"),
        ("snn_delays.bench.cli", "bench"),
    ]:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                continue  # that part is not built (or not installed) here
            raise
        hook = getattr(mod, "add_subcommand", None)
        if hook is not None:
            hook(sub, name)


# OS errors a user fixes outside the program (permissions, space, a read-only disk): one line, exit 2
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT}


def _silence_stdout() -> None:
    """Point stdout at os.devnull so that the flush at exit does not fail on a closed pipe again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (captured output)
        sys.stdout = open(os.devnull, "w")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"snn-delays {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output went away (| head): no traceback, the shell's code
        _silence_stdout()
        return 128 + 13  # as if killed by SIGPIPE
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"snn-delays {args.command}: error: {e.strerror}{where}", file=sys.stderr)
        return 2
    except _Interrupted as e:
        print(f"snn-delays {args.command}: interrupted; {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"snn-delays {args.command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # SIGTERM/SIGHUP during an encoding end as exit 143/129 after cleaning up
        if e.code in (128 + 15, 128 + 1):
            print(f"snn-delays {args.command}: terminated", file=sys.stderr)
        raise


if __name__ == "__main__":
    sys.exit(main())
