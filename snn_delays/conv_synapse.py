"""The convolutional delay synapse (DCLS 3-1D): a k x k spatial kernel per (out, in) channel pair
whose elements each carry a learned real delay along time.

Input spike counts x (T, B, C_in, H, W), time-major; output currents (T, B, C_out, H_out, W_out) with
H_out = floor((H + 2 p - k) / s) + 1 (same for W), p = ``padding``, s = ``stride``::

    I[t, b, o, y, x] = sum_{i, u, v}  w[o, i, u, v] * S[t - d[o, i, u, v], b, i, s y + u - p, s x + v - p]

(inputs outside the frame or before t = 0 are 0). Delays d are in steps within [0, Td - 1],
Td = ``kernel_size_steps``. Output step t depends only on input steps <= t.

Where the delays live (``delay_per``):

* ``"element"`` (default, DCLS 3-1D as dcls's ``Dcls3_1d``): one delay per kernel element
  (out, in, u, v). This is what direction and speed selectivity needs: a moving dot crosses the
  receptive field's positions u, v at times that depend on its speed and direction, and only a delay
  that varies with the position (d ~ offset / speed, a Reichardt / Barlow-Levick detector) can make
  those arrivals coincide on one neuron. Cost: C_out C_in k^2 delays (as many as weights).
* ``"pair"``: one delay per (out, in) channel pair, shared by its k x k elements. C_out C_in delays,
  and the temporal kernel factorises (w[o, i, u, v] g_d[o, i](n)), but within one input channel every
  position arrives with the same delay, so a single layer cannot tell a dot moving left from one
  moving right on one polarity: direction must then come from cross-channel delays or from depth.

Training kernel: the delay is spread over the Td integer taps by the same interpolation kernels as
:class:`snn_delays.synapse.DelaySynapse` (``interpolation`` "gauss" / "triangle" / "bilinear",
width ``sigma`` in steps, set by the same schedule: ``layer.sigma = s``), built by the same functions
(:func:`snn_delays.synapse.gaussian_kernel` / :func:`snn_delays.backends.interpolation.interpolated_kernel`,
compiled on CPU as the dense synapse's), and the product is one causal 3-D convolution over
(time, y, x). Evaluation (``eval()``): every delay is rounded (:func:`snn_delays.synapse.round_delays`,
half to even after clamping) and the product is exact, by one of three paths giving the same sums in
another order (:meth:`DelayConv2d.eval_path`): event-driven compiled loops on CPU (work proportional to
the input events, :mod:`snn_delays._conv_events`); else a sum over the distinct integer delays D of 2-D
convolutions shifted by D steps, each with the elements whose delay is D (when few delays are distinct);
else one 3-D convolution of the rounded kernel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from neuromorphic_export.conv import DELAY_PER  # "element", "pair": model.conv_delay_per's values

from ._conv_events import event_conv_eval
from .backends.compiled import fast_available
from .backends.gaussian import compiled_gaussian_kernel
from .backends.interpolation import INTERPOLATIONS, interpolated_kernel
from .synapse import KERNEL_EPS, ScheduledSigma, gaussian_kernel, round_delays

__all__ = ["DelayConv2d", "DELAY_PER", "conv_delay_kernel", "rounded_conv_kernel", "delay_conv_reference",
           "shifted_conv_sum", "dense_delay_conv"]



def _temporal(weight: Tensor, delay: Tensor, width: float | Tensor, kernel_size_steps: int,
              interpolation: str) -> Tensor:
    """(A, B, Td) training kernel of weights and delays (A, B, m): the dense synapse's functions."""
    if interpolation == "gauss":
        if fast_available(weight) and delay.dtype == weight.dtype:
            return compiled_gaussian_kernel(weight, delay, float(width), kernel_size_steps, KERNEL_EPS)
        return gaussian_kernel(weight, delay, width, kernel_size_steps)
    return interpolated_kernel(weight, delay, width, kernel_size_steps, interpolation, KERNEL_EPS)


