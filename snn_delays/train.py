"""The training loop, its schedules (pure functions of the epoch) and the run folder.

:func:`train` reads as its steps: :func:`start_or_resume` -> per epoch :func:`train_one_epoch`
(learning rates and sigma for the epoch, optimise on the training split, delays and adLIF
parameters clamped into their ranges after every step) -> :func:`evaluate_splits` (valid and test
with rounded delays, every ``train.eval_every`` epochs and after the last) -> :func:`write_epoch` (``metrics.jsonl``,
``last.pt`` and, when validation improves, ``best.pt``) -> :func:`finish` (``summary.json``).

Resuming: everything random in an epoch is seeded from (seed, epoch) and the schedules are pure
functions of the epoch, so a run restarted from ``last.pt`` ends with the same metrics as an
uninterrupted one (on CPU).
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import platform
import subprocess
import sys
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn

from .allocator import allocator_setting
from .checkpoint import load_checkpoint, save_checkpoint
from .config import (ExperimentConfig, config_differences, config_from_dict, config_to_dict, load_config,
                     result_config, to_toml)
from .data import open_dataset
from .data.augment import batch_augmenter
from .data.batches import iterate_batches
from neuromorphic_export._folder import read_only_problem
from neuromorphic_export._io import atomic_write_text, dumps_standard, remove_stale_parts, standard_json, track
from neuromorphic_export.checkpoint_reader import RUN_FILE

from . import distributed, quantize
from .errors import TrainingDiverged, UserError
from .split_measure import SplitMeasure, measure_batches
from .model import DelaySNN, resolve_variant
from .synapse import DelaySynapse
from .workers import FolderLock
from .tensorboard_log import TensorBoardLog, open_log, require_tensorboard

__all__ = [
    "train",
    "one_cycle_lr",
    "cosine_lr",
    "sigma_at_epoch",
    "iterate_batches",
    "measure_split",
    "resolve_device",
    "run_info",
    "TrainingInterrupted",
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
def measure_split(model: DelaySNN, dataset, batch_size: int = 256, device="cpu", show_progress: bool = False,
                  desc: str = "evaluating") -> SplitMeasure:
    """One pass of ``model`` in eval mode (rounded delays) over ``dataset``: accuracy, loss, confusion
    matrix and hidden-layer spike rates (see :class:`snn_delays.split_measure.SplitMeasure`). With
    ``show_progress``, a bar on a terminal or a line every 30 s in a log (:func:`snn_delays._progress.track`)."""
    n_batches = math.ceil(len(dataset) / batch_size)
    batches = track(iterate_batches(dataset, batch_size, device=device), n_batches, desc, enabled=show_progress)
    return measure_batches(model, batches, model.config.n_classes)


def resolve_device(name: str, option: str = "train.device") -> torch.device:
    """The torch device for ``name`` ("auto": CUDA when available, else the CPU). Errors name
    ``option``, the setting the user gave (``train.device``, or a command's ``--device``)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise UserError(f"{option} {name!r} is not a device; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"{option} is {name!r} but no CUDA device is available; use cpu (or auto)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"{option} is {name!r} but this machine has {torch.cuda.device_count()} CUDA "
                            f"device(s), numbered from 0")
    return device


# -- run information -----------------------------------------------------------------------------
def run_info() -> dict[str, Any]:
    """Versions, the project's git commit and the process's allocator setting (:mod:`.allocator`),
    recorded in every run folder."""
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
            "git_commit": commit, "allocator": allocator_setting()}


