"""Compare the simulator's runs of exported networks with the model's own outputs (numpy only).

The caller (:func:`snn_delays.verification.verify_run`, behind ``snn-delays verify``) runs the
PyTorch model in float64 eval mode and passes its predictions and hidden spikes here; this module
never imports the training code.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .checkpoint_reader import Checkpoint, file_sha256, load_checkpoint
from .errors import ExportError
from .netx import read_netx
from .network import Layer, Network, network_from_checkpoint
from .simulate import Convention, SimResult, simulate
from .targets import prepare
from .vendor_lava import run_lava
from .vendor_nest import run_nest

__all__ = ["VerifyResult", "ExportCheck", "compare_runs", "verify_network", "format_table", "format_side_by_side",
           "check_export", "check_export_belongs", "finetuned_exports", "network_sizes", "network_differences",
           "run_differences", "verify_in_software", "VENDOR_SOFTWARE"]


@dataclass
class VerifyResult:
    """One exported network against the model on n samples.

    spike_mismatches[k]: hidden-layer-k (step, sample, neuron) entries that differ from the model's,
    after shifting the simulator's spikes back by the runtime's latency ((k + 1) * hop steps);
    spikes_model[k]: the model's spike count there.
    """

    name: str
    convention: str
    n: int
    accuracy: float
    agreement: float
    spike_mismatches: list[int]
    spikes_model: list[int]

    def as_dict(self) -> dict:
        return asdict(self)


def compare_runs(name: str, convention: Convention, labels: np.ndarray, model_predictions: np.ndarray,
                 model_spikes: list[np.ndarray] | None, predictions: np.ndarray,
                 spikes: list[np.ndarray] | None, align_hop: int | None = None) -> VerifyResult:
    """Accuracy, agreement with the model and spike mismatches of one simulated run.

    model_spikes / spikes: per hidden layer (T, B, H) and (T + shifts, B, H).
    """
    labels = np.asarray(labels)
    mism, counts = [], []
    if model_spikes is not None and spikes is not None:
        hop = convention.hop_latency_steps if align_hop is None else align_hop  # model spikes already late: 0
        for k, (ms, ss) in enumerate(zip(model_spikes, spikes)):
            shift = hop * (k + 1)
            aligned = ss[shift: shift + ms.shape[0]]
            n = aligned.shape[0]  # a chip-forward model runs longer than a model-convention simulation
            mism.append(int((aligned != (ms[:n] > 0)).sum()))
            counts.append(int((ms > 0).sum()))
    conv = f"hop {convention.hop_latency_steps}, u {convention.threshold_rule} theta, {convention.arithmetic}"
    return VerifyResult(name, conv, int(len(labels)), float((predictions == labels).mean()),
                        float((predictions == model_predictions).mean()), mism, counts)


def verify_network(name: str, net: Network, x: np.ndarray, labels: np.ndarray,
                   model_predictions: np.ndarray, model_spikes: list[np.ndarray] | None,
                   convention: "Convention | str" = "target", progress=None,
                   align_hop: int | None = None) -> VerifyResult:
    """Simulate ``net`` on x (T, B, C_in) and compare it with the model's outputs.
    ``progress(n)``: called after every batch of n samples. ``align_hop``: the latency per hop by
    which spikes are shifted before comparing (default the convention's; 0 when the model's own
    forward already runs with the chip's latency, as a fine-tuned run's does)."""
    res = simulate(net, x, convention=convention, record_spikes=model_spikes is not None, progress=progress)
    conv = Convention.model() if convention == "model" else (
        Convention.of(net) if convention == "target" else convention)
    return compare_runs(name, conv, labels, model_predictions, model_spikes, res.predictions,
                        res.spikes if model_spikes is not None else None, align_hop)


def format_table(model_accuracy: float, n: int, results: list[VerifyResult]) -> str:
    w = max([34] + [len(r.name) for r in results])
    lines = [f"{'network':{w}s} {'accuracy':>8s} {'agreement':>9s}  spike mismatches / model spikes",
             f"{'model (PyTorch, float64, eval)':{w}s} {model_accuracy:8.4f} {1.0:9.4f}  -"]
    for r in results:
        sm = ", ".join(f"{m}/{c}" for m, c in zip(r.spike_mismatches, r.spikes_model)) or "-"
        lines.append(f"{r.name:{w}s} {r.accuracy:8.4f} {r.agreement:9.4f}  {sm}   [{r.convention}]")
    lines.append(f"({n} samples)")
    return "\n".join(lines)


@dataclass
class ExportCheck:
    """What ``verify`` found about an export folder itself, before any simulation.

    problems: each a reason the folder no longer holds what ``export`` wrote (verify fails);
    notes: what could not be checked, and why; readable: format file name -> the network read back
    from it (netx.h5), to be simulated beside network.h5.
    """

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    readable: dict[str, Network] = field(default_factory=dict)


def _count_differences(a: np.ndarray, b: np.ndarray) -> int:
    """Entries of two arrays that differ (all of them when the shapes differ)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        return max(a.size, b.size)
    return int((a != b).sum())


