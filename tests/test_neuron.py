"""LIF against a hand-computed trajectory and SpikingJelly's multi-step LIFNode."""

import math

import numpy as np
import pytest
import torch

from snn_delays import LIF
from snn_delays.neuron import atan_surrogate, spike_atan


def test_hand_computed_trajectory():
    lif = LIF(tau=2.0, threshold=1.0)
    current = torch.tensor([0.6, 0.6, 0.6, 0.0, 2.0]).view(5, 1, 1)
    # u: 0.6; 0.3+0.6=0.9; 0.45+0.6=1.05 -> spike, reset 0; 0; 2.0 -> spike
    s = lif(current).view(-1).tolist()
    assert s == [0.0, 0.0, 1.0, 0.0, 1.0]


def test_fires_on_equality_and_readout_never_spikes():
    assert LIF(tau=1.0)(torch.ones(3, 1, 1)).view(-1).tolist() == [1.0, 1.0, 1.0]
    readout = LIF(tau=2.0, threshold=float("inf"))
    u = readout(torch.ones(3, 1, 1) * 10).view(-1).tolist()
    assert u == [10.0, 15.0, 17.5]


def test_surrogate_is_derivative_of_smooth_function():
    x = torch.linspace(-1, 1, 41, dtype=torch.float64, requires_grad=True)
    spike_atan(x, 5.0).sum().backward()
    xs = x.detach().clone().requires_grad_(True)
    atan_surrogate(xs, 5.0).sum().backward()
    torch.testing.assert_close(x.grad, xs.grad)


@pytest.mark.parametrize("tau", [1.005, 1.5, 10.0])
def test_matches_spikingjelly(tau):
    sj = pytest.importorskip("spikingjelly.activation_based.neuron", reason="spikingjelly not installed")
    from spikingjelly.activation_based import functional, surrogate

    torch.manual_seed(0)
    ref = sj.LIFNode(tau=tau, decay_input=False, v_reset=0.0, v_threshold=1.0, detach_reset=True,
                     surrogate_function=surrogate.ATan(alpha=5.0), step_mode="m", store_v_seq=True)
    x = (torch.randn(50, 4, 8, dtype=torch.float64) * 0.8 + 0.3)
    x1 = x.clone().requires_grad_(True)
    x2 = x.clone().requires_grad_(True)
    functional.reset_net(ref)
    s_ref = ref(x1)
    v_ref = ref.v_seq
    from snn_delays.neuron import lif_sequence

    s, v = lif_sequence(x2, tau, 1.0, 5.0, return_membrane=True)
    assert torch.equal(s, s_ref)
    torch.testing.assert_close(v, v_ref)
    g = torch.randn_like(s)
    (s_ref * g).sum().backward()
    (s * g).sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad)
    assert s.sum() > 0


def test_shape_error():
    with pytest.raises(ValueError, match=r"expected input \(T, B, N\)"):
        LIF(2.0)(torch.zeros(4, 3))
