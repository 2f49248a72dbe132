"""Whether the compiled loops run here: the one check every fast path makes, and the switch that
turns them off (the PyTorch twins then run on CPU too, as they do on CUDA).

- environment: ``SNN_DELAYS_COMPILED=0`` before the first import (numba is then not even imported);
- in code: ``with snn_delays.backends.use_compiled(False): ...`` (or ``use_compiled(False)`` as a
  plain call, which stays in force until changed).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .kernels import runtime

__all__ = ["AVAILABLE", "use_compiled", "compiled_enabled", "fast_available", "set_threads"]

AVAILABLE = runtime.AVAILABLE  # numba imported (and not switched off by the environment)
_enabled = [True]


def compiled_enabled() -> bool:
    """Whether the compiled loops are available and switched on."""
    return AVAILABLE and _enabled[0]


class use_compiled:  # noqa: N801 - used like a function
    """Switch the compiled loops on or off: as a context manager (restored on exit), or as a plain
    call ``use_compiled(False)``. Switching on has no effect where numba is not available."""

    def __init__(self, enabled: bool = True):
        self.previous = _enabled[0]
        _enabled[0] = bool(enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _enabled[0] = self.previous
        return False


def fast_available(x: Tensor) -> bool:
    """Whether the compiled loops can run on this tensor (switched on, CPU, float32/64)."""
    return compiled_enabled() and x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64)


def set_threads() -> None:
    """Give the compiled loops as many threads as PyTorch uses."""
    runtime.set_threads(torch.get_num_threads())
