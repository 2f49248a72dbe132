"""DVS128 Gesture (Amir et al. 2017, IBM) in its own file format, binned to (T, 2, H, W) counts.

Layout as distributed by IBM (``DvsGesture.tar.gz``, unpacked to ``DvsGesture/``): per recording
``userNN_<lighting>.aedat`` and ``userNN_<lighting>_labels.csv``, plus ``trials_to_train.txt`` and
``trials_to_test.txt`` listing the ``.aedat`` names of each split. Searched in ROOT, ROOT/DvsGesture,
ROOT/dvs-gesture.

AEDAT 3.1: ASCII header lines starting with ``#`` (the first ``#!AER-DAT3.1``), ending with the line
``#!END-HEADER``; then packets, each a 28-byte little-endian header

    int16 eventType, int16 eventSource, int32 eventSize, int32 eventTSOffset, int32 eventTSOverflow,
    int32 eventCapacity, int32 eventNumber, int32 eventValid

followed by eventNumber x eventSize bytes. Polarity events (eventType 1, eventSize 8) are
``uint32 data, int32 timestamp``: valid = bit 0, polarity = bit 1, y = bits 2-16, x = bits 17-31;
timestamp (us) = eventTSOverflow << 31 | timestamp. Other packet types are skipped; invalid events
(bit 0 clear) dropped. The labels CSV: header ``class,startTime_usec,endTime_usec``, then one row per
gesture, classes 1..11 (stored 0..10).

Every gesture window becomes one sample, binned from its start: ``dt_ms`` per step, ``n_steps`` steps,
pixels pooled by ``downsample`` (128 / 4 = 32). The file is streamed packet by packet, so memory is
one packet plus the windows' frames. A truncated packet, coordinates outside 128 x 128, timestamps
that run backwards, a header without ``#!END-HEADER`` or a malformed labels CSV end with one line
naming the file.

No checksum-verified download exists: IBM serves the archive from a web page that needs a browser;
a missing folder gives a DatasetError saying where to get it and where to put it.
"""

from __future__ import annotations

import csv
import struct
import sys
from pathlib import Path

import numpy as np

from .cache import folder_fingerprint, load_or_build, resolve_cache_dir
from .download import default_root, unpack
from .events import EventDataset, EventFrames, check_event_binning, frame_size, join_parts
from .registry import DatasetError, register

__all__ = ["open_dvs_gesture", "read_aedat31", "read_gesture_labels", "gesture_folder", "SENSOR_HW", "N_CLASSES",
           "SOURCE_URL"]

SENSOR_HW = (128, 128)
N_CLASSES = 11
SOURCE_URL = "https://research.ibm.com/interactive/dvsgesture/"
_PACKET = struct.Struct("<hhiiiiii")
_MAX_HEADER_LINES = 10_000


def _skip_header(f, path: Path) -> None:
    first = f.readline()
    if not first.startswith(b"#!AER-DAT3"):
        raise DatasetError(f"{path}: not an AEDAT 3.x file (first line {first[:40]!r})")
    for _ in range(_MAX_HEADER_LINES):
        line = f.readline()
        if not line:
            break
        if line.startswith(b"#!END-HEADER"):
            return
        if not line.startswith(b"#"):
            break
    raise DatasetError(f"{path}: AEDAT header has no #!END-HEADER line: the file is truncated or corrupt")


def read_aedat31(path, windows: list[EventFrames]):
    """Stream the polarity events of an AEDAT 3.1 file into every window (each an :class:`EventFrames`
    with its ``t0_us`` set; events outside a window's steps are ignored by it). Returns the windows."""
    path = Path(path)
    checker = EventFrames(path, SENSOR_HW, 1, 1.0)  # the file-wide checks (range, order) on every packet
    with open(path, "rb") as f:
        _skip_header(f, path)
        while head := f.read(_PACKET.size):
            if len(head) < _PACKET.size:
                raise DatasetError(f"{path}: a packet header is cut short ({len(head)} of 28 bytes): "
                                   "the file is truncated")
            etype, _src, esize, _off, overflow, _cap, number, _valid = _PACKET.unpack(head)
            if esize <= 0 or number < 0:
                raise DatasetError(f"{path}: packet header with event size {esize}, count {number}: "
                                   "the file is corrupt")
            body = f.read(esize * number)
            if len(body) < esize * number:
                raise DatasetError(f"{path}: a packet is cut short ({len(body)} of {esize * number} bytes): "
                                   "the file is truncated")
            if etype != 1:
                continue
            if esize != 8:
                raise DatasetError(f"{path}: polarity packet with {esize}-byte events (expected 8): "
                                   "the file is corrupt")
            ev = np.frombuffer(body, dtype="<u4").reshape(-1, 2)
            data = ev[:, 0].astype(np.int64)
            t = ev[:, 1].view("<i4").astype(np.int64) | (np.int64(overflow) << 31)
            ok = (data & 1) == 1
            data, t = data[ok], t[ok]
            x, y, p = (data >> 17) & 0x7FFF, (data >> 2) & 0x7FFF, (data >> 1) & 1
            checker.check(x, y, t, p)
            for w in windows:
                w.add(x, y, t, p, checked=True)
    return windows


