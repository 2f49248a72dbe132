"""The training loop, its schedules (pure functions of the epoch) and the run folder.

One epoch: set learning rates and sigma for the epoch -> optimise on the training split (delays
clamped after every step) -> evaluate valid and test with rounded delays -> write
``metrics.jsonl``, ``last.pt`` and, when validation improves, ``best.pt``.

Resuming: everything random in an epoch is seeded from (seed, epoch) and the schedules are pure
functions of the epoch, so a run restarted from ``last.pt`` ends with the same metrics as an
uninterrupted one (on CPU).
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch import Tensor, nn

from .checkpoint import atomic_write_text, load_checkpoint, save_checkpoint
from .config import ExperimentConfig, config_from_dict, config_to_dict, load_config, to_toml
from .data import open_dataset
from . import distributed
from .errors import TrainingDiverged, UserError
from .model import DelaySNN, build_model, resolve_variant
from .synapse import DelaySynapse

__all__ = [
    "train",
    "one_cycle_lr",
    "cosine_lr",
    "sigma_at_epoch",
    "iterate_batches",
    "evaluate_accuracy",
    "resolve_device",
    "run_info",
    "result_config",
]


# -- schedules: pure functions of the epoch ------------------------------------------------------
def one_cycle_lr(epoch: int, epochs: int, max_lr: float, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4) -> float:
    """Learning rate of ``torch.optim.lr_scheduler.OneCycleLR`` (cosine, two phases) stepped once
    per epoch with ``total_steps = epochs``, at the start of ``epoch`` (0-based)."""
    initial = max_lr / div_factor
    minimum = initial / final_div_factor
    end_up = float(pct_start * epochs) - 1
    end_down = float(epochs - 1)

    def cos(start: float, end: float, pct: float) -> float:
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    if epoch <= end_up:
        return cos(initial, max_lr, epoch / end_up if end_up > 0 else 1.0)
    return cos(max_lr, minimum, (epoch - end_up) / (end_down - end_up))


def cosine_lr(epoch: int, epochs: int, base_lr: float) -> float:
    """``CosineAnnealingLR(T_max=epochs, eta_min=0)`` stepped once per epoch, at ``epoch``."""
    return base_lr * (1 + math.cos(math.pi * epoch / epochs)) / 2


def sigma_at_epoch(epoch: int, epochs: int, sigma_init: float, sigma_final: float = 0.5,
                   decay_fraction: float = 0.25) -> float:
    """Shared Gaussian width (steps) during ``epoch``: exponential decay from ``sigma_init`` after
    every epoch, reaching ``sigma_final`` after ``decay_fraction`` of the epochs, then constant."""
    n_decay = max(1, round(decay_fraction * epochs))
    if sigma_init <= sigma_final:
        return sigma_final
    alpha = (sigma_final / sigma_init) ** (1.0 / n_decay)
    return max(sigma_final, sigma_init * alpha**epoch)


# -- data ----------------------------------------------------------------------------------------
def iterate_batches(dataset, batch_size: int, shuffle: bool = False, seed: int = 0,
                    device: torch.device | str = "cpu", num_workers: int = 0,
                    indices: "np.ndarray | None" = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield (x (T, B, C) float32, y (B,) int64) batches. Datasets exposing ``x`` (N, T, C) and ``y``
    tensors are indexed a whole batch at a time; others go through a DataLoader."""
    n = len(dataset)
    order = np.arange(n) if indices is None else np.asarray(indices)
    if shuffle:
        order = order[np.random.default_rng(seed).permutation(len(order))]
    if hasattr(dataset, "x") and hasattr(dataset, "y"):
        for start in range(0, len(order), batch_size):
            idx = torch.from_numpy(order[start:start + batch_size])
            x = dataset.x[idx].to(device=device, dtype=torch.float32).transpose(0, 1)  # (T, B, C)
            yield x, dataset.y[idx].to(device)
        return
    from torch.utils.data import DataLoader, Subset

    loader = DataLoader(Subset(dataset, order.tolist()), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    for x, y in loader:
        yield x.to(device=device, dtype=torch.float32).transpose(0, 1), y.to(device)


@torch.no_grad()
def evaluate_accuracy(model: DelaySNN, dataset, batch_size: int = 256, device="cpu") -> tuple[float, int, int]:
    """Accuracy with rounded delays (eval mode); returns (accuracy, correct, n)."""
    was_training = model.training
    model.eval()
    correct = n = 0
    for x, y in iterate_batches(dataset, batch_size, device=device):
        correct += int((model.predict(x) == y).sum())
        n += len(y)
    model.train(was_training)
    return (correct / n if n else float("nan")), correct, n


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("train.device is cuda but no CUDA device is available; use --device cpu")
    return torch.device(name)


# -- run information -----------------------------------------------------------------------------
def run_info() -> dict[str, Any]:
    """Versions and the project's git commit, recorded in every run folder."""
    import importlib.metadata as md

    versions = {}
    for pkg in ("snn-delays", "torch", "numpy", "h5py"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    commit = None
    try:
        src = Path(__file__).resolve().parent.parent
        commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if commit and dirty:
            commit += "+dirty"
    except (OSError, subprocess.SubprocessError):
        pass
    return {"python": sys.version.split()[0], "platform": platform.platform(), "versions": versions,
            "git_commit": commit}


# -- the loop ------------------------------------------------------------------------------------
def _param_groups(model: DelaySNN, cfg: ExperimentConfig) -> list[dict[str, Any]]:
    weights, norms, delays = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith(".delay"):
            delays.append(p)
        elif ".norm." in name:
            norms.append(p)
        else:
            weights.append(p)
    groups = [
        {"params": weights, "name": "weights", "weight_decay": cfg.train.weight_decay},
        {"params": norms, "name": "norm", "weight_decay": 0.0},
        {"params": delays, "name": "delays", "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]


def _delay_stats(model: DelaySNN) -> dict[str, float]:
    out = {}
    for k, syn in enumerate(model.synapses()):
        if isinstance(syn, DelaySynapse) and syn.kernel_size > 1:
            d = syn.delay.detach()[syn.mask.bool()]
            td = syn.kernel_size
            out[f"delay_mean_{k}"] = float(d.mean())
            out[f"delay_std_{k}"] = float(d.std()) if d.numel() > 1 else 0.0
            out[f"delay_at_limits_{k}"] = float(((d < 0.5) | (d > td - 1.5)).float().mean())
    return out


def _kernel_snapshot(model: DelaySNN, n_neurons: int) -> list[dict[str, Tensor]]:
    """Weights and delays of the first ``n_neurons`` neurons of every synapse layer (for plots)."""
    snap = []
    for syn in model.synapses():
        if isinstance(syn, DelaySynapse):
            snap.append({"weight": syn.masked_weight()[:n_neurons].detach().cpu().clone(),
                         "delay": syn.delay[:n_neurons].detach().cpu().clone()})
    return snap


def _open_splits(cfg: ExperimentConfig):
    opts = cfg.data.dataset_options()
    root = cfg.data.root or None
    return {split: open_dataset(cfg.data.dataset, root, split, **opts) for split in ("train", "valid", "test")}


def result_config(cfg: ExperimentConfig) -> ExperimentConfig:
    """``cfg`` without the settings that cannot change the results (torch threads, progress bar):
    two configs with equal ``result_config`` describe the same run, which may resume the other."""
    return replace(cfg, train=replace(cfg.train, threads=0, progress=False))


def _fill_sizes(cfg: ExperimentConfig, ds) -> ExperimentConfig:
    m = cfg.model
    for key, have in (("input_size", ds.n_channels), ("n_classes", ds.n_classes)):
        want = getattr(m, key)
        if want == 0:
            m = replace(m, **{key: int(have)})
        elif want != have:
            raise UserError(f"model.{key} is {want} but dataset {cfg.data.dataset!r} has {have}; "
                            f"set --set model.{key}={have} (or 0 to take it from the data)")
    return replace(cfg, model=m)


def train(config: "ExperimentConfig | str", run_dir: "str | os.PathLike", resume: bool = True,
          max_epochs: int | None = None,
          on_epoch_end: "Callable[[dict[str, Any]], None] | None" = None) -> dict[str, Any]:
    """Train ``config`` into ``run_dir`` (resuming from ``last.pt`` when present and ``resume``).
    ``max_epochs`` stops after that many epochs in this call (for tests of interruption).
    ``on_epoch_end(row)`` is called with each epoch's metrics after its checkpoint is written; an
    exception it raises stops training (used for pruning) and propagates.
    Under ``torchrun`` (``WORLD_SIZE`` > 1) this is data-parallel; see :mod:`snn_delays.distributed`.
    Returns the summary written to ``summary.json``."""
    cfg = load_config(config) if not isinstance(config, ExperimentConfig) else config.validate()
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    dist = distributed.setup(resolve_device(cfg.train.device))
    device = dist.device(resolve_device(cfg.train.device))
    t_open = time.perf_counter()
    splits = _open_splits(cfg)
    cfg = _fill_sizes(cfg, splits["train"])
    cfg = replace(cfg, model=resolve_variant(cfg.model))  # concrete sizes, stored in checkpoints
    open_time = time.perf_counter() - t_open

    last_path, best_path = run / "last.pt", run / "best.pt"
    resumed = None
    if resume and last_path.exists():
        resumed = load_checkpoint(last_path)
        if result_config(config_from_dict(resumed["config"])) != result_config(cfg):
            raise UserError(f"{run} holds a run with a different configuration; use --restart to overwrite it "
                            f"or choose another --out")
    elif (run / "metrics.jsonl").exists() and not resume and dist.is_main:
        for f in ("metrics.jsonl", "best.pt", "last.pt", "summary.json"):
            (run / f).unlink(missing_ok=True)
    if dist.is_main:
        atomic_write_text(run / "config.toml", to_toml(cfg))

    model = DelaySNN(cfg.model, seed=cfg.train.seed).to(device)
    if dist.enabled:
        distributed.convert_for_ddp(model)
    net = dist.wrap(model, device)  # what the training step calls
    optimizer = torch.optim.Adam(_param_groups(model, cfg), lr=cfg.train.lr_weights)
    metrics: list[dict[str, Any]] = []
    snapshots: list[dict[str, Any]] = []
    best = {"valid_acc": -1.0, "epoch": -1, "test_acc": float("nan")}
    start_epoch = 0
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        metrics, snapshots, best = resumed["metrics"], resumed.get("kernel_history", []), resumed["best"]
        start_epoch = int(resumed["epoch"])
        if dist.is_main:
            with open(run / "metrics.jsonl", "w") as f:  # drop lines written after the checkpoint
                f.writelines(json.dumps(m) + "\n" for m in metrics)
    else:
        if dist.is_main:
            (run / "metrics.jsonl").write_text("")
        snapshots.append({"epoch": 0, "sigma": cfg.sigma_init(), "layers": _kernel_snapshot(model, cfg.train.kernel_snapshot_neurons)})

    protocol_note = getattr(splits["valid"], "protocol_note", "")
    info = run_info()
    sigma_init = cfg.sigma_init()
    total = cfg.train.epochs
    stop = total if max_epochs is None else min(total, start_epoch + max_epochs)
    bar = _progress(cfg.train.progress and dist.is_main)
    base = {"config": config_to_dict(cfg)}
    for epoch in range(start_epoch, stop):
        t0 = time.perf_counter()
        sigma = cfg.train.sigma_final if cfg.model.variant == "constant-sigma" else sigma_at_epoch(
            epoch, total, sigma_init, cfg.train.sigma_final, cfg.train.sigma_decay_fraction)
        model.sigma = sigma
        lr_w = one_cycle_lr(epoch, total, cfg.train.lr_weights, cfg.train.one_cycle_pct_start)
        lr_d = cosine_lr(epoch, total, cfg.train.lr_delays)
        for g in optimizer.param_groups:
            g["lr"] = lr_d if g["name"] == "delays" else lr_w
        torch.manual_seed(cfg.train.seed * 100_003 + epoch)  # dropout masks of this epoch
        model.train()
        loss_sum, correct, seen, data_time = 0.0, 0, 0, 0.0
        batches = iterate_batches(splits["train"], cfg.data.batch_size, shuffle=True,
                                  seed=cfg.train.seed * 100_003 + epoch, device=device,
                                  num_workers=cfg.data.num_workers)
        n_batches = math.ceil(len(splits["train"]) / cfg.data.batch_size)
        pbar = bar(batches, total=n_batches, desc=f"epoch {epoch + 1}/{total}")
        it = iter(pbar)
        step = 0
        while True:
            td = time.perf_counter()
            try:
                x, y = next(it)
            except StopIteration:
                break
            data_time += time.perf_counter() - td
            if dist.enabled:  # this rank's shard; loss scaled so DDP's gradient mean is the batch mean
                x, y, offset, n_global = dist.shard(x, y)
                distributed.set_shard(model, offset, n_global)
                scores = DelaySNN.scores(net(x))  # (b, K)
                ce_sum = nn.functional.cross_entropy(scores, y, reduction="sum")
                loss = ce_sum * (dist.world / n_global)
            else:
                scores = DelaySNN.scores(model(x))  # (B, K) summed softmax, used as logits
                loss = ce_sum = nn.functional.cross_entropy(scores, y)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"the loss became {float(loss)} at epoch {epoch + 1}, step {step + 1}; training stopped. "
                    f"The last good checkpoint is {last_path if last_path.exists() else '(none yet)'}. "
                    f"Try a lower train.lr_weights or train.lr_delays.")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            model.clamp_()
            loss_sum += ce_sum.item() if dist.enabled else loss.item() * len(y)
            correct += int((scores.argmax(-1) == y).sum())
            seen += len(y)
            step += 1
            if hasattr(pbar, "set_postfix"):
                pbar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
        if hasattr(pbar, "close"):
            pbar.close()
        train_time = time.perf_counter() - t0
        loss_sum, correct, seen = dist.sum([loss_sum, correct, seen])  # over ranks (no-op alone)
        correct, seen = int(correct), int(seen)
        valid_acc = evaluate_accuracy(model, splits["valid"], cfg.data.batch_size, device)[0]
        test_acc = evaluate_accuracy(model, splits["test"], cfg.data.batch_size, device)[0]
        row = {
            "epoch": epoch + 1,
            "train_loss": loss_sum / max(seen, 1),
            "train_acc": correct / max(seen, 1),
            "valid_acc": valid_acc,
            "test_acc": test_acc,
            "sigma": sigma,
            "lr_weights": lr_w,
            "lr_delays": lr_d,
            **_delay_stats(model),
            "epoch_time_s": time.perf_counter() - t0,
            "train_time_s": train_time,
            "data_time_s": data_time,
        }
        metrics.append(row)
        snapshots.append({"epoch": epoch + 1, "sigma": sigma,
                          "layers": _kernel_snapshot(model, cfg.train.kernel_snapshot_neurons)})
        improved = valid_acc > best["valid_acc"]
        if improved:
            best = {"valid_acc": valid_acc, "epoch": epoch + 1, "test_acc": test_acc}
        state = {**base, "model": model.state_dict(), "epoch": epoch + 1, "sigma": sigma, "metrics": metrics,
                 "best": best, "kernel_history": snapshots, "run_info": info}
        if dist.is_main:
            if improved:
                save_checkpoint(best_path, state)
            save_checkpoint(last_path, {**state, "optimizer": optimizer.state_dict()})
            with open(run / "metrics.jsonl", "a") as f:
                f.write(json.dumps(row) + "\n")
            _say(f"epoch {epoch + 1}/{total}  loss {row['train_loss']:.4f}  train {row['train_acc']:.3f}  "
                 f"valid {valid_acc:.3f}  test {test_acc:.3f}  sigma {sigma:.2f}  {row['epoch_time_s']:.1f}s")
        if on_epoch_end is not None:
            on_epoch_end(row)

    summary = {
        "name": cfg.name,
        "dataset": cfg.data.dataset,
        "variant": cfg.model.variant,
        "seed": cfg.train.seed,
        "epochs_done": len(metrics),
        "epochs": total,
        "best_epoch": best["epoch"],
        "best_valid_acc": best["valid_acc"],
        "test_acc": best["test_acc"],
        "final_test_acc": metrics[-1]["test_acc"] if metrics else float("nan"),
        "max_test_acc": max((m["test_acc"] for m in metrics), default=float("nan")),
        "trainable_parameters": model.trainable_count(),
        "protocol": cfg.data.protocol,
        "protocol_note": protocol_note,
        "dataset_open_s": open_time,
        "device": str(device),
        "world_size": dist.world,
        **info,
        "config": config_to_dict(cfg),
    }
    if dist.is_main:
        atomic_write_text(run / "summary.json", json.dumps(summary, indent=2))
    dist.close()
    return summary


def _say(msg: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(msg)
    except ImportError:
        print(msg, flush=True)


def _progress(enabled: bool):
    if not enabled:
        return lambda it, **kw: it
    from tqdm import tqdm

    return lambda it, **kw: tqdm(it, leave=False, dynamic_ncols=True, mininterval=1.0, disable=None, **kw)
