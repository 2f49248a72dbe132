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
import difflib
import json
import math
import os
import tomllib
import typing
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from neuromorphic_export.chip import NEURON_MODELS, RECURRENT_DELAYS, default_extra_steps
from neuromorphic_export.conv import DELAY_PER as CONV_DELAY_PER
from neuromorphic_export.conv import conv_shapes, parse_conv, parse_frame
from neuromorphic_export.model_variants import (CUSTOM, DELAY_MODES, MATCH_PARAMS, MODEL_VARIANTS, VARIANT_FIELDS,
                                                VARIANT_NAMES, VARIANT_REGISTRY, VARIANTS, variant_fields)
from neuromorphic_export.targets import TARGETS

from .backends.choice import BACKENDS
from .errors import UserError

__all__ = [
    "ConfigError",
    "MODEL_VARIANTS",
    "VARIANT_NAMES",
    "variant_overrides",
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "ExperimentConfig",
    "load_config",
    "apply_overrides",
    "config_value",
    "parse_override",
    "is_config_path",
    "config_to_dict",
    "config_from_dict",
    "result_config",
    "experiments_dir",
    "named_configs",
    "config_differences",
    "RUNTIME_ONLY_KEYS",
    "VARIANTS",
    "VARIANT_REGISTRY",
    "VARIANT_FIELDS",
    "RECURRENT_DELAYS",
    "RECURRENT_DELAY_INITS",
]

RECURRENT_DELAY_INITS = ("uniform", "one-step")


class ConfigError(UserError, ValueError):
    """A configuration file or override is invalid; the message says what and how to fix it."""


def variant_overrides(name: str) -> list[tuple[str, Any]]:
    """The config overrides that make variant ``name`` (a name of :data:`VARIANT_REGISTRY`) out of a
    base config: [("model.variant", ...), ("model.key", value), ...]. A value of model.variant is
    that value (it sets its fields itself); another name is the full model with its fields."""
    if name in VARIANTS:
        return [("model.variant", name)]
    if name in MODEL_VARIANTS:
        return [("model.variant", "full")] + [(f"model.{k}", v) for k, v in MODEL_VARIANTS[name].items()]
    raise ConfigError(f"unknown variant {name!r}; choose from {', '.join(VARIANT_NAMES)}")


