"""snn_delays.quantize: the chip model (build_model(cfg, target=...)) computes what the export
simulated in the target's arithmetic computes (neuromorphic_export.simulate of the exported integers);
gradients flow through the straight-through quantisers on every backend; checkpoints keep their keys."""

import numpy as np
import pytest
import torch

from snn_delays.checkpoint import save_checkpoint
from snn_delays.config import config_to_dict
import snn_delays
from snn_delays.quantize import apply_target

from neuromorphic_export import load_checkpoint, network_from_checkpoint, prepare, simulate

from test_export_model import _data, _spiking_model


def _exported(tmp_path, cfg, model, target):
    run = tmp_path / "run"
    save_checkpoint(run / "best.pt", {"config": config_to_dict(cfg), "model": model.state_dict(), "epoch": 1,
                                      "sigma": 0.5, "metrics": []})
    chip, rep = prepare(network_from_checkpoint(load_checkpoint(run)), target)
    assert not rep.changes
    return chip


@pytest.mark.parametrize("target", ["loihi1", "loihi2", "spinnaker1", "spinnaker2"])
def test_forward_equals_the_export_in_the_targets_arithmetic(tmp_path, target):
    cfg, model = _spiking_model(seed=3)
    with torch.no_grad():  # a bias that needs Loihi 1's bias exponent
        model.hidden[0].norm.bias[:4] = torch.tensor([40.0, -35.0, 20.0, 3.0])
    chip = _exported(tmp_path, cfg, model, target)
    x, _ = _data(cfg, 24)
    m = snn_delays.build_model(cfg, target=target).double().eval()
    m.load_state_dict(model.state_dict())
    assert not m.fast_eval_eligible  # the compiled path computes the plain layers, not the chip's
    with torch.no_grad():
        u, spikes = m(x, return_spikes=True)
    res = simulate(chip, x.numpy(), convention="target")
    assert u.shape == res.readout.shape
    assert sum(int(s.sum()) for s in spikes) > 200
    for a, b in zip(res.spikes, spikes):
        if chip.attrs["arithmetic"] == "loihi":
            np.testing.assert_array_equal(a, b.numpy())  # bit for bit
        else:  # float64 sums in another order: a spike exactly at threshold may differ
            assert (a != b.numpy()).mean() < 1e-3
    if chip.attrs["arithmetic"] == "loihi":
        np.testing.assert_allclose(u.numpy(), res.readout, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(m.scores(u).argmax(-1).numpy(), res.predictions)


@pytest.mark.parametrize("backend", ["dense", "fft", "sparse"])
def test_gradients_flow_and_keys_stay(backend):
    cfg, model = _spiking_model(seed=1, **{"model.backend": backend})
    keys = set(model.state_dict())
    latent = model.hidden[0].synapse.weight.detach().clone()
    model = apply_target(model, "loihi1")
    assert model.chip_target == "loihi1" and model.target == "loihi1"
    assert set(model.state_dict()) == keys  # checkpoints stay ordinary
    torch.testing.assert_close(model.state_dict()["hidden.0.synapse.weight"], latent)
    model.train()
    assert not model.hidden[0].synapse.training  # rounded delays, the chip's
    x, y = _data(cfg, 8)
    loss = torch.nn.functional.cross_entropy(model.scores(model(x.float())), torch.as_tensor(y))
    loss.backward()
    orig = model.hidden[0].synapse.weight  # the latent weight the optimiser updates
    assert orig.grad is not None and orig.grad.abs().sum() > 0
    assert model.readout.weight.grad.abs().sum() > 0
    assert model.hidden[0].norm.weight.grad.abs().sum() > 0 and model.hidden[0].norm.bias.grad.abs().sum() > 0
    # the synapse reads the quantised tensor: (folded) weight * scale is on the even integer grid
    syn = model.hidden[0].synapse
    w = syn.masked_weight().detach().double() * syn.chip_layer.choice.scale
    assert torch.allclose(w, 2 * torch.round(w / 2), atol=1e-3)


def test_state_dict_round_trip_into_a_plain_model():
    cfg, model = _spiking_model(seed=2)
    model = apply_target(model, "spinnaker2")

    plain = snn_delays.build_model(cfg)
    plain.load_state_dict(model.state_dict())  # strict: same keys
    again = snn_delays.build_model(cfg, target="spinnaker2")
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.hidden[1].synapse.weight, model.hidden[1].synapse.weight)


def test_the_chip_forward_is_switched_explicitly():
    """train.target's schedule: the chip model computes the plain forward (fast path allowed) until
    its chip forward is switched on; then the compiled path is not taken and the readout is longer
    by one step per hop per layer."""
    cfg, model = _spiking_model(seed=4)
    chip = snn_delays.build_model(cfg, target="loihi2")
    chip.load_state_dict(model.state_dict())
    chip.set_chip_forward(False)
    model.eval(), chip.eval()
    x = _data(cfg, 6)[0].float()
    assert chip.fast_eval_eligible and chip.chip_target is None
    with torch.no_grad():
        torch.testing.assert_close(chip(x), model(x), rtol=0, atol=0)
    chip.set_chip_forward(True)
    assert not chip.fast_eval_eligible and chip.chip_target == "loihi2"
    with torch.no_grad():
        assert chip(x).shape[0] == model(x).shape[0] + cfg.model.n_layers + 1
    with pytest.raises(ValueError, match="plain model"):
        model.set_chip_forward(True)
    from snn_delays.backends import norm_lif

    blk = chip.hidden[0]
    chip.train()
    assert not norm_lif.supported(blk.norm, blk.lif)  # the chip's neuron, not the fused plain one
    chip.set_chip_forward(False)
    chip.train()
    assert norm_lif.supported(blk.norm, blk.lif)  # before: the plain layers' fused training node
