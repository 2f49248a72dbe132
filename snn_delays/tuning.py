"""Hyperparameter search with Optuna: ``snn-delays tune``.

    snn-delays tune --dataset synthetic --trials 30 --epochs 10 --out runs/tune-synthetic
    snn-delays train --config runs/tune-synthetic/best.toml --out runs/best     # train the winner

Objective: the best validation accuracy of a trial's run (rounded delays; the test split is never
used for selection; it is recorded in each trial's user attributes for information only). With
``--loso`` (FSDD): the mean over speakers of that accuracy, each fold validating on another speaker
than its test speaker (:func:`snn_delays.crossval.loso_validation`; the running mean is reported
after each fold, so ``--warmup-epochs`` counts folds).
Pruning: every epoch's validation accuracy is reported to Optuna and a median pruner
(``--pruner median``, default; ``none`` to disable) stops trials that trail the median of the
trials before them at the same epoch (after ``--warmup-epochs``, default a quarter of the epochs).

Search space (``--params`` picks a subset; names are the keys below). Ranges are relative to the
base configuration (``--config`` / ``--set``) where it makes sense, so the same command fits SHD
and the synthetic task; Td is ``model.kernel_size`` and H ``model.hidden_size`` of the base:

| name | config key | range |
|---|---|---|
| lr_weights | train.lr_weights | log-uniform [1e-3, 3e-2] |
| lr_delays | train.lr_delays | log-uniform [1e-2, 1.0] |
| sigma_init | train.sigma_init | uniform [0.1, 0.5] x Td steps (the reference uses Td // 2) |
| sigma_decay_fraction | train.sigma_decay_fraction | uniform [0.1, 0.7] of the epochs |
| dropout | model.dropout | uniform [0.0, 0.5] |
| tau | model.tau_steps | log-uniform [1.005, 4.0] steps |
| kernel_size | model.kernel_size | odd values near {0.5, 0.75, 1, 1.25, 1.5} x Td |
| hidden_size | model.hidden_size | {H/2, H, 2H} |

Storage and resuming: the study lives in ``--storage`` (default ``sqlite:///OUT/optuna.db``; any
Optuna RDB URL, e.g. ``postgresql://user@host/db``, lets workers on several machines share it)
under ``--study`` (default ``<dataset>-tune``). ``--trials N`` is the number of finished
(complete or pruned) trials the study should have: a later invocation only runs what is missing.
Each trial trains into ``OUT/trials/trial_NNNN`` (its ``last.pt`` written every epoch). When a
worker dies mid-trial, its trial is failed and re-queued with the same parameters, and the retry
resumes that trial's folder from its last epoch. A dead worker is detected at once on the same
machine (its pid is gone) and through Optuna's heartbeat otherwise (``--heartbeat`` seconds).
After every invocation ``OUT/best.toml`` (a config ``snn-delays train --config`` accepts),
``OUT/best.json`` and ``OUT/trials.csv`` describe the study.

Launchers (:mod:`snn_delays.launchers`): ``--workers N`` processes of this machine (default), or
``--launcher submitit`` / ``submitit-local``: every missing trial is one job (:class:`TrialJob`)
that runs one trial of the study in the shared storage (a re-queued dead trial first, so the retry
resumes its folder); use a storage every node reaches (a SQLite file on a shared file system
serves a few jobs; PostgreSQL or MySQL many).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import socket
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from neuromorphic_export._io import atomic_write_text, pid_alive

from ._optional import require
from .config import ExperimentConfig, apply_overrides, config_from_dict, result_config, to_toml
from .crossval import loso_validation
from .errors import TrainingDiverged, UserError
from .launchers import Launch, resubmission, run_jobs
from .train import train
from .workers import run_workers

__all__ = ["SEARCH_SPACE", "suggest_overrides", "tune", "tune_in_workers", "tune_with_launch", "TrialJob", "open_study", "write_best", "mask_url",
           "plot_study", "format_report"]

SEARCH_SPACE = ("lr_weights", "lr_delays", "sigma_init", "sigma_decay_fraction", "dropout", "tau",
                "kernel_size", "hidden_size")


def _odd(x: float) -> int:
    n = max(3, int(round(x)))
    return n if n % 2 else n + 1


def kernel_size_choices(td: int) -> list[int]:
    return sorted({_odd(f * td) for f in (0.5, 0.75, 1.0, 1.25, 1.5)})


def hidden_size_choices(h: int) -> list[int]:
    return sorted({max(1, h // 2), h, 2 * h})


def suggest_overrides(trial, base: ExperimentConfig, params: Sequence[str] = SEARCH_SPACE) -> dict[str, Any]:
    """Draw one point of the search space; returns ``{"section.key": value}`` overrides of ``base``."""
    td, h = base.model.kernel_size, base.model.hidden_size
    out: dict[str, Any] = {}
    if "lr_weights" in params:
        out["train.lr_weights"] = trial.suggest_float("lr_weights", 1e-3, 3e-2, log=True)
    if "lr_delays" in params:
        out["train.lr_delays"] = trial.suggest_float("lr_delays", 1e-2, 1.0, log=True)
    if "kernel_size" in params:
        td = trial.suggest_categorical("kernel_size", kernel_size_choices(td))
        out["model.kernel_size"] = td
    if "sigma_init" in params:
        out["train.sigma_init"] = trial.suggest_float("sigma_init_fraction", 0.1, 0.5) * td
    if "sigma_decay_fraction" in params:
        out["train.sigma_decay_fraction"] = trial.suggest_float("sigma_decay_fraction", 0.1, 0.7)
    if "dropout" in params:
        out["model.dropout"] = trial.suggest_float("dropout", 0.0, 0.5)
    if "tau" in params:
        out["model.tau_steps"] = trial.suggest_float("tau_steps", 1.005, 4.0, log=True)
    if "hidden_size" in params:
        out["model.hidden_size"] = trial.suggest_categorical("hidden_size", hidden_size_choices(h))
    return out


def mask_url(url: str) -> str:
    """A storage URL (or a message quoting one) with its password replaced by ``***``, as
    SQLAlchemy renders it: ``postgresql://alice:***@host/db``."""
    return re.sub(r"(\w[\w+.-]*://[^:/@\s]+:)[^@\s]*@", r"\1***@", url)