@dataclass(frozen=True)
class ModelConfig:
    """The network. Sizes in neurons, times in steps (bins).

    ``input_size``/``n_classes`` of 0 mean "take them from the dataset".
    ``extra_steps`` of -1 means the default: ``(n_layers + 1) * ((kernel_size - 1) // 2)`` zero
    steps appended once to the input, the total the reference adds layer by layer.
    ``backend``: how the synapses compute (the same sums): ``auto`` (the cheapest here), ``dense``
    (direct convolution, the plain formulation), ``fft``, ``sparse`` (taps) or ``event`` (driven by the
    input's non-zero entries; what ``auto`` takes for a sparse input that needs no gradient).
    ``interpolation``: the training kernel spreading each delay over the taps, ``gauss`` (default),
    ``triangle`` or ``bilinear``; ``learn_sigma``: a learned width per element (gauss, triangle)
    instead of the shared scheduled sigma.
    ``recurrent``: every hidden layer also gets a recurrent delay synapse onto itself (N -> N, all
    to all, or ``recurrent_fanin`` random inputs per neuron) with delays in [1,
    ``recurrent_kernel_size``] steps (0: ``kernel_size``); ``recurrent_delays``: ``learned``,
    ``fixed`` (random, not learned) or ``one-step`` (every delay 1 step: a plain recurrent SNN);
    ``recurrent_delay_init``: where the recurrent delays start, ``uniform`` in [1, Dr] or
    ``one-step`` (every delay at 1 step, learned from there).
    ``variant``: a name of :data:`VARIANTS` that sets the fields ``delays`` (``learned``, ``fixed``:
    random and frozen, ``none``: one tap per connection), ``learn_weights``, ``constant_sigma`` (the
    width stays at ``train.sigma_final``), ``dense_kernel`` (a free kernel per connection) and
    ``match_params`` (``wider``/``deeper``: sizes resolved to the full model's parameter count by
    :func:`snn_delays.model.resolve_variant`); ``custom`` leaves those fields as given. The model and
    trainer read the fields only.
    ``neuron``: the hidden layers' neurons, ``lif`` (``tau_steps``, fixed) or ``adlif`` (adaptive LIF,
    :mod:`snn_delays.adaptive_neuron`: time constants, coupling and spike-triggered adaptation
    learned per neuron; ``tau_steps`` unused, ``threshold`` and ``surrogate_alpha`` apply). The
    readout is a leaky integrator (``readout_tau_steps``) with either.
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
    interpolation: str = "gauss"
    learn_sigma: bool = False
    recurrent: bool = False
    recurrent_kernel_size: int = 0
    recurrent_delays: str = "learned"
    recurrent_fanin: int = 0
    recurrent_delay_init: str = "uniform"
    delays: str = "learned"
    learn_weights: bool = True
    constant_sigma: bool = False
    dense_kernel: bool = False
    match_params: str = ""
    # convolutional front end (neuromorphic_export.conv): "" none, else layer specs "c8 k5 avg2, c16 k3";
    # input_frame "CxHxW" of the input (filled from the data's frame_shape); delays per kernel element or pair
    conv: str = ""
    input_frame: str = ""
    conv_delay_per: str = "element"
    neuron: str = "lif"

    def __post_init__(self) -> None:
        # a model.variant value sets its fields (replace(cfg, variant=...) then builds that variant)
        if self.variant in VARIANTS:
            for key, value in variant_fields(self.variant).items():
                object.__setattr__(self, key, value)

    def validate(self) -> None:
        _refuse_non_finite(self, "model")
        if self.recurrent_kernel_size < 0:
            raise ConfigError("model.recurrent_kernel_size must be >= 1 (steps), or 0 for model.kernel_size; "
                              f"got {self.recurrent_kernel_size}")
        if self.recurrent_delays not in RECURRENT_DELAYS:
            raise ConfigError(f"model.recurrent_delays must be one of {', '.join(RECURRENT_DELAYS)}; "
                              f"got {self.recurrent_delays!r}")
        if self.recurrent_delay_init not in RECURRENT_DELAY_INITS:
            raise ConfigError(f"model.recurrent_delay_init must be one of {', '.join(RECURRENT_DELAY_INITS)}; "
                              f"got {self.recurrent_delay_init!r}")
        if self.recurrent_fanin < 0:
            raise ConfigError(f"model.recurrent_fanin must be >= 0 (0 = all to all); got {self.recurrent_fanin}")
        if self.recurrent and 0 < self.hidden_size < self.recurrent_fanin:
            raise ConfigError(f"model.recurrent_fanin={self.recurrent_fanin} is more than the hidden size "
                              f"{self.hidden_size}; use 1..{self.hidden_size}, or 0 for all to all")
        if self.neuron not in NEURON_MODELS:
            raise ConfigError(f"model.neuron must be one of {', '.join(NEURON_MODELS)}; got {self.neuron!r}")
        if self.recurrent and self.neuron != "lif":
            raise ConfigError(f"model.recurrent runs LIF neurons only (its compiled loop is the LIF's); "
                              f"model.neuron = {self.neuron!r} cannot be recurrent")
        if self.recurrent and self.dense_kernel:
            raise ConfigError("model.recurrent needs delay synapses; model.dense_kernel (variant dense-conv) has none")
        if self.variant not in (*VARIANTS, CUSTOM):
            raise ConfigError(f"model.variant must be one of {', '.join((*VARIANTS, CUSTOM))}; got {self.variant!r}")
        if self.delays not in DELAY_MODES:
            raise ConfigError(f"model.delays must be one of {', '.join(DELAY_MODES)}; got {self.delays!r}")
        if self.match_params not in MATCH_PARAMS:
            raise ConfigError(f"model.match_params must be wider, deeper or empty; got {self.match_params!r}")
        if self.match_params and (self.delays != "none" or self.dense_kernel):
            raise ConfigError("model.match_params sizes a model without delays: it needs model.delays=\"none\" "
                              "and no dense kernel")
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
        if self.interpolation not in ("gauss", "triangle", "bilinear"):
            raise ConfigError(f"model.interpolation must be one of gauss, triangle, bilinear; got {self.interpolation!r}")
        if self.learn_sigma and self.interpolation == "bilinear":
            raise ConfigError("model.learn_sigma needs a kernel with a width: model.interpolation gauss or triangle "
                              "(bilinear has none)")
        if self.input_size < 0 or self.n_classes < 0:
            raise ConfigError("model.input_size and model.n_classes must be >= 0 (0: take them from the dataset); "
                              f"got {self.input_size} and {self.n_classes}")
        if self.threshold <= 0:
            raise ConfigError(f"model.threshold must be > 0; got {self.threshold}")
        if self.surrogate_alpha <= 0:
            raise ConfigError(f"model.surrogate_alpha must be > 0; got {self.surrogate_alpha}")
        if self.extra_steps < -1:
            raise ConfigError(f"model.extra_steps must be >= 0 (steps), or -1 for the default; got {self.extra_steps}")
        self._validate_conv()

    def _validate_conv(self) -> None:
        """model.conv, model.input_frame and model.conv_delay_per: parseable, shapes that fit."""
        if self.conv_delay_per not in CONV_DELAY_PER:
            raise ConfigError(f"model.conv_delay_per must be one of {', '.join(CONV_DELAY_PER)}; "
                              f"got {self.conv_delay_per!r}")
        try:
            specs = parse_conv(self.conv)
            frame = parse_frame(self.input_frame) if self.input_frame else None
            if specs and frame is not None:
                conv_shapes(specs, frame)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if specs and self.dense_kernel:
            raise ConfigError("model.conv needs delay synapses; model.dense_kernel (variant dense-conv) has none")
        if frame is not None and self.input_size and self.input_size != frame[0] * frame[1] * frame[2]:
            raise ConfigError(f"model.input_frame {self.input_frame} holds {frame[0] * frame[1] * frame[2]} "
                              f"inputs but model.input_size is {self.input_size}")

    @property
    def n_conv(self) -> int:
        """Convolutional layers (model.conv)."""
        return len(parse_conv(self.conv))

    @property
    def resolved_recurrent_kernel_size(self) -> int:
        """Taps of the recurrent synapses: delays 1 .. this many steps (1 for ``one-step``)."""
        if self.recurrent_delays == "one-step":
            return 1
        return self.recurrent_kernel_size or self.kernel_size

    @property
    def resolved_extra_steps(self) -> int:
        if self.extra_steps >= 0:
            return self.extra_steps
        return default_extra_steps(self.n_layers + self.n_conv, self.kernel_size)


@dataclass(frozen=True)
class DataConfig:
    """The dataset and its preprocessing. ``root`` of "" means the dataset's default folder."""

    dataset: str = "synthetic"
    root: str = ""
    batch_size: int = 256
    num_workers: int = 0
    encode_workers: int = 2  # processes for the cochlea encoding (FSDD --input spikes, first use); 0 or 1: in-process
    dt_ms: float = 10.0
    pool: int = 5
    protocol: str = "clean"
    valid_fraction: float = 0.1
    frame_convention: str = "uniform"
    input: str = "mel"
    test_speakers: str = ""
    f_max_hz: float = 14000.0
    n_mels: int = 140  # mel bands of the log-mel front end (GSC, FSDD mel)
    n_steps: int = 0
    synthetic_train: int = 2000
    synthetic_valid: int = 400
    synthetic_test: int = 1000
    synthetic_seed: int = 1234
    synthetic_p_fire: float = 0.5
    synthetic_noise: float = 0.02
    cache_dir: str = ""
    split_seed: int = 0
    valid_speakers: str = ""  # FSDD: speakers held out for validation ("" = a slice of the training speakers)
    normalize: str = "none"  # FSDD mel: "none", "utterance", "channel" or "tilt" (per-clip statistics)
    # training-time augmentation of each batch (snn_delays.data.augment; 0 = off)
    aug_time_shift: int = 0  # shift each sample by up to +/- this many steps
    aug_time_stretch: float = 0.0  # stretch each batch in time by a factor in [1 - a, 1 + a]
    aug_freq_shift: int = 0  # shift each sample's channels by up to +/- this many channels
    aug_noise: float = 0.0  # add Gaussian noise of this standard deviation (input units)
    aug_gain: float = 0.0  # add a per-sample offset drawn uniformly in [-g, g] (dB-like input)
    aug_freq_mask: int = 0  # SpecAugment: two bands of up to this many channels set to the sample's mean
    aug_time_mask: int = 0  # SpecAugment: two spans of up to this many steps set to the sample's mean
    # event sources (event-motion, nmnist, dvs-gesture): pixels pooled per side (0: the source's default);
    # the embedded moving-dot task's split sizes, seed, grid (pixels per side), firing and noise probabilities
    downsample: int = 0
    motion_train: int = 2000
    motion_valid: int = 400
    motion_test: int = 1000
    motion_seed: int = 1234
    motion_grid: int = 16
    motion_p_fire: float = 0.9
    motion_noise: float = 0.002

    def validate(self) -> None:
        _refuse_non_finite(self, "data")
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
        for key in ("num_workers", "encode_workers", "n_steps", "synthetic_seed", "split_seed", "aug_time_shift",
                    "aug_freq_shift", "aug_noise", "aug_gain", "aug_freq_mask", "aug_time_mask", "downsample",
                    "motion_train", "motion_valid", "motion_test", "motion_seed"):
            if getattr(self, key) < 0:
                raise ConfigError(f"data.{key} must be >= 0; got {getattr(self, key)}")
        for key in ("synthetic_train", "synthetic_valid", "synthetic_test"):
            if getattr(self, key) < 1:
                raise ConfigError(f"data.{key} must be >= 1 (samples in that split); got {getattr(self, key)}")
        for key in ("dt_ms", "f_max_hz"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"data.{key} must be > 0; got {getattr(self, key)}")
        if self.pool < 1:
            raise ConfigError(f"data.pool must be >= 1; got {self.pool}")
        if self.n_mels < 1:
            raise ConfigError(f"data.n_mels (mel bands) must be >= 1; got {self.n_mels}")
        if not 0.0 <= self.aug_time_stretch < 1.0:
            raise ConfigError(f"data.aug_time_stretch must be in [0, 1) (a relative change); got {self.aug_time_stretch}")
        if self.normalize not in ("none", "utterance", "channel", "tilt"):
            raise ConfigError(f"data.normalize must be none, utterance, channel or tilt; got {self.normalize!r}")
        for key in ("synthetic_p_fire", "synthetic_noise"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"data.{key} must be in [0, 1] (a probability); got {getattr(self, key)}")

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
    threads: int = 0  # torch CPU threads; 0: torch's default (one per core)
    eval_every: int = 1
    kernel_snapshot_neurons: int = 4
    progress: bool = True
    tensorboard: bool = False  # also write RUN/tensorboard/ event files (extra "tensorboard")
    # train for a chip (snn_delays.quantize): "" none, or an export target (loihi1, loihi2, spinnaker1,
    # spinnaker2): its delay range from the first epoch, its quantised forward in the last
    # target_fraction of the epochs; init_from: a checkpoint (.pt) whose weights start the run (finetune)
    target: str = ""
    target_fraction: float = 0.25
    init_from: str = ""

    def validate(self) -> None:
        _refuse_non_finite(self, "train")
        if self.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1; got {self.epochs}")
        if self.device not in ("auto", "cpu", "cuda") and not (
                self.device.startswith("cuda:") and self.device[5:].isdigit()):
            raise ConfigError(f"train.device must be auto, cpu, cuda or cuda:N; got {self.device!r}")
        if not 0.0 < self.sigma_decay_fraction <= 1.0:
            raise ConfigError("train.sigma_decay_fraction must be in (0, 1]")
        if self.sigma_final <= 0:
            raise ConfigError("train.sigma_final must be > 0 (steps)")
        if self.eval_every < 1:
            raise ConfigError(f"train.eval_every must be >= 1 (epochs); got {self.eval_every}")
        for key in ("lr_weights", "lr_delays", "weight_decay", "sigma_init"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0; got {getattr(self, key)}")
        if not 0.0 < self.one_cycle_pct_start < 1.0:
            raise ConfigError(f"train.one_cycle_pct_start must be in (0, 1); got {self.one_cycle_pct_start}")
        for key in ("seed", "threads", "kernel_snapshot_neurons"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0; got {getattr(self, key)}")
        if self.target:
            chips = [name for name in TARGETS if name != "generic"]
            if self.target not in chips:
                raise ConfigError(f"train.target must be one of {', '.join(chips)} (or empty); got {self.target!r}")
        if not 0.0 < self.target_fraction <= 1.0:
            raise ConfigError(f"train.target_fraction must be in (0, 1]; got {self.target_fraction}")


@dataclass(frozen=True)
class ExperimentConfig:
    name: str = "experiment"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def validate(self) -> "ExperimentConfig":
        _check_name(self.name)
        self.model.validate()
        self.data.validate()
        self.train.validate()
        if self.train.target and self.model.neuron != "lif":
            raise ConfigError(f"train.target {self.train.target!r} computes the chip's LIF neurons; model.neuron = "
                              f"{self.model.neuron!r} has no chip model (no export target runs adaptive neurons)")
        if self.model.kernel_size > 1 and self.train.sigma_final > self.sigma_init():
            raise ConfigError(
                f"train.sigma_final ({self.train.sigma_final}) is larger than the initial sigma "
                f"({self.sigma_init()} steps, train.sigma_init or model.kernel_size // 2); sigma only decays")
        return self

    def sigma_init(self) -> float:
        return self.train.sigma_init if self.train.sigma_init > 0 else float(self.model.kernel_size // 2)


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}

# keys that change how a run executes but not its results: a run may resume with other values
RUNTIME_ONLY_KEYS = ("train.device", "train.threads", "train.progress", "train.tensorboard", "data.num_workers",
                     "data.encode_workers")


MAX_SEED = 2**32 - 1  # what every random generator used here accepts


def _refuse_non_finite(section_cfg: Any, section: str) -> None:
    """Refuse NaN and infinities in every float field (NaN != NaN breaks resuming, and breaks runs),
    integers beyond 64 bits, and seeds beyond :data:`MAX_SEED`."""
    for f in fields(section_cfg):
        value = getattr(section_cfg, f.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{section}.{f.name} must be a finite number; got {value}")
        if isinstance(value, int) and not isinstance(value, bool):
            limit = MAX_SEED if f.name.endswith("seed") else 2**63 - 1
            if abs(value) > limit:
                raise ConfigError(f"{section}.{f.name} must be at most {limit} in size; got {value}")


def _check_name(name: str) -> None:
    if not name.strip():
        raise ConfigError("name must not be empty (it labels the run and its default folder runs/NAME)")
    bad = [c for c in name if ord(c) < 32 or ord(c) == 127]
    if bad:
        raise ConfigError(f"name must be one line of printable text; got {name!r}")


def valid_keys() -> list[str]:
    keys = ["name"]
    for section, cls in _SECTIONS.items():
        keys += [f"{section}.{f.name}" for f in fields(cls)]
    return keys


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


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
    raise ConfigError(f"{key} expects {_TYPE_WORDS.get(typ, typ)}; got {value!r}")


def _did_you_mean(word: str, choices: "list[str]") -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]}?)" if close else ""


