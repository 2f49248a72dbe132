"""Recurrent delay synapses: step-by-step semantics on hand-computed cases, the compiled loop
against the PyTorch step loop (values and gradients), finite differences, the model with
``model.recurrent`` and its config."""

import math

import pytest
import torch

from snn_delays import build_model
from snn_delays.backends import use_compiled
from snn_delays.backends.recurrent_lif import recurrent_lif_reference, recurrent_lif_taps
from snn_delays.config import ConfigError, ModelConfig
from snn_delays.model import count_trainable
from snn_delays.recurrent_synapse import RecurrentDelaySynapse
from _support import tiny


def _synapse(h, kernel_size, weights, delays, sigma=0.5):
    """A recurrent synapse of ``h`` neurons with only the listed connections {(post, pre): w}
    and real delays {(post, pre): d} (steps)."""
    syn = RecurrentDelaySynapse(h, kernel_size, sigma=sigma).double()
    mask = torch.zeros(h, h)
    with torch.no_grad():
        syn.weight.zero_()
        syn.delay.zero_()
        for (i, j), w in weights.items():
            mask[i, j] = 1
            syn.weight[i, j, 0] = w
            syn.delay[i, j, 0] = delays[(i, j)] - 1  # stored minus one step
    syn.mask.copy_(mask)
    return syn.eval()


def _run(syn, current, tau=1.0, threshold=1.0):
    # current (T, H) for one sample -> spikes (T, H)
    with torch.no_grad():
        return syn.run(current.unsqueeze(-1), tau, threshold, 5.0).squeeze(-1)


@pytest.mark.parametrize("compiled", [True, False])
def test_one_synapse_with_delay_three_delivers_three_steps_later(compiled):
    # neuron 0 is driven to spike at step 2 only; its synapse onto neuron 1 (weight 1.5, delay 3)
    # must make neuron 1 spike at step 5 and at no other step
    syn = _synapse(2, 6, {(1, 0): 1.5}, {(1, 0): 3.0})
    current = torch.zeros(10, 2, dtype=torch.float64)
    current[2, 0] = 1.0
    with use_compiled(compiled):
        s = _run(syn, current)
    assert s[:, 0].nonzero().flatten().tolist() == [2]
    assert s[:, 1].nonzero().flatten().tolist() == [5]


@pytest.mark.parametrize("compiled", [True, False])
def test_self_connection_sustains_spikes_every_delay_steps(compiled):
    # a self-connection of weight 1.2 and delay 2: one input spike at step 1 re-excites the neuron
    # at 3, 5, 7, ...; a second neuron's self-connection below threshold (0.6) fires once only
    syn = _synapse(2, 4, {(0, 0): 1.2, (1, 1): 0.6}, {(0, 0): 2.0, (1, 1): 2.0})
    current = torch.zeros(10, 2, dtype=torch.float64)
    current[1, :] = 1.0
    with use_compiled(compiled):
        s = _run(syn, current)
    assert s[:, 0].nonzero().flatten().tolist() == [1, 3, 5, 7, 9]
    assert s[:, 1].nonzero().flatten().tolist() == [1]


@pytest.mark.parametrize("compiled", [True, False])
def test_delays_round_half_to_even_of_the_stored_value(compiled):
    # stored d - 1 = 1.5 and 2.5 both round (half to even) to 2: delay 3 steps; 2.49 -> 2 steps
    syn = _synapse(4, 6, {(1, 0): 1.5, (2, 0): 1.5, (3, 0): 1.5}, {(1, 0): 2.5, (2, 0): 3.5, (3, 0): 3.49})
    assert syn.delay_steps()[1:, 0, 0].tolist() == [3.0, 3.0, 3.0]
    current = torch.zeros(8, 4, dtype=torch.float64)
    current[0, 0] = 1.0
    with use_compiled(compiled):
        s = _run(syn, current)
    assert [s[:, i].nonzero().flatten().tolist() for i in (1, 2, 3)] == [[3], [3], [3]]
    with torch.no_grad():
        syn.delay[3, 0, 0] = 1.49  # d = 2.49 -> 1 + round(1.49) = 2
    with use_compiled(compiled):
        assert _run(syn, current)[:, 3].nonzero().flatten().tolist() == [2]


