"""Run a Loihi export's ``netx.h5`` in Intel Lava, in the Lava side environment.

:mod:`neuromorphic_export.lava_runner` runs in the side environment ``lava-0.10.0-dl-0.6.0``
(lava-nc 0.10.0 + lava-dl 0.6.0 + torch 2.3.1 on Python 3.10, built by ``scripts/test-env-lava.sh``
under :func:`~neuromorphic_export.vendor_run.envs_root`): it loads the file, unmodified, with
``lava.lib.dl.netx.hdf5.Network(net_config=..., input_message_bits=8)`` and runs it on the CPU with
``Loihi2SimCfg(select_tag="fixed_pt")`` (Lava's bit-accurate Loihi models), each sample in a network
built afresh. Its results come back as a :class:`~neuromorphic_export.vendor_run.VendorRun`.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import ExportError
from .simulate import LOIHI_ACT_SHIFT, predict_from_readout
from .vendor_run import VendorRun, run_in_side_env, side_env_python

__all__ = ["run_lava", "LAVA_ENV", "netx_file"]

LAVA_ENV = "lava-0.10.0-dl-0.6.0"
_RUNNER = Path(__file__).with_name("lava_runner.py")


def netx_file(export_dir: str | os.PathLike) -> Path:
    """``export_dir/netx.h5``, or ``export_dir`` itself when it is the file."""
    export_dir = Path(export_dir)
    path = export_dir if export_dir.is_file() else export_dir / "netx.h5"
    if not path.is_file():
        raise ExportError(f"{export_dir} holds no netx.h5: export with --target loihi1 or loihi2")
    return path


def run_lava(export_dir: str | os.PathLike, x: np.ndarray, *, model_axis: bool = True, timeout_s: float = 1800.0,
             python: str | os.PathLike | None = None) -> VendorRun:
    """Run the export's ``netx.h5`` in Lava (lava-nc 0.10, lava-dl 0.6, fixed point) on the B samples of x.

    export_dir: an export folder (``snn-delays export RUN --target loihi1|loihi2``) or its netx.h5.
    x: (T, B, C_in) spike counts per bin, integers 0..255 (netx runs with input_message_bits=8:
    graded input, a count c acts as c spikes). One subprocess in the side environment's Python (or
    ``python``) runs every sample, each in a network built afresh from the file, for
    T' = T + extra_steps + n_layers steps (the input in the first T).

    Returns a VendorRun with
      predictions (B,) int64: :func:`~neuromorphic_export.simulate.predict_from_readout` of the
        readout voltage over all T' steps (as ``simulate`` does);
      spikes: per hidden layer k, uint8 spikes of its real neurons (padding neurons of recurrent
        layers left out). Lava's step s + 1 (its first step is 1) is the simulator's step s in the
        loihi targets' convention (one step per hop), so with ``model_axis`` (the default) they are
        on the MODEL's time axis: (T + extra_steps, B, H_k), row t = Lava's row t + (k + 1); compare
        with the model's spikes through ``verify.compare_runs(..., align_hop=0)`` or with
        ``simulate(net, x).spikes[k][k + 1 : k + 1 + T + extra_steps]``. ``model_axis=False``: the
        runtime's axis, (T', B, H_k), equal row for row to ``simulate(net, x).spikes[k]``;
      readout: (T', B, n_classes) float64, the readout's v / (weight_scale * 2^6) (model units) on
        the runtime's axis, equal step for step to ``simulate(net, x).readout``;
      software "lava-nc 0.10.0 + lava-dl 0.6.0 ..."; seconds: wall time of the subprocess.

    Raises ValueError for input that is not (T, B, C_in) counts within 0..255, ExportError when the
    side environment is missing (naming scripts/test-env-lava.sh) or the run fails (with the end of
    its stderr).
    """
    import h5py

    path = netx_file(export_dir)
    x = np.asarray(x)
    with h5py.File(path, "r") as f:
        n_in = int(f.attrs.get("input_size", f["layer/0/shape"][()][0]))
        extra = int(f.attrs.get("extra_steps", 0))
        bits = int(f.attrs.get("input_message_bits", 8))
        n_layers = len(f["layer"]) - 1
        positions = [np.asarray(f[f"layer/{k + 1}"].attrs.get("positions", np.arange(f[f"layer/{k + 1}/shape"][()][0])),
                                dtype=np.int64) for k in range(n_layers)]
        scale = float(f[f"layer/{n_layers}"].attrs["weight_scale"])
    if x.ndim != 3 or x.shape[2] != n_in:
        raise ValueError(f"run_lava: expected input (T, B, {n_in}), got {tuple(x.shape)}")
    top = 2 ** bits - 1
    if (x < 0).any() or (x > top).any() or not np.array_equal(x, np.round(x)):
        raise ValueError(f"run_lava: expected integer spike counts 0..{top} per bin (netx input_message_bits={bits})")
    exe = Path(python) if python is not None else side_env_python(LAVA_ENV)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="snn-delays-lava-") as tmp:
        np.save(Path(tmp) / "x.npy", x.astype(np.int64))
        out = Path(tmp) / "out.npz"
        # runpy: the runner's folder (this package) stays off the side environment's sys.path
        code = ("import runpy, sys; sys.argv = sys.argv[1:]; "
                "runpy.run_path(sys.argv[0], run_name='__main__')")
        cmd = [str(exe), "-c", code, str(_RUNNER), str(path), str(Path(tmp) / "x.npy"), str(out),
               "--input-message-bits", str(bits)]
        run_in_side_env(cmd, out, "netx.h5 in Lava", timeout_s, tmp)
        with np.load(out) as res:
            raw = [res[f"layer{k}"] for k in range(n_layers - 1)]
            readout = res["readout_v"].astype(np.float64) / (scale * (1 << LOIHI_ACT_SHIFT))
            per_sample = res["seconds"]
            software = f"{res['versions']} (Loihi2SimCfg fixed_pt, input_message_bits={int(res['input_message_bits'])})"
    seconds = time.perf_counter() - start
    notes = [f"Lava run per sample {per_sample.mean():.2f} s (first {per_sample[0]:.2f} s, imports included)"]
    spikes = []
    for k, s in enumerate(raw):
        pad = np.setdiff1d(np.arange(s.shape[2]), positions[k])
        if pad.size and s[:, :, pad].any():
            notes.append(f"layer {k}: padding neurons fired ({int(s[:, :, pad].sum())} spikes): the file is not as "
                         "written by write_netx")
        real = (s[:, :, positions[k]] > 0).astype(np.uint8)
        spikes.append(real[k + 1:k + 1 + x.shape[0] + extra] if model_axis else real)
    notes.append("hidden layer k shifted back by k + 1 steps (one per hop): the model's time axis" if model_axis
                 else "hidden spikes on the runtime's axis (T + extra_steps + n_layers steps)")
    notes.append("readout on the runtime's axis (T + extra_steps + n_layers steps)")
    return VendorRun(software=software, predictions=predict_from_readout(readout).astype(np.int64),
                     spikes=spikes, readout=readout, seconds=seconds, notes=notes)
