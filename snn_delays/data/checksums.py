"""File checksums: the one hashing helper shared by the binned-data cache and the downloader.

A leaf: imports nothing from the project.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["file_digest"]


def file_digest(path: str | os.PathLike, algo: str = "md5", chunk: int = 1 << 22) -> str:
    """Hex digest of a file's bytes (``algo`` any name ``hashlib.new`` knows; read in ``chunk``-byte blocks)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
