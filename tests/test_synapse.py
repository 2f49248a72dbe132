"""The delay synapse against independent references: the Gaussian formula, a direct loop over
I[t] = sum_j w_ij S_j[t - d_ij], the authors' `dcls` package, finite differences."""

import math

import numpy as np
import pytest
import torch

from snn_delays import DelaySynapse, gaussian_kernel, rounded_kernel
from snn_delays.synapse import random_fanin_mask


def gaussian_formula(w, d, sigma, td, eps=1e-7):
    """method.md, written out with numpy loops."""
    out_f, in_f, m = w.shape
    k = np.zeros((out_f, in_f, td))
    for i in range(out_f):
        for j in range(in_f):
            for e in range(m):
                g = np.array([math.exp(-0.5 * ((n - td + d[i, j, e] + 1) / sigma) ** 2) for n in range(td)])
                k[i, j] += w[i, j, e] * g / (eps + g.sum())
    return k


def direct_delay_loop(x, w, d):
    """I[t, b, i] = sum_j sum_e w_ije x[t - d_ije, b, j] with integer d; x (T, B, C_in)."""
    t_len, batch, _ = x.shape
    out_f, in_f, m = w.shape
    y = np.zeros((t_len, batch, out_f))
    for i in range(out_f):
        for j in range(in_f):
            for e in range(m):
                dd = int(d[i, j, e])
                if dd < t_len:
                    y[dd:, :, i] += w[i, j, e] * x[: t_len - dd, :, j]
    return y


