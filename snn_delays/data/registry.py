"""The dataset registry: ``@register(name)`` for one opener per source, ``open_dataset`` to look one up.

The bottom of the data package: it imports no source module (``snn_delays.data`` imports them, and
each registers its opener when imported). An opener receives only the options its signature names,
so one data config can serve every source.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch.utils.data import Dataset

from ..errors import UserError

__all__ = ["open_dataset", "opener_options", "register", "available_datasets", "DatasetError", "SPLITS"]

SPLITS = ("train", "valid", "test", "all")

_OPENERS: dict[str, Callable[..., Dataset]] = {}


class DatasetError(UserError):
    """A dataset cannot be opened (missing/corrupt file, bad option); the message says how to fix it."""


def register(name: str):
    """Decorator: ``@register("shd") def open_shd(root, split, dt_ms=10.0, ...)``."""

    def deco(fn: Callable[..., Dataset]) -> Callable[..., Dataset]:
        _OPENERS[name] = fn
        return fn

    return deco


def available_datasets() -> list[str]:
    """The names of every registered source, sorted."""
    return sorted(_OPENERS)


def opener_options(name: str) -> set[str]:
    """The options the opener of dataset ``name`` takes (empty for an unknown name)."""
    fn = _OPENERS.get(name)
    return set(inspect.signature(fn).parameters) - {"root", "split"} if fn is not None else set()


def open_dataset(name: str, root: str | None = None, split: str = "train", **options: Any) -> Dataset:
    """Open split ``split`` of dataset ``name`` stored under ``root`` (None: the default folder).

    The returned Dataset has attributes ``n_channels``, ``n_classes`` and ``n_steps`` (the common
    padded length T) and yields ``(x, y)`` with x float32 (T, C).
    Options a source does not use are ignored.
    """
    if name not in _OPENERS:
        raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(sorted(_OPENERS))}")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    fn = _OPENERS[name]
    params = inspect.signature(fn).parameters
    accepted = {k: v for k, v in options.items() if k in params}
    return fn(root=root or None, split=split, **accepted)
