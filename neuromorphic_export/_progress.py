"""Progress of a long step on stderr: what it does, how far it is, the time left.

On a terminal a tqdm bar (tqdm is a core dependency; without it, lines); otherwise (logs, pipes)
one line when the phase changes and at most one every ``interval_s`` seconds, e.g.::

    verify: simulating target loihi1: 640/2000 sample runs (32%), 12 s elapsed, about 25 s left
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


def _seconds(s: float) -> str:
    if s < 1:
        return "under 1 s"
    s = int(round(s))
    return f"{s // 60} min {s % 60:02d} s" if s >= 60 else f"{s} s"


class Progress:
    """Counts ``total`` units (e.g. samples x networks) over phases named with :meth:`phase`.

    The time left is the units left at the rate of the latest phase measured past its first update
    (which holds the phase's start-up: loading a model, compiling), so a slow start does not
    inflate the estimate."""

    def __init__(self, total: int, prefix: str, unit: str = "samples", stream: TextIO | None = None,
                 interval_s: float = 10.0):
        self.total, self.prefix, self.unit, self.interval_s = max(int(total), 1), prefix, unit, interval_s
        self.stream = stream if stream is not None else sys.stderr
        self.done, self.what = 0, ""
        self.start = time.monotonic()
        self._mark: tuple[float, int] | None = None  # (time, done) after the current phase's first update
        self._rate: float | None = None  # units per second of the last phase measured past its first update
        self._last_line = float("-inf")
        self._bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            try:
                from tqdm import tqdm
            except ModuleNotFoundError:
                pass
            else:
                self._bar = tqdm(total=self.total, unit=f" {unit}", file=self.stream, dynamic_ncols=True,
                                 mininterval=0.5, leave=False)

    def phase(self, what: str) -> None:
        """Start a new phase (shown as the description)."""
        self.what = what
        self._mark = None
        if self._bar is not None:
            self._bar.set_description(f"{self.prefix}: {what}")
        else:
            self._line()

    def update(self, n: int) -> None:
        """``n`` more units done."""
        self.done += n
        now = time.monotonic()
        if self._mark is None:  # the first update of a phase holds its start-up (loading, compiling): not timed
            self._mark = (now, self.done)
        elif now > self._mark[0]:
            self._rate = (self.done - self._mark[1]) / (now - self._mark[0])
        if self._bar is not None:
            self._bar.update(n)
        elif time.monotonic() - self._last_line >= self.interval_s:
            self._line()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        else:
            self._line(final=True)

    def _line(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self.start
        done = min(self.done, self.total)
        text = f"{self.prefix}: {'done' if final else self.what}: {done}/{self.total} {self.unit} " \
               f"({100 * done // self.total}%), {_seconds(elapsed)} elapsed"
        if not final:
            text += f", about {_seconds((self.total - done) / self._rate)} left" if self._rate else \
                ", time left not known yet"
        print(text, file=self.stream, flush=True)
        self._last_line = time.monotonic()
