"""SHD and SSC (Heidelberg spiking data sets): read the real HDF5 files, bin, cache, split.

File layout (both sets; ``meta_info`` only in SHD)::

    spikes/times   vlen float16 per sample, spike times in SECONDS
    spikes/units   vlen uint16 per sample, channel ids 0..699 (0 = highest frequency)
    labels         class per sample
    extra/speaker  speaker id per sample
    extra/keys     class id -> word
    extra/meta_info/{gender, age, body_height}

Each file is opened once, its ragged arrays read whole and the handle closed (h5py handles are
not fork-safe), then binned into dense counts (N, T, C):

* ``frame_convention="uniform"`` (default): a uniform grid from t = 0, bin = floor(t_ms / dt_ms),
  computed exactly (float16 seconds -> float64 -> x1000 is exact).
* ``frame_convention="first_spike"``: the reference's SpikingJelly frames - each sample shifted so
  that its first spike is at t = 0, ``ceil(t_last / dt)`` frames, a spike exactly on the last edge
  counted in the last frame. (SpikingJelly multiplies the float16 times by 1000 in float16; here
  the arithmetic is float64, so a few spikes within float16 rounding of an edge may differ.)

Channels are pooled by summing groups of ``pool`` adjacent units (700 -> ceil(700 / pool)); counts
are kept (uint8, uint16 if a bin ever exceeds 255). Every sample is padded with zeros at the end
to one length per dataset (the longest sample over all its files), or padded/cut to ``n_steps``.
The binned arrays are cached (see :mod:`.cache`).

Splits: SSC has train/valid/test files. SHD has no validation file: with ``protocol="clean"``
(default) ``valid`` is a seeded, stratified ``valid_fraction`` slice held out of shd_train (and
``train`` is the rest); ``protocol="paper"`` trains on all of shd_train and validates on shd_test,
as the paper did. ``split="all"`` is every sample of every file.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._atomic import atomic_path
from . import DatasetError, register
from .arrays import ArrayDataset, stratified_split
from .cache import load_or_build, resolve_cache_dir, source_checksum
from .download import REMOTE, default_root, missing_message, unpack

__all__ = ["SpikeRecords", "read_spike_file", "write_spike_file", "bin_spikes", "natural_steps", "open_heidelberg",
           "N_UNITS", "locate_file"]

N_UNITS = 700
SPLIT_FILES = {"shd": ("train", "test"), "ssc": ("train", "valid", "test")}
N_CLASSES = {"shd": 20, "ssc": 35}
LAYOUT_HELP = ("expected the Heidelberg layout: spikes/times (vlen float16, seconds), spikes/units "
               "(vlen uint16, 0..699), labels, extra/speaker, extra/keys")


@dataclass
class SpikeRecords:
    """The ragged contents of one file: per-sample spike times (float64 seconds) and units."""

    times: list[np.ndarray]
    units: list[np.ndarray]
    labels: np.ndarray  # (N,) int64
    speakers: np.ndarray  # (N,) int64, -1 where the file has none
    keys: list[str]  # class id -> word ([] where the file has none)


def _fail(path, what: str) -> DatasetError:
    return DatasetError(f"{path}: {what}; {LAYOUT_HELP}. If the file came from a download, delete it and "
                        "fetch it again.")


def read_spike_file(path: str | os.PathLike) -> SpikeRecords:
    """Read and check one SHD/SSC-layout HDF5 file (opened once, closed before returning)."""
    import h5py

    path = Path(path)
    try:
        f = h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path} cannot be opened as HDF5 ({e}): it is truncated or corrupt. Delete it and "
                           "fetch it again (snn-delays data download ...).") from None
    try:
        with f:
            for key in ("spikes/times", "spikes/units", "labels"):
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    raise _fail(path, f"missing dataset {key!r} (found: {', '.join(_walk(f)) or 'nothing'})")
            ds_t, ds_u = f["spikes/times"], f["spikes/units"]
            for ds, kind in ((ds_t, "f"), (ds_u, "iu")):
                base = h5py.check_vlen_dtype(ds.dtype)
                if ds.ndim != 1 or base is None or base.kind not in kind:
                    raise _fail(path, f"{ds.name} must be a 1-D variable-length "
                                      f"{'float' if kind == 'f' else 'integer'} array; got shape {ds.shape}, dtype {ds.dtype}")
            times_raw = ds_t[()]
            units_raw = ds_u[()]
            labels = np.asarray(f["labels"][()])
            speakers = np.asarray(f["extra/speaker"][()]) if "extra/speaker" in f else None
            keys = [_decode(k) for k in f["extra/keys"][()]] if "extra/keys" in f else []
    except DatasetError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        raise DatasetError(f"{path} cannot be read ({type(e).__name__}: {e}): it is truncated or corrupt. "
                           "Delete it and fetch it again.") from None
    n = len(times_raw)
    if len(units_raw) != n:
        raise _fail(path, f"spikes/times has {n} samples but spikes/units has {len(units_raw)}")
    if labels.ndim != 1 or len(labels) != n or labels.dtype.kind not in "iu":
        raise _fail(path, f"labels must be {n} integers; got shape {labels.shape}, dtype {labels.dtype}")
    if speakers is not None and len(speakers) != n:
        raise _fail(path, f"extra/speaker has {len(speakers)} entries for {n} samples")
    times = [np.asarray(t).astype(np.float64) for t in times_raw]
    units = [np.asarray(u).astype(np.int64) for u in units_raw]
    for i, (t, u) in enumerate(zip(times, units)):
        if t.shape != u.shape:
            raise _fail(path, f"sample {i} has {t.size} spike times but {u.size} units")
    if n:
        all_t = np.concatenate(times)
        all_u = np.concatenate(units)
        if all_t.size and (not np.all(np.isfinite(all_t)) or all_t.min() < 0):
            raise _fail(path, "spike times must be finite and >= 0 (seconds)")
        if all_u.size and (all_u.min() < 0 or all_u.max() >= N_UNITS):
            raise _fail(path, f"units must be in 0..{N_UNITS - 1}; found {all_u.min()}..{all_u.max()}")
    return SpikeRecords(times, units, labels.astype(np.int64),
                        speakers.astype(np.int64) if speakers is not None else np.full(n, -1, np.int64), keys)


def _walk(f) -> list[str]:
    out: list[str] = []
    f.visit(out.append)
    return out[:12]


def _decode(k) -> str:
    return k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)


def write_spike_file(path: str | os.PathLike, times: list[np.ndarray], units: list[np.ndarray], labels,
                     speakers=None, keys: list[str] | None = None, attrs: dict | None = None) -> None:
    """Write an SHD-layout file (times float16 seconds, units uint16), atomically."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            n = len(times)
            dt = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float16))
            du = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
            for i in range(n):
                dt[i] = np.asarray(times[i], dtype=np.float16)
                du[i] = np.asarray(units[i], dtype=np.uint16)
            f.create_dataset("labels", data=np.asarray(labels, dtype=np.uint16))
            f.create_dataset("extra/speaker", data=np.asarray(speakers if speakers is not None else np.zeros(n),
                                                              dtype=np.uint16))
            f.create_dataset("extra/keys", data=np.array([k.encode() for k in (keys or [])], dtype=object),
                             dtype=h5py.string_dtype("ascii"))
            for k, v in (attrs or {}).items():
                f.attrs[k] = v


