"""Event-camera data shared by the event sources: binning events into (T, 2, H, W) counts, the checks
every reader makes, and the Dataset they return.

An event is (x, y, t_us, p): pixel column x and row y on a sensor of (H, W) pixels, a timestamp in
microseconds, a polarity p in {0 (OFF), 1 (ON)}. A sample's events are binned from its first
timestamp ``t0_us`` (or a given window start): step = floor((t_us - t0_us) / dt_us), kept while
step < n_steps; pixels are pooled by ``downsample`` (x // downsample, y // downsample; H, W rounded
up). Counts are uint8, uint16 once a bin exceeds 255.

Readers stream their files in chunks into an :class:`EventFrames` accumulator, so the memory a
sample needs is its binned frames plus one chunk, whatever the recording's length. Every check
failure (a coordinate outside the sensor, a timestamp smaller than the one before it) raises
:class:`~snn_delays.data.registry.DatasetError` with one line naming the file.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from .arrays import ArrayDataset, require_samples, stratified_split
from .registry import DatasetError

__all__ = ["EventFrames", "EventDataset", "check_event_binning", "frame_size", "join_parts"]


def frame_size(sensor_hw: tuple[int, int], downsample: int) -> tuple[int, int]:
    """(H, W) of the binned frames of a sensor (H, W) pooled by ``downsample``."""
    return math.ceil(sensor_hw[0] / downsample), math.ceil(sensor_hw[1] / downsample)


def check_event_binning(dt_ms: float, n_steps: int, downsample: int) -> None:
    """DatasetError unless the binning options are usable."""
    if not (math.isfinite(float(dt_ms)) and dt_ms > 0):
        raise DatasetError(f"dt_ms must be > 0 (milliseconds per step); got {dt_ms}")
    if int(n_steps) != n_steps or n_steps < 1:
        raise DatasetError(f"n_steps must be an integer >= 1 (steps per sample); got {n_steps}")
    if int(downsample) != downsample or downsample < 1:
        raise DatasetError(f"downsample must be an integer >= 1 (pixels pooled per side); got {downsample}")


class EventFrames:
    """Accumulates one sample's events, chunk by chunk, into counts (n_steps, 2, H, W).

    ``add(x, y, t_us, p)`` takes int arrays of one chunk in file order; the checks run on every chunk
    and across chunk boundaries. ``t0_us``: the window start (None: the first event's timestamp).
    """

    def __init__(self, path: str | os.PathLike, sensor_hw: tuple[int, int], n_steps: int, dt_us: float,
                 downsample: int = 1, t0_us: int | None = None):
        self.path = str(path)
        self.sensor_hw = sensor_hw
        self.n_steps, self.dt_us, self.downsample = int(n_steps), float(dt_us), int(downsample)
        self.t0_us = t0_us
        self.last_us: int | None = None
        h, w = frame_size(sensor_hw, downsample)
        self._flat = np.zeros(self.n_steps * 2 * h * w, dtype=np.int64)
        self._hw = (h, w)
        self.n_events = 0

    def check(self, x: np.ndarray, y: np.ndarray, t_us: np.ndarray, p: np.ndarray) -> None:
        """The file's events must lie on the sensor, with polarity 0/1 and non-decreasing timestamps."""
        if x.size == 0:
            return
        h, w = self.sensor_hw
        bad = (x < 0) | (x >= w) | (y < 0) | (y >= h)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DatasetError(f"{self.path}: event at ({int(x[i])}, {int(y[i])}) outside the {w} x {h} sensor "
                               f"(t = {int(t_us[i])} us): the file is corrupt or not this dataset's")
        if ((p != 0) & (p != 1)).any():
            raise DatasetError(f"{self.path}: polarity other than 0/1: the file is corrupt")
        back = np.flatnonzero(np.diff(t_us) < 0)
        if self.last_us is not None and t_us[0] < self.last_us:
            back = np.concatenate([[-1], back])
        if back.size:
            i = int(back[0])
            before = self.last_us if i < 0 else int(t_us[i])
            raise DatasetError(f"{self.path}: timestamps run backwards ({before} us then {int(t_us[i + 1])} us, "
                               f"event {self.n_events + i + 1}): the file is corrupt")
        self.last_us = int(t_us[-1])

    def add(self, x: np.ndarray, y: np.ndarray, t_us: np.ndarray, p: np.ndarray, checked: bool = False) -> None:
        if not checked:
            self.check(x, y, t_us, p)
        if x.size == 0:
            return
        if self.t0_us is None:
            self.t0_us = int(t_us[0])
        self.n_events += int(x.size)
        step = np.floor((t_us.astype(np.float64) - self.t0_us) / self.dt_us).astype(np.int64)
        keep = (step >= 0) & (step < self.n_steps)
        if not keep.any():  # a chunk outside this window (most chunks of a long recording)
            return
        h, w = self._hw
        ds = self.downsample
        idx = ((step[keep] * 2 + p[keep].astype(np.int64)) * h + y[keep].astype(np.int64) // ds) * w \
            + x[keep].astype(np.int64) // ds
        if idx.size * 8 < self._flat.size:
            np.add.at(self._flat, idx, 1)
        else:
            self._flat += np.bincount(idx, minlength=self._flat.size)

    def frames(self) -> np.ndarray:
        """(n_steps, 2, H, W) counts, uint8 (uint16 if a bin exceeds 255, clipped at 65535)."""
        dtype = np.uint8 if self._flat.max(initial=0) <= 255 else np.uint16
        return np.minimum(self._flat, np.iinfo(dtype).max).astype(dtype).reshape(self.n_steps, 2, *self._hw)


class EventDataset(ArrayDataset):
    """Items ``(x float32 (T, 2, H, W), y int)`` backed by ``x`` (N, T, 2, H, W) counts and ``y`` (N,).

    Attributes: ``n_steps`` T, ``frame_shape`` (2, H, W), ``n_channels`` = 2 H W (the flattened size
    a dense first layer sees), ``n_classes``, and any keyword attributes (``dt_ms``, ``files`` ...).
    """

    def __init__(self, x, y, n_classes: int, **attrs):
        super().__init__(x, y, n_classes, **attrs)
        self.frame_shape = tuple(int(s) for s in self.x.shape[2:])

    @staticmethod
    def _check_shape(x: torch.Tensor) -> None:
        if x.dim() != 5 or x.shape[2] != 2:
            raise ValueError(f"expected x of shape (N, T, 2, H, W), got {tuple(x.shape)}")


def join_parts(xs: list[np.ndarray], ys: list[np.ndarray], per_sample: list, split: str, valid_fraction: float,
               split_seed: int, where: str) -> tuple[np.ndarray, np.ndarray, list]:
    """The cached parts of a split joined ((N, T, 2, H, W), (N,), a list of one entry per sample), and
    for "train"/"valid" the seeded stratified slice of the training part (``valid_fraction`` held out)."""
    x = xs[0] if len(xs) == 1 else np.concatenate(xs)
    y = ys[0] if len(ys) == 1 else np.concatenate(ys)
    if split in ("train", "valid"):
        keep, held = stratified_split(y, valid_fraction, split_seed)
        require_samples(split, {"train": len(keep), "valid": len(held)}, where)
        idx = keep if split == "train" else held
        x, y, per_sample = x[idx], y[idx], [per_sample[i] for i in idx]
    return x, y, per_sample
