"""Target limits, quantisation, clipping reports, and the Loihi integer arithmetic."""

import numpy as np
import pytest

from neuromorphic_export import (TARGETS, ExportError, load_checkpoint, network_from_checkpoint, prepare,
                                 simulate)
from _support import save_synthetic_checkpoint, synthetic_state
from neuromorphic_export.targets import Target, quantise_layer


def _net(tmp_path, kernel_size=9, max_delay=None, kernel_count=1, seed=0, **kw):
    state = synthetic_state(np.random.default_rng(seed), kernel_size=kernel_size, kernel_count=kernel_count,
                            max_delay=max_delay, **kw)
    path = save_synthetic_checkpoint(tmp_path / f"run{seed}", state, n_layers=2, kernel_size=kernel_size,
                                     extra_steps=4)
    return network_from_checkpoint(load_checkpoint(path))


def test_every_target_prepares_a_small_network(tmp_path):
    net = _net(tmp_path)
    for name, t in TARGETS.items():
        chip, rep = prepare(net, name)
        assert chip.attrs["target"] == name and not rep.changes
        assert chip.attrs["hop_latency_steps"] == t.hop_latency_steps
        if t.weight_bits:
            for layer in chip.layers:
                assert layer.weight_scale is not None
                np.testing.assert_array_equal(layer.weight, np.rint(layer.weight))


def test_loihi_weights_are_even_8_bit_and_spinnaker_scale_is_a_power_of_two(tmp_path):
    net = _net(tmp_path)
    loihi, _ = prepare(net, "loihi1")
    for layer in loihi.layers:
        assert layer.weight.min() >= -256 and layer.weight.max() <= 254
        assert (layer.weight % 2 == 0).all()
    spin, _ = prepare(net, "spinnaker1")
    for layer in spin.layers:
        assert np.log2(layer.weight_scale) == int(np.log2(layer.weight_scale))
        assert np.abs(layer.weight).max() <= 65535
    s2, _ = prepare(net, "spinnaker2")
    assert all(np.abs(l.weight).max() <= 127 for l in s2.layers)


def test_quantisation_error_is_within_half_a_step(tmp_path):
    layer = _net(tmp_path).layers[0]
    q, dropped = quantise_layer(layer, 8, "signed", integer_bias=False)
    kept = np.abs(layer.weight * q.weight_scale) >= 0.5
    assert dropped == int((~kept).sum())
    np.testing.assert_allclose(q.real_weight, layer.weight[kept], atol=0.5 / q.weight_scale + 1e-15)


def test_delay_limit_violation_names_layer_count_and_limit(tmp_path):
    net = _net(tmp_path, kernel_size=100, max_delay=99)
    with pytest.raises(ExportError) as e:
        prepare(net, "loihi1")
    msg = str(e.value)
    n = int(((net.layers[0].delay + 1) > 63).sum())
    assert f"layer 0: {n} synapses" in msg and "D <= 63" in msg and "--clip" in msg
    chip, rep = prepare(net, "loihi1", clip=True)
    assert all(l.delay.max() + 1 <= 63 for l in chip.layers)
    assert any(f"layer 0: {n} synapse delays clipped to D = 63" in c for c in rep.changes)
    chip2, rep2 = prepare(net, "spinnaker1")  # 288 steps hold them
    assert not rep2.changes


def test_one_delay_per_pair_fanin_and_per_axon_checks(tmp_path):
    net = _net(tmp_path, kernel_count=3)
    with pytest.raises(ExportError, match="pairs with several delays"):
        prepare(net, "loihi2")
    chip, rep = prepare(net, "loihi2", clip=True)
    for layer in chip.layers:
        keys = layer.post.astype(int) * layer.n_in + layer.pre
        assert len(np.unique(keys)) == len(keys)
    narrow = Target("narrow", "test chip", max_fanin=3, delay_granularity="per-axon")
    with pytest.raises(ExportError, match=r"fan-in <= 3") as e:
        prepare(net, narrow)
    assert "one delay per axon" in str(e.value)
    chip, rep = prepare(net, narrow, clip=True)
    for layer in chip.layers:
        assert np.bincount(layer.post, minlength=layer.n_out).max() <= 3
        for j in np.unique(layer.pre):
            assert len(np.unique(layer.delay[layer.pre == j])) == 1


