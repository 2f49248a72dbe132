"""Export trained delay SNNs to neuromorphic formats, and check that they compute the same thing.

Reads checkpoints written by ``snn-delays train`` (never imports the training code). The
canonical output is ``network.h5`` (numpy + h5py only); :func:`simulate` runs it event by event
(recurrent layers step by step, their tables in ``Layer.recurrent``).

    ckpt = load_checkpoint("runs/x")                 # best.pt of a run folder
    net = network_from_checkpoint(ckpt)              # float64, the model's own convention
    chip, report = prepare(net, "loihi2", clip=True) # limits, quantisation, conventions
    write_network(chip, "out/network.h5"); write_netx(chip, "out/netx.h5")
    result = simulate(chip, x)                       # x (T, B, C_in) -> readout, spikes, predictions
    lava = run_lava("out", x)                        # netx.h5 in Lava itself (side environment)
"""

from ._version import __version__
from .checkpoint_reader import Checkpoint, load_checkpoint
from .errors import ExportError
from .export import FORMATS, export_run
from .netx import read_netx, write_netx
from .network import Layer, Network, Recurrent, network_from_checkpoint, read_network, write_network
from .nir_format import NIR_READOUT_NODE, nir_predict, read_nir, write_nir
from .pynn import write_pynn
from .simulate import Convention, SimResult, predict_from_readout, simulate
from .targets import TARGETS, Target, get_target, prepare
from .nir_torch import nir_to_torch, run_nir_torch  # torch and nirtorch are imported when called
from .vendor_lava import run_lava  # the vendors' software runs in side environments, started when called
from .vendor_nest import run_nest
from .vendor_run import VendorRun
from .verify import VerifyResult, compare_runs

__all__ = [
    "__version__",
    "Checkpoint",
    "Convention",
    "ExportError",
    "FORMATS",
    "Layer",
    "NIR_READOUT_NODE",
    "Network",
    "Recurrent",
    "SimResult",
    "TARGETS",
    "Target",
    "VendorRun",
    "VerifyResult",
    "compare_runs",
    "export_run",
    "get_target",
    "load_checkpoint",
    "network_from_checkpoint",
    "nir_to_torch",
    "nir_predict",
    "predict_from_readout",
    "prepare",
    "read_netx",
    "read_network",
    "read_nir",
    "run_lava",
    "run_nest",
    "run_nir_torch",
    "simulate",
    "write_netx",
    "write_network",
    "write_nir",
    "write_pynn",
]
