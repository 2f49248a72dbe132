"""The embedded event-camera task: a dot moving on a small grid; the class is its direction and speed.

Counts (T, 2, H, W), by default T = 50 steps on a 16 x 16 grid with 2 polarities, 8 classes:
4 directions (right, left, down, up) x 2 speeds (1 pixel per step, 1 pixel per 3 steps).

How a sample is made: a dot starts at a uniformly random pixel and a random onset, and crosses
``path_px`` = 6 pixels in its direction, wrapping around the grid's edges (a torus). Like a DVS pixel
seeing an edge arrive, each pixel the dot enters fires one event at that step (with probability
``p_fire``, one step early or late with probability ``P_JITTER`` each; an event that jitter would put
in the same step as an earlier one of the same dot is dropped); its polarity is the dot's
contrast, ON or OFF, drawn per sample. Background noise adds events with probability ``p_noise`` per
pixel, polarity and step.

Why a network without delays or recurrence stays near chance, and why per-pixel totals say nothing:

* Every class makes the same number of events (path_px), one per pixel, on the same number of
  pixels: totals differ only in *where* the path lies, and the start is uniform on a torus, so every
  class has the same expected count at every pixel and polarity. A linear read-out of the
  time-summed counts stays at chance (the test measures it with least squares).
* Each step holds at most one of the dot's events (even with jitter: two adjacent pixels lit in one
  frame would show the path's orientation, and happen more often for fast dots, without any delay) (fast: one new pixel per step; slow: one every 3
  steps) and no trailing-edge (opposite-polarity) events: a single frame is one lit pixel, the same
  for every class. Direction and speed exist only in *when* neighbouring pixels fire relative to each
  other. A feed-forward network whose neurons forget within a step (no delays, no recurrence) sees
  frames one at a time and cannot tell the classes apart; one that delays the input of a pixel by the
  dot's travel time to its neighbour (d = offset / speed: per kernel element, as
  :class:`snn_delays.conv_synapse.DelayConv2d` learns) gets coincidences exactly for one direction and
  speed. (Omitting trailing-edge events is the one simplification against a real DVS: an ON/OFF pair
  on adjacent pixels in one frame would give the direction away without any delay.)

The class definitions are fixed; each split draws its samples from its own seeded stream, so splits
never share samples and every call gives the same arrays.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .arrays import require_samples
from .registry import DatasetError, register

__all__ = ["EventMotionTask", "open_event_motion", "DIRECTIONS", "SPEEDS_STEPS_PER_PX", "N_CLASSES"]

DIRECTIONS = ((0, 1), (0, -1), (1, 0), (-1, 0))  # (dy, dx): right, left, down, up
SPEEDS_STEPS_PER_PX = (1, 3)  # steps between entering consecutive pixels
N_CLASSES = len(DIRECTIONS) * len(SPEEDS_STEPS_PER_PX)
GRID = 16
PATH_PX = 6
P_FIRE = 0.9
P_JITTER = 0.1
P_NOISE = 0.002

_SPLIT_STREAM = {"train": 1, "valid": 2, "test": 3, "all": 4}


def class_of(direction: int, speed: int) -> int:
    """Class index of direction index (DIRECTIONS) and speed index (SPEEDS_STEPS_PER_PX)."""
    return direction * len(SPEEDS_STEPS_PER_PX) + speed


class EventMotionTask(Dataset):
    """``n_samples`` samples; items are (x float32 (T, 2, H, W), y int); ``x`` (N, T, 2, H, W) uint8."""

    def __init__(self, n_samples: int, split: str = "train", n_steps: int = 50, grid: int = GRID,
                 path_px: int = PATH_PX, seed: int = 1234, p_fire: float = P_FIRE, p_noise: float = P_NOISE):
        if split not in _SPLIT_STREAM:
            raise ValueError(f"unknown split {split!r}")
        span = (path_px - 1) * max(SPEEDS_STEPS_PER_PX) + 2  # steps the slowest dot needs, with jitter
        if n_steps < span + 1:
            raise ValueError(f"n_steps must be >= {span + 1} for paths of {path_px} pixels; got {n_steps}")
        if grid < path_px:
            raise ValueError(f"grid must be >= path_px ({path_px}); got {grid}")
        rng = np.random.default_rng([seed, _SPLIT_STREAM[split]])
        labels = rng.permutation(np.arange(n_samples) % N_CLASSES)
        x = (rng.random((n_samples, n_steps, 2, grid, grid)) < p_noise).astype(np.uint8)
        direction = labels // len(SPEEDS_STEPS_PER_PX)
        period = np.asarray(SPEEDS_STEPS_PER_PX)[labels % len(SPEEDS_STEPS_PER_PX)]
        dy, dx = np.asarray(DIRECTIONS)[direction].T
        y0, x0 = rng.integers(0, grid, size=n_samples), rng.integers(0, grid, size=n_samples)
        pol = rng.integers(0, 2, size=n_samples)
        duration = (path_px - 1) * period
        onset = 1 + (rng.random(n_samples) * (n_steps - 2 - duration - 1)).astype(np.int64)
        jitter = rng.choice([-1, 0, 1], p=[P_JITTER, 1 - 2 * P_JITTER, P_JITTER], size=(n_samples, path_px))
        fire = rng.random((n_samples, path_px)) < p_fire
        k = np.arange(path_px)
        t = np.clip(onset[:, None] + k * period[:, None] + jitter, 0, n_steps - 1)
        for later in range(1, path_px):  # jitter must not put two of the dot's events in one step
            for earlier in range(later):
                fire[:, later] &= ~(fire[:, earlier] & (t[:, earlier] == t[:, later]))
        yy = (y0[:, None] + k * dy[:, None]) % grid
        xx = (x0[:, None] + k * dx[:, None]) % grid
        n_idx = np.broadcast_to(np.arange(n_samples)[:, None], t.shape)
        p_idx = np.broadcast_to(pol[:, None], t.shape)
        np.add.at(x, (n_idx[fire], t[fire], p_idx[fire], yy[fire], xx[fire]), 1)
        self.x = torch.from_numpy(x)
        self.y = torch.from_numpy(labels.astype(np.int64))
        self.n_steps = int(n_steps)
        self.frame_shape = (2, grid, grid)
        self.n_channels = 2 * grid * grid
        self.n_classes = N_CLASSES
        self.keys = [f"{name}-{'fast' if s == 1 else 'slow'}" for name in ("right", "left", "down", "up")
                     for s in SPEEDS_STEPS_PER_PX]
        self.protocol_note = f"event-motion: synthetic, seed {seed}, split stream {split}"

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.x[i].float(), int(self.y[i])


@register("event-motion")
def open_event_motion(root=None, split: str = "train", motion_train: int = 2000, motion_valid: int = 400,
                      motion_test: int = 1000, motion_seed: int = 1234, motion_grid: int = GRID,
                      motion_p_fire: float = P_FIRE, motion_noise: float = P_NOISE,
                      n_steps: int = 0) -> EventMotionTask:
    """Open a split of the moving-dot task (no files; ``root`` is ignored)."""
    sizes = {"train": motion_train, "valid": motion_valid, "test": motion_test}
    if any(v < 0 for v in sizes.values()):
        raise DatasetError(f"event-motion split sizes must be >= 0; got {sizes}")
    require_samples(split, sizes, "data.motion_train/valid/test",
                    f"set data.motion_{'train' if split == 'all' else split} to 1 or more")
    for name, p in (("motion_p_fire", motion_p_fire), ("motion_noise", motion_noise)):
        if not 0.0 <= p <= 1.0:
            raise DatasetError(f"data.{name} is a probability in [0, 1]; got {p}")
    n = sum(sizes.values()) if split == "all" else sizes[split]
    try:
        return EventMotionTask(n, split, n_steps=n_steps or 50, grid=motion_grid, seed=motion_seed,
                               p_fire=motion_p_fire, p_noise=motion_noise)
    except ValueError as e:
        raise DatasetError(f"event-motion task: {e}") from None
