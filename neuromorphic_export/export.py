"""``export_run``: checkpoint -> target network -> files (network.h5 plus the target's formats)."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from . import netx, nir_format, pynn  # called as module attributes: a test may replace a writer
from ._folder import new_staging_folder, remove_stale_staging, swap_in, writable
from .checkpoint_reader import file_sha256, load_checkpoint
from .conv import conv_report
from .errors import ExportError
from .network import Network, network_from_checkpoint, write_network
from .simulate import simulate
from .targets import ADLIF_CARRIAGE, DELAY_CARRIAGE, RECURRENT_CARRIAGE, Target, get_target, prepare

__all__ = ["export_run", "export_digests", "FORMATS", "EXPORT_ENTRIES", "check_destination"]

# Files written for each target besides network.h5.
FORMATS: dict[str, tuple[str, ...]] = {
    "generic": ("nir", "pynn"),
    "loihi1": ("netx",),
    "loihi2": ("netx",),
    "spinnaker1": ("pynn",),
    "spinnaker2": ("nir",),
}
# Everything an export folder may hold: what any target writes. A folder with anything else is
# not (only) an export, and is replaced only with ``force``.
EXPORT_ENTRIES = ("network.h5", "netx.h5", "network.nir", "network.snntorch.nir", "network.norse.nir", "pynn",
                  "export.json")
# A network with adLIF layers is written as network.h5 only (targets.ADLIF_CARRIAGE says why).


def formats_for(chip: Network, t: Target) -> tuple[str, ...]:
    """The format files written for ``t`` besides network.h5: none for a network with adLIF layers
    (only the generic target takes them: NIR and PyNN have no adaptive neuron)."""
    return () if chip.is_adaptive else FORMATS[t.name]


# Written beside network.nir when the network has no delays and no recurrent tables (nir_format.py).
NIR_CONSUMER_FILES = ("network.snntorch.nir", "network.norse.nir")


def _accuracy(net, x: np.ndarray, y: np.ndarray, convention="target") -> float:
    return float((simulate(net, x, convention=convention, record_spikes=False).predictions == y).mean())


def check_destination(out: Path, source: Path, force: bool = False) -> None:
    """Refuse an ``--out`` that is a file, read-only, holds the checkpoint or the working directory,
    or holds files that are not an export (unless ``force``)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; give a folder (it will hold network.h5 and the format files)")
    resolved = out.resolve()
    for inside, what in ((source.resolve(), f"the checkpoint {source}"), (Path.cwd().resolve(), "the current directory")):
        if inside == resolved or resolved in inside.parents:
            raise ExportError(f"--out {out} holds {what}; an export replaces the whole folder: choose a folder of "
                              "its own (e.g. exports/<name>)")
    parent = resolved.parent
    while not parent.exists():
        parent = parent.parent
    if not writable(parent):
        raise ExportError(f"cannot write into {parent}: it is read-only; choose another --out")
    if not out.is_dir():
        return
    if not writable(out):
        raise ExportError(f"--out {out} is read-only; make it writable (chmod u+w) or choose another folder "
                          "(nothing was changed)")
    foreign = sorted(e.name for e in out.iterdir() if not _is_export_entry(e.name))
    if foreign and not force:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ExportError(f"--out {out} holds files that are not an snn-delays export ({shown}); an export replaces "
                          "the whole folder: choose a new or empty folder, or pass --force to replace it and "
                          "everything in it")


def _is_export_entry(name: str) -> bool:
    """A file an export writes, or the leftover of an interrupted one (older versions)."""
    return name in EXPORT_ENTRIES or name == "network.h5.tmp" or (
        name.startswith(".network.h5.") and name.endswith(".part"))


