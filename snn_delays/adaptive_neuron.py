"""Adaptive leaky integrate-and-fire neurons (adLIF) with learned per-neuron time constants and
adaptation, hard reset and the arctan surrogate gradient.

Model (Bittar & Garner 2022, "A surrogate gradient spiking baseline for speech command
recognition"), discretised by symplectic Euler as in SE-adLIF (Baronig et al. 2024, "Advancing
spatio-temporal processing in spiking neural networks through adaptation"); dt = 1 step, per
neuron h, u[-1] = w[-1] = 0::

    v[t] = decay_u * u[t-1] + (1 - decay_u) * (I[t] - w[t-1])     membrane before reset
    s[t] = Heaviside(v[t] - threshold)                            fires on v >= threshold
    u[t] = 0 where s[t] else v[t]                                 hard reset (detached, as LIF's)
    w[t] = decay_w * w[t-1] + ((1 - decay_w) * q) * (a * u[t] + b * s[t])

decay_u = exp(-1/tau_u_steps), decay_w = exp(-1/tau_w_steps) (the papers' alpha and beta), a the
sub-threshold coupling, b the spike-triggered jump, q a fixed scale of the adaptation. The
adaptation uses this step's membrane after reset (symplectic Euler), not the previous one (the
forward Euler of Bittar & Garner): Baronig et al. report that forward Euler can turn the
discretised neuron unstable inside the trained parameter range, while symplectic Euler keeps its
damped oscillation like the continuous system's, and their SHD/SSC results are with it. Hard reset
to 0 (SE-adLIF's reset with u_rest = 0; Bittar & Garner subtract the threshold instead), as this
package's LIF and every export target do. The spike in w's
update carries the surrogate gradient; the reset carries none.

Learned per neuron, clamped into ``ranges`` in every forward pass (and by :meth:`AdLIF.clamp_`,
for a trainer to call after each optimiser step): decay_u, decay_w, a, b. Defaults (SE-adLIF's):
tau_u 5..25 steps, tau_w 60..300 steps, a in [0, 1], b in [0, 2], q = 120; initialised uniformly
in those ranges (decays uniform between the decays of the range's ends). The decays themselves are
the learned values, clamped, as in Bittar & Garner (SE-adLIF's code maps a parameter to tau instead).

The step is written once (:func:`snn_delays.backends.adlif.adlif_update`); :func:`adlif_step` is
the pure step (input, state) -> (spikes, state), :func:`adlif_sequence` runs a whole (T, B, H)
sequence (the plain loop autograd differentiates, or the fused node with a hand-written backward,
compiled on CPU), :class:`AdLIF` holds the parameters. No state is kept between calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from neuromorphic_export.chip import ADLIF_Q, ADLIF_RANGES, adlif_limits

from .backends.adlif import adlif_fused, adlif_update
from .backends.lif import spike_atan

__all__ = ["AdLIF", "AdLIFRanges", "AdLIFState", "adlif_step", "adlif_sequence"]


class AdLIFState(NamedTuple):
    """Membrane after reset u and adaptation w, each shaped like one step of input (B, H)."""

    u: Tensor
    w: Tensor


@dataclass(frozen=True)
class AdLIFRanges:
    """Ranges of the learned parameters: time constants in steps, coupling a, jump b; q fixed."""

    tau_u_steps: tuple[float, float] = ADLIF_RANGES["tau_u_steps"]
    tau_w_steps: tuple[float, float] = ADLIF_RANGES["tau_w_steps"]
    a: tuple[float, float] = ADLIF_RANGES["a"]
    b: tuple[float, float] = ADLIF_RANGES["b"]
    q: float = ADLIF_Q

    def __post_init__(self) -> None:
        for name in ("tau_u_steps", "tau_w_steps", "a", "b"):
            lo, hi = getattr(self, name)
            if not lo <= hi:
                raise ValueError(f"AdLIFRanges.{name}: expected (low, high) with low <= high, got {(lo, hi)}")
        if min(self.tau_u_steps) <= 0 or min(self.tau_w_steps) <= 0:
            raise ValueError("AdLIFRanges: time constants are in steps and must be > 0")

    def limits(self) -> dict[str, tuple[float, float]]:
        """(low, high) of decay_u, decay_w, a, b (:func:`neuromorphic_export.chip.adlif_limits`, which
        the exporter clips with)."""
        return adlif_limits(self.tau_u_steps, self.tau_w_steps, self.a, self.b)

    @property
    def decay_u(self) -> tuple[float, float]:
        return self.limits()["decay_u"]

    @property
    def decay_w(self) -> tuple[float, float]:
        return self.limits()["decay_w"]


def adlif_step(current: Tensor, state: AdLIFState | None, decay_u: Tensor, decay_w: Tensor, a: Tensor, b: Tensor,
               q: float = 120.0, threshold: float = 1.0, alpha: float = 5.0) -> tuple[Tensor, AdLIFState]:
    """One step: current (B, H) and state (None: zeros) -> (spikes (B, H), new state). Parameters
    broadcast against (B, H) (per neuron: (H,)). Spikes carry the arctan surrogate gradient
    (``alpha`` its sharpness); differentiable in everything but the reset."""
    if state is None:
        state = AdLIFState(torch.zeros_like(current), torch.zeros_like(current))
    _, s, u, w = adlif_update(state.u, state.w, current, decay_u, decay_w, a, b, q, threshold,
                              spike=lambda x: spike_atan(x, alpha))
    return s, AdLIFState(u, w)


def _check(current: Tensor, params, channel_axis: int) -> None:
    if current.dim() != 3:
        raise ValueError(f"adLIF: expected input (T, B, H), got {tuple(current.shape)}")
    if channel_axis not in (1, 2):
        raise ValueError(f"adLIF: channel_axis must be 1 ((T, H, B)) or 2 ((T, B, H)); got {channel_axis}")
    n = current.shape[channel_axis]
    for p in params:
        if p.shape != (n,):
            layout = "(T, B, H)" if channel_axis == 2 else "(T, H, B)"
            raise ValueError(f"adLIF: expected per-neuron parameters ({n},) for input {layout} "
                             f"{tuple(current.shape)}, got {tuple(p.shape)}")


def adlif_sequence(current: Tensor, decay_u: Tensor, decay_w: Tensor, a: Tensor, b: Tensor, q: float = 120.0,
                   threshold: float = 1.0, alpha: float = 5.0, channel_axis: int = 2, fused: bool = True,
                   return_state: bool = False):
    """Run adLIF neurons over a sequence from zero state: current (T, B, H) (``channel_axis=2``; or
    the model's channel-major (T, H, B) with ``channel_axis=1``), parameters (H,) -> spikes like
    current (and, if ``return_state``, u and w (T, ...) after each step; plain loop only).

    ``fused`` runs the loop as one autograd node with a hand-written backward, compiled on CPU;
    ``fused=False`` is the plain loop of :func:`adlif_step` that autograd differentiates op by op
    (the reference the fused one is tested against)."""
    params = (decay_u, decay_w, a, b)
    _check(current, params, channel_axis)
    if fused and not return_state:
        return adlif_fused(current, *[p.to(current.dtype) for p in params], q, threshold, alpha, channel_axis)
    view = (-1,) if channel_axis == 2 else (-1, 1)
    du, dw, pa, pb = [p.to(current.dtype).reshape(view) for p in params]
    state, spikes, us, ws = None, [], [], []
    for t in range(current.shape[0]):
        s, state = adlif_step(current[t], state, du, dw, pa, pb, q, threshold, alpha)
        spikes.append(s)
        if return_state:
            us.append(state.u)
            ws.append(state.w)
    if not spikes:  # T = 0
        out = current * 0
        return (out, out.detach(), out.detach()) if return_state else out
    out = torch.stack(spikes)
    return (out, torch.stack(us), torch.stack(ws)) if return_state else out


class AdLIF(nn.Module):
    """adLIF neurons with learned per-neuron parameters: (T, B, H) currents -> (T, B, H) spikes;
    :meth:`forward_cm` for the channel-major (T, H, B) the model runs between layers.

    Parameters (H,): ``decay_u``, ``decay_w`` (exp(-1 / tau in steps)), ``a``, ``b``; clamped into
    ``ranges`` when used. ``threshold`` and ``alpha`` (the surrogate's sharpness) are fixed."""

    def __init__(self, n_neurons: int, ranges: AdLIFRanges = AdLIFRanges(), threshold: float = 1.0,
                 alpha: float = 5.0, fused: bool = True, generator: torch.Generator | None = None):
        super().__init__()
        if n_neurons < 1:
            raise ValueError(f"AdLIF: n_neurons must be >= 1, got {n_neurons}")
        self.n_neurons, self.ranges = int(n_neurons), ranges
        self.threshold, self.alpha, self.fused = float(threshold), float(alpha), bool(fused)
        self.decay_u = nn.Parameter(torch.empty(n_neurons))
        self.decay_w = nn.Parameter(torch.empty(n_neurons))
        self.a = nn.Parameter(torch.empty(n_neurons))
        self.b = nn.Parameter(torch.empty(n_neurons))
        self.reset_parameters(generator)

    def _limits(self) -> dict[str, tuple[float, float]]:
        return self.ranges.limits()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Uniform in the ranges, drawn from ``generator`` (default: the global torch generator)."""
        for name, (lo, hi) in self._limits().items():
            getattr(self, name).uniform_(lo, hi, generator=generator)

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp the parameters into their ranges in place (after an optimiser step)."""
        for name, (lo, hi) in self._limits().items():
            getattr(self, name).clamp_(lo, hi)

    def clamped(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(decay_u, decay_w, a, b) clamped into the ranges, differentiable inside them."""
        return tuple(torch.clamp(getattr(self, n), lo, hi) for n, (lo, hi) in self._limits().items())

    def tau_steps(self) -> tuple[Tensor, Tensor]:
        """The time constants in steps (tau_u, tau_w) (H,) of the clamped decays."""
        du, dw, _, _ = self.clamped()
        return -1 / torch.log(du.detach()), -1 / torch.log(dw.detach())

    def run(self, current: Tensor, channel_axis: int) -> Tensor:
        return adlif_sequence(current, *self.clamped(), self.ranges.q, self.threshold, self.alpha, channel_axis,
                              self.fused)

    def forward(self, current: Tensor) -> Tensor:
        """current (T, B, H) -> spikes (T, B, H)."""
        return self.run(current, 2)

    def forward_cm(self, current: Tensor) -> Tensor:
        """current (T, H, B) (channel-major) -> spikes (T, H, B)."""
        return self.run(current, 1)

    def extra_repr(self) -> str:
        r = self.ranges
        return (f"{self.n_neurons}, tau_u_steps={r.tau_u_steps}, tau_w_steps={r.tau_w_steps}, a={r.a}, b={r.b}, "
                f"q={r.q}, threshold={self.threshold}, alpha={self.alpha}")
