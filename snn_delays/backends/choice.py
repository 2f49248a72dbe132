"""Which backend a delay synapse runs: the names, and for ``"auto"`` the cost model.

- ``"dense"``: the (out, in, Td) kernel and a direct causal convolution (:mod:`.dense`);
- ``"fft"``: the same kernel applied by FFT (:mod:`.fft`);
- ``"sparse"``: only the taps that carry weight (:mod:`.taps`), compiled on CPU;
- ``"event"``: the dense kernel applied from the input's non-zero entries (:mod:`.events`), compiled
  on CPU; for sparse inputs that need no gradient (the first layer's spikes or counts);
- ``"auto"``: on CPU the cheapest of the three by ``COST``, measured on the project's 2-core CPU
  (per synapse and step, in direct-convolution multiply-adds); sparse only where the compiled loops
  run. Anywhere else (CUDA), dense: cuDNN, the others are not measured there.
"""

from __future__ import annotations

from torch import Tensor

from .compiled import fast_available
from .fft import fft_size
from .taps import taps_per_element

__all__ = ["BACKENDS", "COST", "choose_backend"]

BACKENDS = ("auto", "dense", "fft", "sparse", "event")
# Relative costs for backend="auto" on CPU, in direct-convolution multiply-adds per synapse and
# step (forward + backward in training, forward in eval), measured at SHD sizes on 2 cores (the
# benchmark notes, "calibrating the backend choice"): one compiled tap (training: in groups of
# four; eval: one rounded tap), and one complex multiply-add of the FFT path (x 4 (n/2 + 1) / T
# per synapse and step), and one multiply-add of the event loops (x density x Td per synapse and
# step: each event applies its input's whole kernel column; measured on the AVX-512 CPU, issue 27).
COST = {"tap_train": 1.6, "tap_eval": 3.5, "fft_train": 3.8, "fft_eval": 4.0, "event_train": 2.3}


def choose_backend(backend: str, probe: Tensor, t_len: int, kernel_size: int, kernel_count: int,
                   mask: Tensor, sigma: Tensor | float, training: bool, taps: int | None = None,
                   density: float | None = None) -> str:
    """"dense", "fft", "sparse" or "event" for a synapse asked for ``backend`` on an input of
    ``t_len`` steps on ``probe``'s device: ``mask`` (out, in), ``sigma`` (steps) its Gaussian width,
    used in ``training`` mode (evaluation: one rounded tap per element). ``taps``: the taps per
    element in training when not the Gaussian's of ``sigma`` (other interpolations, learned widths).
    ``density``: the input's fraction of non-zero entries when it needs no gradient, in training
    (None: the event-driven form is not considered)."""
    if backend != "auto":
        return backend
    if probe.device.type != "cpu":
        return "dense"
    mode = "train" if training else "eval"
    cost = {"dense": float(kernel_size),
            "fft": COST["fft_" + mode] * 4 * (fft_size(t_len + kernel_size - 1) // 2 + 1) / max(1, t_len)}
    if fast_available(probe):
        if taps is None or not training:
            taps = taps_per_element(float(sigma) if training else 0.0, kernel_size)
        taps *= kernel_count
        cost["sparse"] = taps * COST["tap_" + mode] * float(mask.mean())
        if density is not None and training:  # the event loops apply the dense kernel: masked synapses cost too
            cost["event"] = COST["event_train"] * density * kernel_size
    return min(cost, key=cost.get)
