"""Control experiments over seeds: ``snn-delays ablate``.

A grid is (connectivity, variant, seed) cells; each cell is an ordinary run folder::

    OUT/runs/<connectivity>/<variant>/seed<S>/      (connectivity: "full" or "fanin<K>")
    OUT/summary.csv, OUT/summary.md, OUT/ablation.png, OUT/cells.csv

``--fanin K`` runs every variant twice, fully connected and with K random inputs per neuron (the
method's finding is the contrast between the two); ``--sparse-only`` skips the fully connected
half. All variants of one seed start from the same weights, delays and masks (see
:func:`snn_delays.model.resolve_variant` for how the no-delay baselines are sized).

Resumable and shareable: a cell is done when its ``summary.json`` says all epochs ran; a process
takes a cell with a :class:`~snn_delays.workers.FolderLock` on its folder (``cell/.lock``),
refreshes it every epoch and deletes it at the end; a stale lock (its process gone, or not
refreshed for ``stale_after_s``) is broken and the cell is resumed from its ``last.pt``. Any
number of ``snn-delays ablate`` processes, on one machine or several sharing the folder, can run
the same grid; each writes the summary of what is finished when it has nothing left to do.
``--launcher submitit`` (or ``submitit-local``) runs every unfinished cell as a job instead
(:class:`CellJob`, :mod:`snn_delays.launchers`), with the same folders, locks and resuming.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import socket
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from neuromorphic_export._io import atomic_write_text

from ._optional import require
from .config import (MODEL_VARIANTS, VARIANT_NAMES, VARIANTS, ConfigError, ExperimentConfig, ModelConfig,
                     config_differences, config_from_dict, config_value, result_config)
from .errors import UserError
from .launchers import Launch, current_job, job_ended, resubmission, run_jobs
from .model import count_trainable, resolve_variant
from .train import train
from .workers import FolderLock, run_workers

__all__ = ["Cell", "CellJob", "grid_cells", "variant_model", "ABLATION_VARIANTS", "run_grid", "summarize", "t_quantile_975", "ci95", "ablate", "read_grid",
           "summarize_grid", "connectivity_label"]

DEFAULT_VARIANTS = ("full", "fixed-delays", "no-delays-wider")
ABLATION_VARIANTS = VARIANT_NAMES  # every name `train --variant`, `ablate --variants` and `cv --variants` take
LABELS = {
    "full": "learned delays\n(decreasing σ)",
    "constant-sigma": "learned delays\n(constant σ)",
    "fixed-delays": "fixed random\ndelays",
    "fixed-weights": "fixed weights,\nlearned delays",
    "no-delays-wider": "no delays,\nwider",
    "no-delays-deeper": "no delays,\ndeeper",
    "dense-conv": "dense conv\ndelays",
    "interp-triangle": "triangle kernel\n(decreasing σ)",
    "interp-bilinear": "bilinear\nkernel",
    "gauss-learned-sigma": "Gaussian,\nlearned widths",
    "triangle-learned-sigma": "triangle,\nlearned widths",
    "recurrent": "recurrent,\nlearned delays",
    "recurrent-fixed-delays": "recurrent,\nfixed random delays",
    "recurrent-one-step": "recurrent,\none-step delays",
    "recurrent-from-one-step": "recurrent, learned\nfrom one step",
}

def connectivity_label(fanin: int) -> str:
    """The one name shown for a connectivity: "fully connected" or "K inputs/neuron"
    (folders and the ``connectivity`` CSV column keep the identifiers "full" / "faninK")."""
    return "fully connected" if fanin <= 0 else f"{fanin} inputs/neuron"


def _count(n: int, singular: str, plural: str | None = None) -> str:
    """'1 seed', '3 seeds'."""
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


# -- statistics ---------------------------------------------------------------------------------
# two-sided 95 % quantiles t_{0.975, df} for df = 1..30 (scipy.stats.t.ppf(0.975, df))
_T975 = [12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423]


def t_quantile_975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (scipy when installed)."""
    if df < 1:
        return float("nan")
    try:
        from scipy.stats import t

        return float(t.ppf(0.975, df))
    except ImportError:
        pass
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964  # Cornish-Fisher expansion, error < 1e-4 for df > 30
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def ci95(values: Sequence[float]) -> tuple[float, float, float, int]:
    """(mean, half-width of the 95 % t-interval, sample std (ddof 1), n); nan where undefined."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mean = sum(values) / n
    if n == 1:
        return mean, float("nan"), float("nan"), 1
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return mean, t_quantile_975(n - 1) * std / math.sqrt(n), std, n


# -- the grid -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    variant: str
    fanin: int  # 0 = fully connected
    seed: int

    @property
    def connectivity(self) -> str:
        return "full" if self.fanin <= 0 else f"fanin{self.fanin}"

    def folder(self, out: Path) -> Path:
        return out / "runs" / self.connectivity / self.variant / f"seed{self.seed}"

    def config(self, base: ExperimentConfig) -> ExperimentConfig:
        cfg = replace(base, name=f"{base.name}-{self.connectivity}-{self.variant}-seed{self.seed}",
                      model=variant_model(base.model, self.variant, fanin=self.fanin),
                      train=replace(base.train, seed=self.seed))
        return cfg.validate()


def variant_model(base: ModelConfig, variant: str, **changes: Any) -> ModelConfig:
    """The base model config as ``variant`` (a ``model.variant``, or one of :data:`MODEL_VARIANTS`:
    the full model with other model keys), with ``changes`` applied too."""
    keys = MODEL_VARIANTS.get(variant)
    if keys is not None:
        return replace(base, variant="full", **keys, **changes)
    return replace(base, variant=variant, **changes)


def grid_cells(variants: Sequence[str], seeds: Sequence[int], fanins: Sequence[int]) -> list[Cell]:
    """Seed-major order, so that a partial grid already has every variant for the first seeds."""
    for v in variants:
        if v not in ABLATION_VARIANTS:
            raise UserError(f"unknown variant {v!r}; choose from {', '.join(ABLATION_VARIANTS)}")
    return [Cell(v, k, s) for s in seeds for k in fanins for v in variants]


def is_done(run: Path) -> bool:
    try:
        s = json.loads((run / "summary.json").read_text())
    except (OSError, ValueError):
        return False
    return s.get("epochs_done") == s.get("epochs")


def run_grid(base: ExperimentConfig, cells: Sequence[Cell], out: Path, stale_after_s: float = 3600.0,
             log=print) -> dict[str, int]:
    """Run every cell not done and not locked by a live process. Returns counts
    {"ran", "done_before", "busy"} for this process. Inside a scheduler job the cell's lock records
    the job's id, and a lock left by a job that has ended is broken (:mod:`snn_delays.launchers`)."""
    counts = {"ran": 0, "done_before": 0, "busy": 0}
    job = current_job()
    for i, cell in enumerate(cells):
        run = cell.folder(out)
        if is_done(run):
            counts["done_before"] += 1
            continue
        lock = FolderLock(run, stale_after_s, job=job, job_ended=job_ended if job else None)
        if not lock.acquire():
            counts["busy"] += 1
            continue
        try:
            if is_done(run):  # finished between the check and the lock
                counts["done_before"] += 1
                continue
            log(f"[{i + 1}/{len(cells)}] {connectivity_label(cell.fanin)}, {cell.variant}, seed {cell.seed} -> {run}")
            with open(run / "runs.log", "a") as f:  # who trained this cell, and when (an audit trail)
                f.write(f"{socket.gethostname()} pid {os.getpid()}{f' job {job}' if job else ''} started "
                        f"{time.strftime('%Y-%m-%dT%H:%M:%S')}\n")
            t0 = time.perf_counter()
            res = train(cell.config(base), run, resume=True, on_epoch_end=lambda row: lock.refresh())
            log(f"    test accuracy {res['test_acc']:.4f} (best valid epoch {res['best_epoch']}), "
                f"{_count(res['trainable_parameters'], 'trainable parameter')}, {time.perf_counter() - t0:.0f} s")
            counts["ran"] += 1
        finally:
            lock.release()
    return counts


