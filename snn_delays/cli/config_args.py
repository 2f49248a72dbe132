"""Command-line arguments that build a config: the shared ``--config/--set/--epochs/...`` options.

Every sub-command that trains (``train``, ``ablate``, ``tune``) adds these with
:func:`add_config_args` and turns the parsed arguments into an :class:`ExperimentConfig` with
:func:`config_from_args`. Values travel as typed values, never pasted into TOML text. A shortcut
(``--epochs``, ``--seed``, ...) and a ``--set`` of the same key must agree: a conflict is refused
rather than one silently winning.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..config import VARIANT_NAMES, ExperimentConfig, load_config, named_configs, parse_override, variant_overrides
from ..data import available_datasets
from ..errors import UserError
from ..model import check_fanin

__all__ = ["add_config_args", "config_from_args"]

# shortcut option (its argparse dest) -> the config key it sets
_SHORTCUTS = [
    ("epochs", "train.epochs"),
    ("seed", "train.seed"),
    ("device", "train.device"),
    ("data_dir", "data.root"),
    ("fanin", "model.fanin"),
    ("protocol", "data.protocol"),
    ("input", "data.input"),
    ("test_speakers", "data.test_speakers"),
    ("tensorboard", "train.tensorboard"),
]


def add_config_args(p: argparse.ArgumentParser) -> None:
    """Add ``--config``, ``--set`` and the shortcut options to ``p``."""
    p.add_argument("--config", help="a name in experiments/ (shd, synthetic, ...) or a TOML file: a path "
                   "with a / or ending in .toml (default: the config named like --dataset)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set model.kernel_size=31 (repeatable; a key given twice "
             "takes the last value)",
    )
    p.add_argument("--epochs", type=int, help="shortcut for --set train.epochs=N (a shortcut and a --set "
                   "of the same key must agree, else the command is refused)")
    p.add_argument("--seed", type=int, help="shortcut for --set train.seed=S")
    p.add_argument("--device", help="cpu, cuda, cuda:N or auto (shortcut for --set train.device=...)")
    p.add_argument("--data-dir", help="folder holding the dataset's files (shortcut for --set data.root=DIR)")
    p.add_argument("--variant", metavar="NAME",
                   help="the model as one of the ablation variants (" + ", ".join(VARIANT_NAMES) + "): a value of "
                   "model.variant, or the full model with the model keys that name stands for (docs/experiments.md)")
    p.add_argument("--fanin", type=int, help="keep K random incoming synapses per neuron (0: all)")
    p.add_argument("--protocol", choices=["clean", "paper"], help="SHD validation protocol (see README)")
    p.add_argument("--input", choices=["mel", "spikes"], help="FSDD input kind")
    p.add_argument("--test-speakers", help="FSDD: comma-separated speakers held out as the test set")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="also write TensorBoard event files into RUN/tensorboard/ (shortcut for "
                   "--set train.tensorboard=true; needs the tensorboard extra)")


def _shortcut_overrides(args: argparse.Namespace) -> list[tuple[str, Any, str]]:
    """``(config key, value, flag)`` for every shortcut option given on the command line."""
    out = []
    for attr, key in _SHORTCUTS:
        v = getattr(args, attr, None)
        if v is not None:
            out.append((key, v, "--" + attr.replace("_", "-")))
    if getattr(args, "variant", None) is not None:
        out += [(key, value, f"--variant {args.variant}") for key, value in variant_overrides(args.variant)]
    return out


def _refuse_conflicts(explicit: list[tuple[str, Any]], shortcuts: list[tuple[str, Any, str]]) -> None:
    for key, value, flag in shortcuts:
        for set_key, set_value in explicit:
            if set_key == key and set_value != value:
                raise UserError(f"{flag} {value} and --set {key}={set_value} disagree; give one of them")


def _check_dataset(name: str) -> None:
    datasets = available_datasets()
    if name not in datasets:
        raise UserError(f"unknown dataset {name!r}; datasets: {', '.join(datasets)} "
                        f"(named configs for --config: {', '.join(named_configs())})")


def _check_fanin(cfg: ExperimentConfig) -> None:
    """Refuse a fan-in larger than a layer's inputs before anything runs (the model's own check,
    :func:`snn_delays.model.check_fanin`; sizes taken from the data are checked when it is built)."""
    check_fanin(cfg.model)


def config_from_args(args: argparse.Namespace) -> ExperimentConfig:
    """The config named by ``--config`` (or ``--dataset``), then ``--dataset``, the ``--set``
    overrides in order, and the shortcuts (which must agree with any ``--set`` of the same key)."""
    dataset = getattr(args, "dataset", None)
    if dataset is not None:
        _check_dataset(dataset)
    if not args.config and not dataset:
        raise UserError(f"say what to train on: --dataset NAME (one of {', '.join(available_datasets())}) "
                        f"or --config NAME_OR_FILE (named configs: {', '.join(named_configs())})")
    explicit = [parse_override(text) for text in args.overrides]
    shortcuts = _shortcut_overrides(args)
    if dataset and args.config:
        shortcuts.insert(0, ("data.dataset", dataset, "--dataset"))
    _refuse_conflicts(explicit, shortcuts)
    cfg = load_config(args.config or dataset, explicit + [(key, value) for key, value, _ in shortcuts])
    _check_dataset(cfg.data.dataset)  # a config file or --set may name it too
    _check_fanin(cfg)
    return cfg
