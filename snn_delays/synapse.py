"""The delay synapse: weights and real-valued delays realised as a causal 1-D temporal convolution.

Every connection i <- j holds ``kernel_count`` = m elements (w, d); d is in steps within
[0, Td - 1] where Td = ``kernel_size``. The connection's kernel has length Td; tap index
``Td - 1 - d`` multiplies the input ``d`` steps in the past (causal, left padding Td - 1), so

    I_i[t] = sum_j sum_e  w_ije * S_j[t - d_ije]          (eval: d rounded to an integer)

In training the tap is spread over neighbouring taps so that d gets a gradient; by default
(``interpolation="gauss"``) by a normalised Gaussian of width sigma (steps) (DCLS with Gaussian
interpolation)::

    k_ij[n] = sum_e w_ije / c_ije * exp(-0.5 * ((n - Td + d_ije + 1) / sigma)^2),
    c_ije   = eps + sum_n exp(-0.5 * ((n - Td + d_ije + 1) / sigma)^2),     eps = 1e-7

``interpolation="triangle"`` (normalised max(0, s - |x|)) and ``"bilinear"`` (max(0, 1 - |x|), not
normalised) are the thesis's other kernels, and ``learn_sigma=True`` gives every element its own
learned width s = s0 + |sigma_delta|; see :mod:`snn_delays.backends.interpolation` for the formulas.

Shapes are time-major: input (T, B, C_in) -> output (T, B, C_out).

The sums are computed by a backend (``backend=``: "dense", "fft", "sparse", "event" or "auto", the
cheapest here), all giving the same numbers up to float summation order; see
:mod:`snn_delays.backends`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from neuromorphic_export.chip import rounded_delays

from .backends.choice import BACKENDS, choose_backend
from .backends.compiled import fast_available
from .backends.dense import causal_conv, causal_conv_cm
from .backends.events import event_causal_conv_cm, nonzero_fraction
from .backends.fft import fft_causal_conv_cm
from .backends.gaussian import compiled_gaussian_kernel
from .backends.interpolation import INTERPOLATIONS, WIDTH_MIN, interp_taps_per_element
from .backends.interpolation import interp_tap_structure, interpolated_kernel
from .backends.taps import PlanCache, TapPlan, tap_conv_cm, tap_structure, taps_per_element

__all__ = [
    "DelaySynapse",
    "DenseConvSynapse",
    "gaussian_kernel",
    "interpolated_kernel",
    "INTERPOLATIONS",
    "rounded_kernel",
    "round_delays",
    "causal_conv",
    "causal_conv_cm",
    "random_fanin_mask",
    "KERNEL_EPS",
    "BACKENDS",
]

KERNEL_EPS = 1e-7


def round_delays(delay: Tensor, kernel_size: int) -> Tensor:
    """Integer delays (steps) used in evaluation and export: round half to even after clamping
    (``neuromorphic_export.chip.rounded_delays``, the exporter's rounding, on tensors)."""
    return rounded_delays(delay, kernel_size)


def gaussian_kernel(weight: Tensor, delay: Tensor, sigma: float | Tensor, kernel_size: int,
                    eps: float = KERNEL_EPS) -> Tensor:
    """Training kernel (out, in, Td) from weight and delay (out, in, m); sigma in steps (the
    Gaussian case of :func:`interpolated_kernel`)."""
    return interpolated_kernel(weight, delay, sigma, kernel_size, "gauss", eps)


def rounded_kernel(weight: Tensor, delay: Tensor, kernel_size: int) -> Tensor:
    """Evaluation kernel (out, in, Td): one tap per element at the rounded delay, full weight."""
    index = (kernel_size - 1 - round_delays(delay, kernel_size)).long()  # (out, in, m)
    k = weight.new_zeros(weight.shape[0], weight.shape[1], kernel_size)
    return k.scatter_add(2, index, weight)


def random_fanin_mask(out_features: int, in_features: int, fanin: int, generator: torch.Generator) -> Tensor:
    """A fixed 0/1 mask (out, in) keeping ``fanin`` random incoming synapses per output neuron."""
    if fanin <= 0 or fanin >= in_features:
        return torch.ones(out_features, in_features)
    scores = torch.rand(out_features, in_features, generator=generator)
    keep = scores.argsort(dim=1)[:, :fanin]
    mask = torch.zeros(out_features, in_features)
    mask.scatter_(1, keep, 1.0)
    return mask


def _check_input(x: Tensor, in_features: int, who: str, channel_major: bool = False) -> None:
    if x.dim() != 3 or x.shape[1 if channel_major else -1] != in_features:
        want = f"(T, {in_features}, B)" if channel_major else f"(T, B, {in_features})"
        raise ValueError(f"{who}: expected input {want}, got {tuple(x.shape)}")


class ScheduledSigma:
    """Mixin of the delay synapses: ``module.sigma = s`` (a number) calls ``set_sigma(s)``, which fills
    the ``sigma`` buffer in place (the schedule's width), instead of replacing the buffer."""

    def __setattr__(self, name, value):
        if name == "sigma" and "sigma" in self._buffers and not isinstance(value, Tensor):
            self.set_sigma(value)
            return
        super().__setattr__(name, value)


class DelaySynapse(ScheduledSigma, nn.Module):
    """Fully (or sparsely) connected synapses with learnable weights and delays.

    Args:
        in_features, out_features: neurons before / after.
        kernel_size: Td, the number of taps; delays live in [0, Td - 1] steps.
        kernel_count: m >= 1 (weight, delay) elements per connection; their kernels add.
        sigma: initial kernel width (steps); assign ``synapse.sigma = s`` to change it (the schedule
            does; no effect on a synapse with learned widths, whose widths start at this value).
        interpolation: "gauss" (default), "triangle" or "bilinear" (no width): the training kernel.
        learn_sigma: a learned width per element, s = s0 + |sigma_delta| (s0 = 0.27 gauss, 1
            triangle), instead of the shared ``sigma``; not for "bilinear".
        learn_delays / learn_weights: False freezes that parameter.
        mask: optional fixed (out, in) 0/1 connectivity (sparse fan-in).
        generator: a torch.Generator for reproducible initialisation.

    Parameters ``weight`` and ``delay`` (and ``sigma_delta`` with learned widths) are (out, in, m). ``forward`` maps (T, B, in) spike counts to
    currents (T, B, out): output step t depends only on input steps <= t.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int,
        kernel_count: int = 1,
        sigma: float | None = None,
        learn_delays: bool = True,
        learn_weights: bool = True,
        mask: Tensor | None = None,
        generator: torch.Generator | None = None,
        backend: str = "auto",
        interpolation: str = "gauss",
        learn_sigma: bool = False,
    ):
        super().__init__()
        if kernel_size < 1 or kernel_count < 1:
            raise ValueError("kernel_size and kernel_count must be >= 1")
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = kernel_size
        self.kernel_count = kernel_count
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}; got {backend!r}")
        self.backend = backend
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}")
        if learn_sigma and interpolation == "bilinear":
            raise ValueError("learn_sigma needs a kernel with a width: interpolation 'gauss' or 'triangle'")
        self.interpolation = interpolation
        self.learn_sigma = bool(learn_sigma)
        self._plans = PlanCache()
        if mask is None:
            mask = torch.ones(out_features, in_features)
        if tuple(mask.shape) != (out_features, in_features):
            raise ValueError(f"mask must be ({out_features}, {in_features}); got {tuple(mask.shape)}")
        self.register_buffer("mask", mask.float().clone())
        self.register_buffer("sigma", torch.tensor(float(sigma if sigma is not None else kernel_size // 2 or 0.5)))
        fan_in = self.mask.sum(1).clamp(min=1).unsqueeze(-1) * kernel_count  # (out, 1)
        bound = 1.0 / fan_in.sqrt()
        u = torch.rand(out_features, in_features, kernel_count, generator=generator)
        weight = (2 * u - 1) * bound.unsqueeze(-1)
        delay = torch.rand(out_features, in_features, kernel_count, generator=generator) * (kernel_size - 1)
        self.weight = nn.Parameter(weight * self.mask.unsqueeze(-1), requires_grad=learn_weights)
        self.delay = nn.Parameter(delay, requires_grad=learn_delays and kernel_size > 1)
        if self.learn_sigma:  # s = s0 + |sigma_delta| starts at the initial sigma
            s0 = WIDTH_MIN[interpolation]
            start = max(0.0, float(self.sigma) - s0)
            self.sigma_delta = nn.Parameter(torch.full_like(delay, start), requires_grad=kernel_size > 1)

    # -- sigma -----------------------------------------------------------------------------------
    def set_sigma(self, value: float) -> None:
        """The shared width (the schedule's); ignored by a synapse with learned widths."""
        if not self.learn_sigma:
            self.sigma.fill_(float(value))

    def width(self) -> "Tensor | float":
        """The training kernel's width (steps): (out, in, m) learned widths s0 + |sigma_delta|, or
        the shared ``sigma`` (a number)."""
        if self.learn_sigma:
            return WIDTH_MIN[self.interpolation] + self.sigma_delta.abs()
        return float(self.sigma)

    def _max_width(self) -> float:
        """The widest element's width among the synapses that exist (steps)."""
        return float(self.width().detach()[self.mask.bool()].max()) if self.learn_sigma else float(self.sigma)

    # -- kernels ---------------------------------------------------------------------------------
    def masked_weight(self) -> Tensor:
        return self.weight * self.mask.unsqueeze(-1)

    def rounded_delay(self) -> Tensor:
        """(out, in, m) integer delays (steps) of evaluation and export."""
        return round_delays(self.delay, self.kernel_size)

    def kernel(self) -> Tensor:
        """(out, in, Td): interpolated in training mode, one rounded tap in eval mode."""
        w = self.masked_weight()
        if not self.training:
            return rounded_kernel(w, self.delay, self.kernel_size)
        if self.interpolation != "gauss" or self.learn_sigma:
            return interpolated_kernel(w, self.delay, self.width(), self.kernel_size, self.interpolation, KERNEL_EPS)
        if fast_available(w) and self.delay.dtype == w.dtype:  # the same values, compiled (tested)
            return compiled_gaussian_kernel(w, self.delay, float(self.sigma), self.kernel_size, KERNEL_EPS)
        return gaussian_kernel(w, self.delay, self.sigma, self.kernel_size)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Bring delays back into [0, Td - 1] (call after every optimiser step)."""
        self.delay.clamp_(0, self.kernel_size - 1)

    def trainable_count(self) -> int:
        """Trainable parameters that exist (masked-out synapses do not count)."""
        per = int(self.mask.sum().item()) * self.kernel_count
        learned = [self.weight, self.delay] + ([self.sigma_delta] if self.learn_sigma else [])
        return per * sum(int(p.requires_grad) for p in learned)

    # -- forward ---------------------------------------------------------------------------------
    def resolved_backend(self, x: Tensor | None = None) -> str:
        """"dense", "fft", "sparse" or "event": what ``forward`` runs for an input like ``x`` (T, ., .) in
        the current mode."""
        probe = x if x is not None else self.weight
        t_len = int(x.shape[0]) if x is not None else 4 * self.kernel_size
        taps = None
        if self.training and (self.interpolation != "gauss" or self.learn_sigma):
            taps = interp_taps_per_element(self.interpolation, self._max_width(), self.kernel_size)
        density = None  # in training, an input that needs no gradient may run event-driven: its non-zero fraction
        if (self.backend == "auto" and self.training and x is not None and fast_available(x)
                and not (x.requires_grad and torch.is_grad_enabled())):
            density = nonzero_fraction(x)
        return choose_backend(self.backend, probe, t_len, self.kernel_size, self.kernel_count, self.mask,
                              self.sigma, self.training, taps=taps, density=density)

    def tap_plan(self, taps: int) -> TapPlan:
        """The static tap structure for ``taps`` taps per element (cached while the mask is unchanged)."""
        return self._plans.get(self.mask, self.kernel_count, taps)

    def taps(self) -> tuple[Tensor, Tensor, TapPlan]:
        """The product in tap form in the current mode: (value (n_taps,), delay (n_taps,) int64 steps,
        plan); training: the interpolated taps around each real delay (values differentiable w.r.t.
        the parameters; taps outside [0, Td - 1] hold 0), eval: one tap per element at the rounded
        delay with the full weight. Ordered by output neuron as ``plan.indptr`` says."""
        w = self.masked_weight()
        if self.kernel_size == 1 or not self.training:
            plan = self.tap_plan(1)
            value, steps = tap_structure(w, self.rounded_delay(), plan, 0.0, self.kernel_size)
            return value, steps, plan
        if self.interpolation != "gauss" or self.learn_sigma:
            return interp_tap_structure(w, self.delay, self.width(), self.mask, self.interpolation,
                                        self.kernel_size, self._plans, KERNEL_EPS)
        sigma = float(self.sigma)
        plan = self.tap_plan(taps_per_element(sigma, self.kernel_size))
        value, steps = tap_structure(w, self.delay, plan, sigma, self.kernel_size)
        return value, steps, plan

    def forward(self, x: Tensor) -> Tensor:
        """x (T, B, in) -> (T, B, out)."""
        _check_input(x, self.in_features, "DelaySynapse")
        return self.forward_cm(x.permute(0, 2, 1)).permute(0, 2, 1)

    def forward_cm(self, x: Tensor) -> Tensor:
        """The same on channel-major tensors, x (T, in, B) -> (T, out, B): the layout the model
        keeps between layers (the compiled loops run over the batch, innermost)."""
        _check_input(x, self.in_features, "DelaySynapse", channel_major=True)
        if self.kernel_size == 1:  # no delays: a matrix product
            return torch.matmul(self.masked_weight().sum(-1), x)  # (T, out, B)
        backend = self.resolved_backend(x)
        if backend == "sparse":  # only the taps that carry weight (interpolated, or one rounded tap)
            value, steps, plan = self.taps()
            return tap_conv_cm(x, value, steps, plan, self.kernel_size)
        if backend == "fft":
            return fft_causal_conv_cm(x, self.kernel())
        if backend == "event":  # driven by the input's non-zero entries (the dense kernel)
            return event_causal_conv_cm(x, self.kernel())
        return causal_conv_cm(x, self.kernel())

    def extra_repr(self) -> str:
        return (f"{self.in_features}, {self.out_features}, kernel_size={self.kernel_size}, "
                f"kernel_count={self.kernel_count}, interpolation={self.interpolation}, "
                f"{'learned widths' if self.learn_sigma else f'sigma={float(self.sigma):.3g}'}, "
                f"learn_delays={self.delay.requires_grad}, learn_weights={self.weight.requires_grad}, "
                f"backend={self.backend}")


class DenseConvSynapse(nn.Module):
    """Ablation "dense conv delays": an ordinary causal Conv1d with a free (out, in, Td) kernel."""

    backend = "dense"  # always the direct convolution

    def __init__(self, in_features: int, out_features: int, kernel_size: int,
                 mask: Tensor | None = None, generator: torch.Generator | None = None):
        super().__init__()
        self.in_features, self.out_features, self.kernel_size = in_features, out_features, kernel_size
        if mask is None:
            mask = torch.ones(out_features, in_features)
        self.register_buffer("mask", mask.float().clone())
        bound = 1.0 / math.sqrt(in_features * kernel_size)
        k = (2 * torch.rand(out_features, in_features, kernel_size, generator=generator) - 1) * bound
        self.kernel_weight = nn.Parameter(k)

    def set_sigma(self, value: float) -> None:  # no Gaussian here
        pass

    def clamp_(self) -> None:
        pass

    def kernel(self) -> Tensor:
        return self.kernel_weight * self.mask.unsqueeze(-1)

    def trainable_count(self) -> int:
        return int(self.mask.sum().item()) * self.kernel_size

    def forward(self, x: Tensor) -> Tensor:
        """x (T, B, in) -> (T, B, out)."""
        _check_input(x, self.in_features, "DenseConvSynapse")
        return causal_conv(x, self.kernel())

    def forward_cm(self, x: Tensor) -> Tensor:
        """Channel-major: x (T, in, B) -> (T, out, B)."""
        _check_input(x, self.in_features, "DenseConvSynapse", channel_major=True)
        return causal_conv_cm(x, self.kernel())