def test_weight_bits_option(tmp_path):
    net = _net(tmp_path)
    chip, _ = prepare(net, "generic", weight_bits=4)
    assert all(np.abs(l.weight).max() <= 7 for l in chip.layers)
    with pytest.raises(ExportError, match="--weight-bits 12 is more than target loihi1 can hold: choose 2 to 8"):
        prepare(net, "loihi1", weight_bits=12)


def test_unknown_target():
    with pytest.raises(ExportError, match="unknown target 'truenorth'; choose one of generic"):
        prepare(None, "truenorth")


def loihi_dense_reference(netx_path, x, extra_steps):
    """Lava's bit-accurate CUBA LIF (iDecay 4096) and Dense with per-synapse delay, written from the
    netx file alone: a spike at t reaches the next layer's input at t + delay + 1."""
    import h5py

    with h5py.File(netx_path) as f:
        layers = []
        k = 1
        while f"layer/{k}" in f:
            g = f[f"layer/{k}"]
            layers.append({n: g[n][()] for n in ("weight", "delay", "bias")} |
                          {n: int(g[f"neuron/{n}"][()]) for n in ("vDecay", "vThMant")} |
                          {"readout": g.attrs["kind"] == "readout"})
            k += 1
    T = x.shape[0] + extra_steps + len(layers)
    s = np.zeros((T,) + x.shape[1:], dtype=np.int64)
    s[: x.shape[0]] = x
    outs = []
    for L in layers:
        W, D = L["weight"].astype(np.int64), L["delay"].astype(np.int64) + 1
        a = np.zeros((T, s.shape[1], W.shape[0]), dtype=np.int64)
        for i in range(W.shape[0]):
            for j in range(W.shape[1]):
                if W[i, j] and D[i, j] < T:
                    a[D[i, j]:, :, i] += W[i, j] * s[: T - D[i, j], :, j]
        v = np.zeros(a.shape[1:], dtype=np.int64)
        out = np.zeros_like(a)
        for t in range(T):
            dv = v * (4096 - L["vDecay"])
            v = np.sign(dv) * (np.abs(dv) >> 12) + (a[t] << 6) + (L["bias"] << 6)
            v = np.clip(v, -(2 ** 23) + 1, 2 ** 23 - 1)
            out[t] = v if L["readout"] else (v > (L["vThMant"] << 6))
            if not L["readout"]:
                v[out[t] > 0] = 0
        outs.append(out)
        s = out
    return outs


@pytest.mark.parametrize("target", ["loihi1", "loihi2"])
def test_loihi_integer_mode_matches_the_netx_file_bit_for_bit(tmp_path, target):
    from neuromorphic_export import read_netx, write_netx

    net = _net(tmp_path, weight_gain=3.0)
    chip, _ = prepare(net, target)
    path = write_netx(chip, tmp_path / "netx.h5")
    rng = np.random.default_rng(3)
    x = (rng.random((25, 8, net.input_size)) < 0.2).astype(np.int64)
    res = simulate(chip, x)  # the file's conventions: hop 1, '>', loihi fixed point
    ref = loihi_dense_reference(path, x, chip.extra_steps)
    assert sum(int(s.sum()) for s in ref[:-1]) > 20
    for a, b in zip(res.spikes, ref[:-1]):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(res.readout * chip.layers[-1].weight_scale * 64, ref[-1], atol=1e-6)
    back = simulate(read_netx(path), x)
    np.testing.assert_array_equal(back.readout, res.readout)
