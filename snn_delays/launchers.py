"""Where ``ablate``, ``cv`` and ``tune`` run their cells and trials: this machine, or Slurm through submitit.

Three launchers (``--launcher``):

- ``local`` (default): processes of this machine (``--workers N``) take cells through lock files in
  the shared folder (:class:`snn_delays.workers.FolderLock`); any number of invocations, on one
  machine or several sharing the folder, work on one grid. Nothing to install.
- ``submitit``: every unfinished cell (or missing trial) is one Slurm job, submitted with submitit
  (https://github.com/facebookincubator/submitit) as one job array from this process (a login node);
  ``--slurm-partition``, ``--slurm-time`` (minutes), ``--slurm-cpus``, ``--slurm-gpus``,
  ``--slurm-mem`` (GB), ``--slurm-account`` are the job's resources, ``--max-parallel N`` the array's
  ``%N`` (jobs running at once). Needs ``pip install 'snn-delays[slurm]'``.
- ``submitit-local``: the same jobs through submitit's local executor (a process per job on this
  machine, at most ``--max-parallel`` at once, default 1): the Slurm path, tried without a cluster.

A job is a picklable callable (``ablation.CellJob``: train one cell into its folder;
``tuning.TrialJob``: run one trial of the study in the shared Optuna storage), so resuming is
calling it again: a finished cell returns at once, an interrupted one resumes from its ``last.pt``.
The job also takes the cell's folder lock, recording its job id, so a cell never trains twice at
once; a lock left by a job that the scheduler reports ended (killed, timed out, node failure) is
broken at once, on any node. The job callables define ``checkpoint``: when Slurm signals a
time-out or pre-emption, submitit requeues the same call (at most 3 time-outs), which resumes the
cell from its ``last.pt``.

Job files live in ``OUT/submitit/``: submitit's pickles and the logs of each job
(``<job id>_0_log.out`` / ``.err``), and ``jobs.json`` (key -> job id, launcher, submission time).
Running the same command again submits only what is missing: finished cells are skipped, a job
of an earlier invocation that is still pending or running is waited for instead of submitted
twice, a failed or killed one is submitted again (and resumes). With ``--no-wait`` the command
submits and returns; run it again (or ``ablate --summary-only``) later for the summary.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from neuromorphic_export._io import atomic_write_text, pid_alive

from ._optional import require
from .errors import UserError, check_option_bounds

__all__ = ["LAUNCHERS", "Launch", "JobOutcome", "run_jobs", "current_job", "job_ended", "resubmission",
           "job_threads"]

LAUNCHERS = ("local", "submitit", "submitit-local")
# Slurm states of a job that may still run (sacct); anything else but UNKNOWN has ended
_SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "COMPLETING", "CONFIGURING",
                 "PREEMPTED", "READY", "RESIZING", "SUSPENDED", "SIGNALING", "STAGE_OUT"}
_LOCAL_TIME_MIN = 7 * 24 * 60  # submitit-local without --slurm-time: no practical time limit
_SLURM_TIME_MIN = 60


@dataclass(frozen=True)
class Launch:
    """How to run the jobs: ``launcher`` one of :data:`LAUNCHERS`; ``workers`` for ``local``; the
    rest for the submitit launchers (``time_min`` per job in minutes, ``mem_gb`` in GB,
    ``max_parallel`` jobs at once: None = every job for Slurm, 1 for submitit-local)."""

    launcher: str = "local"
    workers: int = 1
    max_parallel: int | None = None
    partition: str | None = None
    time_min: int | None = None
    cpus: int | None = None
    gpus: int | None = None
    mem_gb: float | None = None
    account: str | None = None
    wait: bool = True

    @property
    def uses_submitit(self) -> bool:
        return self.launcher != "local"

    def validate(self) -> "Launch":
        """Refuse what cannot be honoured, each in one line naming the option; for the submitit
        launchers also a missing submitit (naming the extra) and, for Slurm, a missing sbatch."""
        if self.launcher not in LAUNCHERS:
            raise UserError(f"--launcher must be one of {', '.join(LAUNCHERS)}; got {self.launcher!r}")
        slurm_flags = {"--max-parallel": self.max_parallel, "--slurm-partition": self.partition,
                       "--slurm-time": self.time_min, "--slurm-cpus": self.cpus, "--slurm-gpus": self.gpus,
                       "--slurm-mem": self.mem_gb, "--slurm-account": self.account,
                       "--no-wait": None if self.wait else True}
        if not self.uses_submitit:
            given = [k for k, v in slurm_flags.items() if v is not None]
            if given:
                raise UserError(f"{given[0]} applies to --launcher submitit or submitit-local (the local "
                                f"launcher takes --workers)")
            return self
        if self.workers != 1:
            raise UserError(f"--workers is for --launcher local; with --launcher {self.launcher} give the "
                            f"number of jobs running at once as --max-parallel {self.workers}")
        check_option_bounds((("--max-parallel", self.max_parallel, 1), ("--slurm-time", self.time_min, 1),
                             ("--slurm-cpus", self.cpus, 1), ("--slurm-gpus", self.gpus, 0)),
                            positive=(("--slurm-mem", self.mem_gb, " GB"),))
        for flag, value in (("--slurm-partition", self.partition), ("--slurm-account", self.account)):
            if value is not None and not value.strip():
                raise UserError(f"{flag} is empty")
        _submitit(self.launcher)
        if self.launcher == "submitit":
            missing = [c for c in ("sbatch", "srun") if shutil.which(c) is None]
            if missing:
                raise UserError(f"--launcher submitit submits Slurm jobs, but {' and '.join(missing)} "
                                f"{'is' if len(missing) == 1 else 'are'} not on PATH: run the command on a Slurm "
                                f"login node, or use --launcher submitit-local to run the jobs on this machine")
        return self

    def executor(self, folder: Path, n_jobs: int):
        """A submitit executor for ``n_jobs`` jobs writing into ``folder``, with these resources."""
        submitit = _submitit(self.launcher)
        if self.launcher == "submitit":
            ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
            params: dict[str, Any] = {"timeout_min": self.time_min or _SLURM_TIME_MIN, "name": "snn-delays",
                                      "slurm_array_parallelism": self.max_parallel or max(n_jobs, 1)}
            if self.partition:
                params["slurm_partition"] = self.partition
            if self.account:
                params["slurm_account"] = self.account
        else:
            ex = submitit.AutoExecutor(folder=folder, cluster="local")
            params = {"timeout_min": self.time_min or _LOCAL_TIME_MIN, "name": "snn-delays"}
        if self.cpus is not None:
            params["cpus_per_task"] = self.cpus
        if self.gpus is not None:
            params["gpus_per_node"] = self.gpus
        if self.mem_gb is not None:
            params["mem_gb"] = self.mem_gb
        ex.update_parameters(**params)
        return ex


def job_threads(launch: Launch, threads: int) -> int:
    """``train.threads`` for the jobs of ``launch`` when the config leaves it at 0 (torch's default,
    which on a shared node is every core): the job's ``--slurm-cpus``, or 1 when several local jobs
    share this machine."""
    if threads != 0 or not launch.uses_submitit:
        return threads
    if launch.cpus is not None:
        return launch.cpus
    parallel = launch.max_parallel or 1
    return 1 if launch.launcher == "submitit-local" and parallel > 1 else 0


def _submitit(launcher: str = "submitit"):
    return require("submitit", f"--launcher {launcher}")


# -- inside a job ---------------------------------------------------------------------------------
def current_job() -> str | None:
    """``"slurm:<id>"`` or ``"local:<id>"`` inside a submitit job (its array task for Slurm), else None."""
    executor = os.environ.get("SUBMITIT_EXECUTOR", "")
    if executor not in ("slurm", "local"):
        return None
    try:
        return f"{executor}:{_submitit().JobEnvironment().job_id}"
    except (UserError, KeyError, RuntimeError):
        return None


def job_ended(job: str) -> bool:
    """Whether the scheduler job ``job`` (as recorded by :func:`current_job`) has ended, for breaking
    the folder lock it left: an earlier attempt of this very job (a requeued job runs one attempt at a
    time) or a Slurm job that sacct reports ended. Local jobs: False (the lock's pid check decides)."""
    if job == current_job():
        return True
    executor, _, job_id = job.partition(":")
    if executor != "slurm" or shutil.which("sacct") is None:
        return False
    state = _slurm_state(job_id)
    return state != "UNKNOWN" and state not in _SLURM_ACTIVE


def _slurm_state(job_id: str) -> str:
    """sacct's state of a Slurm job ("CANCELLED by 12" -> "CANCELLED"), "UNKNOWN" when not known."""
    submitit = _submitit()
    state = submitit.SlurmJob.watcher.get_state(job_id, mode="force") or "UNKNOWN"
    return state.split()[0].upper()


def resubmission(job: Callable[[], Any]):
    """What a job's ``checkpoint`` returns: the same call again (it resumes from the folder)."""
    return _submitit().helpers.DelayedSubmission(job)


# -- the driver -------------------------------------------------------------------------------------
@dataclass
class JobOutcome:
    """How one job ended: ``result`` (the callable's return value) or ``error`` (one line, with the
    path of its log); ``job_id`` submitit's id."""

    key: str
    job_id: str
    result: Any = None
    error: str | None = None


def _read_record(folder: Path) -> dict[str, dict[str, Any]]:
    try:
        record = json.loads((folder / "jobs.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _still_active(entry: Mapping[str, Any], folder: Path) -> bool:
    """Whether a job recorded by an earlier invocation may still run (then it is not submitted again)."""
    job_id = str(entry.get("job_id", ""))
    if not job_id:
        return False
    if entry.get("launcher") == "submitit-local":
        result = folder / f"{job_id}_0_result.pkl"
        return job_id.isdigit() and pid_alive(int(job_id)) and not result.exists()
    if shutil.which("sacct") is None:
        return False
    return _slurm_state(job_id) in _SLURM_ACTIVE


class _Reattached:
    """A job submitted by an earlier invocation, watched by its id."""

    def __init__(self, launch: Launch, folder: Path, job_id: str):
        submitit = _submitit(launch.launcher)
        self.launch, self.job_id = launch, job_id
        cls = submitit.SlurmJob if launch.launcher == "submitit" else submitit.LocalJob
        self.job = cls(folder=folder, job_id=job_id)

    def done(self) -> bool:
        if self.launch.launcher == "submitit-local":  # no process handle: the controller's pid
            return not pid_alive(int(self.job_id))
        return self.job.done()

    def result(self) -> Any:
        return self.job.result()

    @property
    def paths(self):
        return self.job.paths


def _error_line(job: Any, e: BaseException) -> str:
    text = str(e).strip().splitlines()
    # submitit's errors quote the job's traceback: its last line says what failed
    last = next((l.strip() for l in reversed(text) if l.strip() and not l.startswith(" ")), type(e).__name__)
    return f"{last[:300]} (log: {job.paths.stderr})"


def run_jobs(jobs: Mapping[str, Callable[[], Any]], launch: Launch, folder: Path, log=print,
             poll_s: float | None = None) -> dict[str, JobOutcome]:
    """Run the picklable callables ``jobs`` (key -> job) with the submitit launcher ``launch``,
    writing job files into ``folder``; returns the outcome of every job waited for (nothing with
    ``launch.wait`` False). A key whose job from an earlier invocation (``folder/jobs.json``) is
    still pending or running is waited for, not submitted again."""
    folder.mkdir(parents=True, exist_ok=True)
    record = _read_record(folder)
    handles: dict[str, Any] = {}
    for key in jobs:
        entry = record.get(key)
        if entry and entry.get("launcher") == launch.launcher and _still_active(entry, folder):
            handles[key] = _Reattached(launch, folder, str(entry["job_id"]))
            log(f"{key}: job {entry['job_id']} of an earlier invocation is still queued or running; waiting for it")
    todo = [k for k in jobs if k not in handles]

    def note(key: str, job: Any) -> None:
        record[key] = {"job_id": str(job.job_id), "launcher": launch.launcher,
                       "submitted": time.strftime("%Y-%m-%dT%H:%M:%S")}
        handles[key] = job

    def save() -> None:
        atomic_write_text(folder / "jobs.json", json.dumps(record, indent=2))

    poll = poll_s if poll_s is not None else (0.2 if launch.launcher == "submitit-local" else 30.0)
    outcomes: dict[str, JobOutcome] = {}

    def collect(key: str) -> None:
        job = handles.pop(key)
        try:
            outcomes[key] = JobOutcome(key, str(job.job_id), result=job.result())
        except Exception as e:  # the job failed, was killed or cancelled: one line and its log
            outcomes[key] = JobOutcome(key, str(job.job_id), error=_error_line(job, e))
            log(f"{key}: job {job.job_id} failed: {outcomes[key].error}")

    if launch.launcher == "submitit":  # one job array; Slurm keeps at most --max-parallel running
        if todo:
            submitted = launch.executor(folder, len(todo)).submit_array([jobs[k] for k in todo])
            for key, job in zip(todo, submitted):
                note(key, job)
            save()
            log(f"submitted {len(todo)} Slurm job(s) (array {submitted[0].job_id.split('_')[0]}); logs in {folder}")
        if not launch.wait:
            return outcomes
        while handles:
            for key in [k for k, j in handles.items() if j.done()]:
                collect(key)
            if handles:
                time.sleep(poll)
        return outcomes

    # submitit-local: this process keeps at most --max-parallel jobs running
    limit = launch.max_parallel or 1
    executor = launch.executor(folder, len(todo)) if todo else None
    while todo or handles:
        while todo and len(handles) < limit:
            key = todo.pop(0)
            note(key, executor.submit(jobs[key]))
            save()
        if not launch.wait and not todo:
            return outcomes
        for key in [k for k, j in handles.items() if j.done()]:
            collect(key)
        if handles:
            time.sleep(poll)
    return outcomes
