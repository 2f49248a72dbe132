"""The trainer under adversity: non-finite gradients and parameters, empty splits, strict JSON,
two writers on one run folder, leftovers of killed writers, full or unwritable disks, crafted
checkpoints, harmless differences on resume, Ctrl-C, device names."""

import errno
import importlib
import json
import os
import socket
import subprocess
import sys
import time

import pytest
import torch

from snn_delays import UserError, load_config, load_model
from neuromorphic_export._io import atomic_write_text, remove_stale_parts
from snn_delays.checkpoint import load_checkpoint
from snn_delays.cli import main as cli_main
from snn_delays.errors import TrainingDiverged
from snn_delays.evaluate import evaluate_run
from snn_delays.model import DelaySNN
from snn_delays.train import TrainingInterrupted, resolve_device, train
from _support import tiny

train_module = importlib.import_module("snn_delays.train")

TINY = tiny({"model.kernel_size": "5", "data.synthetic_train": "40", "data.synthetic_valid": "20",
    "data.synthetic_test": "20", "data.batch_size": "20", "train.epochs": "2", "train.device": '"cpu"'})


def _config(*more):
    return load_config("synthetic", TINY + list(more))


def _strict_json(text):
    def refuse(token):
        raise ValueError(f"not standard JSON: {token}")
    return json.loads(text, parse_constant=refuse)


def _dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _inject_into_training(monkeypatch, change):
    """Make every training batch (the shuffled ones) go through ``change(x, y) -> (x, y)``."""
    real = train_module.iterate_batches

    def patched(dataset, batch_size, shuffle=False, **kw):
        for x, y in real(dataset, batch_size, shuffle=shuffle, **kw):
            yield change(x, y) if shuffle else (x, y)

    monkeypatch.setattr(train_module, "iterate_batches", patched)


# -- non-finite values --------------------------------------------------------------------------
def test_nan_input_stops_at_the_first_non_finite_gradient_and_keeps_last_checkpoint(tmp_path, monkeypatch):
    """A NaN in the data leaves the loss finite (no spike reaches the readout) but not the gradients:
    training stops at that step naming the gradient and the data, and last.pt stays the good one."""
    cfg = _config()
    train(cfg, tmp_path, max_epochs=1)
    before = (tmp_path / "last.pt").read_bytes()

    def poison(x, y):
        x = x.clone()
        x[3, 0, 5] = float("nan")
        return x, y

    _inject_into_training(monkeypatch, poison)
    with pytest.raises(TrainingDiverged, match=r"gradient of hidden\.0\.synapse\.weight.*not finite") as e:
        train(cfg, tmp_path)
    assert "epoch 2, step 1" in str(e.value) and "input batch" in str(e.value)
    assert "last good checkpoint" in str(e.value) and str(tmp_path / "last.pt") in str(e.value)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert all(torch.isfinite(v).all() for v in load_model(tmp_path, "last").state_dict().values()
               if v.is_floating_point())
    assert not (tmp_path / ".lock").exists()  # released on the error


def test_non_finite_buffer_after_an_epoch_stops_before_its_checkpoint(tmp_path, monkeypatch):
    """Parameters and buffers are checked once per epoch: NaN BatchNorm statistics (finite loss and
    gradients in training mode) never reach a checkpoint."""
    real_clamp = DelaySNN.clamp_

    def clamp_and_spoil(self):
        real_clamp(self)
        self.hidden[0].norm.running_mean.fill_(float("nan"))

    monkeypatch.setattr(DelaySNN, "clamp_", clamp_and_spoil)
    with pytest.raises(TrainingDiverged, match=r"after epoch 1 hidden\.0\.norm\.running_mean hold NaN") as e:
        train(_config(), tmp_path)
    assert "no last good checkpoint yet" in str(e.value)
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()


# -- splits and JSON ----------------------------------------------------------------------------
class _Empty:
    """A split without samples, shaped like the synthetic task."""

    def __init__(self, like):
        self.x, self.y = like.x[:0], like.y[:0]
        self.n_channels, self.n_classes = like.n_channels, like.n_classes

    def __len__(self):
        return 0


def test_empty_split_is_refused_up_front_with_the_split_sizes(tmp_path, monkeypatch):
    real = train_module.open_dataset

    def open_with_empty_valid(name, root, split, **kw):
        ds = real(name, root, split, **kw)
        return _Empty(ds) if split == "valid" else ds

    monkeypatch.setattr(train_module, "open_dataset", open_with_empty_valid)
    with pytest.raises(UserError, match=r"valid split has no samples \(samples per split: train 40, valid 0, test 20\)"):
        train(_config(), tmp_path)
    assert not (tmp_path / "summary.json").exists() and not (tmp_path / "metrics.jsonl").exists()