def test_leak_and_recurrent_current_add_to_the_membrane():
    # tau = 2 steps (decay 1/2): the membrane keeps half of itself; a recurrent input of 0.3 at
    # delay 1 adds on top: neuron 1 gets 0.6 at step 0, then 0.3 + 0.3 from neuron 0 at step 1
    syn = _synapse(2, 3, {(1, 0): 0.3}, {(1, 0): 1.0})
    current = torch.zeros(3, 2, dtype=torch.float64)
    current[0] = torch.tensor([1.0, 0.6])
    current[1, 1] = 0.45  # 0.3 (leak) + 0.45 + 0.3 (recurrent) = 1.05 >= 1: a spike at step 1
    s = _run(syn, current, tau=2.0)
    assert s[:, 1].tolist() == [0.0, 1.0, 0.0]
    current[1, 1] = 0.35  # 0.3 + 0.35 + 0.3 = 0.95 < 1: none
    assert _run(syn, current, tau=2.0)[:, 1].tolist() == [0.0, 0.0, 0.0]


def _dense_from_taps(value, offset, plan, h, kernel_size):
    """The (H, H, Dr) kernel by delay n = 1..Dr (index n - 1) holding exactly the listed taps."""
    dst = torch.from_numpy(plan.rows.numpy().repeat(plan.shape[2] * plan.shape[3]))
    src = torch.from_numpy(plan.src)
    valid = (offset >= 0) & (offset <= kernel_size - 1)
    flat = (dst * h + src) * kernel_size + offset.clamp(0, kernel_size - 1)
    k = value.new_zeros(h * h * kernel_size).index_add(0, flat, value * valid)
    return k.view(h, h, kernel_size)


