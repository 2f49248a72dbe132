"""The tap ("sparse") backend of the delay synapse: only the kernel taps that carry weight.

The dense kernel k (out, in, Td) of :mod:`snn_delays.synapse` is, per kernel element e of a
connection i <- j, a weight spread over integer delays. Here each element keeps only P taps:

- evaluation (rounded delays): P = 1, the tap at ``round_delays(d)`` with the full weight. This is
  the dense rounded kernel exactly (same products, summed in another order).
- training with a small sigma: the P = 2R taps at integer delays floor(d) - R + 1 ... floor(d) + R,
  R = ceil(tail * sigma), with the SAME values as the dense Gaussian kernel (normalised over the full
  [0, Td - 1] range, see :func:`tap_values`). Every dropped tap lies at least R >= tail * sigma steps
  from the centre d; :func:`truncation_error` bounds the weight they carry.

A tap list is stored CSR-like per output neuron: ``indptr`` (out + 1), and for each tap k its input
neuron ``src[k]``, integer delay ``delay[k]`` and differentiable value ``value[k]``. The product

    y[t, b, i] = sum_{k in row i} value[k] * x[t - delay[k], b, src[k]]     (0 where t < delay[k])

runs as compiled loops (:mod:`.kernels.taps`, :mod:`.kernels.groups`) on CPU or, everywhere else, as
:func:`tap_conv_reference`, a pure-PyTorch scatter into the dense kernel followed by the dense causal
convolution (the plain path the fast one is tested against).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from .compiled import fast_available, set_threads
from .dense import causal_conv
from .kernels import gaussian as gaussian_loops
from .kernels import groups as group_loops
from .kernels import taps as tap_loops
from .packing import as_scaled_bytes

__all__ = ["TapPlan", "PlanCache", "tap_structure", "tap_values", "tap_conv", "tap_conv_cm", "tap_conv_reference",
           "truncation_error", "taps_per_element", "DEFAULT_TAIL"]

DEFAULT_TAIL = 4.0  # dropped taps lie >= 4 sigma from the centre: <= 3.4e-4 of the weight in all
_NORM_TAIL = 9.0  # the normaliser is summed over +-9 sigma (exp(-40.5) ~ 3e-18 left out): = full sum


def _radius(sigma: float, tail: float = DEFAULT_TAIL) -> int:
    """R, half the taps kept per element: ceil(tail * sigma) rounded up to even, so that the
    P = 2R taps form groups of four consecutive delays (what the compiled loops take)."""
    r = math.ceil(tail * sigma)
    return r + (r % 2)


def taps_per_element(sigma: float, kernel_size: int, tail: float = DEFAULT_TAIL) -> int:
    """P, the taps kept per kernel element: 1 for sigma <= 0 (rounded), else 2R, a multiple of 4
    (R = ceil(tail * sigma) rounded up to even, at most Td rounded up to even)."""
    if sigma <= 0:
        return 1
    return 2 * min(_radius(sigma, tail), kernel_size + kernel_size % 2)


@functools.lru_cache(maxsize=64)
def truncation_error(sigma: float, tail: float = DEFAULT_TAIL) -> float:
    """Upper bound of the fraction of an element's weight that sits on dropped taps of the dense
    kernel: the worst case over the centre's position between two integers and over where the
    range [0, Td - 1] cuts the Gaussian (the normaliser only sums taps inside the range)."""
    if sigma <= 0:
        return 0.0
    r = _radius(sigma, tail)
    far = r + math.ceil(10 * sigma) + 2
    offs = np.arange(-far, far + 1)  # integer delays relative to floor(d)
    kept = (offs >= -r + 1) & (offs <= r)
    worst = 0.0
    for frac in np.linspace(0.0, 1.0, 201)[:-1]:  # d = floor(d) + frac
        g = np.exp(-0.5 * ((offs - frac) / sigma) ** 2)
        for lo in range(-far, 1):  # the range [0, Td - 1] seen from floor(d): [lo, hi]
            for hi in range(0, far + 1):
                inside = (offs >= lo) & (offs <= hi)
                worst = max(worst, g[inside & ~kept].sum() / g[inside].sum())
    return float(worst)


class TapPlan:
    """The static part of a tap list (input neuron per tap, row pointers, the transposed order),
    which depends only on the mask, m and P; cache it while those do not change."""

    def __init__(self, mask: Tensor, m: int, p: int):
        out_f, in_f = mask.shape
        keep = mask.detach().cpu().numpy() != 0  # (out, in)
        rows, cols = np.nonzero(keep)  # row-major order: grouped by output neuron
        per = m * p
        self.shape = (out_f, in_f, m, p)
        self.rows = torch.from_numpy(rows.astype(np.int64))
        self.cols = torch.from_numpy(cols.astype(np.int64))
        counts = np.bincount(rows, minlength=out_f) * per
        self.indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        src = np.repeat(cols, per).astype(np.int64)
        self.src = src
        dst = np.repeat(rows, per).astype(np.int64)
        order = np.argsort(src, kind="stable")  # taps grouped by input neuron
        self.order = order
        counts_t = np.bincount(src, minlength=in_f)
        self.indptr_t = np.concatenate([[0], np.cumsum(counts_t)]).astype(np.int64)
        self.dst_t = dst[order]
        self.full = bool(keep.all())
        # groups of four consecutive taps (p a multiple of 4): the same rows, a quarter of the entries
        self.grouped = p % 4 == 0
        if self.grouped:
            per_g = per // 4
            self.indptr_g = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=out_f) * per_g)]).astype(np.int64)
            self.src_g = np.repeat(cols, per_g).astype(np.int64)
            order_g = np.argsort(self.src_g, kind="stable")
            self.order_g = order_g
            self.indptr_tg = np.concatenate([[0], np.cumsum(np.bincount(self.src_g, minlength=in_f))]).astype(np.int64)
            self.dst_tg = np.repeat(rows, per_g).astype(np.int64)[order_g]


def tap_structure(weight: Tensor, delay: Tensor, plan: TapPlan, sigma: float, kernel_size: int,
                  tail: float = DEFAULT_TAIL, eps: float = 1e-7) -> tuple[Tensor, Tensor]:
    """(value, delay_steps) of every tap, both flat (n_taps,), in the plan's order; within an element
    the P taps are at ascending consecutive delays, possibly outside [0, Td - 1] with value 0.

    ``value`` is differentiable w.r.t. ``weight`` (already masked) and ``delay`` (out, in, m);
    ``delay_steps`` is int64. sigma <= 0: one tap per element with the full weight, at ``delay``,
    which then holds the rounded delays (:func:`snn_delays.synapse.round_delays`)."""
    if plan.full:
        w = weight.reshape(-1, weight.shape[-1])  # (S, m) every synapse exists
        d = delay.reshape(-1, delay.shape[-1])
    else:
        w = weight[plan.rows, plan.cols]  # (S, m) synapses that exist
        d = delay[plan.rows, plan.cols]
    if sigma <= 0:
        steps = d.detach().long()  # integers already
        return w.reshape(-1), steps.reshape(-1)
    if fast_available(w):
        values, steps = _TapValues.apply(w, d, sigma, kernel_size, tail, eps)
    else:
        values, steps = tap_values(w, d, sigma, kernel_size, tail, eps)
    return values.reshape(-1), steps.reshape(-1)


def _windows(sigma: float, kernel_size: int, tail: float) -> tuple[int, int, bool]:
    """(R, the normaliser's half-window rn, whether the normaliser spans the full range)."""
    r = min(_radius(sigma, tail), kernel_size + kernel_size % 2)
    rn = max(r, math.ceil(_NORM_TAIL * sigma) + 1)
    return r, rn, 2 * rn >= kernel_size


class _TapValues(torch.autograd.Function):
    """:func:`tap_values` as compiled loops with the analytic gradient (the PyTorch version builds
    a dozen (E, 2 rn) temporaries per step); tested against it."""

    @staticmethod
    def forward(ctx, weight: Tensor, delay: Tensor, sigma: float, kernel_size: int, tail: float, eps: float):
        r, rn, full = _windows(sigma, kernel_size, tail)
        w = weight.detach().contiguous().reshape(-1)
        d = delay.detach().contiguous().reshape(-1)
        values = torch.empty(w.shape[0], 2 * r, dtype=weight.dtype)
        steps = torch.empty(w.shape[0], 2 * r, dtype=torch.int64)
        gaussian_loops.tap_values_forward(w.numpy(), d.numpy(), sigma, kernel_size, r, rn, full, eps,
                                          values.numpy(), steps.numpy())
        ctx.save_for_backward(w, d)
        ctx.args = (sigma, kernel_size, r, rn, full, eps, weight.shape)
        ctx.mark_non_differentiable(steps)
        return values.view(*weight.shape, 2 * r), steps.view(*weight.shape, 2 * r)

    @staticmethod
    def backward(ctx, gv: Tensor, _gs):
        w, d = ctx.saved_tensors
        sigma, kernel_size, r, rn, full, eps, shape = ctx.args
        gw, gd = torch.empty_like(w), torch.empty_like(d)
        gaussian_loops.tap_values_backward(w.numpy(), d.numpy(), sigma, kernel_size, r, rn, full, eps,
                                           gv.contiguous().reshape(-1, 2 * r).to(w.dtype).numpy(), gw.numpy(),
                                           gd.numpy())
        return gw.view(shape), gd.view(shape), None, None, None, None


def tap_values(weight: Tensor, delay: Tensor, sigma: float, kernel_size: int,
               tail: float = DEFAULT_TAIL, eps: float = 1e-7) -> tuple[Tensor, Tensor]:
    """Gaussian tap values (..., P) and their integer delays (..., P) for weight/delay (...): the
    delays floor(d) - R + 1 ... floor(d) + R, ascending; those outside [0, Td - 1] have value 0.

    The values equal the dense kernel's entries at those delays: the normaliser is the sum over all
    integer delays within +-9 sigma of d clipped to [0, Td - 1] (equal to the full-range sum to
    float precision), or over the full range when that window is wider."""
    r, rn, full = _windows(sigma, kernel_size, tail)
    base = torch.floor(delay.detach())  # (...)
    if full:  # normalise over the full range [0, Td - 1]
        grid = torch.arange(kernel_size, device=delay.device, dtype=delay.dtype)
        g_all = torch.exp(-0.5 * ((grid - delay.unsqueeze(-1)) / sigma) ** 2)  # (..., Td)
        norm = eps + g_all.sum(-1, keepdim=True)
        offs = torch.arange(-r + 1, r + 1, device=delay.device, dtype=delay.dtype)  # (P,)
        pos = base.unsqueeze(-1) + offs  # (..., P)
        valid = (pos >= 0) & (pos <= kernel_size - 1)
        g = torch.exp(-0.5 * ((pos - delay.unsqueeze(-1)) / sigma) ** 2) * valid
    else:  # normalise over +-rn around floor(d); the taps are its middle P entries
        offs_n = torch.arange(-rn + 1, rn + 1, device=delay.device, dtype=delay.dtype)  # (2rn,)
        pos_n = base.unsqueeze(-1) + offs_n  # (..., 2rn)
        valid = (pos_n >= 0) & (pos_n <= kernel_size - 1)
        g_all = torch.exp(-0.5 * ((pos_n - delay.unsqueeze(-1)) / sigma) ** 2) * valid
        norm = eps + g_all.sum(-1, keepdim=True)
        g = g_all[..., rn - r:rn + r]
        pos = pos_n[..., rn - r:rn + r]
    values = weight.unsqueeze(-1) * g / norm  # (..., P)
    return values, pos.long()  # taps outside [0, Td - 1] carry the value 0


# -- the product --------------------------------------------------------------------------------
def tap_conv_reference(x: Tensor, value: Tensor, steps: Tensor, plan: TapPlan, kernel_size: int) -> Tensor:
    """Pure PyTorch: scatter the taps into the dense (out, in, Td) kernel, then the dense causal
    convolution. x (T, B, in) -> (T, B, out)."""
    out_f, in_f, m, p = plan.shape
    dst = torch.from_numpy(np.repeat(plan.rows.numpy(), m * p)).to(x.device)
    src = torch.from_numpy(plan.src).to(x.device)
    steps = steps.to(x.device).clamp(0, kernel_size - 1)  # out-of-range taps carry 0
    flat = (dst * in_f + src) * kernel_size + (kernel_size - 1 - steps)
    k = value.new_zeros(out_f * in_f * kernel_size).index_add(0, flat, value)
    return causal_conv(x, k.view(out_f, in_f, kernel_size))


class _TapConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, value: Tensor, steps: Tensor, plan: TapPlan):
        # x (T, B, in) -> y (T, B, out); the loops want (T, C, B)
        xc = x.detach().contiguous()  # (T, in, B)
        t_len, _, b_len = xc.shape
        out_f = plan.shape[0]
        v = value.detach().contiguous()
        st = steps.contiguous()
        y = torch.empty(t_len, out_f, b_len, dtype=x.dtype)
        set_threads()
        tap_loops.tap_forward(xc.numpy(), plan.indptr, plan.src, st.numpy(), v.numpy(), y.numpy())
        ctx.plan = plan
        ctx.save_for_backward(xc if value.requires_grad else None, v, st)
        ctx.needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return y  # (T, out, B)

    @staticmethod
    def backward(ctx, gy: Tensor):
        xc, v, st = ctx.saved_tensors
        plan = ctx.plan
        gyc = gy.contiguous()  # (T, out, B)
        set_threads()
        gx = gv = None
        if ctx.needs[0]:
            order = plan.order
            gxc = torch.empty(gyc.shape[0], plan.shape[1], gyc.shape[2], dtype=gy.dtype)
            tap_loops.tap_backward_input(gyc.numpy(), plan.indptr_t, plan.dst_t, st.numpy()[order],
                                         v.numpy()[order], gxc.numpy())
            gx = gxc
        if ctx.needs[1]:
            gv = torch.empty_like(v)
            tap_loops.tap_backward_values(gyc.numpy(), xc.numpy(), plan.indptr, plan.src, st.numpy(), gv.numpy())
        return gx, gv, None, None


