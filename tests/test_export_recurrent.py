"""Recurrent layers through the exporter: checkpoint -> network.h5 (format_version 2) ->
simulator, targets, NIR, PyNN, Brian2 and verify.

The semantics checked (hidden layer k at step t, time-major, model convention)::

    I[t] = BN(FF(S_in))[t] + sum_j w_ij * S_j[t - d_ij],   d_ij = 1 + round_half_even(clip(stored, 0, Dr' - 1))

The hand-computed cases build networks directly; the random ones are checked against a dense
step-by-step numpy reference written from the raw state dict (no folding, no merging)."""

import json
import subprocess

import h5py
import numpy as np
import pytest

from neuromorphic_export import (Convention, ExportError, Layer, Network, Recurrent, export_run, load_checkpoint,
                                 network_from_checkpoint, nir_predict, prepare, read_netx, read_network, read_nir,
                                 simulate, write_network, write_nir)
from _support import add_recurrent_state, edited_h5, save_synthetic_checkpoint, synthetic_state

# ---------------------------------------------------------------------------------------------
# hand-built networks


def _net(n_in, ff, rec, *, n_hidden, decay=0.0, bias=0.0, threshold=1.0, extra_steps=0):
    """input -> one hidden layer (ff rows (pre, post, w, d), recurrent rows (pre, post, w, d)) ->
    a one-class readout reading hidden neuron 0."""
    ff = np.asarray(ff, dtype=np.float64).reshape(-1, 4)
    rec = np.asarray(rec, dtype=np.float64).reshape(-1, 4)
    recurrent = Recurrent(n_hidden, rec[:, 0], rec[:, 1], rec[:, 2], rec[:, 3])
    hidden = Layer(n_in, n_hidden, ff[:, 0], ff[:, 1], ff[:, 2], ff[:, 3], decay=decay, threshold=threshold,
                   bias=bias, recurrent=recurrent)
    readout = Layer(n_hidden, 1, [0], [0], [1.0], [0], decay=0.5, threshold=np.inf, bias=0.0, kind="readout")
    return Network([hidden, readout], dt_ms=1.0, input_size=n_in, extra_steps=extra_steps)


def _spike_steps(res, neuron):
    return list(np.nonzero(res.spikes[0][:, 0, neuron])[0])


def _one_spike(n_steps, at, channels=1):
    x = np.zeros((n_steps, 1, channels))
    x[at, 0, 0] = 1
    return x


def test_one_recurrent_synapse_with_delay_3_delivers_three_steps_later():
    # input -> neuron 0 (w 1, delay 0); neuron 0 -> neuron 1 recurrent (w 1, delay 3)
    net = _net(1, [(0, 0, 1.0, 0)], [(0, 1, 1.0, 3)], n_hidden=2)
    x = _one_spike(12, at=2)
    res = simulate(net, x, convention="model")
    assert _spike_steps(res, 0) == [2]
    assert _spike_steps(res, 1) == [5]  # 2 + 3
    # one step per hop: the layer runs one step later, the recurrent delay stays 3 (no second hop)
    res = simulate(net, x, convention=Convention(1, ">=", "float64"))
    assert _spike_steps(res, 0) == [3] and _spike_steps(res, 1) == [6]
    # weight 0.999: neuron 1 receives the spike but stays below threshold
    weak = _net(1, [(0, 0, 1.0, 0)], [(0, 1, 0.999, 3)], n_hidden=2)
    assert _spike_steps(simulate(weak, x, convention="model"), 1) == []


def test_recurrent_delay_in_loihi_fixed_point():
    net = _net(1, [(0, 0, 1.0, 0)], [(0, 1, 1.0, 3)], n_hidden=2)
    chip, _ = prepare(net, "loihi2")
    assert chip.layers[0].recurrent.weight.tolist() == [254.0]  # 8-bit mixed sign, one scale for both tables
    assert chip.layers[0].weight.tolist() == [254.0]
    res = simulate(chip, _one_spike(12, at=2))  # the file's convention: Loihi arithmetic, one step per hop
    assert _spike_steps(res, 0) == [3] and _spike_steps(res, 1) == [6]


