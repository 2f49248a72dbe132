"""What a new user meets first: every --help works, and every answer the tool gives is honest
(a tampered export fails verify, a checkpoint of another run is refused, a time length other than
the training data's is said, the docs list what the commands accept)."""

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from neuromorphic_export import export_run
from neuromorphic_export._io import Progress
from snn_delays import build_model
from snn_delays.ablation import ABLATION_VARIANTS
from snn_delays.checkpoint import save_checkpoint
from snn_delays.cli import build_parser, main
from snn_delays.config import config_to_dict, load_config
from _support import tiny_args

ROOT = Path(__file__).resolve().parent.parent
TINY = tiny_args({"model.kernel_size": "5", "data.synthetic_train": "40", "data.synthetic_valid": "20",
    "data.synthetic_test": "20", "data.batch_size": "20"})


def _cli(capsys, *argv):
    """(exit status, stdout, stderr) of one command in this process; no traceback allowed."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse: --help, usage errors
        code = e.code
    out = capsys.readouterr()
    assert "Traceback" not in out.err + out.out
    return code, out.out, out.err


def _command_paths(parser, prefix=()):
    """Every command and sub-command path of the parser tree: (), ('train',), ('data', 'info'), ..."""
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _command_paths(sub, prefix + (name,))


@pytest.mark.parametrize("path", sorted(_command_paths(build_parser())), ids=lambda p: " ".join(p) or "program")
def test_help_of_every_command(path, capsys):
    for flag in ("--help", "-h"):
        code, out, err = _cli(capsys, *path, flag)
        assert code == 0, err
        assert out.startswith("usage: snn-delays") and not err


def test_help_from_the_installed_entry_point():
    proc = subprocess.run([sys.executable, "-m", "snn_delays.cli", "--help"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and "usage: snn-delays" in proc.stdout and "cv" in proc.stdout
    assert "95 % intervals" in proc.stdout  # the help text that once crashed argparse


# -- verify reads the export it is given --------------------------------------------------------

def _checkpoint_run(tmp_path):
    cfg = load_config("synthetic", {"model.hidden_size": 8, "model.kernel_size": 5, "data.synthetic_train": 4,
                                    "data.synthetic_valid": 4, "data.synthetic_test": 12})
    run = tmp_path / "run"
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # lively enough that hidden neurons spike
        for name, p in model.named_parameters():
            if name.endswith("synapse.weight"):
                p.mul_(4)
    save_checkpoint(run / "best.pt", {"config": config_to_dict(cfg), "model": model.state_dict(), "epoch": 1,
                                      "metrics": []})
    return run


@pytest.fixture(scope="module")
def loihi_export(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("verify")
    run = _checkpoint_run(tmp)
    export_run(run, "loihi2", tmp / "exp", clip=True)
    return run, tmp / "exp"


def test_verify_passes_an_untouched_export(loihi_export, capsys):
    run, exp = loihi_export
    record = json.loads((exp / "export.json").read_text())
    assert set(record["file_sha256"]) == {"network.h5", "netx.h5"}
    assert record["options"] == {"clip": True, "weight_bits": None, "checkpoint": "best"}
    code, out, _ = _cli(capsys, "verify", run, exp, "--samples", 12, "--export-only")
    assert code == 0 and "PASSED" in out and "netx.h5 as loihi2" in out


def _copy(exp, tmp_path):
    shutil.copytree(exp, tmp_path / "tampered")
    return tmp_path / "tampered"


def test_verify_fails_when_network_h5_delays_were_moved(loihi_export, tmp_path, capsys):
    run, exp = loihi_export
    bad = _copy(exp, tmp_path)
    with h5py.File(bad / "network.h5", "r+") as f:
        delay = f["layer/0/synapses/delay"]
        d = delay[...]
        d[:100] = (d[:100] + 3) % 5  # 100 delays of layer 0 moved by 3 steps (within the range)
        delay[...] = d
    code, out, _ = _cli(capsys, "verify", run, bad, "--samples", 12, "--export-only")
    assert code == 1 and "FAILED" in out and "PASSED" not in out
    assert "network.h5 was changed after the export" in out
    assert re.search(r"layer 0: \d+ of \d+ synapse delays differ", out)
    code, out, _ = _cli(capsys, "verify", run, bad, "--samples", 12, "--export-only", "--json")
    result = json.loads(out)
    assert code == 1 and result["passed"] is False and len(result["problems"]) == 3  # digest, tables, netx.h5 runs


def test_verify_fails_when_netx_h5_was_changed_even_with_its_digest_updated(loihi_export, tmp_path, capsys):
    run, exp = loihi_export
    bad = _copy(exp, tmp_path)
    with h5py.File(bad / "netx.h5", "r+") as f:
        w = f["layer/1/weight"]
        w[...] = -w[...]  # every weight of the first hidden layer flipped
    from neuromorphic_export.export import export_digests

    record = json.loads((bad / "export.json").read_text())
    record["file_sha256"] = export_digests(bad)  # someone "fixed" the record: the simulation still tells
    (bad / "export.json").write_text(json.dumps(record))
    code, out, _ = _cli(capsys, "verify", run, bad, "--samples", 12, "--export-only")
    assert code == 1 and "netx.h5 computes something else than network.h5" in out


def test_verify_fails_when_a_recorded_file_is_missing(loihi_export, tmp_path, capsys):
    run, exp = loihi_export
    bad = _copy(exp, tmp_path)
    (bad / "netx.h5").unlink()
    code, out, _ = _cli(capsys, "verify", run, bad, "--samples", 12, "--export-only")
    assert code == 1 and "netx.h5 is missing" in out


# -- a checkpoint belongs to its run --------------------------------------------------------------

@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("runs")
    for name, seed in (("a", "0"), ("b", "1")):
        assert main(["train", "--dataset", "synthetic", "--out", str(tmp / name), "--epochs", "1", "--seed", seed,
                     *TINY]) == 0
    return tmp / "a", tmp / "b"


def test_a_run_folder_and_its_checkpoints_share_one_run_id(two_runs):
    a, b = two_runs
    ids = {run: json.loads((run / "run.json").read_text())["run_id"] for run in (a, b)}
    assert ids[a] != ids[b]
    for run in (a, b):
        for name in ("best.pt", "last.pt"):
            assert torch.load(run / name, weights_only=True)["run_id"] == ids[run]


def _mixed(two_runs, tmp_path, strip_id=False):
    """Run a's folder with run b's best.pt copied in (optionally without its run id, as older runs wrote)."""
    a, b = two_runs
    mixed = tmp_path / "mixed"
    shutil.copytree(a, mixed)
    ckpt = torch.load(b / "best.pt", weights_only=True)
    if strip_id:
        del ckpt["run_id"]
    save_checkpoint(mixed / "best.pt", ckpt)
    return mixed


@pytest.mark.parametrize("strip_id", [False, True], ids=["run-id", "older-checkpoint"])
def test_a_checkpoint_copied_from_another_run_is_refused(two_runs, tmp_path, capsys, strip_id):
    mixed = _mixed(two_runs, tmp_path, strip_id)
    export_run(two_runs[0], "generic", tmp_path / "exp_a")  # the genuine run's export
    words = "train.seed is 1 in the checkpoint" if strip_id else "belongs to another run"
    for argv in (["evaluate", mixed], ["export", mixed, "--out", tmp_path / "exp"],
                 ["verify", mixed, tmp_path / "exp_a"], ["finetune", mixed, "--target", "loihi2", "--out",
                                                         tmp_path / "ft"]):
        code, out, err = _cli(capsys, *argv)
        assert code == 2, (argv, out, err)
        assert words in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "exp").exists() and not (tmp_path / "ft" / "best.pt").exists()


def test_resume_from_another_runs_last_pt_is_refused(two_runs, tmp_path, capsys):
    a, b = two_runs
    mixed = tmp_path / "mixed"
    shutil.copytree(a, mixed)
    shutil.copy(b / "last.pt", mixed / "last.pt")
    code, _, err = _cli(capsys, "train", "--dataset", "synthetic", "--out", mixed, "--epochs", "2", "--seed", "0",
                        *TINY)
    assert code == 2 and "belongs to another run" in err


def test_resume_says_where_it_starts(tmp_path, capsys):
    from snn_delays.cli.config_args import config_from_args
    from snn_delays.train import train

    argv = ["train", "--dataset", "synthetic", "--out", str(tmp_path / "run"), "--epochs", "2", *TINY]
    train(config_from_args(build_parser().parse_args(argv)), tmp_path / "run", max_epochs=1)  # stopped after 1
    capsys.readouterr()
    code, out, err = _cli(capsys, *argv)
    assert code == 0
    assert "from its last.pt: 1 of 2 epochs done, 1 to go" in out + err


def test_evaluate_says_when_the_time_length_is_not_the_training_datas(two_runs, tmp_path, capsys):
    a, _ = two_runs
    run = tmp_path / "longer"
    shutil.copytree(a, run)
    ckpt = torch.load(run / "best.pt", weights_only=True)
    steps = ckpt["run_info"]["input_steps"]
    ckpt["run_info"]["input_steps"] = steps + 1  # as if trained on one step more than this data holds
    save_checkpoint(run / "best.pt", ckpt)
    code, out, err = _cli(capsys, "evaluate", run)
    assert code == 0
    assert f"warning: the synthetic/test samples have {steps} time steps, the model was trained on {steps + 1}" in err
    code, out, _ = _cli(capsys, "evaluate", run, "--json")
    assert json.loads(out)["warnings"]


def test_train_into_a_read_only_folder_is_refused_before_work(tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        for out in (ro, ro / "run"):
            code, _, err = _cli(capsys, "train", "--dataset", "synthetic", "--out", out, "--epochs", "1", *TINY)
            assert code == 2 and "read-only" in err and err.count("\n") == 1
        assert not any(ro.iterdir())
    finally:
        ro.chmod(0o755)


# -- the docs and the commands agree --------------------------------------------------------------

def _choices(*path_and_option):
    *path, option = path_and_option
    parser = build_parser()
    for name in path:
        parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]
    return next(a for a in parser._actions if option in a.option_strings).choices


def test_readme_lists_the_splits_evaluate_takes():
    readme = (ROOT / "README.md").read_text()
    listed = re.search(r"snn-delays evaluate RUN_DIR .*\[--split ([a-z|]+)\]", readme).group(1).split("|")
    assert listed == list(_choices("evaluate", "--split"))


def test_train_variant_takes_every_ablation_variant(capsys):
    from snn_delays.cli.config_args import config_from_args

    for name in ABLATION_VARIANTS:
        cfg = config_from_args(build_parser().parse_args(["train", "--dataset", "synthetic", "--variant", name]))
        assert cfg.model.variant in ("full", name)
    cfg = config_from_args(build_parser().parse_args(["train", "--dataset", "synthetic", "--variant", "recurrent"]))
    assert cfg.model.recurrent and cfg.model.recurrent_delays == "learned"
    code, _, err = _cli(capsys, "train", "--dataset", "synthetic", "--variant", "recurrent", "--set",
                        "model.recurrent=false")
    assert code == 2 and "disagree" in err


def test_no_doc_names_an_export_option_that_does_not_exist():
    export_options = {s for a in build_parser()._subparsers._group_actions[0].choices["export"]._actions
                      for s in a.option_strings}
    for path in [ROOT / "pyproject.toml", ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for option in re.findall(r"snn-delays export [^`\n]*?(--[a-z-]+)", path.read_text()):
            assert option in export_options, f"{path.name} names export {option}"
    assert "--format" not in (ROOT / "pyproject.toml").read_text()


# -- progress ------------------------------------------------------------------------------------

def test_time_left_is_not_inflated_by_a_slow_start(monkeypatch):
    import io
    import types

    import neuromorphic_export._io as progress_module

    now = [0.0]
    monkeypatch.setattr(progress_module, "time", types.SimpleNamespace(monotonic=lambda: now[0]))
    stream = io.StringIO()
    p = Progress(100, "verify", stream=stream, interval_s=0.0)
    now[0] = 60.0
    p.update(10)  # the phase's start-up (loading, compiling): 60 s, not timed
    now[0] = 61.0
    p.update(10)  # 10 samples per second from here
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("time left not known yet")
    assert "about 8 s left" in lines[1]  # 80 left at 10/s (the whole-run rate would say 4 min 4 s)


# -- verify --in: the vendors' own software ----------------------------------------------------------

@pytest.mark.parametrize("software, target, env", [("nest", "spinnaker1", "nest-3.10.0-pynn-0.13.0"),
                                                   ("lava", "loihi2", "lava-0.10.0-dl-0.6.0")])
def test_verify_in_the_vendors_software(software, target, env, tmp_path, capsys):
    from neuromorphic_export.vendor_run import side_env_python

    if side_env_python(env, required=False) is None:
        pytest.skip(f"no side environment {env} (scripts/test-env-{software}.sh could not build it here)")
    run = _checkpoint_run(tmp_path)
    export_run(run, target, tmp_path / "exp", clip=True)
    code, out, err = _cli(capsys, "verify", run, tmp_path / "exp", "--samples", 4, "--export-only", "--in", software,
                          "--json")
    result = json.loads(out)
    assert code == 0 and result["passed"], result["problems"]
    row, ours = result["results"][-1], next(r for r in result["results"] if r["name"] == f"export file as {target}")
    assert row["name"].startswith("in ") and sum(row["spikes_model"]) > 0
    # the vendor's run is our simulator's: the same accuracy, agreement and mismatches against the model
    assert (row["accuracy"], row["agreement"], row["spike_mismatches"]) == \
        (ours["accuracy"], ours["agreement"], ours["spike_mismatches"])
    code, out, err = _cli(capsys, "verify", run, tmp_path / "exp", "--samples", 4, "--export-only", "--in",
                          "lava" if software == "nest" else "nest")
    assert code == 2 and "does not hold" in err  # the other software's file is not in this export


def test_verify_in_refuses_real_valued_input(loihi_export, capsys, monkeypatch):
    import snn_delays.verification as export_cli

    run, exp = loihi_export
    real = export_cli.load_split

    def half(*args, **kwargs):
        x, y, name = real(*args, **kwargs)
        return x + 0.5, y, name

    monkeypatch.setattr(export_cli, "load_split", half)
    code, _, err = _cli(capsys, "verify", run, exp, "--samples", 4, "--export-only", "--in", "lava")
    assert code == 2 and "runs spike counts" in err


def test_data_info_shows_what_train_opens(capsys):
    """`data info NAME` opens the dataset with experiments/NAME.toml's data options (fsdd.toml: 100 steps)."""
    from snn_delays.config import load_config

    steps = load_config("synthetic").data.n_steps or 100
    code, out, _ = _cli(capsys, "data", "info", "synthetic")
    assert code == 0 and f"x (1000, {steps}, 140)" in out and "experiments/synthetic.toml" in out


FSDD = ROOT.parent / "shared" / "data" / "fsdd"


@pytest.mark.skipif(not (FSDD / "recordings").is_dir(), reason="the FSDD recordings are not beside the project")
def test_data_info_fsdd_agrees_with_fsdd_toml(tmp_path, capsys):
    from snn_delays.config import load_config

    steps = load_config("fsdd").data.n_steps
    code, out, _ = _cli(capsys, "data", "info", "fsdd", "--data-dir", FSDD, "--cache-dir", tmp_path)
    assert code == 0 and all(f", {steps}, 140)" in line for line in out.splitlines()[:3])