def conv_delay_kernel(weight: Tensor, delay: Tensor, sigma: float | Tensor, kernel_size_steps: int,
                      interpolation: str = "gauss") -> Tensor:
    """Training kernel (C_out, C_in, Td, k, k) from weight (C_out, C_in, k, k) and delay (C_out, C_in, k, k)
    (per element) or (C_out, C_in) (per pair); tap n = Td - 1 - d multiplies the input d steps back."""
    o, i, kh, kw = weight.shape
    td = kernel_size_steps
    if delay.dim() == 4:  # per element: every (o, i, u, v) is one "connection" of the dense synapse
        k = _temporal(weight.reshape(o, i * kh * kw, 1), delay.reshape(o, i * kh * kw, 1), sigma, td,
                      interpolation)  # (o, i k k, Td)
        return k.reshape(o, i, kh, kw, td).permute(0, 1, 4, 2, 3)
    # per pair: the unit-weight temporal profile of each pair times its spatial kernel
    g = _temporal(torch.ones_like(delay).unsqueeze(-1), delay.unsqueeze(-1), sigma, td, interpolation)  # (o, i, Td)
    return g[:, :, :, None, None] * weight[:, :, None, :, :]


def rounded_conv_kernel(weight: Tensor, delay: Tensor, kernel_size_steps: int) -> Tensor:
    """Evaluation kernel (C_out, C_in, Td, k, k): each element's full weight on the tap of its rounded delay."""
    d = round_delays(delay, kernel_size_steps)
    if d.dim() == 2:
        d = d[:, :, None, None].expand_as(weight)
    taps = torch.arange(kernel_size_steps, device=weight.device, dtype=d.dtype)
    one_hot = (kernel_size_steps - 1 - d).unsqueeze(2) == taps[None, None, :, None, None]  # (o, i, Td, k, k)
    return one_hot.to(weight.dtype) * weight.unsqueeze(2)


def dense_delay_conv(x: Tensor, kernel: Tensor, stride: int, padding: int) -> Tensor:
    """Causal 3-D convolution: x (T, B, C_in, H, W), kernel (C_out, C_in, Td, k, k) ->
    (T, B, C_out, H_out, W_out); tap n of the time axis multiplies the input Td - 1 - n steps back."""
    td = kernel.shape[2]
    xb = x.permute(1, 2, 0, 3, 4)  # (B, C_in, T, H, W)
    xb = F.pad(xb, (0, 0, 0, 0, td - 1, 0))  # causal: Td - 1 zero steps in front
    y = F.conv3d(xb, kernel, stride=(1, stride, stride), padding=(0, padding, padding))  # (B, C_out, T, H', W')
    return y.permute(2, 0, 1, 3, 4)


def shifted_conv_sum(x: Tensor, weight: Tensor, delay_steps: Tensor, stride: int, padding: int) -> Tensor:
    """The rounded-delay product: sum over the distinct integer delays D of conv2d(x[t - D], w * [d == D]).

    x (T, B, C_in, H, W); weight (C_out, C_in, k, k); delay_steps integer-valued, (C_out, C_in, k, k) or
    (C_out, C_in). Returns (T, B, C_out, H_out, W_out). One 2-D convolution per distinct delay, over the
    T - D steps it reaches."""
    t_len, b = x.shape[:2]
    d = delay_steps.long()
    if d.dim() == 2:
        d = d[:, :, None, None].expand_as(weight)
    y = None
    frames = x.reshape(t_len * b, *x.shape[2:])  # (T B, C_in, H, W)
    for shift in torch.unique(d).tolist():
        if shift >= t_len:
            continue
        w_d = weight * (d == shift).to(weight.dtype)
        part = F.conv2d(frames[: (t_len - shift) * b], w_d, stride=stride, padding=padding)  # ((T - D) B, o, H', W')
        if y is None:
            y = part.new_zeros(t_len * b, *part.shape[1:])
        y[shift * b:] += part
    if y is None:  # every delay beyond the sequence: nothing arrives
        h_out = (x.shape[3] + 2 * padding - weight.shape[2]) // stride + 1
        w_out = (x.shape[4] + 2 * padding - weight.shape[3]) // stride + 1
        return x.new_zeros(t_len, b, weight.shape[0], h_out, w_out)
    return y.reshape(t_len, b, *y.shape[1:])


