"""Measurements: training and evaluation throughput of this project's model and of the reference
stack, in the same process on the same input tensors (interleaved, medians), and peak memory, each
in a fresh subprocess (``ru_maxrss`` growth over the resident size before the measured steps).

Shapes are time-major (T, B, C). Input (``BenchConfig.input``): "counts" (the default) draws
binned-spike counts like SHD at 10 ms / pool 5 - each (step, channel) non-zero with probability
``density`` (5 %), the non-zero ones 1, 2 or 3 with probabilities ``count_probs`` (70 / 20 / 10 %);
"binary" draws Bernoulli(``density``) 0/1 spikes (10 %).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .._optional import require
from .. import allocator
from ..backends import fast_eval as _fast_eval
from ..config import ModelConfig
from ..errors import UserError
from ..model import build_model, calibrate_batchnorm, readout_scores

__all__ = ["BenchConfig", "CONFIGS", "INPUTS", "RATES", "TRAINED_RATE", "run_benchmark", "hidden_spike_rates",
           "set_hidden_rates", "run_scaling", "measure_memory", "markdown_table",
           "scaling_table", "cpu_info", "describe_cpu"]


INPUTS = ("counts", "binary")
# SHD binned at 10 ms with 700 channels pooled by 5 (140): the fraction of non-zero (step, channel)
# entries and the distribution of the non-zero counts (see benchmarks/README.md, "Input"); the
# earlier results used binary spikes at 10 %
COUNTS_DENSITY = 0.05
COUNT_PROBS = (0.70, 0.20, 0.10)
BINARY_DENSITY = 0.10
# the spiking settings of the evaluation: "random" - the random weights with BatchNorm calibrated on
# the batch (SHD sizes: hidden layers at ~0.36 / 0.24 spikes per neuron and step); "trained" - the
# same network with each hidden BatchNorm's shift lowered until its layer spikes at TRAINED_RATE,
# what trained models show (the FSDD and SHD training logs: ~0.1)
RATES = ("random", "trained")
TRAINED_RATE = 0.10
RATE_TUNING_SAMPLES = 64  # the samples of the batch the shifts are tuned on (both stacks the same)


@dataclass(frozen=True)
class BenchConfig:
    """One network and batch: sizes in neurons, times in steps."""

    name: str
    n_in: int = 140
    hidden: int = 256
    n_layers: int = 2
    n_classes: int = 20
    kernel_size: int = 25
    tau: float = 1.005
    dropout: float = 0.4
    batch: int = 256
    steps: int = 100
    input: str = "counts"  # "counts" (binned like SHD) or "binary" (0/1 spikes)
    density: float | None = None  # non-zero fraction of the input; None: 0.05 (counts), 0.10 (binary)
    count_probs: tuple = COUNT_PROBS  # P(count = 1, 2, 3 | non-zero), input "counts"

    def with_(self, **kw) -> "BenchConfig":
        return dataclasses.replace(self, **{k: v for k, v in kw.items() if v is not None})

    @property
    def input_density(self) -> float:
        if self.density is not None:
            return self.density
        return COUNTS_DENSITY if self.input == "counts" else BINARY_DENSITY

    def describe_input(self) -> str:
        """One line: what the input holds (printed with the table)."""
        if self.input == "binary":
            return f"binary 0/1 spikes, {100 * self.input_density:g} % non-zero"
        probs = " / ".join(f"{100 * p:g}" for p in self.count_probs)
        counts = "/".join(str(k + 1) for k in range(len(self.count_probs)))
        return f"spike counts, {100 * self.input_density:g} % non-zero, counts {counts} at {probs} %"


CONFIGS = {
    "shd": BenchConfig("shd"),
    "ssc": BenchConfig("ssc", hidden=512, n_layers=3, n_classes=35, kernel_size=31, tau=1.5, dropout=0.25,
                       batch=128),
    "tiny": BenchConfig("tiny", n_in=12, hidden=16, n_layers=2, n_classes=4, kernel_size=7, batch=8, steps=20),
}


EVAL_MODES = {"random": "eval_rounded", "trained": "eval_rounded_trained"}  # rates setting -> mode name


# -- the two stacks -----------------------------------------------------------------------------
def build_ours(cfg: BenchConfig, backend: str = "auto", seed: int = 0) -> nn.Module:
    mc = ModelConfig(input_size=cfg.n_in, n_classes=cfg.n_classes, hidden_size=cfg.hidden, n_layers=cfg.n_layers,
                     kernel_size=cfg.kernel_size, tau_steps=cfg.tau, readout_tau_steps=cfg.tau,
                     dropout=cfg.dropout, backend=backend)
    return build_model(mc, seed=seed)


def build_reference(cfg: BenchConfig, seed: int = 0) -> nn.Module:
    from . import reference

    reason = reference.missing_reason()
    if reason is not None:
        raise UserError(f"the reference stack does not import ({reason}); install it with "
                        "`pip install --no-deps dcls==0.1.1 spikingjelly==2.0.0 && pip install loguru`")
    torch.manual_seed(seed)
    return reference.ReferenceSNN(cfg.n_in, cfg.hidden, cfg.n_layers, cfg.n_classes, cfg.kernel_size,
                                  sigma=cfg.kernel_size // 2, tau=cfg.tau, dropout=cfg.dropout)


def make_batch(cfg: BenchConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """x (T, B, C) float (binary spikes or counts, ``cfg.input``), y (B,) labels."""
    if cfg.input not in INPUTS:
        raise ValueError(f"input must be one of {INPUTS}; got {cfg.input!r}")
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(cfg.steps, cfg.batch, cfg.n_in, generator=g) < cfg.input_density).float()  # (T, B, C)
    if cfg.input == "counts":
        probs = torch.tensor(cfg.count_probs, dtype=torch.float64)
        counts = torch.multinomial(probs, x.numel(), replacement=True, generator=g).view(x.shape) + 1
        x = x * counts.float()
    y = torch.randint(0, cfg.n_classes, (cfg.batch,), generator=g)
    return x, y


def _loss(membrane: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(readout_scores(membrane), y)  # (B, K) summed softmax as logits


def _hidden_norms(stack: str, model: nn.Module) -> list[nn.Module]:
    return list(model.norms) if stack == "reference" else [blk.norm for blk in model.hidden]


@torch.no_grad()
def hidden_spike_rates(stack: str, model: nn.Module, x: torch.Tensor) -> list[float]:
    """Mean spike rate (spikes per neuron per step, over the steps each layer outputs) of every
    hidden layer of either stack in its current mode, on x (T, B, C)."""
    if stack == "reference":
        from .reference import reset

        rates: list[float] = []
        hooks = [lif.register_forward_hook(lambda _m, _i, out: rates.append(float(out.float().mean())))
                 for lif in model.lifs]
        try:
            model(x)
        finally:
            for h in hooks:
                h.remove()
            reset(model)
        return rates
    _, spikes = model(x, return_spikes=True)
    return [float(s.mean()) for s in spikes]


@torch.no_grad()
def set_hidden_rates(stack: str, model: nn.Module, x: torch.Tensor, rate: float = TRAINED_RATE,
                     iterations: int = 14, bracket: tuple[float, float] = (-4.0, 8.0)) -> list[float]:
    """Lower (or raise) the shift (bias) of each hidden BatchNorm of an eval-mode model, layer by
    layer from the input, by the amount that makes that layer spike at ``rate`` per neuron and step
    on x (bisection: the rate falls as the shift falls); the same procedure for both stacks.
    Returns the shift change of each layer (subtracted from the bias)."""
    deltas = []
    for k, norm in enumerate(_hidden_norms(stack, model)):
        base = norm.bias.detach().clone()
        lo, hi = bracket
        for _ in range(iterations):
            mid = (lo + hi) / 2
            norm.bias.copy_(base - mid)
            if hidden_spike_rates(stack, model, x)[k] > rate:
                lo = mid
            else:
                hi = mid
        delta = (lo + hi) / 2
        norm.bias.copy_(base - delta)
        deltas.append(delta)
    return deltas


def backends_in_step(runner: "Runner") -> list[str]:
    """The backend each synapse of our model runs in one training step of ``runner`` (each layer
    decides on its own input: the first layer's needs no gradient and may run event-driven, the
    hidden layers' do); the step is a warm-up, its update kept."""
    chosen: list[str] = []
    synapses = list(runner.model.synapses())
    for syn in synapses:
        def record(x=None, _orig=syn.resolved_backend):
            chosen.append(_orig(x))
            return chosen[-1]
        syn.resolved_backend = record  # an instance attribute shadows the method for this one step
    try:
        runner.step()
    finally:
        for syn in synapses:
            del syn.resolved_backend
    return chosen[:len(synapses)]


class Runner:
    """train_step() / eval_step() for one stack at one sigma (train) or rounded delays (eval);
    ``rates`` (eval): "random" (BatchNorm calibrated on the batch) or "trained" (then each hidden
    layer's shift set so that it spikes at TRAINED_RATE, :func:`set_hidden_rates`)."""

    def __init__(self, stack: str, cfg: BenchConfig, sigma: float | None, backend: str = "auto",
                 rates: str = "random"):
        if rates not in RATES:
            raise ValueError(f"rates must be one of {RATES}; got {rates!r}")
        self.stack = stack
        self.model = build_reference(cfg) if stack == "reference" else build_ours(cfg, backend)
        self.x, self.y = make_batch(cfg)
        self.rate_shifts: list[float] = []
        if sigma is None:  # evaluation with rounded delays
            self.calibrate_batchnorm()
            self.model.eval()
            if stack == "reference":
                self.model.round_positions()
            if rates == "trained":
                self.rate_shifts = set_hidden_rates(stack, self.model, self.x[:, :RATE_TUNING_SAMPLES])
        else:
            self.model.train()
            if stack == "reference":
                self.model.set_sigma(sigma)
            else:
                self.model.sigma = sigma
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.opt = torch.optim.Adam(params, lr=1e-3)

    def calibrate_batchnorm(self) -> None:
        """BatchNorm running statistics from one training-mode pass over the batch, as after
        training (default statistics would leave the hidden layers silent in eval mode, which
        would flatter an event-driven evaluation)."""
        calibrate_batchnorm(self.model, self.x)
        self._reset()

    def hidden_rates(self, samples: int | None = None) -> list[float]:
        """Mean spike rate (spikes per neuron per step) of each hidden layer on the batch (or its
        first ``samples``)."""
        x = self.x if samples is None else self.x[:, :samples]
        return [round(v, 4) for v in hidden_spike_rates(self.stack, self.model, x)]

    def _reset(self) -> None:
        if self.stack == "reference":
            from .reference import reset

            reset(self.model)

    def train_step(self) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss = _loss(self.model(self.x), self.y)
        loss.backward()
        self.opt.step()
        if self.stack == "ours":
            self.model.clamp_()
        self._reset()

    @torch.no_grad()
    def eval_step(self) -> None:
        readout_scores(self.model(self.x)).argmax(-1)
        self._reset()

    def step(self) -> None:
        (self.eval_step if not self.model.training else self.train_step)()


def _timed(fn: Callable[[], None]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def compare_times(runners: dict[str, Runner], repeats: int, warmup: int = 1) -> dict[str, list[float]]:
    """Seconds per step of each runner, interleaved round by round (same load for all)."""
    for r in runners.values():
        for _ in range(warmup):
            r.step()
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(repeats):
        for k, r in runners.items():
            times[k].append(_timed(r.step))
    return times


# -- memory, in a fresh process per measurement ----------------------------------------------------
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) of this process (Linux >= 4.0: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _trim() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _memory_child(spec: dict) -> dict:
    if spec.get("reuse_freed_memory"):
        allocator.reuse_freed_memory()  # as in the parent process
    torch.set_num_threads(int(spec["threads"]))
    cfg = BenchConfig(**spec["cfg"])
    runner = Runner(spec["stack"], cfg, spec["sigma"], spec.get("backend", "auto"), spec.get("rates", "random"))
    runner.step()  # compile/allocate once (optimizer state, numba code)
    _trim()  # hand freed heap back to the OS: the baseline is what is live between steps
    base = _rss_bytes()
    reset = _reset_peak()  # so the peak is that of the measured steps, not of the warm-up
    ballast = torch.ones(int(spec.get("ballast_bytes", 0)) // 4)  # resident during the steps (tests)
    for _ in range(int(spec.get("steps", 1))):
        runner.step()
    del ballast
    hwm = _status_kb("VmHWM")
    if reset and hwm is not None:
        peak, how = hwm * 1024, "VmHWM after clear_refs"
    else:  # ru_maxrss cannot be reset: the warm-up step may already have set it
        peak, how = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "ru_maxrss"
    return {"extra_peak_bytes": max(0, peak - base), "base_rss_bytes": base, "method": how}


def measure_memory(stack: str, cfg: BenchConfig, sigma: float | None, threads: int = 2,
                   backend: str = "auto", ballast_bytes: int = 0) -> dict:
    """Extra peak resident memory (bytes) of one step over the resident size just before it,
    measured in a fresh Python process: one warm-up step (optimizer state, compiled code), then
    malloc_trim (freed heap back to the OS), the peak mark reset (/proc/self/clear_refs), the
    measured step, and VmHWM - baseline. ``ballast_bytes``: a tensor of that size is allocated
    and held during the measured step (a known growth, for tests of the measurement)."""
    spec = {"stack": stack, "cfg": dataclasses.asdict(cfg), "sigma": sigma, "threads": threads, "backend": backend,
            "ballast_bytes": ballast_bytes,
            "reuse_freed_memory": allocator.reusing_freed_memory()}
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding this snn_delays: the child imports it too
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = subprocess.run([sys.executable, "-m", "snn_delays.bench.measure", json.dumps(spec)], capture_output=True,
                         text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"memory measurement failed ({stack}, sigma={sigma}):\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- the benchmark -------------------------------------------------------------------------------
def _median(v: list[float]) -> float:
    return float(statistics.median(v))


def run_benchmark(cfg: BenchConfig, repeats: int = 3, threads: int = 2, memory: bool = True,
                  reference: bool = True, rates: str = "both", log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train samples/s at sigma = Td // 2 and sigma = 0.5, eval samples/s with rounded delays at the
    spiking settings ``rates`` ("random", "trained" or "both": modes eval_rounded and
    eval_rounded_trained) and peak memory, for this project's model and (if ``reference``) the
    reference stack."""
    torch.set_num_threads(threads)
    sigmas = {"train_sigma_large": float(cfg.kernel_size // 2), "train_sigma_0.5": 0.5}
    stacks = ["reference", "ours"] if reference else ["ours"]
    settings = list(RATES) if rates == "both" else [rates]
    if any(r not in RATES for r in settings):
        raise ValueError(f"rates must be one of {RATES + ('both',)}; got {rates!r}")
    result: dict[str, Any] = {"config": dataclasses.asdict(cfg), "input": cfg.describe_input(),
                              "repeats": repeats, "threads": threads,
                              "sigmas": sigmas, "seconds": {}, "samples_per_s": {}, "memory_bytes": {},
                              "backends": {}, "eval_rates": {}}
    modes = [(m, s, "random") for m, s in sigmas.items()] + [
        (EVAL_MODES[r], None, r) for r in settings]
    for mode, sigma, setting in modes:
        runners = {s: Runner(s, cfg, sigma, rates=setting) for s in stacks}
        ours = runners["ours"].model
        result["backends"][mode] = backends_in_step(runners["ours"]) if sigma is not None else \
            [syn.resolved_backend(runners["ours"].x) for syn in ours.synapses()]
        if sigma is None:
            with torch.no_grad():
                if _fast_eval.applicable(ours, runners["ours"].x):  # the compiled eval: per-layer form
                    kinds: list = []
                    _fast_eval.fast_eval_forward(ours, runners["ours"].x, kinds=kinds, extra_steps=ours.extra_steps)
                    result["backends"][mode] = [f"eval-{k}" for k in kinds]
            # hidden spikes per neuron and step: ours on the batch, the reference on the samples its
            # shifts were tuned on (a pass over the whole batch costs it seconds)
            measured = {"ours": runners["ours"].hidden_rates()}
            if "reference" in runners:
                measured["reference"] = runners["reference"].hidden_rates(RATE_TUNING_SAMPLES)
                measured["reference_samples"] = min(RATE_TUNING_SAMPLES, cfg.batch)
            if setting == "trained":
                measured["target"] = TRAINED_RATE
                measured["shifts"] = {s: [round(d, 4) for d in r.rate_shifts] for s, r in runners.items()}
            result["eval_rates"][setting] = measured
            log(f"  {cfg.name} {mode}: hidden spikes per neuron and step " + ", ".join(
                f"{s} {' / '.join(f'{v:.3f}' for v in measured[s])}" for s in stacks))
            if setting == "random":
                result["eval_hidden_rates"] = measured["ours"]
            xb = runners["ours"].x
            result["input_rate"] = round(float((xb != 0).float().mean()), 4)  # non-zero entries per step
            result["input_mean"] = round(float(xb.mean()), 4)  # spikes per channel per step
        times = compare_times(runners, repeats)
        for s in stacks:
            sec = _median(times[s])
            result["seconds"].setdefault(mode, {})[s] = times[s]
            result["samples_per_s"].setdefault(mode, {})[s] = cfg.batch / sec
        log(f"  {cfg.name} {mode}: " + ", ".join(f"{s} {cfg.batch / _median(times[s]):.1f} samples/s" for s in stacks))
        del runners
    if memory:
        for mode, sigma in [("train_sigma_0.5", 0.5), ("train_sigma_large", sigmas["train_sigma_large"]),
                            ("eval_rounded", None)]:
            for s in stacks:
                m = measure_memory(s, cfg, sigma, threads)
                result["memory_bytes"].setdefault(mode, {})[s] = m["extra_peak_bytes"]
            log(f"  {cfg.name} memory {mode}: " + ", ".join(
                f"{s} {result['memory_bytes'][mode][s] / 1e9:.2f} GB" for s in stacks))
    if reference:
        ratios = {m: v["ours"] / v["reference"] for m, v in result["samples_per_s"].items()}
        ratios["train_mean_of_two_sigmas"] = (ratios["train_sigma_large"] + ratios["train_sigma_0.5"]) / 2
        result["speed_ratio"] = ratios
        result["memory_ratio"] = {m: v["ours"] / v["reference"] for m, v in result["memory_bytes"].items()
                                  if v.get("reference")}
    return result


def run_scaling(base: BenchConfig, kernel_sizes=(25, 50, 100, 250), repeats: int = 2, threads: int = 2,
                memory: bool = True, dense_up_to: int = 50, eval_memory: bool = True,
                log: Callable[[str], None] = print) -> list[dict]:
    """Time resolution: Td and the number of steps grow together (dt = 10 ms * 25 / Td). Training
    step at sigma = 0.5 and at sigma = Td // 2 (the schedule's start), and eval step of this
    project's model; the dense backend too while Td <= ``dense_up_to`` (its cost grows ~ Td^2)."""
    torch.set_num_threads(threads)
    rows = []
    for td in kernel_sizes:
        cfg = base.with_(kernel_size=td, steps=base.steps * td // base.kernel_size, name=f"{base.name}-Td{td}")
        row: dict[str, Any] = {"kernel_size": td, "steps": cfg.steps, "dt_ms": 10.0 * base.kernel_size / td}
        runners = {"train": Runner("ours", cfg, 0.5), "train_wide": Runner("ours", cfg, float(td // 2)),
                   "eval": Runner("ours", cfg, None)}
        if td <= dense_up_to:
            runners["train_dense"] = Runner("ours", cfg, 0.5, backend="dense")
        times = compare_times(runners, repeats)
        for k, v in times.items():
            row[f"{k}_s"] = _median(v)
        if memory:
            row["train_memory_bytes"] = measure_memory("ours", cfg, 0.5, threads)["extra_peak_bytes"]
            if eval_memory:
                row["eval_memory_bytes"] = measure_memory("ours", cfg, None, threads)["extra_peak_bytes"]
        log(f"  Td {td}: " + ", ".join(f"{k} {v:.3g}" for k, v in row.items() if k.endswith("_s")))
        rows.append(row)
        del runners
    t0 = rows[0]["train_s"]
    for r in rows:
        r["train_cost_vs_first"] = r["train_s"] / t0
    return rows


def environment() -> dict[str, Any]:
    import snn_delays.backends.kernels.runtime as k

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "machine": platform.machine(), "numba": getattr(k.numba, "__version__", None)}
    for mod in ("DCLS", "spikingjelly"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "installed")
        except Exception:
            info[mod] = None
    try:
        info["loadavg"] = os.getloadavg()
    except OSError:
        pass
    info.update(cpu_info())
    info["allocator"] = allocator.allocator_setting()
    return info


def cpu_info() -> dict[str, Any]:
    """The CPU model, the vector instruction sets the compiled loops can use (avx512*, avx2, fma
    from /proc/cpuinfo) and the CPU name numba's compiler targets."""
    model, flags = None, set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model is None:
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    model = model or platform.processor() or platform.machine()
    isa = sorted(f for f in flags if f.startswith("avx512")) + [f for f in ("avx2", "fma") if f in flags]
    target = None
    try:
        import llvmlite.binding as llvm

        target = llvm.get_host_cpu_name()
    except Exception:  # pragma: no cover - numba/llvmlite missing
        pass
    return {"cpu_model": model, "vector_isa": isa, "avx512": any(f.startswith("avx512") for f in isa),
            "compiler_cpu": target}


def describe_cpu(env: dict[str, Any]) -> str:
    """One line for the table: CPU model, compiler target and vector instruction sets."""
    isa = env.get("vector_isa") or []
    wide = "AVX-512" if env.get("avx512") else "no AVX-512"
    target = f" ({env['compiler_cpu']})" if env.get("compiler_cpu") else ""
    return f"{env.get('cpu_model', '?')}{target}, {env.get('cpus', '?')} CPUs, {wide}: {' '.join(isa) or '-'}"


# -- tables --------------------------------------------------------------------------------------
def markdown_table(results: list[dict]) -> str:
    lines = ["| config | mode | reference samples/s | ours samples/s | ratio | ours backend |",
             "|---|---|---|---|---|---|"]
    names = {"train_sigma_large": "train, sigma = Td//2", "train_sigma_0.5": "train, sigma = 0.5",
             "eval_rounded": "eval, rounded delays", "eval_rounded_trained": "eval, rounded delays"}
    for r in results:
        c = r["config"]
        for mode, label in names.items():
            if mode not in r["samples_per_s"]:
                continue
            setting = "trained" if mode == "eval_rounded_trained" else "random"
            if mode.startswith("eval") and setting in r.get("eval_rates", {}):
                rates = r["eval_rates"][setting]["ours"]
                label += (", trained-like" if setting == "trained" else ", random weights") + \
                    f" (hidden {' / '.join(f'{v:.2f}' for v in rates)})"
            sps = r["samples_per_s"][mode]
            ref = sps.get("reference")
            ratio = f"{sps['ours'] / ref:.2f}x" if ref else "-"
            lines.append(f"| {c['name']} (B {c['batch']}, T {c['steps']}, Td {c['kernel_size']}) | {label} | "
                         f"{ref:.1f} | {sps['ours']:.1f} | {ratio} | {'/'.join(r['backends'][mode])} |"
                         if ref else f"| {c['name']} | {label} | - | {sps['ours']:.1f} | - | "
                         f"{'/'.join(r['backends'][mode])} |")
        if "eval_hidden_rates" in r and not r.get("eval_rates"):
            lines.append(f"| {c['name']} | eval: non-zero input entries / hidden spikes per neuron per step | | | | "
                         f"{r.get('input_rate', '-')} / {' / '.join(str(v) for v in r['eval_hidden_rates'])} |")
        if r.get("eval_rates"):
            lines.append(f"| {c['name']} | eval: non-zero input entries per step | | | | {r.get('input_rate', '-')} |")
        if "speed_ratio" in r:
            lines.append(f"| {c['name']} | train, mean of the two sigma ratios | | | "
                         f"{r['speed_ratio']['train_mean_of_two_sigmas']:.2f}x | |")
        for mode, mem in r.get("memory_bytes", {}).items():
            ref = mem.get("reference")
            lines.append(f"| {c['name']} | extra peak memory, {names[mode]} | "
                         f"{ref / 1e9:.2f} GB | {mem['ours'] / 1e9:.2f} GB | "
                         f"{(mem['ours'] / ref if ref else float('nan')):.2f}x | |" if ref else
                         f"| {c['name']} | extra peak memory, {names[mode]} | - | {mem['ours'] / 1e9:.2f} GB | - | |")
    return "\n".join(lines)


def scaling_table(rows: list[dict]) -> str:
    lines = ["| Td | dt (ms) | steps | train s/step (sigma 0.5) | x first row | train memory | "
             "train s/step (sigma Td//2) | x first row | eval s/step | eval memory | direct-conv train s/step |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    w0 = rows[0].get("train_wide_s")
    for r in rows:
        mem = lambda k: f"{r[k] / 1e9:.2f} GB" if k in r else "-"  # noqa: E731
        dense = f"{r['train_dense_s']:.2f}" if "train_dense_s" in r else "-"
        wide = f"{r['train_wide_s']:.2f} | {r['train_wide_s'] / w0:.1f}" if w0 and "train_wide_s" in r else "- | -"
        lines.append(f"| {r['kernel_size']} | {r['dt_ms']:g} | {r['steps']} | {r['train_s']:.2f} | "
                     f"{r['train_cost_vs_first']:.1f} | {mem('train_memory_bytes')} | {wide} | {r['eval_s']:.2f} | "
                     f"{mem('eval_memory_bytes')} | {dense} |")
    return "\n".join(lines)


def scaling_plot(rows: list[dict], path: str | os.PathLike) -> None:
    matplotlib = require("matplotlib", "the scaling figure of snn-delays bench")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    td = [r["kernel_size"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(td, [r["train_s"] for r in rows], "o-", label="train step, sigma 0.5 (auto backend)")
    if all("train_wide_s" in r for r in rows):
        a.plot(td, [r["train_wide_s"] for r in rows], "^-", label="train step, sigma Td//2 (auto backend)")
    a.plot(td, [r["eval_s"] for r in rows], "s-", label="eval step, rounded delays")
    dense = [(r["kernel_size"], r["train_dense_s"]) for r in rows if "train_dense_s" in r]
    if dense:
        a.plot(*zip(*dense), "x--", label="train step, dense backend")
        k0, t0 = dense[0]
        a.plot(td, [t0 * (k / k0) ** 2 for k in td], ":", color="gray", label="dense ~ Td^2 (extrapolated)")
    a.plot(td, [rows[0]["train_s"] * k / td[0] for k in td], ":", color="black", label="linear in Td (steps)")
    a.set_xscale("log"), a.set_yscale("log"), a.set_xlabel("kernel size Td (steps); input steps = 4 Td")
    a.set_ylabel("seconds per batch"), a.legend(fontsize=7), a.grid(True, which="both", alpha=0.3)
    if "train_memory_bytes" in rows[0]:
        b.plot(td, [r["train_memory_bytes"] / 1e9 for r in rows], "o-", label="train step")
        if "eval_memory_bytes" in rows[0]:
            b.plot(td, [r["eval_memory_bytes"] / 1e9 for r in rows], "s-", label="eval step")
        b.axhline(8, color="red", ls="--", label="8 GB")
    b.set_xscale("log"), b.set_xlabel("kernel size Td (steps)"), b.set_ylabel("extra peak memory (GB)")
    b.legend(fontsize=7), b.grid(True, which="both", alpha=0.3)
    for ax in (a, b):
        ax.set_xticks(td, [str(k) for k in td])
        ax.minorticks_off()
    fig.suptitle(f"SHD sizes, batch {rows[0].get('batch', '')}: cost vs time resolution (dt = 250 ms / Td)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":  # the memory child: python -m snn_delays.bench.measure '<json spec>'
    print(json.dumps(_memory_child(json.loads(sys.argv[1]))))
