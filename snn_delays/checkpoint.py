"""Checkpoints of a run folder: atomic save, checked loading, clear errors. Format in docs/internals.md.

Loading checks more than the format tag: the stored config must describe the arrays actually in
the file (:func:`check_model_arrays`), so that a damaged or crafted config (``hidden_size = 1e6``,
``kernel_size = 1e9``) is refused before a model is built from it, not after terabytes are asked for.
"""

from __future__ import annotations

import dataclasses
import io
import os
from pathlib import Path
from typing import Any

import torch

from neuromorphic_export._io import atomic_write_bytes
from neuromorphic_export.checkpoint_reader import run_identity_problem
from neuromorphic_export.chip import (CHECKPOINT_FORMAT, CHECKPOINT_VERSION, MAX_KERNEL_BYTES, MAX_TIME_STEPS,
                                      kernel_bytes, state_shapes)

from neuromorphic_export.conv import conv_state_shapes, flat_size, parse_conv, parse_frame

from .config import ExperimentConfig, config_from_dict
from .errors import UserError

__all__ = ["save_checkpoint", "load_checkpoint", "check_model_arrays", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION",
           "MAX_TIME_STEPS", "MAX_KERNEL_BYTES"]

# The schema's tags and size limits are neuromorphic_export.chip's: one set for the trainer's reader and the exporter's.


def save_checkpoint(path: "str | os.PathLike", state: dict[str, Any]) -> None:
    """Write ``state`` (plus format tags) to ``path`` atomically: a crash leaves the old file intact.
    Serialised in memory first, so that a full disk surfaces as the ``OSError`` of the write."""
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **state}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic_write_bytes(path, buffer.getbuffer())


def resolve_checkpoint_path(run_dir: "str | os.PathLike", which: str = "best") -> Path:
    p = Path(run_dir)
    if p.is_file():
        return p
    if not p.exists():
        raise UserError(f"run folder {p} does not exist")
    f = p / (which if which.endswith(".pt") else f"{which}.pt")
    if not f.exists():
        raise UserError(f"{f} not found: {p} is not a finished run folder (expected best.pt and last.pt)")
    return f


