"""The compiled CPU loops (numba) behind the fast paths, one module per concern; numpy arrays in,
no torch. Every loop has a PyTorch twin in :mod:`snn_delays.backends`, and the tests compare them.

- :mod:`.runtime`: numba (or its absence), ``njit``/``prange``, threads;
- :mod:`.neuron`: the LIF step and the arctan surrogate gradient (inlined helpers), the LIF loops;
- :mod:`.norm_lif`: BatchNorm (batch statistics) + LIF, forward and backward;
- :mod:`.taps`, :mod:`.groups`: the tap product one tap at a time, and in groups of four delays;
- :mod:`.gaussian`: Gaussian tap values and the dense training kernel, with their gradients;
- :mod:`.events`: the product and the kernel gradient driven by the input's non-zero entries;
- :mod:`.interpolation`: tap values of the Gaussian, triangle and bilinear kernels with a width per
  element, with their gradients (weight, delay, width);
- :mod:`.eval`: a whole evaluation layer in one pass (event-driven, or one rounded tap per element);
- :mod:`.eval_bits`: the same on bit-packed 0/1 spikes, each tap a masked add (AVX-512 mask registers);
- :mod:`.pack`: spikes and counts as exact bytes.

Layouts: channel-major, batch-innermost (T, C, B) arrays (the innermost loop is a contiguous,
vectorisable run over the batch), re-laid out to (C, T, B) where a loop walks time per channel.
"""
