"""The ``snn-delays`` command line: parse, build configs, call a library function.

Every sub-command lives in the module that owns its concept; this file only wires arguments.
Errors the user can fix (:class:`UserError` and its kin) end with one clear message and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from .errors import UserError

__all__ = ["main", "build_parser"]


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="a TOML file or a name in experiments/ (default: the dataset's name)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set model.kernel_size=31 (repeatable)",
    )
    p.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=N")
    p.add_argument("--seed", type=int, help="shortcut for --set train.seed=S")
    p.add_argument("--device", help="cpu, cuda or auto (shortcut for --set train.device=...)")
    p.add_argument("--data-dir", help="folder holding the dataset's files (shortcut for --set data.root=DIR)")
    p.add_argument("--variant", help="full | constant-sigma | fixed-delays | fixed-weights | no-delays-wider | "
                   "no-delays-deeper | dense-conv")
    p.add_argument("--fanin", type=int, help="keep K random incoming synapses per neuron (0: all)")
    p.add_argument("--protocol", choices=["clean", "paper"], help="SHD validation protocol (see README)")
    p.add_argument("--input", choices=["mel", "spikes"], help="FSDD input kind")
    p.add_argument("--test-speakers", help="FSDD: comma-separated speakers held out as the test set")


def _shortcut_overrides(args: argparse.Namespace) -> list[str]:
    out = []
    for attr, key in [
        ("epochs", "train.epochs"),
        ("seed", "train.seed"),
        ("device", "train.device"),
        ("data_dir", "data.root"),
        ("variant", "model.variant"),
        ("fanin", "model.fanin"),
        ("protocol", "data.protocol"),
        ("input", "data.input"),
        ("test_speakers", "data.test_speakers"),
    ]:
        v = getattr(args, attr, None)
        if v is not None:
            out.append(f'{key}="{v}"' if isinstance(v, str) else f"{key}={v}")
    return out


def resolve_config(args: argparse.Namespace):
    from .config import load_config

    source = args.config or args.dataset
    overrides = list(args.overrides)
    if args.dataset and args.config:
        overrides.insert(0, f'data.dataset="{args.dataset}"')
    return load_config(source, overrides + _shortcut_overrides(args))


def cmd_train(args: argparse.Namespace) -> int:
    from .train import train

    cfg = resolve_config(args)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    result = train(cfg, out, resume=not args.restart)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    print(f"run folder: {out}")
    print(f"  config.toml, metrics.jsonl, best.pt, last.pt, summary.json")
    print(f"  best valid accuracy {result['best_valid_acc']:.4f} (epoch {result['best_epoch']}), "
          f"test accuracy at that epoch {result['test_acc']:.4f}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .evaluate import evaluate_run

    res = evaluate_run(args.run_dir, dataset=args.dataset, data_dir=args.data_dir, split=args.split,
                       checkpoint=args.checkpoint, device=args.device)
    if args.json:
        print(json.dumps(res))
    else:
        print(f"{res['dataset']} / {res['split']}: accuracy {res['accuracy']:.4f} "
              f"({res['correct']}/{res['n']}) with rounded delays")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="snn-delays", description="Learn synaptic delays in SNNs (DCLS).")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train a model; writes a run folder")
    p.add_argument("--dataset", default=None, help="synthetic, shd, ssc, gsc, fsdd (default: the config's)")
    p.add_argument("--out", help="run folder (default runs/<config name>)")
    p.add_argument("--restart", action="store_true", help="ignore an existing last.pt and start over")
    _add_config_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="accuracy of a trained run with rounded delays")
    p.add_argument("run_dir")
    p.add_argument("--dataset", help="evaluate on another dataset than the run's")
    p.add_argument("--data-dir")
    p.add_argument("--split", default="test", choices=["train", "valid", "test", "all"])
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print a JSON object with 'accuracy'")
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
        ("snn_delays.tuning", "tune"),
        ("snn_delays.plots", "plot"),
        ("neuromorphic_export.cli", "export"),
        ("neuromorphic_export.cli", "verify"),
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"snn-delays {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"snn-delays {args.command}: interrupted; the last checkpoint is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
