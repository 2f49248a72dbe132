"""Fast paths against the plain ones: the tap (sparse) synapse against the dense kernel and
convolution, the compiled loops against their PyTorch twins, the fused LIF against the op-by-op
loop, and the automatic backend choice."""

import numpy as np
import pytest
import torch

from snn_delays import DelaySynapse, ModelConfig, build_model, calibrate_batchnorm, gaussian_kernel, rounded_kernel

from snn_delays.backends import compiled, fast_eval, use_compiled
from snn_delays.backends.kernels import groups as group_loops
from snn_delays.backends.kernels import neuron as neuron_loops
from snn_delays.backends.kernels import pack as pack_loops
from snn_delays.backends.lif import lif_backward_loop, lif_forward_loop
from snn_delays.backends.taps import (TapPlan, tap_conv, tap_conv_reference, tap_structure, taps_per_element,
                                      truncation_error)
from snn_delays.neuron import lif_sequence
from snn_delays.synapse import random_fanin_mask, round_delays

needs_numba = pytest.mark.skipif(not compiled.compiled_enabled(), reason="numba is not installed or switched off")


def _synapse(in_f=9, out_f=7, td=11, m=1, fanin=0, backend="sparse", seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = random_fanin_mask(out_f, in_f, fanin, torch.Generator().manual_seed(seed + 1)) if fanin else None
    return DelaySynapse(in_f, out_f, kernel_size=td, kernel_count=m, mask=mask, generator=g, backend=backend).double()


def _tap_delay(syn, sigma):
    """The delays the tap form takes: real in training (sigma > 0), rounded in evaluation."""
    return syn.delay if sigma > 0 else round_delays(syn.delay, syn.kernel_size)


def _dense_from_taps(syn, sigma):
    plan = TapPlan(syn.mask, syn.kernel_count, taps_per_element(sigma, syn.kernel_size))
    value, steps = tap_structure(syn.masked_weight(), _tap_delay(syn, sigma), plan, sigma, syn.kernel_size)
    out_f, in_f, m, p = plan.shape
    k = torch.zeros(out_f, in_f, syn.kernel_size, dtype=value.dtype)
    dst = torch.from_numpy(np.repeat(plan.rows.numpy(), m * p))
    src = torch.from_numpy(plan.src)
    k.index_put_((dst, src, syn.kernel_size - 1 - steps.clamp(0, syn.kernel_size - 1)), value, accumulate=True)
    return k


@pytest.mark.parametrize("sigma", [0.25, 0.5, 2.0])
@pytest.mark.parametrize("m", [1, 2])
def test_tap_kernel_is_dense_kernel_within_truncation_error(sigma, m):
    syn = _synapse(td=25, m=m)
    with torch.no_grad():
        syn.delay[0, 0, 0] = 0.0  # the range ends
        syn.delay[0, 1, 0] = 24.0
        syn.delay[1, 0, 0] = 12.5
    dense = gaussian_kernel(syn.masked_weight(), syn.delay, sigma, 25).detach()
    taps = _dense_from_taps(syn, sigma).detach()
    w_abs = syn.weight.detach().abs().sum(-1, keepdim=True)  # (out, in, 1)
    err = (dense - taps).abs().sum(-1, keepdim=True)
    assert (err <= truncation_error(sigma) * w_abs + 1e-12).all()
    if m == 1:  # the kept taps carry exactly the dense values (normalised over the full range)
        kept = taps != 0
        torch.testing.assert_close(taps[kept], dense[kept], rtol=1e-12, atol=1e-14)
    assert truncation_error(0.5) < 3e-4


@pytest.mark.parametrize("m,fanin", [(1, 0), (2, 0), (1, 3)])
def test_rounded_eval_sparse_equals_dense(m, fanin):
    syn = _synapse(m=m, fanin=fanin).eval()
    x = torch.poisson(torch.full((40, 3, 9), 0.5, dtype=torch.float64))  # counts
    want = torch.nn.functional.conv1d(torch.nn.functional.pad(x.permute(1, 2, 0), (10, 0)),
                                      rounded_kernel(syn.masked_weight(), syn.delay, 11)).permute(2, 0, 1)
    torch.testing.assert_close(syn(x), want, rtol=1e-12, atol=1e-12)


@needs_numba
@pytest.mark.parametrize("m,fanin,sigma", [(1, 0, 0.5), (2, 0, 0.5), (1, 3, 1.0), (1, 0, 0.0)])
def test_compiled_tap_product_equals_pytorch_twin(m, fanin, sigma):
    syn = _synapse(m=m, fanin=fanin)
    plan = TapPlan(syn.mask, m, taps_per_element(sigma, 11))
    x = (torch.rand(30, 4, 9, dtype=torch.float64) < 0.3).double()
    _assert_tap_product_equals_twin(syn, plan, sigma, x)


def _assert_tap_product_equals_twin(syn, plan, sigma, x):
    """The compiled tap product and its PyTorch twin: same output and gradients (input, weights, delays)."""
    g = torch.randn(x.shape[0], x.shape[1], syn.out_features, dtype=torch.float64)
    outs = []
    for fn in (tap_conv, tap_conv_reference):
        syn.zero_grad()
        xk = x.clone().requires_grad_()
        value, steps = tap_structure(syn.masked_weight(), _tap_delay(syn, sigma), plan, sigma, syn.kernel_size)
        y = fn(xk, value, steps, plan, syn.kernel_size)
        (y * g).sum().backward()
        outs.append((y.detach(), xk.grad, syn.weight.grad.clone(), syn.delay.grad.clone() if sigma > 0 else None))
    for a, b in zip(*outs):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@needs_numba
def test_training_gradients_close_to_dense():
    torch.manual_seed(3)
    dense, sparse = _synapse(td=25, backend="dense"), _synapse(td=25, backend="sparse")
    sparse.load_state_dict(dense.state_dict())
    for s in (dense, sparse):
        s.sigma = 0.5
    x = (torch.rand(60, 4, 9, dtype=torch.float64) < 0.3).double()
    g = torch.randn(60, 4, 7, dtype=torch.float64)
    ys = []
    for s in (dense, sparse):
        y = s(x)
        (y * g).sum().backward()
        ys.append(y.detach())
    tol = 2 * truncation_error(0.5)
    scale = lambda t: t.abs().max()  # noqa: E731
    assert (ys[0] - ys[1]).abs().max() <= tol * scale(ys[0])
    assert (dense.weight.grad - sparse.weight.grad).abs().max() <= 5 * tol * scale(dense.weight.grad)
    assert (dense.delay.grad - sparse.delay.grad).abs().max() <= 5 * tol * scale(dense.delay.grad)


def _model(backend, **kw):
    cfg = ModelConfig(input_size=12, n_classes=5, hidden_size=24, n_layers=2, kernel_size=9, backend=backend, **kw)
    return build_model(cfg, seed=4)


def test_model_predictions_identical_with_rounded_delays():
    x = (torch.rand(30, 64, 12) < 0.2).float()
    # an untrained network's default BatchNorm statistics leave it almost silent in eval mode
    dense = calibrate_batchnorm(_model("dense"), x)
    sparse = _model("sparse").eval()
    sparse.load_state_dict(dense.state_dict())
    with torch.no_grad():
        (u1, s1), (u2, s2) = dense(x, return_spikes=True), sparse(x, return_spikes=True)
    assert all(float(s.mean()) > 0.05 for s in s1)  # there is activity in every hidden layer
    for a, b in zip(s1, s2):
        assert torch.equal(a, b)
    torch.testing.assert_close(u1, u2, rtol=1e-5, atol=1e-5)
    assert torch.equal(dense.predict(x), sparse.predict(x))
    assert len(set(dense.predict(x).tolist())) > 1  # not one class for every sample


def test_fused_lif_equals_plain_loop():
    torch.manual_seed(5)
    cur = (torch.randn(50, 3, 8, dtype=torch.float64) * 1.2).requires_grad_()
    cur2 = cur.detach().clone().requires_grad_()
    g = torch.randn(50, 3, 8, dtype=torch.float64)
    s1 = lif_sequence(cur, 2.0, fused=True)
    s2 = lif_sequence(cur2, 2.0, fused=False)
    assert torch.equal(s1, s2)
    (s1 * g).sum().backward()
    (s2 * g).sum().backward()
    torch.testing.assert_close(cur.grad, cur2.grad, rtol=1e-12, atol=1e-12)


@needs_numba
def test_compiled_lif_loops_equal_pytorch_loops():
    cur = torch.randn(40, 5, 6, dtype=torch.float64) * 1.5
    decay = 0.5
    s_ref, m_ref = lif_forward_loop(cur, decay, 1.0)
    s = np.empty((40, 30)), np.empty((40, 30))
    neuron_loops.lif_forward(cur.reshape(40, -1).numpy(), decay, 1.0, s[0], s[1])
    np.testing.assert_array_equal(s[0], s_ref.reshape(40, -1).numpy())
    np.testing.assert_allclose(s[1], m_ref.reshape(40, -1).numpy(), rtol=1e-14)
    g = torch.randn(40, 5, 6, dtype=torch.float64)
    want = lif_backward_loop(g, m_ref, decay, 1.0, 5.0)
    got = np.empty((40, 30))
    neuron_loops.lif_backward(g.reshape(40, -1).numpy(), m_ref.reshape(40, -1).numpy(), decay, 1.0, 5.0, got)
    np.testing.assert_allclose(got, want.reshape(40, -1).numpy(), rtol=1e-12, atol=1e-14)


def test_auto_backend_choice():
    syn = _synapse(td=25, backend="auto").float()
    x = torch.ones(5, 2, 9)  # a dense input (a sparse one that needs no gradient runs event-driven: test_events.py)
    syn.train()
    syn.sigma = 0.5
    assert syn.resolved_backend(x) == ("sparse" if compiled.compiled_enabled() else "dense")
    syn.sigma = 12.0
    assert syn.resolved_backend(x) == "dense"  # wide Gaussian, short input: the direct convolution
    assert syn.resolved_backend(torch.ones(200, 2, 9)) == "fft"  # long input: the FFT
    syn.eval()
    assert syn.resolved_backend(x) == ("sparse" if compiled.compiled_enabled() else "dense")
    with use_compiled(False):
        assert syn.resolved_backend(x) == "dense"
        assert syn.resolved_backend(torch.ones(200, 2, 9)) == "fft"
    with pytest.raises(ValueError, match="backend"):
        DelaySynapse(3, 2, 5, backend="fast")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_model_matches_cpu():
    cpu = _model("auto")
    gpu = _model("auto").cuda()
    x = (torch.rand(30, 8, 12) < 0.2).float()
    for mode in ("train", "eval"):
        cpu.train(mode == "train"), gpu.train(mode == "train")
        if mode == "train":
            cpu.hidden[0].dropout.p = gpu.hidden[0].dropout.p = 0.0
            cpu.hidden[1].dropout.p = gpu.hidden[1].dropout.p = 0.0
        torch.testing.assert_close(gpu(x.cuda()).cpu(), cpu(x), rtol=1e-3, atol=1e-3)
    assert gpu.readout.resolved_backend(x.cuda()) == "dense"


def test_fused_leaky_integrator_equals_plain_loop():
    from snn_delays.neuron import leaky_integrate

    cur = torch.randn(30, 2, 5, dtype=torch.float64, requires_grad=True)
    cur2 = cur.detach().clone().requires_grad_()
    g = torch.randn(30, 2, 5, dtype=torch.float64)
    u1, u2 = leaky_integrate(cur, 1.7), leaky_integrate(cur2, 1.7, fused=False)
    torch.testing.assert_close(u1, u2, rtol=1e-12, atol=1e-12)
    (u1 * g).sum().backward()
    (u2 * g).sum().backward()
    torch.testing.assert_close(cur.grad, cur2.grad, rtol=1e-12, atol=1e-12)


@needs_numba
@pytest.mark.parametrize("band", [32, 3])  # one sweep, or the input gradient in bands of 3 delays
@pytest.mark.parametrize("values", ["binary", "scaled", "counts", "real"])  # bytes + scale, or floats
@pytest.mark.parametrize("sigma,t_len", [(0.5, 13), (1.0, 16), (0.25, 7)])
def test_grouped_taps_at_the_range_ends_equal_pytorch_twin(sigma, t_len, values, band, monkeypatch):
    # delays at 0 and Td - 1 put taps of a group outside [0, Td - 1] (value 0) and rows outside [0, T)
    monkeypatch.setattr(group_loops, "DELAY_BAND", band)
    syn = _synapse(m=1)
    with torch.no_grad():
        syn.delay[:, :3, 0] = 0.0
        syn.delay[:, 3:6, 0] = 10.0
        syn.delay[:, 6, 0] = 9.6
    plan = TapPlan(syn.mask, 1, taps_per_element(sigma, 11))
    assert plan.grouped
    x = (torch.rand(t_len, 3, 9, dtype=torch.float64) < 0.5).double()
    x = {"binary": x, "scaled": x / 0.6, "counts": x * torch.randint(1, 4, x.shape),
         "real": x * torch.rand(x.shape, dtype=torch.float64)}[values]
    _assert_tap_product_equals_twin(syn, plan, sigma, x)


@needs_numba
@pytest.mark.parametrize("input_scale", [1.0, 0.37])  # counts (exact as bytes) or real values
@pytest.mark.parametrize("density_limit", [0.0, 1.0, 0.25])  # taps only, events only, mixed
@pytest.mark.parametrize("kw", [dict(kernel_size=9), dict(kernel_size=9, kernel_count=2),
                                dict(kernel_size=9, fanin=5), dict(kernel_size=1), dict(kernel_size=9, n_layers=1)])
def test_fast_eval_equals_dense_eval(kw, density_limit, input_scale, monkeypatch):
    monkeypatch.setattr(fast_eval, "EVENT_MAX_DENSITY", density_limit)
    monkeypatch.setattr(fast_eval, "BIT_EVENT_MAX_DENSITY", density_limit)
    torch.manual_seed(7)
    kw = {"n_layers": 2, **kw}
    cfg = ModelConfig(input_size=12, n_classes=5, hidden_size=24, tau_steps=2.0, **kw)
    fast = calibrate_batchnorm(build_model(cfg, seed=4), (torch.rand(30, 64, 12) < 0.3).float() * input_scale)
    plain = build_model(ModelConfig(**{**cfg.__dict__, "backend": "dense"}), seed=4).eval()
    plain.load_state_dict(fast.state_dict())
    x = (torch.rand(30, 64, 12) < 0.3).float() * torch.randint(1, 4, (30, 64, 12)).float() * input_scale  # counts 1-3
    with torch.no_grad():
        assert fast_eval.applicable(fast, x) and not fast_eval.applicable(plain, x)
        u1, s1 = fast(x, return_spikes=True)
        u2, s2 = plain(x, return_spikes=True)
    assert all(float(s.mean()) > 0.05 for s in s1)  # there is activity in every layer
    for a, b in zip(s1, s2):
        assert torch.equal(a, b)
    torch.testing.assert_close(u1, u2, rtol=1e-5, atol=1e-5)
    assert torch.equal(fast.predict(x), plain.predict(x))
    fast.readout.backend = "dense"  # with grad or a dense-forced synapse the plain path runs
    assert not fast_eval.applicable(fast, x)


@needs_numba
@pytest.mark.parametrize("density_limit", [0.0, 1.0])  # tap tables, event tables
def test_fast_eval_tables_follow_every_change_of_the_model(density_limit, monkeypatch):
    """The cached weight tables are rebuilt whenever a parameter or buffer changes, however it
    changed (in place through .data, load_state_dict, an optimiser step, BatchNorm statistics)."""
    monkeypatch.setattr(fast_eval, "EVENT_MAX_DENSITY", density_limit)
    monkeypatch.setattr(fast_eval, "BIT_EVENT_MAX_DENSITY", density_limit)
    torch.manual_seed(3)
    cfg = ModelConfig(input_size=12, n_classes=5, hidden_size=24, tau_steps=2.0, kernel_size=9)
    x = (torch.rand(30, 64, 12) < 0.3).float()
    fast = calibrate_batchnorm(build_model(cfg, seed=1), x)
    plain = build_model(ModelConfig(**{**cfg.__dict__, "backend": "dense"}), seed=1).eval()
    other = calibrate_batchnorm(build_model(cfg, seed=2), x)

    def same():
        plain.load_state_dict(fast.state_dict())
        with torch.no_grad():
            u1, u2 = fast(x), plain(x)
        torch.testing.assert_close(u1, u2, rtol=1e-5, atol=1e-5)
        return u1

    first = same()
    fast.hidden[0].synapse.weight.data.mul_(-0.5)  # in place, behind autograd's version counter
    assert not torch.allclose(same(), first)
    fast.hidden[1].synapse.delay.data.add_(3.0).clamp_(0, 8)
    same()
    fast.load_state_dict(other.state_dict())
    same()
    fast.hidden[0].norm.running_mean.add_(0.3)
    same()
    with torch.no_grad():
        fast.readout.weight.copy_(torch.randn_like(fast.readout.weight))
    same()


@pytest.mark.parametrize("t_len,td,b_len,binary", [(37, 9, 300, False), (5, 11, 130, True), (1, 1, 3, False)])
def test_frequency_domain_convolution_against_direct(t_len, td, b_len, binary):
    """The frequency-domain product (forward and both gradients) against the direct convolution,
    float64, with batches over one chunk, sequences shorter than the kernel and byte-exact inputs."""
    from snn_delays.backends import fft as fft_backend
    from snn_delays.backends.dense import causal_conv_cm

    g = torch.Generator().manual_seed(t_len + td)
    x = torch.randn(t_len, 6, b_len, generator=g, dtype=torch.float64)
    if binary:
        x = (x > 0.5).double() * 0.7  # saved as bytes for the backward
    kernel = torch.randn(4, 6, td, generator=g, dtype=torch.float64)
    gy = torch.randn(t_len, 4, b_len, generator=g, dtype=torch.float64)
    outs = []
    for conv in (causal_conv_cm, fft_backend.fft_causal_conv_cm):
        xi, ki = x.clone().requires_grad_(), kernel.clone().requires_grad_()
        y = conv(xi, ki)
        y.backward(gy)
        outs.append((y.detach(), xi.grad, ki.grad))
    for a, b in zip(*outs):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


@needs_numba
@pytest.mark.parametrize("shape", [(13, 24, 40), (7, 16, 256), (13, 20, 40), (5, 16, 12), (3, 1, 1)])
def test_spike_transpose_equals_numpy(shape):
    """(T, B, C) -> (C, T, B) bytes: 64-bit words where B and C are multiples of 8, else bytes."""
    x = np.random.default_rng(0).integers(0, 256, shape).astype(np.uint8)
    out = np.full((shape[2], shape[0], shape[1]), 7, dtype=np.uint8)
    pack_loops.tbc_to_ctb_u8(x, out)
    np.testing.assert_array_equal(out, x.transpose(2, 0, 1))


@pytest.mark.parametrize("block_bytes", [None, 1000])  # the whole spectrum at once, or blocks of 3 frequencies
@pytest.mark.parametrize("binary", [True, False])  # x kept as bytes for the backward, or as floats
@pytest.mark.parametrize("sigma,m,fanin,td", [(0.5, 1, 0, 25), (12.0, 2, 0, 25), (2.0, 1, 3, 11), (0.0, 1, 0, 7)])
def test_fft_synapse_equals_dense(sigma, m, fanin, td, binary, block_bytes, monkeypatch):
    from snn_delays.backends import fft as fft_module

    if block_bytes is not None:  # 2 x 9 channels x 3 samples x 8 bytes = 432 bytes per frequency
        monkeypatch.setattr(fft_module, "BLOCK_BYTES", block_bytes)
        assert len(fft_module._frequency_blocks(31, 9, 3, 8)) > 5
    dense, fft = _synapse(td=td, m=m, fanin=fanin, backend="dense"), _synapse(td=td, m=m, fanin=fanin, backend="fft")
    fft.load_state_dict(dense.state_dict())
    x = (torch.rand(37, 3, 9, dtype=torch.float64) < 0.3).double() / 0.6
    if not binary:
        x = x * torch.rand(x.shape, dtype=torch.float64)
    x1 = x.clone().requires_grad_()
    x2 = x.clone().requires_grad_()
    g = torch.randn(37, 3, 7, dtype=torch.float64)
    outs = []
    for syn, x in ((dense, x1), (fft, x2)):
        syn.train(sigma > 0)
        if sigma > 0:
            syn.sigma = sigma
        y = syn(x)
        (y * g).sum().backward()
        outs.append((y.detach(), x.grad, syn.weight.grad, syn.delay.grad if sigma > 0 else None))
    for a, b in zip(*outs):
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-11)


