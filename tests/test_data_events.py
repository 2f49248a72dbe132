"""Event-camera data: N-MNIST .bin and DVS128 Gesture AEDAT 3.1 files written here in their real layouts,
every malformed case, and the synthetic moving-dot task (shapes, determinism, totals carry no class)."""

import struct

import numpy as np
import pytest

from snn_delays.data import DatasetError, open_dataset
from snn_delays.data.dvs_gesture import read_aedat31, read_gesture_labels
from snn_delays.data.event_motion import DIRECTIONS, N_CLASSES, SPEEDS_STEPS_PER_PX, EventMotionTask
from snn_delays.data.events import EventFrames
from snn_delays.data.nmnist import read_nmnist


# -- N-MNIST: 5 bytes per event: x, y, p<<7 | t[22:16], t[15:8], t[7:0] ----------------------------
def nmnist_bytes(events):
    out = bytearray()
    for x, y, t, p in events:
        out += bytes([x, y, (p << 7) | ((t >> 16) & 0x7F), (t >> 8) & 0xFF, t & 0xFF])
    return bytes(out)


def write_nmnist_tree(root, part, per_digit):
    for digit, events in per_digit.items():
        d = root / part / str(digit)
        d.mkdir(parents=True, exist_ok=True)
        (d / "00001.bin").write_bytes(nmnist_bytes(events))


def test_nmnist_reads_and_bins_the_real_layout(tmp_path):
    ev = [(0, 0, 1000, 1), (33, 33, 1500, 0), (5, 7, 4_999, 1), (5, 7, 5_000, 1), (6, 7, 9_000_000, 0)]
    write_nmnist_tree(tmp_path, "Train", {3: ev, 7: ev[:2]})
    write_nmnist_tree(tmp_path, "Test", {1: ev[:1]})
    ds = open_dataset("nmnist", str(tmp_path), "all", dt_ms=2.0, n_steps=5, downsample=2, cache_dir="off")
    assert len(ds) == 3 and ds.frame_shape == (2, 17, 17) and ds.n_channels == 2 * 17 * 17
    x, y = ds[0]
    assert y == 3 and x.shape == (5, 2, 17, 17)
    # t0 = 1000 us: 1000 -> step 0, 1500 -> 0, 4999 -> 1, 5000 -> 2, 9 s -> dropped
    assert x[0, 1, 0, 0] == 1 and x[0, 0, 16, 16] == 1 and x[1, 1, 3, 2] == 1 and x[2, 1, 3, 2] == 1
    assert float(x.sum()) == 4
    assert [int(v) for v in ds.y] == [3, 7, 1]


def test_nmnist_timestamp_uses_all_23_bits(tmp_path):
    f = tmp_path / "a.bin"
    f.write_bytes(nmnist_bytes([(1, 2, 0, 0), (1, 2, (1 << 23) - 1, 1)]))
    fr = read_nmnist(f, EventFrames(f, (34, 34), 2, float((1 << 23) - 1)))
    assert fr.n_events == 2 and fr.last_us == (1 << 23) - 1 and fr.frames()[1, 1, 2, 1] == 1


@pytest.mark.parametrize("case,match", [
    ("truncated", "not a whole number of 5-byte events: the file is truncated"),
    ("range", r"event at \(40, 3\) outside the 34 x 34 sensor"),
    ("backwards", "timestamps run backwards"),
    ("backwards_across_chunks", "timestamps run backwards"),
])
def test_nmnist_malformed_files_end_with_one_line_naming_the_file(tmp_path, case, match):
    ev = [(1, 1, 100, 1), (2, 2, 200, 0), (3, 3, 300, 1), (4, 4, 400, 1)]
    if case == "range":
        ev[2] = (40, 3, 300, 1)
    if case.startswith("backwards"):
        ev[3] = (4, 4, 250, 1)
    data = nmnist_bytes(ev)
    if case == "truncated":
        data = data[:-2]
    f = tmp_path / "Train" / "0" / "bad.bin"
    f.parent.mkdir(parents=True)
    f.write_bytes(data)
    with pytest.raises(DatasetError, match=match) as e:
        read_nmnist(f, EventFrames(f, (34, 34), 10, 1000.0), chunk_events=3 if "chunks" in case else 1 << 16)
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DatasetError, match=match):
        open_dataset("nmnist", str(tmp_path), "train", cache_dir="off")