def _spike_bins(times: list[np.ndarray], dt_ms: float, frame_convention: str) -> tuple[np.ndarray, np.ndarray]:
    """Per spike: (sample index, bin index) under the frame convention."""
    lengths = np.fromiter((len(t) for t in times), dtype=np.int64, count=len(times))
    sample = np.repeat(np.arange(len(times)), lengths)
    if sample.size == 0:
        return sample, sample.copy()
    t_ms = np.concatenate(times).astype(np.float64) * 1000.0
    if frame_convention == "uniform":
        return sample, np.floor(t_ms / dt_ms).astype(np.int64)
    if frame_convention != "first_spike":
        raise DatasetError(f"frame_convention must be 'uniform' or 'first_spike'; got {frame_convention!r}")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    nonempty = lengths > 0
    first = np.zeros(len(times))
    last = np.zeros(len(times))
    first[nonempty] = np.minimum.reduceat(t_ms, starts[nonempty])
    t_ms = t_ms - first[sample]
    last[nonempty] = np.maximum.reduceat(t_ms, starts[nonempty])
    n_frames = np.maximum(np.ceil(last / dt_ms).astype(np.int64), 1)
    b = np.minimum(np.floor(t_ms / dt_ms).astype(np.int64), n_frames[sample] - 1)
    return sample, b


