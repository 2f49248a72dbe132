"""Atomic file writes: write to a temporary file beside the target, then ``os.replace`` it.

A crash or an exception leaves either the old file or none, never a partial one. The temporary
file is named ``.<target name>.<host tag>-<pid>.<random>.part``, so that a later run can tell the
leftovers of a killed writer (:func:`remove_stale_parts`). JSON meant for other programs goes
through :func:`standard_json`: NaN and infinities become ``null`` (strict JSON has neither).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text", "remove_stale_parts",
           "standard_json", "dumps_standard"]

_PART = re.compile(r"^\..+\.(?P<host>[0-9a-f]{6})-(?P<pid>\d+)\.[^.]+\.part$")


def _host_tag() -> str:
    """Six hex digits naming this machine in temporary file names (pids are per machine)."""
    return hashlib.sha1(socket.gethostname().encode()).hexdigest()[:6]


@contextmanager
def atomic_path(path: "str | os.PathLike") -> Iterator[str]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path`` (mode 0644)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{_host_tag()}-{os.getpid()}.", suffix=".part", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; these are ordinary data files
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def remove_stale_parts(folder: "str | os.PathLike", max_age_s: float = 86400.0) -> list[Path]:
    """Delete the temporary files (``.*.part``) that killed writers left in ``folder`` (not its
    subfolders): those of a process of this machine that is gone, and any not modified for
    ``max_age_s`` seconds (another machine's, or named before writers were named). Returns them."""
    from .workers import pid_alive

    removed = []
    here = _host_tag()
    for p in Path(folder).glob(".*.part"):
        m = _PART.match(p.name)
        try:
            dead = m is not None and m["host"] == here and not pid_alive(int(m["pid"]))
            if dead or time.time() - p.stat().st_mtime > max_age_s:
                p.unlink()
                removed.append(p)
        except FileNotFoundError:
            pass  # its writer finished meanwhile
    return removed


def atomic_write(path: "str | os.PathLike", write: Callable[[Any], None], mode: str = "wb") -> None:
    """Call ``write(f)`` on a temporary file opened with ``mode``, fsync it, move it to ``path``."""
    with atomic_path(path) as tmp:
        with open(tmp, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_bytes(path: "str | os.PathLike", data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: "str | os.PathLike", text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode())


def standard_json(value: Any, where: str = "", replaced: "list[str] | None" = None) -> Any:
    """``value`` (nested dicts, lists, tuples, numbers) with every NaN/infinite float replaced by
    ``None``; the dotted keys of the replaced ones are appended to ``replaced`` when given."""
    if isinstance(value, float) and not math.isfinite(value):
        if replaced is not None:
            replaced.append(f"{where} ({value})")
        return None
    if isinstance(value, dict):
        return {k: standard_json(v, f"{where}.{k}" if where else str(k), replaced) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [standard_json(v, f"{where}[{i}]", replaced) for i, v in enumerate(value)]
    return value


def dumps_standard(value: Any, **kwargs: Any) -> str:
    """``json.dumps`` that always writes standard JSON: non-finite floats become ``null``."""
    return json.dumps(standard_json(value), allow_nan=False, **kwargs)
