"""Files and processes, shared by both packages (training imports it; the exporter never imports
training code): atomic file writes, whether a process is alive, strict JSON and the progress of
long steps on stderr.

Atomic writes: write to a temporary file beside the target, then ``os.replace`` it, so a crash or
an exception leaves either the old file or none, never a partial one. The temporary file is named
``.<target name>.<host tag>-<pid>.<random>.part``, so that a later run can tell the leftovers of a
killed writer (:func:`remove_stale_parts`). JSON meant for other programs goes through
:func:`standard_json`: NaN and infinities become ``null`` (strict JSON has neither).

Progress (:class:`Progress`): on a terminal a tqdm bar; elsewhere (logs, pipes, batch jobs) one
plain line at each new phase and at most one every ``SNN_DELAYS_PROGRESS_INTERVAL`` seconds
(default 30), and a last line when the step ends if it printed any, e.g.::

    fsdd: encoding with the cochlea: 480/2500 files (19%), 5:12 elapsed, about 21:53 left
    verify: simulating target loihi1: 640/2000 sample runs (32%), 12 s elapsed, about 25 s left
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import socket
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TextIO

__all__ = ["pid_alive", "atomic_path", "atomic_write", "atomic_write_bytes", "atomic_write_text",
           "remove_stale_parts", "standard_json", "dumps_standard", "Progress", "format_duration", "track"]


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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


# -- progress of long steps -------------------------------------------------------------------------

DEFAULT_INTERVAL_S = 30.0


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss`` for a duration in seconds; under a minute ``N s`` (``under 1 s``)."""
    s = int(round(max(seconds, 0.0)))
    if seconds < 1:
        return "under 1 s"
    if s < 60:
        return f"{s} s"
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _interval_s() -> float:
    try:
        return max(float(os.environ.get("SNN_DELAYS_PROGRESS_INTERVAL", DEFAULT_INTERVAL_S)), 0.0)
    except ValueError:
        return DEFAULT_INTERVAL_S


class Progress:
    """Progress of one step of ``total`` units: ``update(n)`` as work finishes, ``close()`` at the end
    (or use it as a context manager); a step of several phases names each with :meth:`phase`.
    ``enabled=False`` prints nothing; ``interval_s`` (default ``$SNN_DELAYS_PROGRESS_INTERVAL`` or
    30): the least time between two lines off a terminal.

    The time left is the units left at the rate of the latest phase measured past its first update
    (which holds the phase's start-up: loading a model, compiling, starting workers), so a slow
    start does not inflate the estimate."""

    def __init__(self, total: int, desc: str, unit: str = "samples", enabled: bool = True,
                 stream: TextIO | None = None, interval_s: float | None = None, leave: bool = True):
        self.total = max(int(total), 0)
        self.desc, self.unit = desc, unit
        self.done, self.what = 0, ""
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.total > 0
        self.interval_s = _interval_s() if interval_s is None else max(float(interval_s), 0.0)
        self.started = time.monotonic()
        self.last_line = self.started
        self.lines = 0
        self._phased = False
        self._mark: tuple[float, int] | None = None  # (time, done) after the current phase's first update
        self._rate: float | None = None  # units per second of the last phase measured past its first update
        self.bar = None
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm  # a core dependency of snn_delays; the exporter alone may lack it
            except ModuleNotFoundError:
                pass
            else:
                self.bar = tqdm(total=self.total, desc=desc, unit=f" {unit}", file=self.stream, dynamic_ncols=True,
                                mininterval=0.5, leave=leave)

    def phase(self, what: str) -> None:
        """Start a new phase: shown after the description, and off a terminal a line at once."""
        self.what, self._phased, self._mark = what, True, None
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_description(f"{self.desc}: {what}")
        else:
            self._print(self.line())

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units as done."""
        self.done += int(n)
        now = time.monotonic()
        if self._mark is None:  # the first update of a phase holds its start-up: not timed
            self._mark = (now, self.done)
        elif now > self._mark[0]:
            self._rate = (self.done - self._mark[1]) / (now - self._mark[0])
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
        elif now - self.last_line >= self.interval_s and self.done < self.total:
            self._print(self.line())

    def line(self, final: bool = False) -> str:
        """The status line: what, how far, time taken and time left."""
        done = min(self.done, self.total)
        what = "done: " if final and self._phased else (f"{self.what}: " if self.what else "")
        text = f"{self.desc}: {what}{done}/{self.total} {self.unit} ({100 * done // max(self.total, 1)}%), " \
               f"{format_duration(time.monotonic() - self.started)} elapsed"
        if final and self._phased:
            return text
        if done >= self.total:
            return text + ", done"
        if self._rate:
            return text + f", about {format_duration((self.total - done) / self._rate)} left"
        return text + ", time left not known yet"

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)
        self.lines += 1
        self.last_line = time.monotonic()

    def close(self) -> None:
        """End the bar; off a terminal print the last line if any line was printed before."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.lines:
            self._print(self.line(final=True))
        self.enabled = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable, total: int, desc: str, unit: str = "batches", enabled: bool = True,
          interval_s: float | None = None, leave: bool = False) -> Iterator:
    """Yield ``items`` while a :class:`Progress` of ``total`` units counts them (a bar on a terminal,
    a line every ``interval_s`` seconds elsewhere)."""
    with Progress(total, desc, unit=unit, enabled=enabled, interval_s=interval_s, leave=leave) as bar:
        for item in items:
            yield item
            bar.update(1)
