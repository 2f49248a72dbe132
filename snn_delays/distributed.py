"""Data-parallel training with PyTorch DDP, started by ``torchrun``.

    torchrun --nproc_per_node 2 -m snn_delays.cli train --dataset synthetic --out runs/ddp

``torchrun`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`setup` reads them and joins the process group (gloo on CPU, nccl on CUDA). Without them
(``WORLD_SIZE`` unset or 1) everything here is a no-op and training is the plain one-process loop.

What makes a DDP run give the same result as one process (up to floating-point order):

* every rank iterates over the SAME shuffled global batches (the shuffle is seeded from
  (seed, epoch)) and keeps its contiguous shard ``torch.tensor_split(batch, world)[rank]``;
* BatchNorm statistics are computed on the global batch: :class:`GlobalBatchNorm1d` all-reduces
  the sums with the differentiable ``torch.distributed.nn.functional.all_reduce`` (a BatchNorm
  with per-rank statistics would train a different model; ``nn.SyncBatchNorm`` does not run on
  CPU, this does, on every backend);
* time-shared dropout draws the mask of the whole global batch from the same seeded generator on
  every rank and keeps its shard's rows: :func:`set_dropout_rows` gives the model's dropout modules
  ``(offset, global_batch)`` before each step (:class:`snn_delays.model.TimeSharedDropout`), so
  masks are those of one process;
* each rank's loss is ``sum of its cross-entropies * world / global batch``; DDP averages the
  gradients over ranks, which gives the gradient of the global batch mean even when the shards
  have unequal sizes;
* only rank 0 writes files (config, metrics, checkpoints, summary); every rank evaluates the
  (identical) model on the whole validation and test sets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch
from torch import Tensor, nn

from .backends.norm_lif import update_running_stats
from .model import TimeSharedDropout

__all__ = ["DistContext", "setup", "GlobalBatchNorm1d", "convert_for_ddp", "set_dropout_rows"]


@dataclass
class DistContext:
    """Rank and world size of this process; ``world == 1`` means not distributed."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this process called init_process_group (and should destroy it)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """CUDA ranks use their local GPU; CPU stays CPU."""
        if self.enabled and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def shard(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, int, int]:
        """This rank's part of a global batch: x (T, B, C), y (B,) ->
        (x (T, b, C), y (b,), offset of the shard in the batch, global batch size B)."""
        n = y.shape[0]
        if not self.enabled:
            return x, y, 0, n
        bounds = [len(p) for p in torch.tensor_split(torch.arange(n), self.world)]
        lo = sum(bounds[: self.rank])
        hi = lo + bounds[self.rank]
        return x[:, lo:hi], y[lo:hi], lo, n

    def sum(self, values: Iterable[float]) -> list[float]:
        """Sum of python numbers over ranks (float64), identical on every rank."""
        values = list(values)
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=_collective_device())
        torch.distributed.all_reduce(t)
        return t.tolist()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module to call in training: ``DistributedDataParallel`` around ``model`` when distributed."""
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [device.index] if device.type == "cuda" else None
        # buffers (BatchNorm running stats) are identical on every rank by construction
        return DDP(model, device_ids=ids, broadcast_buffers=False)

    def close(self) -> None:
        if self.owns_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self.owns_group = False


def _collective_device() -> torch.device:
    backend = torch.distributed.get_backend()
    if backend == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def setup(device: torch.device | str = "cpu") -> DistContext:
    """Join the process group described by torchrun's environment variables (no-op without them).
    Backend: ``SNN_DELAYS_DIST_BACKEND`` if set, else nccl for CUDA and gloo for CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    import torch.distributed as dist

    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    owns = False
    if not dist.is_initialized():
        device = torch.device(device)
        backend = os.environ.get("SNN_DELAYS_DIST_BACKEND") or ("nccl" if device.type == "cuda" else "gloo")
        if backend == "nccl":
            torch.cuda.set_device(local)
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
        owns = True
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local, owns_group=owns)


class GlobalBatchNorm1d(nn.BatchNorm1d):
    """``BatchNorm1d`` whose training statistics are those of the global batch across all ranks.

    Input (N, C) or (N, C, L) (the model passes (T, C, B): statistics over time and batch). Same parameters, buffers and state
    dict as ``nn.BatchNorm1d``; in eval mode, or without a process group, it is ``BatchNorm1d``.
    Gradients flow through the all-reduce, so the backward pass is that of one big batch.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and torch.distributed.is_available() and torch.distributed.is_initialized()):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        if x.dim() not in (2, 3):
            raise ValueError(f"GlobalBatchNorm1d: expected (N, C) or (N, C, L), got {tuple(x.shape)}")
        dims = (0,) if x.dim() == 2 else (0, 2)
        shape = (-1,) if x.dim() == 2 else (-1, 1)  # broadcast per channel
        count = all_reduce(torch.tensor([float(x.numel() // x.shape[1])], device=x.device, dtype=x.dtype))
        mean = all_reduce(x.sum(dims)) / count  # (C,)
        var = all_reduce(((x - mean.view(shape)) ** 2).sum(dims)) / count  # biased, as BatchNorm normalises
        y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        update_running_stats(self, mean.detach(), var.detach(), float(count))
        return y

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm1d) -> "GlobalBatchNorm1d":
        new = cls(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                  track_running_stats=bn.track_running_stats)
        new.load_state_dict(bn.state_dict())
        return new.to(bn.weight.device if bn.affine else bn.running_mean.device)


def convert_for_ddp(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm1d by :class:`GlobalBatchNorm1d`, in place (state-dict keys
    unchanged). Returns ``model``."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm1d:
                setattr(parent, name, GlobalBatchNorm1d.from_batchnorm(child))
    return model


def set_dropout_rows(model: nn.Module, rows: tuple[int, int] | None) -> None:
    """The batches ``model`` sees next are rows ``offset .. offset + b`` of a global batch (``rows =
    (offset, global_batch)``, this rank's shard): every :class:`TimeSharedDropout` draws the global
    batch's masks and keeps those rows. None: each batch is the whole batch."""
    for m in model.modules():
        if isinstance(m, TimeSharedDropout):
            m.global_rows = rows
