"""Command-line arguments that build a config: the shared ``--config/--set/--epochs/...`` options.

Every sub-command that trains (``train``, ``ablate``, ``tune``) adds these with
:func:`add_config_args` and turns the parsed arguments into an :class:`ExperimentConfig` with
:func:`config_from_args`; the shortcuts are ``--set`` overrides applied after the explicit ones.
"""

from __future__ import annotations

import argparse

from .config import ExperimentConfig, load_config

__all__ = ["add_config_args", "config_from_args"]

# shortcut option (its argparse dest) -> the config key it sets
_SHORTCUTS = [
    ("epochs", "train.epochs"),
    ("seed", "train.seed"),
    ("device", "train.device"),
    ("data_dir", "data.root"),
    ("variant", "model.variant"),
    ("fanin", "model.fanin"),
    ("protocol", "data.protocol"),
    ("input", "data.input"),
    ("test_speakers", "data.test_speakers"),
]


def add_config_args(p: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``--set`` and the shortcut options to ``p``."""
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
    for attr, key in _SHORTCUTS:
        v = getattr(args, attr, None)
        if v is not None:
            out.append(f'{key}="{v}"' if isinstance(v, str) else f"{key}={v}")
    return out


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The config named by ``--config`` (or ``--dataset``), then ``--dataset``, ``--set`` and the
    shortcuts applied in that order."""
    source = args.config or args.dataset
    overrides = list(args.overrides)
    if args.dataset and args.config:
        overrides.insert(0, f'data.dataset="{args.dataset}"')
    return load_config(source, overrides + _shortcut_overrides(args))
