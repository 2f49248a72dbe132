"""The evaluation loop on bit-packed spikes (masked adds, snn_delays.backends.kernels.eval_bits)
against its PyTorch twin (a direct sum over the rounded taps, BatchNorm as an affine map, the LIF
loop), the bit packing against numpy, and the whole compiled evaluation against the plain dense
path with every pairing of layer forms (event, byte taps, bit taps) at several spike densities."""

import numpy as np
import pytest
import torch

from snn_delays import ModelConfig, build_model, calibrate_batchnorm
from snn_delays.backends import compiled, fast_eval
from snn_delays.backends.kernels import eval_bits

needs_numba = pytest.mark.skipif(not compiled.compiled_enabled(), reason="numba is not installed or switched off")


def _twin(x, indptr, src, delay, value, scale, shift, decay, threshold, spiking):
    """PyTorch twin: x (in, T, B) 0/1 -> spikes (out, T, B) uint8 or the membrane (out, T, B)."""
    n_in, t_len, b_len = x.shape
    n_out = len(indptr) - 1
    xp = torch.cat([torch.zeros(n_in, int(delay.max()) + 1, b_len, dtype=x.dtype), x], 1)  # zeros before t = 0
    pad = int(delay.max()) + 1
    cur = torch.zeros(n_out, t_len, b_len, dtype=x.dtype)
    for i in range(n_out):
        for k in range(int(indptr[i]), int(indptr[i + 1])):
            s0 = pad - int(delay[k])
            cur[i] += float(value[k]) * xp[int(src[k]), s0:s0 + t_len]
    cur = cur * torch.as_tensor(scale)[:, None, None] + torch.as_tensor(shift)[:, None, None]
    u = torch.zeros(n_out, b_len, dtype=x.dtype)
    out = []
    for t in range(t_len):
        v = decay * u + cur[:, t]
        if spiking:
            s = v >= threshold
            u = torch.where(s, torch.zeros_like(v), v)
            out.append(s.to(torch.uint8))
        else:
            u = v
            out.append(v)
    return torch.stack(out, 1)


def _table(n_in, n_out, td, m, rng, dtype):
    """A tap table (indptr, src, delay, value): every output takes m taps from each input."""
    src = np.repeat(np.tile(np.arange(n_in), n_out), m).astype(np.int64)
    indptr = np.arange(0, n_out * n_in * m + 1, n_in * m).astype(np.int64)
    delay = rng.integers(0, td, len(src)).astype(np.int64)
    value = (rng.standard_normal(len(src)) * 0.6).astype(dtype)
    return indptr, src, delay, value


@needs_numba
@pytest.mark.parametrize("b_len", [1, 13, 16, 40])  # padding lanes up to whole groups of 16
@pytest.mark.parametrize("t_len,td", [(30, 9), (5, 11), (17, 1)])  # blocks of 8 steps, delays beyond T
def test_pack_and_unpack_bits_equal_numpy(b_len, t_len, td):
    rng = np.random.default_rng(b_len + t_len)
    x = (rng.random((t_len, b_len, 7)) < 0.3).astype(np.uint8)
    xb = eval_bits.pack_tbc_bits(x, td)
    want = np.packbits(x.transpose(2, 0, 1), axis=-1, bitorder="little")  # (C, T, ceil(B / 8))
    assert xb.shape == (7, eval_bits.bit_rows(t_len, td), eval_bits.bit_bytes(b_len))
    assert not xb[:, :td].any() and not xb[:, td + t_len:].any() and not xb[:, :, want.shape[2]:].any()
    assert np.array_equal(xb[:, td:td + t_len, :want.shape[2]], want)
    assert np.array_equal(eval_bits.pack_ctb_bits(np.ascontiguousarray(x.transpose(2, 0, 1)), td), xb)
    assert np.array_equal(eval_bits.bits_to_tbc(xb, t_len, b_len, td), x)


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("density", [0.03, 0.1, 0.4])
@pytest.mark.parametrize("b_len,t_len,td,m", [(16, 30, 9, 1), (21, 19, 7, 2), (48, 8, 1, 1), (5, 26, 25, 3)])
def test_bit_tap_loop_equals_pytorch_twin(dtype, density, b_len, t_len, td, m):
    rng = np.random.default_rng(int(100 * density) + b_len + m)
    n_in, n_out = 11, 6
    indptr, src, delay, value = _table(n_in, n_out, td, m, rng, dtype)
    x = (rng.random((n_in, t_len, b_len)) < density).astype(np.uint8)
    scale = (0.5 + rng.random(n_out)).astype(dtype)
    shift = (0.3 * rng.standard_normal(n_out)).astype(dtype)
    decay, threshold = 0.6, 0.5
    pad = int(delay.max())
    xb = eval_bits.pack_ctb_bits(x, pad)
    tx = torch.from_numpy(x.astype(dtype))
    for spiking in (True, False):
        want = _twin(tx, indptr, src, delay, value, scale, shift, decay, threshold, spiking)
        if spiking:
            out = eval_bits.empty_bits(n_out, t_len, b_len, 3)
            eval_bits.tap1_lif_bits(xb, pad, t_len, b_len, indptr, src, delay, value, scale, shift, decay, threshold,
                                    True, out, 3)
            got = eval_bits.bits_to_tbc(out, t_len, b_len, 3).transpose(2, 0, 1)
            assert float(want.float().mean()) > 0.02
            assert np.array_equal(got, want.numpy())
            assert not out[:, :3].any() and not out[:, 3 + t_len:].any()
            lanes = np.unpackbits(out, axis=-1, bitorder="little")
            assert not lanes[:, :, b_len:].any()  # the padding lanes stay silent
        else:
            out = np.empty((n_out, t_len, b_len), dtype=dtype)
            eval_bits.tap1_lif_bits(xb, pad, t_len, b_len, indptr, src, delay, value, scale, shift, decay, 0.0,
                                    False, out)
            np.testing.assert_allclose(out, want.numpy(), rtol=1e-5, atol=1e-5)