def delay_conv_reference(x: Tensor, weight: Tensor, delay_steps: Tensor, stride: int = 1, padding: int = 0) -> Tensor:
    """Plain loops over every output and every kernel element with integer delays (tests only: slow).
    Shapes as :func:`shifted_conv_sum`."""
    t_len, b, c_in, h, w = x.shape
    c_out, _, kh, kw = weight.shape
    d = delay_steps.long()
    if d.dim() == 2:
        d = d[:, :, None, None].expand_as(weight)
    h_out = (h + 2 * padding - kh) // stride + 1
    w_out = (w + 2 * padding - kw) // stride + 1
    y = x.new_zeros(t_len, b, c_out, h_out, w_out)
    for t in range(t_len):
        for o in range(c_out):
            for yy in range(h_out):
                for xx in range(w_out):
                    acc = x.new_zeros(b)
                    for i in range(c_in):
                        for u in range(kh):
                            for v in range(kw):
                                src_t = t - int(d[o, i, u, v])
                                sy, sx = stride * yy + u - padding, stride * xx + v - padding
                                if src_t >= 0 and 0 <= sy < h and 0 <= sx < w:
                                    acc = acc + weight[o, i, u, v] * x[src_t, :, i, sy, sx]
                    y[t, :, o, yy, xx] = acc
    return y


