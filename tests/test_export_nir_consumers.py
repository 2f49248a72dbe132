"""Our NIR graphs in the NIR consumers' own software.

* network.nir (Delay -> Linear branches, LIF, LI readout) through nirtorch 2.6 with the node map shipped
  in neuromorphic_export.nir_torch equals the simulator exactly: classes, every hidden spike, readout;
* the delay-free flavours (network.snntorch.nir, network.norse.nir) run in snnTorch 1.0.0
  (``import_from_nir``) and Norse 1.1.0 (``from_nir``) as written, with the simulator's classes;
* what those consumers do with network.nir itself (they do not run nir.Delay), as docs/export.md says.
"""

import json

import numpy as np
import pytest

from neuromorphic_export import (ExportError, export_run, load_checkpoint, network_from_checkpoint, nir_predict,
                                 predict_from_readout, read_nir, simulate, write_nir)
from _support import add_recurrent_state, save_synthetic_checkpoint, synthetic_state
from neuromorphic_export.nir_format import delay_free_problem, network_to_nir

nir = pytest.importorskip("nir")
torch = pytest.importorskip("torch")
pytest.importorskip("nirtorch", reason="nirtorch (extra 'nir') is not installed")
from neuromorphic_export.nir_torch import nir_to_torch, run_nir_torch  # noqa: E402

# Norse 1.1.0's from_nir calls nirtorch.load, which nirtorch 2.6 marks as deprecated.
NORSE_WARNING = "ignore:nirtorch.load is being deprecated:DeprecationWarning"


def _counts(net, seed=0, T=25, B=12, rate=0.3):
    """Count-valued input (Poisson, some bins hold 2 or more spikes), (T, B, C_in)."""
    x = np.random.default_rng(seed).poisson(rate, (T, B, net.input_size)).astype(np.float64)
    assert (x >= 2).any()
    return x


@pytest.fixture(scope="module")
def delayed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("delayed")
    state = synthetic_state(np.random.default_rng(5), kernel_size=7, kernel_count=2)
    return save_synthetic_checkpoint(tmp / "run", state, n_layers=2, kernel_size=7, extra_steps=5)


@pytest.fixture(scope="module")
def delay_free_run(tmp_path_factory):
    """A no-delays model (every delay 0): 12 inputs, 2 x 24 hidden, 4 classes."""
    tmp = tmp_path_factory.mktemp("delay_free")
    state = synthetic_state(np.random.default_rng(3), input_size=12, hidden_size=24, n_layers=2, n_classes=4,
                            kernel_size=1, max_delay=0)
    return save_synthetic_checkpoint(tmp / "run", state, n_layers=2, kernel_size=1, extra_steps=5,
                                     variant="no-delays-wider", tau_steps=2.0, readout_tau_steps=3.0)


def _assert_same_as_simulator(result, ref):
    np.testing.assert_array_equal(result.predictions, ref.predictions)
    assert len(result.spikes) == len(ref.spikes)
    for got, want in zip(result.spikes.values(), ref.spikes):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_allclose(result.readout, ref.readout, rtol=0, atol=1e-12)


def test_nir_torch_runs_network_nir_with_delays_exactly(delayed_run, tmp_path):
    net = network_from_checkpoint(load_checkpoint(delayed_run))
    graph = read_nir(write_nir(net, tmp_path / "network.nir"))
    assert sum(isinstance(n, nir.Delay) for n in graph.nodes.values()) > 6  # several delays per layer
    x = _counts(net)
    module = nir_to_torch(graph)
    assert all(b.dtype in (torch.float64, torch.int64) for b in module.buffers())
    result = run_nir_torch(module, x)
    ref = simulate(net, x, convention="model")
    assert sum(int(s.sum()) for s in ref.spikes) > 500
    _assert_same_as_simulator(result, ref)
    # a path works too, and the module runs again from a fresh state (no state kept between calls)
    again = run_nir_torch(tmp_path / "network.nir", x[:, :3])
    np.testing.assert_array_equal(again.predictions, ref.predictions[:3])


