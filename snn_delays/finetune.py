"""``snn-delays finetune RUN_DIR --target T --out NEW_RUN``: continue a finished run with a chip's
constraints in the forward pass (:mod:`snn_delays.quantize`), so that its export loses nothing.

The new run is an ordinary run folder written by :func:`snn_delays.train.train` (resumable the same
way: the same command continues from ``NEW_RUN/last.pt``); its config is the finished run's with

    train.target = T            the chip (recorded: ``export`` says when another target is asked)
    train.target_fraction = 1   the chip's forward from the first epoch
    train.init_from = RUN_DIR/best.pt
    train.epochs = 5            (--epochs N)
    train.lr_weights = a tenth of the run's, train.lr_delays = 0 (delays stay at their rounded values)
    name = <run name>-<T>

and any ``--set section.key=value`` applied last. Validation accuracy is measured with the chip's
forward, so the training loop's ``best.pt`` is the epoch that does best on the chip. That epoch
replaces the starting weights only when its gain on the validation split is more than noise: an
exact one-sided sign test (McNemar's test) on the validation samples the two classify differently,
``gained`` (start wrong, fine-tuned right) against ``lost`` (start right, fine-tuned wrong), must give
p <= :data:`SELECT_ALPHA` (0.05). Otherwise ``best.pt`` holds the starting weights (epoch 0;
``summary.json`` -> ``finetune_start`` records the counts and p), so fine-tuning never leaves a run
that is worse on validation, nor swaps the start for a model that differs from it by a sample or two
(on FSDD's 220 validation recordings one recording is 0.45 points: such gains did not carry over to
the test split, see docs/export.md).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from neuromorphic_export._io import atomic_write_text

from .checkpoint import load_checkpoint, resolve_checkpoint_path, save_checkpoint
from .config import apply_overrides, config_from_dict, parse_override
from .data import open_dataset
from .data.batches import iterate_batches
from .errors import UserError
from .model import DelaySNN
from .quantize import check_target, init_from
from .train import measure_split, train

__all__ = ["finetune_config", "finetune", "sign_test_p", "SELECT_ALPHA", "DEFAULT_EPOCHS"]

DEFAULT_EPOCHS = 5
LR_FACTOR = 0.1
SELECT_ALPHA = 0.05  # significance level of the sign test that lets a fine-tuned epoch replace the start


def sign_test_p(gained: int, lost: int) -> float:
    """One-sided exact sign test (McNemar's exact test) for paired classifications: the probability,
    if the two models were equally good, that of the ``gained + lost`` samples they classify
    differently at least ``gained`` go the fine-tuned model's way, P(X >= gained) for
    X ~ Binomial(gained + lost, 1/2). 1.0 when they never differ."""
    if gained < 0 or lost < 0:
        raise ValueError(f"counts must be >= 0; got gained={gained}, lost={lost}")
    n = gained + lost
    return sum(math.comb(n, k) for k in range(gained, n + 1)) / 2 ** n


def finetune_config(run_dir: "str | Path", target: str, epochs: int | None = None, overrides: list[str] = (),
                    checkpoint: str = "best"):
    """The config of a fine-tuning run of ``run_dir`` for ``target`` (see the module doc)."""
    check_target(target)
    path = resolve_checkpoint_path(run_dir, checkpoint).resolve()
    cfg = config_from_dict(load_checkpoint(path)["config"])
    if epochs is not None and epochs < 1:
        raise UserError(f"--epochs must be >= 1; got {epochs}")
    defaults = {"train.target": target, "train.target_fraction": 1.0, "train.init_from": str(path),
                "train.epochs": epochs or DEFAULT_EPOCHS, "train.lr_weights": cfg.train.lr_weights * LR_FACTOR,
                "train.lr_delays": 0.0, "name": f"{cfg.name}-{target}"}
    explicit = [parse_override(text) for text in overrides]
    for key, value in explicit:
        if key == "train.epochs" and epochs is not None and value != epochs:
            raise UserError(f"--epochs {epochs} and --set train.epochs={value} disagree; give one of them")
        if key == "train.target" and value != target:
            raise UserError(f"--target {target} and --set train.target={value} disagree; give one of them")
    return apply_overrides(cfg, list(defaults.items()) + explicit).validate()


def finetune(run_dir: "str | Path", target: str, out: "str | Path", epochs: int | None = None,
             overrides: list[str] = (), resume: bool = True, checkpoint: str = "best") -> dict[str, Any]:
    """Fine-tune ``run_dir`` for ``target`` into the run folder ``out``; returns its summary."""
    out = Path(out)
    source = Path(run_dir)
    if out.resolve() == (source if source.is_dir() else source.parent).resolve():
        raise UserError(f"--out {out} is the run being fine-tuned; choose a new folder")
    cfg = finetune_config(run_dir, target, epochs, overrides, checkpoint)
    return keep_start_if_better(out, train(cfg, out, resume=resume))


def keep_start_if_better(out: Path, summary: dict[str, Any], alpha: float = SELECT_ALPHA) -> dict[str, Any]:
    """Make ``out/best.pt`` the starting weights (epoch 0) unless the training loop's best epoch beats
    them on the validation split in the chip's forward by more than noise (:func:`sign_test_p` <=
    ``alpha``, see the module doc). The summary (returned, and rewritten in summary.json) says which
    under ``finetune_start``: the start's valid and test accuracy, ``gained`` / ``lost`` (validation
    samples), ``p``, ``alpha`` and ``kept``."""
    import json

    import torch

    last = load_checkpoint(out / "last.pt")
    cfg = config_from_dict(last["config"])
    opts, root = cfg.data.dataset_options(), cfg.data.root or None
    valid_set = open_dataset(cfg.data.dataset, root, "valid", **opts)
    model = _chip_model(cfg, cfg.train.init_from)
    start_right = _correct(model, valid_set, cfg.data.batch_size)  # (N_valid,) bool
    with torch.no_grad():
        test = measure_split(model, open_dataset(cfg.data.dataset, root, "test", **opts), cfg.data.batch_size)
    valid_acc = float(start_right.mean())
    gained = lost = 0
    if summary.get("best_valid_acc") is not None and (out / "best.pt").is_file():
        tuned_right = _correct(_chip_model(cfg, str(out / "best.pt")), valid_set, cfg.data.batch_size)
        gained, lost = int((~start_right & tuned_right).sum()), int((start_right & ~tuned_right).sum())
    p = sign_test_p(gained, lost)
    kept = p > alpha
    if kept:
        best = {"valid_acc": valid_acc, "epoch": 0, "test_acc": test.accuracy}
        save_checkpoint(out / "best.pt", {"config": last["config"], "model": model.state_dict(), "epoch": 0,
                                          "sigma": last.get("sigma"), "metrics": last["metrics"], "best": best,
                                          "run_info": last.get("run_info"), "run_id": last.get("run_id")})
        summary = {**summary, "best_epoch": 0, "best_valid_acc": valid_acc, "test_acc": test.accuracy}
    summary["finetune_start"] = {"valid_acc": valid_acc, "test_acc": test.accuracy, "gained": gained, "lost": lost,
                                 "p": p, "alpha": alpha, "kept": kept}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, allow_nan=False))
    return summary


def _chip_model(cfg, checkpoint: str):
    """The run's DelaySNN with the weights of ``checkpoint``, computing as ``cfg.train.target`` does (eval)."""
    model = DelaySNN(cfg.model, seed=cfg.train.seed, target=cfg.train.target)
    init_from(model, checkpoint)
    model.set_chip_forward(True)
    return model.eval()


def _correct(model, dataset, batch_size: int):
    """(N,) bool numpy array: which samples of ``dataset`` ``model`` classifies right (the argmax of
    :meth:`DelaySNN.scores`, as :func:`snn_delays.train.measure_split` counts them), in dataset order."""
    import numpy as np
    import torch

    right = []
    with torch.no_grad():
        for x, y in iterate_batches(dataset, batch_size):  # x (T, B, C), y (B,)
            right.append((model.scores(model(x)).argmax(-1) == y).cpu().numpy())
    return np.concatenate(right) if right else np.zeros(0, dtype=bool)
