"""Ctrl-C and SIGTERM during the cochlea encoding: a real ``snn-delays`` process group gets
the signal once its encoding has started, and must end within seconds with the shell's status,
leaving no lock file, no cache file, no temporary file and no worker behind. Also the pieces:
build_lock's lock file, an interrupted cache entry, the worker pool's results and errors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from snn_delays.data import DatasetError
from snn_delays.data.cache import build_lock, load_or_build
from _procs import alive, children

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process groups and /proc (Linux)")


def tone(freq: float, seconds: float, sr: int = 8000) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def fsdd_like(folder: Path, n_takes: int = 8, seconds: float = 0.5) -> Path:
    """Two digits x two speakers x ``n_takes`` takes of tones, named as FSDD names its files. Takes 0 and
    1 last 50 ms: the encoding takes files in order of size, so its first chunk (8 files) ends at once
    and the long ones are still queued when the test sends its signal."""
    folder.mkdir(parents=True, exist_ok=True)
    for digit in (0, 1):
        for speaker in ("amy", "bob"):
            for take in range(n_takes):
                freq = 300.0 + 400 * digit + 7 * take + (50 if speaker == "bob" else 0)
                wave = tone(freq, 0.05 if take < 2 else seconds)
                soundfile.write(folder / f"{digit}_{speaker}_{take}.wav", wave, 8000, subtype="PCM_16")
    return folder


def _start(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "SNN_DELAYS_PROGRESS_INTERVAL": "0"}  # a progress line per finished chunk
    return subprocess.Popen([sys.executable, "-m", "snn_delays.cli", *argv], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # its own process group, as a shell job has


def _interrupt_once_encoding(proc: subprocess.Popen, sig: int, within_s: float) -> tuple[int, float, str, list[int]]:
    """Wait for the first finished chunk (both workers busy), send ``sig`` to the whole process group;
    return (exit status, seconds it took to end, stderr, the workers' pids)."""
    workers: list[int] = []
    try:
        lines = []
        while True:
            line = proc.stderr.readline()
            if not line:
                raise AssertionError("the command ended before encoding:\n" + "".join(lines))
            lines.append(line)
            if " files (" in line:  # e.g. "fsdd: encoding with the cochlea: 8/64 files (12%), ..."
                break
        workers = children(proc.pid)
        os.killpg(proc.pid, sig)
        t0 = time.monotonic()
        try:
            rc = proc.wait(timeout=within_s + 10)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {within_s + 10:.0f} s after the signal") from None
        took = time.monotonic() - t0
        deadline = time.monotonic() + 2.0
        while any(alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        return rc, took, "".join(lines) + proc.stderr.read(), workers
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for w in workers:  # only processes this test started
            if alive(w):
                os.kill(w, signal.SIGKILL)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_ctrl_c_to_the_process_group_ends_fsdd_spike_encoding(tmp_path):
    """`data info fsdd --input spikes` (the path `train --input spikes` takes) with 2 workers: SIGINT to
    the group -> exit 130 within seconds, no lock, no cache file, no worker left (not the workers working through their queued chunks
    for a minute, leaving the .lock)."""
    rec = fsdd_like(tmp_path / "rec")  # 8 clips of 50 ms, then 3 chunks of 8 x 0.5 s still to encode
    cache = tmp_path / "cache"
    proc = _start(["data", "info", "fsdd", "--data-dir", str(rec), "--input", "spikes", "--workers", "2",
                   "--cache-dir", str(cache)], tmp_path)
    rc, took, err, workers = _interrupt_once_encoding(proc, signal.SIGINT, within_s=3.0)
    assert rc == 130, err
    assert took < 3.0, f"took {took:.1f} s to end"
    assert len(workers) == 2 and not [w for w in workers if alive(w)], "workers outlived the interrupted command"
    assert _leftovers(cache) == [], "an interrupted encoding left files in the cache"
    assert "interrupted" in err.splitlines()[-1] and "Traceback" not in err


def test_sigterm_ends_encode_audio_with_143_and_no_output(tmp_path):
    """`encode-audio` encoding in its own process (--workers 0) and SIGTERM to the group: exit 143
    (128 + 15) within seconds, no output file and no temporary file beside it."""
    rec = fsdd_like(tmp_path / "rec")
    out_dir = tmp_path / "out"
    proc = _start(["encode-audio", str(rec), str(out_dir / "spikes.h5"), "--workers", "0"], tmp_path)
    rc, took, err, workers = _interrupt_once_encoding(proc, signal.SIGTERM, within_s=3.0)
    assert rc == 128 + signal.SIGTERM, err
    assert took < 3.0, f"took {took:.1f} s to end"
    assert workers == [] and _leftovers(out_dir) == [] and "Traceback" not in err


def test_build_lock_excludes_and_leaves_no_lock_file(tmp_path):
    """Threads with their own open file each: one holder at a time, also across the removal and
    re-creation of the lock file; no file left afterwards, also after an error inside."""
    target = tmp_path / "thing.h5"
    inside, most, errors = [0], [0], []
    guard = threading.Lock()

    def build():
        try:
            for _ in range(5):
                with build_lock(target, "a test"):
                    with guard:
                        inside[0] += 1
                        most[0] = max(most[0], inside[0])
                    time.sleep(0.005)
                    with guard:
                        inside[0] -= 1
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=build) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors and most[0] == 1, (errors, most)
    assert not (tmp_path / "thing.h5.lock").exists()
    with pytest.raises(KeyError):
        with build_lock(target):
            assert (tmp_path / "thing.h5.lock").exists()
            raise KeyError("boom")
    assert _leftovers(tmp_path) == []


def test_an_interrupted_cache_entry_leaves_nothing(tmp_path, monkeypatch):
    from snn_delays.data import cache as cache_mod

    real_write, calls = cache_mod.atomic_write, []

    def write_then_interrupt(path, write, mode="wb"):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C while saving the second array
        real_write(path, write, mode)

    monkeypatch.setattr(cache_mod, "atomic_write", write_then_interrupt)
    arrays = {"x": np.arange(10), "y": np.ones(3)}
    with pytest.raises(KeyboardInterrupt):
        load_or_build(tmp_path, "t", {"a": 1}, lambda: (arrays, {}))
    assert _leftovers(tmp_path) == [] and list(tmp_path.iterdir()) == []
    monkeypatch.setattr(cache_mod, "atomic_write", real_write)
    got, _ = load_or_build(tmp_path, "t", {"a": 1}, lambda: (arrays, {}))  # builds it whole the next time
    np.testing.assert_array_equal(got["y"], arrays["y"])


def test_worker_pool_matches_in_process_and_reports_a_bad_file(tmp_path):
    """2 workers give the same spikes as the encoding in this process (0 and 1 = in-process); a worker's
    error is raised here naming the file, and no worker is left."""
    from snn_delays.data.cochlea import encode_files

    paths = []
    for k in range(5):
        p = tmp_path / f"{k}_amy_{k}.wav"
        soundfile.write(p, tone(300.0 + 150 * k, 0.05 + 0.01 * k), 8000, subtype="PCM_16")
        paths.append(str(p))
    here = encode_files(paths, seed=3, workers=0, batch=2)
    assert [u.tolist() for _, u in encode_files(paths, seed=3, workers=1, batch=2)] == [u.tolist() for _, u in here]
    bad = tmp_path / "9_amy_9.wav"
    bad.write_bytes(b"RIFF garbage")
    with pytest.raises(DatasetError, match="9_amy_9.wav"):
        encode_files(paths + [str(bad)], seed=3, workers=2, batch=2)
    assert children(os.getpid()) == []
    pooled = encode_files(paths, seed=3, workers=2, batch=2)
    for (t1, u1), (t2, u2) in zip(here, pooled):
        np.testing.assert_array_equal(t1, t2)
        np.testing.assert_array_equal(u1, u2)
    with pytest.raises(DatasetError, match="workers"):
        encode_files(paths, workers=-1)
