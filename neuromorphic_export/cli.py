"""``snn-delays export`` and ``snn-delays verify``: parse, call the library, print.

Registered by ``snn_delays/cli.py`` through :func:`add_subcommand`. Errors the user can fix
(:class:`ExportError`) are re-raised as ``snn_delays.errors.UserError``, which that CLI prints
without a traceback (exit status 2). Only these handlers touch ``snn_delays`` (to open datasets
and run the PyTorch model for ``verify``); the library modules never do.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import numpy as np

from .errors import ExportError
from .targets import TARGETS
from .verify import VENDOR_SOFTWARE

__all__ = ["add_subcommand", "cmd_export", "cmd_verify"]


def _user_errors(fn):
    @functools.wraps(fn)
    def wrapper(args):
        from snn_delays.errors import UserError  # a leaf module: no training code

        try:
            return fn(args)
        except ExportError as e:
            raise UserError(str(e)) from None
        except OSError as e:  # a file that cannot be read or written (permissions, full disk)
            where = f" {e.filename}" if e.filename else ""
            raise UserError(f"cannot read or write{where}: {e.strerror or e}") from None

    return wrapper


def _count(text: str) -> int:
    """argparse type: an integer >= 0 (a number of samples)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 (0: all), got {value}")
    return value


def add_subcommand(subparsers, name: str) -> None:
    if name == "export":
        p = subparsers.add_parser("export", help="export a trained run to network.h5 and a chip's format")
        p.add_argument("run_dir", help="run folder (best.pt) or a checkpoint file")
        p.add_argument("--target", default="generic", help=f"one of {', '.join(TARGETS)} (default generic)")
        p.add_argument("--out", required=True,
                       help="output folder (network.h5, format files, export.json); a previous export there is "
                            "replaced as a whole")
        p.add_argument("--force", action="store_true",
                       help="replace --out even if it holds files that are not an export (they are deleted)")
        p.add_argument("--clip", action="store_true",
                       help="clip what breaks the target's limits instead of stopping; reports the accuracy "
                            "before and after on the run's test split")
        p.add_argument("--weight-bits", type=int, help="integer weight bits (default: the target's)")
        p.add_argument("--checkpoint", default="best", choices=["best", "last"])
        p.add_argument("--data-dir", help="dataset folder for the --clip accuracy report")
        p.add_argument("--samples", type=_count, default=0, help="test samples for the --clip report (0: all)")
        p.set_defaults(func=cmd_export)
    elif name == "verify":
        p = subparsers.add_parser("verify", help="run model and exported network(s) on a split; compare")
        p.add_argument("run_dir")
        p.add_argument("export_dir", help="folder written by `snn-delays export`")
        p.add_argument("--dataset", help="dataset name (default: the run's)")
        p.add_argument("--data-dir")
        p.add_argument("--split", default="test", choices=["train", "valid", "test", "all"])
        p.add_argument("--checkpoint", default="best", choices=["best", "last"])
        p.add_argument("--samples", type=_count, default=0, help="use the first N samples (0: all)")
        p.add_argument("--export-only", action="store_true",
                       help="skip the in-memory check of every target (quantised, clipped where needed)")
        p.add_argument("--json", action="store_true", help="print the results as JSON")
        p.add_argument("--in", dest="software", action="append", default=[], choices=VENDOR_SOFTWARE,
                       help="also run the export in a vendor's own software: lava (netx.h5 in Lava, loihi "
                       "targets) or nest (pynn/ in PyNN on NEST, spinnaker1 and generic); its classes and spikes "
                       "must equal our simulator's, or verify fails. Needs spike-count input and the side "
                       "environment of scripts/test-env-lava.sh / test-env-nest.sh; about 1 s per sample in "
                       "Lava: choose --samples. Repeatable")
        p.add_argument("--finetuned", nargs="+", default=[], metavar="RUN",
                       help="runs fine-tuned from this one (snn-delays finetune): their exports for their targets "
                            "are shown beside the float model and the plain export")
        p.set_defaults(func=cmd_verify)
    else:
        raise ValueError(f"neuromorphic_export.cli has no sub-command {name!r}")


