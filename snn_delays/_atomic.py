"""Atomic file writes and strict JSON now live in :mod:`neuromorphic_export._io` (one copy for both
packages); this name stays only until the last importer (``snn_delays/checkpoint.py``) moves."""

from neuromorphic_export._io import (atomic_path, atomic_write, atomic_write_bytes, atomic_write_text,  # noqa: F401
                                     dumps_standard, remove_stale_parts, standard_json)