# -- summary ----------------------------------------------------------------------------------------
def _expected_params(base: ExperimentConfig, cell: Cell) -> int:
    """The trainable count of a cell's model from its config; 0 when only the data says the sizes (a
    conv model's input frame, model.input_frame): a finished cell's count comes from its summary."""
    try:
        return count_trainable(resolve_variant(cell.config(base).model))
    except ConfigError:
        return 0


def collect(base: ExperimentConfig, cells: Sequence[Cell], out: Path) -> list[dict[str, Any]]:
    """One record per cell: accuracy (test at the best validation epoch) if finished."""
    rows = []
    for cell in cells:
        run = cell.folder(out)
        rec: dict[str, Any] = {"connectivity": cell.connectivity, "fanin": cell.fanin, "variant": cell.variant,
                               "seed": cell.seed, "done": is_done(run), "test_acc": float("nan"),
                               "max_test_acc": float("nan"), "best_epoch": -1,
                               "params": _expected_params(base, cell), "hidden_size": None, "n_layers": None,
                               "model_fanin": None, "n_classes": None}
        if rec["done"]:
            s = json.loads((run / "summary.json").read_text())
            m = s.get("config", {}).get("model") or _run_model_config(run)
            rec.update(test_acc=s["test_acc"], max_test_acc=s["max_test_acc"], best_epoch=s["best_epoch"],
                       params=s["trainable_parameters"], hidden_size=m.get("hidden_size"),
                       n_layers=m.get("n_layers"), model_fanin=m.get("fanin"), n_classes=m.get("n_classes"))
        rows.append(rec)
    return rows