@needs_numba
def test_bit_tap_loop_refuses_too_small_a_pad():
    rng = np.random.default_rng(0)
    indptr, src, delay, value = _table(3, 2, 9, 1, rng, np.float32)
    xb = eval_bits.pack_ctb_bits(np.zeros((3, 10, 4), np.uint8), int(delay.max()) - 1)
    one = np.ones(2, np.float32)
    with pytest.raises(ValueError):
        eval_bits.tap1_lif_bits(xb, int(delay.max()) - 1, 10, 4, indptr, src, delay, value, one, one * 0, 0.5, 1.0,
                                True, eval_bits.empty_bits(2, 10, 4, 0))


def _models(cfg, seed=4, calib_density=0.3):
    fast = calibrate_batchnorm(build_model(cfg, seed=seed), (torch.rand(30, 64, cfg.input_size) < calib_density).float())
    plain = build_model(ModelConfig(**{**cfg.__dict__, "backend": "dense"}), seed=seed).eval()
    plain.load_state_dict(fast.state_dict())
    return fast, plain


@needs_numba
@pytest.mark.parametrize("limits,kinds", [
    ((0.0, 0.0), ["taps", "bits", "bits"]),  # bytes (counts) -> bits -> bits
    ((0.5, 0.0), ["event", "bits", "bits"]),  # the input event-driven, hidden spikes as bits
    ((0.5, 1.0), ["event", "event", "event"]),
    ((0.0, 1.0), ["taps", "event", "event"]),
])
@pytest.mark.parametrize("shift", [0.0, -0.6])  # calibrated (dense) and quieter (trained-like) hidden layers
@pytest.mark.parametrize("kw", [dict(kernel_size=9), dict(kernel_size=9, kernel_count=2), dict(kernel_size=9, fanin=5),
                                dict(kernel_size=1)])
def test_fast_eval_forms_equal_dense_eval(limits, kinds, shift, kw, monkeypatch):
    """Every pairing of layer forms gives the plain path's spikes and predictions (counts input)."""
    monkeypatch.setattr(fast_eval, "EVENT_MAX_DENSITY", limits[0])
    monkeypatch.setattr(fast_eval, "BIT_EVENT_MAX_DENSITY", limits[1])
    torch.manual_seed(7)
    cfg = ModelConfig(input_size=12, n_classes=5, hidden_size=24, tau_steps=2.0, n_layers=2, **kw)
    fast, plain = _models(cfg)
    for model in (fast, plain):
        for blk in model.hidden:
            blk.norm.bias.data += shift
    x = (torch.rand(30, 37, 12) < 0.3).float() * torch.randint(1, 4, (30, 37, 12)).float()  # counts 1-3
    with torch.no_grad():
        got_kinds = []
        fast_eval.fast_eval_forward(fast, x, kinds=got_kinds, extra_steps=fast.extra_steps)
        assert got_kinds == kinds
        u1, s1 = fast(x, return_spikes=True)
        u2, s2 = plain(x, return_spikes=True)
    assert all(float(s.mean()) > 0.01 for s in s1)
    for a, b in zip(s1, s2):
        assert torch.equal(a, b)
    torch.testing.assert_close(u1, u2, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.predict(x), plain.predict(x))


@needs_numba
def test_binary_input_and_single_layer_take_bits_only_after_spikes(monkeypatch):
    """The first layer never reads bits (its input may hold counts); a readout after one hidden
    layer does; a 0/1 input equals the plain path too."""
    monkeypatch.setattr(fast_eval, "EVENT_MAX_DENSITY", 0.0)
    monkeypatch.setattr(fast_eval, "BIT_EVENT_MAX_DENSITY", 0.0)
    torch.manual_seed(3)
    cfg = ModelConfig(input_size=10, n_classes=3, hidden_size=20, tau_steps=2.0, n_layers=1, kernel_size=7)
    fast, plain = _models(cfg)
    x = (torch.rand(25, 19, 10) < 0.3).float()
    with torch.no_grad():
        kinds = []
        fast_eval.fast_eval_forward(fast, x, kinds=kinds, extra_steps=fast.extra_steps)
        assert kinds == ["taps", "bits"]
        u1, s1 = fast(x, return_spikes=True)
        u2, s2 = plain(x, return_spikes=True)
    assert torch.equal(s1[0], s2[0])
    torch.testing.assert_close(u1, u2, rtol=1e-5, atol=1e-5)


