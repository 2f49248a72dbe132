"""Export of convolutional delay layers (model.conv): per-synapse tables in network.h5, simulated
exactly (the simulator against the PyTorch model's rounded-delay forward), sizes in export.json,
target limits refused with the reason, max pooling refused."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from neuromorphic_export.checkpoint_reader import load_checkpoint
from neuromorphic_export.errors import ExportError
from neuromorphic_export.export import export_run
from neuromorphic_export.network import network_from_checkpoint, read_network
from neuromorphic_export.simulate import Convention, simulate
from neuromorphic_export.targets import get_target, prepare
from snn_delays.config import load_config
from snn_delays.data import open_dataset
from snn_delays.model import calibrate_batchnorm, load_model
from snn_delays.train import train
from snn_delays.verification import load_split, model_outputs

TINY_EVENTS = ["data.motion_train=40", "data.motion_valid=10", "data.motion_test=24", "data.motion_grid=8",
               "data.n_steps=20", "data.batch_size=4", "data.motion_noise=0.02", "model.hidden_size=8",
               "model.kernel_size=5",
               "train.epochs=3", "train.progress=false", "model.dropout=0.0", "train.threads=1"]


def _run(tmp_path_factory, name: str, conv: str):
    """A trained run whose last.pt has BatchNorm statistics set from one pass over the training split
    (:func:`calibrate_batchnorm`): a run of a few tiny epochs keeps statistics near their start (variance
    1 against currents of variance ~1e-3 from sparse events), which leaves its layers silent in eval mode."""
    run = tmp_path_factory.mktemp(name) / "run"
    cfg = load_config("event-motion", TINY_EVENTS + [f"model.conv={conv}"])
    train(cfg, run)
    model = load_model(run, "last")
    x = open_dataset("event-motion", None, "train", **cfg.data.dataset_options()).x.float().transpose(0, 1)
    calibrate_batchnorm(model, x)
    blob = torch.load(run / "last.pt", weights_only=True)
    blob["model"] = {k: v.float() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(blob, run / "last.pt")
    return run


@pytest.fixture(scope="module")
def two_layer_run(tmp_path_factory):
    """Two conv layers (the first pooled, so the pooling expansion runs twice), a dense layer, the readout."""
    return _run(tmp_path_factory, "conv2", "c3 k3 avg2, c4 k3 s1 p1 avg2")


def test_export_agrees_with_the_model_spike_for_spike(two_layer_run):
    x, y, _ = load_split(str(two_layer_run), None, None, "test", 0)
    assert x.shape == (20, 24, 2 * 8 * 8)
    model_pred, model_spikes = model_outputs(str(two_layer_run), "last", x)
    net = network_from_checkpoint(load_checkpoint(two_layer_run, "last"))
    assert [l.n_out for l in net.layers] == [3 * 8 * 8, 4 * 4 * 4, 8, 8]
    assert net.layers[1].n_in == 3 * 8 * 8 and net.layers[2].n_in == 4 * 4 * 4  # pooled units expanded
    res = simulate(net, x, convention=Convention.model(), record_spikes=True)
    assert np.array_equal(res.predictions, model_pred)  # 100 % of the samples
    assert len(res.spikes) == len(model_spikes) == 3
    for k, (ours, theirs) in enumerate(zip(res.spikes, model_spikes)):
        assert ours.shape == theirs.shape
        assert np.array_equal(ours, theirs), f"layer {k}: {int((ours != theirs).sum())} spike entries differ"
    assert all(int(s.sum()) > 0 for s in model_spikes)  # not a silent network agreeing on zeros


def test_export_json_states_the_expanded_sizes(two_layer_run, tmp_path):
    report = export_run(two_layer_run, "generic", tmp_path / "out", which="last")
    conv = json.loads((tmp_path / "out" / "export.json").read_text())["conv"]
    assert conv == report["conv"] and conv["input_frame"] == "2x8x8"
    first = conv["layers"][0]
    # k3 p1 on 8 pixels: 2 + 6 * 3 + 2 = 22 in-frame taps per axis, 22^2 per (out, in) pair
    assert (first["n_in"], first["n_out"], first["synapses"]) == (128, 192, 22 * 22 * 2 * 3)
    assert first["max_fanin"] == 2 * 9 and first["delay_steps"][1] <= 4
    assert conv["layers"][2]["what"].startswith("dense")
    net = read_network(tmp_path / "out")  # the file holds the tables as plain layers
    assert net.layers[0].n_synapses == first["synapses"] and net.attrs["conv"].startswith("c3 k3")


def test_target_limits_refused_with_the_reason(two_layer_run):
    net = network_from_checkpoint(load_checkpoint(two_layer_run, "last"))
    short = dataclasses.replace(get_target("loihi2"), max_delay_D=2)
    with pytest.raises(ExportError, match=r"layer 0: .*effective delay"):
        prepare(net, short)
    narrow = dataclasses.replace(get_target("generic"), max_fanin=10)
    with pytest.raises(ExportError, match=r"layer 0: .*too many inputs.*fan-in <= 10"):
        prepare(net, narrow)
    prepare(net, "loihi2")  # delays <= 4 (+ 1 hop) and one delay per pair: Loihi 2 holds it


def test_max_pooling_is_refused(tmp_path_factory):
    run = _run(tmp_path_factory, "maxpool", "c2 k3 max2")
    with pytest.raises(ExportError, match="max pooling.*OR"):
        network_from_checkpoint(load_checkpoint(run))