def natural_steps(times: list[np.ndarray], dt_ms: float, frame_convention: str = "uniform") -> int:
    """The number of bins that holds every spike of these samples (0 if there are none)."""
    _, b = _spike_bins(times, dt_ms, frame_convention)
    return int(b.max()) + 1 if b.size else 0


def bin_spikes(times: list[np.ndarray], units: list[np.ndarray], dt_ms: float = 10.0, pool: int = 5,
               frame_convention: str = "uniform", n_steps: int = 0, n_units: int = N_UNITS,
               chunk: int = 2048) -> np.ndarray:
    """Dense spike counts (N, T, ceil(n_units / pool)), uint8 (uint16 if a count exceeds 255).

    ``times`` in seconds (float64 or float16), ``units`` 0..n_units-1. T = ``n_steps`` if > 0 (later
    spikes dropped), else the longest sample's bins.
    """
    if dt_ms <= 0:
        raise DatasetError(f"dt_ms must be > 0; got {dt_ms}")
    if pool < 1:
        raise DatasetError(f"pool must be >= 1; got {pool}")
    n = len(times)
    n_ch = math.ceil(n_units / pool)
    sample, b = _spike_bins(times, dt_ms, frame_convention)
    T = int(n_steps) if n_steps > 0 else (int(b.max()) + 1 if b.size else 1)
    ch = np.concatenate(units).astype(np.int64) // pool if sample.size else sample.copy()
    keep = b < T
    sample, b, ch = sample[keep], b[keep], ch[keep]
    out = np.zeros((n, T, n_ch), dtype=np.uint8)
    bounds = np.searchsorted(sample, np.arange(0, n + chunk, chunk))  # spikes are grouped by sample
    for k, s0 in enumerate(range(0, n, chunk)):
        lo, hi = bounds[k], bounds[k + 1]
        m = min(chunk, n - s0)
        flat = ((sample[lo:hi] - s0) * T + b[lo:hi]) * n_ch + ch[lo:hi]
        counts = np.bincount(flat, minlength=m * T * n_ch).reshape(m, T, n_ch)
        if counts.size and counts.max() > 255 and out.dtype == np.uint8:
            out = out.astype(np.uint16)
        out[s0:s0 + m] = counts
    return out


def _candidate_dirs(name: str, root: Path) -> list[Path]:
    return [root, root / name.upper(), root / name]  # plain, tonic's layout (root/SHD), lower case


def locate_file(name: str, part: str, root: Path, cache_dir: Path | None) -> Path:
    """Find ``{name}_{part}.h5`` under ``root`` (also tonic's ``root/SHD/``), unpacking a ``.h5.gz`` or
    ``.h5.zip`` there on first use; raise DatasetError saying where to get it otherwise."""
    fname = f"{name}_{part}.h5"
    dirs = _candidate_dirs(name, root)
    for d in dirs:
        if (d / fname).is_file():
            return d / fname
    for d in dirs:
        for ext in (".gz", ".zip"):
            archive = d / (fname + ext)
            if archive.is_file():
                dest = d if os.access(d, os.W_OK) else (cache_dir or Path.cwd() / "data_cache") / "unpacked"
                if (dest / fname).is_file():
                    return dest / fname
                return unpack(archive, dest)
    remote = next(r for r in REMOTE[name] if r.name == fname + ".zip")
    raise DatasetError(missing_message(remote, root, f"not found in {', '.join(str(d) for d in dirs)}"))


def _protocol_note(name: str, protocol: str, valid_fraction: float, split_seed: int) -> str:
    if name == "ssc":
        return "ssc: validation on the official ssc_valid file; test on ssc_test"
    if protocol == "paper":
        return ("shd protocol 'paper': trained on all of shd_train; validation = shd_test (model selection on "
                "the test set, as in the paper); test = shd_test")
    return (f"shd protocol 'clean': validation = seeded stratified {valid_fraction:.0%} slice of shd_train "
            f"(split_seed {split_seed}), trained on the rest; test = shd_test, never seen during training")


