"""Per-layer scales and bias exponents that fit a chip's number formats (hand-made layers)."""

import h5py
import numpy as np
import pytest

from neuromorphic_export import ExportError, prepare, simulate
from neuromorphic_export.netx import write_netx
from neuromorphic_export.network import Layer, Network


def _net(w_max: float, bias: np.ndarray, threshold: float = 1.0) -> Network:
    """One hidden layer of 3 neurons on 4 inputs (largest |weight| w_max, given biases) and a readout."""
    rng = np.random.default_rng(0)
    pre, post = np.meshgrid(np.arange(4), np.arange(3))
    w = rng.uniform(-w_max, w_max, 12)
    w[0] = w_max
    hidden = Layer(4, 3, pre.ravel(), post.ravel(), w, rng.integers(0, 5, 12), decay=0.5, threshold=threshold,
                   bias=bias)
    pre, post = np.meshgrid(np.arange(3), np.arange(2))
    readout = Layer(3, 2, pre.ravel(), post.ravel(), rng.uniform(-1, 1, 6), np.zeros(6, int), decay=0.5,
                    threshold=np.inf, bias=0.0, kind="readout")
    return Network([hidden, readout], dt_ms=1.0, input_size=4, extra_steps=2)


def test_a_bias_that_needs_the_exponent_keeps_full_weight_resolution():
    # weights up to 0.01 -> scale 254 / 0.01 = 25,400; a bias of 1.0 is 25,400 units: beyond the 13-bit
    # mantissa (4,095) at exponent 0; 25,400 / 2^3 = 3,175 fits, 2^2 does not (6,350).
    net = _net(0.01, np.array([1.0, -0.3, 0.05]))
    chip, rep = prepare(net, "loihi1")  # no --clip: nothing may be refused
    assert not rep.violations and not rep.changes
    q = rep.quantisation[0]
    assert q["scale"] == pytest.approx(25_400.0) and q["weight_range_used"] == 1.0
    assert q["bias_exponent"] == 3
    b = np.rint(chip.layers[0].bias * chip.layers[0].weight_scale)
    assert (b % 8 == 0).all() and np.abs(b / 8).max() <= 4095
    np.testing.assert_allclose(chip.layers[0].bias, net.layers[0].bias, atol=4 / 25_400 + 1e-12)
    assert q["bias_max_error"] <= 4 / 25_400 + 1e-12
    assert chip.attrs["bias_exponents"] == "3,0"
    assert np.abs(chip.layers[0].weight).max() == 254  # the largest weight still uses the full range


def test_weights_and_biases_competing_for_range_lower_the_scale_and_say_so():
    # weights up to 1e-3 want scale 254,000; a bias of 100 then needs 25.4e6 units, beyond Loihi 1's
    # largest bias 4,095 << 7 = 524,160: the scale drops to 5,241.6 and the weights use 2 % of their range.
    net = _net(1e-3, np.array([100.0, -1.0, 0.0]))
    chip, rep = prepare(net, "loihi1")
    assert not rep.violations
    q = rep.quantisation[0]
    assert q["scale"] == pytest.approx(4095 * 128 / 100.0)
    assert q["bias_exponent"] == 7
    assert q["weight_range_used"] == pytest.approx(4095 * 128 / 100.0 / 254_000)
    assert "biases up to 100" in q["why"] and any("weights use" in n for n in rep.notes)
    assert np.abs(chip.layers[0].weight).max() == 2 * np.rint(1e-3 * q["scale"] / 2)  # 6
    # Loihi 2: 24-bit bias, no exponent: 100 * s <= 2^23 - 1
    chip2, rep2 = prepare(net, "loihi2")
    assert rep2.quantisation[0]["scale"] == pytest.approx((2 ** 23 - 1) / 100.0)
    # the bias that decides is exact; simulate in Loihi arithmetic runs without overflowing the integer bias
    x = np.zeros((5, 1, 4))
    simulate(chip, x)


def test_threshold_mantissa_bounds_the_scale():
    net = _net(1e-4, np.zeros(3), threshold=1.0)  # 254 / 1e-4 = 2.54e6 > 2^17: vThMant would overflow
    chip, rep = prepare(net, "loihi1")
    assert not rep.violations
    assert rep.quantisation[0]["scale"] == pytest.approx(2 ** 17)
    assert rep.quantisation[0]["threshold_error"] == pytest.approx(0.0, abs=1e-12)


def test_netx_writes_the_bias_mantissa_and_exponent(tmp_path):
    net = _net(0.01, np.array([1.0, -0.3, 0.05]))
    chip, _ = prepare(net, "loihi1")
    write_netx(chip, tmp_path / "netx.h5")
    with h5py.File(tmp_path / "netx.h5") as f:
        g = f["layer/1"]
        assert g.attrs["biasExp"] == 3
        np.testing.assert_array_equal(g["biasMant"][()] * 8, g["bias"][()])
        assert np.abs(g["biasMant"][()]).max() <= 4095


def test_what_cannot_fit_is_still_refused():
    # the readout has no bias; a threshold below one integer step with huge weights cannot fit vThMant >= 0
    net = _net(1e4, np.zeros(3), threshold=1e-3)
    with pytest.raises(ExportError, match="threshold mantissa"):
        prepare(net, "loihi1")


def test_export_says_which_delays_each_file_carries(tmp_path):
    from neuromorphic_export import export_run
    from _support import save_synthetic_checkpoint, synthetic_state

    state = synthetic_state(np.random.default_rng(0), kernel_size=9)
    run = save_synthetic_checkpoint(tmp_path / "run", state, n_layers=2, kernel_size=9, extra_steps=4)
    s2 = export_run(run, "spinnaker2", tmp_path / "s2")
    assert s2["delays"]["carried_to_chip"] is False
    assert s2["delays"]["per_file"]["network.nir"].startswith("NOT carried")
    assert sum(s2["delays"]["delayed_synapses"]) > 0
    l1 = export_run(run, "loihi1", tmp_path / "l1")
    assert l1["delays"]["carried_to_chip"] is True and set(l1["delays"]["per_file"]) == {"network.h5", "netx.h5"}
    sp = export_run(run, "spinnaker1", tmp_path / "sp")
    assert set(sp["delays"]["per_file"]) == {"network.h5", "pynn/"}