def test_nmnist_missing_and_zip(tmp_path):
    with pytest.raises(DatasetError, match="Train.zip .*MD5 20959b8e626244a1b502305a9e6e2031"):
        open_dataset("nmnist", str(tmp_path), "train", cache_dir="off")
    import zipfile
    with zipfile.ZipFile(tmp_path / "Test.zip", "w") as zf:
        zf.writestr("Test/4/00001.bin", nmnist_bytes([(1, 1, 10, 1)]))
    ds = open_dataset("nmnist", str(tmp_path), "test", cache_dir=str(tmp_path / "cache"))
    assert len(ds) == 1 and int(ds.y[0]) == 4
    again = open_dataset("nmnist", str(tmp_path), "test", cache_dir=str(tmp_path / "cache"))  # from the cache
    assert np.array_equal(np.asarray(again.x), np.asarray(ds.x))


# -- DVS128 Gesture: AEDAT 3.1 ---------------------------------------------------------------------
def aedat_bytes(packets, header_end=True):
    head = b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n" + (b"#!END-HEADER\r\n" if header_end else b"")
    body = b""
    for etype, overflow, events in packets:
        if etype == 1:
            payload = b"".join(struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | valid, t)
                               for x, y, t, p, valid in events)
            size = 8
        else:  # a special-event packet (type 0, 8-byte events), skipped by the reader
            payload = b"".join(struct.pack("<Ii", 0, t) for t in events)
            size = 8
        n = len(events)
        body += struct.pack("<hhiiiiii", etype, 1, size, 4, overflow, n, n, n) + payload
    return head + body


def write_gesture(root, recordings, part_of):
    for name, (packets, labels) in recordings.items():
        (root / f"{name}.aedat").write_bytes(aedat_bytes(packets))
        (root / f"{name}_labels.csv").write_text(
            "class,startTime_usec,endTime_usec\n" + "".join(f"{c},{a},{b}\n" for c, a, b in labels))
    for part in ("train", "test"):
        (root / f"trials_to_{part}.txt").write_text(
            "".join(f"{n}.aedat\n" for n in recordings if part_of[n] == part))


def test_dvs_gesture_reads_windows_of_the_real_layout(tmp_path):
    events = [(0, 0, 1000, 1, 1), (127, 127, 1100, 0, 1), (10, 20, 1500, 1, 0),  # the last one invalid
              (64, 65, 2050, 1, 1), (66, 67, 5000, 0, 1)]
    packets = [(0, 0, [900]), (1, 0, events[:2]), (1, 0, events[2:])]
    write_gesture(tmp_path, {"user01_fluorescent": (packets, [(3, 1000, 2100), (11, 4000, 6000)]),
                             "user24_led": (packets, [(1, 1000, 5001)])},
                  {"user01_fluorescent": "train", "user24_led": "test"})
    ds = open_dataset("dvs-gesture", str(tmp_path), "all", dt_ms=1.0, n_steps=3, downsample=4,
                      valid_fraction=0.0, cache_dir="off")
    assert len(ds) == 3 and ds.frame_shape == (2, 32, 32) and [int(v) for v in ds.y] == [2, 10, 0]
    a, b, c = (ds[i][0] for i in range(3))
    assert a[0, 1, 0, 0] == 1 and a[0, 0, 31, 31] == 1 and a[1, 1, 16, 16] == 1 and float(a.sum()) == 3
    assert b[1, 0, 16, 16] == 1 and float(b.sum()) == 1  # 5000 us is step 1 of the window from 4000
    assert float(c.sum()) == 3  # window 1000..5001 us, 3 steps of 1 ms: 5000 us falls beyond
    assert ds.users == ["user01", "user01", "user24"]


