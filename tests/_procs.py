"""Process helpers for the tests that kill a parent and watch its workers (Linux /proc)."""

from __future__ import annotations

import os
import signal
import subprocess
import time


def children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid``, from /proc."""
    from pathlib import Path

    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, ...
        if int(fields[1]) == pid and fields[0] != "Z" and b"spawn_main" in cmd:
            out.append(int(d.name))
    return out


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def kill_parent_and_check_workers_end(parent: subprocess.Popen, n_workers: int, within_s: float) -> None:
    """SIGKILL ``parent`` (whose ``n_workers`` spawned workers are running) and assert that every
    worker has ended within ``within_s`` seconds; whatever happens, no process of the test survives."""
    workers: list[int] = []
    try:
        workers = children(parent.pid)
        assert len(workers) == n_workers, f"expected {n_workers} workers, found {len(workers)}"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + within_s
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [w for w in workers if alive(w)], "workers outlived their killed parent"
    finally:
        for w in workers:  # only the processes this test started
            if alive(w):
                os.kill(w, signal.SIGKILL)
        if parent.poll() is None:
            parent.kill()
