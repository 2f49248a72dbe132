"""adLIF layers through the exporter: checkpoint -> network.h5 (format_version 3, the neuron model
per layer) -> the float64 simulator, which reproduces the PyTorch model spike for spike; every chip
target and every chip format refuses adLIF neurons with the reason."""

import json

import h5py
import numpy as np
import pytest
import torch

from neuromorphic_export import ExportError, Layer, Network, export_run, load_checkpoint, read_network, simulate
from neuromorphic_export import netx, nir_format, pynn
from neuromorphic_export.chip import ADLIF_KEYS, ADLIF_Q, adlif_limits
from neuromorphic_export.network import Adaptation, network_from_checkpoint, write_network
from neuromorphic_export.simulate import Convention
from neuromorphic_export.targets import ADLIF_REFUSED, TARGETS, prepare
from snn_delays import load_config, load_model
from snn_delays.checkpoint import save_checkpoint
from snn_delays.model import calibrate_batchnorm
from snn_delays.adaptive_neuron import adlif_sequence
from snn_delays.cli import main as cli_main
from snn_delays.data import open_dataset
from snn_delays.train import train
from _support import edited_h5, tiny

CHIPS = [t for t in TARGETS if t != "generic"]


def _hand_network(rng, n_in=5, h=6, n_cls=3):
    """One adLIF hidden layer (delays 0..4, biases) and a LIF readout, fully connected."""
    pre, post = np.meshgrid(np.arange(n_in), np.arange(h), indexing="ij")
    pre, post = pre.ravel(), post.ravel()
    lo = adlif_limits()
    ad = Adaptation(h, rng.uniform(*lo["decay_u"], h), rng.uniform(*lo["decay_w"], h), rng.uniform(0, 1, h),
                    rng.uniform(0, 2, h), q=ADLIF_Q)
    hidden = Layer(n_in, h, pre, post, rng.normal(0, 6.0, pre.size), rng.integers(0, 5, pre.size),
                   decay=ad.decay_u, threshold=1.0, bias=rng.uniform(-0.2, 0.5, h), adaptation=ad)
    rp, rq = np.meshgrid(np.arange(h), np.arange(n_cls), indexing="ij")
    readout = Layer(h, n_cls, rp.ravel(), rq.ravel(), rng.normal(0, 1, rp.size), np.zeros(rp.size), decay=0.5,
                    threshold=np.inf, bias=0.0, kind="readout")
    return Network([hidden, readout], dt_ms=1.0, input_size=n_in, extra_steps=4)


def test_simulator_runs_adlif_layers_as_the_pytorch_loop(tmp_path):
    rng = np.random.default_rng(0)
    net = _hand_network(rng)
    x = (rng.random((40, 7, net.input_size)) < 0.3).astype(np.float64)
    res = simulate(net, x, convention="model")
    # the reference: currents summed by hand, then the plain PyTorch adLIF loop (autograd's, float64)
    layer = net.layers[0]
    t_len = x.shape[0] + net.extra_steps
    xp = np.concatenate([x, np.zeros((net.extra_steps,) + x.shape[1:])])
    current = np.zeros((t_len, x.shape[1], layer.n_out))
    for j, i, w, d in zip(layer.pre, layer.post, layer.weight, layer.delay):
        current[d:, :, i] += xp[: t_len - d, :, j] * w
    a = layer.adaptation
    params = [torch.from_numpy(getattr(a, k)) for k in ADLIF_KEYS]
    s_ref = adlif_sequence(torch.from_numpy(current + layer.bias), *params, a.q, 1.0, fused=False)
    assert int(s_ref.sum()) > 20, "the test layer should spike"
    np.testing.assert_array_equal(res.spikes[0], s_ref.numpy().astype(np.uint8))
    # the same network with LIF neurons computes something else
    lif = net.copy()
    lif.layers[0].adaptation = None
    assert not np.array_equal(simulate(lif, x, convention="model").spikes[0], res.spikes[0])
    # Loihi's fixed point has no adaptation
    with pytest.raises(ExportError, match="Loihi arithmetic has no adaptive neurons"):
        simulate(net, x, convention=Convention(1, ">", "loihi"))


