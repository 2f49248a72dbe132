"""DelayConv2d: a direct loop, finite differences, rounded vs Gaussian, shapes, and dcls's Dcls3_1d."""

import pytest
import torch

from snn_delays._conv_events import event_conv_eval
from snn_delays.backends.compiled import compiled_enabled, use_compiled
from snn_delays.conv_synapse import (DelayConv2d, conv_delay_kernel, delay_conv_reference, dense_delay_conv,
                                     rounded_conv_kernel, shifted_conv_sum)
from snn_delays.synapse import round_delays


def _spikes(shape, seed=0, p=0.3):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g) < p).double() * torch.randint(1, 3, shape, generator=g).double()


@pytest.mark.parametrize("per", ["element", "pair"])
@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), (1, 2)])
def test_rounded_paths_equal_the_direct_loop(per, stride, padding):
    g = torch.Generator().manual_seed(1)
    m = DelayConv2d(2, 3, 3, 5, stride=stride, padding=padding, delay_per=per, generator=g).double().eval()
    x = _spikes((7, 2, 2, 6, 5))
    ref = delay_conv_reference(x, m.weight.detach(), m.rounded_delay(), stride, padding)  # hand-written loops
    with torch.no_grad():
        y = m(x)  # the module's choice (event-driven where compiled)
        shifted = shifted_conv_sum(x, m.weight, m.rounded_delay(), stride, padding)  # PyTorch twin 1
        dense = dense_delay_conv(x, m.kernel(), stride, padding)  # twin 2: one 3-D conv of the rounded kernel
        with use_compiled(False):
            twin = m(x)
    assert y.shape == ref.shape == (7, 2, 3) + m.output_size(6, 5)
    for out in (y, shifted, dense, twin):
        torch.testing.assert_close(out, ref, rtol=0, atol=1e-12)


@pytest.mark.skipif(not compiled_enabled(), reason="numba not available: the event-driven loops do not run")
@pytest.mark.parametrize("stride,padding,k", [(1, 0, 3), (2, 1, 3), (3, 2, 4), (1, 2, 5)])
def test_event_driven_path_equals_the_loop_and_the_twins(stride, padding, k):
    g = torch.Generator().manual_seed(11)
    m = DelayConv2d(3, 4, k, 6, stride=stride, padding=padding, generator=g).double().eval()
    x = _spikes((9, 3, 3, 8, 7), seed=12)
    with torch.no_grad():
        assert m.eval_path(x) == "events"
        y = m(x)
        d = m.element_delay()
        torch.testing.assert_close(event_conv_eval(x, m.weight, d, stride, padding),
                                   delay_conv_reference(x, m.weight.detach(), d, stride, padding), rtol=0, atol=1e-12)
        torch.testing.assert_close(y, dense_delay_conv(x, m.kernel(), stride, padding), rtol=0, atol=1e-12)
        with use_compiled(False):
            assert m.eval_path(x) == "dense"  # 6 distinct delays of Td = 6: one 3-D convolution
            torch.testing.assert_close(m(x), y, rtol=0, atol=1e-12)
    assert m.eval_path(x) == "dense"  # a gradient is wanted (weights learnable): not the compiled loops
    m.delay.data.fill_(2.0)
    assert m.eval_path(x) == "shifted"  # one distinct delay: one shifted 2-D convolution


def test_loop_on_a_hand_computed_case():
    # one input pixel spiking at t = 0, kernel 2x2 with delays 0, 1, 2, 3 on the four elements
    x = torch.zeros(5, 1, 1, 2, 2, dtype=torch.float64)
    x[0, 0, 0, 1, 1] = 1.0
    w = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]], dtype=torch.float64)
    d = torch.tensor([[[[0.0, 1.0], [2.0, 3.0]]]], dtype=torch.float64)
    y = shifted_conv_sum(x, w, d, 1, 1)  # padding 1: 3x3 output
    # the element (u, v) = (1, 1) (weight 4, delay 3) sees pixel (1, 1) from output (1, 1) at t = 3, etc.
    expect = torch.zeros(5, 1, 1, 3, 3, dtype=torch.float64)
    expect[3, 0, 0, 1, 1] = 4.0
    expect[2, 0, 0, 1, 2] = 3.0
    expect[1, 0, 0, 2, 1] = 2.0
    expect[0, 0, 0, 2, 2] = 1.0
    torch.testing.assert_close(y, expect)
    torch.testing.assert_close(delay_conv_reference(x, w, d, 1, 1), expect)


@pytest.mark.parametrize("per", ["element", "pair"])
@pytest.mark.parametrize("interpolation", ["gauss", "triangle"])
def test_gradcheck_weights_and_delays(per, interpolation):
    g = torch.Generator().manual_seed(2)
    m = DelayConv2d(2, 2, 2, 4, padding=1, delay_per=per, generator=g).double()
    x = _spikes((6, 1, 2, 3, 3), seed=3)
    w = m.weight.detach().clone().requires_grad_(True)
    d = (m.delay.detach().clamp(0.2, 2.8)).clone().requires_grad_(True)
    sigma = 0.8 if interpolation == "gauss" else 1.5

    def f(w, d):
        return dense_delay_conv(x, conv_delay_kernel(w, d, sigma, 4, interpolation), 1, 1)

    assert torch.autograd.gradcheck(f, (w, d), eps=1e-6, atol=1e-6)


def test_module_training_path_and_gradients_reach_every_parameter():
    g = torch.Generator().manual_seed(4)
    m = DelayConv2d(2, 3, 3, 6, padding=1, generator=g).double()
    x = _spikes((8, 2, 2, 5, 5), seed=5)
    y = m(x)
    torch.testing.assert_close(y, dense_delay_conv(x, conv_delay_kernel(m.weight, m.delay, float(m.sigma), 6), 1, 1))
    y.square().sum().backward()
    assert m.weight.grad.abs().sum() > 0 and m.delay.grad.abs().sum() > 0