def _optuna():
    optuna = require("optuna", "snn-delays tune")
    import warnings

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeat
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


class _Requeue:
    """Called with a trial that died (stale heartbeat or dead local pid): queue a new trial with the
    same parameters and ``user_attrs["retry_of"]`` = the original trial number (its run folder)."""

    def __init__(self, max_retry: int = 3):
        self.max_retry = max_retry

    def __call__(self, study, trial) -> None:
        retries = int(trial.user_attrs.get("retries", 0))
        if retries >= self.max_retry:
            return
        origin = int(trial.user_attrs.get("retry_of", trial.number))
        study.enqueue_trial(trial.params, user_attrs={"retry_of": origin, "retries": retries + 1})


def _storage(url: str, heartbeat_s: int):
    optuna = _optuna()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 120}}
    return optuna.storages.RDBStorage(
        url, heartbeat_interval=heartbeat_s, grace_period=max(2 * heartbeat_s, 60),
        heartbeat_stale_trial_callback=_Requeue(), **kwargs)


def open_study(storage_url: str, study_name: str, heartbeat_s: int = 30, pruner: str = "median",
               warmup_epochs: int = 1, seed: int | None = None):
    optuna = _optuna()
    if pruner == "median":
        p = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup_epochs)
    elif pruner == "none":
        p = optuna.pruners.NopPruner()
    else:
        raise UserError(f"--pruner must be median or none; got {pruner!r}")
    try:
        return optuna.create_study(study_name=study_name, storage=_storage(storage_url, heartbeat_s),
                                   direction="maximize", load_if_exists=True, pruner=p,
                                   sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5))
    except Exception as e:  # bad URL, missing driver, unreachable server
        if isinstance(e, UserError):
            raise
        raise UserError(mask_url(f"cannot open Optuna storage {storage_url!r}: {type(e).__name__}: {e}")) from None


def _fail_dead_local_trials(study) -> list[int]:
    """Trials left RUNNING by a process of this machine that no longer exists: fail and re-queue them
    now (the heartbeat would do it too, but only after its grace period)."""
    optuna = _optuna()
    host, done = socket.gethostname(), []
    retry = _Requeue()
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("host") != host or pid_alive(int(t.user_attrs.get("pid", -1))):
            continue
        try:
            if study._storage.set_trial_state_values(t._trial_id, state=optuna.trial.TrialState.FAIL):
                retry(study, study._storage.get_trial(t._trial_id))
                done.append(t.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker got there first
    return done


def _finished(study) -> int:
    optuna = _optuna()
    S = optuna.trial.TrialState
    return len(study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED)))


