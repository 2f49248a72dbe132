"""Run a PyNN export (``EXPORT/pynn/``) in NEST through PyNN, in the NEST side environment.

The export's own ``run_pynn.py`` (a copy of :mod:`neuromorphic_export.pynn_runner`) runs unmodified
in the side environment ``nest-3.10.0-pynn-0.13.0`` (nest-simulator 3.10.0 + PyNN 0.13.0 + numpy on
Python 3.11, built by ``scripts/test-env-nest.sh`` under :func:`~neuromorphic_export.vendor_run.envs_root`)
as ``python run_pynn.py --simulator nest --input x.npy --save out.npz``, and its results come back
as a :class:`~neuromorphic_export.vendor_run.VendorRun`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import ExportError
from .vendor_run import VendorRun, run_in_side_env, side_env_python

__all__ = ["run_nest", "NEST_ENV", "pynn_folder"]

NEST_ENV = "nest-3.10.0-pynn-0.13.0"


def pynn_folder(export_dir: str | os.PathLike) -> Path:
    """The folder that holds run_pynn.py: ``export_dir/pynn`` or ``export_dir`` itself."""
    export_dir = Path(export_dir)
    for folder in (export_dir / "pynn", export_dir):
        if (folder / "run_pynn.py").is_file() and (folder / "neurons.json").is_file():
            return folder
    raise ExportError(f"{export_dir} holds no PyNN export (pynn/run_pynn.py and pynn/neurons.json): export with "
                      "--target spinnaker1 or generic")


def run_nest(export_dir: str | os.PathLike, x: np.ndarray, *, batch_size: int = 64, timeout_s: float = 1800.0,
             python: str | os.PathLike | None = None) -> VendorRun:
    """Run the export's ``run_pynn.py`` in NEST 3.10 (PyNN 0.13) on the B samples of x.

    export_dir: an export folder (``snn-delays export RUN --target spinnaker1|generic``) or its
    ``pynn/`` folder. x: (T, B, C_in) non-negative integer spike counts per bin (a count c is c
    spikes). The samples run ``batch_size`` at a time, each batch as side-by-side copies of the
    network in one NEST simulation (one subprocess per batch, in the side environment's Python,
    or ``python``).

    Returns a VendorRun with
      predictions (B,) int64: argmax over classes of the sum over all T' runtime steps of
        softmax(readout v), as :func:`neuromorphic_export.simulate.predict_from_readout`;
      spikes: per hidden layer k, (T + extra_steps, B, H_k) uint8 on the MODEL's time axis: the
        PyNN export realises one step of latency per hop (delays D = d + 1, recurrent D = d), so
        NEST's step t of layer k is the model's step t - (k + 1); row t here is NEST's row
        t + (k + 1). Compare with the model's spikes with ``verify.compare_runs(...,
        align_hop=0)``, or with our simulator's ``simulate(net, x, Convention(1, ">=",
        "float64")).spikes[k][k + 1 : k + 1 + T + extra_steps]`` (the SpiNNaker 1 target's
        convention, ``Convention.of(net)`` for a spinnaker1 export);
      readout: (T', B, n_classes) float64, the readout's V (mV = model units) on the RUNTIME's axis,
        T' = T + extra_steps + n_layers, equal step for step to that simulate(...).readout;
      software "PyNN 0.13.0 + NEST 3.10.0"; seconds: wall time of the subprocesses.

    Raises ValueError for a wrong shape; ExportError when the side environment is missing (naming
    scripts/test-env-nest.sh), the export's run_pynn.py predates ``--save``, the input is not counts,
    or the run fails (with the end of its stderr).
    """
    folder = pynn_folder(export_dir)
    x = np.asarray(x)
    meta = json.loads((folder / "neurons.json").read_text())
    if x.ndim != 3 or x.shape[2] != meta["input_size"]:
        raise ValueError(f"run_nest: expected input (T, B, {meta['input_size']}), got {tuple(x.shape)}")
    if (x < 0).any() or not np.array_equal(x, np.round(x)):
        raise ExportError("run_nest: PyNN's spike sources carry spike counts; this input holds negative or "
                          "non-integer values (real-valued features cannot be run in NEST as exported)")
    if "--save" not in (folder / "run_pynn.py").read_text():
        raise ExportError(f"{folder / 'run_pynn.py'} was written by an older exporter (no --save): export again")
    exe = Path(python) if python is not None else side_env_python(NEST_ENV)
    hop = int(meta.get("hop_latency_steps", 1))
    n_hidden = len(meta["layers"]) - 1
    model_steps = x.shape[0] + int(meta["extra_steps"])
    preds, readouts, spikes = [], [], [[] for _ in range(n_hidden)]
    software, start = "", time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="snn-delays-nest-") as tmp:
        for b0 in range(0, x.shape[1], batch_size):
            xb = x[:, b0:b0 + batch_size].astype(np.int64)
            np.save(Path(tmp) / "x.npy", xb)
            out = Path(tmp) / "out.npz"
            cmd = [str(exe), str(folder / "run_pynn.py"), "--simulator", "nest", "--input", str(Path(tmp) / "x.npy"),
                   "--save", str(out)]
            run_in_side_env(cmd, out, "run_pynn.py in NEST", timeout_s, tmp)
            with np.load(out) as res:
                preds.append(res["pred"].astype(np.int64))
                readouts.append(res["readout"])
                for k in range(n_hidden):
                    shift = hop * (k + 1)
                    spikes[k].append(res[f"layer{k}"][shift:shift + model_steps])
                software = str(res["software"])
    return VendorRun(software=software, predictions=np.concatenate(preds),
                     spikes=[np.concatenate(s, axis=1) for s in spikes],
                     readout=np.concatenate(readouts, axis=1), seconds=time.perf_counter() - start,
                     notes=[f"one step of latency per hop: hidden layer k shifted back by {hop} * (k + 1) steps",
                            "readout on the runtime's axis (T + extra_steps + n_layers steps)"])