def test_nir_torch_runs_recurrent_cycles_exactly(tmp_path):
    rng = np.random.default_rng(0)
    state = synthetic_state(rng, input_size=12, hidden_size=10, n_layers=2, n_classes=4, kernel_size=9,
                            kernel_count=2, fanin=8)
    add_recurrent_state(state, rng, 2, 5)
    path = save_synthetic_checkpoint(tmp_path / "rec", state, n_layers=2, kernel_size=9, tau_steps=2.0,
                                     readout_tau_steps=3.0, extra_steps=6, recurrent=True, recurrent_kernel_size=5,
                                     recurrent_delays="learned", recurrent_fanin=0)
    net = network_from_checkpoint(load_checkpoint(path))
    assert net.is_recurrent
    x = _counts(net, seed=2)
    result = run_nir_torch(read_nir(write_nir(net, tmp_path / "network.nir")), x)
    _assert_same_as_simulator(result, simulate(net, x, convention="model"))


def test_delay_ring_buffer_by_hand():
    """Input -> Delay(0, 2 steps) -> Linear(identity) -> LI(tau = dt, r = 1): the readout is the delayed input."""
    dt = 0.01
    nodes = {"input": nir.Input(input_type={"input": np.array([2])}),
             "d": nir.Delay(delay=np.array([0.0, 2 * dt])), "w": nir.Linear(weight=np.eye(2)),
             "readout": nir.LI(tau=np.full(2, dt), r=np.ones(2), v_leak=np.zeros(2)),
             "output": nir.Output(output_type={"output": np.array([2])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "d"), ("d", "w"), ("w", "readout"), ("readout", "output")],
                         metadata={"dt": dt})
    x = np.array([[3, 1], [0, 2], [5, 0], [0, 0], [0, 7]], dtype=float)[:, None, :]  # (T=5, B=1, 2)
    got = run_nir_torch(graph, x).readout[:, 0]
    np.testing.assert_array_equal(got, [[3, 0], [0, 0], [5, 1], [0, 2], [0, 0]])


@pytest.mark.parametrize("consumer", ["snntorch", "norse"])
def test_consumer_flavour_refuses_delays_and_recurrence(delayed_run, consumer, tmp_path):
    net = network_from_checkpoint(load_checkpoint(delayed_run))
    with pytest.raises(ExportError, match=r"delays are not all 0 \(layer 0: \d+ synapses, up to \d+ steps"):
        write_nir(net, tmp_path / "x.nir", consumer=consumer)
    assert not (tmp_path / "x.nir").exists()
    with pytest.raises(ExportError, match="unknown NIR consumer"):
        network_to_nir(net, "sinabs")


@pytest.mark.parametrize("consumer", ["snntorch", "norse"])
def test_consumer_flavour_is_an_exact_graph_of_the_model(delay_free_run, consumer, tmp_path):
    """The flavours are still exact NIR (Euler steps of their metadata dt): our interpreters agree."""
    net = network_from_checkpoint(load_checkpoint(delay_free_run))
    assert delay_free_problem(net) is None
    graph = read_nir(write_nir(net, tmp_path / f"{consumer}.nir", consumer=consumer))
    assert not any(isinstance(n, (nir.Delay, nir.LI)) for n in graph.nodes.values())
    x = _counts(net, seed=4)
    ref = simulate(net, x, convention="model")
    readout, pred = nir_predict(graph, x)
    np.testing.assert_array_equal(pred, ref.predictions)
    _assert_same_as_simulator(run_nir_torch(graph, x), ref)


def _spike_agreement(got: list[np.ndarray], want: list[np.ndarray]) -> float:
    return float(np.mean(np.concatenate([(g == w).ravel() for g, w in zip(got, want)])))