def test_network_h5_carries_the_neuron_model_and_older_versions_still_read(tmp_path):
    net = _hand_network(np.random.default_rng(1))
    h5 = write_network(net, tmp_path / "ad.h5")
    with h5py.File(h5) as f:
        assert int(f.attrs["format_version"]) == 3
        nrn = f["layer/0/neurons"]
        assert nrn.attrs["model"] == "adlif" and float(nrn.attrs["q"]) == ADLIF_Q
        assert set(nrn) >= {"decay", "threshold", "bias", *ADLIF_KEYS}
        assert "model" not in f["layer/1/neurons"].attrs  # the readout: LIF, as in versions 1 and 2
    back = read_network(h5)
    assert [l.neuron for l in back.layers] == ["adlif", "lif"]
    for key in ADLIF_KEYS + ("q",):
        np.testing.assert_array_equal(getattr(back.layers[0].adaptation, key), getattr(net.layers[0].adaptation, key))
    x = (np.random.default_rng(2).random((30, 4, net.input_size)) < 0.3).astype(np.float64)
    np.testing.assert_array_equal(simulate(back, x).readout, simulate(net, x).readout)
    lif = net.copy()
    lif.layers[0].adaptation = None
    with h5py.File(write_network(lif, tmp_path / "lif.h5")) as f:
        assert int(f.attrs["format_version"]) == 1  # LIF networks keep the version older readers know

    def edited(name, edit):
        return edited_h5(h5, tmp_path / name, edit)

    with pytest.raises(ExportError, match="adLIF layers need format_version 3"):
        read_network(edited("v2.h5", lambda f: f.attrs.__setitem__("format_version", 2)))
    with pytest.raises(ExportError, match="neuron model 'izhikevich' is unknown"):
        read_network(edited("m.h5", lambda f: f["layer/0/neurons"].attrs.__setitem__("model", "izhikevich")))
    with pytest.raises(ExportError, match="decays must lie in"):
        read_network(edited("d.h5", lambda f: f["layer/0/neurons/decay_w"].__setitem__(0, 1.5)))


def test_every_chip_target_and_format_refuses_adlif_with_the_reason(tmp_path):
    net = _hand_network(np.random.default_rng(3))
    for t in CHIPS:
        with pytest.raises(ExportError, match=f"target {t} cannot run adLIF neurons") as e:
            prepare(net, t)
        assert ADLIF_REFUSED[t] in str(e.value) and "\n" not in str(e.value)
    assert "no adaptation" in ADLIF_REFUSED["loihi2"] and "NIR 1.0 has none" in ADLIF_REFUSED["spinnaker2"]
    generic, _ = prepare(net, "generic")
    for write, what in ((lambda: netx.write_netx(generic, tmp_path / "n.h5"), "netx.h5"),
                        (lambda: nir_format.write_nir(generic, tmp_path / "n.nir"), "NIR"),
                        (lambda: pynn.write_pynn(generic, tmp_path / "pynn"), "pynn/")):
        with pytest.raises(ExportError, match="cannot hold adLIF neurons"):
            write()
        assert not list(tmp_path.iterdir()), what  # nothing written


@pytest.fixture(scope="module")
def adlif_run(tmp_path_factory):
    """A tiny adLIF model trained for 3 epochs on the synthetic task, its BatchNorm statistics then
    set from one pass over the training split (6 optimiser steps leave the running statistics near
    their initial values, and the network silent in eval mode); saved back into its best.pt."""
    run = tmp_path_factory.mktemp("adlif") / "run"
    cfg = load_config("synthetic", tiny({"model.neuron": "adlif", "model.hidden_size": "24", "train.epochs": "3",
                                         "train.threads": "1", "data.synthetic_test": "60"}))
    train(cfg, run)
    blob = torch.load(run / "best.pt", weights_only=True)
    model = load_model(run)
    x = open_dataset("synthetic", None, "train", **cfg.data.dataset_options()).x.float().permute(1, 0, 2)
    calibrate_batchnorm(model, x)
    blob["model"] = model.state_dict()
    save_checkpoint(run / "best.pt", blob)
    return cfg, run


