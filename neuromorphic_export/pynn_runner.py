"""Run an exported network (``DIR/pynn/``) in a PyNN simulator: the export's ``run_pynn.py``.

``write_pynn`` copies this file into the export folder as ``run_pynn.py``; there it needs only
PyNN (with a backend) and numpy, and imports nothing from this package::

    python run_pynn.py --simulator nest --input x.npy                 # x: (T, C) counts, one sample
    python run_pynn.py --simulator nest --input x.npy --save out.npz  # x: (T, C) or (T, B, C)
    python run_pynn.py --simulator spiNNaker --input x.npy

It prints the predicted class of each sample (argmax over classes of the sum over time of
softmax(readout v)). ``--save`` writes ``pred``, ``readout`` and ``layer0``, ``layer1``, ... (one per
hidden layer): for a (T, C) input ``pred`` is a 0-d int array, ``readout`` (T', n_classes) and
``layer<k>`` (T', H_k) uint8; for a (T, B, C) input ``pred`` is (B,), ``readout`` (T', B, n_classes)
and ``layer<k>`` (T', B, H_k). T' = T + extra_steps + n_layers: the runtime's own time axis, one
step of latency per hop, so ``layer<k>[t]`` is the hidden layer's spikes at the runtime's step t,
which is the model's step t - (k + 1), and step t of ``readout`` equals step t of
``neuromorphic_export.simulate(net, x, Convention(1, ">=", "float64"))``.

How the model's step is realised exactly (checked against NEST 3.10 through PyNN 0.13):

* Neuron: the model's Euler step ``u[t] = a * u[t-1] + input[t] + b`` (a = 1 - 1/tau_steps) and
  IF_curr_delta's exact update ``V <- exp(-dt/tau_m) V + (1 - exp(-dt/tau_m)) tau_m I/C + jumps``
  are equal when exp(-dt/tau_m) = a and (1 - a) tau_m i_offset / cm = b (mV, ms, nA, nF):
  :func:`if_curr_delta_parameters` chooses tau_m and i_offset so (neurons.json holds them).
  V_rest = V_reset = 0, no refractory time, spike when V >= V_thresh (NEST's rule and the
  SpiNNaker target's); the readout never fires (V_thresh 1e9) and its V is recorded.
* Weights: signed, in mV (IF_curr_delta's jump); the inhibitory lists hold |w| and are
  projected with -|w| on the "inhibitory" receptor, PyNN's sign rule for current synapses (NEST and
  PyNN's Brian2 backend add the weight as given; sPyNNaker takes the magnitude per receptor).
* Delays: the lists hold D * dt (D = d + 1: one step per hop; recurrent lists D = d >= 1).
* Time: a spike at step t of the input is a source spike at (t + ONSET_STEP) * dt and the model's
  step s is the simulator's step ending at (s + ONSET_STEP) * dt. The bias (i_offset) is switched on
  only for that step: PyNN's SpikeSourceArray on NEST relays spikes through parrot neurons (it
  subtracts min_delay, and NEST refuses a spike at time 0), so the first input spike cannot come
  before step 2, and the membrane must still be 0 at the step before the model's step 0.
* Counts: a bin holding c spikes is c source spikes, as c source populations ("levels": level m
  spikes where the count is >= m), each projected with the same lists; every backend accepts
  them (Brian2 refuses two spikes of one source in one step).
* NEST specifics: ``spike_precision="on_grid"`` (the default "off_grid" maps IF_curr_delta to
  iaf_psc_delta_ps), ``max_delay`` from the lists, and a ``variable_map`` so that ``v`` records
  (PyNN 0.13 gives pyNN.nest.IF_curr_delta none).
* A batch runs as B copies of the network side by side in one simulation (copy b holds neurons
  b * n ... (b + 1) * n - 1 of each population).
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
from pathlib import Path

import numpy as np

__all__ = ["if_curr_delta_parameters", "level_spike_times", "predict_from_readout", "run", "main",
           "ONSET_STEP", "CM_NF", "READOUT_V_THRESH"]

ONSET_STEP = 4  # the model's step 0 is the simulator's step ending at ONSET_STEP * dt
CM_NF = 1.0  # membrane capacitance (nF) that turns the per-step bias into a current
READOUT_V_THRESH = 1e9  # never reached: the readout integrates without firing
TAU_M_NO_LEAK_STEPS = 1e17  # decay 1 (no leak): tau_m = 1e17 * dt, exp(-dt/tau_m) rounds to 1
TAU_M_FULL_LEAK_STEPS = 1e-3  # decay 0 (tau_steps = 1): exp(-1000) is 0 in float64


def if_curr_delta_parameters(decay, bias, dt_ms: float, cm_nF: float = CM_NF):
    """IF_curr_delta parameters whose exact update equals the model's Euler step.

    decay: (n,) a = 1 - 1/tau_steps in [0, 1]; bias: (n,) b per step in model units (mV).
    Returns (tau_m_ms (n,), i_offset_nA (n,), exact (bool)) with exp(-dt/tau_m) the float nearest a
    that exp reaches (== a in every one of 9,000 random draws with tau_steps >= 3; where |ln a| is
    large one ulp of tau_m moves exp by several ulps: within 1 ulp for tau_steps 1.6-3, about
    1.5 |ln a| ulps below) and (1 - exp(-dt/tau_m)) tau_m i_offset / cm == b up to rounding.
    ``exact`` is False only where a = 1 (no leak) and b != 0: a constant current then needs
    tau_m -> inf, approximated by TAU_M_NO_LEAK_STEPS * dt.
    """
    decay = np.atleast_1d(np.asarray(decay, dtype=np.float64))
    bias = np.broadcast_to(np.asarray(bias, dtype=np.float64), decay.shape)
    tau = np.empty_like(decay)
    current = np.empty_like(decay)
    exact = True
    for i, (a, b) in enumerate(zip(decay.tolist(), bias.tolist())):
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"decay must lie in [0, 1]; got {a}")
        if a == 0.0:
            t = TAU_M_FULL_LEAK_STEPS * dt_ms
        elif a == 1.0:
            t = TAU_M_NO_LEAK_STEPS * dt_ms
            exact = exact and b == 0.0
        else:
            t = _closest_tau(a, dt_ms)
        tau[i] = t
        gain = (1.0 - math.exp(-dt_ms / t)) * t / cm_nF  # mV per nA over one step
        current[i] = b / gain if gain > 0 else 0.0
    return tau, current, exact


def _closest_tau(a: float, dt_ms: float) -> float:
    """tau_m (ms) whose exp(-dt/tau_m) is nearest a, 0 < a < 1: -dt / ln(a), then moved by ulps
    while that brings exp(-dt/tau_m) nearer (it rises with tau_m; where |ln a| > 1 one ulp of tau_m
    moves it by more than one ulp, so equality is not always reachable)."""
    t = -dt_ms / math.log(a)
    rising = math.exp(-dt_ms / t) < a  # step tau_m up (exp rises towards a) or down
    best = t
    for _ in range(64):
        e = math.exp(-dt_ms / t)
        if abs(e - a) < abs(math.exp(-dt_ms / best) - a):
            best = t
        if (e >= a) if rising else (e <= a):  # reached or stepped past a
            break
        t = math.nextafter(t, math.inf if rising else 0.0)
    return best


def level_spike_times(x: np.ndarray, dt_ms: float, onset_step: int = ONSET_STEP) -> list[list[list[float]]]:
    """Counts x (T, B, C) -> per level m = 1..max count, per source b * C + c, the spike times (ms)
    (t + onset_step) * dt of the steps t where x[t, b, c] >= m."""
    x = np.asarray(x)
    steps, batch, channels = x.shape
    levels = []
    for m in range(1, int(x.max(initial=0)) + 1):
        times: list[list[float]] = [[] for _ in range(batch * channels)]
        t, b, c = np.nonzero(x >= m)
        for tt, src in zip(((t + onset_step) * dt_ms).tolist(), (b * channels + c).tolist()):
            times[src].append(tt)
        levels.append(times)
    return levels


def predict_from_readout(readout: np.ndarray) -> np.ndarray:
    """(T, B, n_classes) -> (B,): argmax over classes of the sum over t of softmax(readout[t]).
    :func:`neuromorphic_export.chip.predict_from_readout` computes the same; this file is copied
    into exports and runs where only PyNN and numpy are, so it imports nothing from the package."""
    z = np.exp(readout - readout.max(axis=-1, keepdims=True))
    return (z / z.sum(-1, keepdims=True)).sum(0).argmax(-1)


def _read_rows(path: Path) -> np.ndarray:
    """(n, 4) rows pre, post, weight, delay_ms of one list (missing file: none)."""
    if not path.exists():
        return np.zeros((0, 4))
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2).reshape(-1, 4)


def _copies(rows: np.ndarray, sign: float, n_pre: int, n_post: int, batch: int) -> list[tuple]:
    """The rows of one list for B side-by-side copies (copy b: pre + b * n_pre, post + b * n_post)."""
    if not len(rows):
        return []
    b = np.repeat(np.arange(batch), len(rows))
    r = np.tile(rows, (batch, 1))
    pre = (r[:, 0].astype(np.int64) + b * n_pre).tolist()
    post = (r[:, 1].astype(np.int64) + b * n_post).tolist()
    return list(zip(pre, post, (sign * r[:, 2]).tolist(), r[:, 3].tolist()))


def _backend_steps(sim, name: str, dt: float) -> int:
    """Steps the backend's clock has advanced (pyNN.nest runs one min_delay past the time it reports)."""
    state = getattr(getattr(sim, "simulator", None), "state", None)
    t = getattr(state, "t_kernel", None) if name == "nest" else None
    return int(round((sim.get_current_time() if t is None else t) / dt))


