"""numba for the compiled loops: whether it is there, ``njit``/``prange`` (plain Python stand-ins
when it is not, so the loop modules import either way), and the thread count of the loops.

``AVAILABLE`` is False when numba cannot be imported or ``SNN_DELAYS_COMPILED=0`` is set (the
loops are then never called; :mod:`snn_delays.backends.compiled` holds the switch callers check).
numba caches each compiled loop next to its module (``cache=True``); a helper inlined from another
module (:mod:`.neuron`) is not part of that cache's key, so after editing one, delete the
``__pycache__/*.nbi`` / ``*.nbc`` files of this folder.
"""

from __future__ import annotations

import os

import numpy as np

ENV_SWITCH = "SNN_DELAYS_COMPILED"  # "0": never import numba, run the PyTorch twins


def _disabled() -> bool:
    return os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "false", "no", "off")


try:  # pragma: no cover - exercised implicitly
    if _disabled():
        raise ImportError(f"disabled by {ENV_SWITCH}=0")
    import numba
    from numba import njit, prange

    AVAILABLE = True
except ImportError:  # pragma: no cover
    numba = None
    AVAILABLE = False
    prange = range

    def njit(*args, **kwargs):
        """Stand-in decorator: the function stays plain Python (never called by the library)."""
        return lambda f: f

__all__ = ["AVAILABLE", "ENV_SWITCH", "njit", "prange", "set_threads", "n_threads", "balanced_cuts"]


def set_threads(n: int) -> None:
    """Let the compiled loops use ``n`` threads (at most numba's pool size)."""
    if AVAILABLE:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))


def n_threads() -> int:
    """Threads the compiled loops use now (1 without numba)."""
    return numba.get_num_threads() if AVAILABLE else 1


@njit(cache=True, nogil=True)
def balanced_cuts(indptr, n_rows, n_split):  # pragma: no cover
    """Row boundaries (n_split + 1,) that give each of n_split threads a slice of the rows of a CSR
    structure (``indptr`` (n_rows + 1,)) holding about the same number of entries (taps)."""
    cut = np.searchsorted(indptr, (np.arange(n_split + 1) * indptr[n_rows]) // n_split)
    cut[0] = 0
    cut[n_split] = n_rows
    return cut