def read_gesture_labels(path) -> np.ndarray:
    """(n, 3) int64 rows (class 0..10, start us, end us) of a ``*_labels.csv``."""
    path = Path(path)
    rows, k = [], 1
    try:
        with open(path, newline="") as f:
            reader = csv.reader(f)
            head = next(reader, None)
            if head is None or [h.strip() for h in head][:3] != ["class", "startTime_usec", "endTime_usec"]:
                raise DatasetError(f"{path}: expected the header class,startTime_usec,endTime_usec; got {head}")
            for k, row in enumerate(reader, start=2):
                if not row or not "".join(row).strip():
                    continue
                c, t0, t1 = (int(v) for v in row[:3])
                if not 1 <= c <= N_CLASSES or t1 <= t0:
                    raise ValueError(f"class {c} (1..{N_CLASSES}) or window {t0}..{t1} us")
                rows.append((c - 1, t0, t1))
    except (ValueError, IndexError) as e:
        raise DatasetError(f"{path}: malformed labels line {k}: {e}") from None
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


def gesture_folder(root: Path) -> Path:
    """The folder holding ``trials_to_train.txt``: ROOT, ROOT/DvsGesture or ROOT/dvs-gesture, unpacking
    ``DvsGesture.tar.gz`` found in ROOT on first use."""
    for attempt in range(2):
        for d in (root, root / "DvsGesture", root / "dvs-gesture"):
            if (d / "trials_to_train.txt").is_file():
                return d
        if attempt == 0 and (root / "DvsGesture.tar.gz").is_file():
            unpack(root / "DvsGesture.tar.gz", root)  # a corrupt archive: DatasetError naming it
    raise DatasetError(f"DVS128 Gesture not found in {root} (nor {root / 'DvsGesture'}): download DvsGesture.tar.gz "
                       f"from {SOURCE_URL} (a browser download; no checksum is published), unpack it there "
                       "(userNN_*.aedat, *_labels.csv, trials_to_train.txt, trials_to_test.txt) or pass --data-dir")


def _trials(folder: Path, part: str) -> list[str]:
    names = [ln.strip() for ln in (folder / f"trials_to_{part}.txt").read_text().splitlines() if ln.strip()]
    missing = [n for n in names if not (folder / n).is_file()]
    if missing:
        raise DatasetError(f"{folder}: {len(missing)} recording(s) of trials_to_{part}.txt missing, e.g. {missing[0]}")
    return names


@register("dvs-gesture")
def open_dvs_gesture(root=None, split: str = "train", dt_ms: float = 30.0, n_steps: int = 100, downsample: int = 4,
                     valid_fraction: float = 0.1, split_seed: int = 0, cache_dir: str = "") -> EventDataset:
    """Open a split of DVS128 Gesture as (T, 2, H, W) counts; see the module docstring."""
    n_steps, downsample = n_steps or 100, downsample or 4  # 0 (the data config's "unset"): the defaults
    check_event_binning(dt_ms, n_steps, downsample)
    folder = gesture_folder(Path(root) if root else default_root())
    cdir = resolve_cache_dir(cache_dir)
    parts = ("train", "test") if split == "all" else (("test",) if split == "test" else ("train",))
    xs, ys, users = [], [], []
    for part in parts:
        names = _trials(folder, part)
        files = [folder / n for n in names] + [folder / (n[: -len(".aedat")] + "_labels.csv") for n in names]
        params = {"dataset": "dvs-gesture", "part": part, "source": folder_fingerprint(files, folder),
                  "dt_ms": float(dt_ms), "n_steps": int(n_steps), "downsample": int(downsample)}

        def build(names=names, part=part):
            print(f"dvs-gesture: binning {len(names)} {part} recordings (once)", file=sys.stderr, flush=True)
            frames, labels, who = [], [], []
            for n in names:
                rows = read_gesture_labels(folder / (n[: -len(".aedat")] + "_labels.csv"))
                wins = [EventFrames(folder / n, SENSOR_HW, n_steps, dt_ms * 1000.0, downsample, t0_us=int(t0))
                        for _, t0, _ in rows]
                read_aedat31(folder / n, _clip_windows(wins, rows))
                frames += [w.frames() for w in wins]
                labels += [int(c) for c in rows[:, 0]]
                who += [n.split("_")[0]] * len(rows)
            h, w = frame_size(SENSOR_HW, downsample)
            dtype = np.uint16 if any(f.dtype == np.uint16 for f in frames) else np.uint8
            x = np.stack([f.astype(dtype) for f in frames]) if frames else np.zeros((0, n_steps, 2, h, w), dtype)
            return {"x": x, "y": np.asarray(labels, dtype=np.int64)}, {"users": who}

        arrays, info = load_or_build(cdir, f"dvs-gesture-{part}", params, build)
        xs.append(arrays["x"])
        ys.append(np.asarray(arrays["y"]))
        users += info["users"]
    x, y, users = join_parts(xs, ys, users, split, valid_fraction, split_seed, f"dvs-gesture in {folder}")
    note = (f"dvs-gesture: test = trials_to_test.txt (users 24-29); valid = seeded stratified {valid_fraction:.0%} "
            f"slice of the training gestures (split_seed {split_seed})")
    return EventDataset(x, y, N_CLASSES, dt_ms=float(dt_ms), users=users, protocol_note=note)


def _clip_windows(wins: list[EventFrames], rows: np.ndarray) -> list[EventFrames]:
    """Wrap each window so that it drops events at or after its end (the CSV's endTime_usec)."""
    out = []
    for w, (_, _, t1) in zip(wins, rows):
        out.append(_Clipped(w, int(t1)))
    return out


class _Clipped:
    def __init__(self, frames: EventFrames, end_us: int):
        self.frames, self.end_us = frames, end_us

    def add(self, x, y, t, p, checked: bool = False) -> None:
        keep = t < self.end_us
        if keep.any():
            self.frames.add(x[keep], y[keep], t[keep], p[keep], checked=True)