@pytest.mark.parametrize("sigma,fanin", [(0.5, 0), (1.7, 3), (0.0, 0)])
def test_compiled_loop_equals_step_loop_values_and_gradients(sigma, fanin):
    torch.manual_seed(1)
    h, dr, t_len, b = 7, 6, 40, 11
    mask = None
    if fanin:
        mask = (torch.rand(h, h).argsort(1) < fanin).float()
    syn = RecurrentDelaySynapse(h, dr, sigma=max(sigma, 0.5), mask=mask, gain=4.0).double()
    syn.train(sigma > 0)
    current = (torch.randn(t_len, h, b, dtype=torch.float64) * 0.7 + 0.4).requires_grad_()
    value, offset, plan = syn.taps()
    value = value.detach().requires_grad_()
    grad_out = torch.randn(t_len, h, b, dtype=torch.float64)

    s1 = recurrent_lif_taps(current, value, offset, plan, dr, 0.9, 1.0, 5.0)
    g1 = torch.autograd.grad((s1 * grad_out).sum(), (current, value))
    kernel = _dense_from_taps(value, offset, plan, h, dr)
    s2 = recurrent_lif_reference(current, kernel, 0.9, 1.0, 5.0)
    g2 = torch.autograd.grad((s2 * grad_out).sum(), (current, value))
    assert torch.equal(s1, s2)
    assert 0.02 < float(s1.detach().mean()) < 0.9  # both paths exercised: spikes and silence
    torch.testing.assert_close(g1[0], g2[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g1[1], g2[1], rtol=1e-10, atol=1e-12)


def test_recurrent_current_gradients_match_finite_differences():
    # the recurrent current of a fixed spike train is smooth in the weights and real delays
    torch.manual_seed(2)
    syn = RecurrentDelaySynapse(5, 6, sigma=1.3).double().train()
    spikes = (torch.rand(20, 5, 3) < 0.3).double()
    probe = torch.randn(20, 5, 3, dtype=torch.float64)

    def loss(w, d):
        syn.weight.data, syn.delay.data = w, d
        return (syn.current_cm(spikes) * probe).sum()

    w0, d0 = syn.weight.detach().clone(), (syn.delay.detach().clone() * 0.8 + 0.5)
    w, d = w0.clone().requires_grad_(), d0.clone().requires_grad_()
    syn.weight, syn.delay = torch.nn.Parameter(w), torch.nn.Parameter(d)
    gw, gd = torch.autograd.grad((syn.current_cm(spikes) * probe).sum(), (syn.weight, syn.delay))
    eps = 1e-6
    for idx in [(0, 0, 0), (2, 4, 0), (4, 1, 0)]:
        for grad, which in ((gw, "w"), (gd, "d")):
            plus, minus = w0.clone(), w0.clone()
            dp, dm = d0.clone(), d0.clone()
            if which == "w":
                plus[idx] += eps
                minus[idx] -= eps
            else:
                dp[idx] += eps
                dm[idx] -= eps
            with torch.no_grad():
                fd = (loss(plus, dp) - loss(minus, dm)) / (2 * eps)
            assert math.isclose(float(grad[idx]), float(fd), rel_tol=1e-5, abs_tol=1e-8), (which, idx)


def test_current_of_a_spike_train_uses_only_earlier_steps():
    syn = _synapse(2, 5, {(1, 0): 2.0}, {(1, 0): 4.0})
    spikes = torch.zeros(8, 2, 1, dtype=torch.float64)
    spikes[1, 0] = 1
    with torch.no_grad():
        r = syn.current_cm(spikes)[:, 1, 0]
    assert r.nonzero().flatten().tolist() == [5] and float(r[5]) == 2.0


def _cfg(**kw):
    base = dict(input_size=10, n_classes=3, hidden_size=12, n_layers=2, kernel_size=5, recurrent=True, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


@pytest.mark.parametrize("kw", [{}, {"recurrent_delays": "fixed"}, {"recurrent_delays": "one-step"},
                                {"recurrent_fanin": 4, "recurrent_kernel_size": 8}, {"variant": "fixed-weights"},
                                {"learn_sigma": True}])
def test_parameter_count_matches_the_model(kw):
    cfg = _cfg(**kw)
    assert count_trainable(cfg) == build_model(cfg).trainable_count()


def test_variants_of_the_recurrent_synapse():
    one = build_model(_cfg(recurrent_delays="one-step"))
    syn = one.hidden[0].recurrent
    assert syn.kernel_size == 1 and not syn.delay.requires_grad
    assert torch.all(syn.delay_steps() == 1)
    fixed = build_model(_cfg(recurrent_delays="fixed", recurrent_kernel_size=9)).hidden[1].recurrent
    assert fixed.kernel_size == 9 and not fixed.delay.requires_grad
    assert 1 <= float(fixed.delay_steps().min()) and float(fixed.delay_steps().max()) <= 9
    learned = build_model(_cfg()).hidden[0].recurrent
    assert learned.kernel_size == 5 and learned.delay.requires_grad
    start_one = build_model(_cfg(recurrent_delay_init="one-step")).hidden[0].recurrent
    assert start_one.delay.requires_grad and torch.all(start_one.delay_steps() == 1)
    assert torch.equal(start_one.weight, learned.weight)  # only the delays' start differs
    ff = build_model(_cfg(recurrent=False))  # the same feed-forward synapses for a seed, with or without
    assert torch.equal(ff.hidden[0].synapse.weight, build_model(_cfg()).hidden[0].synapse.weight)


def test_config_refuses_bad_recurrent_settings():
    with pytest.raises(ConfigError, match="recurrent_delays"):
        _cfg(recurrent_delays="random").validate()
    with pytest.raises(ConfigError, match="recurrent_fanin"):
        _cfg(recurrent_fanin=13).validate()
    with pytest.raises(ConfigError, match="recurrent_delay_init"):
        _cfg(recurrent_delay_init="late").validate()
    with pytest.raises(ConfigError, match="dense-conv"):
        _cfg(variant="dense-conv").validate()


@pytest.mark.parametrize("interpolation,backend", [("gauss", "sparse"), ("triangle", "sparse"), ("gauss", "auto")])
def test_model_training_step_compiled_equals_plain(interpolation, backend):
    # the whole model, training mode: the compiled recurrent loop (tap form; "auto" takes the dense
    # form at this width) and the PyTorch step loop give the same outputs and gradients, up to the
    # taps the tap form drops (Gaussian: <= 3.4e-4 of a weight)
    torch.manual_seed(3)
    model = build_model(_cfg(interpolation=interpolation, dropout=0.2, backend=backend)).double().train()
    model.sigma = 1.0
    x = (torch.rand(25, 6, 10) < 0.3).double()
    assert model.hidden[0].recurrent.uses_taps(x) == (backend == "sparse")
    grads = []
    for compiled in (True, False):
        model.zero_grad()
        torch.manual_seed(5)  # the same dropout masks
        with use_compiled(compiled):
            out = model(x)
        out.softmax(-1).sum(0).log().sum().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    torch.testing.assert_close(grads[0][0], grads[1][0], rtol=1e-6, atol=1e-8)
    for name, g in grads[0][1].items():
        ref = grads[1][1][name]
        assert float((g - ref).abs().max()) <= 2e-3 * float(ref.abs().max()) + 1e-9, name


def test_eval_mode_compiled_equals_plain_and_rounds():
    torch.manual_seed(4)
    model = build_model(_cfg()).double()
    from snn_delays.model import calibrate_batchnorm
    x = (torch.rand(30, 8, 10) < 0.3).double()
    calibrate_batchnorm(model, x)
    with torch.no_grad():
        a = model(x)
        with use_compiled(False):
            b = model(x)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dr", [1, 5])
def test_dense_node_equals_step_loop_values_and_gradients(dr):
    from snn_delays.backends.recurrent_lif import recurrent_lif_dense
    torch.manual_seed(6)
    h, t_len, b = 6, 30, 5
    kernel = (torch.randn(h, h, dr, dtype=torch.float64) * 0.6).requires_grad_()
    current = (torch.randn(t_len, h, b, dtype=torch.float64) * 0.7 + 0.4).requires_grad_()
    probe = torch.randn(t_len, h, b, dtype=torch.float64)
    s1 = recurrent_lif_dense(current, kernel, 0.8, 1.0, 5.0)
    g1 = torch.autograd.grad((s1 * probe).sum(), (current, kernel))
    s2 = recurrent_lif_reference(current, kernel, 0.8, 1.0, 5.0)
    g2 = torch.autograd.grad((s2 * probe).sum(), (current, kernel))
    assert torch.equal(s1, s2) and 0.05 < float(s1.detach().mean()) < 0.9
    for a, r in zip(g1, g2):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-12)


TINY = tiny({"model.hidden_size": "12", "model.kernel_size": "9", "data.synthetic_train": "120",
    "data.synthetic_valid": "40", "data.synthetic_test": "40", "data.batch_size": "40", "train.epochs": "3",
    "model.dropout": "0.2", "model.recurrent": "true", "model.recurrent_kernel_size": "6"})


def test_recurrent_run_resumes_to_the_same_weights_and_evaluates(tmp_path):
    import json

    from snn_delays import load_config, load_model
    from snn_delays.evaluate import evaluate_run
    from snn_delays.train import train

    cfg = load_config("synthetic", TINY)
    full = train(cfg, tmp_path / "full")
    part = tmp_path / "part"
    train(cfg, part, max_epochs=1)
    resumed = train(cfg, part)
    assert full["test_acc"] == resumed["test_acc"]
    ma, mb = load_model(tmp_path / "full", "last"), load_model(part, "last")
    assert any(k.startswith("hidden.0.recurrent.") for k in ma.state_dict())
    for (ka, va), (kb, vb) in zip(ma.state_dict().items(), mb.state_dict().items()):
        assert torch.equal(va, vb), ka
    for syn in ma.recurrent_synapses():  # clamped after every step: delays 1..Dr
        d = syn.real_delay().detach()
        assert float(d.min()) >= 1 and float(d.max()) <= 6
    row = json.loads((part / "metrics.jsonl").read_text().splitlines()[-1])
    assert "recurrent_delay_mean_0" in row
    report = evaluate_run(tmp_path / "full")
    assert report["accuracy"] == pytest.approx(full["test_acc"])


def test_recurrent_runs_plot_their_recurrent_delays_and_refuse_chip_training(tmp_path):
    from snn_delays import UserError, load_config
    from snn_delays.plots import plot_run
    from snn_delays.quantize import apply_target
    from snn_delays.train import train

    cfg = load_config("synthetic", TINY + ["train.epochs=1"])
    train(cfg, tmp_path)
    names = {p.name for p in plot_run(tmp_path, log=None)}
    assert {"delays.png", "recurrent_delays.png"} <= names
    import json
    h = json.loads((tmp_path / "plots" / "recurrent_delays.json").read_text())
    assert h["range"] == [1.0, 6.0] and set(h["layers"]) == {"hidden.0.recurrent", "hidden.1.recurrent"}
    assert all(L["n"] == 144 for L in h["layers"].values())  # 12 x 12, self-connections included
    with pytest.raises(UserError, match="recurrent"):
        apply_target(build_model(_cfg()), "spinnaker1")