def test_excitatory_self_connection_repeats_the_spike():
    # one neuron, input at step 0, self-connection w 1 delay 2, no leak memory (decay 0)
    net = _net(1, [(0, 0, 1.0, 0)], [(0, 0, 1.0, 2)], n_hidden=1)
    res = simulate(net, _one_spike(9, at=0), convention="model")
    assert _spike_steps(res, 0) == [0, 2, 4, 6, 8]


def test_inhibitory_self_connection_slows_a_biased_neuron():
    # u[t] = u[t-1] + 0.6 (+ rec): without recurrence u = 0.6, 1.2 (spike), 0.6, 1.2 (spike), ...
    free = _net(1, [], [], n_hidden=1, decay=1.0, bias=0.6)
    x = np.zeros((10, 1, 1))
    assert _spike_steps(simulate(free, x, convention="model"), 0) == [1, 3, 5, 7, 9]
    # a self-connection of -0.4 one step later: after a spike u = 0.6 - 0.4 = 0.2, 0.8, 1.4 (spike)
    net = _net(1, [], [(0, 0, -0.4, 1)], n_hidden=1, decay=1.0, bias=0.6)
    res = simulate(net, x, convention="model")
    assert _spike_steps(res, 0) == [1, 4, 7]
    # the readout integrates neuron 0's spikes: 0.5 decay, weight 1 (membrane checked by hand)
    expect = np.zeros(10)
    u = 0.0
    for t in range(10):
        u = 0.5 * u + (1.0 if t in (1, 4, 7) else 0.0)
        expect[t] = u
    np.testing.assert_allclose(res.readout[:, 0, 0], expect)


def test_recurrent_table_validation():
    with pytest.raises(ExportError, match=">= 1 step"):
        Recurrent(2, [0], [1], [1.0], [0])
    with pytest.raises(ExportError, match="out of range"):
        Recurrent(2, [0], [2], [1.0], [1])
    with pytest.raises(ExportError, match="recurrent table of 3 neurons on a layer of 2"):
        Layer(1, 2, [], [], [], [], decay=0, threshold=1, bias=0, recurrent=Recurrent(3, [], [], [], []))


# ---------------------------------------------------------------------------------------------
# checkpoints


def _checkpoint(tmp_path, *, seed=0, hidden=10, n_layers=2, kernel_size=9, rec_kernel_size=5, fanin=0,
                rec_gain=1.0, name="run", **model_extra):
    rng = np.random.default_rng(seed)
    state = synthetic_state(rng, input_size=12, hidden_size=hidden, n_layers=n_layers, n_classes=4,
                            kernel_size=kernel_size, kernel_count=2, fanin=8)
    add_recurrent_state(state, rng, n_layers, rec_kernel_size, fanin=fanin, weight_gain=rec_gain)
    extra = {"recurrent": True, "recurrent_kernel_size": rec_kernel_size, "recurrent_delays": "learned",
             "recurrent_fanin": fanin, **model_extra}
    path = save_synthetic_checkpoint(tmp_path / name, state, n_layers=n_layers, kernel_size=kernel_size,
                                     tau_steps=2.0, readout_tau_steps=3.0, extra_steps=6, **extra)
    return state, path


def test_stored_delay_minus_one_rounds_half_to_even(tmp_path):
    state, path = _checkpoint(tmp_path, hidden=4, n_layers=1, rec_kernel_size=4)
    stored = np.array([[0.5, 1.5, 2.5, -0.7],
                       [3.49, 7.0, 0.49, 1.51],
                       [0.0, 1.0, 2.0, 3.0],
                       [2.5000001, 0.5, 1.5, 2.5]])
    # d = 1 + round_half_even(clip(stored, 0, Dr - 1)) with Dr = 4, written out by hand
    expect = np.array([[1, 3, 3, 1],
                       [4, 4, 1, 3],
                       [1, 2, 3, 4],
                       [4, 1, 3, 3]])
    state["hidden.0.recurrent.delay"] = stored[:, :, None].astype(np.float64)
    w = np.arange(1, 17, dtype=np.float64).reshape(4, 4) / 10
    state["hidden.0.recurrent.weight"] = w[:, :, None]
    mask = np.ones((4, 4))
    mask[1, 2] = 0
    state["hidden.0.recurrent.mask"] = mask
    path = save_synthetic_checkpoint(tmp_path / "r", state, n_layers=1, kernel_size=9, recurrent=True,
                                     recurrent_kernel_size=4)
    net = network_from_checkpoint(load_checkpoint(path))
    r = net.layers[0].recurrent
    got = {(int(i), int(j)): (int(d), float(v)) for i, j, d, v in zip(r.post, r.pre, r.delay, r.weight)}
    want = {(i, j): (int(expect[i, j]), w[i, j]) for i in range(4) for j in range(4) if mask[i, j]}
    assert got == want  # masked (1, 2) absent; weights as stored: BatchNorm does not scale the recurrent current
    assert net.attrs["recurrent_kernel_size"] == 4
    # "one-step": every delay is 1 whatever was stored
    path = save_synthetic_checkpoint(tmp_path / "o", state, n_layers=1, kernel_size=9, recurrent=True,
                                     recurrent_kernel_size=4, recurrent_delays="one-step")
    assert set(network_from_checkpoint(load_checkpoint(path)).layers[0].recurrent.delay) == {1}
    # recurrent_kernel_size 0 means model.kernel_size (9): 7.0 -> 8 steps, no longer clipped to 4
    path = save_synthetic_checkpoint(tmp_path / "z", state, n_layers=1, kernel_size=9, recurrent=True,
                                     recurrent_kernel_size=0)
    r = network_from_checkpoint(load_checkpoint(path)).layers[0].recurrent
    assert int(r.delay[(r.post == 1) & (r.pre == 1)][0]) == 8


