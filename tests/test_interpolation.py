"""The interpolation kernels (gauss, triangle, bilinear; scheduled or learned widths) against the
issue's formulas written out as numpy loops, a direct delay loop, finite differences, and every
backend against the plain formulation; old checkpoints load as gauss."""

import json
import math

import numpy as np
import pytest
import torch

from snn_delays import DelaySynapse, load_config, load_model
from snn_delays.backends import use_compiled
from snn_delays.backends.dense import causal_conv_cm
from snn_delays.backends.interpolation import (interp_tap_values, interp_tap_values_reference,
                                               interpolated_kernel)
from snn_delays.checkpoint import load_checkpoint, save_checkpoint
from snn_delays.cli import main as cli_main
from snn_delays.config import ConfigError
from snn_delays.model import DelaySNN, count_trainable
from snn_delays.synapse import random_fanin_mask
from snn_delays.train import train
from _support import tiny_args

EPS = 1e-7
S0 = {"gauss": 0.27, "triangle": 1.0}
CASES = [("gauss", False), ("triangle", False), ("bilinear", False), ("gauss", True), ("triangle", True)]


def formula(w, d, s, td, interpolation):
    """The issue's kernels with numpy loops: tap n, c = Td - 1 - d, s per element (out, in, m)."""
    out_f, in_f, m = w.shape
    k = np.zeros((out_f, in_f, td))
    for i in range(out_f):
        for j in range(in_f):
            for e in range(m):
                c, se = td - 1 - d[i, j, e], s[i, j, e]
                if interpolation == "gauss":
                    g = np.array([math.exp(-(n - c) ** 2 / (2 * se ** 2)) for n in range(td)])
                    g = g / (EPS + g.sum())
                elif interpolation == "triangle":
                    g = np.array([max(0.0, se - abs(n - c)) for n in range(td)])
                    g = g / (EPS + g.sum())
                else:
                    g = np.array([max(0.0, 1 - abs(n - c)) for n in range(td)])
                k[i, j] += w[i, j, e] * g
    return k


def make_synapse(interpolation, learn, td=9, m=2, sigma=2.3, out_f=5, in_f=6, fanin=0, seed=0):
    gen = torch.Generator().manual_seed(seed)
    mask = random_fanin_mask(out_f, in_f, fanin, gen) if fanin else None
    syn = DelaySynapse(in_f, out_f, kernel_size=td, kernel_count=m, sigma=sigma, interpolation=interpolation,
                       learn_sigma=learn, mask=mask, generator=gen).double()
    if learn:  # widths differ per element; negative sigma_delta too (s = s0 + |sigma_delta|)
        with torch.no_grad():
            syn.sigma_delta.copy_((torch.rand(syn.delay.shape, generator=gen, dtype=torch.float64) - 0.3) * 3)
    return syn


def widths(syn):
    if syn.learn_sigma:
        return (S0[syn.interpolation] + syn.sigma_delta.detach().abs()).numpy()
    return np.full(syn.delay.shape, float(syn.sigma))


# positions: both ends of the range, integers, half-integers, and in between
POSITIONS = [0.0, 0.5, 0.2, 1.0, 3.5, 4.0, 4.73, 6.5, 7.0, 7.6, 7.5, 8.0]


@pytest.mark.parametrize("interpolation,learn", CASES)
@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.3, 6.0])
def test_training_kernel_matches_formula(interpolation, learn, sigma):
    syn = make_synapse(interpolation, learn, sigma=sigma)
    pos = torch.tensor(POSITIONS, dtype=torch.float64)
    with torch.no_grad():
        syn.delay.copy_(pos[torch.randint(len(POSITIONS), syn.delay.shape, generator=torch.Generator().manual_seed(3))])
    for compiled in (True, False):
        with use_compiled(compiled):
            got = syn.train().kernel().detach().numpy()
        want = formula(syn.masked_weight().detach().numpy(), syn.delay.detach().numpy(), widths(syn), 9, interpolation)
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
    # evaluation is unchanged: one tap at the rounded delay with the full weight
    k = syn.eval().kernel().detach().numpy()
    d = syn.delay.detach().numpy()
    want = np.zeros_like(k)
    w = syn.masked_weight().detach().numpy()
    for i, j, e in np.ndindex(*d.shape):
        want[i, j, 8 - int(np.round(d[i, j, e]))] += w[i, j, e]
    np.testing.assert_allclose(k, want, atol=1e-15)


