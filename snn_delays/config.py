"""Typed, frozen configuration loaded from TOML files in ``experiments/``.

An experiment is four sections, each a frozen dataclass::

    [model]  the network (sizes, kernel, neuron, variant)
    [data]   the dataset and its preprocessing
    [train]  optimiser, schedules, epochs, seed
    name     a label for the run

Every value can be overridden from the command line with ``--set section.key=value``.
Unknown keys and values of the wrong type are rejected with a :class:`ConfigError` that lists
the valid keys. Units are in the names: ``*_steps`` are time bins, ``*_ms`` milliseconds.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .backends.choice import BACKENDS
from .errors import UserError

__all__ = [
    "ConfigError",
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "ExperimentConfig",
    "load_config",
    "apply_overrides",
    "config_to_dict",
    "config_from_dict",
    "result_config",
    "experiments_dir",
    "VARIANTS",
]

VARIANTS = (
    "full",
    "constant-sigma",
    "fixed-delays",
    "fixed-weights",
    "no-delays-wider",
    "no-delays-deeper",
    "dense-conv",
)


class ConfigError(UserError, ValueError):
    """A configuration file or override is invalid; the message says what and how to fix it."""


@dataclass(frozen=True)
class ModelConfig:
    """The network. Sizes in neurons, times in steps (bins).

    ``input_size``/``n_classes`` of 0 mean "take them from the dataset".
    ``extra_steps`` of -1 means the default: ``(n_layers + 1) * ((kernel_size - 1) // 2)`` zero
    steps appended once to the input, the total the reference adds layer by layer.
    ``backend``: how the synapses compute (the same sums): ``auto`` (the cheapest here), ``dense``
    (direct convolution, the plain formulation), ``fft`` or ``sparse`` (taps).
    """

    input_size: int = 140
    n_classes: int = 20
    hidden_size: int = 256
    n_layers: int = 2
    kernel_size: int = 25
    kernel_count: int = 1
    tau_steps: float = 1.005
    readout_tau_steps: float = 1.005
    threshold: float = 1.0
    dropout: float = 0.4
    extra_steps: int = -1
    variant: str = "full"
    fanin: int = 0
    surrogate_alpha: float = 5.0
    backend: str = "auto"

    def validate(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"model.variant must be one of {', '.join(VARIANTS)}; got {self.variant!r}")
        if self.kernel_size < 1:
            raise ConfigError(f"model.kernel_size must be >= 1 (steps); got {self.kernel_size}")
        if self.kernel_count < 1:
            raise ConfigError(f"model.kernel_count must be >= 1; got {self.kernel_count}")
        if self.n_layers < 1:
            raise ConfigError(f"model.n_layers must be >= 1; got {self.n_layers}")
        if self.hidden_size < 1:
            raise ConfigError(f"model.hidden_size must be >= 1; got {self.hidden_size}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1); got {self.dropout}")
        if self.tau_steps < 1.0 or self.readout_tau_steps < 1.0:
            raise ConfigError("model.tau_steps and model.readout_tau_steps must be >= 1 (steps)")
        if self.fanin < 0:
            raise ConfigError(f"model.fanin must be >= 0 (0 = fully connected); got {self.fanin}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"model.backend must be one of {', '.join(BACKENDS)}; got {self.backend!r}")

    @property
    def resolved_extra_steps(self) -> int:
        if self.extra_steps >= 0:
            return self.extra_steps
        return (self.n_layers + 1) * ((self.kernel_size - 1) // 2)


@dataclass(frozen=True)
class DataConfig:
    """The dataset and its preprocessing. ``root`` of "" means the dataset's default folder."""

    dataset: str = "synthetic"
    root: str = ""
    batch_size: int = 256
    num_workers: int = 0
    dt_ms: float = 10.0
    pool: int = 5
    protocol: str = "clean"
    valid_fraction: float = 0.1
    frame_convention: str = "uniform"
    input: str = "mel"
    test_speakers: str = ""
    f_max_hz: float = 14000.0
    n_steps: int = 0
    synthetic_train: int = 2000
    synthetic_valid: int = 400
    synthetic_test: int = 1000
    synthetic_seed: int = 1234
    synthetic_p_fire: float = 0.5
    synthetic_noise: float = 0.02
    cache_dir: str = ""
    split_seed: int = 0

    def validate(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1; got {self.batch_size}")
        if self.protocol not in ("clean", "paper"):
            raise ConfigError(f"data.protocol must be 'clean' or 'paper'; got {self.protocol!r}")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(f"data.valid_fraction must be in (0, 1); got {self.valid_fraction}")
        if self.frame_convention not in ("uniform", "first_spike"):
            raise ConfigError("data.frame_convention must be 'uniform' or 'first_spike'")
        if self.input not in ("mel", "spikes"):
            raise ConfigError(f"data.input must be 'mel' or 'spikes'; got {self.input!r}")

    def dataset_options(self) -> dict[str, Any]:
        """Every option an ``open_dataset`` opener may accept (openers take what they know)."""
        d = config_to_dict(self)
        for k in ("dataset", "root", "batch_size", "num_workers"):
            d.pop(k)
        return d


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. Learning rates per parameter group; the sigma schedule in steps.

    ``sigma_init`` of 0 means ``kernel_size // 2``. sigma decays exponentially once per epoch
    and reaches ``sigma_final`` after ``sigma_decay_fraction`` of the epochs.
    ``eval_every``: evaluate valid and test every N epochs and always after the last one; the
    epochs in between record ``null`` accuracies and cannot become ``best.pt``.
    """

    epochs: int = 150
    lr_weights: float = 5e-3
    lr_delays: float = 0.1
    weight_decay: float = 1e-5
    one_cycle_pct_start: float = 0.3
    sigma_init: float = 0.0
    sigma_final: float = 0.5
    sigma_decay_fraction: float = 0.25
    seed: int = 0
    device: str = "auto"
    threads: int = 0
    eval_every: int = 1
    kernel_snapshot_neurons: int = 4
    progress: bool = True

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1; got {self.epochs}")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"train.device must be auto, cpu or cuda; got {self.device!r}")
        if not 0.0 < self.sigma_decay_fraction <= 1.0:
            raise ConfigError("train.sigma_decay_fraction must be in (0, 1]")
        if self.sigma_final <= 0:
            raise ConfigError("train.sigma_final must be > 0 (steps)")
        if self.eval_every < 1:
            raise ConfigError(f"train.eval_every must be >= 1 (epochs); got {self.eval_every}")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "ExperimentConfig":
        self.model.validate()
        self.data.validate()
        self.train.validate()
        return self

    def sigma_init(self) -> float:
        return self.train.sigma_init if self.train.sigma_init > 0 else float(self.model.kernel_size // 2)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def valid_keys() -> list[str]:
    keys = ["name"]
    for section, cls in _SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in fields(cls)]
    return keys


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check/convert one value to the field's type (bool, int, float, str)."""
    if isinstance(typ, str):
        typ = {"int": int, "float": float, "str": str, "bool": bool}[typ]
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif typ is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
    raise ConfigError(f"{key} expects a value of type {getattr(typ, '__name__', typ)}; got {value!r}")


def _build_section(cls: type, values: dict[str, Any], section: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(section + '.' + k for k in unknown)}; valid keys of [{section}]: "
            + ", ".join(known)
        )
    hints = typing.get_type_hints(cls)
    return cls(**{k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()})


def config_from_dict(d: dict[str, Any]) -> ExperimentConfig:
    """Build a validated :class:`ExperimentConfig` from nested dicts (TOML layout)."""
    unknown = [k for k in d if k not in ("name", *_SECTIONS)]
    if unknown:
        raise ConfigError(
            f"unknown section(s) or key(s) {', '.join(unknown)}; valid: name, [model], [data], [train]. "
            "Valid keys: " + ", ".join(valid_keys())
        )
    kwargs: dict[str, Any] = {}
    if "name" in d:
        kwargs["name"] = _coerce(d["name"], str, "name")
    for section, cls in _SECTIONS.items():
        values = d.get(section, {})
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] must be a table of keys")
        kwargs[section] = _build_section(cls, values, section)
    return ExperimentConfig(**kwargs).validate()


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def result_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` without the settings that cannot change the results (torch threads, progress bar):
    two configs with equal ``result_config`` describe the same run, which may resume the other."""
    return replace(cfg, train=replace(cfg.train, threads=0, progress=False))


def experiments_dir() -> Path:
    """The folder of named configs: $SNN_DELAYS_EXPERIMENTS, else ./experiments if it holds
    shd.toml, else the installed copy (``experiments/`` ships as the package data of
    ``snn_delays.experiments``, see setup.py), else the source tree's ``experiments/``."""
    env = os.environ.get("SNN_DELAYS_EXPERIMENTS")
    if env:
        return Path(env)
    cwd = Path.cwd() / "experiments"
    if cwd.is_dir() and (cwd / "shd.toml").exists():
        return cwd
    package = Path(__file__).resolve().parent
    installed = package / "experiments"  # an installed wheel
    return installed if installed.is_dir() else package.parent / "experiments"  # a source checkout


def _resolve_path(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.exists():
            raise ConfigError(f"config file {p} does not exist")
        return p
    candidate = experiments_dir() / f"{name_or_path}.toml"
    if candidate.exists():
        return candidate
    names = sorted(x.stem for x in experiments_dir().glob("*.toml"))
    raise ConfigError(f"no config named {name_or_path!r}; known names: {', '.join(names)} (or give a .toml path)")


def load_config(
    source: "str | os.PathLike | ExperimentConfig | dict | None" = None,
    overrides: "list[str] | dict[str, Any] | None" = None,
) -> ExperimentConfig:
    """Load a config from a name in ``experiments/``, a TOML path, a dict or a config object,
    then apply ``overrides`` (``["model.kernel_size=31", ...]`` or ``{"model.kernel_size": 31}``)."""
    if source is None:
        cfg = ExperimentConfig()
    elif isinstance(source, ExperimentConfig):
        cfg = source
    elif isinstance(source, dict):
        cfg = config_from_dict(source)
    else:
        path = _resolve_path(source)
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path} is not valid TOML: {e}") from None
        try:
            cfg = config_from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg.validate()


def apply_overrides(cfg: ExperimentConfig, overrides: "list[str] | dict[str, Any]") -> ExperimentConfig:
    """Return a copy of ``cfg`` with ``section.key=value`` overrides applied (values parsed as TOML
    scalars when possible, otherwise taken as strings)."""
    if isinstance(overrides, dict):
        items = list(overrides.items())
    else:
        items = []
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} must look like section.key=value")
            k, v = item.split("=", 1)
            items.append((k.strip(), _parse_scalar(v.strip())))
    for key, value in items:
        if key == "name":
            cfg = replace(cfg, name=_coerce(value, str, key))
            continue
        if "." not in key or key.split(".", 1)[0] not in _SECTIONS:
            raise ConfigError(f"unknown key {key!r}; valid keys: {', '.join(valid_keys())}")
        section, name = key.split(".", 1)
        cls = _SECTIONS[section]
        hints = typing.get_type_hints(cls)
        if name not in hints:
            raise ConfigError(
                f"unknown key {key!r}; valid keys of [{section}]: " + ", ".join(f.name for f in fields(cls))
            )
        sub = replace(getattr(cfg, section), **{name: _coerce(value, hints[name], key)})
        cfg = replace(cfg, **{section: sub})
    return cfg


def _parse_scalar(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def to_toml(cfg: ExperimentConfig) -> str:
    """Serialise a config to TOML (the inverse of :func:`load_config`)."""
    out = [f"name = {_toml_value(cfg.name)}", ""]
    for section in _SECTIONS:
        out.append(f"[{section}]")
        for k, v in config_to_dict(getattr(cfg, section)).items():
            out.append(f"{k} = {_toml_value(v)}")
        out.append("")
    return "\n".join(out)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