def dense_reference(state, x, *, n_layers, kernel_size, rec_kernel_size, tau, readout_tau, threshold,
                    extra_steps, hop=0, strict=False):
    """Step-by-step float64 evaluation from the raw state dict; x (T, B, C). (readout, [spikes])."""
    s = np.concatenate([x, np.zeros((extra_steps + hop * (n_layers + 1),) + x.shape[1:])])
    T, B = s.shape[:2]

    def feedforward(prefix, inp):
        W = state[f"{prefix}.weight"].astype(np.float64) * state[f"{prefix}.mask"].astype(np.float64)[:, :, None]
        D = np.round(np.clip(state[f"{prefix}.delay"].astype(np.float64), 0, kernel_size - 1)).astype(int) + hop
        out = np.zeros((T, B, W.shape[0]))
        for d in np.unique(D):
            Wd = np.where(D == d, W, 0.0).sum(2)
            if d < T:
                out[d:] += inp[: T - d] @ Wd.T
        return out

    spikes = []
    for k in range(n_layers):
        g = lambda n: state[f"hidden.{k}.norm.{n}"].astype(np.float64)  # noqa: E731
        h = (feedforward(f"hidden.{k}.synapse", s) - g("running_mean")) / np.sqrt(g("running_var") + 1e-5) \
            * g("weight") + g("bias")
        p = f"hidden.{k}.recurrent"
        Wr = state[f"{p}.weight"].astype(np.float64) * state[f"{p}.mask"].astype(np.float64)[:, :, None]
        Dr = 1 + np.round(np.clip(state[f"{p}.delay"].astype(np.float64), 0, rec_kernel_size - 1)).astype(int)
        u = np.zeros(h.shape[1:])
        out = np.zeros_like(h)
        for t in range(T):
            rec = np.zeros_like(u)
            for d in np.unique(Dr):
                if t - d >= 0:
                    rec += out[t - d] @ np.where(Dr == d, Wr, 0.0).sum(2).T
            u = (1 - 1 / tau) * u + (h[t] + rec)
            out[t] = (u > threshold) if strict else (u >= threshold)
            u[out[t] > 0] = 0
        spikes.append(out)
        s = out
    current = feedforward("readout", s)
    u = np.zeros(current.shape[1:])
    memb = np.zeros_like(current)
    for t in range(T):
        u = (1 - 1 / readout_tau) * u + current[t]
        memb[t] = u
    return memb, spikes


REF = dict(n_layers=2, kernel_size=9, rec_kernel_size=5, tau=2.0, readout_tau=3.0, threshold=1.0, extra_steps=6)