@pytest.mark.parametrize("m", [1, 2])
@pytest.mark.parametrize("sigma", [0.5, 3.0, 12.0])
def test_gaussian_kernel_matches_formula(m, sigma):
    torch.manual_seed(1)
    td = 9
    w = torch.randn(3, 4, m, dtype=torch.float64)
    d = torch.rand(3, 4, m, dtype=torch.float64) * (td - 1)
    got = gaussian_kernel(w, d, sigma, td).numpy()
    np.testing.assert_allclose(got, gaussian_formula(w.numpy(), d.numpy(), sigma, td), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("m", [1, 3])
def test_kernel_matches_dcls_package(m):
    dcls_mod = pytest.importorskip("DCLS.construct.modules", reason="the authors' dcls package is not installed")
    td, sigma = 25, 4.0
    ref = dcls_mod.Dcls1d(6, 5, kernel_count=m, dilated_kernel_size=td, bias=False, version="gauss").double()
    syn = DelaySynapse(6, 5, kernel_size=td, kernel_count=m).double()
    with torch.no_grad():
        ref.weight.copy_(syn.weight)
        # dcls position P <-> delay kernel_size // 2 - P; width |SIG| + 0.27 <-> sigma
        ref.P.copy_((td // 2 - syn.delay).unsqueeze(0))
        ref.SIG.fill_(sigma - 0.27)
    syn.sigma = sigma
    syn.train()
    k_ref = ref.DCK(ref.weight, ref.P, ref.SIG)
    torch.testing.assert_close(syn.kernel(), k_ref, rtol=1e-9, atol=1e-12)
    # and the convolution with causal left padding
    x = (torch.rand(40, 2, 6, dtype=torch.float64) < 0.3).double()
    y_ref = ref(torch.nn.functional.pad(x.permute(1, 2, 0), (td - 1, 0))).permute(2, 0, 1)
    torch.testing.assert_close(syn(x), y_ref, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("m", [1, 2])
def test_eval_forward_equals_direct_loop(m):
    torch.manual_seed(2)
    td = 7
    syn = DelaySynapse(5, 4, kernel_size=td, kernel_count=m).double().eval()
    x = torch.poisson(torch.full((30, 3, 5), 0.4, dtype=torch.float64))  # spike counts
    d_int = torch.round(syn.delay.detach())
    want = direct_delay_loop(x.numpy(), syn.weight.detach().numpy(), d_int.numpy())
    np.testing.assert_allclose(syn(x).detach().numpy(), want, rtol=1e-12, atol=1e-12)
    # eval kernel: one tap per element at the rounded delay, carrying the full weight
    k = rounded_kernel(syn.weight, syn.delay, td)
    assert torch.count_nonzero(k) <= 5 * 4 * m
    torch.testing.assert_close(k.sum(-1), syn.weight.sum(-1))


def test_training_forward_is_causal_and_length_preserving():
    syn = DelaySynapse(4, 3, kernel_size=11).train()
    syn.sigma = 2.0
    x = torch.rand(25, 2, 4)
    y = syn(x)
    assert y.shape == (25, 2, 3)
    x2 = x.clone()
    x2[12:] += 1.0
    y2 = syn(x2)
    torch.testing.assert_close(y[:12], y2[:12])
    assert not torch.allclose(y[12:], y2[12:])


def test_delay_gradient_matches_finite_differences():
    torch.manual_seed(3)
    syn = DelaySynapse(3, 2, kernel_size=9, kernel_count=2).double().train()
    syn.sigma = 1.5
    x = torch.rand(20, 2, 3, dtype=torch.float64)
    target = torch.randn(20, 2, 2, dtype=torch.float64)

    def loss_of(delay):
        k = gaussian_kernel(syn.weight, delay, syn.sigma, 9)
        from snn_delays.synapse import causal_conv

        return ((causal_conv(x, k) - target) ** 2).sum()

    d = syn.delay.detach().clone().requires_grad_(True)
    loss_of(d).backward()
    fd = torch.zeros_like(d)
    h = 1e-6
    for idx in np.ndindex(*d.shape):
        dp, dm = d.detach().clone(), d.detach().clone()
        dp[idx] += h
        dm[idx] -= h
        fd[idx] = (loss_of(dp) - loss_of(dm)) / (2 * h)
    torch.testing.assert_close(d.grad, fd, rtol=1e-5, atol=1e-7)
    # and through the module itself
    syn.zero_grad()
    ((syn(x) - target) ** 2).sum().backward()
    torch.testing.assert_close(syn.delay.grad, d.grad)


def test_clamp_freeze_and_mask():
    g = torch.Generator().manual_seed(0)
    mask = random_fanin_mask(6, 20, 4, g)
    assert mask.sum(1).tolist() == [4.0] * 6
    syn = DelaySynapse(20, 6, kernel_size=5, mask=mask, learn_delays=False)
    assert not syn.delay.requires_grad and syn.weight.requires_grad
    with torch.no_grad():
        syn.delay.add_(10.0)
    syn.clamp_()
    assert float(syn.delay.max()) == 4.0 and float(syn.delay.min()) >= 0.0
    x = torch.rand(10, 2, 20)
    y = syn(x)
    y.sum().backward()
    # masked-out synapses neither contribute nor learn
    assert torch.all(syn.weight.grad[mask == 0] == 0)
    assert syn.trainable_count() == 6 * 4
    frozen_w = DelaySynapse(20, 6, kernel_size=5, learn_weights=False)
    assert not frozen_w.weight.requires_grad and frozen_w.delay.requires_grad


def test_sigma_assignable_and_shape_errors():
    syn = DelaySynapse(4, 3, kernel_size=7)
    syn.sigma = 0.5
    assert float(syn.sigma) == 0.5 and isinstance(syn.sigma, torch.Tensor)
    with pytest.raises(ValueError, match=r"expected input \(T, B, 4\)"):
        syn(torch.zeros(10, 4))
    with pytest.raises(ValueError, match=r"expected input \(T, B, 4\)"):
        syn(torch.zeros(10, 2, 5))


def test_delays_initialised_in_range_and_weights_fan_in():
    syn = DelaySynapse(100, 50, kernel_size=25)
    assert 0 <= float(syn.delay.detach().min()) and float(syn.delay.detach().max()) <= 24
    assert float(syn.weight.detach().abs().max()) <= 1 / math.sqrt(100) + 1e-6