def run(sim, name: str, folder: Path, x: np.ndarray) -> dict:
    """Build the exported network (B copies) in the PyNN module ``sim`` and run it on x (T, B, C).

    Returns {"readout": (T', B, n_classes) float64 mV, "layers": [(T', B, H_k) uint8 per hidden
    layer], "software": str} on the runtime's axis (T' = T + extra_steps + n_layers)."""
    meta = json.loads((folder / "neurons.json").read_text())
    dt = float(meta["dt_ms"])
    steps_in, batch, channels = x.shape
    if channels != meta["input_size"]:
        raise ValueError(f"expected input (T, B, {meta['input_size']}), got {tuple(x.shape)}")
    layers = meta["layers"]
    n_steps = steps_in + meta["extra_steps"] + meta.get("hop_latency_steps", 1) * len(layers)
    lists = {}
    for k in range(len(layers)):
        for kind in ("", "recurrent_"):
            for receptor in ("excitatory", "inhibitory"):
                lists[k, kind, receptor] = _read_rows(folder / f"layer{k}_{kind}{receptor}.csv")
    max_delay = max([dt] + [float(r[:, 3].max()) for r in lists.values() if len(r)])

    extra = {}
    if name == "nest":  # on-grid iaf_psc_delta (not iaf_psc_delta_ps), delays up to the lists' longest
        extra = {"spike_precision": "on_grid", "max_delay": max_delay + dt}
        if not hasattr(sim.IF_curr_delta, "variable_map"):  # PyNN 0.13: none, so "v" does not record
            sim.IF_curr_delta.variable_map = {"v": "V_m"}
            sim.IF_curr_delta.scale_factors = {"v": 1}
    sim.setup(timestep=dt, min_delay=dt, **extra)

    levels = level_spike_times(x, dt)
    sources = [sim.Population(batch * channels, sim.SpikeSourceArray(spike_times=times)) for times in levels]
    pops, biases = [], []
    for k, layer in enumerate(layers):
        n = layer["n"]
        readout = layer["readout"]
        params = {"cm": meta.get("cm_nF", CM_NF), "v_rest": 0.0, "v_reset": 0.0, "tau_refrac": 0.0,
                  "i_offset": 0.0, "tau_m": np.tile(np.broadcast_to(layer["tau_m_ms"], n), batch),
                  "v_thresh": READOUT_V_THRESH if readout else np.tile(np.broadcast_to(layer["v_thresh"], n), batch)}
        pop = sim.Population(batch * n, sim.IF_curr_delta(**params), initial_values={"v": 0.0})
        biases.append(np.tile(np.broadcast_to(layer["i_offset_nA"], n), batch))
        pre = [(src, channels) for src in sources] if k == 0 else [(pops[-1], layers[k - 1]["n"])]
        projections = [(p, n_pre, "") for p, n_pre in pre]
        if layer.get("recurrent"):
            projections.append((pop, n, "recurrent_"))  # the layer onto itself
        for source, n_pre, kind in projections:
            for receptor, sign in (("excitatory", 1.0), ("inhibitory", -1.0)):
                rows = _copies(lists[k, kind, receptor], sign, n_pre, n, batch)
                if rows:
                    sim.Projection(source, pop, sim.FromListConnector(rows, column_names=["weight", "delay"]),
                                   receptor_type=receptor)
        pop.record("v" if readout else "spikes")
        pops.append(pop)

    sim.run(dt)  # the bias stays off until the step before the model's step 0 is done
    done = _backend_steps(sim, name, dt)
    if done > ONSET_STEP - 1:
        raise RuntimeError(f"pyNN.{name} ran {done} steps on run(dt); ONSET_STEP {ONSET_STEP} is too small")
    if done < ONSET_STEP - 1:
        sim.run((ONSET_STEP - 1 - done) * dt)
    for pop, bias in zip(pops, biases):
        pop.set(i_offset=bias)
    sim.run((n_steps + 2) * dt)

    out = {"layers": [], "readout": None}
    for layer, pop in zip(layers, pops):
        n = layer["n"]
        seg = pop.get_data().segments[0]
        if layer["readout"]:
            sig = seg.analogsignals[0]
            step = np.rint(np.asarray(sig.times.rescale("ms").magnitude) / dt).astype(np.int64) - ONSET_STEP
            cols = sig.array_annotations.get("channel_index", np.arange(batch * n))
            keep = (step >= 0) & (step < n_steps)
            if keep.sum() != n_steps:
                raise RuntimeError(f"the readout's v was recorded at {int(keep.sum())} of {n_steps} steps")
            v = np.empty((n_steps, batch * n))
            v[step[keep]] = np.asarray(sig.magnitude)[keep][:, np.argsort(cols)]
            out["readout"] = v.reshape(n_steps, batch, n)
        else:
            s = np.zeros((n_steps, batch * n), dtype=np.uint8)
            for train in seg.spiketrains:
                step = np.rint(np.asarray(train.times.rescale("ms").magnitude) / dt).astype(np.int64) - ONSET_STEP
                s[step[(step >= 0) & (step < n_steps)], int(train.annotations["source_index"])] = 1
            out["layers"].append(s.reshape(n_steps, batch, n))
    sim.end()
    out["software"] = _software(name)
    return out


