"""adLIF (symplectic Euler): a hand-computed trajectory, the module against the step function,
the compiled loops and the PyTorch twins against the plain autograd loop (values and gradients),
finite differences, gradients of every parameter, shapes, and the torch-free float64 step of
the export package bit for bit.

No installed package implements this neuron (SpikingJelly 2.0 has Izhikevich/AdaptBaseNode,
Norse 1.1 AdEx and LSNN, snnTorch 1.0 neither), so the independent references are the hand-computed
trajectory and finite differences."""

import math

import numpy as np
import pytest
import torch

from neuromorphic_export.adaptive import adlif_float
from snn_delays.adaptive_neuron import AdLIF, AdLIFRanges, AdLIFState, adlif_sequence, adlif_step
from snn_delays.backends import use_compiled
from snn_delays.backends.adlif import adlif_forward_values, adlif_update
from snn_delays.backends.compiled import AVAILABLE
from snn_delays.neuron import atan_surrogate


def _params(h, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = AdLIFRanges()
    lims = [r.decay_u, r.decay_w, r.a, r.b]
    return [torch.empty(h, dtype=dtype).uniform_(lo, hi, generator=g) for lo, hi in lims]


def _drive(shape, dtype=torch.float64, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype) * 3 + 1.5


HAND = dict(decay_u=0.5, decay_w=0.5, a=0.5, b=1.0, q=2.0)
# v = 0.5 u + 0.5 (I - w); reset to 0 on v >= 1; w = 0.5 w + (0.5 * 2) (0.5 u + 1 s)
#   t0: I=2: v = 1.0 -> spike, u = 0,      w = 1.0
#   t1: I=2: v = 0.5,           u = 0.5,   w = 0.5 + 0.25 = 0.75
#   t2: I=0: v = 0.25 - 0.375 = -0.125,    w = 0.375 - 0.0625 = 0.3125
#   t3: I=4: v = -0.0625 + 1.84375 = 1.78125 -> spike, u = 0, w = 0.15625 + 1 = 1.15625
HAND_I = [2.0, 2.0, 0.0, 4.0]
HAND_S = [1.0, 0.0, 0.0, 1.0]
HAND_V = [1.0, 0.5, -0.125, 1.78125]
HAND_W = [1.0, 0.75, 0.3125, 1.15625]


def _hand_params(dtype=torch.float64):
    return [torch.tensor([HAND[k]], dtype=dtype) for k in ("decay_u", "decay_w", "a", "b")]


@pytest.mark.parametrize("mode", ["plain", "fused-compiled", "fused-torch"])
def test_hand_computed_trajectory(mode):
    x = torch.tensor(HAND_I, dtype=torch.float64).view(4, 1, 1)
    p = _hand_params()
    if mode == "plain":
        s, u, w = adlif_sequence(x, *p, q=HAND["q"], fused=False, return_state=True)
        assert w.view(-1).tolist() == HAND_W
        assert u.view(-1).tolist() == [0.0, 0.5, -0.125, 0.0]
    else:
        if mode == "fused-compiled" and not AVAILABLE:
            pytest.skip("numba not available")
        with use_compiled(mode == "fused-compiled"):
            s = adlif_sequence(x, *p, q=HAND["q"])
            _, v = adlif_forward_values(x, p, HAND["q"], 1.0, 2)
        assert v.view(-1).tolist() == HAND_V
    assert s.view(-1).tolist() == HAND_S


def test_hand_computed_trajectory_export_step():
    spikes, v, w = adlif_float(np.array(HAND_I).reshape(4, 1, 1), *[np.array([HAND[k]]) for k in
                                                                    ("decay_u", "decay_w", "a", "b")], HAND["q"], 1.0)
    assert spikes.ravel().tolist() == HAND_S and v.ravel().tolist() == HAND_V and w.ravel().tolist() == HAND_W
    s_gt, _, _ = adlif_float(np.array(HAND_I).reshape(4, 1, 1), *[np.array([HAND[k]]) for k in
                                                                  ("decay_u", "decay_w", "a", "b")], HAND["q"], 1.0,
                             rule=">")
    # '>': v = 1.0 at t0 does not fire: u = 1, w = 0.5; t1: v = 0.5 + 0.75 = 1.25 fires, w = 0.25 + 1;
    # t2: v = -0.625, w = 0.625 - 0.3125; t3: v = -0.3125 + 1.84375 = 1.53125 fires
    assert s_gt.ravel().tolist() == [0, 1, 0, 1]


def test_module_equals_step_function_and_keeps_no_state():
    torch.manual_seed(0)
    m = AdLIF(7).double()
    x = _drive((30, 4, 7))
    out = m(x)
    state, ref = None, []
    du, dw, a, b = m.clamped()
    for t in range(30):
        s, state = adlif_step(x[t], state, du, dw, a, b, m.ranges.q, m.threshold, m.alpha)
        ref.append(s)
    assert isinstance(state, AdLIFState)
    assert torch.equal(out, torch.stack(ref))
    assert torch.equal(m(x), out)  # a second call starts from zero state again
    assert torch.equal(m.forward_cm(x.permute(0, 2, 1).contiguous()), out.permute(0, 2, 1))
    assert 0.01 < out.mean().item() < 0.9


def _run(mode, x, params, channel_axis):
    x = x.clone().requires_grad_(True)
    ps = [p.clone().requires_grad_(True) for p in params]
    if mode == "plain":
        s = adlif_sequence(x, *ps, channel_axis=channel_axis, fused=False)
    else:
        with use_compiled(mode == "compiled"):
            s = adlif_sequence(x, *ps, channel_axis=channel_axis)
    g = torch.linspace(-1, 1, s.numel(), dtype=s.dtype).view_as(s)
    (s * g).sum().backward()
    return s.detach(), x.grad, [p.grad for p in ps]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("channel_axis", [2, 1])
@pytest.mark.parametrize("mode", ["compiled", "torch-twin"])
def test_fused_equals_plain_loop(dtype, channel_axis, mode):
    if mode == "compiled" and not AVAILABLE:
        pytest.skip("numba not available")
    h = 9
    x = _drive((40, 6, h), dtype)
    if channel_axis == 1:
        x = x.permute(0, 2, 1).contiguous()  # (T, H, B)
    params = _params(h, dtype)
    s_ref, gx_ref, gp_ref = _run("plain", x, params, channel_axis)
    s, gx, gp = _run(mode, x, params, channel_axis)
    assert s_ref.sum() > 20 and (s_ref == 0).sum() > 20
    assert torch.equal(s, s_ref)
    tol = dict(rtol=1e-9, atol=1e-9) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(gx, gx_ref, **tol)
    for name, g, gr in zip(("decay_u", "decay_w", "a", "b"), gp, gp_ref):
        assert gr.abs().max() > 0, name
        scale = gr.abs().max().item()
        torch.testing.assert_close(g / scale, gr / scale, **tol, msg=f"gradient of {name}")


def test_float64_values_bit_for_bit_compiled_twin_and_export_step():
    h = 11
    x = _drive((50, 5, h))
    params = _params(h)
    q = AdLIFRanges().q
    spikes_np, v_np, w_np = adlif_float(x.numpy(), *[p.numpy() for p in params], q, 1.0)
    s_plain, u_plain, w_plain = adlif_sequence(x, *params, q=q, fused=False, return_state=True)
    assert spikes_np.sum() > 20
    assert np.array_equal(s_plain.numpy(), spikes_np.astype(np.float64))
    assert np.array_equal(w_plain.numpy(), w_np)
    assert np.array_equal(u_plain.numpy(), np.where(spikes_np == 1, 0.0, v_np))
    for compiled in ([True, False] if AVAILABLE else [False]):
        with use_compiled(compiled):
            s, v = adlif_forward_values(x, params, q, 1.0, 2)
        assert np.array_equal(v.numpy(), v_np), f"compiled={compiled}"
        assert np.array_equal(s.numpy(), spikes_np.astype(np.float64))


def test_export_step_with_bias_equals_torch_on_biased_input():
    h = 4
    x = _drive((20, 3, h))
    params = _params(h)
    bias = np.array([0.25, -0.5, 1.0, 0.0])
    spikes_np, _, w_np = adlif_float(x.numpy(), *[p.numpy() for p in params], 120.0, 1.0, bias=bias)
    s, _, w = adlif_sequence(x + torch.from_numpy(bias), *params, fused=False, return_state=True)
    assert np.array_equal(s.numpy(), spikes_np.astype(np.float64)) and np.array_equal(w.numpy(), w_np)


def test_finite_differences_with_smooth_surrogate():
    # The plain loop with the spike replaced by the smooth function whose derivative is the
    # surrogate (atan): its autograd gradients (every input and parameter) against finite differences.
    h = 3
    x = _drive((12, 2, h), seed=3).requires_grad_(True)
    params = [p.requires_grad_(True) for p in _params(h, seed=4)]

    def smooth(x, du, dw, a, b):
        u = torch.zeros_like(x[0])
        w = torch.zeros_like(x[0])
        out = []
        for t in range(x.shape[0]):
            _, s, u, w = adlif_update(u, w, x[t], du, dw, a, b, 120.0, 1.0, spike=lambda z: atan_surrogate(z, 2.0))
            out.append(s)
        return torch.stack(out)

    with torch.no_grad():  # no membrane within 1e-3 of the threshold: the hard reset is not probed
        u = torch.zeros_like(x[0])
        w = torch.zeros_like(x[0])
        for t in range(x.shape[0]):
            v, _, u, w = adlif_update(u, w, x[t], *params, 120.0, 1.0)
            assert (v - 1.0).abs().min() > 1e-3
    assert torch.autograd.gradcheck(smooth, (x, *params), eps=1e-6, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_gradients_reach_every_parameter(fused):
    torch.manual_seed(0)
    m = AdLIF(16, fused=fused)
    x = _drive((60, 8, 16), torch.float32).requires_grad_(True)
    m(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_parameters_initialised_in_range_and_clamped():
    torch.manual_seed(0)
    r = AdLIFRanges()
    m = AdLIF(1000)
    tau_u, tau_w = m.tau_steps()
    assert 5.0 - 1e-4 <= tau_u.min() and tau_u.max() <= 25.0 + 1e-3
    assert 60.0 - 1e-3 <= tau_w.min() and tau_w.max() <= 300.0 + 0.05
    assert 0 <= m.a.min() and m.a.max() <= 1 and 0 <= m.b.min() and m.b.max() <= 2
    assert m.a.std() > 0.2  # spread over the range, not a constant
    with torch.no_grad():
        m.a[0], m.b[0], m.decay_u[0], m.decay_w[0] = 5.0, -1.0, 0.999, 0.1
    du, dw, a, b = m.clamped()
    assert a[0] == 1.0 and b[0] == 0.0
    assert du[0].item() == pytest.approx(r.decay_u[1]) and dw[0].item() == pytest.approx(r.decay_w[0])
    m.clamp_()
    assert m.a[0] == 1.0 and m.b[0] == 0.0 and m.decay_u[0].item() == pytest.approx(math.exp(-1 / 25))


def test_shapes_and_shape_errors():
    m = AdLIF(5)
    assert m(torch.zeros(7, 3, 5)).shape == (7, 3, 5)
    assert m.forward_cm(torch.zeros(7, 5, 3)).shape == (7, 5, 3)
    with pytest.raises(ValueError, match=r"expected input \(T, B, H\), got \(7, 5\)"):
        m(torch.zeros(7, 5))
    with pytest.raises(ValueError, match=r"expected per-neuron parameters \(4,\)"):
        m(torch.zeros(7, 3, 4))
    with pytest.raises(ValueError, match=r"\(T, H, B\)"):
        m.forward_cm(torch.zeros(7, 3, 5))
    with pytest.raises(ValueError, match="n_neurons"):
        AdLIF(0)
    with pytest.raises(ValueError, match="low <= high"):
        AdLIFRanges(a=(1.0, 0.0))
    with pytest.raises(ValueError, match=r"expected current \(T, B, n\)"):
        adlif_float(np.zeros((3, 4)), 0.5, 0.5, 0.5, 0.5, 1.0, 1.0)
    for fused in (True, False):
        x = torch.zeros(0, 2, 5, requires_grad=True)
        s = adlif_sequence(x, *_params(5, torch.float32), fused=fused)
        assert s.shape == (0, 2, 5)
        s.sum().backward()
        assert x.grad.shape == (0, 2, 5)
