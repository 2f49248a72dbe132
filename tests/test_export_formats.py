"""Round trips through every format file: netx layout, PyNN lists and script, NIR read back."""

import h5py
import numpy as np
import pytest

from neuromorphic_export import (load_checkpoint, network_from_checkpoint, nir_predict, prepare, read_nir,
                                 simulate, write_netx, write_nir, write_pynn)
from _support import save_synthetic_checkpoint, synthetic_state


@pytest.fixture
def net(tmp_path):
    state = synthetic_state(np.random.default_rng(5), kernel_size=7, kernel_count=2)
    path = save_synthetic_checkpoint(tmp_path / "run", state, n_layers=2, kernel_size=7, extra_steps=5)
    return network_from_checkpoint(load_checkpoint(path))


def _x(net, seed=0, T=25, B=12):
    return (np.random.default_rng(seed).random((T, B, net.input_size)) < 0.2).astype(np.float64)


def test_netx_layout_is_what_lava_dl_reads(net, tmp_path):
    chip, _ = prepare(net, "loihi2", clip=True)  # kernel_count 2: pairs merged
    path = write_netx(chip, tmp_path / "netx.h5")
    with h5py.File(path) as f:
        layers = f["layer"]
        assert sorted(layers.keys(), key=int) == ["0", "1", "2", "3"]
        assert layers["0/type"][()].decode("ascii") == "input"
        assert layers["0/shape"][()].tolist() == [net.input_size]
        for k in ("1", "2", "3"):
            g = layers[k]
            assert g["type"][()].decode("ascii") == "dense"
            n_out = int(g["shape"][()][0])
            w = g["weight"][()]
            assert w.shape == (n_out, int(g["inFeatures"][()])) and np.issubdtype(w.dtype, np.integer)
            assert g["delay"][()].shape == w.shape and g["delay"][()].min() >= 0 and g["delay"][()].max() <= 63
            assert g["bias"][()].shape == (n_out,)
            neuron = g["neuron"]
            assert neuron["type"][()].decode("ascii") == "CUBA"
            assert int(neuron["iDecay"][()]) == 4096  # du = iDecay - 1 = 4095: no current memory
            for key in ("vDecay", "vThMant", "refDelay", "gradedSpike"):
                assert key in neuron
            even = w[w != 0]
            assert (even % 2 == 0).all() and even.min() >= -256 and even.max() <= 254


def test_nir_reads_back_and_interprets_to_the_same_predictions(net, tmp_path):
    import nir

    path = write_nir(net, tmp_path / "network.nir")
    graph = nir.read(path)
    assert graph.metadata["dt"] == pytest.approx(net.dt_ms / 1000)
    kinds = {type(n).__name__ for n in graph.nodes.values()}
    assert {"Input", "Delay", "Affine", "LIF", "LI", "Output"} <= kinds
    x = _x(net)
    readout, pred = nir_predict(read_nir(path), x)
    ref = simulate(net, x, convention="model")
    np.testing.assert_array_equal(pred, ref.predictions)
    np.testing.assert_allclose(readout, ref.readout, atol=1e-9)
    delays = sorted({float(n.delay[0]) for n in graph.nodes.values() if isinstance(n, nir.Delay)})
    steps = np.rint(np.array(delays) / graph.metadata["dt"]).astype(int)
    assert set(steps) <= set(np.unique(np.concatenate([l.delay for l in net.layers])))


def test_pynn_lists_split_signs_and_use_runtime_delays(net, tmp_path):
    chip, _ = prepare(net, "spinnaker1")
    folder = write_pynn(chip, tmp_path / "pynn")
    for k, layer in enumerate(chip.layers):
        exc = np.loadtxt(folder / f"layer{k}_excitatory.csv", delimiter=",", skiprows=1, ndmin=2)
        inh = np.loadtxt(folder / f"layer{k}_inhibitory.csv", delimiter=",", skiprows=1, ndmin=2)
        assert len(exc) + len(inh) == layer.n_synapses
        assert (exc[:, 2] > 0).all() and (inh[:, 2] > 0).all()
        pos = layer.real_weight > 0
        np.testing.assert_allclose(np.sort(exc[:, 2]), np.sort(layer.real_weight[pos]))
        np.testing.assert_allclose(np.sort(exc[:, 3]), np.sort((layer.delay[pos] + 1) * chip.dt_ms))
        assert exc[:, 3].min() >= chip.dt_ms  # sPyNNaker's minimum delay is one step
    compile((folder / "run_pynn.py").read_text(), "run_pynn.py", "exec")
    assert (folder / "neurons.json").exists()


def test_quantised_export_keeps_integers_in_network_h5(net, tmp_path):
    from neuromorphic_export import read_network, write_network

    chip, _ = prepare(net, "spinnaker2")
    path = write_network(chip, tmp_path / "network.h5")
    with h5py.File(path) as f:
        assert f["layer/0/synapses/weight"].dtype == np.int32
        assert "weight_scale" in f["layer/0"].attrs
    back = read_network(path)
    np.testing.assert_array_equal(simulate(back, _x(net)).readout, simulate(chip, _x(net)).readout)