def _load_split(run_dir: str, dataset: str | None, data_dir: str | None, split: str, samples: int,
                which: str = "best") -> tuple[np.ndarray, np.ndarray, str]:
    """x (T, N, C) float64 and labels (N,) of a split, opened with the run's data options."""
    from snn_delays.config import DataConfig
    from snn_delays.data import open_dataset

    from .checkpoint import load_checkpoint

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
    return np.ascontiguousarray(x.transpose(1, 0, 2), dtype=np.float64), y.astype(np.int64), name


@_user_errors
def cmd_export(args: argparse.Namespace) -> int:
    from .export import export_run
    from .targets import check_weight_bits, get_target

    target = get_target(args.target)  # unknown target: a clear message before anything is read
    unused = [flag for flag, given in (("--data-dir", args.data_dir), ("--samples", args.samples)) if given]
    if unused and not args.clip:
        raise ExportError(f"{' and '.join(unused)} only choose the data of the --clip accuracy report; add --clip "
                          "or leave them out")
    if args.weight_bits is not None:
        check_weight_bits(target, args.weight_bits)
    data = None
    if args.clip:
        try:
            x, y, _ = _load_split(args.run_dir, None, args.data_dir, "test", args.samples, args.checkpoint)
            data = (x, y)
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001 - the export itself does not need the data
            print(f"note: accuracy before/after clipping not measured ({type(e).__name__}: {e})")
    rep = export_run(args.run_dir, args.target, args.out, clip=args.clip, weight_bits=args.weight_bits,
                     which=args.checkpoint, data=data, force=args.force)
    print(f"exported {rep['source']} for {rep['target']} ({rep['description']}) into {args.out}")
    for f in rep["files"]:
        print(f"  {f}")
    c = rep["conventions"]
    hop = c["hop_latency_steps"]
    print(f"  conventions: {hop} step{'' if hop == 1 else 's'} of latency per hop, spike when u "
          f"{c['threshold_rule']} threshold, {c['arithmetic']} arithmetic")
    print(f"  synapses per layer {rep['synapses']}, max delay per layer (steps) {rep['max_delay_steps']}")
    for n in rep["notes"]:
        print(f"  {n}")
    d = rep["delays"]
    print(f"  delays: {sum(d['delayed_synapses'])} synapses with a non-zero delay ({d['distinct_delays']} distinct "
          "delays per layer); what each file carries to the chip:")
    for name, what in d["per_file"].items():
        print(f"    {name}: {what}")
    if "per_file_recurrent" in d:
        print(f"  recurrent synapses per hidden layer {rep['recurrent_synapses']}, max recurrent delay (steps) "
              f"{rep['max_recurrent_delay_steps']}; what each file carries of them:")
        for name, what in d["per_file_recurrent"].items():
            print(f"    {name}: {what}")
    for ch in rep["clipped"]:
        print(f"  clipped: {ch}")
    if "accuracy" in rep:
        a = rep["accuracy"]
        print(f"  accuracy on {a['samples']} test samples: float export {a['float_model_convention']:.4f}, "
              f"{rep['target']} before clipping {a['before_clipping']:.4f}, after {a['after_clipping']:.4f}")
    return 0


def _model_outputs(run_dir: str, which: str, x: np.ndarray, batch: int = 128, progress=None):
    """The PyTorch model in float64 eval mode: (predictions (N,), [hidden spikes (T', N, H)])."""
    import torch

    from snn_delays import load_model

    from .checkpoint import load_checkpoint

    model = load_model(run_dir, which)
    target = (load_checkpoint(run_dir, which).config.get("train") or {}).get("target")
    if target:  # a fine-tuned run: its forward is the chip's (hop latency included)
        from snn_delays.quantize import apply_target

        apply_target(model, target)
    model = model.double().eval()
    preds, spikes = [], None
    with torch.no_grad():
        for b0 in range(0, x.shape[1], batch):
            u, s = model(torch.from_numpy(x[:, b0:b0 + batch]), return_spikes=True)
            preds.append(model.scores(u).argmax(-1).numpy() if hasattr(model, "scores")
                         else u.softmax(-1).sum(0).argmax(-1).numpy())
            s = [v.numpy().astype(np.uint8) for v in s]
            spikes = s if spikes is None else [np.concatenate([a, b], 1) for a, b in zip(spikes, s)]
            if progress is not None:
                progress(min(batch, x.shape[1] - b0))
    return np.concatenate(preds), spikes or []