def test_snntorch_runs_the_delay_free_export_as_written(delay_free_run, tmp_path):
    snntorch = pytest.importorskip("snntorch")
    import snntorch.utils
    from snntorch.import_nir import import_from_nir

    rep = export_run(delay_free_run, "generic", tmp_path / "out")
    path = tmp_path / "out" / "network.snntorch.nir"
    assert str(path) in rep["files"] and rep["nir_consumers"]["snntorch"]["file"] == "network.snntorch.nir"
    net = network_from_checkpoint(load_checkpoint(delay_free_run))
    x = _counts(net, seed=1, B=16)
    ref = simulate(net, x, convention="model")
    xp = np.concatenate([x, np.zeros((net.extra_steps,) + x.shape[1:])])

    module = import_from_nir(nir.read(path))  # snnTorch's own importer, the file as written
    snntorch.utils.reset(module)
    spikes = {name: [] for name in ("layer0_lif", "layer1_lif")}
    for name, out in spikes.items():
        getattr(module, name).register_forward_hook(lambda m, i, o, out=out: out.append(o.detach().numpy().copy()))
    readout = []
    with torch.no_grad():
        for t in range(xp.shape[0]):
            module(torch.tensor(xp[t], dtype=torch.float32))
            readout.append(module.readout.mem.double().numpy().copy())
    readout = np.array(readout)
    np.testing.assert_array_equal(predict_from_readout(readout), ref.predictions)
    assert sum(int(s.sum()) for s in ref.spikes) > 300
    assert _spike_agreement([np.array(v) for v in spikes.values()], ref.spikes) >= 0.999  # float32
    np.testing.assert_allclose(readout, ref.readout, atol=1e-4)


@pytest.mark.filterwarnings(NORSE_WARNING)
def test_norse_runs_the_delay_free_export_as_written(delay_free_run, tmp_path):
    norse_torch = pytest.importorskip("norse.torch")

    export_run(delay_free_run, "generic", tmp_path / "out")
    path = tmp_path / "out" / "network.norse.nir"
    report = json.loads((tmp_path / "out" / "export.json").read_text())
    assert report["nir_consumers"]["norse"]["file"] == "network.norse.nir"
    net = network_from_checkpoint(load_checkpoint(delay_free_run))
    x = _counts(net, seed=1, B=16)
    ref = simulate(net, x, convention="model")
    xp = np.concatenate([x, np.zeros((net.extra_steps,) + x.shape[1:])])

    module = norse_torch.from_nir(nir.read(path))  # Norse's own importer, default dt = 1e-3 as the file says
    state, readout, spikes = None, [], [[], []]
    with torch.no_grad():
        for t in range(xp.shape[0]):
            _, state = module(torch.tensor(xp[t], dtype=torch.float32), state)
            readout.append(state.state["readout"][0].v.double().numpy().copy())
            for k in range(2):
                spikes[k].append(state.cache[f"layer{k}_lif"].numpy().copy())
    readout = np.array(readout)
    np.testing.assert_array_equal(predict_from_readout(readout), ref.predictions)
    assert _spike_agreement([np.array(s) for s in spikes], ref.spikes) >= 0.999
    np.testing.assert_allclose(readout, ref.readout, atol=1e-4)


def test_export_json_says_why_a_delayed_model_has_no_consumer_files(delayed_run, tmp_path):
    rep = export_run(delayed_run, "generic", tmp_path / "out")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert "network.nir" in names and "network.snntorch.nir" not in names and "network.norse.nir" not in names
    consumers = rep["nir_consumers"]
    assert set(consumers) >= {"nirtorch+nir_torch", "nirtorch", "snntorch", "norse", "sinabs", "rockpool"}
    assert consumers["snntorch"]["file"].startswith("none for this network: its delays are not all 0")
    for entry in consumers.values():
        assert {"software", "file", "carries", "does_not_carry"} <= set(entry)


@pytest.mark.filterwarnings(NORSE_WARNING)
def test_released_consumers_do_not_run_network_nir(delayed_run, tmp_path):
    """What docs/export.md states about the consumers and nir.Delay, checked against them."""
    import nirtorch

    pytest.importorskip("snntorch")
    from snntorch.import_nir import import_from_nir
    norse_torch = pytest.importorskip("norse.torch")
    net = network_from_checkpoint(load_checkpoint(delayed_run))
    path = write_nir(net, tmp_path / "network.nir")
    with pytest.raises(ValueError, match="Unknown node type .*Delay"):
        nirtorch.nir_to_torch(nir.read(path), {})
    with pytest.raises(ValueError, match="Unknown node type .*Delay"):
        import_from_nir(nir.read(path))
    with pytest.raises(KeyError, match="delay"):
        norse_torch.from_nir(nir.read(path))
