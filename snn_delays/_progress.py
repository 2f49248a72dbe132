"""Progress of long steps (training epochs, evaluation, cochlea encoding, feature and cache building) on stderr.

On a terminal: a tqdm bar (what, how far, rate, time left). Elsewhere (logs, pipes, batch jobs): one
plain line every ``SNN_DELAYS_PROGRESS_INTERVAL`` seconds (default 30), e.g.

    fsdd: encoding with the cochlea: 480/2500 files (19%), 5:12 elapsed, about 21:53 left

and a last line when the step ends, if it printed any. Steps shorter than the interval stay silent
off a terminal. When several processes share a step, the parent counts the finished work of all.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TextIO

__all__ = ["Progress", "format_duration", "track"]

DEFAULT_INTERVAL_S = 30.0


def format_duration(seconds: float) -> str:
    """``h:mm:ss`` or ``m:ss`` for a duration in seconds."""
    s = int(round(max(seconds, 0.0)))
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
    (or use it as a context manager). ``enabled=False`` prints nothing."""

    def __init__(self, total: int, desc: str, unit: str = "files", enabled: bool = True,
                 stream: TextIO | None = None, interval_s: float | None = None, leave: bool = True):
        self.total = int(total)
        self.desc = desc
        self.unit = unit
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled and self.total > 0
        self.started = time.monotonic()
        self.last_line = self.started
        self.lines = 0
        self.interval_s = _interval_s() if interval_s is None else max(float(interval_s), 0.0)
        self.bar = None
        if self.enabled and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, desc=desc, unit=f" {unit}", file=self.stream, dynamic_ncols=True,
                            mininterval=0.5, leave=leave)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more units as done."""
        self.done += int(n)
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.monotonic()
        if now - self.last_line >= self.interval_s and self.done < self.total:
            self.last_line = now
            self._line(now)

    def line(self) -> str:
        """The status line: what, how far, time taken and time left."""
        elapsed = time.monotonic() - self.started
        text = f"{self.desc}: {self.done}/{self.total} {self.unit} ({self.done / self.total:.0%}), " \
               f"{format_duration(elapsed)} elapsed"
        if 0 < self.done < self.total:
            text += f", about {format_duration(elapsed * (self.total - self.done) / self.done)} left"
        elif self.done >= self.total:
            text += ", done"
        return text

    def _line(self, now: float) -> None:
        print(self.line(), file=self.stream, flush=True)
        self.lines += 1

    def close(self) -> None:
        """End the bar; off a terminal print the last line if any line was printed before."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        elif self.enabled and self.lines:
            self._line(time.monotonic())
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
