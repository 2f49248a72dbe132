"""``verify``: a trained run against its export, on a data split, in one call (:func:`verify_run`).

This is the one library module that needs both packages: it opens the run's dataset and runs the
PyTorch model (training side), then checks the export folder and simulates the exported networks
with :mod:`neuromorphic_export.verify` (numpy side). It returns a :class:`Verification`; the command
line (:mod:`snn_delays.cli.verify`) only prints it.
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from neuromorphic_export._io import Progress
from neuromorphic_export.checkpoint_reader import load_checkpoint
from neuromorphic_export.errors import ExportError
from neuromorphic_export.network import network_from_checkpoint, read_network
from neuromorphic_export.simulate import Convention, simulate, simulation_bytes
from neuromorphic_export.targets import TARGETS, prepare
from neuromorphic_export.verify import (ExportCheck, VerifyResult, check_export, check_export_belongs, compare_runs,
                                        finetuned_exports, run_differences, verify_in_software, verify_network)

from .config import DataConfig
from .data import open_dataset
from .model import load_model, readout_scores
from .quantize import apply_target

# the module, not the function neuromorphic_export re-exports under the same name
_simulate_module = importlib.import_module("neuromorphic_export.simulate")

__all__ = ["Verification", "verify_run", "load_split", "model_outputs"]


def _to_stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def load_split(run_dir: str, dataset: str | None, data_dir: str | None, split: str, samples: int,
               which: str = "best") -> tuple[np.ndarray, np.ndarray, str]:
    """x (T, N, C) float64, labels (N,) int64 and the dataset's name of a split, opened with the
    run's data options (``dataset``/``data_dir`` replace the run's; ``samples``: the first N, 0: all)."""
    cfg = load_checkpoint(run_dir, which).config.get("data", {})
    known = {f for f in DataConfig.__dataclass_fields__}
    opts = {k: v for k, v in cfg.items() if k in known and k not in ("dataset", "root", "batch_size", "num_workers")}
    name = dataset or cfg.get("dataset", "synthetic")
    root = data_dir or cfg.get("root") or None
    ds = open_dataset(name, root, split, **opts)
    if hasattr(ds, "x") and hasattr(ds, "y"):
        x, y = np.asarray(ds.x), np.asarray(ds.y)
        if samples:
            x, y = x[:samples], y[:samples]
    else:
        n = len(ds) if not samples else min(samples, len(ds))
        items = [ds[i] for i in range(n)]
        x = np.stack([np.asarray(a) for a, _ in items])
        y = np.array([int(b) for _, b in items])
    x = x.reshape(x.shape[0], x.shape[1], -1)  # event frames (N, T, 2, H, W): flattened C-major, as exported
    return np.ascontiguousarray(x.transpose(1, 0, 2), dtype=np.float64), y.astype(np.int64), name


def model_outputs(run_dir: str, which: str, x: np.ndarray, batch: int = 128,
                  progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[np.ndarray]]:
    """The PyTorch model of a run in float64 eval mode on x (T, N, C): (predictions (N,), per hidden
    layer its spikes (T', N, H) uint8). A fine-tuned run (``train.target`` in its config) runs its
    chip forward, hop latency included. ``progress(n)``: called after every batch of n samples."""
    model = load_model(run_dir, which)
    target = (load_checkpoint(run_dir, which).config.get("train") or {}).get("target")
    if target:  # a fine-tuned run: its forward is the chip's (hop latency included)
        model = apply_target(model, target)  # the chip model with the run's weights
    model = model.double().eval()
    preds, spikes = [], None
    with torch.no_grad():
        for b0 in range(0, x.shape[1], batch):
            u, s = model(torch.from_numpy(x[:, b0:b0 + batch]), return_spikes=True)
            preds.append(readout_scores(u).argmax(-1).numpy())
            s = [v.numpy().astype(np.uint8) for v in s]
            spikes = s if spikes is None else [np.concatenate([a, b], 1) for a, b in zip(spikes, s)]
            if progress is not None:
                progress(min(batch, x.shape[1] - b0))
    return np.concatenate(preds), spikes or []


@dataclass
class Verification:
    """What :func:`verify_run` found.

    results: one row per simulated network (and per vendor software run); per_target: target ->
    accuracies of the plain, clipped and fine-tuned exports (None: refused / not made); check: the
    export folder's own problems and notes; chip_model: the run's train.target ("" for a float run).
    """

    dataset: str
    split: str
    n: int
    model_accuracy: float
    export_dir: Path
    export_target: str
    results: list[VerifyResult]
    per_target: dict[str, dict]
    check: ExportCheck
    chip_model: str = ""
    software: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No problem found: the folder holds what export wrote and every software agreed."""
        return not self.check.problems

    def as_dict(self) -> dict:
        """The JSON object ``verify --json`` prints."""
        return {"dataset": self.dataset, "split": self.split, "n": int(self.n), "model_accuracy": self.model_accuracy,
                "results": [r.as_dict() for r in self.results], "per_target": self.per_target,
                "passed": self.passed, "problems": self.check.problems, "notes": self.check.notes}


def verify_run(run_dir: str, export_dir: "str | Path", dataset: str | None = None, data_dir: str | None = None,
               split: str = "test", checkpoint: str = "best", samples: int = 0, export_only: bool = False,
               software: Sequence[str] = (), finetuned: Sequence[str] = (),
               log: Callable[[str], None] = _to_stderr) -> Verification:
    """Check an export folder against the run it came from and run both on a split.

    The folder must belong to the checkpoint (sizes, recorded SHA-256) and hold what export wrote
    (file digests, network.h5's tables, netx.h5 read back computing the same). Then the PyTorch
    model, the float export, the export file and (unless ``export_only``) every chip target are run
    on the split; ``software`` ("lava", "nest") also runs the export in the vendors' own software,
    whose classes and spikes must equal our simulator's; ``finetuned``: runs fine-tuned from this
    one, their exports shown per target. Progress goes to ``log`` and to stderr. Problems the user
    can fix (wrong data, too many samples, a missing file) raise :class:`ExportError`.
    """
    export_dir = Path(export_dir)
    software = list(software)
    export_net = read_network(export_dir)
    ckpt = load_checkpoint(run_dir, checkpoint)
    float_net = network_from_checkpoint(ckpt)
    check_export_belongs(export_net, export_dir, float_net, ckpt)
    check = check_export(export_dir, export_net, float_net)
    log("verify: reading the data split")
    x, y, name = load_split(run_dir, dataset, data_dir, split, samples, checkpoint)
    if x.shape[2] != ckpt.input_size:
        raise ExportError(f"dataset {name} has {x.shape[2]} input channels; the run's model takes {ckpt.input_size} "
                          "(pass the run's own --dataset, or none)")
    if len(y) == 0:
        raise ExportError(f"split {split} of {name} has no samples")
    need = simulation_bytes(float_net, x.shape[0] + float_net.extra_steps + float_net.n_layers, x.shape[1], True, 128)
    if need > _simulate_module.MEMORY_LIMIT_BYTES:  # read when called (a test lowers it)
        raise ExportError(f"verifying {x.shape[1]} samples needs about {need / 2 ** 30:.0f} GiB; use --samples N")
    others = [] if export_only else [t for t in TARGETS if t != "generic"]  # generic == the float export
    tuned = finetuned_exports(list(finetuned), float_net)
    n_runs = (1 + 2 + (export_net.target != "generic" or bool(check.readable)) + len(check.readable) + len(others)
              + len(tuned) + len(set(software)))
    log(f"verify: {len(y)} samples through the PyTorch model and {n_runs - 1} simulated networks")
    progress = Progress(n_runs * len(y), "verify", unit="sample runs", leave=False)
    progress.phase("PyTorch model")
    model_pred, model_spikes = model_outputs(run_dir, checkpoint, x, progress=progress.update)

    chip_model = str((ckpt.config.get("train") or {}).get("target") or "")
    align = 0 if chip_model else None  # a fine-tuned run's model already runs with the chip's latency

    def run(label, net, convention):
        progress.phase(f"simulating {label}")
        return verify_network(label, net, x, y, model_pred, model_spikes, convention, progress=progress.update,
                              align_hop=align)

    results = [run("float export (from checkpoint)", float_net, "model"),
               run("export file, model convention", export_net, "model")]

    def run_target(label, net):  # a target-convention run, kept to compare the format files with
        progress.phase(f"simulating {label}")
        res = simulate(net, x, convention="target", record_spikes=True, progress=progress.update)
        results.append(compare_runs(label, Convention.of(net), y, model_pred, model_spikes, res.predictions,
                                    res.spikes, align))
        return res

    if export_net.target != "generic" or check.readable:
        reference = run_target(f"export file as {export_net.target}", export_net)
        for fname, net in check.readable.items():  # each format file read back computes what network.h5 does
            classes, spikes = run_differences(reference, run_target(f"{fname} as {export_net.target}", net))
            if classes or any(spikes):
                check.problems.append(f"{fname} computes something else than network.h5: {classes} of {len(y)} "
                                      f"classes and {', '.join(map(str, spikes))} spike entries per layer differ")
    side: dict[str, dict] = {}
    for t in others:
        try:
            net, rep = prepare(float_net, t, clip=True)
        except ExportError as e:  # a network no clipping fits (adLIF neurons on a chip): said, not run
            check.notes.append(str(e))
            side[t] = {"plain": None, "clipped": None, "finetuned": None}
            progress.update(len(y))
            continue
        results.append(run(f"target {t}{' (clipped)' if rep.changes else ''}", net, "target"))
        side[t] = {"plain": None if rep.violations else results[-1].accuracy,
                   "clipped": results[-1].accuracy if rep.changes else None, "finetuned": None}
    if software and not (np.all(x >= 0) and np.array_equal(x, np.round(x))):
        raise ExportError(f"--in {software[0]} runs spike counts; the {name} data holds real values (e.g. "
                          "log-mel frames): verify a run trained on spikes")
    for sw in dict.fromkeys(software):
        progress.phase(f"running the export in {sw} ({len(y)} samples)")
        row, problems = verify_in_software(sw, export_dir, export_net, x, y, model_pred, model_spikes)
        progress.update(len(y))
        results.append(row)
        check.problems += problems
    for t, (tuned_dir, net) in tuned.items():
        r = verify_network(f"fine-tuned {t}", net, x, y, model_pred, None, "target", progress=progress.update)
        results.append(r)
        side.setdefault(t, {"plain": None, "clipped": None})["finetuned"] = r.accuracy
        side[t]["finetuned_run"] = str(tuned_dir)
    progress.close()
    return Verification(dataset=name, split=split, n=int(len(y)), model_accuracy=float((model_pred == y).mean()),
                        export_dir=export_dir, export_target=str(export_net.target), results=results,
                        per_target=side, check=check, chip_model=chip_model, software=list(dict.fromkeys(software)))
