"""Datasets as torch Datasets of ``(x, y)``: x a float32 tensor (T, C) of spike counts or
features per time step (batch-less, time-major), y an int class index.

``open_dataset(name, root, split, **options)`` is the one entry point. Each source lives in its
own module and registers an opener with :func:`register`; an opener receives only the options
its signature names, so one data config can serve every source.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from torch.utils.data import Dataset

from ..errors import UserError

__all__ = ["open_dataset", "register", "available_datasets", "DatasetError", "SPLITS"]

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


def _load_builtin_sources() -> None:
    # Import for the side effect of registering; each module is one data source.
    from . import synthetic  # noqa: F401
    import importlib

    for mod in ("heidelberg", "gsc", "fsdd"):
        try:
            importlib.import_module(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{mod}":
                raise


def available_datasets() -> list[str]:
    _load_builtin_sources()
    return sorted(_OPENERS)


def open_dataset(name: str, root: str | None = None, split: str = "train", **options: Any) -> Dataset:
    """Open split ``split`` of dataset ``name`` stored under ``root`` (None: the default folder).

    The returned Dataset has attributes ``n_channels``, ``n_classes`` and ``n_steps`` (the common
    padded length T) and yields ``(x, y)`` with x float32 (T, C).
    Options a source does not use are ignored.
    """
    _load_builtin_sources()
    if name not in _OPENERS:
        raise DatasetError(f"unknown dataset {name!r}; available: {', '.join(sorted(_OPENERS))}")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    fn = _OPENERS[name]
    params = inspect.signature(fn).parameters
    accepted = {k: v for k, v in options.items() if k in params}
    return fn(root=root or None, split=split, **accepted)
