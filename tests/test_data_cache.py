"""Binned cache (keys, memory maps, atomic writes, stale/partial entries) and downloads."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import zipfile
from pathlib import Path

import numpy as np
import pytest

from snn_delays.cli import main
from snn_delays.data import DatasetError, open_dataset
from snn_delays.data import download as dl
from snn_delays.data.cache import cache_key, load_or_build
from snn_delays.data.checksums import file_digest

from test_data_heidelberg import random_samples, write_real_layout


def _counter_build(arrays):
    calls = []

    def build():
        calls.append(1)
        return {k: v.copy() for k, v in arrays.items()}, {"n": 1}

    return build, calls


def test_cache_reuses_memory_maps_and_keys_every_parameter(tmp_path):
    arrays = {"x": np.arange(24, dtype=np.uint8).reshape(2, 3, 4), "y": np.array([0, 1])}
    build, calls = _counter_build(arrays)
    a, info = load_or_build(tmp_path, "t", {"dt_ms": 10.0, "source": "md5:1"}, build)
    b, _ = load_or_build(tmp_path, "t", {"dt_ms": 10.0, "source": "md5:1"}, build)
    assert len(calls) == 1 and isinstance(b["x"], np.memmap) and info == {"n": 1}
    np.testing.assert_array_equal(a["x"], arrays["x"])
    load_or_build(tmp_path, "t", {"dt_ms": 5.0, "source": "md5:1"}, build)  # a changed parameter
    load_or_build(tmp_path, "t", {"dt_ms": 10.0, "source": "md5:2"}, build)  # a changed source
    assert len(calls) == 3 and len(list(tmp_path.glob("t-*"))) == 3
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})


def test_partial_or_corrupt_entries_are_rebuilt(tmp_path):
    arrays = {"x": np.ones((5, 7, 3), dtype=np.uint8)}
    build, calls = _counter_build(arrays)
    params = {"p": 1}
    load_or_build(tmp_path, "t", params, build)
    entry = next(tmp_path.glob("t-*"))
    (entry / "meta.json").unlink()  # a crash before the entry was complete
    load_or_build(tmp_path, "t", params, build)
    assert len(calls) == 2
    raw = (entry / "x.npy").read_bytes()
    (entry / "x.npy").write_bytes(raw[: len(raw) // 2])  # truncated array file
    out, _ = load_or_build(tmp_path, "t", params, build)
    assert len(calls) == 3 and out["x"].shape == (5, 7, 3)
    meta = json.loads((entry / "meta.json").read_text())
    meta["key"] = "0" * 64  # an entry written for other parameters
    (entry / "meta.json").write_text(json.dumps(meta))
    load_or_build(tmp_path, "t", params, build)
    assert len(calls) == 4
    assert not list(entry.glob("*.part"))  # no temporary files left behind


def test_shd_cache_follows_source_and_parameters(tmp_path):
    rng = np.random.default_rng(3)
    root = tmp_path / "d"
    root.mkdir()
    for part in ("train", "test"):
        t, u = random_samples(rng, 12)
        write_real_layout(root / f"shd_{part}.h5", t, u, np.arange(12) % 20, np.zeros(12))
    c = tmp_path / "c"
    a = open_dataset("shd", str(root), "test", cache_dir=str(c))
    assert len(list(c.glob("shd-*"))) == 1
    b = open_dataset("shd", str(root), "test", cache_dir=str(c))
    np.testing.assert_array_equal(a.x.numpy(), b.x.numpy())
    open_dataset("shd", str(root), "test", cache_dir=str(c), pool=10)
    assert len(list(c.glob("shd-*"))) == 2
    t, u = random_samples(rng, 12)  # the source file changes: the old entry is not used
    write_real_layout(root / "shd_test.h5", t, u, np.arange(12) % 20, np.zeros(12))
    d = open_dataset("shd", str(root), "test", cache_dir=str(c))
    assert len(list(c.glob("shd-*"))) == 3 and not np.array_equal(a.x.numpy(), d.x.numpy())
    e = open_dataset("shd", str(root), "test", cache_dir="off")
    np.testing.assert_array_equal(d.x.numpy(), e.x.numpy())


def test_fetch_verifies_present_files_without_network(tmp_path, monkeypatch):
    payload = b"hello spikes"
    (tmp_path / "f.zip").write_bytes(payload)
    good = dl.RemoteFile("f.zip", ("https://example.invalid/f.zip",), "md5:" + hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not download"))
    assert dl.fetch(good, tmp_path) == tmp_path / "f.zip"
    bad = dl.RemoteFile("f.zip", good.urls, "md5:" + "0" * 32)
    with pytest.raises(DatasetError, match="wrong checksum"):
        dl.fetch(bad, tmp_path)


def test_fetch_checksum_mismatch_on_download(tmp_path):
    src = tmp_path / "served.zip"
    src.write_bytes(b"not what was published")
    remote = dl.RemoteFile("x.h5.zip", (src.as_uri(),), "md5:" + "1" * 32)
    with pytest.raises(DatasetError) as e:
        dl.fetch(remote, tmp_path / "dest")
    assert "wrong checksum" in str(e.value) and str(tmp_path / "dest") in str(e.value)
    assert not (tmp_path / "dest" / "x.h5.zip").exists()


def test_fetch_downloads_verifies_and_moves_into_place(tmp_path):
    payload = b"published bytes" * 1000
    src = tmp_path / "served.zip"
    src.write_bytes(payload)
    remote = dl.RemoteFile("x.h5.zip", (src.as_uri(),), "md5:" + hashlib.md5(payload).hexdigest())
    dest = tmp_path / "dest"
    assert dl.fetch(remote, dest) == dest / "x.h5.zip"
    assert (dest / "x.h5.zip").read_bytes() == payload
    assert [p.name for p in dest.iterdir()] == ["x.h5.zip"]  # no temporary file left beside it


def test_download_offline_message(tmp_path, monkeypatch, capsys):
    def offline(*a, **k):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    rc = main(["data", "download", "ssc", "--root", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "ssc_train.h5.zip" in err and "https://zenkelab.org/datasets/ssc_train.h5.zip" in err and str(tmp_path) in err


def test_download_uses_present_archive_and_unpacks(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    h5 = tmp_path / "src" / "shd_train.h5"
    h5.parent.mkdir()
    t, u = random_samples(rng, 5)
    write_real_layout(h5, t, u, np.arange(5), np.zeros(5))
    root = tmp_path / "root"
    root.mkdir()
    with zipfile.ZipFile(root / "shd_train.h5.zip", "w") as zf:
        zf.write(h5, "shd_train.h5")
    md5 = file_digest(root / "shd_train.h5.zip")
    monkeypatch.setitem(dl.REMOTE, "shd", [dl.RemoteFile("shd_train.h5.zip", ("https://example.invalid/",), "md5:" + md5)])
    monkeypatch.setattr(dl.urllib.request, "urlopen", lambda *a, **k: pytest.fail("must not download"))
    out = dl.download_dataset("shd", root)
    assert out == [root / "shd_train.h5"] and (root / "shd_train.h5").read_bytes() == h5.read_bytes()


def test_corrupt_archive(tmp_path):
    bad = tmp_path / "shd_test.h5.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DatasetError, match=str(bad)):
        dl.unpack(bad)
    assert not Path(tmp_path / "shd_test.h5").exists()


def test_unpacking_onto_a_full_or_read_only_disk_says_so(tmp_path, monkeypatch):
    import errno
    import gzip

    archive = tmp_path / "x.h5.gz"
    with gzip.open(archive, "wb") as f:
        f.write(b"payload")

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(dl, "_copy_atomic", full_disk)
    with pytest.raises(DatasetError, match="cannot unpack .*No space left on device") as e:
        dl.unpack(archive, tmp_path / "out")
    assert "corrupt" not in str(e.value)  # the archive is fine: the message must not send the user to re-download


def test_download_into_a_file_and_too_many_steps(tmp_path, capsys):
    (tmp_path / "f").write_text("x")
    rc = main(["data", "download", "shd", "--data-dir", str(tmp_path / "f")])
    err = capsys.readouterr().err
    assert rc == 2 and "is a file, not a folder" in err and "Traceback" not in err
    root = tmp_path / "shd"
    root.mkdir()
    rng = np.random.default_rng(0)
    for part in ("train", "test"):
        times, units = random_samples(rng, 20)
        write_real_layout(root / f"shd_{part}.h5", times, units, np.arange(20), np.arange(20) % 4)
    with pytest.raises(DatasetError, match=r"n_steps = 1000000000 .*longest sample needs 141 steps"):
        open_dataset("shd", str(root), "train", n_steps=10**9, cache_dir="off")


def _hold_build_lock(target, started, seconds):
    import time

    from snn_delays.data.cache import build_lock

    with build_lock(Path(target)):
        started.set()
        time.sleep(seconds)
        Path(str(target) + ".done").write_text("built")


def test_build_lock_makes_a_second_process_wait(tmp_path, capsys):
    """Two processes needing the same long build (the FSDD cochlea): the second waits for the first."""
    import multiprocessing as mp
    import time

    from snn_delays.data.cache import build_lock

    target = tmp_path / "spikes.h5"
    ctx = mp.get_context("spawn")
    started = ctx.Event()
    child = ctx.Process(target=_hold_build_lock, args=(str(target), started, 1.5))
    child.start()
    assert started.wait(60)
    t0 = time.perf_counter()
    with build_lock(target, "the test spikes"):
        waited = time.perf_counter() - t0
        assert Path(str(target) + ".done").exists()  # the holder finished its build first
    child.join(30)
    assert waited > 0.5 and "waiting for another process building the test spikes" in capsys.readouterr().err
    with build_lock(target):  # free again: no wait
        pass