def test_dvs_gesture_timestamp_overflow(tmp_path):
    f = tmp_path / "o.aedat"
    f.write_bytes(aedat_bytes([(1, 0, [(1, 1, 2_000_000_000, 1, 1)]), (1, 1, [(2, 2, 5, 1, 1)])]))
    w = EventFrames(f, (128, 128), 2, 1.5e9, t0_us=0)
    read_aedat31(f, [w])  # without the overflow word the second event (t = 5 us) would be in step 0
    fr = w.frames()
    assert fr[0].sum() == 0 and fr[1].sum() == 2


@pytest.mark.parametrize("case,match", [
    ("truncated", "packet is cut short"),
    ("truncated_header", "packet header is cut short"),
    ("no_end_header", "no #!END-HEADER"),
    ("range", r"event at \(130, 3\) outside the 128 x 128 sensor"),
    ("backwards", "timestamps run backwards"),
])
def test_dvs_gesture_malformed_files_end_with_one_line_naming_the_file(tmp_path, case, match):
    ev = [(1, 1, 100, 1, 1), (2, 2, 200, 0, 1), (3, 3, 300, 1, 1)]
    if case == "range":
        ev[1] = (130, 3, 200, 0, 1)
    packets = [(1, 0, ev)]
    if case == "backwards":
        packets.append((1, 0, [(4, 4, 150, 1, 1)]))  # across packets
    data = aedat_bytes(packets, header_end=case != "no_end_header")
    if case == "truncated":
        data = data[:-3]
    if case == "truncated_header":
        data = data + b"\x01\x00\x01"
    write_gesture(tmp_path, {"user01_led": ([], [(1, 0, 1000)])}, {"user01_led": "train"})
    f = tmp_path / "user01_led.aedat"
    f.write_bytes(data)
    with pytest.raises(DatasetError, match=match) as e:
        read_aedat31(f, [EventFrames(f, (128, 128), 10, 1000.0, t0_us=0)])
    assert str(f) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(DatasetError, match=match):
        open_dataset("dvs-gesture", str(tmp_path), "train", valid_fraction=0.0, cache_dir="off")


@pytest.mark.parametrize("text,match", [
    ("start,end\n1,2\n", "expected the header"),
    ("class,startTime_usec,endTime_usec\n12,0,10\n", "malformed labels line 2"),
    ("class,startTime_usec,endTime_usec\n3,10,oops\n", "malformed labels line 2"),
])
def test_dvs_gesture_bad_labels(tmp_path, text, match):
    f = tmp_path / "user01_led_labels.csv"
    f.write_text(text)
    with pytest.raises(DatasetError, match=match) as e:
        read_gesture_labels(f)
    assert str(f) in str(e.value)


def test_dvs_gesture_missing_folder_says_where_to_get_it(tmp_path):
    with pytest.raises(DatasetError, match="DvsGesture.tar.gz from https://research.ibm.com"):
        open_dataset("dvs-gesture", str(tmp_path), "train", cache_dir="off")


def test_long_recording_streams_in_bounded_memory(tmp_path):
    """200 packets of 1000 events: the reader holds one packet at a time and the window its frames."""
    import tracemalloc
    rng = np.random.default_rng(0)
    packets, t = [], 0
    for _ in range(200):
        xs, ys = rng.integers(0, 128, 1000), rng.integers(0, 128, 1000)
        ev = [(int(a), int(b), t + k, k % 2, 1) for k, (a, b) in enumerate(zip(xs, ys))]
        t += 1000
        packets.append((1, 0, ev))
    f = tmp_path / "long.aedat"
    f.write_bytes(aedat_bytes(packets))
    w = EventFrames(f, (128, 128), 4, 50_000.0, downsample=4, t0_us=0)
    tracemalloc.start()
    read_aedat31(f, [w])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert w.n_events == 200_000 and int(w.frames().sum()) == 200_000
    assert peak < 2_000_000, peak  # the file is 1.6 MB; 200k events as int64 columns would be 6+ MB