def _write_formats(chip: Network, t: Target, folder: Path) -> None:
    """network.h5 and the target's format files, written into ``folder``."""
    write_network(chip, folder / "network.h5")
    for fmt in formats_for(chip, t):
        if fmt == "netx":
            netx.write_netx(chip, folder / "netx.h5")
        elif fmt == "nir":
            nir_format.write_nir(chip, folder / "network.nir")
            if nir_format.delay_free_problem(chip) is None:  # snnTorch and Norse run delay-free graphs as written
                for consumer in ("snntorch", "norse"):
                    nir_format.write_nir(chip, folder / nir_format.consumer_file_name(consumer), consumer=consumer)
        elif fmt == "pynn":
            pynn.write_pynn(chip, folder / "pynn")


def export_run(source: str | os.PathLike, target: str, out: str | os.PathLike, clip: bool = False,
               weight_bits: int | None = None, which: str = "best",
               data: tuple[np.ndarray, np.ndarray] | None = None, force: bool = False) -> dict[str, Any]:
    """Export a run folder (or checkpoint file) for ``target`` into folder ``out``.

    data: optional (x (T, B, C_in), labels (B,)) used, when ``--clip`` changed something, to report
    the accuracy before clipping (same target, limits lifted) and after. Returns the report that is
    also written to ``out/export.json``. Raises ExportError when a limit is broken and not clip.

    The whole export is written into a temporary folder beside ``out`` and swapped in: ``out``
    holds either its previous export or the complete new one, never a mixture (a previous export
    of another target leaves nothing behind). A folder that holds other files is refused unless
    ``force``; a read-only folder or a full disk raises ExportError and leaves ``out`` as it was.
    """
    t = get_target(target)
    ckpt = load_checkpoint(source, which)
    out = Path(out)
    check_destination(out, ckpt.path, force)
    float_net = network_from_checkpoint(ckpt)
    chip, rep = prepare(float_net, t, clip=clip, weight_bits=weight_bits)
    if "netx" in formats_for(chip, t):  # before anything is written
        netx.refuse_recurrent(chip)  # a recurrent layer netx's RecurrentDense would run wrongly
    digest = ckpt.sha256()
    chip.attrs["source_sha256"] = digest
    report: dict[str, Any] = {
        "source": str(ckpt.path), "source_sha256": digest, "epoch": ckpt.epoch, "target": t.name,
        "description": t.description,
        "conventions": {k: chip.attrs[k] for k in ("hop_latency_steps", "threshold_rule", "arithmetic")},
        "files": [str(out / name) for name in ("network.h5",) + _format_entries(t, chip)],
        "options": {"clip": bool(clip), "weight_bits": weight_bits, "checkpoint": which},
        "clipped": rep.changes, "notes": rep.notes, "quantisation": rep.quantisation,
        "synapses": [l.n_synapses for l in chip.layers],
        "max_delay_steps": [int(l.delay.max()) if l.n_synapses else 0 for l in chip.layers],
        "recurrent_synapses": [l.n_recurrent for l in chip.layers[:-1]],
        "max_recurrent_delay_steps": [int(l.recurrent.delay.max()) if l.n_recurrent else 0 for l in chip.layers[:-1]],
        "delays": delay_report(chip, t),
    }
    if chip.is_adaptive:  # which files carry the adLIF neurons (only network.h5 does)
        report["neurons"] = {"per_layer": [l.neuron for l in chip.layers[:-1]],
                             "per_file": {name: text for name, text in ADLIF_CARRIAGE.items()
                                          if name.rstrip("/") in ("network.h5",) + _format_entries(t)}}
        rep.notes.append("adLIF layers: only network.h5 carries them (" + "; ".join(
            f"{name}: {text}" for name, text in report["neurons"]["per_file"].items() if name != "network.h5") + ")")
    if "netx" in formats_for(chip, t):  # how to run netx.h5 in Lava (input_message_bits, widths)
        report["netx"] = netx.netx_report(chip)
    if "nir" in formats_for(chip, t):  # what each NIR consumer runs of these files (measured, nir_format.py)
        report["nir_consumers"] = nir_format.nir_consumer_report(chip)
        if nir_format.delay_free_problem(chip) is None:
            report["files"] += [str(out / name) for name in NIR_CONSUMER_FILES]
    trained_for = (ckpt.config.get("train") or {}).get("target") or ""
    if trained_for and trained_for != t.name:
        rep.notes.append(f"this run was fine-tuned for {trained_for}, not {t.name}: its accuracy on {t.name} may "
                         "be lower than on the target it was tuned for")
    if data is not None and data[0].shape[2] != float_net.input_size:
        rep.notes.append(f"accuracy before/after clipping not measured: the test data has {data[0].shape[2]} input "
                         f"channels, the model takes {float_net.input_size}")
        data = None
    if data is not None and rep.changes:
        lifted = dataclasses.replace(t, max_delay_D=None, min_delay_D=0, max_fanin=None,
                                     one_delay_per_pair=False, delay_granularity="per-synapse",
                                     bias_bits=None, threshold_bits=None)
        unclipped, _ = prepare(float_net, lifted, clip=True, weight_bits=weight_bits)
        x, y = data
        report["accuracy"] = {"samples": int(len(y)),
                              "float_model_convention": _accuracy(float_net, x, y, "model"),
                              "before_clipping": _accuracy(unclipped, x, y),
                              "after_clipping": _accuracy(chip, x, y)}
    if chip.attrs.get("conv"):  # conv layers (model.conv) expanded into per-synapse tables: their sizes
        report["conv"] = conv_report(chip)
    had_export = out.is_dir() and any(out.iterdir())
    staging = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_staging(out)
        staging = new_staging_folder(out)
        _write_formats(chip, t, staging)
        report["file_sha256"] = export_digests(staging)
        with open(staging / "export.json", "w") as f:
            f.write(json.dumps(report, indent=1))
            f.flush()
            os.fsync(f.fileno())
        swap_in(staging, out)
        staging = None
    except OSError as e:
        kept = f"the previous content of {out} is unchanged" if had_export else "nothing was exported"
        raise ExportError(f"cannot write the export into {out}: {e.strerror or e} "
                          f"({e.filename or out}); {kept}") from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
    return report


