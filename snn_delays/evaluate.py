"""Evaluate a trained run folder on a split, with rounded delays: accuracy, loss, confusion matrix,
per-class accuracy and hidden-layer spike rates (:func:`evaluate_run`), and their text form
(:func:`format_report`, what ``snn-delays evaluate`` prints without ``--json``)."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .config import config_from_dict
from .data import open_dataset
from .data.batches import iterate_batches
from .errors import UserError
from .model import DelaySNN, trained_steps
from .train import measure_split, resolve_device

__all__ = ["evaluate_run", "format_report", "run_scores"]

MAX_TABLE_CLASSES = 20  # larger confusion matrices only in --json


def _run_model_and_data(run_dir, dataset, data_dir, split, checkpoint, device):
    """(model on ``dev`` in eval mode, the split's dataset, the data config, checkpoint, warnings, dev)."""
    dev = resolve_device(device, "evaluate --device")
    ckpt = load_checkpoint(run_dir, checkpoint)
    cfg = config_from_dict(ckpt["config"])
    data = cfg.data
    if dataset:
        data = replace(data, dataset=dataset)
    if data_dir:
        data = replace(data, root=data_dir)
    ds = open_dataset(data.dataset, data.root or None, split, **data.dataset_options())
    if ds.n_channels != cfg.model.input_size:
        raise UserError(f"dataset {data.dataset!r} has {ds.n_channels} channels but the model expects "
                        f"{cfg.model.input_size}")
    if ds.n_classes > cfg.model.n_classes:
        raise UserError(f"dataset {data.dataset!r} has {ds.n_classes} classes but the model has only "
                        f"{cfg.model.n_classes} outputs")
    if len(ds) == 0:
        raise UserError(f"split {split!r} of dataset {data.dataset!r} holds no samples; nothing to evaluate")
    warnings = []
    trained, n_steps = trained_steps(ckpt), getattr(ds, "n_steps", None)
    if trained and n_steps and n_steps != trained:
        warnings.append(f"the {data.dataset}/{split} samples have {n_steps} time steps, the model was trained on "
                        f"{trained}: its accuracy on them may be far lower (evaluate on data binned as in training, "
                        f"e.g. without --dataset/--data-dir)")
    model = DelaySNN(cfg.model, seed=cfg.train.seed)
    model.load_state_dict(ckpt["model"])
    model.to(dev).eval()
    return model, ds, data, ckpt, warnings, dev


def evaluate_run(run_dir: "str | os.PathLike", dataset: str | None = None, data_dir: str | None = None,
                 split: str = "test", checkpoint: str = "best", device: str = "cpu",
                 show_progress: bool = True) -> dict[str, Any]:
    """Evaluate the run's model (eval mode, rounded delays) on ``split`` of its dataset (or ``dataset``)
    in one pass. Returns {"accuracy", "correct", "n", "loss" (mean cross-entropy of the summed softmax,
    the training loss), "confusion" (K x K counts, rows = true class, columns = predicted),
    "per_class_accuracy" (K values, null for a class without samples), "spike_rate" (per hidden layer,
    the fraction of (step, neuron) entries that spike), "dataset", "split", "checkpoint", "epoch",
    "warnings" (lines for the user, e.g. a time length other than the training data's)}.
    ``show_progress``: a bar on a terminal, a line every 30 s otherwise (stderr)."""
    model, ds, data, ckpt, warnings, dev = _run_model_and_data(run_dir, dataset, data_dir, split, checkpoint,
                                                               device)
    measured = measure_split(model, ds, data.batch_size, dev, show_progress,
                             desc=f"evaluating {data.dataset}/{split}")
    return {**measured.to_dict(), "dataset": data.dataset, "split": split, "checkpoint": checkpoint,
            "epoch": int(ckpt.get("epoch", 0)), "warnings": warnings}


def format_report(result: dict[str, Any]) -> str:
    """The text form of :func:`evaluate_run`'s result: the accuracy line, the loss, spike rates, the
    per-class accuracy and (up to ``MAX_TABLE_CLASSES`` classes) the confusion matrix."""
    lines = [f"{result['dataset']} / {result['split']}: accuracy {result['accuracy']:.4f} "
             f"({result['correct']}/{result['n']}) with rounded delays, "
             f"{result.get('checkpoint', 'best')}.pt (epoch {result['epoch']})"]
    if "loss" in result:
        lines.append(f"loss (cross-entropy) {result['loss']:.4f}")
    if result.get("spike_rate"):
        rates = ", ".join(f"layer {k} {v:.4f}" for k, v in enumerate(result["spike_rate"]))
        lines.append(f"spike rate (fraction of step x neuron entries that spike): {rates}")
    per_class = result.get("per_class_accuracy")
    confusion = result.get("confusion")
    if per_class is None or confusion is None:
        return "\n".join(lines)
    shown = lambda v: "-" if v is None else f"{v:.2f}"
    if len(per_class) <= MAX_TABLE_CLASSES:
        width = max(6, len(str(max(map(max, confusion)))) + 2)  # room for "0.95" and the largest count
        head = "true \\ predicted".ljust(17)
        lines.append("")
        lines.append(f"{'class'.ljust(17)}" + "".join(str(c).rjust(width) for c in range(len(per_class))))
        lines.append(f"{'accuracy'.ljust(17)}" + "".join(shown(v).rjust(width) for v in per_class))
        lines.append("")
        lines.append("confusion matrix (counts; rows: true class, columns: predicted class)")
        lines.append(head + "".join(str(c).rjust(width) for c in range(len(per_class))))
        for c, row in enumerate(confusion):
            lines.append(str(c).rjust(len(head) - 1) + " " + "".join(str(v).rjust(width) for v in row))
    else:
        ranked = sorted((v, c) for c, v in enumerate(per_class) if v is not None)[:5]
        worst = ", ".join(f"{c}: {v:.2f}" for v, c in ranked)
        lines.append(f"per-class accuracy of {len(per_class)} classes, lowest: {worst} "
                     f"(the confusion matrix and every class: --json)")
    return "\n".join(lines)


@torch.no_grad()
def run_scores(run_dir: "str | os.PathLike", split: str = "test", checkpoint: str = "best",
               device: str = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """The decision scores of a run's model on ``split`` of its own dataset, sample by sample:
    ``(scores (N, K) float64, labels (N,) int64)``, where ``scores`` is the model's summed softmax over
    its output steps (:meth:`DelaySNN.scores`, eval mode, rounded delays: what ``evaluate_run``'s
    accuracy takes the argmax of), in the dataset's order. Seed ensembles average these
    (:func:`snn_delays.crossval.ensemble_folds`)."""
    model, ds, data, _, _, dev = _run_model_and_data(run_dir, None, None, split, checkpoint, device)
    scores, labels = [], []
    for x, y in iterate_batches(ds, data.batch_size, device=dev):
        scores.append(DelaySNN.scores(model(x)).double().cpu().numpy())
        labels.append(y.cpu().numpy())
    return np.concatenate(scores), np.concatenate(labels).astype(np.int64)