def _run_model_config(run: Path) -> dict[str, Any]:
    """The [model] table of a run's config.toml (older summaries do not hold the config)."""
    import tomllib

    try:
        with open(run / "config.toml", "rb") as f:
            return tomllib.load(f).get("model", {})
    except (OSError, ValueError):
        return {}


SUMMARY_COLUMNS = ["variant", "mean", "ci95", "std", "n", "params", "connectivity", "fanin", "n_planned"]


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (connectivity, variant): mean, ci95, std and n of test accuracy over finished seeds."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["connectivity"], r["variant"]), []).append(r)
    out = []
    for (conn, variant), rs in groups.items():
        accs = [r["test_acc"] for r in rs if r["done"]]
        mean, half, std, n = ci95(accs)
        out.append({"variant": variant, "mean": mean, "ci95": half, "std": std, "n": n,
                    "params": rs[0]["params"], "connectivity": conn, "fanin": rs[0]["fanin"],
                    "n_planned": len(rs)})
    return out


def _fmt(v: float, scale: float = 100.0, digits: int = 2) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v * scale:.{digits}f}"


def write_summary(out: Path, records: Sequence[dict[str, Any]], title: str, note: str = "") -> list[dict[str, Any]]:
    table = summarize(records)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for row in table:
        w.writerow({k: (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k]) for k in SUMMARY_COLUMNS})
    atomic_write_text(out / "summary.csv", buf.getvalue())

    buf = io.StringIO()
    keys = ["connectivity", "fanin", "variant", "seed", "done", "test_acc", "max_test_acc", "best_epoch", "params",
            "hidden_size", "n_layers", "model_fanin"]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: r[k] for k in keys})
    atomic_write_text(out / "cells.csv", buf.getvalue())

    lines = [f"# {title}", "",
             "Test accuracy (%) at the epoch of best validation accuracy; mean ± half-width of the 95 % "
             "t-interval over seeds.", "",
             "| connectivity | variant | mean | ci95 | std | n | params |", "|---|---|---|---|---|---|---|"]
    for row in table:
        lines.append(f"| {connectivity_label(row['fanin'])} | {row['variant']} | {_fmt(row['mean'])} | ± {_fmt(row['ci95'])} | "
                     f"{_fmt(row['std'])} | {row['n']}/{row['n_planned']} | {row['params']:,} |")
    lines += ["", "Per seed:", "", "| connectivity | variant | seed | test | max test | best epoch | hidden | "
              "layers | kept inputs |", "|---|---|---|---|---|---|---|---|---|"]
    for r in records:
        lines.append(f"| {connectivity_label(r['fanin'])} | {r['variant']} | {r['seed']} | {_fmt(r['test_acc'])} | "
                     f"{_fmt(r['max_test_acc'])} | {r['best_epoch'] if r['done'] else '-'} | "
                     f"{r['hidden_size'] or '-'} | {r['n_layers'] or '-'} | {r['model_fanin'] if r['done'] else '-'} |")
    if note:
        lines += ["", note]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return table


