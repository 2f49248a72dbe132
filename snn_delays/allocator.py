"""Keep freed memory in the process between training steps (glibc malloc), instead of handing it
back to the kernel and faulting fresh zeroed pages in on the next step.

glibc serves every allocation above its mmap threshold (at most 32 MB) with its own ``mmap`` and
unmaps it on free. A training step at SHD sizes makes a dozen (T, C, B) tensors of 36 MB (the
synapse outputs, the dropout products, their gradients), so every step page-faults ~0.4 GB in
again: 9,000 faults and the kernel's zeroing per tensor, ~10 % of a step at SHD sizes on 2 cores
(benchmarks/README.md, note 70). With mmap off and a high trim threshold, freed blocks go back
to malloc's free lists and the next step reuses them: what allocators such as jemalloc and
tcmalloc do by default, and what PyTorch's CPU performance guide recommends, set from inside the
process (glibc's ``MALLOC_*`` environment variables are read before Python starts).

Opt-in: the ``snn-delays`` commands call :func:`reuse_freed_memory` when they start if
``SNN_DELAYS_MALLOC=reuse`` is set (``bench`` also with ``--malloc reuse``, then for both stacks of
its same-process comparison); library users call it themselves. At SHD sizes it makes a training
step 12-15 % faster for a higher peak (blocks freed in the middle of the heap stay resident until a
request fits them: ~+60-100 MB); at 1 ms bins (T 1,372, 0.36 GB per (T, C, B) tensor) it made steps
slower and erratic (13.3-17.6 s against 11.2 s: benchmarks/README.md note 77), hence not the
default. ``SNN_DELAYS_MALLOC=system`` makes :func:`reuse_freed_memory` a no-op. No effect, and
``False``, on a C library other than glibc. Numerics are untouched (only where tensors live changes).
"""

from __future__ import annotations

import ctypes
import os
import platform

__all__ = ["reuse_freed_memory", "reusing_freed_memory", "requested", "allocator_setting", "ENV_VAR"]

ENV_VAR = "SNN_DELAYS_MALLOC"  # "reuse": the commands turn the setting on; "system": never

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
_M_MMAP_MAX = -4
_TRIM_BYTES = 1 << 30  # free memory at the top of the heap beyond 1 GiB still goes back to the OS

_state = {"setting": "system default", "on": False}


def reuse_freed_memory() -> bool:
    """Make glibc keep freed blocks for reuse (no per-allocation mmap; trim above 1 GiB of free top
    memory). Returns whether the setting is now on; a no-op (``False``) off glibc or when
    ``SNN_DELAYS_MALLOC=system``."""
    if os.environ.get(ENV_VAR, "").strip().lower() == "system":
        _state["setting"] = f"system default ({ENV_VAR}=system)"
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(_M_MMAP_MAX, 0) == 1 and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_BYTES) == 1
    except (OSError, AttributeError):  # pragma: no cover - glibc without mallopt
        return False
    if ok:
        _state["on"] = True
        _state["setting"] = "freed memory reused (glibc: mmap off, trim above 1 GiB)"
    return ok


def requested() -> bool:
    """Whether ``SNN_DELAYS_MALLOC=reuse`` asks the commands to turn the setting on."""
    return os.environ.get(ENV_VAR, "").strip().lower() == "reuse"


def reusing_freed_memory() -> bool:
    """Whether :func:`reuse_freed_memory` has turned the setting on in this process."""
    return _state["on"]


def allocator_setting() -> str:
    """One line: what :func:`reuse_freed_memory` did in this process (for benchmark records)."""
    return _state["setting"]