@pytest.mark.parametrize("fanin", [0, 4])
def test_simulator_reproduces_step_by_step_reference(tmp_path, fanin):
    state, path = _checkpoint(tmp_path, fanin=fanin)
    net = network_from_checkpoint(load_checkpoint(path))
    assert all(l.n_recurrent > 0 for l in net.layers[:-1]) and net.layers[-1].recurrent is None
    rng = np.random.default_rng(3)
    x = (rng.random((30, 16, 12)) < 0.15).astype(np.float64)
    for hop, rule in ((0, ">="), (1, ">")):
        memb, spikes = dense_reference(state, x, hop=hop, strict=rule == ">", **REF)
        res = simulate(net, x, convention=Convention(hop, rule, "float64"), batch_size=5)
        total = 0
        for k, (a, b) in enumerate(zip(res.spikes, spikes)):
            np.testing.assert_array_equal(a, b, err_msg=f"hop {hop}, hidden layer {k}")
            total += int(b.sum())
        assert total > 200, "the test network should spike"
        np.testing.assert_allclose(res.readout, memb, atol=1e-9)
    # the recurrence matters: without it the spikes differ
    plain = network_from_checkpoint(load_checkpoint(path))
    for l in plain.layers:
        l.recurrent = None
    assert not np.array_equal(simulate(plain, x, convention="model").spikes[0],
                              simulate(net, x, convention="model").spikes[0])


def test_checkpoint_errors_are_clear(tmp_path):
    state, path = _checkpoint(tmp_path, hidden=6, n_layers=1)

    def save(st, name, **cfg):
        return save_synthetic_checkpoint(tmp_path / name, st, n_layers=1, kernel_size=9, **cfg)

    bad = dict(state)
    bad["hidden.0.recurrent.weight"] = np.zeros((6, 5, 1), np.float32)
    bad["hidden.0.recurrent.delay"] = np.zeros((6, 5, 1), np.float32)
    bad["hidden.0.recurrent.mask"] = np.ones((6, 5), np.float32)
    with pytest.raises(ExportError, match=r"recurrent.weight has shape \(6, 5, 1\), expected \(6, 6, m\)"):
        load_checkpoint(save(bad, "a", recurrent=True))
    bad = dict(state)
    bad["hidden.0.recurrent.delay"] = np.zeros((6, 6, 2), np.float32)
    with pytest.raises(ExportError, match=r"recurrent.delay' has shape \(6, 6, 2\), expected \(6, 6, 1\)"):
        load_checkpoint(save(bad, "b", recurrent=True))
    missing = {k: v for k, v in state.items() if ".recurrent." not in k}
    with pytest.raises(ExportError, match="model.recurrent = true but the state dict has no hidden.0.recurrent"):
        load_checkpoint(save(missing, "c", recurrent=True))
    with pytest.raises(ExportError, match="model.recurrent = false"):
        load_checkpoint(save(state, "d"))  # recurrent weights, config without recurrent: not silently dropped
    with pytest.raises(ExportError, match="recurrent_delays = 'sometimes'"):
        load_checkpoint(save(state, "e", recurrent=True, recurrent_delays="sometimes"))
    with pytest.raises(ExportError, match="recurrent_kernel_size = -2"):
        load_checkpoint(save(state, "f", recurrent=True, recurrent_kernel_size=-2))
    # a feed-forward checkpoint without the recurrent keys in its config still loads (older checkpoints)
    assert load_checkpoint(save(missing, "g")).recurrent_kernel_size == 0


# ---------------------------------------------------------------------------------------------
# network.h5


def test_network_h5_round_trip_and_format_versions(tmp_path):
    _, path = _checkpoint(tmp_path)
    net = network_from_checkpoint(load_checkpoint(path))
    h5 = write_network(net, tmp_path / "rec.h5")
    with h5py.File(h5) as f:
        assert int(f.attrs["format_version"]) == 2
        assert set(f["layer/0/recurrent"]) == {"pre", "post", "weight", "delay"}
        assert f["layer/0/recurrent/delay"].dtype == np.int32 and f["layer/0/recurrent/delay"][()].min() >= 1
        assert "recurrent" not in f[f"layer/{net.n_layers - 1}"]  # the readout has none
    back = read_network(h5)
    for a, b in zip(net.layers, back.layers):
        assert (a.recurrent is None) == (b.recurrent is None)
        if a.recurrent is not None:
            for name in ("pre", "post", "weight", "delay"):
                np.testing.assert_array_equal(getattr(a.recurrent, name), getattr(b.recurrent, name))
    x = (np.random.default_rng(1).random((20, 4, 12)) < 0.2).astype(np.float64)
    np.testing.assert_array_equal(simulate(back, x).readout, simulate(net, x).readout)
    # without recurrent tables: format_version 1, as before; version-1 files are still read
    ff = net.copy()
    for l in ff.layers:
        l.recurrent = None
    h5ff = write_network(ff, tmp_path / "ff.h5")
    with h5py.File(h5ff) as f:
        assert int(f.attrs["format_version"]) == 1
        assert not any("recurrent" in f[f"layer/{k}"] for k in range(ff.n_layers))
    assert not read_network(h5ff).is_recurrent