@needs_numba
def test_event_layer_offsets_of_every_width_agree():
    """The event loop reads uint16, uint32 or uint64 offsets (the narrowest that holds them is used)."""
    from snn_delays.backends.kernels import eval as eval_loops

    torch.manual_seed(1)
    cfg = ModelConfig(input_size=12, n_classes=5, hidden_size=24, tau_steps=2.0, n_layers=1, kernel_size=9)
    fast, _ = _models(cfg)
    syn = fast.hidden[0].synapse
    indptr, offset, weight = fast_eval._event_table(syn)
    assert offset.dtype == np.uint16
    x = ((torch.rand(20, 6, 12) < 0.2).float() * 2).numpy()
    scale, shift = fast_eval._bn_affine(fast.hidden[0].norm, 24, torch.float32)
    outs = []
    for kind in (np.uint16, np.uint32, np.uint64):
        out = np.empty((28, 6, 24), np.uint8)
        eval_loops.event_layer(x, indptr, offset.astype(kind), weight, scale, shift, 0.5, 1.0, True, 9, out)
        outs.append(out)
    assert outs[0].any() and all(np.array_equal(outs[0], o) for o in outs)


@pytest.mark.slow
@needs_numba
@pytest.mark.parametrize("rates", ["random", "trained"])
def test_shd_size_fast_eval_equals_dense_eval(rates):
    """At the bench's SHD sizes (32 samples) and both spiking settings: the same spikes and
    predictions as the plain dense path, with the forms the bench takes."""
    from snn_delays.bench import measure

    cfg = measure.CONFIGS["shd"].with_(batch=32)
    r = measure.Runner("ours", cfg, None, rates=rates)
    plain = measure.build_ours(cfg, backend="dense").eval()
    plain.load_state_dict(r.model.state_dict())
    with torch.no_grad():
        kinds = []
        fast_eval.fast_eval_forward(r.model, r.x, kinds=kinds, extra_steps=r.model.extra_steps)
        assert kinds == ["event", "bits", "bits"]
        u1, s1 = r.model(r.x, return_spikes=True)
        u2, s2 = plain(r.x, return_spikes=True)
    for a, b in zip(s1, s2):
        assert torch.equal(a, b)
    torch.testing.assert_close(u1, u2, rtol=1e-4, atol=1e-4)
    assert torch.equal(r.model.predict(r.x), plain.predict(r.x))


def test_cost_model_choices_at_shd_sizes():
    """The cost model's choices at the bench's sizes: the input layer (140 -> 256, counts) event-driven
    at 5 % and on byte taps at 20 %; a hidden layer (256 -> 256, spikes) event-driven at 1 %, on bits
    at 10 % and 36 %; the readout (256 -> 20) always on bits; monotone in the density."""
    cheaper = fast_eval.event_cheaper
    assert cheaper(0.05, 140, 256, 140 * 256, "bytes") and not cheaper(0.20, 140, 256, 140 * 256, "bytes")
    assert cheaper(0.01, 256, 256, 256 * 256, "bits")
    assert not cheaper(0.10, 256, 256, 256 * 256, "bits") and not cheaper(0.36, 256, 256, 256 * 256, "bits")
    assert not any(cheaper(d, 256, 20, 256 * 20, "bits") for d in (0.0, 0.01, 0.1))
    flips = [cheaper(d / 100, 256, 256, 256 * 256, "bits") for d in range(0, 40)]
    assert flips == sorted(flips, reverse=True)  # events up to a density, then taps


@needs_numba
def test_cost_model_forms_equal_dense_eval():
    """With the cost model deciding (no fixed limits): a sparse input takes events, then the hidden
    layers bits; the plain path's spikes and predictions."""
    assert fast_eval.EVENT_MAX_DENSITY is None and fast_eval.BIT_EVENT_MAX_DENSITY is None
    torch.manual_seed(5)
    cfg = ModelConfig(input_size=40, n_classes=5, hidden_size=64, tau_steps=2.0, n_layers=2, kernel_size=9)
    fast, plain = _models(cfg, calib_density=0.05)
    x = (torch.rand(40, 48, 40) < 0.05).float() * torch.randint(1, 4, (40, 48, 40)).float()
    with torch.no_grad():
        kinds = []
        fast_eval.fast_eval_forward(fast, x, kinds=kinds, extra_steps=fast.extra_steps)
        u1, s1 = fast(x, return_spikes=True)
        u2, s2 = plain(x, return_spikes=True)
    assert kinds[0] == "event" and kinds[2] == "bits", kinds
    for a, b in zip(s1, s2):
        assert torch.equal(a, b)
    torch.testing.assert_close(u1, u2, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.predict(x), plain.predict(x))