def _array_differences(k: int, want, have, names: tuple[str, ...], count: int, what: str) -> list[str]:
    """'layer k: n of count <what> <name>s differ' for each array ``name`` of two table objects."""
    out = []
    for name in names:
        n = _count_differences(getattr(want, name), getattr(have, name))
        if n:
            out.append(f"layer {k}: {n} of {count} {what} {name}s differ")
    return out


def _synapse_differences(k: int, want, have, what: str) -> list[str]:
    """Synapse rows (pre, post, weight, delay) of two tables (feed-forward or recurrent)."""
    if want.n_synapses != have.n_synapses:
        return [f"layer {k} has {have.n_synapses} {what}s, expected {want.n_synapses}"]
    return _array_differences(k, want, have, ("pre", "post", "weight", "delay"), want.n_synapses, what)


def _layer_differences(k: int, want: Layer, have: Layer) -> list[str]:
    if (want.n_in, want.n_out) != (have.n_in, have.n_out):
        return [f"layer {k} is {have.n_in} -> {have.n_out}, expected {want.n_in} -> {want.n_out}"]
    out = _synapse_differences(k, want, have, "synapse")
    out += _array_differences(k, want, have, ("decay", "threshold", "bias"), want.n_out, "neuron")
    wa, ha = want.adaptation, have.adaptation
    if (wa is None) != (ha is None):
        out.append(f"layer {k}: {have.neuron} neurons, expected {want.neuron}")
    elif wa is not None and ha is not None:
        out += _array_differences(k, wa, ha, ("decay_u", "decay_w", "a", "b", "q"), want.n_out, "adLIF")
    if want.weight_scale != have.weight_scale:
        out.append(f"layer {k}: weight_scale {have.weight_scale}, expected {want.weight_scale}")
    wr, hr = want.recurrent, have.recurrent
    if (wr is None) != (hr is None):
        out.append(f"layer {k}: {'no' if hr is None else 'a'} recurrent table, expected "
                   f"{'none' if wr is None else 'one'}")
    elif wr is not None and hr is not None:
        out += _synapse_differences(k, wr, hr, "recurrent synapse")
    return out


def network_differences(expected: Network, actual: Network) -> list[str]:
    """Every table of ``actual`` compared with ``expected`` (exactly): one line per differing array,
    with the count of differing entries; [] when the two networks hold the same tables."""
    out = []
    if expected.n_layers != actual.n_layers:
        return [f"{actual.n_layers} synapse layers, expected {expected.n_layers}"]
    for k, (want, have) in enumerate(zip(expected.layers, actual.layers)):
        out += _layer_differences(k, want, have)
    for key in ("dt_ms", "extra_steps", "hop_latency_steps", "threshold_rule", "arithmetic"):
        if expected.attrs.get(key) != actual.attrs.get(key):
            out.append(f"{key} is {actual.attrs.get(key)!r}, expected {expected.attrs.get(key)!r}")
    return out