class _Objective:
    def __init__(self, base: ExperimentConfig, out: Path, params: Sequence[str], log, loso: bool = False):
        self.base, self.out, self.params, self.log, self.loso = base, out, list(params), log, loso

    def __call__(self, trial) -> float:
        optuna = _optuna()
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        origin = trial.user_attrs.get("retry_of")
        number = trial.number if origin is None else origin
        run = self.out / "trials" / f"trial_{number:04d}"
        cfg = apply_overrides(self.base, suggest_overrides(trial, self.base, self.params))
        cfg = replace(cfg, name=f"{self.base.name}-trial{number:04d}").validate()
        trial.set_user_attr("run_dir", str(run))
        if self.loso:  # FSDD leave-one-speaker-out: one training per speaker (crossval.loso_validation)
            return self._loso(trial, cfg, run)
        # a retried trial resumes its folder: report the epochs it already has
        done_rows = []
        if origin is not None and (run / "metrics.jsonl").exists():
            done_rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines() if l.strip()]
            self.log(f"trial {trial.number}: resuming trial {origin} from epoch {len(done_rows)}")
        for row in done_rows:
            if row["valid_acc"] is not None:
                trial.report(row["valid_acc"], row["epoch"])

        def on_epoch_end(row: dict[str, Any]) -> None:
            if row["valid_acc"] is None:  # not an evaluated epoch (train.eval_every)
                return
            trial.report(row["valid_acc"], row["epoch"])
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {row['epoch']} (valid {row['valid_acc']:.4f})")

        try:
            res = train(cfg, run, resume=True, on_epoch_end=on_epoch_end)
        except TrainingDiverged as e:
            trial.set_user_attr("diverged", str(e))
            raise optuna.TrialPruned("training diverged") from None
        trial.set_user_attr("test_acc_at_best_valid", res["test_acc"])
        trial.set_user_attr("best_epoch", res["best_epoch"])
        trial.set_user_attr("trainable_parameters", res["trainable_parameters"])
        self.log(f"trial {trial.number}: best valid {res['best_valid_acc']:.4f} (epoch {res['best_epoch']})")
        return float(res["best_valid_acc"])


    def _loso(self, trial, cfg: ExperimentConfig, run: Path) -> float:
        """Objective: mean best validation accuracy over the folds (validation = another speaker);
        the running mean is reported after each fold (step = fold index) for pruning."""
        optuna = _optuna()
        def on_fold_end(k: int, mean: float) -> None:
            trial.report(mean, k)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after fold {k + 1} (mean valid {mean:.4f})")

        try:
            res = loso_validation(cfg, run, on_fold_end)
        except TrainingDiverged as e:
            trial.set_user_attr("diverged", str(e))
            raise optuna.TrialPruned("training diverged") from None
        trial.set_user_attr("test_acc_at_best_valid", res["test_acc"])  # mean over folds, information only
        trial.set_user_attr("valid_acc_per_fold", res["folds"])
        self.log(f"trial {trial.number}: mean best valid over speakers {res['valid_acc']:.4f}")
        return res["valid_acc"]


def best_config(study, base: ExperimentConfig, params: Sequence[str]) -> ExperimentConfig:
    optuna = _optuna()
    fixed = optuna.trial.FixedTrial(study.best_trial.params)
    cfg = apply_overrides(base, suggest_overrides(fixed, base, params))
    return replace(cfg, name=f"{base.name}-tuned").validate()


def write_best(study, base: ExperimentConfig, params: Sequence[str], out: Path) -> Path | None:
    """Write ``best.toml``, ``best.json`` and ``trials.csv``; returns the TOML path (None if no trial completed)."""
    optuna = _optuna()
    trials = study.get_trials(deepcopy=False)
    keys = sorted({k for t in trials for k in t.params})
    buf = io.StringIO(newline="")
    w = csv.writer(buf)
    w.writerow(["number", "state", "value", "epochs_reported", "test_acc_at_best_valid", *keys])
    for t in trials:
        w.writerow([t.number, t.state.name, t.value, len(t.intermediate_values),
                    t.user_attrs.get("test_acc_at_best_valid"), *(t.params.get(k) for k in keys)])
    atomic_write_text(out / "trials.csv", buf.getvalue())
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in trials):
        return None
    cfg = best_config(study, base, params)
    bt = study.best_trial
    header = (f"# best of Optuna study {study.study_name!r}: trial {bt.number}, best validation accuracy "
              f"{bt.value:.4f} after {cfg.train.epochs} epochs\n# train it with: snn-delays train --config "
              f"{out / 'best.toml'} --out runs/NAME   (add --epochs N to train longer)\n")
    atomic_write_text(out / "best.toml", header + to_toml(cfg))
    atomic_write_text(out / "best.json", json.dumps({
        "study": study.study_name, "trial": bt.number, "valid_acc": bt.value, "params": bt.params,
        "user_attrs": bt.user_attrs, "n_finished": _finished(study), "config": asdict(cfg)}, indent=2))
    return out / "best.toml"


