"""The fast paths of the delay synapse and the neurons: how the formulas of
:mod:`snn_delays.synapse` and :mod:`snn_delays.neuron` are computed.

Imports go one way: synapse, neuron, model -> these modules -> :mod:`.kernels` (numba, numpy only).

| module | what |
|---|---|
| :mod:`.choice` | backend names, the ``"auto"`` cost model |
| :mod:`.compiled` | whether the compiled loops run here; ``use_compiled(False)`` forces the PyTorch twins |
| :mod:`.dense` | the dense causal convolution (the plain formulation; cuDNN on CUDA) |
| :mod:`.fft` | the same convolution by FFT |
| :mod:`.taps` | the tap ("sparse") form: TapPlan, tap values, the tap product, the plan cache |
| :mod:`.gaussian` | the dense Gaussian training kernel, compiled |
| :mod:`.events` | the event-driven product and kernel gradient (training, inputs that need no gradient) |
| :mod:`.interpolation` | triangle and bilinear kernels, learned widths: tap values (compiled + twin) |
| :mod:`.lif` | the LIF step and the surrogate gradient (PyTorch), the fused LIF node |
| :mod:`.norm_lif` | BatchNorm + LIF as one node; the BatchNorm running-statistics update |
| :mod:`.fast_eval` | a whole model in evaluation, one compiled pass per layer |
| :mod:`.packing` | spikes and counts as exact bytes |
| :mod:`.dropout` | the hidden layers' dropout product as one node (product and bytes in one pass) |
| :mod:`.kernels` | the compiled loops, one module per concern |

Every compiled path has a PyTorch twin that runs wherever the loops do not (CUDA, no numba, or
``use_compiled(False)``); ``tests/test_fast_paths.py`` compares each pair.
"""

from .choice import BACKENDS, choose_backend
from .compiled import compiled_enabled, fast_available, use_compiled

__all__ = ["BACKENDS", "choose_backend", "compiled_enabled", "fast_available", "use_compiled"]
