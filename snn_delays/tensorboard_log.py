"""TensorBoard event files of a training run (``train.tensorboard = true`` or ``train --tensorboard``).

Written under ``RUN/tensorboard/``, one step per epoch (the 1-based epoch number): the scalars of
the epoch's ``metrics.jsonl`` row (losses, accuracies, sigma, learning rates, spike rate per hidden
layer, delay statistics) and histograms of the weights and delays of every synapse layer.
``metrics.jsonl`` stays the record of the run; these files are a view of it. A resumed run drops the
events written after the checkpoint it resumes from (``purge_step``), so no step appears twice; a
run resumed with TensorBoard newly switched on first writes the earlier epochs' scalars from its
metrics. The ``tensorboard`` package is the optional extra ``tensorboard``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterable

from torch import nn

from ._optional import require
from .synapse import DelaySynapse

__all__ = ["TensorBoardLog", "open_log", "require_tensorboard", "row_scalars", "FOLDER"]

FOLDER = "tensorboard"  # inside the run folder

# metrics.jsonl key -> TensorBoard tag (per-layer keys are handled in row_scalars)
_TAGS = {
    "train_loss": "loss/train",
    "valid_loss": "loss/valid",
    "train_acc": "accuracy/train",
    "valid_acc": "accuracy/valid",
    "test_acc": "accuracy/test",
    "sigma": "sigma_steps",
    "lr_weights": "learning_rate/weights",
    "lr_delays": "learning_rate/delays",
    "epoch_time_s": "time_s/epoch",
}
_LAYER_PREFIXES = ("delay_mean_", "delay_std_", "delay_at_limits_")


def require_tensorboard() -> None:
    """Raise :class:`UserError` (one line naming the pip install) when ``tensorboard`` is missing."""
    require("tensorboard", "train --tensorboard")


def row_scalars(row: dict[str, Any]) -> dict[str, float]:
    """TensorBoard tag -> value for one ``metrics.jsonl`` row; null (not evaluated) and non-finite
    values are left out. ``spike_rate`` [r_0, r_1, ...] becomes ``spike_rate/hidden_k``,
    ``delay_mean_k`` ``delay_mean/layer_k`` (likewise std and at_limits)."""
    out: dict[str, float] = {}
    for key, value in row.items():
        if key in _TAGS:
            out[_TAGS[key]] = value
        elif key == "spike_rate" and value is not None:
            out.update({f"spike_rate/hidden_{k}": v for k, v in enumerate(value)})
        else:
            for prefix in _LAYER_PREFIXES:
                if key.startswith(prefix) and key[len(prefix):].isdigit():
                    out[f"{prefix[:-1]}/layer_{key[len(prefix):]}"] = value
    return {tag: float(v) for tag, v in out.items() if isinstance(v, (int, float)) and math.isfinite(v)}


def _layer_names(n_synapses: int) -> list[str]:
    return [f"hidden_{k}" for k in range(n_synapses - 1)] + ["readout"]


def _parameter_histograms(model: nn.Module) -> Iterable[tuple[str, Any]]:
    """(tag, values) of the connected weights and learned delays (steps) of every synapse layer."""
    synapses = model.synapses()
    for name, syn in zip(_layer_names(len(synapses)), synapses):
        connected = syn.mask.bool()  # (out, in)
        if isinstance(syn, DelaySynapse):
            yield f"weights/{name}", syn.weight.detach()[connected]
            if syn.kernel_size > 1:
                yield f"delays_steps/{name}", syn.delay.detach()[connected]
        else:  # dense-conv: a free (out, in, Td) kernel
            yield f"weights/{name}", syn.kernel_weight.detach()[connected]


class TensorBoardLog:
    """Writes one step per epoch into ``folder``; created by :func:`open_log`. Use as a context
    manager (closes the writer)."""

    def __init__(self, folder: Path, start_epoch: int, earlier_rows: list[dict[str, Any]]):
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        folder.mkdir(parents=True, exist_ok=True)
        existing = sorted(folder.glob("events.out.tfevents.*"))
        if start_epoch == 0:  # a new run: the files of an earlier one would mix with ours
            for f in existing:
                f.unlink()
            existing = []
        self._writer = SummaryWriter(str(folder), purge_step=start_epoch + 1 if existing else None)
        if not existing:  # resumed with TensorBoard newly on: the earlier epochs from metrics.jsonl
            for row in earlier_rows:
                self._scalars(row)
            self._writer.flush()

    def _scalars(self, row: dict[str, Any]) -> None:
        for tag, value in row_scalars(row).items():
            self._writer.add_scalar(tag, value, global_step=int(row["epoch"]))

    def write_epoch(self, row: dict[str, Any], model: nn.Module) -> None:
        """The scalars of ``row`` and histograms of ``model``'s weights and delays at step ``row["epoch"]``;
        flushed to disk before returning."""
        self._scalars(row)
        for tag, values in _parameter_histograms(model):
            if values.numel():
                self._writer.add_histogram(tag, values.float().cpu(), global_step=int(row["epoch"]))
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> "TensorBoardLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _NoLog:
    """What :func:`open_log` gives when TensorBoard is off: a context manager yielding None."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc) -> None:
        pass


def open_log(run_folder: "str | os.PathLike", start_epoch: int, earlier_rows: list[dict[str, Any]],
             enabled: bool) -> "TensorBoardLog | _NoLog":
    """``with open_log(...) as tb:`` gives a :class:`TensorBoardLog` writing into
    ``run_folder/tensorboard`` (``start_epoch`` epochs already done, their rows ``earlier_rows``), or
    None when not ``enabled``."""
    if not enabled:
        return _NoLog()
    return TensorBoardLog(Path(run_folder) / FOLDER, start_epoch, earlier_rows)
