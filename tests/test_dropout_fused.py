"""The fused dropout product (snn_delays/backends/dropout.py), and BatchNorm + LIF + dropout as one
node (snn_delays/backends/norm_lif.py), against the plain formulation
``x * keep`` (``TimeSharedDropout.fused = False``, the code before the fusion): the same random
draws and every value bit for bit (torch.equal) over training steps, and the bytes it hands to the
next synapse equal to what ``as_scaled_bytes`` packs itself."""

from __future__ import annotations

import copy

import pytest
import torch

from snn_delays.backends import packing
from snn_delays.backends.compiled import AVAILABLE
from snn_delays.backends.dropout import dropout_product_cm
from snn_delays.backends.kernels import pack
from snn_delays.config import ModelConfig
from snn_delays.model import TimeSharedDropout, build_model


def _steps(model, x, y, sigma, fused, n_steps, seed=5, return_spikes=True):
    """n_steps Adam steps with the dropout fused or not; returns every membrane, spike train (if
    ``return_spikes``: without them, BatchNorm + LIF + dropout run as one node where they can),
    gradient and the parameters and buffers after the steps."""
    model.sigma = sigma
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    torch.manual_seed(seed)  # the dropout masks' stream
    seen = []
    old, TimeSharedDropout.fused = TimeSharedDropout.fused, fused
    try:
        for _ in range(n_steps):
            opt.zero_grad(set_to_none=True)
            u, spikes = model(x, return_spikes=True) if return_spikes else (model(x), [])
            loss = torch.nn.functional.cross_entropy(u.sum(0), y)
            loss.backward()
            seen += [u.detach().clone(), *(s.detach().clone() for s in spikes)]
            seen += [p.grad.clone() for p in model.parameters() if p.grad is not None]
            opt.step()
            model.clamp_()
    finally:
        TimeSharedDropout.fused = old
    seen += [t.detach().clone() for t in model.state_dict().values()]
    return seen


CASES = {  # (input, hidden, layers, classes, Td, T, batch, dropout, neuron, backend)
    "shd-fft": (140, 256, 2, 20, 25, 24, 8, 0.4, "lif", "fft"),
    "shd-auto": (140, 256, 2, 20, 25, 24, 8, 0.4, "lif", "auto"),
    "fsdd-taps": (40, 64, 2, 10, 25, 40, 6, 0.25, "lif", "sparse"),
    "fsdd-adlif": (40, 64, 2, 10, 25, 40, 6, 0.25, "adlif", "auto"),
    "half": (20, 32, 2, 5, 9, 20, 4, 0.5, "lif", "auto"),  # 1 / (1 - p) = 2: an integer scale
}


@pytest.mark.parametrize("return_spikes", [True, False], ids=["spikes", "one-node"])
@pytest.mark.parametrize("sigma", [12.0, 0.5])
@pytest.mark.parametrize("case", sorted(CASES))
def test_training_steps_bit_identical(case, sigma, return_spikes):
    """With the spikes asked for, the dropout product node alone; without, BatchNorm + LIF + dropout
    as one node (backends/norm_lif.py) for the LIF layers; both against the plain formulation."""
    n_in, hidden, layers, classes, td, t_len, batch, p, neuron, backend = CASES[case]
    cfg = ModelConfig(input_size=n_in, n_classes=classes, hidden_size=hidden, n_layers=layers, kernel_size=td,
                      tau_steps=1.005 if neuron == "lif" else 2.0, dropout=p, neuron=neuron, backend=backend)
    g = torch.Generator().manual_seed(1)
    x = (torch.rand(t_len, batch, n_in, generator=g) < 0.1).float() * torch.randint(1, 4, (t_len, batch, n_in),
                                                                                     generator=g).float()
    y = torch.randint(0, classes, (batch,), generator=g)
    model = build_model(cfg, seed=3)
    twin = copy.deepcopy(model)
    new = _steps(model, x, y, min(sigma, td // 2), True, 3, return_spikes=return_spikes)
    ref = _steps(twin, x, y, min(sigma, td // 2), False, 3, return_spikes=return_spikes)
    assert len(new) == len(ref)
    for a, b in zip(new, ref):
        assert torch.equal(a, b)


@pytest.mark.skipif(not AVAILABLE, reason="the fused pass needs the compiled loops")
@pytest.mark.parametrize("p", [0.4, 0.5, 0.25, 1.0 - 1e-3])
def test_bytes_handed_over_equal_packing(p):
    g = torch.Generator().manual_seed(2)
    s = (torch.rand(7, 12, 10, generator=g) < 0.3).float()
    keep = (torch.empty(1, 10, 12).bernoulli_(1 - p, generator=g) / (1 - p))[0].t()
    if p > 0.99:
        keep = torch.zeros_like(keep)  # every unit dropped: scale 1, all-zero bytes
    out = dropout_product_cm(s, keep)
    assert torch.equal(out, s * keep)
    handed = packing.as_scaled_bytes(out)  # the bytes from the fused pass (no packing here)
    assert packing._known[0] is None  # taken once
    packed = packing.as_scaled_bytes(out)  # the plain packing
    assert handed[1] == packed[1] and torch.equal(handed[0], packed[0])


@pytest.mark.skipif(not AVAILABLE, reason="the fused pass needs the compiled loops")
def test_handover_only_for_the_same_unmodified_tensor(monkeypatch):
    calls = []
    real = pack.pack_scaled_u8
    monkeypatch.setattr(pack, "pack_scaled_u8", lambda *a: calls.append(1) or real(*a))
    s = (torch.rand(5, 8, 6) < 0.5).float()
    keep = torch.full((8, 6), 1 / 0.6)
    out = dropout_product_cm(s, keep)
    packing.as_scaled_bytes(out.detach())  # a detached view of the same memory: handed over
    assert calls == []
    out = dropout_product_cm(s, keep)
    out.mul_(1.0)  # written since: packed again
    packing.as_scaled_bytes(out)
    assert calls == [1]
    out = dropout_product_cm(s, keep)
    packing.as_scaled_bytes(out[1:])  # another view: packed again
    assert len(calls) == 2
    out = dropout_product_cm(2 * s, keep)  # not spikes: nothing handed over, packing finds the scale
    assert packing._known[0] is None
    b, scale = packing.as_scaled_bytes(out)
    assert torch.equal(b.float() * scale, out)


def test_gradient_is_the_masked_gradient():
    s = (torch.rand(4, 6, 5) < 0.5).float().requires_grad_()
    keep = (torch.rand(6, 5) < 0.6).float() / 0.6
    g = torch.randn(4, 6, 5)
    (gs,) = torch.autograd.grad(dropout_product_cm(s, keep), s, g)
    assert torch.equal(gs, g * keep)


def test_inference_mode_training_forward():
    """A training-mode forward under torch.inference_mode (no version counters): the plain values."""
    s = (torch.rand(4, 8, 6) < 0.5).float()
    keep = torch.full((8, 6), 2.5)
    with torch.inference_mode():
        out = dropout_product_cm(s, keep)
        packed, scale = packing.as_scaled_bytes(out)
    assert torch.equal(out, s * keep) and torch.equal(packed.float() * scale, out)
