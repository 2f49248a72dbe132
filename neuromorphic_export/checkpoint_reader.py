"""Read a training checkpoint (``best.pt`` / ``last.pt``) without importing the training code.

The checkpoint format is the one in ``docs/internals.md``: a ``torch.save`` dict with
``format == "snn-delays-checkpoint"``, ``format_version == 1``, the resolved ``config`` (nested
dict) and the ``model`` state dict. A model with ``model.recurrent = true`` also has, per hidden
layer k, ``hidden.{k}.recurrent.weight`` / ``.delay`` (H, H, m) and ``.mask`` (H, H): the layer's
synapses onto itself, the delay stored as d - 1 steps. A model with ``model.neuron = "adlif"`` also
has ``hidden.{k}.lif.decay_u`` / ``.decay_w`` / ``.a`` / ``.b`` (H,) per hidden layer (older
checkpoints have no ``model.neuron``: LIF). torch is needed here only to unpickle the file (it is present
wherever a checkpoint was made); everything returned is numpy.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .chip import (ADLIF_KEYS, BN_EPS, CHECKPOINT_FORMAT, CHECKPOINT_VERSIONS, DEFAULT_DT_MS,  # noqa: F401
                   MAX_KERNEL_BYTES, MAX_TIME_STEPS, NEURON_MODELS, NORM_KEYS, RECURRENT_DELAYS, default_extra_steps,
                   kernel_bytes, neuron_key, recurrent_key, synapse_key)
from .conv import ConvLayer, conv_key, conv_shapes, flat_size, parse_conv, parse_frame
from .errors import ExportError
from .model_variants import stored_variant_fields

__all__ = ["Checkpoint", "HiddenLayer", "load_checkpoint", "resolve_checkpoint_path", "file_sha256",
           "run_identity_problem", "RUN_FILE", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSIONS", "BN_EPS", "RECURRENT_DELAYS"]

# The schema's constants and size limits are the core's (one set for both packages' readers):
RUN_FILE = "run.json"  # a run folder's identity: {"run_id": hex}; every checkpoint of the run stores the same id


@dataclass(frozen=True)
class HiddenLayer:
    """One synapse layer read from a checkpoint. Arrays are float64.

    weight, delay: (H_out, H_in, m) (delay in real-valued steps); mask: (H_out, H_in).
    norm: BatchNorm running statistics and affine parameters (H_out,) each, or None (readout).
    recurrent: a hidden layer's synapses onto itself (weight, delay (H, H, m), mask (H, H), norm
    None; delay holds d - 1 steps, real-valued), or None.
    adaptation: a hidden layer's adLIF parameters as stored (decay_u, decay_w, a, b (H_out,) each,
    not yet clamped into their ranges), or None (LIF neurons).
    """

    weight: np.ndarray
    delay: np.ndarray
    mask: np.ndarray
    norm: dict[str, np.ndarray] | None
    recurrent: "HiddenLayer | None" = None
    adaptation: dict[str, np.ndarray] | None = None


@dataclass(frozen=True)
class Checkpoint:
    """What the exporter needs from a checkpoint: the layers, the neuron constants and dt."""

    path: Path
    config: dict[str, Any]
    hidden: list[HiddenLayer]
    readout: HiddenLayer
    kernel_size: int
    tau_steps: float
    readout_tau_steps: float
    threshold: float
    extra_steps: int
    dt_ms: float
    epoch: int
    recurrent_kernel_size: int = 0  # Dr': taps of the recurrent synapses (delays 1..Dr' steps); 0: none
    neuron: str = "lif"  # the hidden layers' neuron model (model.neuron): "lif" or "adlif"

    conv: tuple = ()  # the conv layers (model.conv), ConvLayer each; the dense layers read their flattened output

    @property
    def input_size(self) -> int:
        if self.conv:  # the input frame's C H W
            return int(np.prod(self.conv[0].shapes[0]))
        return int(self.hidden[0].weight.shape[1]) if self.hidden else int(self.readout.weight.shape[1])

    @property
    def n_classes(self) -> int:
        return int(self.readout.weight.shape[0])

    @property
    def dataset(self) -> str:
        return str(self.config.get("data", {}).get("dataset", ""))

    @property
    def layer_sizes(self) -> list[int]:
        """[input, hidden..., classes]: the neurons of each layer, read from the weights."""
        return [self.input_size] + [int(h.weight.shape[0]) for h in self.hidden] + [self.n_classes]

    def sha256(self) -> str:
        """Hex digest of the checkpoint file: exports record it so that verify can tell whose they are."""
        return file_sha256(self.path)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2 ** 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_identity_problem(path: str | os.PathLike, blob: dict[str, Any]) -> str | None:
    """Why the checkpoint ``blob`` read from ``path`` does not belong to the run folder it lies in, or None.

    The folder's ``run.json`` names the run; checkpoints written since the run id exists carry the same
    ``run_id``. Older checkpoints (or folders without ``run.json``) are compared with the folder's
    ``config.toml`` instead: another model, dataset or seed means another run. A checkpoint file
    outside any run folder (no ``run.json``, no ``config.toml`` beside it) has nothing to contradict it.
    """
    p = Path(path)
    folder = p.parent
    run_file = folder / RUN_FILE
    ckpt_id = blob.get("run_id")
    if ckpt_id is not None and run_file.is_file():
        try:
            folder_id = json.loads(run_file.read_text()).get("run_id")
        except (OSError, ValueError, AttributeError):
            return f"{run_file} is not readable JSON with a run_id: a damaged run folder"
        if folder_id is not None and folder_id != ckpt_id:
            return (f"{p.name} in {folder} belongs to another run (run id {str(ckpt_id)[:12]}, this folder's is "
                    f"{str(folder_id)[:12]}): it was copied here from elsewhere; use the run folder it came from")
        return None
    config_file = folder / "config.toml"
    if not config_file.is_file() or not isinstance(blob.get("config"), dict):
        return None
    try:
        with open(config_file, "rb") as f:
            folder_cfg = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError):
        return None  # not this check's business: the config is read (and judged) where it is used
    cfg = blob["config"]
    for section, keys in (("model", None), ("data", ("dataset",)), ("train", ("seed",))):
        mine, theirs = cfg.get(section) or {}, folder_cfg.get(section) or {}
        for key in keys or sorted(set(mine) | set(theirs)):
            if mine.get(key) != theirs.get(key):
                return (f"{p.name} in {folder} was not written by the run of this folder's config.toml "
                        f"({section}.{key} is {mine.get(key)!r} in the checkpoint, {theirs.get(key)!r} in "
                        "config.toml): it was copied here from another run; use the run folder it came from")
    return None


def resolve_checkpoint_path(path: str | os.PathLike, which: str = "best") -> Path:
    """A run folder -> its ``best.pt`` (or ``last.pt``); a file path is returned as it is."""
    p = Path(path)
    if p.is_dir():
        f = p / f"{which}.pt"
        if not f.exists():
            other = p / ("last.pt" if which == "best" else "best.pt")
            hint = f" ({other.name} exists: use --checkpoint {other.stem})" if other.exists() else \
                " (is this a run folder written by `snn-delays train`?)"
            raise ExportError(f"no checkpoint {f}{hint}")
        return f
    if not p.exists():
        raise ExportError(f"{p} does not exist: give a run folder or a checkpoint file (best.pt)")
    return p


def _to_numpy(value: Any, key: str, path: Path) -> np.ndarray:
    try:
        return np.asarray(value.detach().cpu().double().numpy() if hasattr(value, "detach") else value,
                          dtype=np.float64)
    except Exception as e:  # noqa: BLE001 - report which entry is unreadable
        raise ExportError(f"{path}: state-dict entry {key!r} is not a numeric tensor ({e})") from None


def _get(state: dict, key: str, path: Path, shape: tuple[int, ...] | None = None) -> np.ndarray:
    if key not in state:
        raise ExportError(f"{path}: state dict has no {key!r}; not an exportable snn-delays model "
                          f"(keys: {', '.join(sorted(state)[:12])}{' ...' if len(state) > 12 else ''})")
    arr = _to_numpy(state[key], key, path)
    if shape is not None and arr.shape != shape:
        raise ExportError(f"{path}: {key!r} has shape {arr.shape}, expected {shape}")
    if not np.all(np.isfinite(arr)):
        raise ExportError(f"{path}: {key!r} contains NaN or inf")
    return arr


def _read_synapse(state: dict, prefix: str, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if f"{prefix}.kernel" in state or f"{prefix}.kernel_weight" in state:
        raise ExportError(f"{path}: {prefix} is a dense-conv synapse (free kernel per connection); only "
                          "models with weights and delays can be exported (variant dense-conv cannot)")
    w = _get(state, f"{prefix}.weight", path)
    if w.ndim != 3:
        raise ExportError(f"{path}: {prefix}.weight must be (H_out, H_in, m); got shape {w.shape}")
    d = _get(state, f"{prefix}.delay", path, w.shape)
    mask = _get(state, f"{prefix}.mask", path, w.shape[:2]) if f"{prefix}.mask" in state \
        else np.ones(w.shape[:2])
    return w, d, mask


def load_checkpoint(path: str | os.PathLike, which: str = "best") -> Checkpoint:
    """Load a run folder's ``best.pt``/``last.pt`` (or a checkpoint file) into numpy arrays.

    Raises :class:`ExportError` for a missing file, a file torch cannot read, an unknown
    format or version, a missing state-dict key or a non-exportable variant.
    """
    p = resolve_checkpoint_path(path, which)
    try:
        import torch
    except ModuleNotFoundError:
        raise ExportError("reading a .pt checkpoint needs torch; export from an environment that has it, "
                          "or pass an existing network.h5") from None
    try:
        blob = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means a corrupt/foreign file
        raise ExportError(f"{p} is not a readable checkpoint (corrupt, truncated or not a torch file): "
                          f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        found = blob.get("format") if isinstance(blob, dict) else type(blob).__name__
        raise ExportError(f"{p}: unknown checkpoint format {found!r}; expected {CHECKPOINT_FORMAT!r} "
                          "(a best.pt/last.pt written by `snn-delays train`)")
    version = blob.get("format_version")
    if version not in CHECKPOINT_VERSIONS:
        raise ExportError(f"{p}: checkpoint format_version {version!r} is not supported "
                          f"(this exporter reads {', '.join(map(str, CHECKPOINT_VERSIONS))})")
    config, state = blob.get("config"), blob.get("model")
    if not isinstance(config, dict) or not isinstance(state, dict):
        raise ExportError(f"{p}: checkpoint lacks its 'config' or 'model' entry")
    problem = run_identity_problem(p, blob)
    if problem:
        raise ExportError(problem)
    model_cfg, data_cfg = config.get("model", {}), config.get("data", {})
    try:
        n_layers = int(model_cfg["n_layers"])
        kernel_size = int(model_cfg["kernel_size"])
        tau = float(model_cfg["tau_steps"])
        readout_tau = float(model_cfg["readout_tau_steps"])
        threshold = float(model_cfg["threshold"])
        extra = int(model_cfg.get("extra_steps", -1))
        dt_ms = float(data_cfg.get("dt_ms", DEFAULT_DT_MS))
    except (KeyError, TypeError, ValueError) as e:
        raise ExportError(f"{p}: checkpoint config lacks model.{e} or has a wrong type") from None
    recurrent_ks = _recurrent_kernel_size(p, model_cfg, kernel_size)
    neuron = model_cfg.get("neuron", "lif")
    if neuron not in NEURON_MODELS:
        raise ExportError(f"{p}: checkpoint config has model.neuron = {neuron!r}; expected one of "
                          f"{', '.join(NEURON_MODELS)}")
    if stored_variant_fields(model_cfg)["dense_kernel"]:
        raise ExportError(f"{p}: model.dense_kernel (variant dense-conv) is a free kernel per connection and cannot "
                          "be exported")
    if not 0 <= n_layers <= 1000:
        raise ExportError(f"{p}: checkpoint config has model.n_layers = {n_layers}; expected 0..1000")
    if kernel_size < 1:
        raise ExportError(f"{p}: checkpoint config has model.kernel_size = {kernel_size}; must be >= 1")
    conv = _read_conv(state, model_cfg, p)
    if extra < 0:  # the documented default (ModelConfig.resolved_extra_steps uses the same function)
        extra = default_extra_steps(n_layers + len(conv), kernel_size)
    if not (tau >= 1 and readout_tau >= 1 and math.isfinite(threshold)):
        raise ExportError(f"{p}: invalid neuron constants tau={tau}, readout_tau={readout_tau}, "
                          f"threshold={threshold}")
    if not (math.isfinite(dt_ms) and dt_ms > 0):
        raise ExportError(f"{p}: checkpoint config has data.dt_ms = {dt_ms}; must be a positive number of ms")
    hidden = []
    for k in range(n_layers):
        w, d, mask = _read_synapse(state, synapse_key(k, n_layers), p)
        h = w.shape[0]
        norm = {name: _get(state, f"hidden.{k}.norm.{name}", p, (h,))
                for name in NORM_KEYS}
        adaptation = {name: _get(state, f"{neuron_key(k)}.{name}", p, (h,)) for name in ADLIF_KEYS} \
            if neuron == "adlif" else None
        hidden.append(HiddenLayer(w, d, mask, norm, _read_recurrent(state, k, h, recurrent_ks, p), adaptation))
    stray = sorted(key for key in state if ".recurrent." in key and key.startswith("hidden.")
                   and key.endswith((".weight", ".delay")))
    if not recurrent_ks and stray:
        raise ExportError(f"{p}: the state dict has recurrent synapses ({', '.join(stray[:4])}) but the config says "
                          "model.recurrent = false: config and weights disagree (a corrupted or edited checkpoint)")
    stray = sorted(key for key in state if key.startswith("hidden.") and ".lif." in key)
    if neuron == "lif" and stray:
        raise ExportError(f"{p}: the state dict has adLIF neuron parameters ({', '.join(stray[:4])}) but the config "
                          "says model.neuron = lif: config and weights disagree (a corrupted or edited checkpoint)")
    w, d, mask = _read_synapse(state, synapse_key(n_layers, n_layers), p)
    readout = HiddenLayer(w, d, mask, None)
    for k in range(1, n_layers + 1):
        prev = hidden[k - 1].weight.shape[0]
        nxt = (hidden[k] if k < n_layers else readout).weight.shape[1]
        if prev != nxt:
            raise ExportError(f"{p}: layer {k} expects {nxt} inputs but layer {k - 1} has {prev} neurons")
    if conv:  # the first dense layer reads the conv layers' flattened output, not model.input_size
        model_cfg = {**model_cfg, "input_size": flat_size(tuple(c.spec for c in conv), conv[0].shapes[0])}
    _check_config_sizes(p, model_cfg, hidden, readout, kernel_size, extra, recurrent_ks)
    return Checkpoint(path=p, config=config, hidden=hidden, readout=readout, kernel_size=kernel_size,
                      tau_steps=tau, readout_tau_steps=readout_tau, threshold=threshold,
                      extra_steps=extra, dt_ms=dt_ms, epoch=int(blob.get("epoch", 0) or 0),
                      recurrent_kernel_size=recurrent_ks, neuron=str(neuron), conv=conv)


def _read_conv(state: dict, model_cfg: dict, p: Path) -> tuple:
    """The conv layers of a checkpoint with ``model.conv`` (empty tuple without; older checkpoints
    have none), their arrays checked against the spec and ``model.input_frame``."""
    try:
        specs = parse_conv(model_cfg.get("conv", ""))
        if not specs:
            if any(key.startswith("conv.") for key in state):
                raise ExportError(f"{p}: the state dict has conv layers but the config has no model.conv: config "
                                  "and weights disagree (a corrupted or edited checkpoint)")
            return ()
        frame = parse_frame(model_cfg.get("input_frame", ""))
        shapes = conv_shapes(specs, frame)
    except ValueError as e:
        raise ExportError(f"{p}: checkpoint config: {e}") from None
    per = model_cfg.get("conv_delay_per", "element")
    layers = []
    for j, (spec, sh) in enumerate(zip(specs, shapes)):
        o, i, k = spec.out_channels, sh[0][0], spec.kernel
        prefix = conv_key(j)
        w = _get(state, f"{prefix}.synapse.weight", p, (o, i, k, k))
        d = _get(state, f"{prefix}.synapse.delay", p, (o, i, k, k) if per == "element" else (o, i))
        norm = {name: _get(state, f"{prefix}.norm.{name}", p, (o,)) for name in NORM_KEYS}
        layers.append(ConvLayer(w, d, norm, spec, sh))
    return tuple(layers)


def _recurrent_kernel_size(p: Path, model_cfg: dict, kernel_size: int) -> int:
    """Dr' of a recurrent model (delays 1..Dr' steps): model.recurrent_kernel_size (0 = kernel_size),
    1 for recurrent_delays = "one-step"; 0 when model.recurrent is false or absent (older checkpoints)."""
    recurrent = model_cfg.get("recurrent", False)
    if not isinstance(recurrent, bool):
        raise ExportError(f"{p}: checkpoint config has model.recurrent = {recurrent!r}; expected true or false")
    if not recurrent:
        return 0
    size, kind = model_cfg.get("recurrent_kernel_size", 0), model_cfg.get("recurrent_delays", "learned")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ExportError(f"{p}: checkpoint config has model.recurrent_kernel_size = {size!r}; expected an integer "
                          ">= 1 (steps), or 0 for model.kernel_size")
    if kind not in RECURRENT_DELAYS:
        raise ExportError(f"{p}: checkpoint config has model.recurrent_delays = {kind!r}; expected one of "
                          f"{', '.join(RECURRENT_DELAYS)}")
    return 1 if kind == "one-step" else (size or kernel_size)


def _read_recurrent(state: dict, k: int, h: int, kernel_size: int, p: Path) -> HiddenLayer | None:
    """Hidden layer k's recurrent synapses (H, H, m) when the model has them (kernel_size > 0)."""
    if not kernel_size:
        return None
    prefix = recurrent_key(k)
    if f"{prefix}.weight" not in state:
        raise ExportError(f"{p}: the config says model.recurrent = true but the state dict has no {prefix}.weight "
                          "(a checkpoint of another model, or an edited one)")
    w, d, mask = _read_synapse(state, prefix, p)
    if w.shape[:2] != (h, h):
        raise ExportError(f"{p}: {prefix}.weight has shape {w.shape}, expected ({h}, {h}, m): a recurrent synapse "
                          f"connects the layer's {h} neurons to themselves")
    return HiddenLayer(w, d, mask, None)


