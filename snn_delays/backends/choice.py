"""Which backend a delay synapse runs: the names, and for ``"auto"`` the cost model.

- ``"dense"``: the (out, in, Td) kernel and a direct causal convolution (:mod:`.dense`);
- ``"fft"``: the same kernel applied by FFT (:mod:`.fft`);
- ``"sparse"``: only the taps that carry weight (:mod:`.taps`), compiled on CPU;
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

BACKENDS = ("auto", "dense", "fft", "sparse")
# Relative costs for backend="auto" on CPU, in direct-convolution multiply-adds per synapse and
# step (forward + backward in training, forward in eval), measured at SHD sizes on 2 cores (the
# benchmark notes, "calibrating the backend choice"): one compiled tap (training: in groups of
# four; eval: one rounded tap), and one complex multiply-add of the FFT path (x 4 (n/2 + 1) / T
# per synapse and step).
COST = {"tap_train": 1.6, "tap_eval": 3.5, "fft_train": 3.8, "fft_eval": 4.0}


def choose_backend(backend: str, probe: Tensor, t_len: int, kernel_size: int, kernel_count: int,
                   mask: Tensor, sigma: Tensor | float, training: bool, taps: int | None = None) -> str:
    """"dense", "fft" or "sparse" for a synapse asked for ``backend`` on an input of ``t_len`` steps
    on ``probe``'s device: ``mask`` (out, in), ``sigma`` (steps) its Gaussian width, used in
    ``training`` mode (evaluation: one rounded tap per element). ``taps``: the taps per element in
    training when not the Gaussian's of ``sigma`` (other interpolations, learned widths)."""
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
    return min(cost, key=cost.get)