def run_differences(expected: SimResult, actual: SimResult) -> tuple[int, list[int]]:
    """(samples whose class differs, per hidden layer the (step, sample, neuron) spike entries that
    differ) between two simulations of the same input in the same convention."""
    classes = int((expected.predictions != actual.predictions).sum())
    spikes = [_count_differences(a, b) for a, b in zip(expected.spikes, actual.spikes)]
    return classes, spikes


def check_export(export_dir: "str | Path", export_net: Network, float_net: Network) -> ExportCheck:
    """Check an export folder against what ``export`` recorded in its export.json: the SHA-256 of
    every file, and network.h5's tables against the target network rebuilt from the checkpoint
    (``float_net``, with the recorded --clip / --weight-bits). Reads netx.h5 back when present.
    Nothing is simulated here (the caller compares the read-back networks' runs)."""
    folder = Path(export_dir)
    check = ExportCheck()
    record: dict = {}
    try:
        record = json.loads((folder / "export.json").read_text())
    except FileNotFoundError:
        check.notes.append("no export.json: the files cannot be checked against what export wrote")
    except (OSError, ValueError) as e:
        check.problems.append(f"export.json is not readable JSON ({e})")
    digests = record.get("file_sha256")
    if record and not digests:
        check.notes.append("export.json records no file digests (an export by an older version): files not "
                           "checked against it; export again to have them checked")
    for name, recorded in sorted((digests or {}).items()):
        path = folder / name
        if not path.is_file():
            check.problems.append(f"{name} is missing (export.json lists it)")
        elif file_sha256(path) != recorded:
            check.problems.append(f"{name} was changed after the export (sha256 {file_sha256(path)[:12]}..., "
                                  f"export.json recorded {recorded[:12]}...)")
    options = record.get("options") or {"clip": bool(record.get("clipped")), "weight_bits": None}
    target = str(export_net.target)
    try:
        expected, _ = prepare(float_net, target, clip=bool(options.get("clip")),
                              weight_bits=options.get("weight_bits"))
    except ExportError as e:
        check.notes.append(f"network.h5 not compared with the checkpoint's {target} export: {e}")
    else:
        expected.attrs["source_sha256"] = export_net.attrs.get("source_sha256")
        check.problems += [f"network.h5 {d} (against the checkpoint's {target} export)"
                           for d in network_differences(expected, export_net)]
    if (folder / "netx.h5").is_file():
        try:
            check.readable["netx.h5"] = read_netx(folder / "netx.h5")
        except (ExportError, OSError, KeyError, ValueError) as e:
            check.problems.append(f"netx.h5 is not readable ({type(e).__name__}: {e})")
    if (folder / "pynn").is_dir():
        check.notes.append("pynn/ is checked by its digests; --in nest runs it")
    if (folder / "network.nir").is_file():
        check.notes.append("network.nir is checked by its digests")
    return check


# The vendors' software `verify --in` runs, and the runtime convention each realises for an export.
VENDOR_SOFTWARE = ("lava", "nest")