def load_checkpoint(run_dir: "str | os.PathLike", which: str = "best", map_location: str = "cpu") -> dict[str, Any]:
    """Load ``best.pt``/``last.pt`` of a run folder (or a .pt path); checks the format tag and that
    the stored config matches the stored arrays (:func:`check_model_arrays`)."""
    f = resolve_checkpoint_path(run_dir, which)
    try:
        ckpt = torch.load(f, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupt, or not a torch file
        raise UserError(f"{f} is not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{f} is not an snn-delays checkpoint (missing format tag {CHECKPOINT_FORMAT!r})")
    version = ckpt.get("format_version", 0)
    if not isinstance(version, int):
        raise UserError(f"{f} has a format_version that is not a whole number ({version!r}): a damaged checkpoint")
    if version > CHECKPOINT_VERSION:
        raise UserError(f"{f} has format_version {version}; this snn-delays reads up to "
                        f"{CHECKPOINT_VERSION}: upgrade the package")
    if not isinstance(ckpt.get("config"), dict) or not isinstance(ckpt.get("model"), dict):
        raise UserError(f"{f} lacks its 'config' or 'model' entry: a damaged checkpoint")
    problem = run_identity_problem(f, ckpt)
    if problem:
        raise UserError(problem)
    try:
        cfg = config_from_dict(ckpt["config"])
    except UserError as e:
        raise UserError(f"{f} holds an invalid config: {e}") from None
    check_model_arrays(cfg, ckpt["model"], f)
    return ckpt


def _expected_shapes(cfg: ExperimentConfig) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of the size-defining arrays of the model ``cfg`` describes
    (the table in docs/internals.md)."""
    m = cfg.model
    taps = 1 if m.delays == "none" else m.kernel_count
    return state_shapes(m.n_layers, m.input_size, m.hidden_size, m.n_classes, taps, m.kernel_size,
                        dense_conv=m.dense_kernel, recurrent=m.recurrent, adaptive=m.neuron == "adlif")


def _shapes_with_conv(cfg: ExperimentConfig) -> dict[str, tuple[int, ...]]:
    """:func:`_expected_shapes` of a model with conv layers (model.conv): theirs (``conv.{j}.*``), and
    the dense layers' with the conv output's flattened size as the first dense layer's inputs."""
    m = cfg.model
    specs = parse_conv(m.conv)
    if not specs:
        return _expected_shapes(cfg)
    if not m.input_frame:
        raise UserError("the config has model.conv but no model.input_frame: a damaged config")
    frame = parse_frame(m.input_frame)
    dense = dataclasses.replace(cfg, model=dataclasses.replace(m, input_size=flat_size(specs, frame)))
    return {**conv_state_shapes(specs, frame, m.conv_delay_per), **_expected_shapes(dense)}


def check_model_arrays(cfg: ExperimentConfig, state: dict[str, Any], source: "str | os.PathLike" = "checkpoint") -> None:
    """Refuse a model state whose arrays do not match ``cfg`` (sizes, layer count, kernel length),
    hold NaN/infinity, or whose config would need absurd time lengths; checked before any model
    is built, so nothing is allocated from an untrusted config."""
    m = cfg.model
    for key, value in (("model.kernel_size", m.kernel_size), ("model.extra_steps", m.resolved_extra_steps)):
        if value > MAX_TIME_STEPS:
            raise UserError(f"{source}: {key} is {value} steps, more than {MAX_TIME_STEPS}: a damaged or crafted "
                            f"config; refusing to build it")
    want = _shapes_with_conv(cfg)
    layers = {key.split(".")[1] for key in state if key.startswith("hidden.")}
    extra = sorted(layers - {str(k) for k in range(m.n_layers)})
    if extra:
        raise UserError(f"{source}: the config says model.n_layers={m.n_layers} but the arrays hold hidden "
                        f"layer(s) {', '.join(extra)}: the config does not match the arrays")
    for key, shape in want.items():
        have = state.get(key)
        if not isinstance(have, torch.Tensor):
            raise UserError(f"{source}: array {key} is missing (the config describes a {m.variant} model with "
                            f"{m.n_layers} hidden layer(s)): the config does not match the arrays")
        if tuple(have.shape) != shape:
            raise UserError(f"{source}: array {key} is {tuple(have.shape)} but the config (input_size "
                            f"{m.input_size}, hidden_size {m.hidden_size}, n_classes {m.n_classes}, kernel_count "
                            f"{m.kernel_count}, kernel_size {m.kernel_size}) needs {shape}: the config does not "
                            f"match the arrays")
        if have.is_floating_point() and not bool(have.isfinite().all()):
            raise UserError(f"{source}: array {key} holds NaN or infinity; this model cannot be used")
        taps, what = ((m.resolved_recurrent_kernel_size, "model.recurrent_kernel_size") if ".recurrent." in key
                      else (m.kernel_size, "model.kernel_size"))
        if key.endswith(".delay") and have.numel() and float(have.max()) > taps - 1 + 1e-3:
            raise UserError(f"{source}: delays in {key} reach {float(have.max()):.1f} steps but {what} "
                            f"{taps} allows at most {taps - 1}: the config does not match the arrays")
    pairs = [s[0] * s[1] for k, s in want.items() if k.endswith("mask") and ".recurrent." not in k]
    recurrent = [s[0] * s[1] for k, s in want.items() if k.endswith("mask") and ".recurrent." in k]
    need = kernel_bytes(pairs, m.kernel_size, recurrent, m.resolved_recurrent_kernel_size if m.recurrent else 0)
    if need > MAX_KERNEL_BYTES:
        raise UserError(f"{source}: model.kernel_size {m.kernel_size} would need {need / 2**30:.0f} GiB of delay "
                        f"kernels (limit {MAX_KERNEL_BYTES >> 30} GiB): a damaged or crafted config")