@pytest.mark.parametrize("per", ["element", "pair"])
def test_gaussian_path_converges_to_the_rounded_one(per):
    g = torch.Generator().manual_seed(6)
    m = DelayConv2d(2, 3, 3, 6, padding=1, delay_per=per, generator=g).double()
    with torch.no_grad():  # delays within 0.25 of an integer (at 0.5 the Gaussian splits, rounding does not)
        off = (torch.rand(m.delay.shape, generator=g, dtype=torch.float64) - 0.5) * 0.5
        m.delay.copy_(round_delays(m.delay, 6) + off)
        m.clamp_()
    x = _spikes((9, 2, 2, 5, 5), seed=7)
    with torch.no_grad():
        rounded = m.eval()(x)
        m.train()
        errs = []
        for s in (0.5, 0.3, 0.15):  # (much below 0.1 the normaliser's eps = 1e-7 dominates, as in DelaySynapse)
            m.sigma = s
            errs.append(float((m(x) - rounded).abs().max()))
    assert errs[0] > errs[1] > errs[2]
    assert errs[2] < 1e-4 * float(rounded.abs().max())


def test_sigma_clamp_and_rounding():
    m = DelayConv2d(1, 1, 3, 5)
    m.sigma = 0.4
    assert float(m.sigma) == pytest.approx(0.4) and isinstance(m.sigma, torch.Tensor)
    with torch.no_grad():
        m.delay.fill_(7.3)
    m.clamp_()
    assert float(m.delay.detach().max()) == 4.0
    with torch.no_grad():
        m.delay.fill_(2.5)
    assert float(m.rounded_delay().detach().max()) == 2.0  # half to even, as the dense synapse
    k = rounded_conv_kernel(m.weight, m.delay, 5)
    assert k.shape == (1, 1, 5, 3, 3) and torch.equal(k[:, :, 2], m.weight.detach())  # tap Td - 1 - 2


def test_shape_errors():
    m = DelayConv2d(2, 4, 3, 5)
    with pytest.raises(ValueError, match=r"expected \(T, B, C_in=2, H, W\), got \(5, 2, 8\)"):
        m(torch.zeros(5, 2, 8))
    with pytest.raises(ValueError, match=r"expected \(T, B, C_in=2, H, W\), got \(5, 1, 3, 8, 8\)"):
        m(torch.zeros(5, 1, 3, 8, 8))
    with pytest.raises(ValueError, match="smaller than the kernel"):
        m(torch.zeros(5, 1, 2, 2, 8))
    with pytest.raises(ValueError, match="delay_per"):
        DelayConv2d(2, 4, 3, 5, delay_per="pixel")
    y = DelayConv2d(2, 4, 3, 5, stride=2, padding=1)(torch.zeros(5, 3, 2, 8, 7))
    assert y.shape == (5, 3, 4, 4, 4)


def test_delays_beyond_the_sequence_give_zero():
    m = DelayConv2d(1, 1, 1, 10).eval()
    with torch.no_grad():
        m.delay.fill_(9.0)
    assert torch.equal(m(torch.ones(4, 1, 1, 2, 2)), torch.zeros(4, 1, 1, 2, 2))


def test_against_dcls_Dcls3_1d():
    """dcls's Dcls3_1d, version "gauss", kernel_count 1, no bias, is our per-element layer:

    - layout: its input is (N, C, H, W, T) (time last) and its kernel (C_out, C_in, kh, kw, Td); its
      ``weight`` (C_out, C_in, kh, kw, 1) is our weight; ``P`` (1, C_out, C_in, kh, kw, 1) is a position
      about the kernel's centre: tap n = P + Td // 2.
    - F.conv3d is a cross-correlation: with time padding Td - 1 on both sides, output step t of the first
      T reads input t + n - (Td - 1), so tap n is the delay Td - 1 - n, and d = Td - 1 - Td // 2 - P.
    - width: |SIG| + 0.27 is our sigma; both normalise over the Td taps with eps 1e-7.
    """
    dcls = pytest.importorskip("DCLS.construct.modules")
    torch.manual_seed(0)
    c_in, c_out, k, td, pad = 2, 3, 3, 7, 1
    ref = dcls.Dcls3_1d(c_in, c_out, kernel_count=1, stride=1, padding=(pad, pad, td - 1), dense_kernel_size=k,
                        dilated_kernel_size=td, bias=False, version="gauss").double()
    g = torch.Generator().manual_seed(8)
    ours = DelayConv2d(c_in, c_out, k, td, padding=pad, generator=g).double()
    ours.sigma = 0.9
    with torch.no_grad():
        ref.weight.copy_(ours.weight.unsqueeze(-1))
        ref.P.copy_((td - 1 - td // 2 - ours.delay).unsqueeze(0).unsqueeze(-1))
        ref.SIG.fill_(0.9 - 0.27)
    x = _spikes((11, 2, c_in, 6, 6), seed=9)
    y_ref = ref(x.permute(1, 2, 3, 4, 0))[..., :11].permute(4, 0, 1, 2, 3)  # (N, C, H, W, T) -> (T, N, C, H, W)
    y = ours(x)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    # and the kernels themselves, element by element
    torch.testing.assert_close(ours.kernel().permute(0, 1, 3, 4, 2), ref.DCK(ref.weight, ref.P, ref.SIG))
    # the gradients of both with respect to the delays agree too (dP = -dd)
    y.sum().backward()
    y_ref.sum().backward()
    torch.testing.assert_close(ours.delay.grad, -ref.P.grad[0, ..., 0], rtol=1e-8, atol=1e-10)