def export_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file of an export folder but export.json, by path relative to the folder
    ('pynn/layer0_excitatory.csv'): recorded in export.json so that ``verify`` can tell a changed file."""
    return {f.relative_to(folder).as_posix(): file_sha256(f) for f in sorted(Path(folder).rglob("*"))
            if f.is_file() and f.relative_to(folder).as_posix() != "export.json"}


def delay_report(chip: Network, t: Target) -> dict[str, Any]:
    """Which of the network's delays each file of the export carries to the chip (per file, in words;
    ``per_file_recurrent`` the same for recurrent tables, when the network has them), and per layer
    the synapses with a non-zero delay and the distinct delays (steps)."""
    names = ("network.h5",) + _format_entries(t, chip)
    files = {name: DELAY_CARRIAGE[t.name][name] for name in DELAY_CARRIAGE[t.name] if name.rstrip("/") in names}
    report = {"per_file": files,
              "delayed_synapses": [int((l.delay > 0).sum()) for l in chip.layers],
              "distinct_delays": [int(len(np.unique(l.delay))) for l in chip.layers]}
    texts = list(files.values())
    if chip.is_recurrent:
        rec = {name: RECURRENT_CARRIAGE[t.name][name] for name in RECURRENT_CARRIAGE[t.name]
               if name.rstrip("/") in names}
        report["per_file_recurrent"] = rec
        report["distinct_recurrent_delays"] = [int(len(np.unique(l.recurrent.delay))) if l.recurrent is not None
                                               else 0 for l in chip.layers[:-1]]
        texts += list(rec.values())
    report["carried_to_chip"] = not any(v.startswith(("NOT carried", "REFUSED")) for v in texts)
    return report


def _format_entries(t: Target, chip: Network | None = None) -> tuple[str, ...]:
    """The format files (folder names) of ``t`` besides network.h5; with ``chip``, those written for it."""
    names = {"netx": "netx.h5", "nir": "network.nir", "pynn": "pynn"}
    return tuple(names[fmt] for fmt in (FORMATS[t.name] if chip is None else formats_for(chip, t)))
