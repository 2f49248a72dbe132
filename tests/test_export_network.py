"""network.h5 built from synthetic checkpoints against an independent dense numpy evaluation.

The reference below follows docs/internals.md's "eval computation, exactly" line by line, on the
raw state dict (no folding, no merging), so it shares no code with neuromorphic_export."""

import h5py
import numpy as np
import pytest

from neuromorphic_export import (ExportError, load_checkpoint, network_from_checkpoint, read_network,
                                 simulate, write_network)
from _support import save_synthetic_checkpoint, synthetic_state
from neuromorphic_export.network import round_delays


def dense_reference(state, x, *, n_layers, kernel_size, tau, readout_tau, threshold, extra_steps,
                    hop=0, strict=False):
    """internals.md's eval computation in float64; x (T, B, C). Returns (readout, [spikes])."""
    s = np.concatenate([x, np.zeros((extra_steps + hop * (n_layers + 1),) + x.shape[1:])]).astype(np.float64)
    T = s.shape[0]
    spikes = []

    def synapse(prefix, inp):
        W = state[f"{prefix}.weight"].astype(np.float64)
        D = np.round(np.clip(state[f"{prefix}.delay"].astype(np.float64), 0, kernel_size - 1)).astype(int) + hop
        M = state[f"{prefix}.mask"].astype(np.float64)
        out = np.zeros((T, inp.shape[1], W.shape[0]))
        for i in range(W.shape[0]):
            for j in range(W.shape[1]):
                for e in range(W.shape[2]):
                    d = D[i, j, e]
                    if d < T:
                        out[d:, :, i] += W[i, j, e] * M[i, j] * inp[: T - d, :, j]
        return out

    for k in range(n_layers):
        I = synapse(f"hidden.{k}.synapse", s)
        g = lambda n: state[f"hidden.{k}.norm.{n}"].astype(np.float64)  # noqa: E731
        h = (I - g("running_mean")) / np.sqrt(g("running_var") + 1e-5) * g("weight") + g("bias")
        u = np.zeros(h.shape[1:])
        out = np.zeros_like(h)
        for t in range(T):
            u = (1 - 1 / tau) * u + h[t]
            out[t] = (u > threshold) if strict else (u >= threshold)
            u[out[t] > 0] = 0
        spikes.append(out)
        s = out
    I = synapse("readout", s)
    u = np.zeros(I.shape[1:])
    memb = np.zeros_like(I)
    for t in range(T):
        u = (1 - 1 / readout_tau) * u + I[t]
        memb[t] = u
    return memb, spikes


def predictions(memb):
    e = np.exp(memb - memb.max(-1, keepdims=True))
    return (e / e.sum(-1, keepdims=True)).sum(0).argmax(-1)


CFG = dict(n_layers=2, kernel_size=9, tau=2.0, readout_tau=3.0, threshold=1.0)


@pytest.fixture
def synthetic(tmp_path):
    rng = np.random.default_rng(0)
    state = synthetic_state(rng, input_size=12, hidden_size=10, n_layers=2, n_classes=4, kernel_size=9,
                            kernel_count=2, fanin=8)
    path = save_synthetic_checkpoint(tmp_path / "run", state, n_layers=2, kernel_size=9, tau_steps=2.0,
                                     readout_tau_steps=3.0, extra_steps=6)
    x = (rng.random((30, 16, 12)) < 0.15).astype(np.float64)
    x[rng.random(x.shape) < 0.02] = 2.0  # spike counts > 1 occur in binned data
    return state, path, x


def test_simulator_reproduces_dense_reference(synthetic):
    state, path, x = synthetic
    net = network_from_checkpoint(load_checkpoint(path.parent))
    ref_memb, ref_spikes = dense_reference(state, x, extra_steps=6, **CFG)
    res = simulate(net, x, convention="model")
    assert sum(int(s.sum()) for s in ref_spikes) > 50, "the test network should spike"
    for a, b in zip(res.spikes, ref_spikes):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(res.readout, ref_memb, atol=1e-9)
    np.testing.assert_array_equal(res.predictions, predictions(ref_memb))


def test_hardware_convention_matches_reference_with_one_step_per_hop(synthetic):
    state, path, x = synthetic
    net = network_from_checkpoint(load_checkpoint(path))
    from neuromorphic_export import Convention
    res = simulate(net, x, convention=Convention(1, ">", "float64"))
    ref_memb, ref_spikes = dense_reference(state, x, extra_steps=6, hop=1, strict=True, **CFG)
    # the reference pads hop * (L + 1) = 3 steps, as the simulator does for 3 hops
    for a, b in zip(res.spikes, ref_spikes):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(res.readout, ref_memb, atol=1e-9)


def test_event_chunking_gives_the_same_currents(synthetic, monkeypatch):
    _, path, x = synthetic
    net = network_from_checkpoint(load_checkpoint(path))
    full = simulate(net, x, convention="model")
    import importlib
    sim = importlib.import_module("neuromorphic_export.simulate")
    monkeypatch.setattr(sim, "EVENTS_PER_CHUNK", 7)
    small = simulate(net, x, convention="model", batch_size=5)
    np.testing.assert_allclose(small.readout, full.readout, atol=1e-12)