def _sizes(net) -> str:
    return " -> ".join(str(n) for n in [net.input_size] + [l.n_out for l in net.layers])


def check_export_belongs(export_net, export_dir: Path, float_net, ckpt) -> None:
    """Refuse an export made from another checkpoint: other layer sizes, or (when the export
    recorded it) another SHA-256 of the source checkpoint file."""
    from .checkpoint import file_sha256

    source = export_net.attrs.get("source", "an unknown checkpoint")
    fix = f"export this run first (snn-delays export {ckpt.path.parent} --out DIR), or verify the run it came from"
    if _sizes(export_net) != _sizes(float_net):
        raise ExportError(f"the export in {export_dir} does not belong to this run: its network is "
                          f"{_sizes(export_net)} neurons (made from {source}), the checkpoint {ckpt.path} is "
                          f"{_sizes(float_net)}; {fix}")
    recorded = export_net.attrs.get("source_sha256")
    if recorded and recorded != ckpt.sha256():
        sibling = ckpt.path.with_name(Path(str(source)).name)
        if sibling != ckpt.path and sibling.exists() and file_sha256(sibling) == recorded:
            fix = f"it was made from this run's {sibling.name}: add --checkpoint {sibling.stem}"
        raise ExportError(f"the export in {export_dir} does not belong to this checkpoint: it was made from {source} "
                          f"(sha256 {str(recorded)[:12]}...), not from {ckpt.path} (sha256 {ckpt.sha256()[:12]}...); "
                          f"{fix}")


@_user_errors
def cmd_verify(args: argparse.Namespace) -> int:
    from ._progress import Progress
    from .checkpoint import load_checkpoint
    from .network import network_from_checkpoint, read_network
    from .simulate import MEMORY_LIMIT_BYTES, Convention, simulate, simulation_bytes
    from .targets import prepare
    from .verify import check_export, compare_runs, format_table, run_differences, verify_in_software, verify_network

    export_dir = Path(args.export_dir)
    export_net = read_network(export_dir)
    ckpt = load_checkpoint(args.run_dir, args.checkpoint)
    float_net = network_from_checkpoint(ckpt)
    check_export_belongs(export_net, export_dir, float_net, ckpt)
    check = check_export(export_dir, export_net, float_net)
    print("verify: reading the data split", file=sys.stderr, flush=True)
    x, y, name = _load_split(args.run_dir, args.dataset, args.data_dir, args.split, args.samples, args.checkpoint)
    if x.shape[2] != ckpt.input_size:
        raise ExportError(f"dataset {name} has {x.shape[2]} input channels; the run's model takes {ckpt.input_size} "
                          "(pass the run's own --dataset, or none)")
    if len(y) == 0:
        raise ExportError(f"split {args.split} of {name} has no samples")
    need = simulation_bytes(float_net, x.shape[0] + float_net.extra_steps + float_net.n_layers, x.shape[1], True, 128)
    if need > MEMORY_LIMIT_BYTES:
        raise ExportError(f"verifying {x.shape[1]} samples needs about {need / 2 ** 30:.0f} GiB; use --samples N")
    others = [] if args.export_only else [t for t in TARGETS if t != "generic"]  # generic == the float export
    finetuned = _finetuned_runs(args.finetuned, float_net)
    n_runs = (1 + 2 + (export_net.target != "generic" or bool(check.readable)) + len(check.readable) + len(others)
              + len(finetuned) + len(set(args.software)))
    print(f"verify: {len(y)} samples through the PyTorch model and {n_runs - 1} simulated networks",
          file=sys.stderr, flush=True)
    progress = Progress(n_runs * len(y), "verify", unit="sample runs")
    progress.phase("PyTorch model")
    model_pred, model_spikes = _model_outputs(args.run_dir, args.checkpoint, x, progress=progress.update)

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
        net, rep = prepare(float_net, t, clip=True)
        results.append(run(f"target {t}{' (clipped)' if rep.changes else ''}", net, "target"))
        side[t] = {"plain": None if rep.violations else results[-1].accuracy,
                   "clipped": results[-1].accuracy if rep.changes else None, "finetuned": None}
    if args.software and not (np.all(x >= 0) and np.array_equal(x, np.round(x))):
        raise ExportError(f"--in {args.software[0]} runs spike counts; the {name} data holds real values (e.g. "
                          "log-mel frames): verify a run trained on spikes")
    for software in dict.fromkeys(args.software):
        progress.phase(f"running the export in {software} ({len(y)} samples)")
        row, problems = verify_in_software(software, export_dir, export_net, x, y, model_pred, model_spikes)
        progress.update(len(y))
        results.append(row)
        check.problems += problems
    for t, (run_dir, net) in finetuned.items():
        r = verify_network(f"fine-tuned {t}", net, x, y, model_pred, None, "target", progress=progress.update)
        results.append(r)
        side.setdefault(t, {"plain": None, "clipped": None})["finetuned"] = r.accuracy
        side[t]["finetuned_run"] = str(run_dir)
    progress.close()
    model_acc = float((model_pred == y).mean())
    passed = not check.problems
    if args.json:
        print(json.dumps({"dataset": name, "split": args.split, "n": int(len(y)), "model_accuracy": model_acc,
                          "results": [r.as_dict() for r in results], "per_target": side, "passed": passed,
                          "problems": check.problems, "notes": check.notes}, indent=1))
    else:
        print(f"{name} / {args.split}:")
        print(format_table(model_acc, len(y), results))
        if side:
            print(format_side_by_side(model_acc, side, chip_model))
        for note in check.notes:
            print(f"note: {note}")
        if passed:
            print(f"PASSED: the files of {export_dir} are the ones export wrote (SHA-256 in export.json), network.h5 "
                  f"holds the checkpoint's {export_net.target} tables"
                  + (f"; {', '.join(check.readable)} computes the same spikes and classes" if check.readable else "")
                  + (f"; {' and '.join(dict.fromkeys(args.software))} computed our simulator's classes and spikes, "
                     "entry for entry" if args.software else ""))
        else:
            print(f"FAILED: {export_dir} is not what export wrote from this checkpoint:")
            for problem in check.problems:
                print(f"  {problem}")
    return 0 if passed else 1