def test_export_of_a_trained_adlif_model_reproduces_it_and_verify_agrees(adlif_run, tmp_path, capsys):
    cfg, run = adlif_run
    ckpt = load_checkpoint(run)
    assert ckpt.neuron == "adlif" and all(h.adaptation is not None for h in ckpt.hidden)
    # the model (float64, eval: rounded delays) against the exported network (model convention)
    model = load_model(run).double()
    ds = open_dataset("synthetic", None, "test", **cfg.data.dataset_options())
    x = ds.x.double().permute(1, 0, 2).contiguous()
    with torch.no_grad():
        u, spikes = model(x, return_spikes=True)
        pred = model.predict(x).numpy()
    assert sum(int(s.sum()) for s in spikes) > 100, "the trained model should spike"
    assert cli_main(["export", str(run), "--target", "generic", "--out", str(tmp_path / "out")]) == 0
    net = read_network(tmp_path / "out")
    assert [l.neuron for l in net.layers] == ["adlif", "adlif", "lif"]
    res = simulate(net, x.numpy(), convention="model")
    for k, (a, b) in enumerate(zip(res.spikes, spikes)):
        np.testing.assert_array_equal(a, b.numpy(), err_msg=f"hidden layer {k}")
    np.testing.assert_allclose(res.readout, u.numpy(), atol=1e-9)
    np.testing.assert_array_equal(res.predictions, pred)
    # the generic export writes network.h5 only, and says why
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["export.json", "network.h5"]
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    assert report["neurons"]["per_layer"] == ["adlif", "adlif"]
    assert report["neurons"]["per_file"]["network.h5"].startswith("carried")
    assert report["neurons"]["per_file"]["network.nir"].startswith("NOT written")
    assert report["neurons"]["per_file"]["pynn/"].startswith("NOT written")
    # verify: 100 % agreement and no spike mismatch; every chip target refused, not run
    capsys.readouterr()
    assert cli_main(["verify", str(run), str(tmp_path / "out"), "--dataset", "synthetic", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["passed"] and out["n"] == 60
    for r in out["results"][:2]:  # the float export and the export file, model convention
        assert r["agreement"] == 1.0 and sum(r["spike_mismatches"]) == 0, r
    assert not any(r["name"].startswith("target ") for r in out["results"])
    assert all(out["per_target"][t]["plain"] is None for t in CHIPS)
    assert sum("cannot run adLIF neurons" in n for n in out["notes"]) == len(CHIPS)


def test_chip_exports_of_a_trained_adlif_model_are_refused(adlif_run, tmp_path):
    _, run = adlif_run
    for t in CHIPS:
        with pytest.raises(ExportError, match=f"target {t} cannot run adLIF neurons"):
            export_run(run, t, tmp_path / t)
        assert not (tmp_path / t).exists()
    # a checkpoint whose config says LIF but holds adLIF parameters is refused
    blob = torch.load(run / "best.pt", weights_only=True)
    blob["config"]["model"]["neuron"] = "lif"
    torch.save(blob, tmp_path / "edited.pt")
    with pytest.raises(ExportError, match="config says model.neuron = lif"):
        load_checkpoint(tmp_path / "edited.pt")
    # the exporter clips the stored parameters into their ranges, as the model clamps them
    net = network_from_checkpoint(load_checkpoint(run))
    lo, hi = adlif_limits()["decay_w"]
    assert all(lo <= l.adaptation.decay_w.min() and l.adaptation.decay_w.max() <= hi for l in net.layers[:-1])
