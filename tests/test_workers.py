"""Worker processes of ablate/tune (snn_delays.workers.run_workers) end with their parent, even by SIGKILL."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _procs import kill_parent_and_check_workers_end


def wait_in_worker(cfg, marker_dir: str) -> None:
    """A worker that says it is up (a file named by its pid), then waits far longer than the test."""
    (Path(marker_dir) / str(os.getpid())).touch()
    time.sleep(120)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_when_their_parent_is_killed(tmp_path):
    script = ("import sys\nsys.path.insert(0, sys.argv[1])\n"
              "from snn_delays.config import config_to_dict, load_config\n"
              "from snn_delays.workers import run_workers\nfrom test_workers import wait_in_worker\n"
              "if __name__ == '__main__':\n"
              "    run_workers(wait_in_worker, config_to_dict(load_config('synthetic')), (sys.argv[2],), 2)\n")
    parent = subprocess.Popen([sys.executable, "-c", script, str(Path(__file__).parent), str(tmp_path)])
    deadline = time.monotonic() + 120.0  # spawned workers import torch: slow on a loaded machine
    while len(list(tmp_path.iterdir())) < 2 and time.monotonic() < deadline and parent.poll() is None:
        time.sleep(0.1)
    kill_parent_and_check_workers_end(parent, 2, within_s=3.0)  # PDEATHSIG, or the once-a-second check