# -- the synthetic moving-dot task -----------------------------------------------------------------
def test_event_motion_shapes_and_determinism():
    a = open_dataset("event-motion", split="train", motion_train=64)
    b = open_dataset("event-motion", split="train", motion_train=64)
    v = open_dataset("event-motion", split="valid", motion_valid=64)
    assert a.x.shape == (64, 50, 2, 16, 16) and a.frame_shape == (2, 16, 16) and a.n_classes == N_CLASSES == 8
    x, y = a[0]
    assert x.shape == (50, 2, 16, 16) and x.dtype.is_floating_point and 0 <= y < 8
    assert np.array_equal(a.x.numpy(), b.x.numpy()) and np.array_equal(a.y.numpy(), b.y.numpy())
    assert not np.array_equal(a.x.numpy(), v.x.numpy())
    other = open_dataset("event-motion", split="train", motion_train=64, motion_seed=7)
    assert not np.array_equal(a.x.numpy(), other.x.numpy())
    with pytest.raises(DatasetError, match="n_steps must be >= "):
        open_dataset("event-motion", split="train", n_steps=10)


def test_event_motion_dot_path_follows_its_class():
    ds = EventMotionTask(64, p_noise=0.0, p_fire=1.0)
    for i in range(64):
        x, y = ds.x[i].numpy(), int(ds.y[i])
        assert 4 <= x.sum() <= 6 and (x.sum(axis=(0, 2, 3)) > 0).sum() == 1  # <= 6 events, one polarity
        t = np.nonzero(x)[0]
        assert len(np.unique(t)) == len(t)  # never two of the dot's events in one step
        span = t.max() - t.min()  # 5 steps fast, 15 slow, +-1 jitter at either end
        assert span <= 7 if y % 2 == 0 else 13 <= span <= 17


def test_event_motion_classes_are_not_separable_by_time_summed_counts():
    """Least squares on per-pixel totals (one-hot targets) stays near chance on held-out samples, while the
    same read-out of delayed coincidences (pixel at t times its neighbour along a direction at t + period: the
product a delay neuron computes) separates them."""
    tr = EventMotionTask(3000, "train")
    te = EventMotionTask(1500, "test")

    def fit_score(feat):
        a, b = feat(tr), feat(te)
        a1 = np.hstack([a, np.ones((len(a), 1))])
        b1 = np.hstack([b, np.ones((len(b), 1))])
        w, *_ = np.linalg.lstsq(a1, np.eye(N_CLASSES)[tr.y.numpy()], rcond=None)
        return float((np.argmax(b1 @ w, 1) == te.y.numpy()).mean())

    totals = lambda d: d.x.numpy().sum(1).reshape(len(d), -1).astype(np.float64)  # noqa: E731
    acc = fit_score(totals)
    assert acc < 1 / N_CLASSES + 0.07, acc  # chance 12.5 %

    def coincidences(d):  # what one delay neuron per class sees: pixel p at t and its neighbour p + v at t + period
        x = d.x.numpy().sum(2, dtype=np.int16)  # (N, T, H, W), polarities together
        feats = []
        for dy, dx in DIRECTIONS:
            for period in SPEEDS_STEPS_PER_PX:
                moved = np.roll(x[:, :-period], (dy, dx), axis=(2, 3))
                feats.append((x[:, period:] * moved).sum(axis=(1, 2, 3)))
        return np.stack(feats, 1).astype(np.float64)

    delayed = fit_score(coincidences)
    print(f"least squares, held out: totals {acc:.3f}, delayed coincidences {delayed:.3f}")
    assert delayed > 0.6, (acc, delayed)


def test_dvs_gesture_unpacks_the_distributed_archive(tmp_path):
    import tarfile
    src = tmp_path / "src" / "DvsGesture"
    src.mkdir(parents=True)
    write_gesture(src, {"user01_led": ([(1, 0, [(5, 6, 10, 1, 1)])], [(2, 0, 1000)])}, {"user01_led": "train"})
    (src / "trials_to_test.txt").write_text("")
    root = tmp_path / "root"
    root.mkdir()
    with tarfile.open(root / "DvsGesture.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="DvsGesture")
    ds = open_dataset("dvs-gesture", str(root), "train", valid_fraction=0.0, cache_dir="off")
    assert len(ds) == 1 and int(ds.y[0]) == 1 and float(ds[0][0].sum()) == 1