def test_network_h5_refuses_inconsistent_recurrent_tables(tmp_path):
    _, path = _checkpoint(tmp_path)
    net = network_from_checkpoint(load_checkpoint(path))
    h5 = write_network(net, tmp_path / "rec.h5")

    def edited(name, edit):
        return edited_h5(h5, tmp_path / name, edit)

    with pytest.raises(ExportError, match="recurrent tables need format_version 2"):
        read_network(edited("v1.h5", lambda f: f.attrs.__setitem__("format_version", 1)))

    def zero_delay(f):
        d = f["layer/0/recurrent/delay"][()]
        d[0] = 0
        f["layer/0/recurrent/delay"][...] = d
    with pytest.raises(ExportError, match="layer 0.*delay 0 steps"):
        read_network(edited("d0.h5", zero_delay))

    def readout_recurrent(f):
        g = f[f"layer/{net.n_layers - 1}"].create_group("recurrent")
        for name, value in (("pre", [0]), ("post", [1]), ("weight", [0.5]), ("delay", [2])):
            g.create_dataset(name, data=np.asarray(value))
    with pytest.raises(ExportError, match="layer 2 is the readout and has a recurrent table"):
        read_network(edited("ro.h5", readout_recurrent))
    with pytest.raises(ExportError, match="missing"):
        read_network(edited("miss.h5", lambda f: f.__delitem__("layer/1/recurrent/weight")))


# ---------------------------------------------------------------------------------------------
# targets


def test_one_weight_scale_covers_both_tables(tmp_path):
    _, path = _checkpoint(tmp_path, rec_gain=20.0)  # recurrent weights larger than the feed-forward ones
    net = network_from_checkpoint(load_checkpoint(path))
    for k, l in enumerate(net.layers[:-1]):
        assert np.abs(l.recurrent_real_weight).max() > np.abs(l.real_weight).max()
    chip, rep = prepare(net, "spinnaker2")  # int8, signed: largest |w| of either table -> 127
    for k, l in enumerate(chip.layers[:-1]):
        assert np.abs(l.recurrent.weight).max() == 127 and np.abs(l.weight).max() < 127
        assert np.all(l.recurrent.weight == np.rint(l.recurrent.weight))
        # real = integer / scale, within half a step of the float weights (kept synapses)
        f = net.layers[k]
        keys = lambda r: {(int(a), int(b), int(c)): i for i, (a, b, c) in enumerate(zip(r.pre, r.post, r.delay))}
        fk, ck = keys(f.recurrent), keys(l.recurrent)
        assert set(ck) <= set(fk)
        for key, i in ck.items():
            assert abs(l.recurrent_real_weight[i] - f.recurrent_real_weight[fk[key]]) <= 0.5 / l.weight_scale + 1e-12
        q = rep.quantisation[k]
        assert q["recurrent_weight_max_error"] <= 0.5 / l.weight_scale + 1e-12
    # Loihi 2: 8-bit mixed sign (even values up to 254) for both tables
    chip, _ = prepare(net, "loihi2", clip=True)  # clip: the two feed-forward elements of a pair merged
    for l in chip.layers[:-1]:
        assert np.abs(l.recurrent.weight).max() == 254 and (l.recurrent.weight % 2 == 0).all()