def _field_type(key: str) -> Any:
    """The type of the config field ``key`` (``name`` or ``section.field``); unknown keys refused
    with the valid ones."""
    if key == "name":
        return str
    section, _, name = key.partition(".")
    if section not in _SECTIONS or not name:
        raise ConfigError(f"unknown key {key!r}{_did_you_mean(key, valid_keys())}; keys look like section.key "
                          f"(sections model, data, train) or name; valid keys: {', '.join(valid_keys())}")
    hints = typing.get_type_hints(_SECTIONS[section])
    if name not in hints:
        known = [f.name for f in fields(_SECTIONS[section])]
        raise ConfigError(f"unknown key {key!r}{_did_you_mean(key, [f'{section}.{k}' for k in known])}; "
                          f"valid keys of [{section}]: " + ", ".join(known))
    return hints[name]


def _build_section(cls: type, values: dict[str, Any], section: str) -> Any:
    for k in values:
        _field_type(f"{section}.{k}")  # refuses unknown keys
    hints = typing.get_type_hints(cls)
    given = {k: _coerce(v, hints[k], f"{section}.{k}") for k, v in values.items()}
    built = cls(**given)
    if isinstance(built, ModelConfig):
        _refuse_set_by_variant(built, given)
    return built


def _refuse_set_by_variant(model: ModelConfig, given: dict[str, Any]) -> None:
    """ConfigError when a field that ``model.variant`` sets is given another value (it would be
    ignored): the variant decides, unless it is ``custom``."""
    for key in VARIANT_FIELDS:
        if key in given and getattr(model, key) != given[key]:
            raise ConfigError(f"model.{key} = {given[key]!r}, but model.variant = {model.variant!r} sets it to "
                              f"{getattr(model, key)!r}; set model.variant = \"{CUSTOM}\" to choose "
                              f"{', '.join('model.' + k for k in VARIANT_FIELDS)} yourself")


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


