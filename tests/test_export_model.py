"""Integration with the PyTorch model: a DelaySNN checkpoint exported and simulated reproduces
``model.double().eval()`` spike for spike and prediction for prediction; the CLI round trip."""

import numpy as np
import pytest
import torch

snn_delays = pytest.importorskip("snn_delays")
from snn_delays.checkpoint import save_checkpoint  # noqa: E402
from snn_delays.cli import main as cli_main  # noqa: E402
from snn_delays.config import config_to_dict, load_config  # noqa: E402

from neuromorphic_export import (Convention, export_run, nir_predict, read_network, read_nir,  # noqa: E402
                                 simulate)

OVERRIDES = {"model.hidden_size": 24, "model.kernel_size": 15, "model.kernel_count": 1, "model.tau_steps": 2.0,
             "model.readout_tau_steps": 2.0, "data.synthetic_train": 20, "data.synthetic_valid": 20,
             "data.synthetic_test": 48, "train.epochs": 1}


def _spiking_model(seed=0, **extra):
    cfg = load_config("synthetic", {**OVERRIDES, **extra})
    model = snn_delays.build_model(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k, blk in enumerate(model.hidden):
            blk.synapse.weight.mul_(6.0)
            blk.synapse.delay.copy_(torch.rand(blk.synapse.delay.shape, generator=g) * 16 - 0.5)
            h = blk.norm.num_features
            blk.norm.running_mean.copy_(torch.randn(h, generator=g) * 0.1)
            blk.norm.running_var.copy_(torch.rand(h, generator=g) + 0.5)
            blk.norm.weight.copy_(torch.rand(h, generator=g) + 0.5)
            blk.norm.bias.copy_(torch.randn(h, generator=g) * 0.2)
        model.readout.weight.mul_(4.0)
        model.clamp_()
    return cfg, model


def _save_run(tmp_path, cfg, model, name="run"):
    run = tmp_path / name
    save_checkpoint(run / "best.pt", {"config": config_to_dict(cfg), "model": model.state_dict(), "epoch": 1,
                                      "sigma": 0.5, "metrics": []})
    return run


def _data(cfg, n=48):
    from snn_delays.data import open_dataset

    ds = open_dataset("synthetic", None, "test", **cfg.data.dataset_options())
    x = ds.x[:n].double().permute(1, 0, 2).contiguous()  # (T, B, C)
    return x, ds.y[:n].numpy()


def test_export_reproduces_the_model_spike_for_spike(tmp_path):
    cfg, model = _spiking_model()
    run = _save_run(tmp_path, cfg, model)
    export_run(run, "generic", tmp_path / "out")
    net = read_network(tmp_path / "out")
    x, _ = _data(cfg)
    m = model.double().eval()
    with torch.no_grad():
        u, spikes = m(x, return_spikes=True)
        pred = m.predict(x).numpy()
    res = simulate(net, x.numpy(), convention="model")
    assert sum(int(s.sum()) for s in spikes) > 500, "the test model should spike"
    for a, b in zip(res.spikes, spikes):
        np.testing.assert_array_equal(a, b.numpy())
    np.testing.assert_allclose(res.readout, u.numpy(), atol=1e-9)
    np.testing.assert_array_equal(res.predictions, pred)
    # NIR file interpreted independently gives the same predictions
    readout, nir_pred = nir_predict(read_nir(tmp_path / "out" / "network.nir"), x.numpy())
    np.testing.assert_array_equal(nir_pred, pred)


def test_float32_model_is_reproduced_in_predictions(tmp_path):
    cfg, model = _spiking_model(seed=1)
    run = _save_run(tmp_path, cfg, model)
    export_run(run, "generic", tmp_path / "out")
    x, _ = _data(cfg, 24)
    with torch.no_grad():
        pred32 = model.eval().predict(x.float()).numpy()
    res = simulate(read_network(tmp_path / "out"), x.numpy(), convention="model")
    assert (res.predictions == pred32).mean() >= 0.95  # float32 may flip rare threshold crossings


def test_cli_export_and_verify(tmp_path, capsys):
    cfg, model = _spiking_model()
    run = _save_run(tmp_path, cfg, model)
    for target in ("generic", "loihi2", "spinnaker1"):
        out = tmp_path / f"exp-{target}"
        assert cli_main(["export", str(run), "--target", target, "--out", str(out)]) == 0
        assert (out / "network.h5").exists() and (out / "export.json").exists()
    assert (tmp_path / "exp-loihi2" / "netx.h5").exists()
    assert (tmp_path / "exp-spinnaker1" / "pynn" / "run_pynn.py").exists()
    capsys.readouterr()
    assert cli_main(["verify", str(run), str(tmp_path / "exp-generic"), "--dataset", "synthetic", "--json"]) == 0
    import json

    res = json.loads(capsys.readouterr().out)
    first = res["results"][0]
    assert first["agreement"] == 1.0 and sum(first["spike_mismatches"]) == 0
    assert res["results"][1]["agreement"] == 1.0  # the generic export file itself
    assert cli_main(["verify", str(run), str(tmp_path / "exp-loihi2"), "--dataset", "synthetic"]) == 0
    assert "loihi2" in capsys.readouterr().out


def test_cli_errors_have_no_traceback(tmp_path, capsys):
    cfg, model = _spiking_model(**{"model.kernel_size": 80})
    with torch.no_grad():
        model.hidden[0].synapse.delay.fill_(70.0)
    run = _save_run(tmp_path, cfg, model)
    assert cli_main(["export", str(run), "--target", "loihi1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "layer 0:" in err and "D <= 63" in err and "Traceback" not in err
    assert cli_main(["export", str(run), "--target", "loihi1", "--out", str(tmp_path / "o"), "--clip"]) == 0
    out = capsys.readouterr().out
    assert "clipped: layer 0" in out and "before clipping" in out
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "best.pt").write_bytes(b"garbage")
    cases = [
        ([str(tmp_path / "missing")], "does not exist"),
        ([str(tmp_path / "bad")], "not a readable checkpoint"),
        ([str(run), "--target", "truenorth"], "unknown target"),
    ]
    for argv, needle in cases:
        assert cli_main(["export", *argv, "--out", str(tmp_path / "o2")]) == 2
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err
    torch.save({"format": "something-else"}, tmp_path / "other.pt")
    assert cli_main(["export", str(tmp_path / "other.pt"), "--out", str(tmp_path / "o3")]) == 2
    assert "unknown checkpoint format" in capsys.readouterr().err


def test_hardware_convention_changes_little(tmp_path):
    cfg, model = _spiking_model(seed=2)
    run = _save_run(tmp_path, cfg, model)
    export_run(run, "generic", tmp_path / "out")
    net = read_network(tmp_path / "out")
    x, _ = _data(cfg, 24)
    a = simulate(net, x.numpy(), convention="model").predictions
    b = simulate(net, x.numpy(), convention=Convention(1, ">", "float64")).predictions
    assert (a == b).mean() >= 0.5  # one step per hop shifts inputs against the bias: not identical


def test_checkpoint_without_dt_ms_gets_the_config_default(tmp_path):
    from snn_delays.config import DataConfig
    from neuromorphic_export.checkpoint_reader import DEFAULT_DT_MS, load_checkpoint

    assert DEFAULT_DT_MS == DataConfig().dt_ms
    cfg, model = _spiking_model()
    d = config_to_dict(cfg)
    del d["data"]["dt_ms"]
    run = tmp_path / "run"
    save_checkpoint(run / "best.pt", {"config": d, "model": model.state_dict(), "epoch": 1, "metrics": []})
    assert load_checkpoint(run).dt_ms == DataConfig().dt_ms