def open_heidelberg(name: str, root=None, split: str = "train", dt_ms: float = 10.0, pool: int = 5,
                    protocol: str = "clean", valid_fraction: float = 0.1, frame_convention: str = "uniform",
                    n_steps: int = 0, cache_dir: str = "", split_seed: int = 0) -> ArrayDataset:
    """Open ``split`` of SHD or SSC; see the module docstring for binning, padding and splits."""
    if name not in SPLIT_FILES:
        raise DatasetError(f"unknown Heidelberg dataset {name!r}")
    if protocol not in ("clean", "paper"):
        raise DatasetError(f"protocol must be 'clean' or 'paper'; got {protocol!r}")
    root = Path(root) if root else default_root()
    cdir = resolve_cache_dir(cache_dir)
    paths = {p: locate_file(name, p, root, cdir) for p in SPLIT_FILES[name]}
    params = {
        "dataset": name,
        "sources": {p: source_checksum(path, cdir) for p, path in paths.items()},
        "dt_ms": float(dt_ms),
        "pool": int(pool),
        "frame_convention": frame_convention,
        "n_steps": int(n_steps),
        "n_units": N_UNITS,
    }

    def build():
        records = {p: read_spike_file(path) for p, path in paths.items()}
        T = int(n_steps) if n_steps > 0 else max(
            max(natural_steps(r.times, dt_ms, frame_convention) for r in records.values()), 1)
        arrays, keys = {}, []
        for p, r in records.items():
            arrays[f"{p}_x"] = bin_spikes(r.times, r.units, dt_ms, pool, frame_convention, T)
            arrays[f"{p}_y"] = r.labels
            arrays[f"{p}_speaker"] = r.speakers
            keys = keys or r.keys
        if len({a.dtype for k, a in arrays.items() if k.endswith("_x")}) > 1:
            for k in [k for k in arrays if k.endswith("_x")]:
                arrays[k] = arrays[k].astype(np.uint16)
        info = {"keys": keys, "n_steps": T, "files": {p: str(path) for p, path in paths.items()}}
        return arrays, info

    arrays, info = load_or_build(cdir, name, params, build)
    n_classes = max(N_CLASSES[name], len(info["keys"]))
    note = _protocol_note(name, protocol, valid_fraction, split_seed)
    common = dict(keys=info["keys"], protocol_note=note, source_files=info["files"], dt_ms=float(dt_ms))

    def part(p, idx=None):
        x, y, spk = arrays[f"{p}_x"], arrays[f"{p}_y"], arrays[f"{p}_speaker"]
        if idx is not None:
            x, y, spk = x[idx], y[idx], spk[idx]
        return ArrayDataset(x, np.asarray(y), n_classes, speakers=np.asarray(spk), **common)

    if split == "all":
        ps = SPLIT_FILES[name]
        return ArrayDataset(np.concatenate([arrays[f"{p}_x"] for p in ps]),
                            np.concatenate([arrays[f"{p}_y"] for p in ps]), n_classes,
                            speakers=np.concatenate([arrays[f"{p}_speaker"] for p in ps]), **common)
    if name == "ssc" or split == "test":
        return part(split)
    if protocol == "paper":
        return part("train" if split == "train" else "test")
    keep, held = stratified_split(np.asarray(arrays["train_y"]), valid_fraction, split_seed)
    return part("train", keep if split == "train" else held)


@register("shd")
def open_shd(root=None, split: str = "train", dt_ms: float = 10.0, pool: int = 5, protocol: str = "clean",
             valid_fraction: float = 0.1, frame_convention: str = "uniform", n_steps: int = 0,
             cache_dir: str = "", split_seed: int = 0) -> ArrayDataset:
    """Spiking Heidelberg Digits (20 classes): ``root/shd_{train,test}.h5`` (or tonic's ``root/SHD/``)."""
    return open_heidelberg("shd", root, split, dt_ms, pool, protocol, valid_fraction, frame_convention, n_steps,
                           cache_dir, split_seed)


@register("ssc")
def open_ssc(root=None, split: str = "train", dt_ms: float = 10.0, pool: int = 5, valid_fraction: float = 0.1,
             frame_convention: str = "uniform", n_steps: int = 0, cache_dir: str = "",
             split_seed: int = 0) -> ArrayDataset:
    """Spiking Speech Commands (35 classes): ``root/ssc_{train,valid,test}.h5`` (or ``root/SSC/``)."""
    return open_heidelberg("ssc", root, split, dt_ms, pool, "clean", valid_fraction, frame_convention, n_steps,
                           cache_dir, split_seed)