def tune(base: ExperimentConfig, out: "str | os.PathLike", trials: int, storage: str | None = None,
         study_name: str | None = None, params: Sequence[str] = SEARCH_SPACE, pruner: str = "median",
         warmup_epochs: int | None = None, heartbeat_s: int = 30, timeout_s: float | None = None,
         seed: int | None = None, log=print, loso: bool = False, new_trials: int | None = None) -> dict[str, Any]:
    """Run (or continue) a study until it has ``trials`` finished trials (``new_trials``: at most
    that many trials started by this call, and no best.toml, trials.csv or figures written: a
    :class:`TrialJob` runs one, its launcher writes them after the jobs); returns a short report.
    ``loso``: the objective is FSDD's leave-one-speaker-out validation accuracy (each trial trains
    once per speaker; :func:`snn_delays.crossval.loso_validation`)."""
    optuna = _optuna()
    unknown = [p for p in params if p not in SEARCH_SPACE]
    if unknown:
        raise UserError(f"unknown search parameter(s) {', '.join(unknown)}; choose from {', '.join(SEARCH_SPACE)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    storage = storage or f"sqlite:///{(out / 'optuna.db').resolve()}"
    study_name = study_name or f"{base.data.dataset}-tune"
    warmup = warmup_epochs if warmup_epochs is not None else max(1, base.train.epochs // 4)
    study = open_study(storage, study_name, heartbeat_s, pruner, warmup, seed)
    # the base configuration is part of the study: refuse to mix two searches in one study
    base_json = json.dumps({**asdict(result_config(base)), **({"objective": "loso"} if loso else {})}, sort_keys=True)
    old = study.user_attrs.get("base_config")
    if old is None:
        study.set_user_attr("base_config", base_json)
        study.set_user_attr("params", list(params))
    elif old != base_json or study.user_attrs.get("params") != list(params):
        raise UserError(f"study {study_name!r} in {mask_url(storage)} was started with another base configuration or "
                        f"search space; use another --study or --out")
    requeued = _fail_dead_local_trials(study)
    if requeued:
        log(f"trial(s) {requeued} were left running by a dead process: re-queued with the same parameters")
    before = _finished(study)
    log(f"study {study_name!r} in {mask_url(storage)}: {before} finished trial(s), target {trials}")
    if before < trials:
        S = optuna.trial.TrialState
        study.optimize(_Objective(base, out, params, log, loso), n_trials=new_trials, timeout=timeout_s, catch=(),
                       callbacks=[optuna.study.MaxTrialsCallback(trials, states=(S.COMPLETE, S.PRUNED))])
    if new_trials is not None:  # a job: the process that launched it describes the study
        return {"study": study_name, "storage": mask_url(storage), "finished_before": before,
                "finished": _finished(study)}
    path = write_best(study, base, params, out)
    figures, skipped = plot_study(study, out)
    for note in skipped:
        log(note)
    report = {"study": study_name, "storage": mask_url(storage), "finished_before": before,
              "finished": _finished(study), "best_toml": str(path) if path else None,
              "figures": [str(f) for f in figures]}
    if path:
        bt = study.best_trial
        report.update(best_trial=bt.number, best_valid_acc=bt.value, best_params=bt.params)
    return report


def plot_study(study, out: Path) -> tuple[list[Path], list[str]]:
    """``history.png`` (optimisation history) and ``importances.png`` (parameter importances) with
    Optuna's matplotlib visualisations; returns (figures written, why others were skipped)."""
    optuna = _optuna()
    complete = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        return [], ["history.png and importances.png skipped: no trial has completed yet"]
    try:
        matplotlib = require("matplotlib", "the tuning figures")
    except UserError as e:
        return [], [f"history.png and importances.png skipped: {e}"]
    matplotlib.use("Agg")
    import warnings

    import matplotlib.pyplot as plt

    made, skipped = [], []
    plots = [("history.png", optuna.visualization.matplotlib.plot_optimization_history, 1),
             ("importances.png", optuna.visualization.matplotlib.plot_param_importances, 2)]
    for name, draw, needed in plots:
        if len(complete) < needed:
            skipped.append(f"{name} skipped: it needs {needed} completed trials, the study has {len(complete)}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Optuna marks these visualisations experimental
                ax = draw(study)
            if name == "history.png":
                ax.set_ylabel("best validation accuracy of the trial")
            fig = ax.figure
            fig.set_size_inches(7, 4.5)
            fig.set_layout_engine("constrained")
            fig.savefig(out / name, dpi=130)
            plt.close(fig)
            made.append(out / name)
        except (ValueError, RuntimeError) as e:  # e.g. every trial drew the same values
            skipped.append(f"{name} skipped: {e}")
    return made, skipped


def format_report(report: dict[str, Any]) -> str:
    """The report of :func:`tune` as a readable table (the best trial's parameters one per line)."""
    rows = [("study", f"{report['study']} in {report['storage']}"),
            ("trials", f"{report['finished']} finished ({report['finished_before']} before this command)")]
    if report.get("best_trial") is not None:
        rows.append(("best trial", f"{report['best_trial']}: validation accuracy {report['best_valid_acc']:.4f}"))
        rows += [(f"  {k}", f"{v:.4g}" if isinstance(v, float) else str(v)) for k, v in report["best_params"].items()]
        rows.append(("best config", f"{report['best_toml']}  (snn-delays train --config {report['best_toml']})"))
    else:
        rows.append(("best trial", "none yet (no trial has completed)"))
    if report.get("figures"):
        rows.append(("figures", ", ".join(report["figures"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _tune_worker(base: ExperimentConfig, kwargs: dict) -> None:
    tune(base, **kwargs)


def tune_in_workers(base: ExperimentConfig, workers: int, **kwargs: Any) -> dict[str, Any]:
    """:func:`tune` with ``kwargs`` in ``workers`` processes on this machine sharing one study
    (created once first); returns the report of the whole study."""
    if workers <= 1:
        return tune(base, **kwargs)
    tune(base, **{**kwargs, "trials": 0})  # create the study (and its tables) once
    run_workers(_tune_worker, asdict(base), (kwargs,), workers)
    return tune(base, **{**kwargs, "trials": 0})  # the summary; runs nothing more


@dataclass(frozen=True)
class TrialJob:
    """One trial of a study as a scheduler job (picklable; :mod:`snn_delays.launchers`): :func:`tune`
    with ``kwargs`` starting at most one trial, in the storage every job shares. A re-queued trial of
    a dead job is taken first (its folder resumes from ``last.pt``); a job that starts when the study
    already has its trials runs nothing. :meth:`checkpoint` makes submitit requeue it after a Slurm
    time-out or pre-emption."""

    base: dict[str, Any]  # the base config as a dict (asdict)
    kwargs: dict[str, Any]  # tune's keyword arguments

    def __call__(self) -> dict[str, Any]:
        return tune(config_from_dict(self.base), **{**self.kwargs, "new_trials": 1})

    def checkpoint(self, *args: Any, **kwargs: Any):
        return resubmission(self)


def tune_with_launch(base: ExperimentConfig, launch: Launch, log=print, **kwargs: Any) -> dict[str, Any]:
    """:func:`tune` with every missing trial as a submitit job (:class:`TrialJob`) of ``launch``;
    returns the report of the whole study (after the jobs, or at once with ``launch.wait`` False)."""
    # create the study and re-queue the trials of dead local processes (no files written yet)
    report = tune(base, **{**kwargs, "trials": 0, "new_trials": 0}, log=log)
    trials = kwargs["trials"]
    before = report["finished"]
    seed = kwargs.get("seed")
    # one job per missing trial; keys by slot, so that a later invocation finds the jobs still queued
    jobs = {f"trial-slot-{k:04d}": TrialJob(asdict(base), {**kwargs, "seed": None if seed is None else seed + k})
            for k in range(before, trials)}  # each job its own sampler seed: no two jobs draw the same start
    if jobs:
        outcomes = run_jobs(jobs, launch, Path(kwargs["out"]) / "submitit", log)
        failed = [o for o in outcomes.values() if o.error]
        if failed:
            log(f"warning: {len(failed)} trial job(s) failed; run the same command again: dead trials are "
                f"re-queued and resume their folders (logs in {Path(kwargs['out']) / 'submitit'})")
        if not launch.wait:
            log(f"{len(jobs)} trial job(s) submitted, not waited for (--no-wait); run the same command again for the report")
    return {**tune(base, **{**kwargs, "trials": 0}, log=log), "finished_before": before}