def plot_summary(out: Path, records: Sequence[dict[str, Any]], title: str) -> Path:
    """Bar plot in the style of the thesis's Figure 4.5: one group of bars per connectivity, one bar
    per variant with its 95 % interval, the seeds as dots and the mean written on the bar."""
    matplotlib = require("matplotlib", "the ablation figure")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = summarize(records)
    conns = list(dict.fromkeys(r["connectivity"] for r in table))
    variants = list(dict.fromkeys(r["variant"] for r in table))
    colors = {v: c for v, c in zip(ABLATION_VARIANTS, ["#1f77b4", "#6baed6", "#ff7f0e", "#9467bd", "#2ca02c", "#98df8a",
                                                      "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#f7b6d2",
                                                      "#d62728", "#ff9896", "#7f7f7f", "#c5b0d5"])}
    width = 0.8 / max(len(variants), 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 + 1.25 * len(variants) * len(conns)), 4.4), layout="constrained")
    lows, bars = [], []
    for gi, conn in enumerate(conns):
        for vi, variant in enumerate(variants):
            row = next((r for r in table if r["connectivity"] == conn and r["variant"] == variant), None)
            if row is None or row["n"] == 0:
                continue
            x = gi + (vi - (len(variants) - 1) / 2) * width
            mean, half = row["mean"] * 100, (row["ci95"] * 100 if not math.isnan(row["ci95"]) else 0.0)
            ax.bar(x, mean, width * 0.92, color=colors.get(variant, "grey"), edgecolor="black", linewidth=0.6,
                   label=LABELS.get(variant, variant).replace("\n", " ") if gi == 0 or variant not in
                   [r["variant"] for r in table if r["connectivity"] == conns[0]] else None)
            ax.errorbar(x, mean, yerr=half, color="black", capsize=4, linewidth=1.2)
            seeds = [r["test_acc"] * 100 for r in records
                     if r["connectivity"] == conn and r["variant"] == variant and r["done"]]
            ax.scatter([x] * len(seeds), seeds, s=12, color="black", zorder=3, alpha=0.7)
            ax.text(x, min(mean + half, 99.0) + 0.6, f"{mean:.1f}", ha="center", va="bottom", fontsize=8,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8})
            bars.append((x, row["params"]))
            lows += seeds
    fanin_of = {r["connectivity"]: r["fanin"] for r in table}
    ax.set_xticks(range(len(conns)), [connectivity_label(fanin_of[c]) for c in conns])
    ax.set_ylabel("test accuracy (%)")
    lo = min(lows, default=0.0)
    bottom = max(0.0, math.floor((lo - 10) / 10) * 10)
    ax.set_ylim(bottom, 104)  # intervals wider than the plot are clipped at its edges
    classes = {r["n_classes"] for r in records if r.get("n_classes")}
    if len(classes) == 1:  # chance level: always guessing one class of a balanced set
        chance = 100.0 / classes.pop()
        if chance >= bottom:
            ax.axhline(chance, color="tab:red", ls="--", lw=1, label=f"chance ({chance:.1f} %)")
        else:
            title += f"  (chance {chance:.1f} %, below the axis)"
    for x, params in bars:  # parameter count at the foot of each bar
        ax.text(x, bottom + 1.0, f"{params / 1000:.1f}k\nparams" if params >= 1000 else f"{params}\nparams", ha="center", va="bottom", fontsize=7,
                color="white", fontweight="bold")
    fig.suptitle(title, fontsize=10)
    fig.legend(fontsize=8, loc="outside lower center", ncol=len(variants) + 1, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    path = out / "ablation.png"
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path


# -- the command ------------------------------------------------------------------------------------
def _merge_plan(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The grid as every process sharing the folder planned it: the union of variants, seeds, fan-ins."""
    union = lambda a, b: list(dict.fromkeys([*a, *b]))  # noqa: E731 (keeps the first order)
    return {**new, "variants": union(old.get("variants", []), new["variants"]),
            "seeds": sorted(set(old.get("seeds", [])) | set(new["seeds"])),
            "fanins": sorted(set(old.get("fanins", [])) | set(new["fanins"]))}


def read_grid(out: "str | os.PathLike") -> tuple[ExperimentConfig, list[Cell]]:
    """The base config and cells recorded in ``OUT/grid.json`` (written when a grid starts)."""
    plan_path = Path(out) / "grid.json"
    if not plan_path.exists():
        raise UserError(f"{plan_path} not found: no grid was started in {out}, so there is nothing to summarise yet")
    try:
        plan = json.loads(plan_path.read_text())
        base = config_from_dict(plan["base_config"])
        return base, grid_cells(plan["variants"], plan["seeds"], plan["fanins"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{plan_path} is not a readable grid record ({type(e).__name__}: {e})") from None


def _write_grid_summary(base: ExperimentConfig, cells: Sequence[Cell], out: Path, elapsed_s: float | None,
                        log) -> list[dict[str, Any]] | None:
    """summary.csv/.md, cells.csv and ablation.png of the finished cells; None (and a message) when
    no cell has finished yet."""
    records = collect(base, cells, out)
    finished = sum(r["done"] for r in records)
    if finished == 0:
        log(f"nothing to summarise yet: none of the {_count(len(cells), 'cell')} in {out} has finished")
        return None
    seeds = sorted({c.seed for c in cells})
    title = (f"{base.data.dataset}: {_count(base.train.epochs, 'epoch')}, {_count(len(seeds), 'seed')}, "
             f"{base.model.n_layers}x{base.model.hidden_size} hidden, Td {base.model.kernel_size}")
    note = f"{finished}/{len(cells)} cells finished" + (
        f"; this invocation took {elapsed_s:.0f} s." if elapsed_s is not None else ".")
    table = write_summary(out, records, title, note)
    plot_summary(out, records, title)
    log(_console_table(table))
    missing = len(cells) - finished
    log(f"wrote {out / 'summary.csv'}, {out / 'summary.md'}, {out / 'ablation.png'}, {out / 'cells.csv'}"
        + (f"; {_count(missing, 'cell')} not finished yet (run again or wait for the other processes)"
           if missing else ""))
    return table


def summarize_grid(out: "str | os.PathLike", log=print) -> list[dict[str, Any]]:
    """``ablate --summary-only``: the summary of the grid recorded in ``out`` (no flags repeated)."""
    out = Path(out)
    base, cells = read_grid(out)
    table = _write_grid_summary(base, cells, out, None, log)
    if table is None:
        raise UserError(f"nothing to summarise yet: none of the {_count(len(cells), 'cell')} in {out} has finished")
    return table


def ablate(base: ExperimentConfig, out: "str | os.PathLike", seeds: int | Sequence[int] = 3,
           variants: Sequence[str] = DEFAULT_VARIANTS, fanin: int = 0, sparse_only: bool = False,
           workers: int = 1, stale_after_s: float = 3600.0, summary_only: bool = False,
           log=print, launch: Launch | None = None) -> list[dict[str, Any]]:
    """Run (or resume, or join) an ablation grid in ``out`` and write its summary; returns the summary
    rows (empty while no cell has finished). ``summary_only`` trains nothing and only rewrites the
    summary of the finished cells. The summary covers every cell recorded in ``grid.json``
    (the union of what every process sharing ``out`` asked for). ``launch``: where the cells run
    (:class:`snn_delays.launchers.Launch`; default: ``workers`` processes of this machine)."""
    out = Path(out)
    if summary_only:
        return summarize_grid(out, log)
    if not variants:
        raise UserError("--variants is empty; choose from " + ", ".join(ABLATION_VARIANTS))
    if stale_after_s <= 0:
        raise UserError(f"--stale-after must be > 0 seconds; got {stale_after_s}")
    out.mkdir(parents=True, exist_ok=True)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    fanins = [fanin] if (fanin > 0 and sparse_only) else ([0, fanin] if fanin > 0 else [0])
    variants = list(dict.fromkeys(variants))
    cells = grid_cells(variants, seed_list, fanins)
    plan = {"base_config": asdict(result_config(base)), "variants": variants, "seeds": seed_list,
            "fanins": fanins}
    plan_path = out / "grid.json"
    if plan_path.exists():
        old = json.loads(plan_path.read_text())
        old_base = result_config(config_from_dict(old["base_config"]))
        if asdict(old_base) != plan["base_config"]:
            changed = ", ".join(f"{k}: {config_value(old_base, k)!r} -> {config_value(result_config(base), k)!r}"
                                for k in config_differences(old_base, result_config(base)))
            raise UserError(f"{out} holds a grid with another base configuration ({changed}); "
                            f"choose another --out, or run with the grid's values")
        plan = _merge_plan(old, plan)
    atomic_write_text(plan_path, json.dumps(plan, indent=2))
    t0 = time.perf_counter()
    run_cells(base, cells, out, stale_after_s, workers, log, unit="cell", launch=launch)
    all_cells = grid_cells(plan["variants"], plan["seeds"], plan["fanins"])
    return _write_grid_summary(base, all_cells, out, time.perf_counter() - t0, log) or []


@dataclass(frozen=True)
class CellJob:
    """One grid cell as a scheduler job (picklable; :mod:`snn_delays.launchers`): train ``cell`` of
    the grid in ``out`` (:func:`run_grid` on that cell alone: skipped when finished or taken by a
    live process, resumed from its ``last.pt`` when interrupted). Calling it again resumes it, which
    is also what submitit requeues after a Slurm time-out or pre-emption (:meth:`checkpoint`)."""

    base: dict[str, Any]  # the base config as a dict (asdict)
    cell: Any  # a Cell or a crossval.FoldCell
    out: str
    stale_after_s: float = 3600.0

    def __call__(self) -> dict[str, Any]:
        counts = run_grid(config_from_dict(self.base), [self.cell], Path(self.out), self.stale_after_s)
        run = self.cell.folder(Path(self.out))
        summary = json.loads((run / "summary.json").read_text()) if is_done(run) else {}
        return {**counts, "folder": str(run), "test_acc": summary.get("test_acc")}

    def checkpoint(self, *args: Any, **kwargs: Any):
        return resubmission(self)


def _run_cell_jobs(base: ExperimentConfig, cells: Sequence[Cell], out: Path, stale_after_s: float, launch: Launch,
                   log, unit: str) -> None:
    todo = [c for c in cells if not is_done(c.folder(out))]
    jobs = {str(c.folder(out).relative_to(out / "runs")): CellJob(asdict(base), c, str(out), stale_after_s)
            for c in todo}
    if not jobs:
        log(f"every one of the {_count(len(cells), unit)} was done before; nothing to submit")
        return
    outcomes = run_jobs(jobs, launch, out / "submitit", log)
    if not launch.wait:
        log(f"{_count(len(jobs), 'job')} submitted, not waited for (--no-wait); run the same command again "
            f"(or --summary-only) for the summary")
        return
    ran = sum(1 for o in outcomes.values() if o.result and o.result["ran"])
    busy = sum(1 for o in outcomes.values() if o.result and o.result["busy"])
    failed = [o for o in outcomes.values() if o.error]
    log(f"{launch.launcher} jobs ran {_count(ran, unit)}; {len(cells) - len(todo)} were done before"
        + (f", {busy} were being run by other processes" if busy else ""))
    if failed:
        log(f"warning: {_count(len(failed), 'job')} failed ({', '.join(o.key for o in failed)}); run the same command "
            f"again to resume them from their last.pt (logs in {out / 'submitit'})")


def run_cells(base: ExperimentConfig, cells: Sequence[Cell], out: Path, stale_after_s: float, workers: int,
              log, unit: str = "cell", launch: Launch | None = None) -> None:
    """Run the unfinished ``cells`` of a grid in this process (``workers <= 1``), in ``workers``
    spawned processes, or as submitit jobs (``launch``), and log what was run; shared by ``ablate``
    and ``cv``."""
    if launch is not None and launch.uses_submitit:
        _run_cell_jobs(base, cells, out, stale_after_s, launch, log, unit)
    elif workers <= 1:
        counts = run_grid(base, cells, out, stale_after_s, log)
        log(f"this process ran {_count(counts['ran'], unit)}; {counts['done_before']} were done before, "
            f"{counts['busy']} are being run by other processes")
    else:
        bad = run_workers(run_grid, asdict(base), (cells, out, stale_after_s), workers)
        if bad:
            log(f"warning: {_count(len(bad), 'worker')} failed (exit codes {bad}); run the command again to resume")


def _console_table(table: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'connectivity':<18}{'variant':<18}{'mean %':>8}{'ci95':>8}{'n':>4}{'params':>10}"]
    for r in table:
        lines.append(f"{connectivity_label(r['fanin']):<18}{r['variant']:<18}{_fmt(r['mean']):>8}"
                     f"{'±' + _fmt(r['ci95']):>8}{r['n']:>4}{r['params']:>10,}")
    return "\n".join(lines)
