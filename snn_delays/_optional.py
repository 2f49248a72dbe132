"""Import a package of one of the optional extras, or fail with one line naming the pip install.

The core install (torch, numpy, numba, h5py, tqdm) trains and exports; each extra serves a few
commands and is imported only where it is used, through :func:`require`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import UserError

__all__ = ["EXTRAS", "require"]

# top-level package -> the extra of pyproject.toml that installs it
EXTRAS = {"matplotlib": "plot", "optuna": "tune", "nir": "nir", "soundfile": "audio",
          "tensorboard": "tensorboard", "submitit": "slurm"}


def require(module: str, purpose: str) -> ModuleType:
    """``importlib.import_module(module)``; if its package is not installed, raise :class:`UserError`
    ("<purpose> needs <package>: pip install 'snn-delays[<extra>]'"). ``module`` may be a submodule
    (``"matplotlib.pyplot"``); its top-level package must be one of :data:`EXTRAS`."""
    top = module.partition(".")[0]
    extra = EXTRAS[top]
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if (e.name or "").partition(".")[0] != top:
            raise  # the package is there but one of its own imports is missing: not ours to explain
        raise UserError(f"{purpose} needs {top}, which is not installed: pip install 'snn-delays[{extra}]'") from None
