"""DelaySNN: parameter counts, shapes, prediction, sigma, variants, rounded-delay evaluation."""

import dataclasses

import numpy as np
import pytest
import torch

from snn_delays import DelaySNN, ModelConfig, UserError, build_model, count_trainable, load_config
from snn_delays.config import ExperimentConfig


def test_parameter_counts_match_the_reference():
    assert build_model("shd").trainable_count() == 214_016
    n = sum(p.numel() for p in build_model("shd").parameters() if p.requires_grad)
    assert n == 214_016
    assert build_model("ssc").trainable_count() == 1_230_848
    assert build_model("gsc").trainable_count() == 1_230_848


def small_cfg(**kw):
    base = dict(input_size=12, n_classes=4, hidden_size=10, n_layers=2, kernel_size=7, dropout=0.0)
    base.update(kw)
    return ModelConfig(**base)


def test_forward_shapes_padding_and_predict():
    cfg = small_cfg()
    model = build_model(cfg)
    x = torch.rand(20, 3, 12)
    u = model(x)
    assert u.shape == (20 + cfg.resolved_extra_steps, 3, 4)
    assert cfg.resolved_extra_steps == 3 * 3  # (L + 1) * ((Td - 1) // 2)
    u2, spikes = model(x, return_spikes=True)
    assert len(spikes) == 2 and spikes[0].shape == (29, 3, 10)
    model.eval()
    pred = model.predict(x)
    manual = model(x).softmax(-1).sum(0).argmax(-1)
    assert torch.equal(pred, manual)


def test_wrong_input_shape_is_a_clear_error():
    model = build_model(small_cfg())
    with pytest.raises(UserError, match=r"expected input \(T, B, 12\), got \(20, 3, 11\)"):
        model(torch.rand(20, 3, 11))


def test_sigma_property_sets_every_synapse():
    model = build_model(small_cfg())
    model.sigma = 0.7
    assert all(abs(float(s.sigma) - 0.7) < 1e-7 for s in model.synapses())
    assert abs(model.sigma - 0.7) < 1e-7


def reference_eval(model, x):
    """Independent float64 numpy implementation of the documented eval computation."""
    cfg = model.config
    xs = np.concatenate([x.numpy(), np.zeros((model.extra_steps,) + x.shape[1:])], 0)
    t_len = xs.shape[0]

    def synapse(s, syn):
        w = (syn.weight * syn.mask.unsqueeze(-1)).detach().double().numpy()
        d = np.rint(np.clip(syn.delay.detach().double().numpy(), 0, syn.kernel_size - 1)).astype(int)
        out = np.zeros((t_len, s.shape[1], w.shape[0]))
        for i, j, e in np.ndindex(*w.shape):
            out[d[i, j, e]:, :, i] += w[i, j, e] * s[: t_len - d[i, j, e], :, j]
        return out

    for blk in model.hidden:
        cur = synapse(xs, blk.synapse)
        n = blk.norm
        cur = (cur - n.running_mean.double().numpy()) / np.sqrt(n.running_var.double().numpy() + n.eps) \
            * n.weight.detach().double().numpy() + n.bias.detach().double().numpy()
        decay = 1 - 1 / cfg.tau_steps
        u = np.zeros(cur.shape[1:])
        spikes = np.zeros_like(cur)
        for t in range(t_len):
            u = decay * u + cur[t]
            spikes[t] = u >= cfg.threshold
            u[spikes[t] > 0] = 0
        xs = spikes
    cur = synapse(xs, model.readout)
    decay = 1 - 1 / cfg.readout_tau_steps
    u = np.zeros(cur.shape[1:])
    mem = np.zeros_like(cur)
    for t in range(t_len):
        u = decay * u + cur[t]
        mem[t] = u
    return mem


def test_eval_matches_independent_reference_in_float64():
    torch.manual_seed(0)
    model = build_model(small_cfg(tau_steps=1.5, fanin=5, kernel_count=2))
    with torch.no_grad():  # non-trivial BatchNorm statistics and more spiking
        for blk in model.hidden:
            blk.norm.running_mean.uniform_(-0.2, 0.2)
            blk.norm.running_var.uniform_(0.05, 0.3)
            blk.norm.weight.uniform_(0.5, 1.5)
            blk.norm.bias.uniform_(0.0, 0.5)
    model = model.double().eval()
    x = torch.poisson(torch.full((25, 3, 12), 0.5, dtype=torch.float64))
    mem = model(x).detach().numpy()
    np.testing.assert_allclose(mem, reference_eval(model, x), rtol=1e-10, atol=1e-10)


def test_same_seed_same_init_across_variants():
    cfg = small_cfg(fanin=4)
    a = build_model(cfg, seed=3)
    b = build_model(dataclasses.replace(cfg, variant="fixed-delays"), seed=3)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    c = build_model(cfg, seed=4)
    assert not torch.equal(a.hidden[0].synapse.weight, c.hidden[0].synapse.weight)


@pytest.mark.parametrize("variant", ["no-delays-wider", "no-delays-deeper"])
@pytest.mark.parametrize("fanin", [0, 10])
def test_no_delay_baselines_match_parameter_count(variant, fanin):
    cfg = ExperimentConfig(model=dataclasses.replace(load_config("shd").model, variant=variant, fanin=fanin))
    full = count_trainable(dataclasses.replace(cfg.model, variant="full"))
    model = build_model(cfg)
    assert model.trainable_count() == count_trainable(model.config)
    assert abs(model.trainable_count() - full) / full < 0.03
    assert all(s.kernel_size == 1 for s in model.synapses())
    if variant == "no-delays-deeper":
        assert model.config.n_layers > 2
        if fanin:
            assert model.config.fanin == fanin


def test_variant_freezing():
    fd = build_model(small_cfg(variant="fixed-delays"))
    assert not any(p.requires_grad for n, p in fd.named_parameters() if n.endswith("delay"))
    fw = build_model(small_cfg(variant="fixed-weights"))
    assert not any(p.requires_grad for n, p in fw.named_parameters() if n.endswith("synapse.weight"))
    dc = build_model(small_cfg(variant="dense-conv"))
    assert dc(torch.rand(5, 2, 12)).shape == (14, 2, 4)
