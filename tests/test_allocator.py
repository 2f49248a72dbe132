"""The allocator setting (snn_delays.allocator, opt-in: SNN_DELAYS_MALLOC=reuse or bench --malloc
reuse): a training step's large tensors are served from memory the process already holds (no page
faults), where glibc's default unmaps them on free and faults them in afresh; SNN_DELAYS_MALLOC=system
makes the call a no-op."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the setting applies to glibc's malloc only")

_CHILD = r"""
import json, resource, sys
import torch
from snn_delays import allocator
from snn_delays.bench.measure import CONFIGS, Runner
on = allocator.reuse_freed_memory()
torch.set_num_threads(1)
runner = Runner("ours", CONFIGS["shd"], 12.0)  # (T, C, B) tensors of 36 MB: above glibc's largest mmap threshold
for _ in range(3):  # warm-up: the heap grows to the step's layout
    runner.step()
faults = []
for _ in range(2):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    runner.step()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
faults = min(faults)
print(json.dumps({"on": on, "setting": allocator.allocator_setting(), "faults": faults}))
"""


def _run(env_value: str | None) -> dict:
    env = dict(os.environ)
    env.pop("SNN_DELAYS_MALLOC", None)
    if env_value is not None:
        env["SNN_DELAYS_MALLOC"] = env_value
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_training_step_reuses_freed_memory():
    """A training step at SHD sizes after three warm-up steps (the fewer faults of two): with the
    setting its tensors come from memory the earlier steps freed (almost no page faults); with
    glibc's default each large one is a fresh mapping, faulted in page by page (hundreds of MB per
    step)."""
    page = os.sysconf("SC_PAGE_SIZE")
    on = _run(None)
    assert on["on"] and on["setting"].startswith("freed memory reused")
    off = _run("system")
    assert not off["on"] and "SNN_DELAYS_MALLOC=system" in off["setting"]
    assert off["faults"] * page > 100 * 2**20, off
    assert on["faults"] * 5 < off["faults"], (on, off)



@pytest.mark.parametrize("malloc,env_value", [("system", None), ("reuse", None), ("system", "reuse")])
def test_bench_uses_the_system_allocator_unless_asked(tmp_path, malloc, env_value):
    """`snn-delays bench` (as every command) leaves glibc's allocator as it comes (the default), or
    turns the reuse on with --malloc reuse or SNN_DELAYS_MALLOC=reuse; its JSON records which (a
    fresh process each)."""
    env = dict(os.environ)
    env.pop("SNN_DELAYS_MALLOC", None)
    if env_value is not None:
        env["SNN_DELAYS_MALLOC"] = env_value
    out = tmp_path / "b.json"
    subprocess.run([sys.executable, "-m", "snn_delays.cli", "bench", "--quick", "--no-reference", "--no-memory",
                    "--repeats", "1", "--rates", "random", "--malloc", malloc, "--json", str(out)],
                   capture_output=True, text=True, env=env, check=True)
    setting = json.loads(out.read_text())["environment"]["allocator"]
    on = malloc == "reuse" or env_value == "reuse"
    assert setting.startswith("freed memory reused") if on else setting == "system default"
