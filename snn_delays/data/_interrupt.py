"""Signals during a long data build (the cochlea encoding): end it promptly and leave nothing behind.

Two helpers, both doing nothing outside the main thread (only it may set signal handlers):

* :func:`terminate_raises_exit`: while inside, SIGTERM and SIGHUP raise ``SystemExit(128 + signal)``
  in this process instead of ending it on the spot, so the ``finally`` clauses run as they do for
  Ctrl-C (workers ended, temporary file and build lock removed) and the exit status is the shell's
  (143 for SIGTERM). A handler that someone else installed is left alone.
* :func:`children_ignore_sigint`: processes started inside inherit SIGINT ignored, from their very
  first instruction (a spawned worker spends seconds importing before its own code could ignore
  it). Ctrl-C in a terminal reaches the whole process group; the workers leave it to their parent,
  which ends them. A Ctrl-C that arrives meanwhile is held and delivered to this process afterwards.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator

__all__ = ["terminate_raises_exit", "children_ignore_sigint"]


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _raise_exit(signum, frame) -> None:
    raise SystemExit(128 + signum)  # the status a shell reports for a process ended by that signal


@contextlib.contextmanager
def terminate_raises_exit() -> Iterator[None]:
    """Inside: SIGTERM/SIGHUP raise SystemExit(128 + signal number) (where their action is the default)."""
    names = [s for s in ("SIGTERM", "SIGHUP") if hasattr(signal, s)]
    previous = {}
    if _main_thread():
        for name in names:
            sig = getattr(signal, name)
            if signal.getsignal(sig) is signal.SIG_DFL:
                previous[sig] = signal.signal(sig, _raise_exit)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def children_ignore_sigint() -> Iterator[None]:
    """Processes started inside ignore SIGINT; a SIGINT to this process meanwhile is delivered on exit."""
    if not (_main_thread() and hasattr(signal, "pthread_sigmask")) or signal.getsignal(signal.SIGINT) is None:
        yield  # not the main thread, not POSIX, or a handler set outside Python that could not be restored
        return
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()  # starting it unblocks SIGINT, which would drop the one held here
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})  # held (pending), not lost
    old_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)  # what the children inherit
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_handler)
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)  # a held Ctrl-C arrives now
