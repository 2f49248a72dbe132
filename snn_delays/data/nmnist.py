"""N-MNIST (Orchard et al. 2015) in its own file format, binned to (T, 2, H, W) counts.

Layout as distributed: ``Train.zip`` and ``Test.zip`` unpack to ``Train/<digit>/<id>.bin`` and
``Test/<digit>/<id>.bin`` (ROOT, ROOT/NMNIST, ROOT/nmnist, any case of train/test); the digit is the
folder name. Each ``.bin`` is a list of events of 40 bits (5 bytes), big-endian bit order:

    byte 0: x (0..33)    byte 1: y (0..33)    byte 2 bit 7: polarity (1 ON)
    byte 2 bits 6-0, byte 3, byte 4: timestamp, 23 bits, microseconds

A file whose size is not a multiple of 5 is truncated; coordinates outside 34 x 34 or timestamps that
run backwards are corrupt: each ends with one line naming the file (DatasetError). Files are read in
chunks of ``CHUNK_EVENTS`` events.

Binning: ``dt_ms`` per step from the sample's first event, ``n_steps`` steps (later events dropped),
pixels pooled by ``downsample``. ``valid`` is a seeded stratified ``valid_fraction`` slice of Train.
Archives: fetched with ``download=True`` from Mendeley Data (MD5 checked) where a network exists; the
binned arrays are cached (:mod:`.cache`), keyed by a fingerprint of the files and the options.
Size: N x n_steps x 2 x H x W bytes (60,000 x 30 x 2 x 17 x 17 = 1.0 GB at the defaults).
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np

from .cache import folder_fingerprint, load_or_build, resolve_cache_dir
from .download import RemoteFile, default_root, fetch
from .events import EventDataset, EventFrames, check_event_binning, frame_size, join_parts
from .registry import DatasetError, register

__all__ = ["open_nmnist", "read_nmnist", "nmnist_files", "SENSOR_HW", "REMOTE_NMNIST", "CHUNK_EVENTS"]

SENSOR_HW = (34, 34)
CHUNK_EVENTS = 1 << 16
_BASE = "https://data.mendeley.com/public-files/datasets/468j46mzdv/files/"
REMOTE_NMNIST = {
    "Train": RemoteFile("Train.zip", (_BASE + "39c25547-014b-4137-a934-9d29fa53c7a0/file_downloaded",),
                        "md5:20959b8e626244a1b502305a9e6e2031"),
    "Test": RemoteFile("Test.zip", (_BASE + "05a4d654-7e03-4c15-bdfa-9bb2bcbea494/file_downloaded",),
                       "md5:69ca8762b2fe404d9b9bad1103e97832"),
}


def read_nmnist(path, frames: EventFrames, chunk_events: int = CHUNK_EVENTS) -> EventFrames:
    """Stream the events of one ``.bin`` file into ``frames``; returns it."""
    path = Path(path)
    size = path.stat().st_size
    if size % 5:
        raise DatasetError(f"{path}: {size} bytes is not a whole number of 5-byte events: the file is truncated")
    with open(path, "rb") as f:
        while block := f.read(5 * chunk_events):
            ev = np.frombuffer(block, dtype=np.uint8).reshape(-1, 5).astype(np.int64)
            x, y = ev[:, 0], ev[:, 1]
            p = ev[:, 2] >> 7
            t = ((ev[:, 2] & 0x7F) << 16) | (ev[:, 3] << 8) | ev[:, 4]
            frames.add(x, y, t, p)
    return frames


def _part_dir(base: Path, part: str) -> Path | None:
    for name in (part, part.lower(), part.upper()):
        if (base / name).is_dir():
            return base / name
    return None


def nmnist_files(root: Path, part: str, download: bool = False) -> tuple[list[Path], np.ndarray]:
    """The ``.bin`` files of ``part`` ("Train" or "Test") under ``root`` (unpacking ``{part}.zip`` there,
    fetching it first if ``download``) and their digits."""
    bases = [root, root / "NMNIST", root / "nmnist"]
    folder = next((d for b in bases if (d := _part_dir(b, part)) is not None), None)
    if folder is None:
        archive = next((b / f"{part}.zip" for b in bases if (b / f"{part}.zip").is_file()), None)
        remote = REMOTE_NMNIST[part]
        if archive is None and download:
            try:
                archive = fetch(remote, root)
            except DatasetError as e:
                raise DatasetError(f"N-MNIST {part}.zip could not be downloaded into {root}: "
                                   f"{str(e).splitlines()[0]} (get it from {remote.urls[0]}, MD5 "
                                   f"{remote.checksum[4:]}, as {root / remote.name})") from None
        if archive is None:
            raise DatasetError(f"N-MNIST {part} not found in {', '.join(map(str, bases))}: put {part}.zip "
                               f"(MD5 {remote.checksum[4:]}, from {remote.urls[0]}) or its unpacked {part}/ "
                               f"folder in {root}, or pass data option download = true where a network exists")
        try:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(archive.parent)
        except (zipfile.BadZipFile, OSError) as e:
            raise DatasetError(f"{archive} cannot be unpacked ({e}): delete it and fetch it again") from None
        folder = _part_dir(archive.parent, part)
        if folder is None:
            raise DatasetError(f"{archive} does not hold a {part}/ folder: not the N-MNIST archive")
    files, labels = [], []
    for digit in range(10):
        for f in sorted((folder / str(digit)).glob("*.bin")):
            files.append(f)
            labels.append(digit)
    if not files:
        raise DatasetError(f"{folder} holds no <digit>/<id>.bin files: not the N-MNIST {part} folder")
    return files, np.asarray(labels, dtype=np.int64)


@register("nmnist")
def open_nmnist(root=None, split: str = "train", dt_ms: float = 10.0, n_steps: int = 30, downsample: int = 2,
                valid_fraction: float = 0.1, split_seed: int = 0, cache_dir: str = "",
                download: bool = False) -> EventDataset:
    """Open a split of N-MNIST as (T, 2, H, W) counts; see the module docstring."""
    n_steps, downsample = n_steps or 30, downsample or 2  # 0 (the data config's "unset"): the defaults
    check_event_binning(dt_ms, n_steps, downsample)
    root = Path(root) if root else default_root()
    cdir = resolve_cache_dir(cache_dir)
    parts = ("Train", "Test") if split == "all" else (("Test",) if split == "test" else ("Train",))
    out_x, out_y, names = [], [], []
    for part in parts:
        files, labels = nmnist_files(root, part, download)
        base = files[0].parents[1]
        params = {"dataset": "nmnist", "part": part, "source": folder_fingerprint(files, base),
                  "dt_ms": float(dt_ms), "n_steps": int(n_steps), "downsample": int(downsample)}

        def build(files=files, labels=labels, part=part):
            h, w = frame_size(SENSOR_HW, downsample)
            x = np.zeros((len(files), int(n_steps), 2, h, w), dtype=np.uint8)
            print(f"nmnist: binning {len(files)} {part} files (once)", file=sys.stderr, flush=True)
            for k, f in enumerate(files):
                fr = read_nmnist(f, EventFrames(f, SENSOR_HW, n_steps, dt_ms * 1000.0, downsample)).frames()
                if fr.dtype != x.dtype:
                    x = x.astype(np.uint16)
                x[k] = fr
            return {"x": x, "y": labels}, {"files": [str(f.relative_to(base)) for f in files]}

        arrays, info = load_or_build(cdir, f"nmnist-{part.lower()}", params, build)
        out_x.append(arrays["x"])
        out_y.append(np.asarray(arrays["y"]))
        names += info["files"]
    x, y, names = join_parts(out_x, out_y, names, split, valid_fraction, split_seed, f"nmnist Train/ in {root}")
    note = (f"nmnist: test = Test/; valid = seeded stratified {valid_fraction:.0%} slice of Train/ "
            f"(split_seed {split_seed})")
    return EventDataset(x, y, 10, dt_ms=float(dt_ms), files=names, protocol_note=note,
                        keys=[str(d) for d in range(10)])
