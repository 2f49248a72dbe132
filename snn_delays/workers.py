"""Sharing work between processes: an exclusive lock on a folder, worker processes.

Used by ``snn-delays ablate`` (a lock per grid cell, workers on one machine) and ``snn-delays
tune`` (trials left running by a dead local process, workers on one machine).

The lock is a file ``folder/.lock`` created with ``O_CREAT | O_EXCL`` (atomic on local and NFS v3+
file systems) holding the owner's host, pid and start time. The owner refreshes its time stamp
(:meth:`FolderLock.refresh`) and deletes it at the end. A lock whose process is gone (same host)
or that was not refreshed for ``stale_after_s`` seconds is broken by renaming it away (only one
process wins the rename) and taken. A lock taken inside a scheduler job (``job``: its id, e.g.
``"slurm:4242_3"``) records that id too, and a ``job_ended`` check (:mod:`snn_delays.launchers`)
breaks at once a lock whose job the scheduler reports ended, on whatever node it ran.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Sequence

from neuromorphic_export._io import pid_alive

from .config import config_from_dict

__all__ = ["die_with_parent", "FolderLock", "run_workers"]


class FolderLock:
    """An exclusive lock file ``folder/.lock`` (O_CREAT | O_EXCL) with stale-lock breaking."""

    def __init__(self, folder: Path, stale_after_s: float = 3600.0, job: str | None = None,
                 job_ended: Callable[[str], bool] | None = None):
        self.path = Path(folder) / ".lock"
        self.stale_after_s = stale_after_s
        self.job = job  # the scheduler job taking the lock (recorded in the file), None outside one
        self.job_ended = job_ended  # job id -> True when that job is known to have ended
        self.owned = False
        self.reentered = False  # this process held it already (see acquire)

    def acquire(self) -> bool:
        """Take the lock (breaking a stale one); False when a live owner holds it. A lock this
        very process already holds (an ``ablate`` cell calling ``train`` on its folder) counts as
        taken, without owning it: the outer holder refreshes and releases it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._held_by_this_process():
                    self.reentered = True
                    return True
                if not self._break_if_stale():
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                record = {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
                json.dump({**record, "job": self.job} if self.job else record, f)
            self.owned = True
            return True
        return False

    def holder(self) -> dict[str, Any]:
        """The lock file's record ({"host", "pid", "time"}), or {} when it is gone or unreadable."""
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return {}
        return info if isinstance(info, dict) else {}

    def describe_holder(self) -> str:
        """'process 123 on host h since 2024-05-01 12:00:00' (or what of it the lock records)."""
        info = self.holder()
        if not info:
            return "another process (its lock file was just written or removed)"
        since = info.get("time")
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(since)) if isinstance(since, (int, float)) else "?"
        job = f" (scheduler job {info['job']})" if info.get("job") else ""
        return f"process {info.get('pid', '?')} on host {info.get('host', '?')}{job} since {when}"

    def _held_by_this_process(self) -> bool:
        info = self.holder()
        return info.get("host") == socket.gethostname() and info.get("pid") == os.getpid()

    def _break_if_stale(self) -> bool:
        try:
            info = json.loads(self.path.read_text() or "{}")
            age = time.time() - self.path.stat().st_mtime
        except (OSError, ValueError):
            return False  # just created by another process, or gone: not ours to judge now
        dead = info.get("host") == socket.gethostname() and not pid_alive(int(info.get("pid", -1)))
        if not dead and info.get("job") and self.job_ended is not None:
            dead = bool(self.job_ended(str(info["job"])))
        if not (dead or age > self.stale_after_s):
            return False
        grave = self.path.with_name(f".lock.stale.{uuid.uuid4().hex}")
        try:
            os.rename(self.path, grave)  # atomic: one breaker wins
        except FileNotFoundError:
            return False
        grave.unlink(missing_ok=True)
        return True

    def refresh(self) -> None:
        """Touch the lock so that other processes see its owner is still working."""
        if self.owned or self.reentered:
            try:
                os.utime(self.path)
            except OSError:
                pass

    def release(self) -> None:
        if self.owned:
            self.path.unlink(missing_ok=True)
            self.owned = False


def die_with_parent(parent_pid: int) -> None:
    """Worker start-up: end this process when its parent ends, even by SIGKILL (which runs no
    clean-up). Linux: the kernel sends SIGKILL on the parent's death (prctl PR_SET_PDEATHSIG);
    everywhere: a daemon thread checks the parent's pid once a second."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # no prctl: the thread below still does it
    if os.getppid() != parent_pid:  # the parent died before the signal was armed
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _worker_main(fn: Callable[..., Any], base_dict: dict[str, Any], args: tuple, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    import torch

    torch.set_num_threads(1)
    fn(config_from_dict(base_dict), *args)


def run_workers(fn: Callable[..., Any], base_dict: dict[str, Any], args: Sequence[Any], workers: int) -> list[int]:
    """Run ``fn(config_from_dict(base_dict), *args)`` in ``workers`` fresh (spawned) processes with
    one torch thread each, wait for all; returns the non-zero exit codes. ``fn`` must be a
    module-level function (it is pickled by name). The workers end with this process, even when it
    is killed by SIGKILL (:func:`die_with_parent`)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker_main, args=(fn, base_dict, tuple(args), os.getpid())) for _ in range(workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return [p.exitcode for p in procs if p.exitcode != 0]