# -- the run folder: one writer, clear stops -----------------------------------------------------
class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`; the message says what the run folder holds now."""


_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
_LOCK_REFRESH_S = 60.0  # FolderLock breaks a lock not refreshed for an hour


def _kept_note(run: Path) -> str:
    """What a stopped run leaves for the next command (resume, or start over)."""
    if (run / "last.pt").exists():
        return f"the last good checkpoint {run / 'last.pt'} is kept; the same command resumes from it"
    return "there is no last good checkpoint yet (no epoch had finished); the same command starts over"


@contextmanager
def run_folder_guard(run: Path) -> Iterator[None]:
    """Hold ``run``'s :class:`~snn_delays.workers.FolderLock` (rank 0; refreshed every minute by a
    thread) while training, after removing the temporaries of killed writers; refuse a folder
    another live process trains into, naming it. Ctrl-C becomes :class:`TrainingInterrupted` and a
    full disk or an unwritable folder a :class:`UserError`, each saying what the folder keeps."""
    lock = None
    if int(os.environ.get("RANK", "0")) == 0:
        problem = read_only_problem(run)  # root may write anywhere; a read-only mode is refused all the same
        if problem:
            raise UserError(problem)
        try:
            run.mkdir(parents=True, exist_ok=True)
            lock = FolderLock(run)
            taken = lock.acquire()
        except OSError as e:
            raise UserError(f"cannot write to the run folder {run}: {e.strerror or e}; choose another --out") from None
        if not taken:
            raise UserError(f"{run} is being trained into by {lock.describe_holder()}; wait for it, or choose "
                            f"another --out (the lock {lock.path} of a process that has died is taken over)")
        remove_stale_parts(run)
    stop = threading.Event()

    def keep_fresh() -> None:
        while not stop.wait(_LOCK_REFRESH_S):
            lock.refresh()

    refresher = threading.Thread(target=keep_fresh, daemon=True, name="run-folder-lock") if lock is not None else None
    if refresher is not None:
        refresher.start()
    try:
        yield
    except KeyboardInterrupt:
        raise TrainingInterrupted(f"training interrupted; {_kept_note(run)}") from None
    except OSError as e:
        if e.errno not in _STORAGE_ERRNOS:
            raise
        raise UserError(f"training stopped: {e.filename or run}: {e.strerror}; {_kept_note(run)}") from None
    finally:
        stop.set()
        if refresher is not None:
            refresher.join()
        if lock is not None:
            lock.release()


def _guard_run_folder(train_fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Run ``train_fn(config, run_dir, ...)`` inside :func:`run_folder_guard` of ``run_dir``."""
    @functools.wraps(train_fn)
    def guarded(config: "ExperimentConfig | str", run_dir: "str | os.PathLike", *args: Any, **kwargs: Any):
        with run_folder_guard(Path(run_dir)):
            return train_fn(config, run_dir, *args, **kwargs)
    return guarded


def _resume_differences(old: ExperimentConfig, new: ExperimentConfig) -> list[str]:
    """'section.key: old -> new' for every key that differs, except the runtime-only ones
    (:data:`snn_delays.config.RUNTIME_ONLY_KEYS`, which a resume may change)."""
    def value(cfg: ExperimentConfig, key: str) -> Any:
        section, _, name = key.partition(".")
        return getattr(getattr(cfg, section), name) if name else getattr(cfg, section)
    return [f"{k}: {value(old, k)!r} -> {value(new, k)!r}"
            for k in config_differences(result_config(old), result_config(new))]


def _check_split_sizes(cfg: ExperimentConfig, splits: dict[str, Any]) -> None:
    """Refuse a split without samples (NaN accuracies, no best.pt), naming every split's size."""
    sizes = {name: len(ds) for name, ds in splits.items()}
    empty = [name for name, n in sizes.items() if n < 1]
    if empty:
        listed = ", ".join(f"{name} {n}" for name, n in sizes.items())
        raise UserError(f"dataset {cfg.data.dataset!r}: the {' and '.join(empty)} split{'s' * (len(empty) > 1)} "
                        f"{'have' if len(empty) > 1 else 'has'} no samples (samples per split: {listed}); "
                        f"every split needs at least one")


def _non_finite_state(model: nn.Module) -> list[str]:
    """Names of the model's floating-point parameters and buffers holding NaN or infinity
    (one fused check; the names are looked up only when it fails)."""
    tensors = {k: v for k, v in model.state_dict().items() if v.is_floating_point()}
    if torch.cat([v.reshape(-1) for v in tensors.values()]).isfinite().all():
        return []
    return [k for k, v in tensors.items() if not bool(v.isfinite().all())]


def _divergence(r: "_Run", epoch: int, step: int, loss: Tensor, named_params: list[tuple[str, Tensor]],
                x: Tensor) -> TrainingDiverged:
    """The error for a step whose loss or gradients are not finite, naming what is."""
    where = f"epoch {epoch + 1}, step {step + 1}"
    if not bool(torch.isfinite(loss)):
        what = f"the loss became {float(loss.detach())}"
    else:
        bad = [n for n, p in named_params if p.grad is not None and not bool(p.grad.isfinite().all())]
        what = f"the gradient of {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''} is not finite"
    hint = ("the input batch itself holds NaN or infinity: check the dataset (or its cache)"
            if not bool(x.isfinite().all()) else "try a lower train.lr_weights or train.lr_delays")
    return TrainingDiverged(f"{what} at {where}; training stopped; {_kept_note(r.folder)}; {hint}")


# -- the loop ------------------------------------------------------------------------------------
def _param_groups(model: DelaySNN, cfg: ExperimentConfig) -> list[dict[str, Any]]:
    """Adam's groups: weights (with weight decay), BatchNorm, the neurons' own parameters (adLIF's
    decays, a and b: the weights' learning rate, no weight decay, which would pull the decays and
    the adaptation towards 0; clamped into their ranges after each step) and delays."""
    weights, norms, neurons, delays = [], [], [], []
    neuron_params = {id(p) for blk in model.hidden for p in blk.lif.parameters()}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if name.endswith(".delay") or name.endswith(".sigma_delta"):  # learned widths: the delays' group
            delays.append(p)
        elif ".norm." in name:
            norms.append(p)
        elif id(p) in neuron_params:
            neurons.append(p)
        else:
            weights.append(p)
    groups = [
        {"params": weights, "name": "weights", "weight_decay": cfg.train.weight_decay},
        {"params": norms, "name": "norm", "weight_decay": 0.0},
        {"params": neurons, "name": "neurons", "weight_decay": 0.0},
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
            if syn.learn_sigma:  # learned kernel widths (steps); the shared schedule does not apply
                s = syn.width().detach()[syn.mask.bool()]
                out.update({f"width_mean_{k}": float(s.mean()), f"width_min_{k}": float(s.min()),
                            f"width_max_{k}": float(s.max())})
    for k, blk in enumerate(model.hidden):
        rec = blk.recurrent
        if rec is not None and rec.kernel_size > 1:  # real delays d in [1, Dr] steps
            d = rec.real_delay().detach()[rec.mask.bool()]
            out[f"recurrent_delay_mean_{k}"] = float(d.mean())
            out[f"recurrent_delay_std_{k}"] = float(d.std()) if d.numel() > 1 else 0.0
            out[f"recurrent_delay_at_limits_{k}"] = float(((d < 1.5) | (d > rec.kernel_size - 0.5)).float().mean())
    return out


def _kernel_snapshot(model: DelaySNN, n_neurons: int) -> list[dict[str, Tensor]]:
    """Weights and delays of the first ``n_neurons`` neurons of every synapse layer (for plots)."""
    snap = []
    for syn in model.synapses():
        if isinstance(syn, DelaySynapse):
            snap.append({"weight": syn.masked_weight()[:n_neurons].detach().cpu().clone(),
                         "delay": syn.delay[:n_neurons].detach().cpu().clone()})
            if syn.learn_sigma:  # per-element widths (steps), for the kernel figure
                snap[-1]["width"] = syn.width()[:n_neurons].detach().cpu().clone()
    return snap


def _open_splits(cfg: ExperimentConfig):
    opts = cfg.data.dataset_options()
    root = cfg.data.root or None
    return {split: open_dataset(cfg.data.dataset, root, split, **opts) for split in ("train", "valid", "test")}


def _fill_sizes(cfg: ExperimentConfig, ds) -> ExperimentConfig:
    m = cfg.model
    for key, have in (("input_size", ds.n_channels), ("n_classes", ds.n_classes)):
        want = getattr(m, key)
        if want == 0:
            m = replace(m, **{key: int(have)})
        elif want != have:
            raise UserError(f"model.{key} is {want} but dataset {cfg.data.dataset!r} has {have}; "
                            f"set --set model.{key}={have} (or 0 to take it from the data)")
    frame = getattr(ds, "frame_shape", None)  # event data (C, H, W): what model.conv layers take
    if m.conv and not m.input_frame and frame is not None:
        m = replace(m, input_frame="x".join(str(int(v)) for v in frame))
    return replace(cfg, model=m)


@dataclass
class _Run:
    """What the steps of :func:`train` share: the resolved config, the data, the model and optimiser,
    and the record so far (``metrics`` rows, kernel ``snapshots``, the ``best`` epoch)."""

    cfg: ExperimentConfig
    folder: Path
    dist: distributed.DistContext
    device: torch.device
    splits: dict[str, Any]
    open_time: float
    model: DelaySNN
    net: nn.Module  # what the training step calls: the model, or its DDP wrapper
    optimizer: torch.optim.Optimizer
    metrics: list[dict[str, Any]] = field(default_factory=list)
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=lambda: {"valid_acc": -1.0, "epoch": -1, "test_acc": float("nan")})
    start_epoch: int = 0
    info: dict[str, Any] = field(default_factory=dict)
    run_id: str = ""  # the run folder's identity (run.json), stored in every checkpoint

    @property
    def last_path(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"


@_guard_run_folder
def train(config: "ExperimentConfig | str", run_dir: "str | os.PathLike", resume: bool = True,
          max_epochs: int | None = None,
          on_epoch_end: "Callable[[dict[str, Any]], None] | None" = None) -> dict[str, Any]:
    """Train ``config`` into ``run_dir`` (resuming from ``last.pt`` when present and ``resume``).
    ``max_epochs`` stops after that many epochs in this call (for tests of interruption).
    ``on_epoch_end(row)`` is called with each epoch's metrics after its checkpoint is written; an
    exception it raises stops training (used for pruning) and propagates.
    Under ``torchrun`` (``WORLD_SIZE`` > 1) this is data-parallel; see :mod:`snn_delays.distributed`.
    The run folder is locked meanwhile (:func:`run_folder_guard`): a second ``train`` into it is
    refused. A non-finite loss, gradient, parameter or buffer stops training
    (:class:`TrainingDiverged`) with the last good ``last.pt`` kept.
    Returns the summary written to ``summary.json``."""
    r = start_or_resume(config, run_dir, resume)
    total = r.cfg.train.epochs
    stop = total if max_epochs is None else min(total, r.start_epoch + max_epochs)
    with open_log(r.folder, r.start_epoch, r.metrics, enabled=r.cfg.train.tensorboard and r.dist.is_main) as tb:
        for epoch in range(r.start_epoch, stop):
            t0 = time.perf_counter()
            quantize.constraints_for_epoch(r.model, r.cfg.train, epoch)  # train.target (no-op without)
            stats = train_one_epoch(r, epoch)
            evaluation = evaluate_splits(r, epoch)
            row = write_epoch(r, epoch, stats, evaluation, t0, tb)
            if on_epoch_end is not None:
                on_epoch_end(row)
    return finish(r)


def start_or_resume(config: "ExperimentConfig | str", run_dir: "str | os.PathLike", resume: bool) -> _Run:
    """Step 1 of :func:`train`: resolve the config against the data, join the DDP group (if any),
    build the model and optimiser, and either load ``last.pt`` (``resume``; a different config is
    refused) or clear a previous run's files; writes ``config.toml``."""
    cfg = load_config(config) if not isinstance(config, ExperimentConfig) else config.validate()
    if cfg.train.tensorboard:
        require_tensorboard()  # before any work: one line naming the pip install
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    if cfg.train.threads > 0:
        torch.set_num_threads(cfg.train.threads)
    dist = distributed.setup(resolve_device(cfg.train.device))
    device = dist.device(resolve_device(cfg.train.device))
    t_open = time.perf_counter()
    splits = _open_splits(cfg)
    _check_split_sizes(cfg, splits)
    cfg = _fill_sizes(cfg, splits["train"])
    cfg = replace(cfg, model=resolve_variant(cfg.model))  # concrete sizes, stored in checkpoints
    open_time = time.perf_counter() - t_open

    resumed = None
    if resume and (run / "last.pt").exists():
        try:
            resumed = load_checkpoint(run / "last.pt")
        except UserError as e:  # damaged, or from a run that went bad before these checks existed
            raise UserError(f"cannot resume: {e}; use --restart to start over or choose another --out") from None
        differences = _resume_differences(config_from_dict(resumed["config"]), cfg)
        if differences:
            raise UserError(f"{run} holds a run with a different configuration ({'; '.join(differences)}); "
                            f"use --restart to overwrite it or choose another --out")
    elif (run / "metrics.jsonl").exists() and not resume and dist.is_main:
        for f in ("metrics.jsonl", "best.pt", "last.pt", "summary.json"):
            (run / f).unlink(missing_ok=True)
    run_id = (resumed or {}).get("run_id") or uuid.uuid4().hex  # a resumed run keeps its id
    if dist.is_main:
        atomic_write_text(run / "config.toml", to_toml(cfg))
        atomic_write_text(run / RUN_FILE, dumps_standard({"run_id": run_id}) + "\n")

    model = DelaySNN(cfg.model, seed=cfg.train.seed, sigma_init=cfg.sigma_init(),
                     target=cfg.train.target or None).to(device)  # train.target: the chip's model
    if dist.enabled:
        distributed.convert_for_ddp(model)
    net = dist.wrap(model, device)
    optimizer = torch.optim.Adam(_param_groups(model, cfg), lr=cfg.train.lr_weights)
    r = _Run(cfg, run, dist, device, splits, open_time, model, net, optimizer, run_id=run_id)
    if resumed is not None:
        model.load_state_dict(resumed["model"])
        optimizer.load_state_dict(resumed["optimizer"])
        r.metrics, r.snapshots, r.best = resumed["metrics"], resumed.get("kernel_history", []), resumed["best"]
        r.start_epoch = int(resumed["epoch"])
        if dist.is_main:
            left = cfg.train.epochs - r.start_epoch
            _say(f"resuming {run} from its last.pt: {r.start_epoch} of {cfg.train.epochs} epochs done, "
                 f"{max(left, 0)} to go (--restart starts over)")
        if dist.is_main:
            with open(run / "metrics.jsonl", "w") as f:  # drop lines written after the checkpoint
                f.writelines(dumps_standard(m) + "\n" for m in r.metrics)
    else:
        if cfg.train.init_from:  # finetune: start from a finished run's weights
            quantize.init_from(model, cfg.train.init_from)
        if dist.is_main:
            (run / "metrics.jsonl").write_text("")
        r.snapshots.append({"epoch": 0, "sigma": cfg.sigma_init(),
                            "layers": _kernel_snapshot(model, cfg.train.kernel_snapshot_neurons)})
    r.info = {**run_info(), "input_steps": int(r.splits["train"].n_steps)}  # what load_model checks inputs against
    if dist.is_main and device.type == "cpu":
        why = "train.threads" if cfg.train.threads > 0 else "train.threads = 0: torch's default, one per core"
        _say(f"training on the CPU with {torch.get_num_threads()} threads ({why})")
    return r


def train_one_epoch(r: _Run, epoch: int) -> dict[str, float]:
    """Step 2: set this epoch's sigma and learning rates (pure functions of ``epoch``), seed its
    dropout masks and shuffle from (seed, epoch), and optimise on the training split (delays
    clamped after every step). Returns the epoch's training statistics (summed over DDP ranks)."""
    cfg, model, net, dist, optimizer = r.cfg, r.model, r.net, r.dist, r.optimizer
    t0 = time.perf_counter()
    total = cfg.train.epochs
    sigma = cfg.train.sigma_final if cfg.model.constant_sigma else sigma_at_epoch(
        epoch, total, cfg.sigma_init(), cfg.train.sigma_final, cfg.train.sigma_decay_fraction)
    model.sigma = sigma
    lr_w = one_cycle_lr(epoch, total, cfg.train.lr_weights, cfg.train.one_cycle_pct_start)
    lr_d = cosine_lr(epoch, total, cfg.train.lr_delays)
    for g in optimizer.param_groups:
        g["lr"] = lr_d if g["name"] == "delays" else lr_w
    torch.manual_seed(cfg.train.seed * 100_003 + epoch)  # dropout masks of this epoch
    model.train()
    loss_sum, correct, seen, data_time = 0.0, 0, 0, 0.0
    batches = iterate_batches(r.splits["train"], cfg.data.batch_size, shuffle=True,
                              seed=cfg.train.seed * 100_003 + epoch, device=r.device,
                              num_workers=cfg.data.num_workers)
    n_batches = math.ceil(len(r.splits["train"]) / cfg.data.batch_size)
    pbar = track(batches, n_batches, f"epoch {epoch + 1}/{total}", enabled=cfg.train.progress and dist.is_main)
    it = iter(pbar)
    step = 0
    named_params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    augment = batch_augmenter(cfg.data, seed=cfg.train.seed * 100_003 + epoch)  # None: data.aug_* all 0
    while True:
        td = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            break
        if augment is not None:
            x = augment(x)
        data_time += time.perf_counter() - td
        if dist.enabled:  # this rank's shard; loss scaled so DDP's gradient mean is the batch mean
            x, y, offset, n_global = dist.shard(x, y)
            distributed.set_dropout_rows(model, (offset, n_global))  # the global batch's dropout masks, this shard's rows
            scores = DelaySNN.scores(net(x))  # (b, K)
            ce_sum = nn.functional.cross_entropy(scores, y, reduction="sum")
            loss = ce_sum * (dist.world / n_global)
        else:
            scores = DelaySNN.scores(model(x))  # (B, K) summed softmax, used as logits
            loss = ce_sum = nn.functional.cross_entropy(scores, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # One host sync per step: whether the loss and every gradient are finite (one fused check),
        # the loss and the correct count, read together.
        grads = [p.grad.reshape(-1) for _, p in named_params if p.grad is not None]
        finite = torch.cat([loss.detach().reshape(1), *grads]).isfinite().all()
        batch_loss = (ce_sum if dist.enabled else loss).detach()
        ok, batch_loss_value, hits = torch.stack(
            [finite.to(batch_loss.dtype), batch_loss, (scores.argmax(-1) == y).sum().to(batch_loss.dtype)]).tolist()
        if not ok:
            raise _divergence(r, epoch, step, loss, named_params, x)
        optimizer.step()
        model.clamp_()
        loss_sum += batch_loss_value if dist.enabled else batch_loss_value * len(y)
        correct += int(hits)
        seen += len(y)
        step += 1
        if hasattr(pbar, "set_postfix"):
            pbar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}")
    if hasattr(pbar, "close"):
        pbar.close()
    bad = _non_finite_state(model)  # e.g. an Adam step that overflowed, or BatchNorm statistics of bad data
    if bad:
        raise TrainingDiverged(f"after epoch {epoch + 1} {', '.join(bad[:4])}{' ...' if len(bad) > 4 else ''} "
                               f"hold NaN or infinity; training stopped; {_kept_note(r.folder)}")
    train_time = time.perf_counter() - t0
    loss_sum, correct, seen = dist.sum([loss_sum, correct, seen])  # over ranks (no-op alone)
    return {"train_loss": loss_sum / max(int(seen), 1), "train_acc": int(correct) / max(int(seen), 1),
            "sigma": sigma, "lr_weights": lr_w, "lr_delays": lr_d, "train_time_s": train_time,
            "data_time_s": data_time}


def evaluate_splits(r: _Run, epoch: int) -> dict[str, Any]:
    """Step 3: with rounded delays, every ``train.eval_every`` epochs and after the last epoch:
    ``valid_acc``, ``valid_loss`` (mean cross-entropy), ``spike_rate`` (per hidden layer, the
    fraction of (step, neuron) entries that spike, measured on the validation split in the same
    pass) and ``test_acc``; all None on the epochs in between."""
    done = epoch + 1
    if done % r.cfg.train.eval_every and done != r.cfg.train.epochs:
        return {"valid_acc": None, "valid_loss": None, "spike_rate": None, "test_acc": None}
    show = r.cfg.train.progress and r.dist.is_main
    size = r.cfg.data.batch_size
    valid = measure_split(r.model, r.splits["valid"], size, r.device, show, f"epoch {done} valid")
    test = measure_split(r.model, r.splits["test"], size, r.device, show, f"epoch {done} test")
    return {"valid_acc": valid.accuracy, "valid_loss": valid.loss, "spike_rate": valid.spike_rate,
            "test_acc": test.accuracy}


def write_epoch(r: _Run, epoch: int, stats: dict[str, float], evaluation: dict[str, Any], t0: float,
                tensorboard: TensorBoardLog | None = None) -> dict[str, Any]:
    """Step 4: record the epoch (its ``metrics.jsonl`` row, a kernel snapshot, the TensorBoard step
    when ``tensorboard``), write ``last.pt`` and, when validation improved on an evaluated epoch,
    ``best.pt``. ``evaluation`` is what :func:`evaluate_splits` returned. Returns the row."""
    cfg, model = r.cfg, r.model
    valid_acc, test_acc = evaluation["valid_acc"], evaluation["test_acc"]
    row = {
        "epoch": epoch + 1,
        "train_loss": stats["train_loss"],
        "valid_loss": evaluation["valid_loss"],
        "train_acc": stats["train_acc"],
        "valid_acc": valid_acc,
        "test_acc": test_acc,
        "spike_rate": evaluation["spike_rate"],
        "sigma": stats["sigma"],
        "lr_weights": stats["lr_weights"],
        "lr_delays": stats["lr_delays"],
        **_delay_stats(model),
        "epoch_time_s": time.perf_counter() - t0,
        "train_time_s": stats["train_time_s"],
        "data_time_s": stats["data_time_s"],
    }
    r.metrics.append(row)
    r.snapshots.append({"epoch": epoch + 1, "sigma": stats["sigma"],
                        "layers": _kernel_snapshot(model, cfg.train.kernel_snapshot_neurons)})
    improved = valid_acc is not None and valid_acc > r.best["valid_acc"]
    if improved:
        r.best = {"valid_acc": valid_acc, "epoch": epoch + 1, "test_acc": test_acc}
    state = {"config": config_to_dict(cfg), "model": model.state_dict(), "epoch": epoch + 1,
             "sigma": stats["sigma"], "metrics": r.metrics, "best": r.best, "kernel_history": r.snapshots,
             "run_info": r.info, "run_id": r.run_id}
    if r.dist.is_main:
        if tensorboard is not None:  # before last.pt: a resume from the previous epoch purges this step
            tensorboard.write_epoch(row, model)
        if improved:
            save_checkpoint(r.best_path, state)
        save_checkpoint(r.last_path, {**state, "optimizer": r.optimizer.state_dict()})
        with open(r.folder / "metrics.jsonl", "a") as f:
            f.write(dumps_standard(row) + "\n")
        num = lambda v, digits=3: "-" if v is None else f"{v:.{digits}f}"
        rates = "-" if row["spike_rate"] is None else "/".join(f"{v:.3f}" for v in row["spike_rate"])
        _say(f"epoch {epoch + 1}/{cfg.train.epochs}  loss {row['train_loss']:.4f}  valid loss "
             f"{num(row['valid_loss'], 4)}  train {row['train_acc']:.3f}  valid {num(valid_acc)}  "
             f"test {num(test_acc)}  spike rate {rates}  {_width_text(row, stats['sigma'])}  {row['epoch_time_s']:.1f}s")
    return row


def _width_text(row: dict[str, Any], sigma: float) -> str:
    """The console's kernel width: the scheduled sigma, or the learned widths' mean per layer."""
    learned = [row[k] for k in sorted(row) if k.startswith("width_mean_")]
    return f"width {'/'.join(f'{v:.2f}' for v in learned)}" if learned else f"sigma {sigma:.2f}"


def finish(r: _Run) -> dict[str, Any]:
    """Step 5: write ``summary.json`` (the test accuracy at the best validation epoch, versions,
    the config), leave the DDP group; returns the summary."""
    cfg = r.cfg
    tests = [m["test_acc"] for m in r.metrics if m["test_acc"] is not None]  # evaluated epochs
    summary = {
        "name": cfg.name,
        "dataset": cfg.data.dataset,
        "variant": cfg.model.variant,
        "seed": cfg.train.seed,
        "epochs_done": len(r.metrics),
        "epochs": cfg.train.epochs,
        "best_epoch": r.best["epoch"],
        "best_valid_acc": r.best["valid_acc"],
        "test_acc": r.best["test_acc"],
        "final_test_acc": tests[-1] if tests else None,
        "max_test_acc": max(tests, default=None),
        "trainable_parameters": r.model.trainable_count(),
        "protocol": cfg.data.protocol,
        "protocol_note": getattr(r.splits["valid"], "protocol_note", ""),
        "dataset_open_s": r.open_time,
        "device": str(r.device),
        "world_size": r.dist.world,
        **r.info,
        "config": config_to_dict(cfg),
    }
    replaced: list[str] = []
    summary = standard_json(summary, replaced=replaced)  # strict JSON: NaN/inf become null, listed
    if replaced:
        summary["null_because_not_finite"] = replaced
    if r.dist.is_main:
        atomic_write_text(r.folder / "summary.json", json.dumps(summary, indent=2, allow_nan=False))
    r.dist.close()
    return summary


def _say(msg: str) -> None:
    try:
        from tqdm import tqdm

        tqdm.write(msg)
    except ImportError:
        print(msg, flush=True)