def test_bilinear_is_two_taps_with_the_fractions():
    syn = make_synapse("bilinear", False, m=1)
    with torch.no_grad():
        syn.delay.fill_(3.25)
    k = syn.train().kernel().detach()
    w = syn.masked_weight().detach()[..., 0]
    # delay 3 (tap 5) gets 0.75 w, delay 4 (tap 4) 0.25 w, nothing else
    torch.testing.assert_close(k[..., 5], 0.75 * w)
    torch.testing.assert_close(k[..., 4], 0.25 * w)
    assert float(k.abs().sum()) == pytest.approx(float(w.abs().sum()))


def direct_loop(x, k):
    """y[t, i, b] = sum_j sum_n k[i, j, n] x[t - (Td - 1 - n), j, b]; x (T, in, B)."""
    t_len, in_f, batch = x.shape
    out_f, _, td = k.shape
    y = np.zeros((t_len, out_f, batch))
    for t in range(t_len):
        for i in range(out_f):
            for j in range(in_f):
                for n in range(td):
                    s = t - (td - 1 - n)
                    if s >= 0:
                        y[t, i] += k[i, j, n] * x[s, j]
    return y


@pytest.mark.parametrize("interpolation,learn", CASES)
@pytest.mark.parametrize("backend", ["dense", "fft", "sparse", "event"])
def test_training_forward_equals_direct_loop(interpolation, learn, backend):
    syn = make_synapse(interpolation, learn, fanin=4).train()
    syn.backend = backend
    x = (torch.rand(14, 6, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64) < 0.3).double()
    k = formula(syn.masked_weight().detach().numpy(), syn.delay.detach().numpy(), widths(syn), 9, interpolation)
    want = direct_loop(x.numpy(), k)
    for compiled in (True, False):
        with use_compiled(compiled):
            got = syn.forward_cm(x).detach().numpy()
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("interpolation,learn", CASES)
@pytest.mark.parametrize("backend,compiled", [("dense", False), ("sparse", True), ("sparse", False), ("fft", True)])
def test_gradients_match_finite_differences(interpolation, learn, backend, compiled):
    syn = make_synapse(interpolation, learn, m=2, sigma=1.7, fanin=4).train()
    syn.backend = backend
    with torch.no_grad():  # away from the kinks of triangle/bilinear (integers, d +- s)
        syn.delay.copy_(torch.rand(syn.delay.shape, generator=torch.Generator().manual_seed(8),
                                   dtype=torch.float64) * 7.6 + 0.2)
    x = (torch.rand(12, 6, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64) < 0.4).double()
    proj = torch.randn(12, 5, 2, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    loss = lambda: (syn.forward_cm(x) * proj).sum()
    params = [syn.weight, syn.delay] + ([syn.sigma_delta] if learn else [])
    with use_compiled(compiled):
        syn.zero_grad()
        loss().backward()
        rng = np.random.default_rng(0)
        for p in params:
            g = p.grad.clone()
            keep = syn.mask.bool()
            for flat in rng.choice(p.numel(), 6, replace=False):
                idx = np.unravel_index(flat, p.shape)
                if not keep[idx[0], idx[1]]:
                    assert float(g[idx]) == 0.0 or p is syn.sigma_delta
                    continue
                h = 1e-6
                with torch.no_grad():
                    p[idx] += h
                    up = float(loss())
                    p[idx] -= 2 * h
                    down = float(loss())
                    p[idx] += h
                assert float(g[idx]) == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-7), (p.shape, idx)