def test_recurrent_delays_beyond_a_chip_are_refused_or_clipped(tmp_path):
    _, path = _checkpoint(tmp_path, rec_kernel_size=80, kernel_size=9)
    net = network_from_checkpoint(load_checkpoint(path))
    assert max(int(l.recurrent.delay.max()) for l in net.layers[:-1]) > 63
    with pytest.raises(ExportError) as e:
        prepare(net, "loihi2")
    msg = str(e.value)
    assert "recurrent synapses with effective delay up to" in msg and "D <= 63" in msg  # netx: values 0..62
    assert "model.recurrent_kernel_size" in msg
    chip, rep = prepare(net, "loihi2", clip=True)
    assert max(int(l.recurrent.delay.max()) for l in chip.layers[:-1]) == 63
    assert any("recurrent synapse delay" in c and "D = 63" in c for c in rep.changes)
    # SpiNNaker 1 allows 288 steps: carried as they are, D = d (no hop added to a recurrent delay)
    chip, _ = prepare(net, "spinnaker1")
    for a, b in zip(net.layers[:-1], chip.layers[:-1]):
        assert set(zip(b.recurrent.pre, b.recurrent.post, b.recurrent.delay)) <= \
            set(zip(a.recurrent.pre, a.recurrent.post, a.recurrent.delay))


def test_netx_writes_recurrent_layers_as_dense_rec_and_refuses_what_lava_would_run_wrongly(tmp_path):
    # (tests/test_export_lava.py runs these files in Lava against the simulator)
    _, path = _checkpoint(tmp_path)
    for target in ("loihi1", "loihi2"):
        out = tmp_path / f"out-{target}"
        rep = export_run(path, target, out, clip=True)  # clip: the two elements per pair merged
        assert rep["netx"]["recurrent_layers"] == [0, 1] and rep["delays"]["carried_to_chip"] is True
        with h5py.File(out / "netx.h5") as f:
            assert [f[f"layer/{k}/type"][()] for k in (1, 2, 3)] == [b"dense_rec", b"dense_rec", b"dense"]
            # padded: layer 0's neurons after the 12 inputs, layer 1's where layer 0 has none; width 22
            assert [int(f[f"layer/{k}/shape"][()][0]) for k in (0, 1, 2, 3)] == [22, 22, 22, 4]
            assert list(f["layer/1"].attrs["positions"]) == list(range(12, 22))
            assert list(f["layer/2"].attrs["positions"]) == list(range(10))
            w, wr, d = f["layer/1/weight"][()], f["layer/1/weight_rec"][()], f["layer/1/delay"][()]
            assert not w[:, 12:].any() and not wr[:, :12].any() and not w[:12].any() and not wr[:12].any()
        # read back (padding dropped): the network.h5 tables, recurrent ones included
        chip, back = read_network(out), read_netx(out / "netx.h5")
        x = (np.random.default_rng(1).random((30, 4, 12)) < 0.1) * 2.0
        a, b = simulate(chip, x), simulate(back, x)
        np.testing.assert_array_equal(a.readout, b.readout)
        assert all(np.array_equal(p, q) for p, q in zip(a.spikes, b.spikes))
    # 6-bit weights: lava-dl 0.6's RecurrentDense would drop the weight exponent netx gives them
    out = tmp_path / "out-6bit"
    with pytest.raises(ExportError, match="RecurrentDense.*weight exponent"):
        export_run(path, "loihi2", out, clip=True, weight_bits=6)
    assert not out.exists()


def test_generic_and_spinnaker1_exports_carry_the_tables(tmp_path):
    _, path = _checkpoint(tmp_path)
    net = network_from_checkpoint(load_checkpoint(path))
    rep = export_run(path, "generic", tmp_path / "gen")
    assert rep["recurrent_synapses"] == [l.n_recurrent for l in net.layers[:-1]]
    assert rep["max_recurrent_delay_steps"] == [int(l.recurrent.delay.max()) for l in net.layers[:-1]]
    assert set(rep["delays"]["per_file_recurrent"]) == {"network.h5", "network.nir", "pynn/"}
    saved = json.loads((tmp_path / "gen" / "export.json").read_text())
    assert saved["recurrent_synapses"] == rep["recurrent_synapses"]
    rep = export_run(path, "spinnaker1", tmp_path / "spin")
    assert rep["delays"]["carried_to_chip"] is True
    chip = read_network(tmp_path / "spin")
    folder = tmp_path / "spin" / "pynn"
    meta = json.loads((folder / "neurons.json").read_text())
    assert [l["recurrent"] for l in meta["layers"]] == [True, True, False]
    for k, layer in enumerate(chip.layers[:-1]):
        rows = np.concatenate([np.loadtxt(folder / f"layer{k}_recurrent_{kind}.csv", delimiter=",", skiprows=1,
                                          ndmin=2) for kind in ("excitatory", "inhibitory")])
        assert len(rows) == layer.n_recurrent
        w = layer.recurrent_real_weight
        want = sorted(zip(layer.recurrent.pre, layer.recurrent.post, np.abs(w), layer.recurrent.delay * chip.dt_ms))
        got = sorted(map(tuple, rows))
        np.testing.assert_allclose(np.array(got, dtype=float), np.array(want, dtype=float))
        assert rows[:, 3].min() >= chip.dt_ms  # sPyNNaker's minimum delay: the recurrent D = d >= 1 step
    rep = export_run(path, "spinnaker2", tmp_path / "s2")
    assert rep["delays"]["carried_to_chip"] is False  # NIR's Delay is ignored by the importer


