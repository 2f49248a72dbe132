"""SHD/SSC reader: tiny files in exactly the real layout, binning against independent computations."""

from __future__ import annotations

import gzip
import math
import shutil
import time
import zipfile
from fractions import Fraction
from pathlib import Path

import h5py
import numpy as np
import pytest

from snn_delays.cli import main
from snn_delays.data import DatasetError, open_dataset
from snn_delays.data.spikefile import bin_spikes, read_spike_file

WORDS = [f"word{i}" for i in range(20)]


def write_real_layout(path: Path, times, units, labels, speakers, keys=WORDS, meta=True):
    """The layout of the published files: vlen float16 times (s), vlen uint16 units, extra groups."""
    with h5py.File(path, "w") as f:
        t = f.create_dataset("spikes/times", (len(times),), dtype=h5py.vlen_dtype(np.dtype("float16")))
        u = f.create_dataset("spikes/units", (len(units),), dtype=h5py.vlen_dtype(np.dtype("uint16")))
        for i, (ti, ui) in enumerate(zip(times, units)):
            t[i] = np.asarray(ti, dtype=np.float16)
            u[i] = np.asarray(ui, dtype=np.uint16)
        f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint8))
        f.create_dataset("extra/speaker", data=np.asarray(speakers, dtype=np.uint8))
        f.create_dataset("extra/keys", data=np.array([k.encode() for k in keys], dtype="S"))
        if meta:
            n_spk = int(np.max(speakers)) + 1
            f.create_dataset("extra/meta_info/gender", data=np.array([b"female"] * n_spk, dtype="S"))
            f.create_dataset("extra/meta_info/age", data=np.full(n_spk, 30, dtype=np.uint8))
            f.create_dataset("extra/meta_info/body_height", data=np.full(n_spk, 170, dtype=np.uint8))


def random_samples(rng, n, t_max=1.4):
    times, units = [], []
    for i in range(n):
        k = 0 if i == 3 else int(rng.integers(1, 200))  # sample 3 is empty
        t = np.sort(rng.random(k) * t_max).astype(np.float16)
        times.append(t)
        units.append(rng.integers(0, 700, k).astype(np.uint16))
    # spikes exactly on bin edges (exactly representable in float16) and at the end of the range
    times[0] = np.array([0.0, 0.125, 0.25, 0.5, 1.0, 1.4], dtype=np.float16)
    units[0] = np.array([0, 4, 5, 699, 350, 1], dtype=np.uint16)
    return times, units