def test_rows_are_merged_masked_rounded_and_nonzero(tmp_path):
    state = synthetic_state(np.random.default_rng(1), input_size=3, hidden_size=2, n_layers=1, n_classes=2,
                            kernel_size=5, kernel_count=3)
    state["hidden.0.synapse.delay"][0, 0] = [1.4, 0.6, 2.5]  # first two round to 1: merged
    state["hidden.0.synapse.weight"][0, 0] = [0.5, 0.25, 1.0]
    state["hidden.0.synapse.mask"][1, 2] = 0  # a masked connection disappears
    path = save_synthetic_checkpoint(tmp_path / "r", state, n_layers=1, kernel_size=5)
    layer = network_from_checkpoint(load_checkpoint(path)).layers[0]
    sel = (layer.pre == 0) & (layer.post == 0)
    assert sorted(layer.delay[sel].tolist()) == [1, 2]  # 2.5 -> 2 (half to even)
    bn = {n: state[f"hidden.0.norm.{n}"].astype(np.float64) for n in ("weight", "running_var")}
    scale = bn["weight"][0] / np.sqrt(bn["running_var"][0] + 1e-5)
    assert layer.weight[sel & (layer.delay == 1)][0] == pytest.approx(0.75 * scale)
    assert not ((layer.pre == 2) & (layer.post == 1)).any()
    assert (layer.weight != 0).all()


def test_round_delays_is_half_to_even_and_clamped():
    d = np.array([-1.0, 0.5, 1.5, 2.5, 3.49, 9.0])
    assert round_delays(d, 5).tolist() == [0, 0, 2, 2, 3, 4]


def test_network_h5_round_trip_and_layout(synthetic, tmp_path):
    _, path, _ = synthetic
    net = network_from_checkpoint(load_checkpoint(path))
    f = write_network(net, tmp_path / "out" / "network.h5")
    with h5py.File(f) as h:
        for key in ("format_version", "dt_ms", "input_size", "n_layers", "extra_steps", "delay_convention"):
            assert key in h.attrs
        assert h.attrs["n_layers"] == 3 and h.attrs["extra_steps"] == 6 and h.attrs["dt_ms"] == 10.0
        syn = h["layer/0/synapses"]
        assert syn["pre"].dtype == np.int32 and syn["delay"].dtype == np.int32
        assert syn["weight"].dtype == np.float64
        assert np.isinf(h["layer/2/neurons/threshold"][()]).all()
    back = read_network(f)
    for a, b in zip(net.layers, back.layers):
        for name in ("pre", "post", "weight", "delay", "decay", "threshold", "bias"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert back.attrs["target"] == "generic" and back.extra_steps == 6


def test_read_network_errors(tmp_path):
    with pytest.raises(ExportError, match="does not exist"):
        read_network(tmp_path / "nothing.h5")
    (tmp_path / "bad.h5").write_bytes(b"not hdf5")
    with pytest.raises(ExportError, match="not a readable HDF5"):
        read_network(tmp_path / "bad.h5")


def test_simulate_shape_error_names_expected_shape(synthetic):
    _, path, _ = synthetic
    net = network_from_checkpoint(load_checkpoint(path))
    with pytest.raises(ValueError, match=r"expected input \(T, B, 12\), got \(5, 12\)"):
        simulate(net, np.zeros((5, 12)))


def test_checkpoint_errors_are_clear(tmp_path):
    import torch

    with pytest.raises(ExportError, match="no checkpoint .*best.pt"):
        load_checkpoint(tmp_path)
    state = synthetic_state(np.random.default_rng(2), n_layers=1)
    good = save_synthetic_checkpoint(tmp_path / "a", state, n_layers=1, kernel_size=9)
    truncated = tmp_path / "t.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(ExportError, match="not a readable checkpoint"):
        load_checkpoint(truncated)
    blob = torch.load(good, weights_only=True)
    blob["format_version"] = 7
    torch.save(blob, tmp_path / "v7.pt")
    with pytest.raises(ExportError, match="format_version 7 is not supported"):
        load_checkpoint(tmp_path / "v7.pt")
    del state["hidden.0.norm.running_var"]
    path = save_synthetic_checkpoint(tmp_path / "b", state, n_layers=1, kernel_size=9)
    with pytest.raises(ExportError, match="no 'hidden.0.norm.running_var'"):
        load_checkpoint(path)
    path = save_synthetic_checkpoint(tmp_path / "c", synthetic_state(np.random.default_rng(2), n_layers=1),
                                     n_layers=1, kernel_size=9, variant="dense-conv")
    with pytest.raises(ExportError, match="dense-conv"):
        load_checkpoint(path)


def test_dense_path_for_real_valued_input_equals_the_event_path(synthetic, monkeypatch):
    import importlib

    sim = importlib.import_module("neuromorphic_export.simulate")
    state, path, _ = synthetic
    net = network_from_checkpoint(load_checkpoint(path))
    x = np.random.default_rng(4).normal(0.3, 1.0, (20, 6, 12))  # graded input, every entry non-zero
    dense = simulate(net, x, convention="model")
    monkeypatch.setattr(sim, "DENSE_FRACTION", 1.1)  # force the event path
    events = simulate(net, x, convention="model")
    np.testing.assert_allclose(dense.readout, events.readout, atol=1e-9)
    ref_memb, ref_spikes = dense_reference(state, x, extra_steps=6, **CFG)
    np.testing.assert_allclose(dense.readout, ref_memb, atol=1e-9)
    for a, b, c in zip(dense.spikes, events.spikes, ref_spikes):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
