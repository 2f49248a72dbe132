"""The paths a GPU runs (dense or FFT convolution, the PyTorch twins of the compiled loops), run
here with every tensor on PyTorch's ``meta`` device: a tensor created on the CPU by mistake fails
(as it would on CUDA); and with the compiled loops switched off on CPU, the twins give the compiled
numbers."""

import pytest
import torch

from snn_delays import DelaySynapse, ModelConfig, build_model, calibrate_batchnorm
from snn_delays.backends import compiled, use_compiled

META = torch.device("meta")


def _model(**kw):
    cfg = ModelConfig(input_size=12, n_classes=5, hidden_size=16, n_layers=2, kernel_size=7, dropout=0.3, **kw)
    return build_model(cfg, seed=3)


def _training_step(model, x, y):
    """Forward, backward, optimiser step, clamp (as the trainer does); returns the loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-5)
    model.train()
    loss = torch.nn.functional.cross_entropy(model.scores(model(x)), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.clamp_()
    return loss


@pytest.mark.parametrize("kw", [dict(backend="auto"), dict(backend="dense"), dict(backend="fft"),
                                dict(backend="fft", kernel_count=2, fanin=5), dict(variant="dense-conv"),
                                dict(variant="no-delays-wider")])
def test_training_step_and_evaluation_on_meta_device(kw):
    model = _model(**kw).to(META)
    x = torch.empty(20, 8, 12, device=META)
    y = torch.empty(8, dtype=torch.long, device=META)
    loss = _training_step(model, x, y)
    assert loss.device == META and loss.shape == ()
    for name, p in model.named_parameters():
        assert p.device == META, name
        assert p.grad is None or p.grad.device == META, name
    assert all(b.device == META for b in model.buffers())
    model.eval()
    with torch.no_grad():
        u, spikes = model(x, return_spikes=True)
        pred = model.predict(x)
    assert u.device == META and u.shape == (20 + model.extra_steps, 8, 5)
    hidden = model.config.hidden_size
    assert all(s.device == META and s.shape == (20 + model.extra_steps, 8, hidden) for s in spikes)
    assert pred.device == META and pred.shape == (8,)
    delay_synapses = [syn for syn in model.synapses() if isinstance(syn, DelaySynapse)]
    assert all(syn.resolved_backend(x) in ("dense", "fft") for syn in delay_synapses)


def test_the_switch_turns_the_compiled_loops_off():
    before = compiled.compiled_enabled()
    with use_compiled(False):
        assert not compiled.compiled_enabled() and not compiled.fast_available(torch.zeros(2))
    assert compiled.compiled_enabled() == before


@pytest.mark.skipif(not compiled.compiled_enabled(), reason="numba is not installed")
@pytest.mark.parametrize("backend", ["sparse", "fft", "dense"])
def test_pytorch_twins_on_cpu_give_the_compiled_numbers(backend):
    x = (torch.rand(20, 16, 12) < 0.3).float()
    y = torch.randint(0, 5, (16,))
    state = calibrate_batchnorm(_model(backend=backend, tau_steps=2.0), x).state_dict()
    results = []
    for on in (True, False):
        with use_compiled(on):
            model = _model(backend=backend, tau_steps=2.0)
            model.load_state_dict(state)
            model.eval()
            with torch.no_grad():
                u, spikes = model(x, return_spikes=True)  # compiled: one pass per layer; else the plain path
            model.sigma = 0.5
            torch.manual_seed(1)  # the same dropout masks
            loss = _training_step(model, x, y)
            results.append((u, spikes, loss.detach(), [p.detach().clone() for p in model.parameters()]))
    (u1, s1, l1, p1), (u2, s2, l2, p2) = results
    assert all(float(s.mean()) > 0.02 for s in s1)  # every hidden layer spikes
    for a, b in zip(s1, s2):
        assert torch.equal(a, b)
    torch.testing.assert_close(u1, u2, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(l1, l2, rtol=1e-5, atol=1e-6)
    for a, b in zip(p1, p2):  # after one step (Adam: the same sign of the gradient, so the same update)
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
