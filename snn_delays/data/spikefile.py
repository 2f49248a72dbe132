"""The Heidelberg spike-file format (SHD/SSC HDF5): read and check, write, and bin into dense counts.

One module for the format that SHD, SSC, the FSDD cochlea spikes and the downloader's check all
use. File layout (``meta_info`` only in SHD)::

    spikes/times   vlen float16 per sample, spike times in SECONDS
    spikes/units   vlen uint16 per sample, channel ids 0..699 (0 = highest frequency)
    labels         class per sample
    extra/speaker  speaker id per sample
    extra/keys     class id -> word
    extra/meta_info/{gender, age, body_height}

A file is opened once, its ragged arrays read whole and the handle closed (h5py handles are not
fork-safe). Binning (:func:`bin_spikes`) gives dense counts (N, T, C), T in bins of ``dt_ms``:

* ``frame_convention="uniform"`` (default): a uniform grid from t = 0, bin = floor(t_ms / dt_ms),
  computed exactly (float16 seconds -> float64 -> x1000 is exact).
* ``frame_convention="first_spike"``: the reference's SpikingJelly frames - each sample shifted so
  that its first spike is at t = 0, ``ceil(t_last / dt)`` frames, a spike exactly on the last edge
  counted in the last frame. (SpikingJelly multiplies the float16 times by 1000 in float16; here
  the arithmetic is float64, so a few spikes within float16 rounding of an edge may differ.)

Channels are pooled by summing groups of ``pool`` adjacent units (700 -> ceil(700 / pool)); counts
are kept (uint8, uint16 if a bin ever exceeds 255).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuromorphic_export._io import atomic_path

from .registry import DatasetError

__all__ = ["SpikeRecords", "read_spike_file", "read_spike_file_attrs", "write_spike_file", "bin_spikes",
           "check_natural_length", "check_binning", "check_labels", "N_UNITS", "MAX_SPIKE_TIME_S", "LAYOUT_HELP"]

N_UNITS = 700
# Recordings in this format are clips of seconds (SHD <= 1.4 s, SSC <= 1 s); a spike later than this is
# a damaged file, and binning it would allocate (samples x its time / dt x channels) counts.
MAX_SPIKE_TIME_S = 600.0
# The largest binned array built without n_steps (bytes of uint8 counts): beyond it the longest sample
# sets a length nothing else needs, and data.n_steps (or a larger dt_ms) must say how much to keep.
MAX_BINNED_BYTES = 8 << 30
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
    f = _open(path)
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
    if n == 0:
        raise _fail(path, "the file holds no samples (spikes/times is empty)")
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
        late = [i for i, t in enumerate(times) if t.size and t.max() > MAX_SPIKE_TIME_S]
        if late:
            raise _fail(path, f"sample {late[0]} has a spike at {times[late[0]].max():g} s, beyond the "
                              f"{MAX_SPIKE_TIME_S:g} s any recording of this format lasts ({len(late)} such "
                              "sample(s)); the file is damaged")
        if all_u.size and (all_u.min() < 0 or all_u.max() >= N_UNITS):
            raise _fail(path, f"units must be in 0..{N_UNITS - 1}; found {all_u.min()}..{all_u.max()}")
    check_labels(labels, len(keys) if keys else None, path)
    return SpikeRecords(times, units, labels.astype(np.int64),
                        speakers.astype(np.int64) if speakers is not None else np.full(n, -1, np.int64), keys)


def check_labels(labels: np.ndarray, n_classes: int | None, source) -> None:
    """Raise DatasetError naming ``source`` and the offending values unless every label (N,) lies in
    0..n_classes-1 (only >= 0 when ``n_classes`` is None)."""
    labels = np.asarray(labels)
    bad = (labels < 0) if n_classes is None else ((labels < 0) | (labels >= n_classes))
    if bad.any():
        idx = np.flatnonzero(bad)
        values = sorted({int(v) for v in labels[idx]})
        allowed = ">= 0" if n_classes is None else f"0..{n_classes - 1} ({n_classes} classes)"
        raise DatasetError(f"{source}: {idx.size} label(s) out of range: value(s) "
                           f"{', '.join(map(str, values[:8]))}{' ...' if len(values) > 8 else ''} "
                           f"(first at sample {idx[0]}); labels must be {allowed}. The file is damaged or "
                           "belongs to another dataset")


def _open(path: Path):
    """The HDF5 file at ``path``, open for reading; DatasetError if it is not HDF5."""
    import h5py

    try:
        return h5py.File(path, "r")
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path} cannot be opened as HDF5 ({e}): it is truncated or corrupt. Delete it and "
                           "fetch it again (snn-delays data download ...).") from None


def read_spike_file_attrs(path: str | os.PathLike) -> dict:
    """The file-level attributes of a spike file (what :func:`write_spike_file` stored from ``attrs``)."""
    with _open(Path(path)) as f:
        return dict(f.attrs)


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


def check_binning(dt_ms: float, pool: int, frame_convention: str) -> None:
    """DatasetError unless the binning options are usable (dt_ms > 0 finite, pool >= 1, a known convention)."""
    if not (math.isfinite(float(dt_ms)) and dt_ms > 0):
        raise DatasetError(f"dt_ms must be > 0 (milliseconds per step); got {dt_ms}")
    if int(pool) != pool or pool < 1:
        raise DatasetError(f"pool must be an integer >= 1 (adjacent units summed into one channel); got {pool}")
    if frame_convention not in ("uniform", "first_spike"):
        raise DatasetError(f"frame_convention must be 'uniform' or 'first_spike'; got {frame_convention!r}")


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


def check_binned_size(n_samples: int, n_steps: int, n_channels: int, sample: np.ndarray, bins: np.ndarray,
                      dt_ms: float, source: str = "") -> None:
    """Refuse a binned array (n_samples, n_steps, n_channels) above MAX_BINNED_BYTES, naming the sample
    (of ``source``) whose latest spike (``bins`` per spike of ``sample``) sets the length."""
    size = n_samples * n_steps * n_channels
    if size <= MAX_BINNED_BYTES:
        return
    if bins.size and n_steps > int(bins.max()) + 1:  # the length was asked for, not set by a spike
        raise DatasetError(f"n_steps = {n_steps} steps of {dt_ms:g} ms would need {size / 2**30:.1f} GiB of bins for "
                           f"{n_samples} samples (limit {MAX_BINNED_BYTES / 2**30:.0f} GiB); the longest sample needs "
                           f"{int(bins.max()) + 1} steps: set a smaller data.n_steps")
    detail = ""
    if bins.size:
        last = int(np.argmax(bins))
        detail = (f"; sample {int(sample[last])}{' of ' + source if source else ''} has a spike in bin {int(bins[last])} "
                  f"({(int(bins[last]) + 1) * dt_ms / 1000:g} s)")
    raise DatasetError(f"binning {n_samples} samples x {n_steps} steps of {dt_ms:g} ms x {n_channels} channels "
                       f"would need {size / 2**30:.1f} GiB (limit {MAX_BINNED_BYTES / 2**30:.0f} GiB){detail}. "
                       "Set data.n_steps to the steps to keep (later spikes are dropped) or a larger data.dt_ms")


def check_natural_length(files: dict[str, list[np.ndarray]], dt_ms: float, frame_convention: str,
                         n_channels: int) -> int:
    """The common length (steps) of every sample of several files ({name: per-sample spike times}), the
    longest one's; DatasetError naming the file and sample that set it if the binned arrays of all
    files together would exceed MAX_BINNED_BYTES."""
    n_total = sum(len(t) for t in files.values())
    steps = {name: _spike_bins(t, dt_ms, frame_convention) for name, t in files.items()}
    longest = max(steps, key=lambda name: int(steps[name][1].max()) if steps[name][1].size else -1)
    sample, bins = steps[longest]
    T = max(int(bins.max()) + 1 if bins.size else 0, 1)
    check_binned_size(n_total, T, n_channels, sample, bins, dt_ms, longest)
    return T


def bin_spikes(times: list[np.ndarray], units: list[np.ndarray], dt_ms: float = 10.0, pool: int = 5,
               frame_convention: str = "uniform", n_steps: int = 0, n_units: int = N_UNITS,
               chunk: int = 2048) -> np.ndarray:
    """Dense spike counts (N, T, ceil(n_units / pool)), uint8 (uint16 if a count exceeds 255).

    ``times`` in seconds (float64 or float16), ``units`` 0..n_units-1. T = ``n_steps`` if > 0 (later
    spikes dropped), else the longest sample's bins.
    """
    check_binning(dt_ms, pool, frame_convention)
    n = len(times)
    n_ch = math.ceil(n_units / pool)
    sample, b = _spike_bins(times, dt_ms, frame_convention)
    T = int(n_steps) if n_steps > 0 else (int(b.max()) + 1 if b.size else 1)
    check_binned_size(n, T, n_ch, sample, b, dt_ms)
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