class _GroupConv(torch.autograd.Function):
    """The training form: taps in groups of four consecutive delays (base, v4)."""

    @staticmethod
    def forward(ctx, x: Tensor, v4: Tensor, base: Tensor, plan: TapPlan):
        xc = x.detach().contiguous()  # (T, in, B)
        t_len, _, b_len = xc.shape
        v = v4.detach().contiguous()
        bs = base.contiguous()
        y = torch.empty(t_len, plan.shape[0], b_len, dtype=x.dtype)
        set_threads()
        # spikes, dropout-scaled spikes and counts are s * (small integers): read them as bytes with s
        # folded into the values (a quarter of the memory traffic; and of the memory kept for backward)
        saved, scale = as_scaled_bytes(xc)
        group_loops.group_forward(saved.numpy(), plan.indptr_g, plan.src_g, bs.numpy(), (v * scale).numpy(),
                                  y.numpy())
        ctx.plan = plan
        ctx.scale = scale
        ctx.save_for_backward(saved if v4.requires_grad else None, v, bs)
        ctx.needs = (ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return y  # (T, out, B)

    @staticmethod
    def backward(ctx, gy: Tensor):
        xc, v, bs = ctx.saved_tensors
        plan = ctx.plan
        gyc = gy.contiguous()  # (T, out, B)
        set_threads()
        gx = gv = None
        if ctx.needs[0]:
            order = plan.order_g
            gxc = torch.empty(gyc.shape[0], plan.shape[1], gyc.shape[2], dtype=gy.dtype)
            group_loops.group_backward_input(gyc.numpy(), plan.indptr_tg, plan.dst_tg, bs.numpy()[order],
                                             np.ascontiguousarray(v.numpy()[order]), gxc.numpy())
            gx = gxc
        if ctx.needs[1]:
            gv = torch.empty_like(v)
            group_loops.group_backward_values(gyc.numpy(), xc.numpy(), plan.indptr_g, plan.src_g, bs.numpy(),
                                              gv.numpy())
            if ctx.scale != 1.0:
                gv *= ctx.scale  # x = scale * bytes
        return gx, gv, None, None


def tap_conv(x: Tensor, value: Tensor, steps: Tensor, plan: TapPlan, kernel_size: int) -> Tensor:
    """y (T, B, out) = tap product of x (T, B, in); compiled on CPU, else the PyTorch reference."""
    return tap_conv_cm(x.permute(0, 2, 1), value, steps, plan, kernel_size).permute(0, 2, 1)


def tap_conv_cm(x: Tensor, value: Tensor, steps: Tensor, plan: TapPlan, kernel_size: int) -> Tensor:
    """Channel-major: y (T, out, B) = tap product of x (T, in, B)."""
    if fast_available(x):
        if plan.grouped:
            return _GroupConv.apply(x, value.to(x.dtype).view(-1, 4), steps.view(-1, 4)[:, 0].contiguous(), plan)
        return _TapConv.apply(x, value.to(x.dtype), steps, plan)
    return tap_conv_reference(x.permute(0, 2, 1), value, steps, plan, kernel_size).permute(0, 2, 1)


class PlanCache:
    """The :class:`TapPlan` of one synapse per taps per element, rebuilt when its mask changes
    (a new tensor, or written in place) or when m does."""

    def __init__(self):
        self._plans: dict[int, tuple[tuple, TapPlan]] = {}

    def get(self, mask: Tensor, m: int, p: int) -> TapPlan:
        key = (p, m, mask.data_ptr(), mask._version)
        entry = self._plans.get(p)
        if entry is None or entry[0] != key:
            entry = (key, TapPlan(mask, m, p))
            self._plans[p] = entry
        return entry[1]