@needs_numba
@pytest.mark.parametrize("backend,sigma", [("sparse", 0.5), ("sparse", 1.0), ("fft", 4.0), ("fft", 0.5), ("event", 0.5),
                                           ("event", 4.0)])
def test_model_training_step_with_counts_equals_pytorch_twins(backend, sigma):
    """A training step on count-valued input (binned spikes, 0-3 per bin; the compiled tap loops read
    them as bytes): the loss and every parameter's gradient equal those of the same model run on the
    PyTorch twins (use_compiled(False): the same taps, summed by a dense convolution)."""
    torch.manual_seed(12)
    x = (torch.rand(30, 16, 12) < 0.2).float() * torch.randint(1, 4, (30, 16, 12)).float()
    y = torch.randint(0, 5, (16,))
    results = []
    for compiled_loops in (True, False):
        model = _model(backend)
        for blk in model.hidden:
            blk.dropout.p = 0.0
        model.train()
        model.sigma = sigma
        with use_compiled(compiled_loops):
            loss = torch.nn.functional.cross_entropy(model.scores(model(x)), y)
            loss.backward()
        results.append((loss.detach(), [(n, p.grad.clone()) for n, p in model.named_parameters() if p.grad is not None]))
    (l1, g1), (l2, g2) = results
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
    assert [n for n, _ in g1] == [n for n, _ in g2]
    for (n, a), (_, b) in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * float(b.abs().max()), msg=n)


