"""adLIF neurons in the model (model.neuron = "adlif"): config, the hidden block, gradients into the
neuron parameters, the trainer (clamped, no weight decay), checkpoints and rounded-delay evaluation."""

import math

import pytest
import torch

from neuromorphic_export.chip import ADLIF_KEYS, adlif_limits
from snn_delays import UserError, build_model, count_trainable, load_config, load_model
from snn_delays.adaptive_neuron import AdLIF, adlif_sequence
from snn_delays.checkpoint import check_model_arrays
from snn_delays.config import ConfigError, config_from_dict, config_to_dict
from snn_delays.data import open_dataset
from snn_delays.neuron import LIF
from snn_delays.train import _param_groups, measure_split, train
from _support import tiny

ADLIF = {"model.neuron": "adlif"}


def _cfg(extra=None):
    return load_config("synthetic", tiny({**ADLIF, "train.epochs": "2", **(extra or {})}))


def test_neuron_config_defaults_to_lif_and_refuses_what_it_cannot_build():
    assert load_config("synthetic").model.neuron == "lif"
    old = config_to_dict(load_config("synthetic"))
    del old["model"]["neuron"]  # a config written before model.neuron existed
    assert config_from_dict(old).model.neuron == "lif"
    with pytest.raises(ConfigError, match="model.neuron must be one of lif, adlif"):
        load_config("synthetic", {"model.neuron": "izhikevich"})
    with pytest.raises(ConfigError, match="model.recurrent runs LIF neurons only") as e:
        load_config("synthetic", {**ADLIF, "model.recurrent": True})
    assert "\n" not in str(e.value)  # one line
    with pytest.raises(ConfigError, match="no export target runs adaptive neurons"):
        load_config("synthetic", {**ADLIF, "train.target": "loihi2"})


def test_adlif_blocks_hold_the_neuron_parameters_and_count_them():
    cfg = _cfg()
    model = build_model(cfg)
    assert all(isinstance(blk.lif, AdLIF) for blk in model.hidden) and not model.fast_eval_eligible
    assert isinstance(build_model(load_config("synthetic", tiny())).hidden[0].lif, LIF)
    state = model.state_dict()
    h = cfg.model.hidden_size
    for k in range(cfg.model.n_layers):
        for key in ADLIF_KEYS:
            assert state[f"hidden.{k}.lif.{key}"].shape == (h,)
    lif_model = build_model(load_config("synthetic", tiny()))
    assert model.trainable_count() == lif_model.trainable_count() + 4 * h * cfg.model.n_layers
    assert count_trainable(model.config) == model.trainable_count()
    # the same seed draws the same neuron parameters (their own random stream), another seed others
    again, other = build_model(cfg).state_dict(), build_model(cfg, seed=1).state_dict()
    assert all(torch.equal(state[k], again[k]) for k in state if ".lif." in k)
    assert not torch.equal(state["hidden.0.lif.decay_u"], other["hidden.0.lif.decay_u"])


def test_hidden_block_computes_batchnorm_then_the_adlif_sequence():
    cfg = _cfg()
    model = build_model(cfg).train()
    blk = model.hidden[0]
    x = (torch.rand(20, 3, cfg.model.input_size) < 0.3).float()
    out, s = blk(x)
    i = blk.synapse.forward_cm(x.permute(0, 2, 1))  # (T, H, B); BatchNorm in training mode: batch statistics
    ref = adlif_sequence(blk.norm(i), *blk.lif.clamped(), blk.lif.ranges.q, blk.lif.threshold, blk.lif.alpha,
                         channel_axis=1, fused=False)
    torch.testing.assert_close(s, ref.permute(0, 2, 1), rtol=0, atol=0)


def test_gradients_reach_the_neuron_parameters_and_no_weight_decay_on_them():
    cfg = _cfg({"model.hidden_size": "16"})
    model = build_model(cfg).train()
    with torch.no_grad():
        for blk in model.hidden:
            blk.synapse.weight.mul_(4.0)
    x = (torch.rand(60, 8, cfg.model.input_size) < 0.3).float()
    y = torch.randint(0, cfg.model.n_classes, (8,))
    out, spikes = model(x, return_spikes=True)
    assert sum(int(s.sum()) for s in spikes) > 0, "the test model should spike"
    torch.nn.functional.cross_entropy(model.scores(out), y).backward()
    for k, blk in enumerate(model.hidden):
        for key in ADLIF_KEYS:
            g = getattr(blk.lif, key).grad
            assert g is not None and bool(g.isfinite().all()) and float(g.abs().sum()) > 0, (k, key)
    groups = {g["name"]: g for g in _param_groups(model, cfg)}
    neuron_ids = {id(getattr(blk.lif, key)) for blk in model.hidden for key in ADLIF_KEYS}
    assert {id(p) for p in groups["neurons"]["params"]} == neuron_ids and groups["neurons"]["weight_decay"] == 0.0
    assert not neuron_ids & {id(p) for p in groups["weights"]["params"]}
    assert "neurons" not in {g["name"] for g in _param_groups(build_model(load_config("synthetic", tiny())), cfg)}


def test_clamp_puts_the_neuron_parameters_back_into_their_ranges():
    model = build_model(_cfg())
    with torch.no_grad():
        for blk in model.hidden:
            blk.lif.decay_u.fill_(1.5), blk.lif.b.fill_(-3.0)
    model.clamp_()
    lo_u, hi_u = adlif_limits()["decay_u"]
    for blk in model.hidden:
        assert float(blk.lif.decay_u.detach().max()) == pytest.approx(hi_u) and float(blk.lif.b.detach().min()) == 0.0


def test_tiny_adlif_model_trains_saves_reloads_and_evaluates(tmp_path):
    cfg = _cfg()
    init = {k: v.clone() for k, v in build_model(cfg).state_dict().items() if ".lif." in k}
    summary = train(cfg, tmp_path)
    assert summary["epochs_done"] == 2 and math.isfinite(summary["test_acc"])
    model = load_model(tmp_path)  # best.pt, eval mode, config from the checkpoint
    assert model.config.neuron == "adlif" and isinstance(model.hidden[0].lif, AdLIF)
    limits = adlif_limits()
    moved = 0
    for k, blk in enumerate(model.hidden):
        for key in ADLIF_KEYS:
            v = getattr(blk.lif, key).detach()
            lo, hi = limits[key]
            assert float(v.min()) >= lo - 1e-6 and float(v.max()) <= hi + 1e-6, (k, key)  # clamped after each step
            moved += int((v != init[f"hidden.{k}.lif.{key}"]).sum())
    assert moved > 0, "training should change the neuron parameters"
    # rounded-delay evaluation of the reloaded model gives the accuracy recorded at its best epoch
    test = open_dataset("synthetic", None, "test", **cfg.data.dataset_options())
    assert measure_split(model, test, cfg.data.batch_size).accuracy == pytest.approx(summary["test_acc"])
    # a checkpoint that lacks the neuron parameters its config names is refused, naming the array
    ckpt = torch.load(tmp_path / "best.pt", weights_only=True)
    del ckpt["model"]["hidden.1.lif.a"]
    with pytest.raises(UserError, match="hidden.1.lif.a is missing"):
        check_model_arrays(config_from_dict(ckpt["config"]), ckpt["model"])


def test_chip_model_of_an_adlif_model_is_refused():
    with pytest.raises(UserError, match="model.neuron = 'adlif' has none on any chip"):
        build_model(_cfg(), target="loihi2")