def _finetuned_runs(runs: list[str], float_net) -> dict:
    """target -> (run folder, its export for that target) of each fine-tuned run (same sizes)."""
    from .checkpoint import load_checkpoint
    from .network import network_from_checkpoint
    from .targets import prepare

    out = {}
    for run_dir in runs:
        ckpt = load_checkpoint(run_dir)
        target = str((ckpt.config.get("train") or {}).get("target") or "")
        if not target:
            raise ExportError(f"--finetuned {run_dir} was not fine-tuned for a target (its config has no "
                              "train.target): make it with snn-delays finetune")
        net = network_from_checkpoint(ckpt)
        if _sizes(net) != _sizes(float_net):
            raise ExportError(f"--finetuned {run_dir} is {_sizes(net)} neurons, this run {_sizes(float_net)}: "
                              "not fine-tuned from it")
        if target in out:
            raise ExportError(f"--finetuned gives two runs for {target}")
        out[target] = (run_dir, prepare(net, target)[0])  # refused if it does not fit: said in one line
    return out


def format_side_by_side(model_acc: float, side: dict, chip_model: str = "") -> str:
    """Per target: the float model, the plain export (refused: it breaks a limit), the clipped export
    and the fine-tuned run's export, accuracies in the target's arithmetic and conventions."""
    f = lambda v: "refused" if v is None else f"{v:.4f}"
    head = "the run's chip forward" if chip_model else "float model"
    lines = [f"{'target':12s} {head:>12s} {'plain export':>13s} {'clipped':>8s} {'fine-tuned':>11s}"]
    for t, v in side.items():
        clipped = "-" if v.get("clipped") is None else f"{v['clipped']:.4f}"
        tuned = "-" if v.get("finetuned") is None else f"{v['finetuned']:.4f}"
        lines.append(f"{t:12s} {model_acc:12.4f} {f(v.get('plain')):>13s} {clipped:>8s} {tuned:>11s}")
    return "\n".join(lines)
