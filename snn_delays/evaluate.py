"""Evaluate a trained run folder on a split, with rounded delays."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from .checkpoint import load_checkpoint
from .config import config_from_dict
from .data import open_dataset
from .errors import UserError
from .model import DelaySNN
from .train import evaluate_accuracy, resolve_device

__all__ = ["evaluate_run"]


def evaluate_run(run_dir: "str | os.PathLike", dataset: str | None = None, data_dir: str | None = None,
                 split: str = "test", checkpoint: str = "best", device: str = "cpu") -> dict[str, Any]:
    """Accuracy of the run's model on ``split`` of its dataset (or ``dataset``), eval mode.
    Returns {"accuracy", "correct", "n", "dataset", "split", "epoch"}."""
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
    dev = resolve_device(device)
    model = DelaySNN(cfg.model, seed=cfg.train.seed)
    model.load_state_dict(ckpt["model"])
    model.to(dev).eval()
    acc, correct, n = evaluate_accuracy(model, ds, data.batch_size, dev)
    return {"accuracy": acc, "correct": correct, "n": n, "dataset": data.dataset, "split": split,
            "epoch": int(ckpt.get("epoch", 0))}
