"""The event-driven ("event") backend of the delay synapse against the dense PyTorch formulation:
the product, the kernel gradient and (from the dense formulation) the input gradient; the weight
and delay gradients through the Gaussian kernel; the automatic choice; a model training step."""

import numpy as np
import pytest
import torch

from snn_delays import DelaySynapse, ModelConfig, build_model
from snn_delays.backends import compiled, use_compiled
from snn_delays.backends.dense import causal_conv_cm
from snn_delays.backends.events import event_causal_conv_cm, nonzero_fraction
from snn_delays.backends.kernels import events as event_loops
from snn_delays.synapse import random_fanin_mask

needs_numba = pytest.mark.skipif(not compiled.compiled_enabled(), reason="numba is not installed or switched off")


def _input(t_len, c, b, density, kind, seed=0, dtype=torch.float64):
    """(T, C, B): 0/1 spikes, counts 1-3, or dropout-scaled spikes (1 / (1 - 0.4))."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(t_len, c, b, generator=g) < density).to(dtype)
    if kind == "counts":
        x = x * torch.randint(1, 4, (t_len, c, b), generator=g).to(dtype)
    elif kind == "dropout":
        x = x / (1 - 0.4)
    return x


@needs_numba
@pytest.mark.parametrize("t_len,td,b_len,out_f", [(30, 9, 5, 6), (40, 11, 37, 33), (7, 12, 18, 16)])
@pytest.mark.parametrize("density,kind", [(0.05, "counts"), (0.3, "dropout"), (1.0, "spikes"), (0.0, "spikes")])
def test_event_conv_equals_direct_convolution(t_len, td, b_len, out_f, density, kind):
    """Forward, kernel gradient and input gradient equal the direct convolution's (float64), for
    batches and outputs over and under one block (16), sequences shorter than the kernel, an empty
    input and a full one (every step of every channel an event)."""
    x = _input(t_len, 13, b_len, density, kind)
    k = torch.randn(out_f, 13, td, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(t_len, out_f, b_len, dtype=torch.float64)
    for input_grad in (False, True):
        xa, xb = x.clone().requires_grad_(input_grad), x.clone().requires_grad_(input_grad)
        y, y0 = event_causal_conv_cm(xa, k), causal_conv_cm(xb, k)
        torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)
        wrt = (k, xa) if input_grad else (k,)
        got = torch.autograd.grad(y, wrt, gy)
        want = torch.autograd.grad(y0, (k, xb) if input_grad else (k,), gy)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-11)


@needs_numba
def test_event_loops_denormal_kernel_values_are_zero():
    """The packed kernel holds 0 where the kernel is below the smallest normal float (the far taps
    of a narrow Gaussian), and the product in float32 matches the float64 convolution."""
    k = np.full((3, 2, 4), 1e-40, dtype=np.float32)
    k[0, 0, 0] = 0.5
    wp = event_loops.pack_kernel(k)
    assert wp.shape == (1, 2, 4, event_loops.OB)
    assert wp[0, 0, 3, 0] == np.float32(0.5) and np.count_nonzero(wp) == 1  # tap Td - 1 - d at delay d
    syn = DelaySynapse(20, 24, kernel_size=25, kernel_count=2, sigma=0.5, generator=torch.Generator().manual_seed(3))
    x = _input(60, 20, 19, 0.05, "counts", dtype=torch.float32)
    kernel = syn.kernel().detach()
    want = causal_conv_cm(x.double(), kernel.double())
    torch.testing.assert_close(event_causal_conv_cm(x, kernel).double(), want, rtol=1e-5, atol=1e-5)


@needs_numba
@pytest.mark.parametrize("sigma", [0.5, 5.0])
@pytest.mark.parametrize("m,fanin", [(1, 0), (2, 5)])
def test_event_synapse_gradients_equal_dense(sigma, m, fanin):
    """A synapse forced to "event" against the same synapse on "dense": output, and the weight and
    delay gradients (the delay's through the Gaussian, DCLS), float64, m kernel elements, sparse
    fan-in, counts input."""
    mask = random_fanin_mask(11, 9, fanin, torch.Generator().manual_seed(1)) if fanin else None
    syns = []
    for backend in ("event", "dense"):
        s = DelaySynapse(9, 11, kernel_size=13, kernel_count=m, sigma=sigma, mask=mask, backend=backend,
                         generator=torch.Generator().manual_seed(0)).double().train()
        syns.append(s)
    x = _input(35, 9, 21, 0.1, "counts").permute(0, 2, 1)  # (T, B, in)
    gy = torch.randn(35, 21, 11, dtype=torch.float64)
    outs, grads = [], []
    for s in syns:
        y = s(x)
        y.backward(gy)
        outs.append(y.detach())
        grads.append((s.weight.grad.clone(), s.delay.grad.clone()))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-12, atol=1e-12)
    for a, b in zip(grads[0], grads[1]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@needs_numba
def test_auto_choice_takes_events_for_sparse_inputs_without_gradient():
    syn = DelaySynapse(40, 30, kernel_size=25, sigma=0.5).train()
    sparse = _input(100, 40, 8, 0.05, "counts", dtype=torch.float32)
    assert nonzero_fraction(sparse) == pytest.approx(float((sparse != 0).float().mean()))
    assert syn.resolved_backend(sparse) == "event"
    assert syn.resolved_backend(sparse.clone().requires_grad_()) != "event"  # an input gradient: not event-driven
    assert syn.resolved_backend(torch.ones(100, 40, 8)) != "event"  # dense input
    syn.sigma = 12.0
    assert syn.resolved_backend(sparse) == "event"  # in place of the FFT
    with use_compiled(False):
        assert syn.resolved_backend(sparse) != "event"
    syn.eval()
    assert syn.resolved_backend(sparse) != "event"  # evaluation: one rounded tap per element, or the compiled eval
    with pytest.raises(ValueError, match="backend"):
        DelaySynapse(3, 2, 5, backend="events")


@needs_numba
@pytest.mark.parametrize("sigma", [0.5, 12.0])
def test_model_training_step_event_input_layer_equals_dense(sigma):
    """A training step of the model with its input layer event-driven and the same model on the
    dense backend: loss and every gradient, counts input; "auto" picks the event form there."""
    x = _input(40, 12, 16, 0.05, "counts", seed=5, dtype=torch.float32).permute(0, 2, 1).contiguous()
    y = torch.randint(0, 5, (16,))
    results = []
    auto = build_model(ModelConfig(input_size=12, n_classes=5, hidden_size=20, n_layers=2, kernel_size=25), seed=0)
    auto.train()
    auto.sigma = sigma
    assert auto.synapses()[0].resolved_backend(x.permute(0, 2, 1)) == "event"
    for backend in ("event", "dense"):
        cfg = ModelConfig(input_size=12, n_classes=5, hidden_size=20, n_layers=2, kernel_size=25, backend="dense")
        model = build_model(cfg, seed=0).double()
        model.synapses()[0].backend = backend
        for blk in model.hidden:
            blk.dropout.p = 0.0
        model.train()
        model.sigma = sigma
        loss = torch.nn.functional.cross_entropy(model.scores(model(x.double())), y)
        loss.backward()
        grads = [(n, p.grad.clone()) for n, p in model.named_parameters() if p.grad is not None]
        results.append((loss.detach(), grads))
    (l1, g1), (l2, g2) = results
    torch.testing.assert_close(l1, l2, rtol=1e-10, atol=1e-12)
    for (n, a), (_, b) in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10 * max(1.0, float(b.abs().max())), msg=n)
