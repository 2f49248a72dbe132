"""The recurrent delay synapse: a hidden layer's spikes fed back to the same layer after learned delays.

Every connection i <- j within a layer of H neurons (all to all, self-connections included, or a
fixed random fan-in) has a weight w_ij and a real delay d_ij in [1, Dr] steps (Dr =
``kernel_size``). A spike of neuron j at step t reaches neuron i at step t + d_ij, so the current of
step t only needs spikes of earlier steps and the layer is computed step by step (see
:mod:`snn_delays.backends.recurrent_lif` for the equations and their backward)::

    I_i[t] = BN(FF(S_in))_i[t] + sum_j w_ij * S_j[t - d_ij]        (not batch-normalised)

Storage: the parameter ``delay`` holds d - 1, in [0, Dr - 1], so that the synapse is a
:class:`~snn_delays.synapse.DelaySynapse` of Dr taps whose output is shifted one step later; the
training kernel (interpolation, sigma schedule, learned widths), clamping and the rounding of
evaluation and export (d = 1 + round-half-even(d - 1)) are the feed-forward synapse's.

Initialisation: weights uniform in +-``gain`` / sqrt(fan-in) with gain 0.5, half the feed-forward
bound: at the start the recurrent current adds to a batch-normalised current of unit variance, and
a smaller feedback keeps the first epochs from running into self-excited bursts; delays uniform
in [1, Dr] (``model.recurrent_delay_init = "one-step"``: all at 1 step, learned from there).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .backends.interpolation import interp_taps_per_element
from .backends.compiled import fast_available
from .backends.recurrent_lif import recurrent_lif_dense, recurrent_lif_taps
from .backends.taps import taps_per_element
from .synapse import DelaySynapse, round_delays

__all__ = ["RecurrentDelaySynapse", "RECURRENT_INIT_GAIN"]

RECURRENT_INIT_GAIN = 0.5


class RecurrentDelaySynapse(DelaySynapse):
    """H -> H synapses of a hidden layer onto itself with delays in [1, ``kernel_size``] steps.

    Args are :class:`~snn_delays.synapse.DelaySynapse`'s with in = out = ``size`` and one element
    per connection; ``kernel_size`` = 1 fixes every delay at one step (a plain recurrent SNN).
    ``delay_init``: ``uniform`` (delays start uniform in [1, Dr]) or ``one-step`` (all at 1 step).
    :meth:`run` computes the layer's spikes from its feed-forward current.
    """

    def __init__(self, size: int, kernel_size: int, sigma: float | None = None, learn_delays: bool = True,
                 learn_weights: bool = True, mask: Tensor | None = None, generator: torch.Generator | None = None,
                 backend: str = "auto", interpolation: str = "gauss", learn_sigma: bool = False,
                 gain: float = RECURRENT_INIT_GAIN, delay_init: str = "uniform"):
        super().__init__(size, size, kernel_size, 1, sigma=sigma, learn_delays=learn_delays,
                         learn_weights=learn_weights, mask=mask, generator=generator, backend=backend,
                         interpolation=interpolation, learn_sigma=learn_sigma and kernel_size > 1)
        if delay_init not in ("uniform", "one-step"):
            raise ValueError(f"delay_init must be 'uniform' or 'one-step'; got {delay_init!r}")
        with torch.no_grad():
            self.weight.mul_(gain)
            if delay_init == "one-step":  # every delay starts at 1 step (stored d - 1 = 0)
                self.delay.zero_()

    def delay_steps(self) -> Tensor:
        """(H, H, 1) the delays (steps) of evaluation and export: 1 + round-half-even(d - 1), in [1, Dr]."""
        return round_delays(self.delay, self.kernel_size) + 1

    def real_delay(self) -> Tensor:
        """(H, H, 1) the real-valued delays d (steps) the parameter stands for."""
        return self.delay + 1

    def current_cm(self, spikes: Tensor) -> Tensor:
        """The recurrent current of a given spike train, channel-major: spikes (T, H, B) -> (T, H, B),
        I[t] = sum_j w_ij S_j[t - d_ij] (the feed-forward product of Dr taps, one step later)."""
        y = super().forward_cm(spikes)
        return torch.cat([torch.zeros_like(y[:1]), y[:-1]], 0)

    def forward_cm(self, x: Tensor) -> Tensor:
        raise TypeError("RecurrentDelaySynapse is run with its layer's neurons: use run(current, lif), "
                        "or current_cm(spikes) for the current of a given spike train")

    def run(self, current: Tensor, tau: float, threshold: float, alpha: float) -> Tensor:
        """Spikes (T, H, B) of LIF neurons (``tau`` steps, hard reset at ``threshold``, arctan
        surrogate ``alpha``) driven by the feed-forward ``current`` (T, H, B) plus this synapse's
        recurrent current. :meth:`uses_taps` says which form runs: the compiled tap loops, or the
        step loop on the dense kernel (PyTorch matrix products, any device)."""
        decay = 1.0 - 1.0 / tau
        if self.uses_taps(current):
            value, offset, plan = self.taps()
            return recurrent_lif_taps(current, value, offset, plan, self.kernel_size, decay, threshold, alpha)
        kernel = self.kernel().flip(-1)  # (H, H, Dr): index n - 1 holds delay n (tap Dr - n of the kernel)
        return recurrent_lif_dense(current, kernel, decay, threshold, alpha)

    def taps_per_connection(self) -> int:
        """P, the taps per connection of the tap form in the current mode (1 in evaluation)."""
        if not self.training or self.kernel_size == 1:
            return 1
        if self.interpolation != "gauss" or self.learn_sigma:
            return interp_taps_per_element(self.interpolation, self._max_width(), self.kernel_size)
        return taps_per_element(float(self.sigma), self.kernel_size)

    def uses_taps(self, current: Tensor) -> bool:
        """Whether :meth:`run` takes the compiled tap loops for ``current``: on CPU with the loops
        on, backend not ``dense``, and at most Dr / 3 taps per connection (P <= 8 of Dr = 25: a
        wider kernel runs faster as dense matrix products; measured in benchmarks/README.md)."""
        if self.backend == "dense" or not fast_available(current) or self.weight.dtype != current.dtype:
            return False
        p = self.taps_per_connection()
        return p == 1 or 3 * p <= self.kernel_size or self.backend == "sparse"

    def extra_repr(self) -> str:
        return "recurrent, delays 1.." + str(self.kernel_size) + " steps; " + super().extra_repr()
