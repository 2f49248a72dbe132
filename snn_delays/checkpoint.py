"""Checkpoints of a run folder: atomic save, checked loading, clear errors. Format in docs/internals.md."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ._atomic import atomic_write
from .errors import UserError

__all__ = ["save_checkpoint", "load_checkpoint", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

CHECKPOINT_FORMAT = "snn-delays-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: "str | os.PathLike", state: dict[str, Any]) -> None:
    """Write ``state`` (plus format tags) to ``path`` atomically: a crash leaves the old file intact."""
    payload = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION, **state}
    atomic_write(path, lambda f: torch.save(payload, f))


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
    """Load ``best.pt``/``last.pt`` of a run folder (or a .pt path); checks the format tag."""
    f = resolve_checkpoint_path(run_dir, which)
    try:
        ckpt = torch.load(f, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated, corrupt, or not a torch file
        raise UserError(f"{f} is not a readable checkpoint ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{f} is not an snn-delays checkpoint (missing format tag {CHECKPOINT_FORMAT!r})")
    if ckpt.get("format_version", 0) > CHECKPOINT_VERSION:
        raise UserError(f"{f} has format_version {ckpt['format_version']}; this snn-delays reads up to "
                        f"{CHECKPOINT_VERSION}: upgrade the package")
    return ckpt