def _check_config_sizes(p: Path, model_cfg: dict, hidden: list[HiddenLayer], readout: HiddenLayer,
                        kernel_size: int, extra_steps: int, recurrent_kernel_size: int = 0) -> None:
    """The config's sizes against the arrays actually stored, before anyone allocates from them
    (the model rebuilt by ``verify`` allocates out x in x kernel_size per layer, hidden_size neurons,
    extra_steps zero steps per input)."""
    weights = [h.weight for h in hidden] + [readout.weight]
    stored = {"input_size": int(weights[0].shape[1]), "n_classes": int(readout.weight.shape[0])}
    if not stored_variant_fields(model_cfg)["match_params"]:  # those resolve their own sizes
        stored["kernel_count"] = int(weights[0].shape[2])
        if hidden:
            stored["hidden_size"] = int(hidden[0].weight.shape[0])
    for key, value in stored.items():
        if key in model_cfg and model_cfg[key] != value:
            raise ExportError(f"{p}: checkpoint config has model.{key} = {model_cfg[key]!r} but its weights have "
                              f"{value}: config and weights disagree (a corrupted or edited checkpoint)")
    if kernel_size > MAX_TIME_STEPS:
        raise ExportError(f"{p}: checkpoint config has model.kernel_size = {kernel_size} steps, more than "
                          f"{MAX_TIME_STEPS}: a corrupted or edited checkpoint")
    need = kernel_bytes([w.shape[0] * w.shape[1] for w in weights], kernel_size,
                        [h.recurrent.weight.shape[0] * h.recurrent.weight.shape[1] for h in hidden
                         if h.recurrent is not None], recurrent_kernel_size)
    if need > MAX_KERNEL_BYTES:
        raise ExportError(f"{p}: checkpoint config has model.kernel_size = {kernel_size}"
                          + (f" and recurrent kernel size {recurrent_kernel_size}" if recurrent_kernel_size else "")
                          + ": the model's delay kernels "
                          f"would need {need / 2 ** 30:.0f} GiB (limit {MAX_KERNEL_BYTES / 2 ** 30:.0f} GiB); "
                          "a corrupted or edited checkpoint")
    if extra_steps > MAX_TIME_STEPS:
        raise ExportError(f"{p}: model.extra_steps = {extra_steps} (from the checkpoint config) is beyond "
                          f"{MAX_TIME_STEPS} zero steps per input; a corrupted or edited checkpoint")