def test_nir_holds_the_cycles_and_interprets_to_the_same_result(tmp_path):
    import nir

    _, path = _checkpoint(tmp_path)
    net = network_from_checkpoint(load_checkpoint(path))
    graph = nir.read(write_nir(net, tmp_path / "network.nir"))
    for k, layer in enumerate(net.layers[:-1]):
        lif = f"layer{k}.lif"
        rec = [b for a, b in graph.edges if a == lif and ".rec.delay" in b]
        assert sorted(int(n.rsplit("delay", 1)[1]) for n in rec) == sorted(np.unique(layer.recurrent.delay))
        for dn in rec:
            wn = dn.replace(".rec.delay", ".rec.w")
            assert (dn, wn) in graph.edges and (wn, lif) in graph.edges  # the cycle back to the same LIF
            d = int(dn.rsplit("delay", 1)[1])
            assert np.allclose(np.asarray(graph.nodes[dn].delay), d * net.dt_ms / 1000)
    x = (np.random.default_rng(2).random((25, 6, 12)) < 0.2).astype(np.float64)
    readout, pred = nir_predict(read_nir(tmp_path / "network.nir"), x)
    ref = simulate(net, x, convention="model")
    assert sum(int(s.sum()) for s in ref.spikes) > 100
    np.testing.assert_array_equal(pred, ref.predictions)
    np.testing.assert_allclose(readout, ref.readout, atol=1e-9)


def test_nir_cycle_without_delay_is_refused():
    import nir

    nodes = {"input": nir.Input(input_type={"input": np.array([1])}),
             "a": nir.Linear(weight=np.ones((1, 1))), "b": nir.Linear(weight=np.ones((1, 1))),
             "output": nir.Output(output_type={"output": np.array([1])})}
    graph = nir.NIRGraph(nodes=nodes, edges=[("input", "a"), ("a", "b"), ("b", "a"), ("b", "output")],
                         metadata={"dt": 0.001})
    with pytest.raises(ExportError, match="cycle without a Delay"):
        nir_predict(graph, np.zeros((3, 1, 1)))


# ---------------------------------------------------------------------------------------------
# Brian2 (its own venv: bash scripts/test-env-brian2.sh)


def _brian2():
    from test_export_brian2 import PYTHON, _brian2_available, _run_brian2

    if not _brian2_available():
        pytest.skip("no Brian2 environment: run `bash scripts/test-env-brian2.sh`")
    return PYTHON, _run_brian2


@pytest.mark.parametrize("target", ["generic", "spinnaker1"])
def test_brian2_gives_the_same_spikes_with_recurrence(tmp_path, target):
    _, run_brian2 = _brian2()
    _, path = _checkpoint(tmp_path, seed=4, hidden=8, rec_gain=1.5)
    net = network_from_checkpoint(load_checkpoint(path))
    if target != "generic":
        net, _ = prepare(net, target)  # quantised: real = integer / scale, recurrent included
    h5 = write_network(net, tmp_path / "network.h5")
    x = (np.random.default_rng(5).random((30, 12)) < 0.15).astype(np.uint8)
    got = run_brian2(tmp_path, h5, x)
    ours = simulate(net, x[:, None, :].astype(np.float64), convention=Convention(1, ">=", "float64"))
    plain = net.copy()
    for l in plain.layers:
        l.recurrent = None
    without = simulate(plain, x[:, None, :].astype(np.float64), convention=Convention(1, ">=", "float64"))
    assert not all(np.array_equal(a, b) for a, b in zip(ours.spikes, without.spikes)), "recurrence should matter"
    total = 0
    for k, s in enumerate(got["spikes"]):
        np.testing.assert_array_equal(np.asarray(s), ours.spikes[k][:, 0], err_msg=f"hidden layer {k}")
        total += int(np.asarray(s).sum())
    assert total > 20, "the test network should spike"
    np.testing.assert_allclose(np.asarray(got["readout"]), ours.readout[:, 0], atol=1e-9)