def reference_counts(times, units, dt_ms, pool, T):
    """Exact rational arithmetic, one spike at a time."""
    out = np.zeros((len(times), T, math.ceil(700 / pool)), dtype=np.int64)
    for i, (ts, us) in enumerate(zip(times, units)):
        for t, u in zip(ts, us):
            b = math.floor(Fraction(float(t)) * 1000 / Fraction(dt_ms))
            if b < T:
                out[i, b, int(u) // pool] += 1
    return out


@pytest.fixture()
def shd_root(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "shd"
    root.mkdir()
    data = {}
    for part, n in (("train", 60), ("test", 20)):
        times, units = random_samples(rng, n)
        labels = np.arange(n) % 20
        speakers = np.arange(n) % 6
        write_real_layout(root / f"shd_{part}.h5", times, units, labels, speakers)
        data[part] = (times, units, labels)
    return root, data


def test_read_real_layout(shd_root):
    root, data = shd_root
    rec = read_spike_file(root / "shd_train.h5")
    assert len(rec.times) == 60 and rec.keys[:2] == ["word0", "word1"]
    assert rec.labels.dtype == np.int64 and rec.times[0].dtype == np.float64
    assert rec.times[3].size == 0
    np.testing.assert_array_equal(rec.speakers, np.arange(60) % 6)


@pytest.mark.parametrize("dt_ms,pool", [(10.0, 5), (1.0, 35), (25.0, 7), (4.0, 1)])
def test_binning_matches_exact_reference(shd_root, tmp_path, dt_ms, pool):
    root, data = shd_root
    train = open_dataset("shd", str(root), "all", dt_ms=dt_ms, pool=pool, cache_dir=str(tmp_path / "c"))
    times = data["train"][0] + data["test"][0]
    units = data["train"][1] + data["test"][1]
    T = max(math.floor(Fraction(float(t)) * 1000 / Fraction(dt_ms)) for ts in times for t in ts) + 1
    ref = reference_counts(times, units, dt_ms, pool, T)
    assert tuple(train.x.shape) == ref.shape  # one length for the whole dataset
    np.testing.assert_array_equal(train.x.numpy().astype(np.int64), ref)
    assert train.x[3].sum() == 0  # the empty sample is all zeros
    assert train.n_channels == math.ceil(700 / pool) and train.n_classes == 20


def test_edges_and_length(shd_root, tmp_path):
    root, _ = shd_root
    ds = open_dataset("shd", str(root), "all", cache_dir=str(tmp_path / "c"))
    x = ds.x[0].numpy()
    assert ds.n_steps == 141  # 1.4 s in float16 is 1.40039 s -> bin 140
    # 0.125 s -> bin 12 (ch 0), 0.25 -> 25 (ch 1), 0.5 -> 50 (ch 139), 1.0 -> 100 (ch 70), 1.4 -> 140
    assert x[0, 0] == 1 and x[12, 0] == 1 and x[25, 1] == 1 and x[50, 139] == 1 and x[100, 70] == 1
    assert x[140, 0] == 1 and x.sum() == 6


def spikingjelly_frames(t, x, duration_ms, W=700):
    """The reference's SpikingJelly SHD frames (integrate_events_by_fixed_duration), transcribed
    step by step (SpikingJelly's dataset module needs torchvision, which is not installed here)."""
    t = 1000 * t
    t = t - t[0]
    n = t.size
    frames_num = math.ceil(t[-1] / duration_ms)
    frames = np.zeros([frames_num, W])
    frame_index = t // duration_ms
    left = 0
    for i in range(frames_num - 1):
        right = np.searchsorted(frame_index, i + 1, side="left")
        frames[i] = np.bincount(x[left:right], minlength=W)
        left = right
    frames[-1] = np.bincount(x[left:n], minlength=W)
    return frames


def test_first_spike_convention_matches_reference(shd_root):
    root, data = shd_root
    times, units, _ = data["train"]
    dt_ms = 10.0
    got = bin_spikes([t.astype(np.float64) for t in times], units, dt_ms, pool=5, frame_convention="first_spike")
    checked = 0
    for i, (t, u) in enumerate(zip(times, units)):
        if t.size < 2:
            continue
        frames = spikingjelly_frames(t.astype(np.float64), u.astype(np.int64), dt_ms)  # (n_frames, 700)
        pooled = frames.reshape(frames.shape[0], 140, 5).sum(-1)
        np.testing.assert_array_equal(got[i, : len(pooled)], pooled, err_msg=f"sample {i}")
        assert got[i, len(pooled):].sum() == 0
        checked += 1
    assert checked > 50


def test_protocols(shd_root, tmp_path):
    root, data = shd_root
    c = str(tmp_path / "c")
    tr = open_dataset("shd", str(root), "train", cache_dir=c, valid_fraction=0.2)
    va = open_dataset("shd", str(root), "valid", cache_dir=c, valid_fraction=0.2)
    te = open_dataset("shd", str(root), "test", cache_dir=c, valid_fraction=0.2)
    assert len(tr) + len(va) == 60 and len(te) == 20
    assert "clean" in va.protocol_note and "20%" in va.protocol_note
    # stratified: every class represented in valid, and the same slice every time
    assert set(va.y.tolist()) == set(range(20))
    va2 = open_dataset("shd", str(root), "valid", cache_dir=c, valid_fraction=0.2)
    assert np.array_equal(va.y.numpy(), va2.y.numpy()) and np.array_equal(va.x.numpy(), va2.x.numpy())
    # train and valid are disjoint slices of the train file, together all of it
    full = open_dataset("shd", str(root), "train", cache_dir=c, protocol="paper")
    key = lambda ds: sorted(ds.x[i].numpy().tobytes() + bytes([int(ds.y[i])]) for i in range(len(ds)))  # noqa: E731
    assert sorted(key(tr) + key(va)) == key(full)
    assert len(full) == 60
    pv = open_dataset("shd", str(root), "valid", cache_dir=c, protocol="paper")
    assert np.array_equal(pv.x.numpy(), te.x.numpy()) and "paper" in pv.protocol_note


def test_tonic_layout_and_compressed_files(shd_root, tmp_path):
    root, _ = shd_root
    tonic = tmp_path / "tonic" / "SHD"
    tonic.mkdir(parents=True)
    with open(root / "shd_train.h5", "rb") as src, gzip.open(tonic / "shd_train.h5.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    with zipfile.ZipFile(tonic / "shd_test.h5.zip", "w") as zf:
        zf.write(root / "shd_test.h5", "shd_test.h5")
    ds = open_dataset("shd", str(tmp_path / "tonic"), "test", cache_dir=str(tmp_path / "c"))
    assert len(ds) == 20
    assert (tonic / "shd_train.h5").exists() and (tonic / "shd_test.h5").exists()  # unpacked on first use
    ref = open_dataset("shd", str(root), "test", cache_dir=str(tmp_path / "c2"))
    np.testing.assert_array_equal(ds.x.numpy(), ref.x.numpy())


def test_ssc_uses_its_valid_file(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "ssc"
    root.mkdir()
    keys = [f"cmd{i}" for i in range(35)]
    for part, n in (("train", 40), ("valid", 10), ("test", 12)):
        times, units = random_samples(rng, n, t_max=1.0)
        write_real_layout(root / f"ssc_{part}.h5", times, units, np.arange(n) % 35, np.zeros(n), keys, meta=False)
    va = open_dataset("ssc", str(root), "valid", cache_dir=str(tmp_path / "c"))
    assert len(va) == 10 and va.n_classes == 35 and "ssc_valid" in va.protocol_note
    te = open_dataset("ssc", str(root), "test", cache_dir=str(tmp_path / "c"), n_steps=50)
    assert te.x.shape[1] == 50


def _expect_error(capsys, root, tmp_path, *fragments):
    with pytest.raises(DatasetError) as e:
        open_dataset("shd", str(root), "train", cache_dir=str(tmp_path / "c"))
    for frag in fragments:
        assert frag in str(e.value)
    rc = main(["data", "info", "shd", "--root", str(root), "--cache-dir", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and fragments[0] in err


def test_truncated_file(shd_root, tmp_path, capsys):
    root, _ = shd_root
    p = root / "shd_train.h5"
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    _expect_error(capsys, root, tmp_path, str(p), "truncated")


def test_not_hdf5(shd_root, tmp_path, capsys):
    root, _ = shd_root
    (root / "shd_train.h5").write_bytes(b"this is not an hdf5 file" * 10)
    _expect_error(capsys, root, tmp_path, str(root / "shd_train.h5"))


def test_wrong_layouts(shd_root, tmp_path, capsys):
    root, _ = shd_root
    p = root / "shd_train.h5"
    with h5py.File(p, "w") as f:  # times stored as a dense 2-D array
        f.create_dataset("spikes/times", data=np.zeros((3, 4), dtype=np.float16))
        f.create_dataset("spikes/units", data=np.zeros((3, 4), dtype=np.uint16))
        f.create_dataset("labels", data=np.zeros(3, dtype=np.uint8))
    _expect_error(capsys, root, tmp_path, str(p), "variable-length")
    with h5py.File(p, "w") as f:  # no units
        f.create_dataset("spikes/times", (1,), dtype=h5py.vlen_dtype(np.dtype("float16")))
        f.create_dataset("labels", data=np.zeros(1, dtype=np.uint8))
    _expect_error(capsys, root, tmp_path, str(p), "spikes/units")
    write_real_layout(p, [np.array([0.1], np.float16)], [np.array([700], np.uint16)], [0], [0])
    _expect_error(capsys, root, tmp_path, str(p), "0..699")
    write_real_layout(p, [np.array([0.1, 0.2], np.float16)], [np.array([7], np.uint16)], [0], [0])
    _expect_error(capsys, root, tmp_path, str(p), "sample 0")


def test_missing_files_say_where_to_get_them(tmp_path, capsys):
    _expect_error(capsys, tmp_path, tmp_path, "shd_train.h5.zip", "https://zenkelab.org/datasets/shd_train.h5.zip",
                  str(tmp_path))


def test_labels_out_of_range_name_the_file_and_values(shd_root, tmp_path, capsys):
    root, data = shd_root
    p = root / "shd_test.h5"
    times, units, labels = data["test"]
    bad = np.array(labels)
    bad[4], bad[7] = 23, 41  # 20 classes (and 20 keys)
    write_real_layout(p, times, units, bad, np.arange(len(bad)) % 6)
    _expect_error(capsys, root, tmp_path, str(p), "23, 41", "0..19")
    write_real_layout(p, times, units, bad, np.arange(len(bad)) % 6, keys=[])  # no keys: the class count decides
    _expect_error(capsys, root, tmp_path, str(p), "23, 41", "20 classes")


def test_a_spike_hours_late_is_refused_without_allocating(shd_root, tmp_path, capsys):
    root, data = shd_root
    p = root / "shd_train.h5"
    times, units, labels = data["train"]
    times = list(times)
    times[5] = np.append(times[5][:-1], np.float16(60000.0)).astype(np.float16)  # 60,000 s: 156 GiB binned
    write_real_layout(p, times, units, labels, np.arange(len(labels)) % 6)
    start = time.perf_counter()
    _expect_error(capsys, root, tmp_path, str(p), "sample 5", "60000")
    assert time.perf_counter() - start < 10


def test_binned_size_limit_names_the_sample_that_sets_the_length(shd_root, tmp_path, monkeypatch):
    from snn_delays.data import spikefile

    root, data = shd_root
    times, units, labels = data["test"]
    times = list(times)
    times[2] = np.array([0.1, 300.0], dtype=np.float16)  # within the format's limit, 30,000 steps at 10 ms
    units = list(units)
    units[2] = np.array([3, 4], dtype=np.uint16)
    write_real_layout(root / "shd_test.h5", times, units, labels, np.arange(len(labels)) % 6)
    monkeypatch.setattr(spikefile, "MAX_BINNED_BYTES", 100 << 20)
    with pytest.raises(DatasetError, match=r"sample 2 of .*shd_test.h5.*data.n_steps"):
        open_dataset("shd", str(root), "train", cache_dir="off")
    assert open_dataset("shd", str(root), "test", cache_dir="off", n_steps=150).x.shape[1] == 150


def test_empty_file_and_splits_too_small_for_validation(shd_root, tmp_path, capsys):
    root, data = shd_root
    p = root / "shd_train.h5"
    write_real_layout(p, [], [], np.zeros(0), np.zeros(0), meta=False)
    _expect_error(capsys, root, tmp_path, str(p), "no samples")
    times, units, _ = data["train"]
    write_real_layout(p, times[:20], units[:20], np.arange(20), np.zeros(20))  # one sample per class
    assert len(open_dataset("shd", str(root), "train", cache_dir=str(tmp_path / "c"))) == 20
    with pytest.raises(DatasetError, match="train 20, valid 0, test 20"):
        open_dataset("shd", str(root), "valid", cache_dir=str(tmp_path / "c"))
    assert len(open_dataset("shd", str(root), "valid", protocol="paper", cache_dir=str(tmp_path / "c"))) == 20
    with pytest.raises(DatasetError, match="valid_fraction"):
        open_dataset("shd", str(root), "train", valid_fraction=-0.1, cache_dir=str(tmp_path / "c"))
