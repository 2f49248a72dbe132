"""Test support (not shipped): the tiny training config the tests share, and synthetic checkpoints
(random weights, delays, BatchNorm statistics and masks, saved in the documented checkpoint format,
docs/internals.md; torch is needed only to write the file). Tests import it as ``from _support
import ...`` (pytest puts tests/ on the path)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["TINY_CONFIG", "tiny", "tiny_args", "synthetic_state", "save_synthetic_checkpoint", "add_recurrent_state",
           "edited_h5"]

# The small synthetic-task run the training tests share (seconds on a CPU): config key -> value as
# written after ``--set KEY=``. A test that needs more or other values says which with tiny(...).
TINY_CONFIG: dict[str, str] = {
    "model.hidden_size": "8", "model.kernel_size": "7", "data.synthetic_train": "60", "data.synthetic_valid": "30",
    "data.synthetic_test": "30", "data.batch_size": "30", "train.progress": "false",
}


def tiny(changes: "dict[str, Any] | None" = None) -> list[str]:
    """``KEY=VALUE`` overrides of :data:`TINY_CONFIG` with ``changes`` applied (a value None drops the key)."""
    merged = {**TINY_CONFIG, **(changes or {})}
    return [f"{k}={v}" for k, v in merged.items() if v is not None]


def tiny_args(changes: "dict[str, Any] | None" = None) -> list[str]:
    """:func:`tiny` as command-line arguments: ``--set KEY=VALUE`` for each."""
    return [a for o in tiny(changes) for a in ("--set", o)]


def synthetic_state(rng: np.random.Generator, input_size: int = 12, hidden_size: int = 10,
                    n_layers: int = 2, n_classes: int = 4, kernel_size: int = 9, kernel_count: int = 1,
                    fanin: int = 0, weight_gain: float = 2.5, max_delay: float | None = None) -> dict[str, np.ndarray]:
    """State dict (numpy float32) with the keys of a DelaySNN: weights large enough to spike."""
    sizes = [input_size] + [hidden_size] * n_layers + [n_classes]
    state: dict[str, np.ndarray] = {}
    hi = kernel_size - 1 if max_delay is None else max_delay
    for k in range(n_layers + 1):
        fin, fout = sizes[k], sizes[k + 1]
        mask = np.ones((fout, fin))
        if 0 < fanin < fin:
            mask[:] = 0
            for i in range(fout):
                mask[i, rng.choice(fin, fanin, replace=False)] = 1
        fan = (mask.sum(1, keepdims=True) * kernel_count)[:, :, None]
        w = rng.normal(0, weight_gain / np.sqrt(fan), (fout, fin, kernel_count)) * mask[:, :, None]
        d = rng.uniform(-0.3, hi + 0.3, (fout, fin, kernel_count))
        d[rng.random(d.shape) < 0.1] = rng.integers(0, max(int(hi), 1), 1) + 0.5  # exact .5: half-to-even
        prefix = f"hidden.{k}.synapse" if k < n_layers else "readout"
        state[f"{prefix}.weight"] = w.astype(np.float32)
        state[f"{prefix}.delay"] = d.astype(np.float32)
        state[f"{prefix}.mask"] = mask.astype(np.float32)
        state[f"{prefix}.sigma"] = np.float32(0.5)
        if k < n_layers:
            state[f"hidden.{k}.norm.weight"] = rng.uniform(0.5, 1.5, fout).astype(np.float32)
            state[f"hidden.{k}.norm.bias"] = rng.uniform(-0.2, 0.3, fout).astype(np.float32)
            state[f"hidden.{k}.norm.running_mean"] = rng.normal(0, 0.2, fout).astype(np.float32)
            state[f"hidden.{k}.norm.running_var"] = rng.uniform(0.3, 1.5, fout).astype(np.float32)
            state[f"hidden.{k}.norm.num_batches_tracked"] = np.int64(100)
    return state


def add_recurrent_state(state: dict[str, np.ndarray], rng: np.random.Generator, n_layers: int,
                        kernel_size: int, fanin: int = 0, weight_gain: float = 1.0) -> dict[str, np.ndarray]:
    """Add the recurrent synapses of a ``model.recurrent = true`` checkpoint to ``state`` (in place):
    per hidden layer k, ``hidden.{k}.recurrent.weight`` / ``.delay`` (H, H, 1) with the delay stored
    as d - 1 in about [0, kernel_size - 1] (some exact .5: half-to-even), ``.mask`` (H, H), ``.sigma``."""
    for k in range(n_layers):
        h = state[f"hidden.{k}.synapse.weight"].shape[0]
        mask = np.ones((h, h))
        if 0 < fanin < h:
            mask[:] = 0
            for i in range(h):
                mask[i, rng.choice(h, fanin, replace=False)] = 1
        w = rng.normal(0, weight_gain / np.sqrt(mask.sum(1, keepdims=True)), (h, h))[:, :, None] * mask[:, :, None]
        d = rng.uniform(-0.3, kernel_size - 1 + 0.3, (h, h, 1))
        d[rng.random(d.shape) < 0.1] = rng.integers(0, max(kernel_size - 1, 1), 1) + 0.5
        prefix = f"hidden.{k}.recurrent"
        state[f"{prefix}.weight"] = w.astype(np.float32)
        state[f"{prefix}.delay"] = d.astype(np.float32)
        state[f"{prefix}.mask"] = mask.astype(np.float32)
        state[f"{prefix}.sigma"] = np.float32(0.5)
    return state


def save_synthetic_checkpoint(path: str | os.PathLike, state: dict[str, np.ndarray], *, n_layers: int,
                              kernel_size: int, tau_steps: float = 2.0, readout_tau_steps: float = 3.0,
                              threshold: float = 1.0, extra_steps: int = -1, dt_ms: float = 10.0,
                              variant: str = "full", **model_extra: Any) -> Path:
    """Write ``state`` as a best.pt-style checkpoint (a folder gets ``best.pt``)."""
    import torch

    path = Path(path)
    if path.suffix != ".pt":
        path.mkdir(parents=True, exist_ok=True)
        path = path / "best.pt"
    w0 = state["hidden.0.synapse.weight"] if n_layers else state["readout.weight"]
    model = {"input_size": int(w0.shape[1]), "n_classes": int(state["readout.weight"].shape[0]),
             "hidden_size": int(w0.shape[0]), "n_layers": n_layers, "kernel_size": kernel_size,
             "kernel_count": int(w0.shape[2]), "tau_steps": tau_steps, "readout_tau_steps": readout_tau_steps,
             "threshold": threshold, "extra_steps": extra_steps, "variant": variant, **model_extra}
    blob = {"format": "snn-delays-checkpoint", "format_version": 1,
            "config": {"name": "synthetic-test", "model": model, "data": {"dataset": "synthetic", "dt_ms": dt_ms},
                       "train": {}},
            "model": {k: torch.from_numpy(np.asarray(v).copy()) if np.ndim(v) else torch.tensor(v.item())
                      for k, v in state.items()},
            "epoch": 1, "sigma": 0.5, "metrics": []}
    torch.save(blob, path)
    return path


def edited_h5(source: "str | os.PathLike", dest: "str | os.PathLike", edit) -> Path:
    """A copy of the HDF5 file ``source`` at ``dest`` with ``edit(h5py.File)`` applied: a damaged
    or hand-changed network.h5 for the readers' refusal tests."""
    import h5py

    dest = Path(dest)
    dest.write_bytes(Path(source).read_bytes())
    with h5py.File(dest, "a") as f:
        edit(f)
    return dest