def verify_in_software(software: str, export_dir: "str | Path", export_net: Network, x: np.ndarray,
                       labels: np.ndarray, model_predictions: np.ndarray,
                       model_spikes: list[np.ndarray] | None) -> tuple[VerifyResult, list[str]]:
    """Run the export in a vendor's own software ("lava": netx.h5 in Lava; "nest": pynn/run_pynn.py in
    PyNN on NEST) on x (T, B, C_in) spike counts, and compare it with our simulator in the convention
    that software realises (one step of latency per hop) and with the model.

    Returns the row for the table (accuracy, agreement with the model, spike mismatches against the
    model's spikes) and the problems: every class and every (step, sample, neuron) spike entry where
    the vendor's run differs from our simulator's, and the samples whose per-neuron spike counts differ.
    """
    folder = Path(export_dir).resolve()  # the runners start their subprocesses elsewhere
    if software == "lava":
        if not (folder / "netx.h5").is_file():
            raise ExportError(f"--in lava runs netx.h5, which {folder} does not hold: export with --target loihi2 "
                              "(or loihi1)")
        run, convention = run_lava(folder, x), Convention.of(export_net)
    elif software == "nest":
        if not (folder / "pynn").is_dir():
            raise ExportError(f"--in nest runs pynn/run_pynn.py, which {folder} does not hold: export with --target "
                              "spinnaker1 (or generic)")
        run, convention = run_nest(folder, x), Convention(1, ">=", "float64")  # D = d + 1, u >= theta, floats
    else:
        raise ExportError(f"--in takes {' or '.join(VENDOR_SOFTWARE)}, not {software!r}")
    ours = simulate(export_net, x, convention=convention, record_spikes=True)
    problems = []
    classes = int((ours.predictions != run.predictions).sum())
    if classes:
        problems.append(f"{run.software}: {classes} of {len(labels)} classes differ from our simulator's")
    hop = convention.hop_latency_steps
    for k, theirs in enumerate(run.spikes):
        mine = ours.spikes[k][hop * (k + 1): hop * (k + 1) + theirs.shape[0]]
        differ = _count_differences(mine, theirs)
        counts = int((mine.sum(0) != theirs.sum(0)).any(-1).sum()) if mine.shape == theirs.shape else len(labels)
        if differ:
            problems.append(f"{run.software}: hidden layer {k}: {differ} spike entries differ from our simulator's "
                            f"({counts} of {len(labels)} samples with other per-neuron spike counts)")
    row = compare_runs(f"in {run.software.split(' (')[0]}", convention, labels, model_predictions, model_spikes,
                       run.predictions, run.spikes, align_hop=0)
    return row, problems


def network_sizes(net: Network) -> str:
    """The neurons per layer, input first: "700 -> 256 -> 256 -> 20"."""
    return " -> ".join(str(n) for n in [net.input_size] + [l.n_out for l in net.layers])


def check_export_belongs(export_net: Network, export_dir: Path, float_net: Network, ckpt: Checkpoint) -> None:
    """Refuse an export made from another checkpoint: other layer sizes, or (when the export
    recorded it) another SHA-256 of the source checkpoint file."""
    source = export_net.attrs.get("source", "an unknown checkpoint")
    fix = f"export this run first (snn-delays export {ckpt.path.parent} --out DIR), or verify the run it came from"
    if network_sizes(export_net) != network_sizes(float_net):
        raise ExportError(f"the export in {export_dir} does not belong to this run: its network is "
                          f"{network_sizes(export_net)} neurons (made from {source}), the checkpoint {ckpt.path} is "
                          f"{network_sizes(float_net)}; {fix}")
    recorded = export_net.attrs.get("source_sha256")
    if recorded and recorded != ckpt.sha256():
        sibling = ckpt.path.with_name(Path(str(source)).name)
        if sibling != ckpt.path and sibling.exists() and file_sha256(sibling) == recorded:
            fix = f"it was made from this run's {sibling.name}: add --checkpoint {sibling.stem}"
        raise ExportError(f"the export in {export_dir} does not belong to this checkpoint: it was made from {source} "
                          f"(sha256 {str(recorded)[:12]}...), not from {ckpt.path} (sha256 {ckpt.sha256()[:12]}...); "
                          f"{fix}")


def finetuned_exports(runs: "list[str]", float_net: Network) -> dict:
    """target -> (run folder, its export for that target) of each fine-tuned run (same sizes as
    ``float_net``); a run not fine-tuned for a target, of other sizes, or a second run for the same
    target is an :class:`ExportError`."""
    out = {}
    for run_dir in runs:
        ckpt = load_checkpoint(run_dir)
        target = str((ckpt.config.get("train") or {}).get("target") or "")
        if not target:
            raise ExportError(f"--finetuned {run_dir} was not fine-tuned for a target (its config has no "
                              "train.target): make it with snn-delays finetune")
        net = network_from_checkpoint(ckpt)
        if network_sizes(net) != network_sizes(float_net):
            raise ExportError(f"--finetuned {run_dir} is {network_sizes(net)} neurons, this run "
                              f"{network_sizes(float_net)}: not fine-tuned from it")
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
