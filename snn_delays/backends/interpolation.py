"""The interpolation kernels of the delay synapse (the thesis behind DCLS, chapter 3): how a
real-valued delay d is spread over the integer taps in training, and their fast tap form.

Tap n = 0 .. Td - 1, c = Td - 1 - d the tap of delay d, x = n - c, eps = 1e-7, w the weight:

- ``"gauss"``:    k[n] = w G_s(x) / (eps + sum_n' G_s(n' - c)),  G_s(x) = exp(-x^2 / (2 s^2))
- ``"triangle"``: k[n] = w L_s(x) / (eps + sum_n' L_s(n' - c)),  L_s(x) = max(0, s - |x|)
- ``"bilinear"``: k[n] = w max(0, 1 - |x|)    (the taps floor(d) and ceil(d); no width, no normaliser)

s is the synapse's shared width (set by the schedule) or one learned width per element,
s = s0 + |sigma_delta| (s0 = :data:`WIDTH_MIN`). :func:`interpolated_kernel` is the plain
formulation (dense (out, in, Td) kernel, autograd); :func:`interp_tap_structure` keeps only the
P = 2R taps around each delay that can carry weight (R >= ceil(s) for the triangle, 1 for bilinear;
the Gaussian's R = ceil(4 s) as in :mod:`.taps`) for the compiled tap product of :mod:`.taps`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .compiled import fast_available
from .kernels import interpolation as interp_loops
from .taps import PlanCache, TapPlan, taps_per_element

__all__ = ["INTERPOLATIONS", "WIDTH_MIN", "interpolated_kernel", "interp_radius", "interp_taps_per_element",
           "interp_tap_values", "interp_tap_values_reference", "interp_tap_structure"]

INTERPOLATIONS = ("gauss", "triangle", "bilinear")
WIDTH_MIN = {"gauss": 0.27, "triangle": 1.0, "bilinear": 0.0}  # s0 of learned widths (the thesis's minima)


def _shape(x: Tensor, width: "float | Tensor", interpolation: str) -> Tensor:
    """The unnormalised kernel shape at offsets x (any shape; width broadcast against it)."""
    if interpolation == "gauss":
        return torch.exp(-0.5 * (x / width) ** 2)
    if interpolation == "triangle":
        return torch.relu(width - x.abs())
    if interpolation == "bilinear":
        return torch.relu(1 - x.abs())
    raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}")


def _element_shapes(delay: Tensor, width: "float | Tensor", kernel_size: int, interpolation: str,
                    eps: float) -> Tensor:
    """(..., Td): per element the (normalised) shape on taps n = 0 .. Td - 1."""
    n = torch.arange(kernel_size, device=delay.device, dtype=delay.dtype)  # (Td,)
    centre = (kernel_size - 1) - delay  # (...)
    s = width.unsqueeze(-1) if isinstance(width, Tensor) and width.dim() else width
    g = _shape(n - centre.unsqueeze(-1), s, interpolation)  # (..., Td)
    if interpolation == "bilinear":
        return g
    return g / (eps + g.sum(-1, keepdim=True))


def interpolated_kernel(weight: Tensor, delay: Tensor, width: "float | Tensor", kernel_size: int,
                        interpolation: str = "gauss", eps: float = 1e-7) -> Tensor:
    """Training kernel (out, in, Td) from weight and delay (out, in, m); ``width`` (steps) a number
    or one per element (out, in, m). The plain formulation, differentiable by autograd."""
    g = _element_shapes(delay, width, kernel_size, interpolation, eps)  # (out, in, m, Td)
    return (weight.unsqueeze(-1) * g).sum(2)  # (out, in, Td)


# -- tap form -----------------------------------------------------------------------------------
def interp_radius(interpolation: str, width_max: float, kernel_size: int) -> int:
    """R, half the taps kept per element (P = 2R), even so that the taps form groups of four
    consecutive delays (the compiled training loops): 2 for bilinear (its 2 taps + 2 zeros: the
    grouped loop is faster than the one-tap loop on 2 taps, see benchmarks/README.md), ceil(s) for
    the triangle, ceil(4 s) for the Gaussian; at most Td rounded up to even."""
    if interpolation == "gauss":
        return taps_per_element(width_max, kernel_size) // 2
    r = 1 if interpolation == "bilinear" else min(max(1, math.ceil(width_max)), kernel_size)
    return r + (r % 2)


def interp_taps_per_element(interpolation: str, width_max: float, kernel_size: int) -> int:
    """P = 2R taps per element in training (see :func:`interp_radius`)."""
    return 2 * interp_radius(interpolation, width_max, kernel_size)


def interp_tap_values_reference(weight: Tensor, delay: Tensor, width: "float | Tensor", kernel_size: int,
                                interpolation: str, r: int, eps: float = 1e-7) -> tuple[Tensor, Tensor]:
    """PyTorch twin: the dense formula's values (E, P) at delays floor(d) - r + 1 ... floor(d) + r
    (ascending, (E, P) int64; those outside [0, Td - 1] hold 0) of elements (E,)."""
    g = _element_shapes(delay, width, kernel_size, interpolation, eps)  # (E, Td), tap n = Td - 1 - delay
    offs = torch.arange(-r + 1, r + 1, device=delay.device)
    pos = torch.floor(delay.detach()).long().unsqueeze(-1) + offs  # (E, P) integer delays
    valid = (pos >= 0) & (pos <= kernel_size - 1)
    taps = (kernel_size - 1 - pos).clamp(0, kernel_size - 1)
    values = weight.unsqueeze(-1) * torch.gather(g, -1, taps) * valid
    return values, pos


class _InterpTapValues(torch.autograd.Function):
    """:func:`interp_tap_values_reference` as compiled loops with the analytic gradient (tested)."""

    @staticmethod
    def forward(ctx, weight: Tensor, delay: Tensor, width: Tensor, mode: int, kernel_size: int, r: int, eps: float):
        w = weight.detach().contiguous()
        d = delay.detach().contiguous()
        s = width.detach().to(w.dtype).contiguous()
        values = torch.empty(w.shape[0], 2 * r, dtype=w.dtype)
        steps = torch.empty(w.shape[0], 2 * r, dtype=torch.int64)
        interp_loops.interp_values_forward(mode, w.numpy(), d.numpy(), s.numpy(), kernel_size, r, eps,
                                           values.numpy(), steps.numpy())
        ctx.save_for_backward(w, d, s)
        ctx.args = (mode, kernel_size, r, eps)
        ctx.mark_non_differentiable(steps)
        return values, steps

    @staticmethod
    def backward(ctx, gv: Tensor, _gs):
        w, d, s = ctx.saved_tensors
        mode, kernel_size, r, eps = ctx.args
        gw, gd, gs = torch.empty_like(w), torch.empty_like(d), torch.empty_like(s)
        interp_loops.interp_values_backward(mode, w.numpy(), d.numpy(), s.numpy(), kernel_size, r, eps,
                                            gv.contiguous().to(w.dtype).numpy(), gw.numpy(), gd.numpy(), gs.numpy())
        return gw, gd, gs, None, None, None, None


def interp_tap_values(weight: Tensor, delay: Tensor, width: "float | Tensor", kernel_size: int,
                      interpolation: str, r: int, eps: float = 1e-7) -> tuple[Tensor, Tensor]:
    """Tap values and delays (E, P) of elements (E,): compiled where the loops run, else the twin."""
    if fast_available(weight) and delay.dtype == weight.dtype:
        s = width if isinstance(width, Tensor) and width.dim() else torch.full_like(delay, float(width))
        return _InterpTapValues.apply(weight, delay, s, interp_loops.MODES[interpolation], kernel_size, r, eps)
    return interp_tap_values_reference(weight, delay, width, kernel_size, interpolation, r, eps)


def interp_tap_structure(weight: Tensor, delay: Tensor, width: "float | Tensor", mask: Tensor, interpolation: str,
                         kernel_size: int, plans: PlanCache, eps: float = 1e-7) -> tuple[Tensor, Tensor, TapPlan]:
    """(value (n_taps,), delay steps (n_taps,) int64, plan) of the training kernel in tap form;
    ``weight`` (masked), ``delay`` and a per-element ``width`` (out, in, m), or a shared width."""
    per_element = isinstance(width, Tensor) and width.dim() > 0
    s = width[mask.bool()].reshape(-1) if per_element else width  # widths of the synapses that exist
    r = interp_radius(interpolation, float(s.detach().max()) if per_element else float(width), kernel_size)
    plan = plans.get(mask, weight.shape[-1], 2 * r)
    if plan.full:  # (S, m) the synapses that exist, in the plan's (row-major) order
        pick = lambda t: t.reshape(-1)
    else:
        pick = lambda t: t[plan.rows, plan.cols].reshape(-1)
    values, steps = interp_tap_values(pick(weight), pick(delay), s, kernel_size, interpolation, r, eps)
    return values.reshape(-1), steps.reshape(-1), plan
