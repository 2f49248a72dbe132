"""Running an export in a vendor's own software (Lava, PyNN on NEST): the shared result type and
the side environments those packages live in.

The vendors' packages cannot share the project's environment (Lava needs Python < 3.11 and a torch
of its own; NEST + PyNN pin their own numpy), so each runs in a side environment built by
``scripts/test-env-<name>.sh`` outside the clone, under ``$SNN_DELAYS_ENVS`` (default
``~/.cache/snn-delays/envs``), in a folder named after the versions it holds. A runner module
(``vendor_nest.py``, ``vendor_lava.py``) starts that environment's Python on a script of the package
and reads its results back as a :class:`VendorRun`.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ExportError

__all__ = ["VendorRun", "envs_root", "side_env_python", "run_in_side_env"]


@dataclass
class VendorRun:
    """What a vendor's simulator computed on B samples.

    predictions: (B,) the class per sample (the readout's decision);
    spikes: per hidden layer k, (T, B, H_k) spike counts on the model's time axis (step t holds the
        spikes the model emits at step t, i.e. already shifted back by the runtime's hop latency);
    readout: (T, B, n_classes) readout voltages where the software exposes them, else None;
    software: the packages and versions that ran it, e.g. "PyNN 0.13.0 + NEST 3.10.0";
    seconds: wall time of the vendor run (environment start included).
    """

    software: str
    predictions: np.ndarray
    spikes: list[np.ndarray]
    readout: np.ndarray | None = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


def envs_root() -> Path:
    """Folder that holds the side environments ($SNN_DELAYS_ENVS or ~/.cache/snn-delays/envs)."""
    return Path(os.environ.get("SNN_DELAYS_ENVS") or Path.home() / ".cache" / "snn-delays" / "envs")


def side_env_python(name: str, required: bool = True) -> Path | None:
    """The Python interpreter of side environment ``name`` (e.g. "nest-3.10.0-pynn-0.13.0").

    Raises ExportError naming the script that builds it when it is missing (None if not required).
    """
    python = envs_root() / name / "bin" / "python"
    if python.exists():
        return python
    if not required:
        return None
    raise ExportError(f"side environment {name} not found at {python.parent.parent}; "
                      f"build it with the project's scripts/test-env-*.sh (or set SNN_DELAYS_ENVS)")


def run_in_side_env(cmd: list[str], out: Path, what: str, timeout_s: float, cwd: "str | os.PathLike") -> None:
    """Run ``cmd`` (a side environment's Python and its arguments) in ``cwd`` without this process's
    PYTHON* variables (PYTHONPATH would mix the two environments); raise ExportError naming ``what``,
    the command and the end of its output unless it exits 0 and wrote ``out``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, cwd=cwd)
    if proc.returncode != 0 or not Path(out).exists():
        raise ExportError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n"
                          + (proc.stderr or proc.stdout)[-3000:])