def test_summary_is_standard_json_when_no_epoch_was_evaluated(tmp_path):
    """Stopped before any evaluation (eval_every=2, one epoch): no NaN in summary.json; the nulls
    are listed with their reason."""
    summary = train(_config("train.epochs=3", "train.eval_every=2"), tmp_path, max_epochs=1)
    on_disk = _strict_json((tmp_path / "summary.json").read_text())
    assert on_disk["final_test_acc"] is None and on_disk["max_test_acc"] is None and on_disk["test_acc"] is None
    assert any(s.startswith("test_acc") for s in on_disk["null_because_not_finite"])
    assert summary["test_acc"] is None
    for line in (tmp_path / "metrics.jsonl").read_text().splitlines():
        _strict_json(line)


def test_resume_rewrites_metrics_as_standard_json(tmp_path):
    train(_config("train.epochs=3", "train.eval_every=2"), tmp_path, max_epochs=1)
    ckpt = load_checkpoint(tmp_path, "last")
    ckpt["metrics"][0]["train_loss"] = float("nan")  # as an old checkpoint may hold
    torch.save(ckpt, tmp_path / "last.pt")
    train(_config("train.epochs=3", "train.eval_every=2"), tmp_path, max_epochs=1)
    rows = [_strict_json(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["train_loss"] is None and len(rows) == 2


# -- one writer per run folder; leftovers of killed writers -----------------------------------
def _write_lock(folder, pid, age_s=0.0):
    folder.mkdir(parents=True, exist_ok=True)
    started = time.time() - age_s
    (folder / ".lock").write_text(json.dumps({"host": socket.gethostname(), "pid": pid, "time": started}))


def test_second_train_into_a_locked_run_folder_is_refused_naming_the_holder(tmp_path, capsys):
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path, holder.pid)
        code = cli_main(["train", "--dataset", "synthetic", "--out", str(tmp_path),
                         *[a for kv in TINY for a in ("--set", kv)]])
    finally:
        holder.kill()
        holder.wait()
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"process {holder.pid} on host {socket.gethostname()} since" in err and "another --out" in err
    assert not (tmp_path / "metrics.jsonl").exists() and not (tmp_path / "config.toml").exists()
    assert (tmp_path / ".lock").exists()  # the holder's lock is left alone


def test_lock_of_a_dead_process_is_taken_over_and_released(tmp_path):
    _write_lock(tmp_path, _dead_pid())
    train(_config("train.epochs=1"), tmp_path)
    assert (tmp_path / "summary.json").exists() and not (tmp_path / ".lock").exists()


def test_train_inside_an_ablation_cell_lock_of_this_process_is_allowed(tmp_path):
    """``ablate`` holds its cell's lock and calls train() on that folder in the same process."""
    from snn_delays.workers import FolderLock

    lock = FolderLock(tmp_path)
    assert lock.acquire()
    train(_config("train.epochs=1"), tmp_path)
    assert (tmp_path / ".lock").exists()  # still the ablation's
    lock.release()


def test_stale_temporaries_of_killed_writers_are_removed_on_start(tmp_path):
    from neuromorphic_export._io import _host_tag

    tmp_path.mkdir(exist_ok=True)
    legacy = tmp_path / ".config.toml.k3j_x9.part"  # named before writers were named; a day old
    legacy.write_text("partial")
    old = time.time() - 2 * 86400
    os.utime(legacy, (old, old))
    dead = tmp_path / f".best.pt.{_host_tag()}-{_dead_pid()}.a1b2.part"
    dead.write_bytes(b"partial")
    live = tmp_path / f".curves.png.{_host_tag()}-{os.getpid()}.zz9.part"  # a writer still at work
    live.write_bytes(b"partial")
    train(_config("train.epochs=1"), tmp_path)
    assert not legacy.exists() and not dead.exists() and live.exists()


def test_atomic_write_names_its_temporary_after_its_writer(tmp_path):
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append(os.path.basename(src))
        real_replace(src, dst)

    os.replace = spy
    try:
        atomic_write_text(tmp_path / "x.txt", "hi")
    finally:
        os.replace = real_replace
    assert seen[0].startswith(".x.txt.") and f"-{os.getpid()}." in seen[0] and seen[0].endswith(".part")
    assert remove_stale_parts(tmp_path) == []


# -- storage errors -----------------------------------------------------------------------------
def test_full_disk_mid_run_is_one_clear_error_keeping_the_last_checkpoint(tmp_path, monkeypatch, capsys):
    full = {"now": False}
    real_fsync = os.fsync

    def fsync(fd):
        if full["now"]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    train(_config("train.epochs=3"), tmp_path, max_epochs=1)
    before = (tmp_path / "last.pt").read_bytes()
    full["now"] = True
    with pytest.raises(UserError, match="No space left on device") as e:
        train(_config("train.epochs=3"), tmp_path, max_epochs=1)
    assert f"last good checkpoint {tmp_path / 'last.pt'} is kept" in str(e.value)
    assert (tmp_path / "last.pt").read_bytes() == before
    assert not list(tmp_path.glob(".*.part")) and not (tmp_path / ".lock").exists()


def test_unwritable_run_folder_is_one_clear_line(tmp_path, monkeypatch, capsys):
    """A read-only folder (simulated: the tests may run as root, who can write anywhere)."""
    run = tmp_path / "ro"
    run.mkdir()
    real_open = os.open

    def read_only(path, *args, **kw):
        if str(path).startswith(str(run)):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", read_only)
    code = cli_main(["train", "--dataset", "synthetic", "--out", str(run),
                     *[a for kv in TINY for a in ("--set", kv)]])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"cannot write to the run folder {run}: Read-only file system" in err


# -- crafted checkpoints ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    train(_config("train.epochs=1"), run)
    return run


@pytest.mark.parametrize("key,value,message", [
    ("kernel_size", 10**9, r"model\.kernel_size is 1000000000 steps"),
    ("hidden_size", 10**6, r"hidden\.0\.synapse\.mask is \(8, 140\) but the config .*hidden_size 1000000.* needs \(1000000, 140\)"),
    ("n_layers", 1, r"n_layers=1 but the arrays hold hidden layer\(s\) 1"),
    ("kernel_size", 3, r"delays in .* reach .* but model\.kernel_size 3 allows at most 2"),
])
def test_crafted_checkpoint_config_is_refused_before_building(trained_run, tmp_path, key, value, message, capsys):
    ckpt = torch.load(trained_run / "best.pt", weights_only=True)
    ckpt["config"]["model"][key] = value
    crafted = tmp_path / "crafted.pt"
    torch.save(ckpt, crafted)
    with pytest.raises(UserError, match=message):
        load_model(crafted)
    with pytest.raises(UserError, match=message):
        evaluate_run(crafted)
    assert cli_main(["evaluate", str(crafted)]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_checkpoint_with_nan_weights_is_refused(trained_run, tmp_path):
    ckpt = torch.load(trained_run / "best.pt", weights_only=True)
    ckpt["model"]["readout.weight"][0, 0, 0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")
    with pytest.raises(UserError, match=r"readout\.weight holds NaN or infinity"):
        load_model(tmp_path / "nan.pt")


# -- resuming -----------------------------------------------------------------------------------
def test_resume_allows_runtime_only_differences(tmp_path):
    train(load_config("synthetic", TINY[:-1] + ['train.device="auto"']), tmp_path, max_epochs=1)
    summary = train(_config("data.num_workers=1", "train.threads=1"), tmp_path)  # device cpu, other workers
    assert summary["epochs_done"] == 2


def test_resume_names_the_keys_that_differ(tmp_path):
    train(_config("train.lr_weights=0.005", "model.dropout=0.4"), tmp_path, max_epochs=1)
    with pytest.raises(UserError, match=r"different configuration \(model\.dropout: 0\.4 -> 0\.1; "
                                        r"train\.lr_weights: 0\.005 -> 0\.001\)"):
        train(_config("train.lr_weights=0.001", "model.dropout=0.1"), tmp_path)


def test_resume_from_a_damaged_last_checkpoint_says_how_to_start_over(tmp_path):
    train(_config(), tmp_path, max_epochs=1)
    (tmp_path / "last.pt").write_bytes((tmp_path / "last.pt").read_bytes()[:100])
    with pytest.raises(UserError, match=r"cannot resume: .*last\.pt is not a readable checkpoint.*--restart"):
        train(_config(), tmp_path)
    assert train(_config(), tmp_path, resume=False)["epochs_done"] == 2


# -- Ctrl-C -------------------------------------------------------------------------------------
def _interrupt_in_training(monkeypatch):
    def interrupt(x, y):
        raise KeyboardInterrupt

    _inject_into_training(monkeypatch, interrupt)


def test_ctrl_c_in_the_first_epoch_says_no_checkpoint_exists(tmp_path, monkeypatch):
    _interrupt_in_training(monkeypatch)
    with pytest.raises(KeyboardInterrupt) as e:  # (not TrainingInterrupted: a bare one would end pytest)
        train(_config(), tmp_path)
    assert isinstance(e.value, TrainingInterrupted)
    assert "no last good checkpoint yet" in str(e.value) and "is kept" not in str(e.value)
    assert not (tmp_path / ".lock").exists()


def test_ctrl_c_after_an_epoch_names_the_kept_checkpoint(tmp_path, monkeypatch):
    train(_config(), tmp_path, max_epochs=1)
    _interrupt_in_training(monkeypatch)
    with pytest.raises(KeyboardInterrupt) as e:
        train(_config(), tmp_path)
    assert f"last good checkpoint {tmp_path / 'last.pt'} is kept" in str(e.value)


# -- devices ------------------------------------------------------------------------------------
def test_device_errors_name_the_option_the_user_gave(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(UserError, match=r"^--device is 'cuda' but no CUDA device") as e:
        resolve_device("cuda", option="--device")
    assert "train.device" not in str(e.value)
    with pytest.raises(UserError, match=r"train\.device is 'cuda:1'"):
        resolve_device("cuda:1")
    with pytest.raises(UserError, match=r"--device 'gpu' is not a device; use cpu, cuda"):
        resolve_device("gpu", option="--device")
    assert resolve_device("auto") == torch.device("cpu")
