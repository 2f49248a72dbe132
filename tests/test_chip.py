"""neuromorphic_export.chip is the one definition of the chip's arithmetic: the exporter and simulator
call it on numpy arrays, the training code (snn_delays.quantize, backends.fast_eval) on torch tensors
through thin straight-through wrappers. Here both sides agree bit for bit on random arrays for every
target, the wrappers' neuron equals the simulator's neuron (Loihi's 24-bit activation wrap included),
and the core stays torch-free."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from neuromorphic_export import chip
from neuromorphic_export.network import Layer
from neuromorphic_export.simulate import _lif_float, _lif_loihi
from neuromorphic_export.targets import TARGETS, quantise_layer
from snn_delays.backends.fast_eval import _bn_affine
from snn_delays.quantize import ChipLayer, ChipNeuron, FrozenNorm, chip_targets

CHIPS = chip_targets()


def _rng(seed):
    return np.random.default_rng(seed)


@pytest.mark.parametrize("target", CHIPS)
def test_weight_and_bias_grids_agree_on_numpy_and_torch(target):
    t = TARGETS[target]
    rng = _rng(1)
    w = rng.normal(0, 0.3, (20, 30, 2))
    b = rng.normal(0, 2.0, 20)
    choice = chip.choose_scale(float(np.abs(w).max()), b, 1.0, t, t.weight_bits, t.arithmetic == "loihi")
    q_np = chip.round_weights(w, choice.scale, t.weight_bits, t.weight_mode)
    q_t = chip.round_weights(torch.from_numpy(w), choice.scale, t.weight_bits, t.weight_mode).numpy()
    np.testing.assert_array_equal(q_np, q_t)
    lo, hi, _ = chip.weight_grid(t.weight_bits, t.weight_mode)
    assert q_np.min() >= lo and q_np.max() <= hi and np.all(q_np == np.rint(q_np))
    if t.weight_mode == "signed-even":
        assert np.all(q_np % 2 == 0)
    np.testing.assert_array_equal(chip.round_bias(b, choice.scale, choice.bias_exponent),
                                  chip.round_bias(torch.from_numpy(b), choice.scale, choice.bias_exponent).numpy())


@pytest.mark.parametrize("target", CHIPS)
def test_the_training_quantiser_writes_the_exporters_integers(target):
    """The straight-through weight of a chip layer x its scale == the integers quantise_layer exports."""
    t = TARGETS[target]
    rng = _rng(2)
    n_out, n_in = 6, 9
    norm = FrozenNorm(n_out, None)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, n_out)))
        norm.bias.copy_(torch.from_numpy(rng.normal(0, 1.0, n_out)))
        norm.running_mean.copy_(torch.from_numpy(rng.normal(0, 1.0, n_out)))
        norm.running_var.copy_(torch.from_numpy(rng.uniform(0.2, 3.0, n_out)))
    layer = ChipLayer(t, 1.0)
    layer.norm = norm
    w = torch.from_numpy(rng.normal(0, 0.4, (n_out, n_in, 1)))
    mask = torch.ones(n_out, n_in)
    wq = layer.weight(w, mask).detach().numpy()[:, :, 0]
    gain, bias = chip.fold_batchnorm(*(getattr(norm, k).detach().double().numpy()
                                       for k in ("weight", "bias", "running_mean", "running_var")))
    folded = w.numpy()[:, :, 0] * gain[:, None]
    post, pre = np.nonzero(np.ones((n_out, n_in)))
    exported, _ = quantise_layer(Layer(n_in, n_out, pre, post, folded[post, pre], np.zeros(len(pre)), decay=0.5,
                                       threshold=1.0, bias=bias),
                                 t.weight_bits, t.weight_mode, t.arithmetic == "loihi", layer.choice)
    dense = np.zeros((n_out, n_in))
    dense[exported.post, exported.pre] = exported.weight
    np.testing.assert_array_equal(np.rint(wq * layer.choice.scale), dense)
    if t.arithmetic == "loihi":
        np.testing.assert_array_equal(layer.bias().detach().numpy(), exported.bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batchnorm_folding_is_one_function(dtype):
    rng = _rng(3)
    bn = torch.nn.BatchNorm1d(17, eps=chip.BN_EPS).to(dtype).eval()
    with torch.no_grad():
        for name, lo, hi in (("weight", 0.5, 2), ("bias", -1, 1), ("running_mean", -1, 1), ("running_var", 0.1, 3)):
            getattr(bn, name).copy_(torch.from_numpy(rng.uniform(lo, hi, 17)))
    args = [getattr(bn, k).detach() for k in ("weight", "bias", "running_mean", "running_var")]
    g_t, b_t = chip.fold_batchnorm(*args)
    g_n, b_n = chip.fold_batchnorm(*(a.numpy() for a in args))
    np.testing.assert_array_equal(g_t.numpy(), g_n)
    np.testing.assert_array_equal(b_t.numpy(), b_n)
    scale, shift = _bn_affine(bn, 17, dtype)  # the compiled evaluation's folding
    np.testing.assert_array_equal(scale, g_n)
    np.testing.assert_array_equal(shift, b_n)
    x = torch.from_numpy(rng.normal(0, 1, (5, 17))).to(dtype)
    with torch.no_grad():
        torch.testing.assert_close(bn(x), x * g_t + b_t)  # it is the BatchNorm


def test_delay_rounding_is_one_function():
    from neuromorphic_export.network import round_delays
    from snn_delays.synapse import round_delays as synapse_round_delays

    d = np.concatenate([_rng(6).uniform(-2, 12, 1000), np.arange(-1, 11) + 0.5])  # halves round to even
    np.testing.assert_array_equal(synapse_round_delays(torch.from_numpy(d), 9).numpy().astype(np.int32),
                                  round_delays(d, 9))
    assert set(round_delays(np.array([0.5, 1.5, 2.5]), 9)) == {0, 2}


def test_loihi_update_agrees_on_int64_and_float64():
    rng = _rng(4)
    v = rng.integers(-2 ** 23 + 1, 2 ** 23, 5000)
    a = rng.integers(-2 ** 18, 2 ** 18, 5000)  # << 6: up to 2^24, beyond 2^23, so the wrap matters
    bias = rng.integers(-2 ** 12, 2 ** 12, 5000) << 6
    for keep in (0, 1, 3000, 4095, 4096):
        n = chip.loihi_update(v, a, bias, keep)
        t = chip.loihi_update(*(torch.from_numpy(z).double() for z in (v, a, bias)), keep)
        np.testing.assert_array_equal(n, t.numpy().astype(np.int64))
    u = a << 6
    wrapped = chip.loihi_wrap_activation(u)
    assert wrapped.max() <= 2 ** 23 and wrapped.min() > -2 ** 23 and np.all((wrapped - u) % 2 ** 24 == 0)


def _neuron(t, n, theta, tau, bias_real, readout=False):
    layer = ChipLayer(t, np.inf if readout else theta)
    norm = FrozenNorm(n, layer)
    with torch.no_grad():  # folded bias = beta exactly
        norm.bias.copy_(torch.from_numpy(bias_real))
        norm.running_mean.zero_()
    layer.norm = None if readout else norm
    return layer, ChipNeuron(layer, tau, np.inf if readout else theta).double()


@pytest.mark.parametrize("target", CHIPS)
@pytest.mark.parametrize("readout", [False, True])
def test_the_training_neuron_is_the_simulators(target, readout):
    """ChipNeuron (torch, with gradients) and the simulator's neuron (numpy) on the same random
    currents: the same spikes and membranes, bit for bit, on Loihi with currents large enough to
    wrap the chip's 24-bit activation register."""
    t = TARGETS[target]
    rng = _rng(5)
    n, batch, steps, tau, theta, scale = 7, 3, 40, 4.0, 1.5, 64.0
    layer, neuron = _neuron(t, n, theta, tau, rng.normal(0, 0.3, n), readout)
    layer.choice = chip.LayerScale(scale, 1 if t.bias_exp_max else 0)
    if t.arithmetic == "loihi":
        current_int = rng.integers(-40, 160, (steps, batch, n)).astype(np.float64)
        current_int[5, 0, :] = 2 ** 17 + 5  # << 6 wraps past 2^23
        current = current_int / scale
    else:
        current = rng.normal(0.4, 0.8, (steps, batch, n))
    hop = t.hop_latency_steps
    with torch.no_grad():
        out = neuron(torch.from_numpy(current).permute(0, 2, 1)).permute(0, 2, 1).numpy()  # channel-major inside
    bias = np.zeros(n) if readout else layer.bias().detach().numpy()
    ref = Layer(1, n, [], [], [], [], decay=1 - 1 / tau, threshold=np.inf if readout else theta, bias=bias,
                kind="readout" if readout else "hidden", weight_scale=scale)
    shifted = np.concatenate([np.zeros((hop, batch, n)), current[: steps - hop]])  # one step per hop
    if t.arithmetic == "loihi":
        spikes, memb = _lif_loihi(shifted * scale, ref)
    else:
        spikes, memb = _lif_float(shifted, ref, t.threshold_rule)
    if readout:
        np.testing.assert_array_equal(out, memb) if t.arithmetic == "loihi" else \
            np.testing.assert_allclose(out, memb, rtol=0, atol=1e-12)
    else:
        assert spikes.sum() > 10
        np.testing.assert_array_equal(out, spikes)


def test_the_core_does_not_import_torch():
    code = ("import sys; import neuromorphic_export.chip, neuromorphic_export.targets, neuromorphic_export.simulate; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