def config_value(cfg: ExperimentConfig, key: str) -> Any:
    """The value of ``key`` (``section.key`` or ``name``) in ``cfg``."""
    if key == "name":
        return cfg.name
    section, name = key.split(".", 1)
    return getattr(getattr(cfg, section), name)


def config_differences(a: ExperimentConfig, b: ExperimentConfig) -> list[str]:
    """The keys (``section.key``, in :func:`valid_keys` order) whose values differ between ``a`` and ``b``."""
    return [k for k in valid_keys() if config_value(a, k) != config_value(b, k)]


def result_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` with the :data:`RUNTIME_ONLY_KEYS` (device, torch threads, data workers, progress bar,
    TensorBoard) set to fixed values: two configs with equal ``result_config`` describe the same
    run, which may resume the other."""
    neutral = {"train.device": "auto", "train.threads": 0, "train.progress": False, "train.tensorboard": False,
               "data.num_workers": 0, "data.encode_workers": 2}
    return apply_overrides(cfg, {k: v for k, v in neutral.items() if k in valid_keys()})


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


def named_configs() -> list[str]:
    """The names ``load_config`` accepts: the stems of ``experiments_dir()/*.toml``, sorted."""
    return sorted(p.stem for p in experiments_dir().glob("*.toml") if p.is_file())


def is_config_path(source: "str | os.PathLike") -> bool:
    """Whether ``source`` names a file rather than a config in ``experiments/``: a path object, or a
    string that contains a folder separator or ends in ``.toml``. A file or folder in the current
    directory that happens to be called like a config (``shd``) never shadows the named one."""
    if not isinstance(source, str):
        return True
    separators = [sep for sep in ("/", os.sep, os.altsep) if sep]
    return source.endswith(".toml") or any(sep in source for sep in separators)


def _resolve_path(source: "str | os.PathLike") -> Path:
    if is_config_path(source):
        path = Path(source).expanduser()
        if path.is_dir():
            raise ConfigError(f"config file {path} is a folder; give a TOML file or a name from "
                              f"{', '.join(named_configs())}")
        if not path.exists():
            raise ConfigError(f"config file {path} does not exist")
        return path
    candidate = experiments_dir() / f"{source}.toml"
    if candidate.is_file():
        return candidate
    if not experiments_dir().is_dir():
        raise ConfigError(f"no config named {source!r}: the folder of named configs {experiments_dir()} does not exist "
                          "(is $SNN_DELAYS_EXPERIMENTS right?); or give a path ending in .toml")
    hint = f"; for the file ./{source} write ./{source}" if source and Path(source).is_file() else ""
    raise ConfigError(f"no config named {source!r}{_did_you_mean(source, named_configs())} in {experiments_dir()}; "
                      f"named configs: {', '.join(named_configs())} (or give a path ending in .toml){hint}")


def _read_toml(path: Path) -> dict[str, Any]:
    """The TOML table in ``path``; unreadable, invalid (line and column) or empty files refused."""
    try:
        data = tomllib.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not UTF-8 text (is it a TOML file?)") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    if not data:
        raise ConfigError(f"config file {path} is empty (no name, [model], [data] or [train] keys)")
    return data


def load_config(
    source: "str | os.PathLike | ExperimentConfig | dict | None" = None,
    overrides: "list[str] | list[tuple[str, Any]] | dict[str, Any] | None" = None,
) -> ExperimentConfig:
    """Load a config from a name in ``experiments/`` or a TOML path (see :func:`is_config_path`), a
    dict or a config object, then apply ``overrides`` (``["model.kernel_size=31", ...]`` or
    ``{"model.kernel_size": 31}``)."""
    if source is None:
        cfg = ExperimentConfig()
    elif isinstance(source, ExperimentConfig):
        cfg = source
    elif isinstance(source, dict):
        cfg = config_from_dict(source)
    else:
        path = _resolve_path(source)
        data = _read_toml(path)
        try:
            cfg = config_from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    if overrides:
        cfg = apply_overrides(cfg, overrides)
    return cfg.validate()


def parse_override(text: str) -> tuple[str, Any]:
    """``"section.key=value"`` -> ``(key, value)`` typed as the field: the value is read as a TOML
    scalar (``31``, ``0.05``, ``true``, ``"a string"``); a string field also takes bare text, as
    is. Unknown keys and wrong types are refused, naming the key."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r} must look like section.key=value (e.g. model.kernel_size=31)")
    key, raw = (part.strip() for part in text.split("=", 1))
    typ = _field_type(key)
    if typ is str:
        quoted = _parse_scalar(raw) if raw[:1] in ('"', "'") else None
        return key, quoted if isinstance(quoted, str) else raw
    return key, _coerce(_parse_scalar(raw), typ, key)


def apply_overrides(
    cfg: ExperimentConfig, overrides: "list[str] | list[tuple[str, Any]] | dict[str, Any]"
) -> ExperimentConfig:
    """Return a copy of ``cfg`` with overrides applied in order: ``"section.key=value"`` strings (see
    :func:`parse_override`), ``(key, value)`` pairs or a ``{key: value}`` dict of typed values.
    A key given twice takes its last value."""
    items = overrides.items() if isinstance(overrides, dict) else overrides
    for item in items:
        key, value = parse_override(item) if isinstance(item, str) else item
        value = _coerce(value, _field_type(key), key)
        if key == "name":
            cfg = replace(cfg, name=value)
            continue
        section, name = key.split(".", 1)
        cfg = replace(cfg, **{section: replace(getattr(cfg, section), **{name: value})})
        if section == "model":
            _refuse_set_by_variant(cfg.model, {name: value})
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
    # a TOML basic string: JSON's escapes (\", \\, \n, \uXXXX) are TOML's, plus DEL, which TOML forbids raw
    return json.dumps(str(v), ensure_ascii=False).replace("\x7f", "\\u007f")