@pytest.mark.parametrize("interpolation,learn", CASES)
@pytest.mark.parametrize("fanin", [0, 3])
def test_every_backend_equals_plain_formulation(interpolation, learn, fanin):
    """Forward and all gradients of dense/fft/sparse, compiled and PyTorch twins, against the plain
    formulation (autograd through interpolated_kernel + dense causal convolution)."""
    syn = make_synapse(interpolation, learn, fanin=fanin, td=11, sigma=0.5 if not learn else 1.2).train()
    x = (torch.rand(30, 6, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) < 0.3).double()
    proj = torch.randn(30, 5, 4, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    params = [p for p in syn.parameters() if p.requires_grad]

    def run(fn):
        for p in params:
            p.grad = None
        y = fn()
        (y * proj).sum().backward()
        return [y.detach()] + [p.grad.clone() for p in params]

    ref = run(lambda: causal_conv_cm(x, interpolated_kernel(syn.masked_weight(), syn.delay, syn.width(), 11,
                                                            interpolation)))
    for backend in ("dense", "fft", "sparse"):
        syn.backend = backend
        for compiled in (True, False):
            with use_compiled(compiled):
                got = run(lambda: syn.forward_cm(x))
            for q, (a, b) in enumerate(zip(got, ref)):
                if backend == "sparse" and interpolation == "gauss":  # taps beyond 4 s dropped (backends.taps):
                    # <= 3.4e-4 of each element's weight; the delay gradients feel it a few times more
                    assert float((a - b).abs().max()) <= (1e-3 if q == 0 else 1e-2) * float(b.abs().max())
                else:  # the triangle's and bilinear's taps hold all their weight: exact
                    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("interpolation", ["gauss", "triangle", "bilinear"])
@pytest.mark.parametrize("per_element", [False, True])
def test_compiled_tap_values_equal_pytorch_twin(interpolation, per_element):
    gen = torch.Generator().manual_seed(11)
    td, n_el = 25, 300
    w = torch.randn(n_el, generator=gen, dtype=torch.float64, requires_grad=True)
    d = torch.tensor(POSITIONS * 25, dtype=torch.float64) * 3  # 0 .. 24, ends, integers, halves
    d = d.clamp(0, td - 1).requires_grad_(True)
    if per_element and interpolation != "bilinear":
        s = (0.3 + torch.rand(n_el, generator=gen, dtype=torch.float64) * 4).requires_grad_(True)
        r = math.ceil(4 * 4.3) if interpolation == "gauss" else 6
    else:
        s = 0.8
        r = 4 if interpolation == "gauss" else 2
    r += r % 2
    gv = torch.randn(n_el, 2 * r, generator=gen, dtype=torch.float64)
    out = []
    for compiled in (True, False):
        with use_compiled(compiled):
            vals, steps = interp_tap_values(w, d, s, td, interpolation, r)
        leaves = [w, d] + ([s] if isinstance(s, torch.Tensor) else [])
        grads = torch.autograd.grad((vals * gv).sum(), leaves)
        out.append((vals.detach(), steps, grads))
    ref_vals, ref_steps = interp_tap_values_reference(w, d, s, td, interpolation, r)
    torch.testing.assert_close(out[0][0], ref_vals.detach(), rtol=1e-12, atol=1e-13)
    assert torch.equal(out[0][1], ref_steps) and torch.equal(out[1][1], ref_steps)
    for a, b in zip(out[0][2], out[1][2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_learned_widths_start_at_sigma_and_ignore_the_schedule():
    for interpolation, s0 in S0.items():
        syn = DelaySynapse(4, 3, kernel_size=25, sigma=12.0, interpolation=interpolation, learn_sigma=True)
        torch.testing.assert_close(syn.width(), torch.full((3, 4, 1), 12.0))
        assert float(syn.sigma_delta.detach()[0, 0, 0]) == pytest.approx(12.0 - s0)
        syn.sigma = 0.5  # the schedule's assignment
        torch.testing.assert_close(syn.width(), torch.full((3, 4, 1), 12.0))
        assert syn.trainable_count() == 3 * 4 * 3
    with pytest.raises(ValueError, match="learn_sigma"):
        DelaySynapse(4, 3, kernel_size=5, interpolation="bilinear", learn_sigma=True)
    with pytest.raises(ValueError, match="interpolation"):
        DelaySynapse(4, 3, kernel_size=5, interpolation="cubic")


def test_config_keys_validated_and_parameters_counted():
    cfg = load_config("synthetic", ["model.interpolation=triangle", "model.learn_sigma=true",
                                    "model.hidden_size=8", "model.kernel_size=7"])
    model = DelaySNN(cfg.model, sigma_init=cfg.sigma_init())
    assert all(s.interpolation == "triangle" and s.learn_sigma for s in model.synapses())
    assert model.trainable_count() == count_trainable(cfg.model)
    with pytest.raises(ConfigError, match="learn_sigma"):
        load_config("synthetic", ["model.interpolation=bilinear", "model.learn_sigma=true"])
    with pytest.raises(ConfigError, match="interpolation"):
        load_config("synthetic", ["model.interpolation=cubic"])


TINY = tiny_args({"model.hidden_size": "10", "data.synthetic_valid": "20", "data.synthetic_test": "20",
    "model.dropout": "0.1"})


def test_old_checkpoint_loads_as_gauss(tmp_path):
    run = tmp_path / "run"
    assert cli_main(["train", "--dataset", "synthetic", "--out", str(run), "--epochs", "1", *TINY]) == 0
    ckpt = load_checkpoint(run, "best")
    for key in ("interpolation", "learn_sigma"):  # a checkpoint written before these keys existed
        ckpt["config"]["model"].pop(key)
    assert not any(k.endswith("sigma_delta") for k in ckpt["model"])
    save_checkpoint(tmp_path / "old.pt", ckpt)
    model = load_model(tmp_path / "old.pt")
    assert all(s.interpolation == "gauss" and not s.learn_sigma for s in model.synapses())


def test_triangle_learned_widths_train_resume_evaluate_export(tmp_path, capsys):
    run = tmp_path / "run"
    sets = [v for v in TINY if v != "--set"] + ["model.interpolation=triangle", "model.learn_sigma=true",
                                                "train.sigma_init=3", "train.epochs=3"]
    cfg = load_config("synthetic", sets)
    train(cfg, run, max_epochs=2)  # "killed" after two epochs
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {"width_mean_0", "width_min_0", "width_max_0"} <= set(rows[-1])
    assert rows[0]["width_min_0"] >= 1.0 and rows[0]["width_max_0"] != rows[0]["width_min_0"]  # learned, per element
    ckpt = load_checkpoint(run, "last")
    assert ckpt["config"]["model"]["interpolation"] == "triangle" and ckpt["config"]["model"]["learn_sigma"]
    assert "hidden.0.synapse.sigma_delta" in ckpt["model"]
    assert "width" in ckpt["kernel_history"][-1]["layers"][0]
    args = ["train", "--dataset", "synthetic", "--out", str(run)] + [a for v in sets for a in ("--set", v)]
    assert cli_main(args) == 0  # resumes the third epoch
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3
    assert cli_main(["evaluate", str(run), "--json"]) == 0
    assert cli_main(["export", str(run), "--target", "generic", "--out", str(tmp_path / "exp")]) == 0
    assert cli_main(["verify", str(run), str(tmp_path / "exp")]) == 0
    assert cli_main(["plot", str(run), "--out", str(tmp_path / "fig")]) == 0
    kern = json.loads((tmp_path / "fig" / "kernels.json").read_text())
    assert kern["interpolation"] == "triangle" and "width" in kern["epochs"][-1]
