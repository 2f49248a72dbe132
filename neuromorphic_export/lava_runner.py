"""Run a ``netx.h5`` in Intel Lava (lava-nc 0.10 + lava-dl 0.6) on count-valued input.

This module runs INSIDE the Lava side environment (Python 3.10; see scripts/test-env-lava.sh) and
imports only numpy, h5py and lava: :mod:`neuromorphic_export.vendor_lava` starts it there as a
script. It is the code a Lava user writes (docs/export.md shows the same lines)::

    net = netx.hdf5.Network(net_config="netx.h5", input_message_bits=8)
    source = io.source.RingBuffer(data=x)        # (channels, steps) spike counts
    source.s_out.connect(net.inp)
    net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))

Usage::

    python lava_runner.py NETX_H5 INPUT.npy OUT.npz [--input-message-bits 8] [--steps N]

INPUT.npy: (T, B, C) counts (time-major, C the file's input width or the model's, zero-padded to
the file's). Every sample runs in a network built afresh from the file for ``--steps`` steps (by
default T + extra_steps + number of layers, the simulator's length), input in the first T. OUT.npz:
``layer0``, ``layer1``... (steps, B, width) the hidden layers' spikes as Lava emits them (Lava
step s + 1 in row s: the first Lava step is 1), ``readout_v`` (steps, B, n) the readout neurons'
integer voltage (neuron.v, Monitor), ``seconds`` (B,) the wall time of each sample, ``versions``.
"""

from __future__ import annotations

import argparse
import time

import h5py
import numpy as np


def run_sample(netx_path: str, x: np.ndarray, steps: int, input_message_bits: int) -> tuple[list, np.ndarray]:
    """One sample: x (C_file, steps) counts -> (hidden spikes [(steps, width_k)], readout v (steps, n))."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc import io
    from lava.proc.monitor.process import Monitor

    net = netx.hdf5.Network(net_config=netx_path, input_message_bits=input_message_bits)
    source = io.source.RingBuffer(data=x)
    source.s_out.connect(net.inp)
    sinks = []
    for layer in net.layers[:-1]:
        sink = io.sink.RingBuffer(shape=layer.out.shape, buffer=steps)
        layer.out.connect(sink.a_in)
        sinks.append(sink)
    readout = net.layers[-1].neuron
    monitor = Monitor()
    monitor.probe(readout.v, steps)
    net.run(condition=RunSteps(num_steps=steps), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    try:
        spikes = [np.asarray(s.data.get()).T.copy() for s in sinks]
        v = np.asarray(monitor.get_data()[readout.name]["v"]).reshape(steps, -1).copy()
    finally:
        net.stop()
    return spikes, v


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("netx")
    ap.add_argument("input")
    ap.add_argument("out")
    ap.add_argument("--input-message-bits", type=int, default=None,
                    help="hdf5.Network(input_message_bits=...); default: the file's attribute, else 8")
    ap.add_argument("--steps", type=int, default=None)
    args = ap.parse_args(argv)
    x = np.load(args.input)
    with h5py.File(args.netx, "r") as f:
        width = int(f["layer/0/shape"][()][0])
        n_layers = len(f["layer"]) - 1
        bits = args.input_message_bits
        if bits is None:
            bits = int(f.attrs.get("input_message_bits", 8))
        extra = int(f.attrs.get("extra_steps", 0))
    if x.ndim != 3 or x.shape[2] > width:
        raise SystemExit(f"input must be (T, B, C <= {width}); got {x.shape}")
    steps = args.steps if args.steps is not None else x.shape[0] + extra + n_layers
    out: dict[str, list] = {}
    seconds = []
    for b in range(x.shape[1]):
        xb = np.zeros((width, steps), dtype=np.int64)
        n = min(steps, x.shape[0])
        xb[: x.shape[2], :n] = np.rint(x[:n, b, :]).T
        start = time.perf_counter()
        spikes, v = run_sample(args.netx, xb, steps, bits)
        seconds.append(time.perf_counter() - start)
        for k, s in enumerate(spikes):
            out.setdefault(f"layer{k}", []).append(s)
        out.setdefault("readout_v", []).append(v)
    from importlib.metadata import version
    versions = " + ".join(f"{p} {version(p)}" for p in ("lava-nc", "lava-dl"))
    np.savez(args.out, seconds=np.asarray(seconds), versions=np.asarray(versions),
             input_message_bits=np.asarray(bits),
             **{k: np.stack(v, axis=1) for k, v in out.items()})


if __name__ == "__main__":
    main()
