"""``export_run``: checkpoint -> target network -> files (network.h5 plus the target's formats)."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import load_checkpoint
from .network import network_from_checkpoint, write_network
from .simulate import simulate
from .targets import get_target, prepare

__all__ = ["export_run", "FORMATS"]

# Files written for each target besides network.h5.
FORMATS: dict[str, tuple[str, ...]] = {
    "generic": ("nir", "pynn"),
    "loihi1": ("netx",),
    "loihi2": ("netx",),
    "spinnaker1": ("pynn",),
    "spinnaker2": ("nir",),
}


def _accuracy(net, x: np.ndarray, y: np.ndarray, convention="target") -> float:
    return float((simulate(net, x, convention=convention, record_spikes=False).predictions == y).mean())


def export_run(source: str | os.PathLike, target: str, out: str | os.PathLike, clip: bool = False,
               weight_bits: int | None = None, which: str = "best",
               data: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """Export a run folder (or checkpoint file) for ``target`` into folder ``out``.

    data: optional (x (T, B, C_in), labels (B,)) used, when ``--clip`` changed something, to report
    the accuracy before clipping (same target, limits lifted) and after. Returns the report that is
    also written to ``out/export.json``. Raises ExportError when a limit is broken and not clip.
    """
    t = get_target(target)
    ckpt = load_checkpoint(source, which)
    float_net = network_from_checkpoint(ckpt)
    chip, rep = prepare(float_net, t, clip=clip, weight_bits=weight_bits)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    files = [write_network(chip, out / "network.h5")]
    for fmt in FORMATS[t.name]:
        if fmt == "netx":
            from .netx import write_netx
            files.append(write_netx(chip, out / "netx.h5"))
        elif fmt == "nir":
            from .nir_format import write_nir
            files.append(write_nir(chip, out / "network.nir"))
        elif fmt == "pynn":
            from .pynn import write_pynn
            files.append(write_pynn(chip, out / "pynn"))
    report: dict[str, Any] = {
        "source": str(ckpt.path), "epoch": ckpt.epoch, "target": t.name, "description": t.description,
        "conventions": {k: chip.attrs[k] for k in ("hop_latency_steps", "threshold_rule", "arithmetic")},
        "files": [str(f) for f in files], "clipped": rep.changes, "notes": rep.notes,
        "synapses": [l.n_synapses for l in chip.layers],
        "max_delay_steps": [int(l.delay.max()) if l.n_synapses else 0 for l in chip.layers],
    }
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
    (out / "export.json").write_text(json.dumps(report, indent=1))
    return report
