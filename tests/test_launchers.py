"""ablate / cv / tune through submitit (snn_delays.launchers): real job processes of submitit's local
executor, a killed job resuming on the next invocation, Slurm submissions through stand-in sbatch /
srun / sacct commands (the sbatch file is submitit's own), and the refusals."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("submitit", reason="the slurm extra (pip install 'snn-delays[slurm]') is not installed")

from snn_delays import launchers, load_config
from snn_delays.cli import main
from snn_delays import ablation
from snn_delays.ablation import grid_cells, is_done
from snn_delays.crossval import cross_validate
from snn_delays.launchers import Launch
from snn_delays.workers import FolderLock
from _support import tiny, tiny_args

VARIANTS = ["full", "no-delays-wider"]


def _grid_args(out: Path, epochs: int, *extra: str) -> list[str]:
    return ["ablate", "--dataset", "synthetic", "--seeds", "1", "--variants", ",".join(VARIANTS), "--out", str(out),
            "--launcher", "submitit-local", "--max-parallel", "2", *extra,
            *tiny_args({"train.epochs": str(epochs), "train.threads": "1"})]


def _children(pid: int) -> list[int]:
    """Live processes whose parent is ``pid`` (Linux /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                s = (d / "stat").read_text()
            except OSError:
                continue
            fields = s[s.rindex(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(d.name))
    return out


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def _job_process(out: Path, key: str) -> int:
    """The process running the job of ``key`` (its parent is the local executor's controller, whose
    pid is submitit's job id)."""
    controller = json.loads((out / "submitit" / "jobs.json").read_text())[key]["job_id"]
    tasks = _children(int(controller))
    assert len(tasks) == 1, f"job {controller} runs {len(tasks)} processes"
    return tasks[0]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the jobs' processes in /proc")
def test_grid_runs_as_local_jobs_a_killed_job_resumes_a_preempted_one_is_requeued(tmp_path):
    """A 2-cell grid, 2 jobs at once, 3 epochs each. After its first epoch, the first cell's job
    process is SIGKILLed; the second's gets USR2, the signal Slurm sends before a time-out or a
    pre-emption (and submitit's local controller at its time limit): submitit calls the job's
    checkpoint and requeues it under the same job id, and the cell resumes from last.pt."""
    out = tmp_path / "grid"
    cell = lambda v: out / "runs" / "full" / v / "seed0"  # noqa: E731
    victim, preempted = cell("full") / "metrics.jsonl", cell("no-delays-wider") / "metrics.jsonl"
    driver = subprocess.Popen([sys.executable, "-m", "snn_delays.cli", *_grid_args(out, 3)], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    signalled: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None and len(signalled) < 2:
            for metrics, key, sig in ((victim, "full/full/seed0", signal.SIGKILL),
                                      (preempted, "full/no-delays-wider/seed0", signal.SIGUSR2)):
                if key not in signalled and len(_lines(metrics)) >= 1:  # between epochs 1 and 3
                    signalled[key] = len(_lines(metrics))
                    os.kill(_job_process(out, key), sig)
            time.sleep(0.02)
        log, _ = driver.communicate(timeout=180)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert len(signalled) == 2, "the jobs did not reach their first epoch"
    assert all(1 <= n < 3 for n in signalled.values()), f"a job finished before its signal: {signalled}"
    assert driver.returncode == 0, log
    assert "full/full/seed0: job" in log and "failed" in log and "run the same command again" in log
    assert not is_done(cell("full"))
    assert (cell("full") / ".lock").exists()  # SIGKILL ran no clean-up: the dead job's lock is left
    # the pre-empted job was requeued (same job, a second start) and finished its cell from last.pt
    first_jobs = json.loads((out / "submitit" / "jobs.json").read_text())
    job_id = first_jobs["full/no-delays-wider/seed0"]["job_id"]
    starts = _lines(cell("no-delays-wider") / "runs.log")
    assert len(starts) == 2 and all(f" job local:{job_id} " in s for s in starts), starts
    assert f"pid {os.getpid()} " not in starts[0]  # trained in a job process, not here
    assert [json.loads(l)["epoch"] for l in _lines(preempted)] == [1, 2, 3]
    assert is_done(cell("no-delays-wider"))
    job_log = "".join((out / "submitit" / f"{job_id}_0_log.{x}").read_text() for x in ("out", "err"))
    assert "this job is preempted" in job_log and f"Requeued job {job_id}" in job_log

    # the next invocation submits the killed cell alone; it resumes from last.pt (no epoch twice)
    assert main(_grid_args(out, 3)) == 0
    jobs = json.loads((out / "submitit" / "jobs.json").read_text())
    assert jobs["full/full/seed0"]["job_id"] != first_jobs["full/full/seed0"]["job_id"]
    assert jobs["full/no-delays-wider/seed0"] == first_jobs["full/no-delays-wider/seed0"]  # finished: no new job
    assert len(_lines(cell("no-delays-wider") / "runs.log")) == 2
    assert [json.loads(l)["epoch"] for l in _lines(victim)] == [1, 2, 3]
    assert len(_lines(cell("full") / "runs.log")) == 2  # two starts: the killed job and its resumption
    summary = json.loads((cell("full") / "summary.json").read_text())
    assert summary["epochs_done"] == 3 and not (cell("full") / ".lock").exists()
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [(r["variant"], r["n"]) for r in rows] == [(v, "1") for v in VARIANTS]
    # a third invocation has nothing to submit (every cell is done: no job process starts)
    said = []
    ablation.run_cells(load_config("synthetic", tiny({"train.epochs": "3", "train.threads": "1"})),
                       grid_cells(VARIANTS, [0], [0]), out, 3600.0, 1, said.append, launch=Launch("submitit-local"))
    assert said == ["every one of the 2 cells was done before; nothing to submit"]


def test_cv_folds_run_as_local_jobs(tmp_path):
    from test_data_fsdd import write_tiny_fsdd

    root = write_tiny_fsdd(tmp_path / "fsdd", speakers=["anna", "bob", "carl"])
    base = load_config("fsdd", [("data.root", str(root)), ("data.cache_dir", str(tmp_path / "cache")),
                                ("data.n_steps", 20), ("data.batch_size", 8), ("model.hidden_size", 4),
                                ("model.kernel_size", 3), ("train.epochs", 1), ("train.progress", False),
                                ("train.threads", 1), ("train.device", "cpu")])
    table = cross_validate(base, tmp_path / "cv", speakers=["bob"], variants=["full"],
                           launch=Launch("submitit-local"), log=lambda *a: None)
    assert table[0]["n_folds"] == 1 and 0.0 <= table[0]["per_fold"]["bob"] <= 1.0
    run = tmp_path / "cv" / "runs" / "full" / "bob" / "seed0"
    assert " job local:" in _lines(run / "runs.log")[0]
    assert list(json.loads((tmp_path / "cv" / "submitit" / "jobs.json").read_text())) == ["full/bob/seed0"]


def test_tune_trials_run_as_jobs_sharing_the_study(tmp_path, capsys):
    import optuna

    out = tmp_path / "tune"
    argv = ["tune", "--dataset", "synthetic", "--trials", "2", "--out", str(out), "--params", "lr_weights",
            "--sampler-seed", "0", "--pruner", "none", "--launcher", "submitit-local", "--max-parallel", "2",
            "--json", *tiny_args({"train.epochs": "1", "train.threads": "1"})]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(printed[printed.index("\n{") + 1:])
    assert report["finished"] == 2 and report["finished_before"] == 0
    study = optuna.load_study(study_name="synthetic-tune", storage=f"sqlite:///{out / 'optuna.db'}")
    trials = study.get_trials()
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 2
    pids = {t.user_attrs["pid"] for t in trials}
    assert len(pids) == 2 and os.getpid() not in pids  # one job process per trial, not this one
    assert trials[0].params != trials[1].params  # each job its own sampler seed
    jobs = json.loads((out / "submitit" / "jobs.json").read_text())
    assert sorted(jobs) == ["trial-slot-0000", "trial-slot-0001"]
    assert (out / "best.toml").exists()
    assert main(argv) == 0  # the study has its trials: nothing submitted
    assert json.loads((out / "submitit" / "jobs.json").read_text()) == jobs


# -- Slurm, through stand-ins for its commands ----------------------------------------------------------
def _fake_slurm(bin_dir: Path, sacct_state: str = "RUNNING") -> Path:
    """sbatch that keeps the file it is given and answers with job 4242; srun; sacct reporting
    ``sacct_state`` for every task of the array."""
    bin_dir.mkdir(exist_ok=True)
    scripts = {
        "sbatch": f'#!/bin/sh\ncp "$1" "{bin_dir}/submitted.$(ls {bin_dir} | grep -c submitted).sh"\n'
                  'echo "Submitted batch job 4242"\n',
        "srun": "#!/bin/sh\nexit 1\n",
        "sacct": f'#!/bin/sh\nprintf "JobID|State|NodeList\\n4242_0|{sacct_state}|n1\\n4242_1|{sacct_state}|n1\\n"\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    return bin_dir


def test_slurm_array_has_the_resources_and_is_not_submitted_twice(tmp_path, monkeypatch, capsys):
    bin_dir = _fake_slurm(tmp_path / "bin")
    launchers._submitit().SlurmJob.watcher.clear()
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "grid"
    argv = ["ablate", "--dataset", "synthetic", "--seeds", "2", "--variants", "full", "--out", str(out),
            "--launcher", "submitit", "--slurm-partition", "gpu", "--slurm-time", "120", "--slurm-gpus", "1",
            "--slurm-cpus", "4", "--slurm-mem", "16", "--slurm-account", "lab", "--max-parallel", "1", "--no-wait",
            *tiny_args({"train.epochs": "1"})]
    assert main(argv) == 0
    sbatch = (bin_dir / "submitted.0.sh").read_text()  # submitit's sbatch file
    for line in ("#SBATCH --partition=gpu", "#SBATCH --time=120", "#SBATCH --gpus-per-node=1",
                 "#SBATCH --cpus-per-task=4", "#SBATCH --mem=16GB", "#SBATCH --account=lab", "#SBATCH --array=0-1%1",
                 f"#SBATCH --output={out / 'submitit'}/%A_%a_0_log.out"):
        assert line in sbatch.splitlines(), line
    assert sys.executable in sbatch and "submitit.core._submit" in sbatch
    jobs = json.loads((out / "submitit" / "jobs.json").read_text())
    assert {k: v["job_id"] for k, v in jobs.items()} == {"full/full/seed0": "4242_0", "full/full/seed1": "4242_1"}
    # the jobs carry the resources' threads: 4 CPUs -> train.threads 4 in each pickled job
    import pickle

    job = pickle.loads((out / "submitit" / "4242_0_submitted.pkl").read_bytes()).function
    assert job.base["train"]["threads"] == 4 and job.base["train"]["progress"] is False
    assert job.cell.seed == 0 and job.out == str(out)
    # again while sacct says the jobs run: waited for (here: not, --no-wait), not submitted twice
    capsys.readouterr()
    assert main(argv) == 0
    assert not (bin_dir / "submitted.1.sh").exists()
    assert "4242_0 of an earlier invocation is still queued or running" in capsys.readouterr().out


@pytest.mark.parametrize("state, ended", [("RUNNING", False), ("PENDING", False), ("CANCELLED by 0", True),
                                          ("TIMEOUT", True), ("NODE_FAIL", True)])
def test_lock_of_an_ended_slurm_job_is_broken(tmp_path, monkeypatch, state, ended):
    """A cell's lock taken by a job on another node: kept while sacct says the job may run, broken at
    once when it has ended (no --stale-after wait)."""
    monkeypatch.setenv("PATH", f"{_fake_slurm(tmp_path / 'bin', state)}{os.pathsep}{os.environ['PATH']}")
    launchers._submitit().SlurmJob.watcher.clear()  # sacct's answers are cached per job
    assert launchers.job_ended("slurm:4242_1") is ended
    lock = FolderLock(tmp_path / "cell", job="slurm:4242_9", job_ended=launchers.job_ended)
    lock.path.parent.mkdir()
    lock.path.write_text(json.dumps({"host": "node7", "pid": 1, "time": time.time(), "job": "slurm:4242_1"}))
    assert lock.acquire() is ended
    if ended:
        assert json.loads(lock.path.read_text())["job"] == "slurm:4242_9"


def test_a_requeued_job_takes_back_its_own_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBMITIT_EXECUTOR", "slurm")
    monkeypatch.setenv("SLURM_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "70")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert launchers.current_job() == "slurm:70_3"
    lock = FolderLock(tmp_path / "cell", job="slurm:70_3", job_ended=launchers.job_ended)
    lock.path.parent.mkdir()
    lock.path.write_text(json.dumps({"host": "other-node", "pid": 1, "time": time.time(), "job": "slurm:70_3"}))
    assert lock.acquire()  # its earlier attempt (pre-empted on another node) has ended


# -- refusals -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["ablate", "cv", "tune"])
@pytest.mark.parametrize("args, named", [
    (["--slurm-partition", "gpu"], "--slurm-partition"), (["--max-parallel", "2"], "--max-parallel"),
    (["--launcher", "submitit-local", "--slurm-time", "0"], "--slurm-time"),
    (["--launcher", "submitit-local", "--slurm-gpus", "-1"], "--slurm-gpus"),
    (["--launcher", "submitit-local", "--slurm-cpus", "0"], "--slurm-cpus"),
    (["--launcher", "submitit-local", "--slurm-mem", "0"], "--slurm-mem"),
    (["--launcher", "submitit-local", "--max-parallel", "0"], "--max-parallel"),
    (["--launcher", "submitit-local", "--slurm-partition", " "], "--slurm-partition"),
    (["--launcher", "submitit-local", "--workers", "2"], "--workers")])
def test_bad_launch_options_are_one_line(tmp_path, capsys, command, args, named):
    dataset = "fsdd" if command == "cv" else "synthetic"
    extra = ["--trials", "1"] if command == "tune" else []
    assert main([command, "--dataset", dataset, "--out", str(tmp_path / "o"), *extra, *args]) == 2
    err = capsys.readouterr().err
    assert named in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_submitit_without_slurm_or_without_the_extra(tmp_path, capsys, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))  # no sbatch, no srun
    argv = ["ablate", "--dataset", "synthetic", "--out", str(tmp_path / "o"), "--launcher", "submitit"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "sbatch and srun are not on PATH" in err and "--launcher submitit-local" in err and "\n" not in err
    monkeypatch.setitem(sys.modules, "submitit", None)  # as if not installed
    for launcher in ("submitit", "submitit-local"):
        assert main([*argv[:-1], launcher]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"--launcher {launcher} needs submitit, which is not installed: "
                            f"pip install 'snn-delays[slurm]'") and "\n" not in err
    assert not (tmp_path / "o").exists()