@pytest.mark.slow  # about 80 s on the shared machine: pytest -m slow
def test_pynn_script_with_recurrent_projections_runs_on_brian2(tmp_path):
    python, _ = _brian2()
    if subprocess.run([str(python), "-c", "import pyNN.brian2"], capture_output=True).returncode != 0:
        pytest.skip("pyNN is not installed in the Brian2 environment (bash scripts/test-env-brian2.sh)")
    _, path = _checkpoint(tmp_path, hidden=8)
    export_run(path, "spinnaker1", tmp_path / "out")
    np.save(tmp_path / "x.npy", (np.random.default_rng(0).random((30, 12)) < 0.2).astype(np.uint8))
    proc = subprocess.run([str(python), str(tmp_path / "out" / "pynn" / "run_pynn.py"), "--simulator", "brian2",
                           "--input", str(tmp_path / "x.npy")], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "predicted class" in proc.stdout


# ---------------------------------------------------------------------------------------------
# the PyTorch model (snn_delays) end to end


def _recurrent_model(seed=0):
    """test_export_model's spiking model with model.recurrent, its recurrent weights made strong
    enough to matter and its delays spread over 1..6 steps."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("snn_delays")
    from test_export_model import _spiking_model

    try:
        cfg, model = _spiking_model(seed, **{"model.recurrent": True, "model.recurrent_kernel_size": 6})
    except Exception as e:  # noqa: BLE001 - a training package without recurrent layers
        pytest.skip(f"snn_delays cannot build a recurrent model here: {e}")
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for blk in model.hidden:
            blk.recurrent.weight.mul_(4.0)
            blk.recurrent.delay.copy_(torch.rand(blk.recurrent.delay.shape, generator=g) * 6 - 0.5)
        model.clamp_()
    return cfg, model


def test_recurrent_model_is_reproduced_and_verified(tmp_path, capsys):
    cfg, model = _recurrent_model()
    import torch
    from snn_delays.checkpoint import save_checkpoint
    from snn_delays.cli import main as cli_main
    from snn_delays.config import config_to_dict
    from snn_delays.data import open_dataset

    run = tmp_path / "run"
    save_checkpoint(run / "best.pt", {"config": config_to_dict(cfg), "model": model.state_dict(), "epoch": 1,
                                      "sigma": 0.5, "metrics": []})
    assert cli_main(["export", str(run), "--target", "generic", "--out", str(tmp_path / "out")]) == 0
    net = read_network(tmp_path / "out")
    assert net.is_recurrent
    ds = open_dataset("synthetic", None, "test", **cfg.data.dataset_options())
    x = ds.x[:48].double().permute(1, 0, 2).contiguous()
    m = model.double().eval()
    with torch.no_grad():
        u, spikes = m(x, return_spikes=True)
        pred = m.predict(x).numpy()
    res = simulate(net, x.numpy(), convention="model")
    assert sum(int(s.sum()) for s in spikes) > 300, "the test model should spike"
    for k, (a, b) in enumerate(zip(res.spikes, spikes)):
        np.testing.assert_array_equal(a, b.numpy(), err_msg=f"hidden layer {k}")
    np.testing.assert_allclose(res.readout, u.numpy(), atol=1e-9)
    np.testing.assert_array_equal(res.predictions, pred)
    plain = net.copy()
    for l in plain.layers:
        l.recurrent = None
    assert not np.array_equal(simulate(plain, x.numpy(), convention="model").spikes[0], res.spikes[0])
    readout, nir_pred = nir_predict(read_nir(tmp_path / "out" / "network.nir"), x.numpy())
    np.testing.assert_array_equal(nir_pred, pred)
    capsys.readouterr()
    assert cli_main(["verify", str(run), str(tmp_path / "out"), "--dataset", "synthetic", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for r in out["results"][:2]:  # the float export and the export file, model convention
        assert r["agreement"] == 1.0 and sum(r["spike_mismatches"]) == 0, r
    assert {r["name"].split(" (")[0] for r in out["results"]} >= {"target loihi2", "target spinnaker1"}