def test_fft_model_training_step_matches_dense():
    torch.manual_seed(11)
    dense, fft = _model("dense"), _model("fft")
    fft.load_state_dict(dense.state_dict())
    x = (torch.rand(30, 16, 12) < 0.2).float()
    y = torch.randint(0, 5, (16,))
    grads = []
    for model in (dense, fft):
        for blk in model.hidden:
            blk.dropout.p = 0.0
        model.train()
        loss = torch.nn.functional.cross_entropy(model.scores(model(x)), y)
        loss.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)


@needs_numba
@pytest.mark.parametrize("sigma,td", [(0.5, 25), (0.25, 11), (1.0, 11), (3.0, 25), (12.0, 25)])
def test_compiled_tap_values_equal_pytorch(sigma, td):
    from snn_delays.backends.taps import _TapValues, tap_values

    g = torch.Generator().manual_seed(2)
    w1 = torch.randn(40, 2, dtype=torch.float64, generator=g).requires_grad_()
    d1 = (torch.rand(40, 2, dtype=torch.float64, generator=g) * (td - 1)).requires_grad_()
    with torch.no_grad():
        d1[0, 0], d1[1, 0], d1[2, 0] = 0.0, td - 1.0, 3.0  # range ends and an integer
    w2, d2 = w1.detach().clone().requires_grad_(), d1.detach().clone().requires_grad_()
    v1, s1 = tap_values(w1, d1, sigma, td)
    v2, s2 = _TapValues.apply(w2, d2, sigma, td, 4.0, 1e-7)
    assert torch.equal(s1, s2)
    torch.testing.assert_close(v1, v2, rtol=1e-12, atol=1e-14)
    gv = torch.randn(v1.shape, dtype=torch.float64, generator=g)
    (v1 * gv).sum().backward()
    (v2 * gv).sum().backward()
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d1.grad, d2.grad, rtol=1e-10, atol=1e-12)