def _software(name: str) -> str:
    """e.g. "PyNN 0.13.0 + NEST 3.10.0"."""
    from importlib.metadata import PackageNotFoundError, version

    def get(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "?"
    text = f"PyNN {get('PyNN')}"
    if name == "nest":
        text += f" + NEST {get('nest-simulator')}"
    elif name == "brian2":
        text += f" + Brian2 {get('Brian2')}"
    elif name == "spiNNaker":
        text += f" + sPyNNaker {get('sPyNNaker')}"
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the exported network in PyNN on count-valued input.")
    ap.add_argument("--simulator", default="nest", help="PyNN backend: nest, brian2, spiNNaker, ...")
    ap.add_argument("--input", required=True, help=".npy spike counts (T, C) of one sample or (T, B, C)")
    ap.add_argument("--save", default=None, help=".npz to write pred, readout and layer0, layer1, ...")
    ap.add_argument("--folder", default=str(Path(__file__).resolve().parent),
                    help="the export's pynn/ folder (default: this script's folder)")
    args = ap.parse_args(argv)
    x = np.load(args.input)
    single = x.ndim == 2
    if single:
        x = x[:, None, :]
    if x.ndim != 3:
        raise SystemExit(f"--input: expected (T, C) or (T, B, C) spike counts, got shape {x.shape}")
    if (x < 0).any() or not np.array_equal(x, np.round(x)):
        raise SystemExit("--input: expected non-negative integer spike counts per bin")
    sim = importlib.import_module(f"pyNN.{args.simulator}")
    res = run(sim, args.simulator, Path(args.folder), x.astype(np.int64))
    pred = predict_from_readout(res["readout"])
    for b, c in enumerate(pred.tolist()):
        print(f"predicted class {c}" if single else f"sample {b}: predicted class {c}")
    if args.save:
        arrays = {"pred": pred[0] if single else pred,
                  "readout": res["readout"][:, 0] if single else res["readout"],
                  "software": np.array(res["software"])}
        for k, s in enumerate(res["layers"]):
            arrays[f"layer{k}"] = s[:, 0] if single else s
        np.savez(args.save, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
