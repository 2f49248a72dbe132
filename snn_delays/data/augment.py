"""Training-time augmentation of input batches (the ``data.aug_*`` keys): what SNN speech work uses to
generalise across speakers.

A batch is ``x`` (T, B, C) float: steps, samples, channels (mel bands or cochlea channels, low
index = one end of the spectrum). Each transform draws its random values from one
:class:`torch.Generator` seeded per epoch, so a run is reproducible and a resumed run draws the same:

* ``aug_time_shift`` S: each sample moved by an integer number of steps in [-S, S], the steps
  uncovered filled with that sample's smallest value (its silence);
* ``aug_time_stretch`` a: the whole batch resampled in time (linear interpolation) by a factor in
  [1 - a, 1 + a], cut or padded (with each sample's smallest value) back to T steps;
* ``aug_freq_shift`` F: each sample's channels moved by an integer in [-F, F] (a crude vocal tract
  length change), the uncovered channels filled with the edge channel;
* ``aug_gain`` g: a per-sample offset uniform in [-g, g] added everywhere (a gain change of log
  input);
* ``aug_noise`` s: Gaussian noise of standard deviation s added;
* ``aug_freq_mask`` F / ``aug_time_mask`` S (SpecAugment's masks): in each sample, two bands of
  up to F consecutive channels and two spans of up to S consecutive steps (widths and starts
  uniform) set to that sample's mean value (0 for normalised mel, about silence for counts).

Only the training split is augmented (the trainer calls :func:`batch_augmenter` once per epoch).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

__all__ = ["batch_augmenter", "time_shift", "freq_shift", "time_stretch", "mask_spans", "N_MASKS"]

N_MASKS = 2  # masks of each kind per sample (SpecAugment's LD policy)


def _shift(x: Tensor, shifts: Tensor, dim: int, fill: Tensor | None) -> Tensor:
    """Move sample b of ``x`` (T, B, C) by ``shifts[b]`` along ``dim`` (0: time, 2: channels);
    what is uncovered gets ``fill[b]`` (time) or the nearest edge value (``fill`` None)."""
    n = x.shape[dim]
    pos = torch.arange(n, device=x.device).unsqueeze(1) - shifts.to(x.device).unsqueeze(0)  # (n, B) source
    inside = (pos >= 0) & (pos < n)
    src = pos.clamp(0, n - 1)
    if dim == 0:
        out = torch.gather(x, 0, src.unsqueeze(2).expand_as(x))
        return torch.where(inside.unsqueeze(2), out, fill.view(1, -1, 1)) if fill is not None else out
    idx = src.t().unsqueeze(0).expand(x.shape[0], -1, -1)  # (T, B, C)
    return torch.gather(x, 2, idx)


def time_shift(x: Tensor, shifts: Tensor) -> Tensor:
    """Sample b of ``x`` (T, B, C) delayed by ``shifts[b]`` steps (negative: advanced), the uncovered
    steps filled with that sample's smallest value."""
    return _shift(x, shifts, 0, x.amin(dim=(0, 2)))


def freq_shift(x: Tensor, shifts: Tensor) -> Tensor:
    """Sample b's channel c becomes its channel c - shifts[b] (clamped to the edge channels)."""
    return _shift(x, shifts, 2, None)


def time_stretch(x: Tensor, factor: float) -> Tensor:
    """``x`` (T, B, C) resampled to ``round(T * factor)`` steps (linear) and cut/padded back to T."""
    t = x.shape[0]
    n = max(1, int(round(t * factor)))
    if n == t:
        return x
    y = torch.nn.functional.interpolate(x.permute(1, 2, 0), size=n, mode="linear", align_corners=False)
    y = y.permute(2, 0, 1)
    if n >= t:
        return y[:t].contiguous()
    fill = x.amin(dim=(0, 2)).view(1, -1, 1).expand(t - n, -1, x.shape[2])
    return torch.cat([y, fill], dim=0)


def mask_spans(x: Tensor, starts: Tensor, widths: Tensor, dim: int) -> Tensor:
    """``x`` (T, B, C) with, for each sample b and mask k, the entries ``starts[k, b] <= i <
    starts[k, b] + widths[k, b]`` along ``dim`` (0: time, 2: channels) set to sample b's mean."""
    n = x.shape[dim]
    pos = torch.arange(n, device=x.device).view(-1, 1, 1)  # (n, 1, 1)
    lo, hi = starts.to(x.device).unsqueeze(0), (starts + widths).to(x.device).unsqueeze(0)  # (1, K, B)
    hit = ((pos >= lo) & (pos < hi)).any(dim=1)  # (n, B)
    hit = hit.unsqueeze(2) if dim == 0 else hit.t().unsqueeze(0)  # (T, B, 1) or (1, B, C)
    return torch.where(hit, x.mean(dim=(0, 2)).view(1, -1, 1), x)


def _draw_masks(n: int, width: int, b: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    widths = torch.randint(0, min(width, n) + 1, (N_MASKS, b), generator=gen)
    starts = (torch.rand((N_MASKS, b), generator=gen) * (n - widths + 1)).long()
    return starts, widths


def batch_augmenter(data_cfg, seed: int) -> Callable[[Tensor], Tensor] | None:
    """The augmentation of one epoch as a function of a batch, or None when every ``aug_*`` key is 0."""
    d = data_cfg
    if not (d.aug_time_shift or d.aug_time_stretch or d.aug_freq_shift or d.aug_noise or d.aug_gain
            or d.aug_freq_mask or d.aug_time_mask):
        return None
    gen = torch.Generator().manual_seed(int(seed))

    def augment(x: Tensor) -> Tensor:
        b = x.shape[1]
        if d.aug_time_stretch:
            factor = 1.0 + d.aug_time_stretch * (2.0 * float(torch.rand((), generator=gen)) - 1.0)
            x = time_stretch(x, factor)
        if d.aug_time_shift:
            x = time_shift(x, torch.randint(-d.aug_time_shift, d.aug_time_shift + 1, (b,), generator=gen))
        if d.aug_freq_shift:
            x = freq_shift(x, torch.randint(-d.aug_freq_shift, d.aug_freq_shift + 1, (b,), generator=gen))
        if d.aug_gain:
            x = x + (d.aug_gain * (2.0 * torch.rand(b, generator=gen) - 1.0)).to(x).view(1, b, 1)
        if d.aug_noise:
            x = x + d.aug_noise * torch.randn(x.shape, generator=gen).to(x)
        if d.aug_freq_mask:
            x = mask_spans(x, *_draw_masks(x.shape[2], d.aug_freq_mask, b, gen), dim=2)
        if d.aug_time_mask:
            x = mask_spans(x, *_draw_masks(x.shape[0], d.aug_time_mask, b, gen), dim=0)
        return x

    return augment