@needs_numba
@pytest.mark.parametrize("sigma,td,m", [(12.0, 25, 1), (0.5, 25, 2), (3.0, 11, 1)])
def test_compiled_gaussian_kernel_equals_pytorch(sigma, td, m):
    from snn_delays.backends.gaussian import compiled_gaussian_kernel

    g = torch.Generator().manual_seed(5)
    w1 = torch.randn(6, 5, m, dtype=torch.float64, generator=g).requires_grad_()
    d1 = (torch.rand(6, 5, m, dtype=torch.float64, generator=g) * (td - 1)).requires_grad_()
    w2, d2 = w1.detach().clone().requires_grad_(), d1.detach().clone().requires_grad_()
    k1 = gaussian_kernel(w1, d1, sigma, td)
    k2 = compiled_gaussian_kernel(w2, d2, sigma, td, 1e-7)
    torch.testing.assert_close(k1, k2, rtol=1e-12, atol=1e-14)
    gk = torch.randn(k1.shape, dtype=torch.float64, generator=g)
    (k1 * gk).sum().backward()
    (k2 * gk).sum().backward()
    torch.testing.assert_close(w1.grad, w2.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(d1.grad, d2.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("compiled_loops", [True, False])
def test_batchnorm_lif_node_equals_plain_block(compiled_loops):
    if compiled_loops and not compiled.compiled_enabled():
        pytest.skip("numba is not installed")
    with use_compiled(compiled_loops):
        _check_batchnorm_lif_node()


def _check_batchnorm_lif_node():
    from snn_delays.backends.norm_lif import norm_lif
    from snn_delays.neuron import LIF

    torch.manual_seed(9)
    norms = [torch.nn.BatchNorm1d(6).double() for _ in range(2)]
    with torch.no_grad():
        norms[0].weight.uniform_(0.5, 1.5)
        norms[0].bias.uniform_(-0.3, 0.3)
    norms[1].load_state_dict(norms[0].state_dict())
    lif = LIF(2.0, 1.0, 5.0)
    y = torch.randn(40, 6, 5, dtype=torch.float64) * 1.3 + 0.2
    g = torch.randn(40, 6, 5, dtype=torch.float64)
    outs = []
    for k, norm in enumerate(norms):
        norm.train()
        yk = y.clone().requires_grad_()
        s = norm_lif(yk, norm, lif) if k == 0 else lif(norm(yk))
        (s * g).sum().backward()
        outs.append((s.detach(), yk.grad, norm.weight.grad, norm.bias.grad, norm.running_mean, norm.running_var,
                     norm.num_batches_tracked))
    assert torch.equal(outs[0][0], outs[1][0])
    for a, b in zip(outs[0][1:], outs[1][1:]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
