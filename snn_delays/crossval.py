"""Leave-one-speaker-out cross-validation: ``snn-delays cv``.

Speaker-independent accuracy on FSDD (5 speakers): every speaker is the test set of one fold and is
never used for training or model selection in that fold. A grid is (variant, test speaker, seed)
cells, each an ordinary run folder::

    OUT/runs/<variant>/<speaker>/seed<S>/
    OUT/cv.json (the plan), OUT/folds.csv, OUT/summary.csv, OUT/summary.md

Validation (model selection: the epoch kept): ``--valid slice`` (default) is a seeded, stratified
slice of the training speakers' files; ``--valid next`` holds out the next speaker in the sorted
list as the validation set (fold k trains on 3 speakers) so that selection measures speaker
generalisation too. The default keeps 4 training speakers: with 5 speakers, giving a whole speaker
to validation costs a quarter of the speaker variety the model learns from, and the schedule's
best epoch is near its end either way (see docs/experiments.md). ``tune`` uses ``next`` to optimise a
speaker-independent validation accuracy without looking at the test speaker.

Summary: per fold the test accuracy at the best validation epoch (mean over seeds when several),
then per variant the mean over folds and the half-width of the 95 % t-interval over folds
(:func:`snn_delays.ablation.ci95`), with the training seconds per fold. Resumable and shareable like
``ablate`` (the same cell runner, locks and workers: :func:`snn_delays.ablation.run_grid`; the same
launchers: ``--launcher submitit`` runs each fold as a Slurm job, :mod:`snn_delays.launchers`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from neuromorphic_export._io import atomic_write_text

from .ablation import ABLATION_VARIANTS, DEFAULT_VARIANTS, _count, _fmt, ci95, is_done, run_cells, variant_model
from .checkpoint import resolve_checkpoint_path
from .config import ExperimentConfig, config_from_dict, result_config
from .data.fsdd import fsdd_speakers
from .errors import UserError
from .evaluate import run_scores
from .launchers import Launch
from .train import train

__all__ = ["FoldCell", "fold_cells", "valid_speaker_for", "collect_folds", "summarize_folds", "cross_validate",
           "VALID_MODES", "loso_validation", "ensemble_folds", "summarize_ensembles", "SCORES_FILE"]

VALID_MODES = ("slice", "next")
SCORES_FILE = "test_scores.npz"  # in a run folder: its best.pt's summed softmax on the test split (ensembles)


@dataclass(frozen=True)
class FoldCell:
    """One training run: ``variant`` with ``speaker`` as the test set (``valid`` the validation
    speaker, "" = a slice of the training speakers). Runs through :func:`snn_delays.ablation.run_grid`."""

    variant: str
    speaker: str
    seed: int
    valid: str = ""
    fanin: int = 0  # set by the base config; read by run_grid's log line

    def folder(self, out: Path) -> Path:
        return out / "runs" / self.variant / self.speaker / f"seed{self.seed}"

    def config(self, base: ExperimentConfig) -> ExperimentConfig:
        cfg = replace(base, name=f"{base.name}-loso-{self.speaker}-{self.variant}-seed{self.seed}",
                      model=variant_model(base.model, self.variant),
                      data=replace(base.data, test_speakers=self.speaker, valid_speakers=self.valid),
                      train=replace(base.train, seed=self.seed))
        return cfg.validate()


def valid_speaker_for(speaker: str, speakers: Sequence[str], mode: str) -> str:
    """The validation speaker of the fold testing ``speaker``: "" (a slice) or the next one in order."""
    if mode not in VALID_MODES:
        raise UserError(f"--valid must be one of {', '.join(VALID_MODES)}; got {mode!r}")
    if mode == "slice":
        return ""
    if len(speakers) < 3:
        raise UserError(f"--valid next needs at least 3 speakers (test, validation, training); have {len(speakers)}")
    order = sorted(speakers)
    return order[(order.index(speaker) + 1) % len(order)]


def fold_cells(variants: Sequence[str], speakers: Sequence[str], seeds: Sequence[int], valid: str = "slice",
               fanin: int = 0) -> list[FoldCell]:
    """Seed-major, then variant, then speaker: a partial grid already has every fold of the first variant."""
    for v in variants:
        if v not in ABLATION_VARIANTS:
            raise UserError(f"unknown variant {v!r}; choose from {', '.join(ABLATION_VARIANTS)}")
    return [FoldCell(v, spk, s, valid_speaker_for(spk, speakers, valid), fanin)
            for s in seeds for v in variants for spk in speakers]


def _train_seconds(run: Path) -> float:
    """Seconds spent training and evaluating (the sum of the epochs' times in metrics.jsonl)."""
    total = 0.0
    try:
        for line in (run / "metrics.jsonl").read_text().splitlines():
            if line.strip():
                total += float(json.loads(line).get("epoch_time_s") or 0.0)
    except (OSError, ValueError):
        return float("nan")
    return total


def collect_folds(cells: Sequence[FoldCell], out: Path) -> list[dict[str, Any]]:
    """One record per cell: test accuracy at the best validation epoch, when finished."""
    rows = []
    for cell in cells:
        run = cell.folder(out)
        rec: dict[str, Any] = {"variant": cell.variant, "speaker": cell.speaker, "seed": cell.seed,
                               "valid": cell.valid or "slice", "done": is_done(run), "test_acc": float("nan"),
                               "best_valid_acc": float("nan"), "best_epoch": -1, "params": None,
                               "train_s": float("nan")}
        if rec["done"]:
            s = json.loads((run / "summary.json").read_text())
            rec.update(test_acc=s["test_acc"], best_valid_acc=s["best_valid_acc"], best_epoch=s["best_epoch"],
                       params=s["trainable_parameters"], train_s=_train_seconds(run))
        rows.append(rec)
    return rows


def summarize_folds(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant: per-fold accuracy (mean over that fold's finished seeds), the mean over
    folds, the 95 % t-interval half-width over folds, the mean validation accuracy and seconds per fold."""
    table = []
    for variant in dict.fromkeys(r["variant"] for r in records):
        rs = [r for r in records if r["variant"] == variant]
        per_fold: dict[str, float] = {}
        valid, secs = [], []
        for spk in dict.fromkeys(r["speaker"] for r in rs):
            done = [r for r in rs if r["speaker"] == spk and r["done"]]
            if done:
                per_fold[spk] = sum(r["test_acc"] for r in done) / len(done)
                valid.append(sum(r["best_valid_acc"] for r in done) / len(done))
                secs += [r["train_s"] for r in done]
        mean, half, std, n = ci95(list(per_fold.values()))
        table.append({"variant": variant, "mean": mean, "ci95": half, "std": std, "n_folds": n,
                      "n_planned": len({r["speaker"] for r in rs}), "per_fold": per_fold,
                      "valid_mean": sum(valid) / len(valid) if valid else float("nan"),
                      "train_s_per_fold": sum(secs) / len(secs) if secs else float("nan"),
                      "params": next((r["params"] for r in rs if r["params"] is not None), None)})
    return table


def write_fold_summary(out: Path, records: Sequence[dict[str, Any]], title: str, note: str = "") -> list[dict[str, Any]]:
    """folds.csv (every cell), summary.csv (one row per variant) and summary.md (both tables)."""
    table = summarize_folds(records)
    speakers = list(dict.fromkeys(r["speaker"] for r in records))
    buf = io.StringIO()
    keys = ["variant", "speaker", "seed", "valid", "done", "test_acc", "best_valid_acc", "best_epoch", "params",
            "train_s"]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: r[k] for k in keys})
    atomic_write_text(out / "folds.csv", buf.getvalue())

    buf = io.StringIO()
    keys = ["variant", "mean", "ci95", "std", "n_folds", "n_planned", "valid_mean", "train_s_per_fold", "params",
            *speakers]
    w = csv.DictWriter(buf, fieldnames=keys, lineterminator="\n")
    w.writeheader()
    for row in table:
        w.writerow({**{k: (f"{row[k]:.6f}" if isinstance(row[k], float) else row[k]) for k in keys[:9]},
                    **{s: (f"{row['per_fold'][s]:.6f}" if s in row["per_fold"] else "") for s in speakers}})
    atomic_write_text(out / "summary.csv", buf.getvalue())

    lines = [f"# {title}", "",
             "Leave-one-speaker-out: test accuracy (%) on the held-out speaker at the epoch of best validation "
             "accuracy; mean ± half-width of the 95 % t-interval over folds.", "",
             "| variant | " + " | ".join(speakers) + " | mean | ci95 | folds | valid | s/fold | params |",
             "|---|" + "---|" * (len(speakers) + 6)]
    for row in table:
        cells = [_fmt(row["per_fold"].get(s, float("nan"))) for s in speakers]
        secs = row["train_s_per_fold"]
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + f" | {_fmt(row['mean'])} | ± {_fmt(row['ci95'])} | "
                     f"{row['n_folds']}/{row['n_planned']} | {_fmt(row['valid_mean'])} | "
                     f"{'-' if secs != secs else f'{secs:.0f}'} | {row['params'] or '-'} |")
    if note:
        lines += ["", note]
    atomic_write_text(out / "summary.md", "\n".join(lines) + "\n")
    return table


# -- seed ensembles at evaluation ------------------------------------------------------------------
def _cached_scores(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(scores (N, K), labels (N,)) of ``run``'s best.pt on its test split (:func:`run_scores`), kept in
    ``run/SCORES_FILE`` keyed by best.pt's size and modification time (recomputed when it changes)."""
    ckpt = resolve_checkpoint_path(run, "best").stat()
    key = np.array([ckpt.st_size, ckpt.st_mtime_ns], dtype=np.int64)
    path = run / SCORES_FILE
    try:
        with np.load(path) as z:
            if np.array_equal(z["key"], key):
                return z["scores"], z["labels"]
    except (OSError, KeyError, ValueError):
        pass
    scores, labels = run_scores(run, "test", "best")
    buf = io.BytesIO()
    np.savez(buf, scores=scores, labels=labels, key=key)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, path)
    return scores, labels


def ensemble_folds(cells: Sequence[FoldCell], out: Path) -> list[dict[str, Any]]:
    """Seed ensembles at evaluation, one record per (variant, speaker) with a finished run: the test
    accuracy of the average over that fold's finished seeds of their best.pt's summed softmax
    (sample by sample, rounded delays), beside the mean of the seeds' own accuracies. Records:
    {"variant", "speaker", "seeds" (list), "ensemble_acc", "single_acc" (mean over the seeds of the
    accuracy each model alone reaches on the same samples)}. Costs one evaluation pass per run (cached)."""
    groups: dict[tuple[str, str], list[FoldCell]] = {}
    for cell in cells:
        groups.setdefault((cell.variant, cell.speaker), []).append(cell)
    rows = []
    for (variant, speaker), members in groups.items():
        done = [c for c in members if is_done(c.folder(out))]
        if not done:
            continue
        total, labels, singles = None, None, []
        for cell in done:
            scores, y = _cached_scores(cell.folder(out))
            if labels is not None and not np.array_equal(y, labels):
                raise UserError(f"{cell.folder(out)}: its test split differs from the other seeds' of fold {speaker} "
                                "(another dataset or split); cannot ensemble")
            labels = y
            total = scores if total is None else total + scores
            singles.append(float((scores.argmax(1) == y).mean()))
        rows.append({"variant": variant, "speaker": speaker, "seeds": [c.seed for c in done],
                     "ensemble_acc": float((total.argmax(1) == labels).mean()),
                     "single_acc": sum(singles) / len(singles)})
    return rows


def summarize_ensembles(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per variant: per-fold ensemble accuracy, its mean over folds and 95 % t-interval, the
    seeds per fold (fewest), and the gain over the seeds' mean accuracy, paired per fold (mean, ci95)."""
    table = []
    for variant in dict.fromkeys(r["variant"] for r in records):
        rs = [r for r in records if r["variant"] == variant]
        mean, half, std, n = ci95([r["ensemble_acc"] for r in rs])
        gain, gain_half, _, _ = ci95([r["ensemble_acc"] - r["single_acc"] for r in rs])
        table.append({"variant": variant, "per_fold": {r["speaker"]: r["ensemble_acc"] for r in rs}, "mean": mean,
                      "ci95": half, "std": std, "n_folds": n, "min_seeds": min(len(r["seeds"]) for r in rs),
                      "gain": gain, "gain_ci95": gain_half})
    return table


def write_ensemble_summary(out: Path, records: Sequence[dict[str, Any]], speakers: Sequence[str]) -> list[str]:
    """ensemble.csv (one row per fold) and the markdown lines of the ensemble table (for summary.md)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["variant", "speaker", "seeds", "ensemble_acc", "single_acc"],
                       lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({**r, "seeds": " ".join(map(str, r["seeds"])), "ensemble_acc": f"{r['ensemble_acc']:.6f}",
                    "single_acc": f"{r['single_acc']:.6f}"})
    atomic_write_text(out / "ensemble.csv", buf.getvalue())
    lines = ["## Seed ensembles at evaluation", "",
             "The held-out speaker classified by the average of the seeds' summed softmax outputs (best.pt of each "
             "seed, rounded delays); gain = ensemble minus the mean of the single seeds, paired per fold.", "",
             "| variant (ensemble) | " + " | ".join(speakers) + " | mean | ci95 | folds | seeds | gain |",
             "|---|" + "---|" * (len(speakers) + 5)]
    for row in summarize_ensembles(records):
        cells = [_fmt(row["per_fold"].get(s, float("nan"))) for s in speakers]
        lines.append(f"| {row['variant']} | " + " | ".join(cells) + f" | {_fmt(row['mean'])} | ± {_fmt(row['ci95'])} | "
                     f"{row['n_folds']} | {row['min_seeds']} | {_fmt(row['gain'])} ± {_fmt(row['gain_ci95'])} |")
    return lines



def _plan(out: Path) -> dict[str, Any]:
    path = out / "cv.json"
    if not path.exists():
        raise UserError(f"{path} not found: no cross-validation was started in {out}, so there is nothing to summarise")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise UserError(f"{path} is not a readable plan ({e})") from None


def _cells_of(plan: dict[str, Any]) -> list[FoldCell]:
    return fold_cells(plan["variants"], plan["speakers"], plan["seeds"], plan["valid"], plan.get("fanin", 0))


def _summary(base: ExperimentConfig, cells: Sequence[FoldCell], out: Path, note: str, log,
             ensemble: bool = False) -> list[dict[str, Any]]:
    records = collect_folds(cells, out)
    finished = sum(r["done"] for r in records)
    if finished == 0:
        log(f"nothing to summarise yet: none of the {_count(len(cells), 'run')} in {out} has finished")
        return []
    title = (f"{base.data.dataset} ({base.data.input}) leave-one-speaker-out: {_count(base.train.epochs, 'epoch')}, "
             f"{base.model.n_layers}x{base.model.hidden_size} hidden, Td {base.model.kernel_size}")
    note = f"{finished}/{len(cells)} runs finished. {note}".strip()
    if ensemble:
        ens = ensemble_folds(cells, out)
        note += "\n\n" + "\n".join(write_ensemble_summary(out, ens, list(dict.fromkeys(c.speaker for c in cells))))
    table = write_fold_summary(out, records, title, note)
    for row in table:
        log(f"{row['variant']:<18} {_fmt(row['mean'])} ± {_fmt(row['ci95'])} % over {row['n_folds']}/"
            f"{row['n_planned']} folds ({', '.join(f'{s} {_fmt(a)}' for s, a in row['per_fold'].items())})")
    if ensemble:
        for row in summarize_ensembles(ens):
            log(f"{row['variant'] + ' ensemble':<18} {_fmt(row['mean'])} ± {_fmt(row['ci95'])} % over "
                f"{row['n_folds']} folds, {row['min_seeds']}+ seeds each (gain over single seeds "
                f"{_fmt(row['gain'])} ± {_fmt(row['gain_ci95'])})")
    log(f"wrote {out / 'summary.md'}, {out / 'summary.csv'}, {out / 'folds.csv'}")
    return table


def cross_validate(base: ExperimentConfig, out: "str | os.PathLike", speakers: Sequence[str] | None = None,
                   variants: Sequence[str] = DEFAULT_VARIANTS, seeds: Sequence[int] = (0,), valid: str = "slice",
                   workers: int = 1, stale_after_s: float = 3600.0, summary_only: bool = False,
                   log=print, launch: Launch | None = None, ensemble: bool = False) -> list[dict[str, Any]]:
    """Run (or resume, or join) the leave-one-speaker-out grid in ``out`` and write its summary;
    returns the summary rows (one per variant). ``speakers`` None: every speaker of the folder.
    ``launch``: where the runs go (:class:`snn_delays.launchers.Launch`; default ``workers`` here).
    ``ensemble``: also the seed ensembles of every fold (:func:`ensemble_folds`) in summary.md and
    ensemble.csv."""
    out = Path(out)
    if summary_only:
        plan = _plan(out)
        return _summary(config_from_dict(plan["base_config"]), _cells_of(plan), out, "", log, ensemble)
    if base.data.dataset != "fsdd":
        raise UserError(f"cv holds out one speaker per fold; it needs --dataset fsdd (got {base.data.dataset})")
    if base.data.test_speakers or base.data.valid_speakers:
        raise UserError("cv chooses the test and validation speakers of each fold; drop --test-speakers / "
                        "data.valid_speakers (use --speakers to choose the folds, --valid for validation)")
    if not variants:
        raise UserError("--variants is empty; choose from " + ", ".join(ABLATION_VARIANTS))
    present = fsdd_speakers(base.data.root or None)
    speakers = list(dict.fromkeys(speakers)) if speakers else present
    unknown = sorted(set(speakers) - set(present))
    if unknown:
        raise UserError(f"--speakers {', '.join(unknown)} not in the folder; speakers: {', '.join(present)}")
    if len(present) < 2:
        raise UserError(f"leave-one-speaker-out needs at least 2 speakers; the folder has {len(present)}")
    cells = fold_cells(list(dict.fromkeys(variants)), speakers, list(seeds), valid, base.model.fanin)
    if valid == "next":  # the validation speaker comes from every speaker present, not only the folds run
        cells = [replace(c, valid=valid_speaker_for(c.speaker, present, valid)) for c in cells]
    out.mkdir(parents=True, exist_ok=True)
    plan = {"base_config": asdict(result_config(base)), "variants": list(dict.fromkeys(variants)),
            "speakers": speakers, "seeds": list(seeds), "valid": valid, "fanin": base.model.fanin}
    path = out / "cv.json"
    if path.exists():
        old = json.loads(path.read_text())
        if asdict(result_config(config_from_dict(old["base_config"]))) != plan["base_config"] or old.get("valid") != valid:
            raise UserError(f"{out} holds a cross-validation with another configuration or --valid; choose another --out")
        union = lambda a, b: list(dict.fromkeys([*a, *b]))  # noqa: E731 (keeps the first order)
        plan = {**plan, "variants": union(old["variants"], plan["variants"]),
                "speakers": union(old["speakers"], plan["speakers"]), "seeds": sorted(set(old["seeds"]) | set(seeds))}
    atomic_write_text(path, json.dumps(plan, indent=2))
    t0 = time.perf_counter()
    run_cells(base, cells, out, stale_after_s, workers, log, unit="run", launch=launch)
    all_cells = _cells_of(plan)
    if valid == "next":
        all_cells = [replace(c, valid=valid_speaker_for(c.speaker, present, valid)) for c in all_cells]
    return _summary(base, all_cells, out, f"This invocation took {time.perf_counter() - t0:.0f} s.", log, ensemble)


def loso_validation(cfg: ExperimentConfig, out: Path, on_fold_end=None) -> dict[str, Any]:
    """The objective ``tune --loso`` maximises: train ``cfg`` once per FSDD speaker with that speaker
    as test set and the next one as validation set (``--valid next``) into ``out/<speaker>``, and
    return ``{"valid_acc": mean best validation accuracy over folds, "test_acc": mean test accuracy
    (information only, never selected on), "folds": {speaker: best validation accuracy}}``.
    ``on_fold_end(k, running_mean)`` is called after fold k (an exception it raises stops the trial)."""
    if cfg.data.dataset != "fsdd":
        raise UserError(f"--loso holds out one FSDD speaker per fold; it needs --dataset fsdd (got {cfg.data.dataset})")
    speakers = fsdd_speakers(cfg.data.root or None)
    valid, test = {}, []
    for k, cell in enumerate(fold_cells([cfg.model.variant], speakers, [cfg.train.seed], "next")):
        res = train(cell.config(cfg), Path(out) / cell.speaker, resume=True)
        valid[cell.speaker] = float(res["best_valid_acc"])
        test.append(float(res["test_acc"]))
        if on_fold_end is not None:
            on_fold_end(k, sum(valid.values()) / len(valid))
    return {"valid_acc": sum(valid.values()) / len(valid), "test_acc": sum(test) / len(test), "folds": valid}
