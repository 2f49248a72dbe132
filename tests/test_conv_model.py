"""DelaySNN with a convolutional front end (model.conv): config, shapes, variants, schedule and
clamping, rounded-delay evaluation, training and checkpoints."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from neuromorphic_export.conv import conv_rows, conv_shapes, parse_conv
from snn_delays.config import ConfigError, ModelConfig, load_config
from snn_delays.conv_synapse import DelayConv2d, delay_conv_reference
from snn_delays.model import DelaySNN, build_model, count_trainable, load_model, resolve_variant

FRAME = "2x8x8"


def conv_cfg(**changes) -> ModelConfig:
    base = dict(input_size=128, n_classes=4, hidden_size=6, n_layers=1, kernel_size=5, conv="c3 k3 avg2",
                input_frame=FRAME, dropout=0.0)
    base.update(changes)
    cfg = ModelConfig(**base)
    cfg.validate()
    return cfg


def test_spec_grammar_and_shapes():
    specs = parse_conv("c8 k5 avg2, c16 k3 s2 p0")
    assert [s.out_channels for s in specs] == [8, 16]
    assert (specs[0].kernel, specs[0].padding, specs[0].pool, specs[0].pool_size) == (5, 2, "avg", 2)
    assert (specs[1].stride, specs[1].padding, specs[1].pool) == (2, 0, "")
    # 16 x 16 -> conv k5 p2 16 x 16 -> pool 8 x 8 -> conv k3 s2 p0: (8 - 3) // 2 + 1 = 3
    assert conv_shapes(specs, (2, 16, 16)) == [((2, 16, 16), (8, 16, 16), (8, 8, 8)), ((8, 8, 8), (16, 3, 3),
                                                                                         (16, 3, 3))]
    for bad, word in (("k5", "out-channel"), ("c8 q3", "unknown token"), ("c8 avg2 max2", "twice"),
                      ("c8,,c4", "empty")):
        with pytest.raises(ConfigError, match=word):
            conv_cfg(conv=bad)
    with pytest.raises(ConfigError, match="smaller than the kernel"):
        conv_cfg(conv="c4 k9 p0", input_frame="2x4x4", input_size=32)
    with pytest.raises(ConfigError, match="input_frame"):
        conv_cfg(input_frame="2x8")
    with pytest.raises(ConfigError, match="holds 128 inputs"):
        conv_cfg(input_size=100)


def test_extra_steps_count_the_conv_layers():
    cfg = conv_cfg(kernel_size=9)  # (1 conv + 1 dense + readout) * ((9 - 1) // 2)
    assert cfg.resolved_extra_steps == 3 * 4
    assert dataclasses.replace(cfg, conv="").resolved_extra_steps == 2 * 4


def test_forward_shapes_frames_or_flat_and_gradients_reach_the_delays():
    torch.manual_seed(0)
    model = build_model(conv_cfg(), seed=1)
    x = (torch.rand(12, 3, 2, 8, 8) < 0.2).float()
    u = model(x)
    assert u.shape == (12 + model.extra_steps, 3, 4)
    assert torch.equal(u, model(x.flatten(2)))
    u.sum().backward()
    syn = model.conv[0].synapse
    assert syn.delay.grad is not None and syn.delay.grad.abs().sum() > 0
    assert model.conv[0].norm.weight.grad is not None
    _, spikes = model(x, return_spikes=True)
    assert [tuple(s.shape) for s in spikes] == [(12 + model.extra_steps, 3, 3 * 8 * 8), (12 + model.extra_steps, 3, 6)]
    with pytest.raises(ValueError, match="expected input"):
        model(torch.zeros(12, 3, 2, 7, 8))


def test_sigma_schedule_and_clamping_reach_the_conv_layers():
    model = build_model(conv_cfg(), seed=0)
    model.sigma = 0.75
    assert float(model.conv[0].synapse.sigma) == 0.75
    with torch.no_grad():
        model.conv[0].synapse.delay.fill_(99.0)
    model.clamp_()
    assert float(model.conv[0].synapse.delay.detach().max()) == 4.0  # Td - 1


def test_eval_uses_the_exact_rounded_delays():
    """In eval mode the conv layer's currents are the plain loop's with the rounded delays."""
    model = build_model(conv_cfg(), seed=3).eval()
    syn = model.conv[0].synapse
    with torch.no_grad():
        syn.delay.add_(torch.rand(syn.delay.shape) * 0.9 - 0.45)
        model.clamp_()
        x = (torch.rand(10, 2, 2, 8, 8) < 0.3).float()
        want = delay_conv_reference(x, syn.weight, syn.rounded_delay(), syn.stride, syn.padding)
        assert torch.allclose(syn(x), want, atol=1e-6)


@pytest.mark.parametrize("variant", ["full", "fixed-delays", "no-delays", "no-delays-wider"])
def test_variants_reach_the_conv_layers(variant):
    cfg = resolve_variant(conv_cfg(variant=variant))
    model = DelaySNN(cfg, seed=0)
    syn = model.conv[0].synapse
    assert syn.delay.requires_grad == (variant == "full")
    assert syn.kernel_size_steps == (1 if variant.startswith("no-delays") else 5)
    assert model.trainable_count() == count_trainable(cfg)
    if variant == "no-delays-wider":  # wider to match the full model's count
        full = count_trainable(resolve_variant(conv_cfg()))
        assert cfg.hidden_size > 6 and abs(count_trainable(cfg) - full) <= 0.1 * full


def test_conv_rows_are_the_plain_loop():
    """The exporter's per-synapse expansion, as a dense product, equals the direct loop."""
    g = torch.Generator().manual_seed(0)
    layer = DelayConv2d(2, 3, 3, 6, stride=2, padding=1, generator=g)
    x = (torch.rand(9, 1, 2, 7, 7, generator=g) < 0.3).double()
    d = layer.element_delay().detach()
    pre, post, w, dl = conv_rows(layer.weight.detach().double().numpy(), d.numpy(), (2, 7, 7), 2, 1)
    want = delay_conv_reference(x, layer.weight.detach().double(), d, 2, 1).reshape(9, -1)
    flat = x.reshape(9, -1)
    got = torch.zeros_like(want)
    for p, q, wt, dd in zip(pre, post, w, dl):
        got[dd:, q] += wt * flat[:9 - dd, p]
    assert torch.allclose(got, want)


def test_training_and_checkpoint_round_trip(tmp_path):
    from snn_delays.train import train

    cfg = load_config("event-motion", ["data.motion_train=24", "data.motion_valid=8", "data.motion_test=8",
                                       "data.motion_grid=8", "data.n_steps=20", "data.batch_size=12",
                                       "model.conv=c2 k3 avg2", "model.hidden_size=6", "model.kernel_size=5",
                                       "train.epochs=1", "train.progress=false"])
    train(cfg, tmp_path / "run")
    model = load_model(tmp_path / "run")
    assert model.config.input_frame == "2x8x8" and len(model.conv) == 1
    x = torch.zeros(20, 2, 2, 8, 8)
    assert model(x).shape[0] == 20 + model.extra_steps
    assert model.predict(x.transpose(0, 1), batch_first=True).shape == (2,)
