"""Figures of a run folder: ``snn-delays plot RUN_DIR``.

Writes into ``RUN_DIR/plots/`` (or ``--out``), every PNG with the numbers it shows beside it:

* ``curves.png`` + ``curves.csv``: loss, train/valid/test accuracy, sigma and learning rates per epoch.
* ``delays.png`` + ``delays.csv`` + ``delays.json``: the histogram of learned delays of every
  delay layer (bins of 0.1 step). What to look for: peaks at integers (the period-1 pattern that
  sigma -> 0.5 and rounding produce) and piles at 0 or Td - 1 (the range is too small: raise
  ``model.kernel_size``). ``delays.json`` holds the fraction near an integer and at each limit.
  With learned widths (``model.learn_sigma``) a histogram of the widths sits beside each layer.
* ``kernels.png`` + ``kernels.json``: the training kernels (the run's ``model.interpolation``, with
  that epoch's sigma or each element's learned width) of a few neurons of one layer at several
  epochs, input synapses on the y axis and delay on the x axis (the thesis's Figure 4.4 style).
  Built from the ``kernel_history`` kept in checkpoints.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from neuromorphic_export.model_variants import stored_variant_fields

from ._optional import require
from .backends.interpolation import WIDTH_MIN
from .checkpoint import load_checkpoint
from .errors import UserError
from .synapse import interpolated_kernel

__all__ = ["plot_run", "plot_curves", "plot_delay_histograms", "plot_kernels", "delay_histograms"]


def _plt():
    matplotlib = require("matplotlib", "snn-delays plot")

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _metrics(run: Path) -> list[dict[str, Any]]:
    f = run / "metrics.jsonl"
    if not f.exists():
        raise UserError(f"{f} not found: {run} is not a run folder")
    rows = []
    for number, line in enumerate(f.read_text().splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise UserError(f"{f}, line {number}: not a JSON object (a damaged metrics file)") from None
    return rows


def _run_name(run: Path) -> str:
    """The run's config name (e.g. synthetic-fanin10-full-seed0), else its folder name."""
    import tomllib

    try:
        with open(run / "config.toml", "rb") as f:
            return str(tomllib.load(f).get("name") or run.name)
    except (OSError, ValueError):
        return run.name


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    keys = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def _integer_epoch_axis(axes, epochs: Sequence[int]) -> None:
    """Whole-number epoch ticks, and room around the points when there are only one or two epochs."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        if len(epochs) <= 2:
            ax.set_xticks(list(epochs))
            ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))


# -- training curves ---------------------------------------------------------------------------------
def plot_curves(run: Path, out: Path) -> Path:
    plt = _plt()
    rows = _metrics(run)
    if not rows:
        raise UserError(f"{run / 'metrics.jsonl'} is empty: no finished epoch to plot")
    _write_csv(out / "curves.csv", rows)
    ep = [r["epoch"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), layout="constrained")
    ax = axes[0]
    ax.plot(ep, [r["train_loss"] for r in rows], "-o", ms=3, color="black", label="train")
    checked = [r for r in rows if r.get("valid_loss") is not None]  # evaluated epochs (newer runs)
    if checked:
        ax.plot([r["epoch"] for r in checked], [r["valid_loss"] for r in checked], "-o", ms=3, color="tab:orange",
                label="valid")
        ax.legend(fontsize=8)
    ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    losses = [v for r in rows for v in (r["train_loss"], r.get("valid_loss")) if v is not None and v > 0]
    if losses and max(losses) > 10 * min(losses):  # a log axis only where it spans a decade
        ax.set_yscale("log")
    ax = axes[1]
    evaluated = [r for r in rows if r["valid_acc"] is not None]  # every train.eval_every epochs
    for key, c in (("train_acc", "tab:blue"), ("valid_acc", "tab:orange"), ("test_acc", "tab:green")):
        shown = rows if key == "train_acc" else evaluated
        ax.plot([r["epoch"] for r in shown], [100 * r[key] for r in shown], "-o", ms=3, color=c,
                label=key.replace("_acc", ""))
    title = "accuracy (eval: rounded delays)"
    if evaluated:  # the best epoch named in the title: an annotation can fall outside the axes
        best = max(evaluated, key=lambda r: r["valid_acc"])
        ax.axvline(best["epoch"], color="grey", ls=":", lw=1)
        title += f"\nbest valid at epoch {best['epoch']} (dotted): test {100 * best['test_acc']:.1f} %"
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    ax = axes[2]
    ax.plot(ep, [r["sigma"] for r in rows], "-o", ms=3, color="tab:purple", label="sigma (steps)")
    ax.set(xlabel="epoch", ylabel="sigma (steps)", title="schedules")
    ax2 = ax.twinx()
    ax2.plot(ep, [r["lr_weights"] for r in rows], "--s", ms=3, color="tab:red", label="lr weights")
    ax2.plot(ep, [r["lr_delays"] for r in rows], ":^", ms=3, color="tab:brown", label="lr delays")
    ax2.set_yscale("log")
    ax2.set_ylabel("learning rate")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [l.get_label() for l in lines], fontsize=8, loc="best")
    _integer_epoch_axis(axes, ep)
    fig.suptitle(f"{_run_name(run)}: training curves", fontsize=10)
    path = out / "curves.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


# -- delay histograms --------------------------------------------------------------------------------
def _delay_layers(state: dict[str, torch.Tensor], recurrent: bool = False) -> list[tuple[str, np.ndarray]]:
    """(layer name, real-valued delays (steps) of existing synapses) for every feed-forward delay
    synapse, or with ``recurrent`` every recurrent one (their delays d = stored value + 1)."""
    out = []
    names = sorted({k[: -len(".delay")] for k in state if k.endswith(".delay") and (".recurrent" in k) == recurrent},
                   key=lambda n: (n.startswith("readout"), n))
    for name in names:
        d = state[f"{name}.delay"].float() + (1.0 if recurrent else 0.0)
        mask = state.get(f"{name}.mask")
        if mask is not None:
            d = d[mask.bool()]  # (n_synapses, m)
        out.append((name.replace(".synapse", ""), d.reshape(-1).numpy()))
    return out


def _width_layers(state: dict[str, torch.Tensor], interpolation: str) -> dict[str, np.ndarray]:
    """(layer name -> learned kernel widths (steps) of existing synapses), for ``model.learn_sigma``
    runs: s = s0 + |sigma_delta| (:data:`snn_delays.backends.interpolation.WIDTH_MIN`)."""
    out = {}
    for key in state:
        if key.endswith(".sigma_delta"):
            name = key[: -len(".sigma_delta")]
            s = WIDTH_MIN[interpolation] + state[key].float().abs()
            mask = state.get(f"{name}.mask")
            out[name.replace(".synapse", "")] = (s[mask.bool()] if mask is not None else s).reshape(-1).numpy()
    return out


def delay_histograms(state: dict[str, torch.Tensor], kernel_size: int, bin_width: float = 0.1,
                     recurrent: bool = False) -> dict[str, Any]:
    """Histogram (bins of ``bin_width`` steps over [0, Td - 1], or [1, Dr] for the ``recurrent``
    synapses with ``kernel_size`` = Dr) and diagnostics per delay layer."""
    td = kernel_size
    lo = 1.0 if recurrent else 0.0
    hi = lo + td - 1
    edges = np.linspace(lo, hi, int(round((td - 1) / bin_width)) + 1)
    layers = {}
    for name, d in _delay_layers(state, recurrent):
        counts, _ = np.histogram(d, bins=edges)
        frac = d - np.round(d)
        layers[name] = {
            "n": int(d.size),
            "counts": counts.tolist(),
            "near_integer": float(np.mean(np.abs(frac) < 0.1)),  # 0.2 expected for uniform delays
            "at_lower_limit": float(np.mean(d < lo + 0.5)),  # rounds to the lowest delay
            "at_upper_limit": float(np.mean(d > hi - 0.5)),  # rounds to the highest
            "exactly_at_limits": float(np.mean((d <= lo + 1e-6) | (d >= hi - 1e-6))),
            "mean": float(d.mean()) if d.size else float("nan"),
        }
    return {"kernel_size": td, "bin_width": bin_width, "edges": edges.tolist(), "layers": layers,
            "range": [lo, hi], "recurrent": recurrent}


def why_no_delay_figures(model_config: dict[str, Any]) -> str | None:
    """Why a run with this ``[model]`` config has no delays to draw (None: it has)."""
    variant = str(model_config.get("variant", "full"))
    fields = stored_variant_fields(model_config)
    if fields["dense_kernel"]:
        return f"variant {variant} learns a dense kernel per connection (model.dense_kernel), not delays"
    if fields["delays"] == "none":
        return f"variant {variant} has no delays (model.delays = \"none\")"
    if int(model_config.get("kernel_size", 1)) <= 1:
        return "model.kernel_size is 1, so every delay is 0"
    return None


def plot_delay_histograms(run: Path, out: Path, checkpoint: str = "best", recurrent: bool = False) -> Path | None:
    """``delays.png`` (+ csv, json) of ``checkpoint``, or with ``recurrent`` ``recurrent_delays.png``
    of its recurrent synapses (delays in [1, Dr]); None when the run has no such delays."""
    ckpt = load_checkpoint(run, checkpoint)
    model_cfg = ckpt["config"]["model"]
    if recurrent:
        if not model_cfg.get("recurrent") or model_cfg.get("recurrent_delays") == "one-step":
            return None
        td = int(model_cfg.get("recurrent_kernel_size") or model_cfg["kernel_size"])
        if td <= 1:
            return None
    else:
        td = int(model_cfg["kernel_size"])
        if why_no_delay_figures(model_cfg):
            return None
    if not any(k.endswith(".delay") and (".recurrent" in k) == recurrent for k in ckpt["model"]):
        return None
    dt_ms = float(ckpt["config"].get("data", {}).get("dt_ms", 0.0) or 0.0)
    h = delay_histograms(ckpt["model"], td, recurrent=recurrent)
    lo, hi = h["range"]
    stem = "recurrent_delays" if recurrent else "delays"
    interpolation = model_cfg.get("interpolation", "gauss")
    widths = _width_layers(ckpt["model"], interpolation) if model_cfg.get("learn_sigma") and not recurrent else {}
    for name, s in widths.items():  # learned kernel widths (steps) per layer
        h["layers"][name]["width"] = {"mean": float(s.mean()), "min": float(s.min()), "max": float(s.max()),
                                      "median": float(np.median(s))}
    h.update(checkpoint=checkpoint, epoch=int(ckpt["epoch"]), variant=model_cfg["variant"], dt_ms=dt_ms,
             interpolation=interpolation, learn_sigma=bool(model_cfg.get("learn_sigma", False)))
    (out / f"{stem}.json").write_text(json.dumps(h, indent=1))
    edges = np.asarray(h["edges"])
    with open(out / f"{stem}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["bin_start", "bin_end", *h["layers"]])
        for i in range(len(edges) - 1):
            w.writerow([f"{edges[i]:.2f}", f"{edges[i + 1]:.2f}", *(h["layers"][n]["counts"][i] for n in h["layers"])])
    plt = _plt()
    names = list(h["layers"])
    cols = 2 if widths else 1  # learned widths: their histogram beside each layer's delays
    fig, axes = plt.subplots(len(names), cols, figsize=(9 + 3 * (cols - 1), 2.3 + 1.7 * len(names)), squeeze=False,
                             layout="constrained", gridspec_kw={"width_ratios": [3, 1][:cols]})
    for name, ax in zip(names, axes[:, -1] if widths else []):
        s = widths.get(name)
        if s is None:
            ax.set_axis_off()
            continue
        ax.hist(s, bins=40, color="tab:green")
        W = h["layers"][name]["width"]
        ax.set_title(f"learned widths ({interpolation}): mean {W['mean']:.2f}, "
                     f"{W['min']:.2f} .. {W['max']:.2f} steps", fontsize=8, loc="left")
        ax.set_xlabel("kernel width s (steps)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax, name in zip(axes[:, 0], names):
        L = h["layers"][name]
        counts = np.asarray(L["counts"])
        ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="tab:blue", edgecolor="none")
        ax.set_ylabel("synapses")
        for lim in (lo, hi):
            ax.axvline(lim, color="tab:red", ls=":", lw=1)
        ax.set_title(f"{name}: {L['n']:,} synapses   within 0.1 of an integer: {100 * L['near_integer']:.0f} % "
                     f"(uniform: 20 %)   rounding to {lo:g}: {100 * L['at_lower_limit']:.1f} %   "
                     f"to {hi:g}: {100 * L['at_upper_limit']:.1f} %", fontsize=8, loc="left")
    for ax in axes[:-1, 0]:
        ax.sharex(axes[-1, 0])
    axes[-1, 0].set_xlabel(f"delay (steps), bins of {h['bin_width']} step; range [{lo:g}, {hi:g}] (red)")
    axes[-1, 0].set_xticks(range(int(lo), int(hi) + 1, max(1, td // 12)))
    if dt_ms > 0:  # the same axis in milliseconds, above the first panel
        top = axes[0, 0].secondary_xaxis("top", functions=(lambda s: s * dt_ms, lambda ms: ms / dt_ms))
        top.set_xlabel(f"delay (ms; data.dt_ms = {dt_ms:g} ms per step)", fontsize=8)
        top.tick_params(labelsize=7)
    what = "recurrent delays" if recurrent else "learned delays"
    fig.suptitle(f"{_run_name(run)}: {what} ({checkpoint}.pt, epoch {h['epoch']}, variant {h['variant']})",
                 fontsize=10)
    path = out / f"{stem}.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


# -- kernels at several epochs (Figure 4.4 style) -------------------------------------------------------
def _pick_epochs(available: Sequence[int], n: int) -> list[int]:
    if len(available) <= n:
        return list(available)
    idx = np.unique(np.round(np.linspace(0, len(available) - 1, n)).astype(int))
    return [available[i] for i in idx]


def plot_kernels(run: Path, out: Path, layer: int = 0, neurons: int = 3, columns: int = 5,
                 synapses: int = 24, checkpoint: str = "last") -> Path | None:
    """``kernels.png`` (+ json): ``neurons`` neurons of synapse layer ``layer`` at ``columns`` epochs
    spread over training. None when the run has no delays or its checkpoint keeps no kernel history."""
    ckpt = load_checkpoint(run, checkpoint)
    hist = ckpt.get("kernel_history") or []
    hist = [h for h in hist if len(h["layers"]) > layer]
    if not hist or why_no_delay_figures(ckpt["config"]["model"]):
        return None
    td = int(ckpt["config"]["model"]["kernel_size"])
    interpolation = ckpt["config"]["model"].get("interpolation", "gauss")  # the kernel that was trained
    learned = bool(ckpt["config"]["model"].get("learn_sigma", False))
    chosen = _pick_epochs([h["epoch"] for h in hist], columns)
    snaps = [next(h for h in hist if h["epoch"] == e) for e in chosen]
    n_neur = min(neurons, snaps[0]["layers"][layer]["weight"].shape[0])
    w_last = snaps[-1]["layers"][layer]["weight"]  # (n, in, m)
    data = {"layer": layer, "kernel_size": td, "checkpoint": checkpoint, "epochs": [],
            "interpolation": interpolation, "learn_sigma": learned, "note":
            f"the {interpolation} training kernel of snn_delays.backends.interpolation, with "
            + ("each element's learned width (steps)" if learned else "that epoch's shared sigma (steps)")}
    plt = _plt()
    fig, axes = plt.subplots(n_neur, len(snaps), figsize=(1.9 * len(snaps) + 2.2, 2.6 * n_neur + 0.6),
                             squeeze=False, layout="constrained")
    for i in range(n_neur):
        # the `synapses` strongest existing synapses at the last epoch, sorted by their final delay
        strength = w_last[i].abs().sum(-1)  # (in,)
        rows = torch.nonzero(strength > 0).flatten()
        rows = rows[strength[rows].argsort(descending=True)[:synapses]]
        d_last = snaps[-1]["layers"][layer]["delay"][i][rows, 0]
        rows = rows[d_last.argsort()]
        panels = []
        for s in snaps:
            w = s["layers"][layer]["weight"][i][rows].float()  # (k, m)
            d = s["layers"][layer]["delay"][i][rows].float()
            lay = s["layers"][layer]
            width = lay["width"][i][rows].float()[None] if "width" in lay else max(float(s["sigma"]), 1e-3)
            k = interpolated_kernel(w[None], d[None], width, td, interpolation)[0]  # (k, Td)
            panels.append(k.flip(-1).numpy())  # column = delay in steps (tap Td-1-d holds delay d)
        # one colour scale per neuron (row), shown by its colour bar: a wide Gaussian early in
        # training spreads the weight thinly over many taps, a narrow one concentrates it
        vmax = max(float(np.abs(p).max()) for p in panels) or 1.0
        for j, (s, k) in enumerate(zip(snaps, panels)):
            ax = axes[i, j]
            im = ax.imshow(k, aspect="auto", cmap="RdBu_r", vmin=-vmax, vmax=vmax, interpolation="nearest",
                           extent=(-0.5, td - 0.5, len(rows) - 0.5, -0.5))
            if i == 0:
                lay = s["layers"][layer]
                if "width" in lay:  # learned: the widths of the neurons shown
                    wd = lay["width"][:n_neur]
                    what = f"s = {float(wd.min()):.2f} .. {float(wd.max()):.2f} steps"
                elif interpolation == "bilinear":
                    what = "bilinear (no width)"
                else:
                    what = f"σ = {float(s['sigma']):.2f} steps"
                ax.set_title(f"epoch {s['epoch']}\n{what}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"neuron {i}\n{len(rows)} strongest synapses\n(sorted by final delay)", fontsize=8)
            ax.set_yticks([])
            if i == n_neur - 1:
                ax.set_xlabel("delay (steps)", fontsize=8)
            ax.tick_params(labelsize=7)
        bar = fig.colorbar(im, ax=axes[i, :], shrink=0.9, pad=0.02)
        bar.set_label("weight per delay tap", fontsize=8)
        bar.ax.tick_params(labelsize=7)
    for s in snaps:
        lay = s["layers"][layer]
        data["epochs"].append({"epoch": s["epoch"], "sigma": float(s["sigma"]),
                               "weight": lay["weight"][:n_neur].tolist(), "delay": lay["delay"][:n_neur].tolist(),
                               **({"width": lay["width"][:n_neur].tolist()} if "width" in lay else {})})
    (out / "kernels.json").write_text(json.dumps(data))
    name = "readout" if layer == len(snaps[0]["layers"]) - 1 else f"hidden layer {layer}"
    fig.suptitle(f"{_run_name(run)}: {interpolation} kernels{' (learned widths)' if learned else ''} of {n_neur} "
                 f"neuron{'s' if n_neur != 1 else ''} of {name} during training (red +, blue -; one colour scale "
                 f"per neuron)", fontsize=10)
    path = out / "kernels.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def _check_figure_options(layer: int, neurons: int, columns: int, synapses: int, n_synapse_layers: int) -> None:
    for flag, value, what in (("--neurons", neurons, "neurons in the kernel figure"),
                              ("--columns", columns, "epochs shown as columns in the kernel figure; old name --epochs"),
                              ("--synapses", synapses, "input synapses per neuron in the kernel figure")):
        if value < 1:
            raise UserError(f"{flag} must be >= 1 ({what}); got {value}")
    if not 0 <= layer < n_synapse_layers:
        names = ", ".join([f"{k} = hidden layer {k}" for k in range(n_synapse_layers - 1)]
                          + [f"{n_synapse_layers - 1} = readout"])
        raise UserError(f"--layer {layer}: this run has {n_synapse_layers} synapse layers ({names})")


def plot_run(run_dir: "str | os.PathLike", out: "str | os.PathLike | None" = None, layer: int = 0,
             neurons: int = 3, columns: int = 5, checkpoint: str = "best", synapses: int = 24,
             log: "Callable[[str], None] | None" = print) -> list[Path]:
    """All figures of a run folder; returns the PNG paths written. A figure the run cannot have
    (no delays, no kernel history) is skipped and ``log`` says why."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"run folder {run} does not exist")
    last = load_checkpoint(run, "last")
    model_cfg = last["config"]["model"]
    _check_figure_options(layer, neurons, columns, synapses, int(model_cfg["n_layers"]) + 1)
    dest = Path(out) if out else run / "plots"
    if dest.exists() and not dest.is_dir():
        raise UserError(f"--out {dest} is a file, not a folder")
    dest.mkdir(parents=True, exist_ok=True)
    say = log or (lambda message: None)
    made = [plot_curves(run, dest)]
    reason = why_no_delay_figures(model_cfg)
    if reason:
        say(f"delays.png and kernels.png skipped: {reason}")
        return made
    made.append(plot_delay_histograms(run, dest, checkpoint))
    made.append(plot_delay_histograms(run, dest, checkpoint, recurrent=True))
    kept = int(last["config"].get("train", {}).get("kernel_snapshot_neurons", neurons))
    kernels = plot_kernels(run, dest, layer, neurons, columns, synapses)
    if kernels is None:
        say("kernels.png skipped: the checkpoint keeps no kernel history (train.kernel_snapshot_neurons = 0)")
    else:
        made.append(kernels)
        if neurons > kept:
            say(f"kernels.png shows {kept} of the {neurons} neurons asked: checkpoints keep the first {kept} "
                f"of every layer (train.kernel_snapshot_neurons)")
    return [p for p in made if p is not None]
