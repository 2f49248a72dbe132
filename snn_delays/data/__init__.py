"""The datasets: one entry point, ``open_dataset(name, root, split, **options)``, over one module per source.

A dataset is a torch Dataset of ``(x, y)``: x a float32 tensor (T, C) of spike counts or features
per time step (batch-less, time-major), y an int class index. The event-camera sources yield x
(T, 2, H, W) instead (polarity, rows, columns; ``.frame_shape`` (2, H, W), ``.n_channels`` = 2 H W).

The registry lives in :mod:`.registry`; each source lives in its own module (``synthetic``,
``heidelberg`` for SHD/SSC, ``gsc``, ``fsdd``; event cameras: ``event_motion``,
``dvs_gesture``, ``nmnist``, sharing ``events``) and registers its opener there when imported, which
this package does below. Imports go one way: sources -> shared parts (``spikefile`` the HDF5 spike
format, ``cache``, ``download``, ``audio``, ``arrays``, ``checksums``) -> ``registry`` -> ``snn_delays.errors``.
"""

from __future__ import annotations

from .registry import SPLITS, DatasetError, available_datasets, open_dataset, register

from . import dvs_gesture, event_motion, fsdd, gsc, heidelberg, nmnist, synthetic  # noqa: F401  (imported to register their openers)

__all__ = ["open_dataset", "register", "available_datasets", "DatasetError", "SPLITS"]