class DelayConv2d(ScheduledSigma, nn.Module):
    """Convolution over (y, x) with a learned delay per kernel element (or per channel pair).

    Args:
        in_channels, out_channels: C_in, C_out.
        kernel_size: k, the spatial kernel is k x k.
        kernel_size_steps: Td; delays live in [0, Td - 1] steps.
        stride, padding: spatial, as ``nn.Conv2d``'s (zero padding).
        delay_per: "element" (DCLS 3-1D, default) or "pair"; see the module docstring.
        sigma: initial kernel width (steps); ``layer.sigma = s`` changes it (the schedule does).
        interpolation: "gauss" (default), "triangle" or "bilinear": the training kernel.
        learn_delays / learn_weights: False freezes that parameter.
        generator: a torch.Generator for reproducible initialisation.

    Parameters: ``weight`` (C_out, C_in, k, k) and ``delay`` (C_out, C_in, k, k) or (C_out, C_in).
    ``forward`` maps (T, B, C_in, H, W) spike counts to (T, B, C_out, H_out, W_out) currents; no bias
    (a BatchNorm after it carries one).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, kernel_size_steps: int,
                 stride: int = 1, padding: int = 0, delay_per: str = "element", sigma: float | None = None,
                 interpolation: str = "gauss", learn_delays: bool = True, learn_weights: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        if min(in_channels, out_channels, kernel_size, kernel_size_steps, stride) < 1 or padding < 0:
            raise ValueError("in/out channels, kernel_size, kernel_size_steps and stride must be >= 1, padding >= 0; "
                             f"got {in_channels}, {out_channels}, {kernel_size}, {kernel_size_steps}, {stride}, "
                             f"{padding}")
        if delay_per not in DELAY_PER:
            raise ValueError(f"delay_per must be one of {DELAY_PER}; got {delay_per!r}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}; got {interpolation!r}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.kernel_size_steps = kernel_size, kernel_size_steps
        self.stride, self.padding = stride, padding
        self.delay_per, self.interpolation = delay_per, interpolation
        td = kernel_size_steps
        self.register_buffer("sigma", torch.tensor(float(sigma if sigma is not None else td // 2 or 0.5),
                                                  dtype=torch.float64))  # a float32 0.9 would not be 0.9
        bound = 1.0 / math.sqrt(in_channels * kernel_size * kernel_size)
        w = (2 * torch.rand(out_channels, in_channels, kernel_size, kernel_size, generator=generator) - 1) * bound
        dshape = (out_channels, in_channels) + ((kernel_size, kernel_size) if delay_per == "element" else ())
        d = torch.rand(dshape, generator=generator) * (td - 1)
        self.weight = nn.Parameter(w, requires_grad=learn_weights)
        self.delay = nn.Parameter(d, requires_grad=learn_delays and td > 1)

    # -- sigma (as DelaySynapse) -----------------------------------------------------------------
    def set_sigma(self, value: float) -> None:
        self.sigma.fill_(float(value))

    @torch.no_grad()
    def clamp_(self) -> None:
        """Bring delays back into [0, Td - 1] (call after every optimiser step)."""
        self.delay.clamp_(0, self.kernel_size_steps - 1)

    def rounded_delay(self) -> Tensor:
        """Integer delays (steps) of evaluation and export, shaped like ``delay``."""
        return round_delays(self.delay, self.kernel_size_steps)

    def element_delay(self) -> Tensor:
        """Rounded delays per kernel element (C_out, C_in, k, k), also for ``delay_per="pair"``."""
        d = self.rounded_delay()
        return d if d.dim() == 4 else d[:, :, None, None].expand_as(self.weight)

    def kernel(self) -> Tensor:
        """(C_out, C_in, Td, k, k): interpolated in training mode, one rounded tap per element in eval."""
        if not self.training:
            return rounded_conv_kernel(self.weight, self.delay, self.kernel_size_steps)
        return conv_delay_kernel(self.weight, self.delay, float(self.sigma), self.kernel_size_steps,
                                 self.interpolation)

    def output_size(self, h: int, w: int) -> tuple[int, int]:
        """(H_out, W_out) for an input frame (H, W)."""
        k, s, p = self.kernel_size, self.stride, self.padding
        return (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1

    def trainable_count(self) -> int:
        return sum(p.numel() for p in (self.weight, self.delay) if p.requires_grad)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 5 or x.shape[2] != self.in_channels:
            raise ValueError(f"DelayConv2d: expected (T, B, C_in={self.in_channels}, H, W), got {tuple(x.shape)}")
        h_out, w_out = self.output_size(int(x.shape[3]), int(x.shape[4]))
        if h_out < 1 or w_out < 1:
            raise ValueError(f"DelayConv2d: frame {tuple(x.shape[3:])} smaller than the kernel {self.kernel_size} "
                             f"with padding {self.padding}: expected (T, B, C_in, H, W) with H, W >= "
                             f"{self.kernel_size - 2 * self.padding}, got {tuple(x.shape)}")

    def eval_path(self, x: Tensor) -> str:
        """What the rounded-delay product runs for an input like ``x``: "events" (compiled, event-driven;
        CPU, no gradient needed), "shifted" (one 2-D convolution per distinct delay: few distinct delays)
        or "dense" (one 3-D convolution of the rounded kernel)."""
        needs_grad = torch.is_grad_enabled() and (self.weight.requires_grad or x.requires_grad)
        if not needs_grad and fast_available(x):
            return "events"
        distinct = int(torch.unique(self.rounded_delay()).numel())
        return "shifted" if distinct <= max(1, self.kernel_size_steps // 4) else "dense"

    def forward(self, x: Tensor) -> Tensor:
        """x (T, B, C_in, H, W) -> (T, B, C_out, H_out, W_out)."""
        self._check(x)
        x = x.to(self.weight.dtype)
        if self.training and self.kernel_size_steps > 1:
            return dense_delay_conv(x, self.kernel(), self.stride, self.padding)
        path = self.eval_path(x)
        if path == "events":
            return event_conv_eval(x, self.weight, self.element_delay(), self.stride, self.padding)
        if path == "shifted":
            return shifted_conv_sum(x, self.weight, self.rounded_delay(), self.stride, self.padding)
        return dense_delay_conv(x, rounded_conv_kernel(self.weight, self.delay, self.kernel_size_steps),
                                self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"kernel_size_steps={self.kernel_size_steps}, stride={self.stride}, padding={self.padding}, "
                f"delay_per={self.delay_per}, interpolation={self.interpolation}, sigma={float(self.sigma):.3g}, "
                f"learn_delays={self.delay.requires_grad}, learn_weights={self.weight.requires_grad}")
