"""The convolutional delay layer against the reference construction, same process, same input:
ours (``snn_delays.conv_model.ConvBlock``: DelayConv2d -> BatchNorm2d -> LIF) against dcls
``Dcls3_1d`` (Gaussian delays along time, dense k x k in space; Td - 1 zeros on the left of the
time axis) -> SpikingJelly multi-step ``BatchNorm2d`` -> ``LIFNode``.

    nice -n 10 .venv/bin/python benchmarks/bench_conv.py [--repeats 5] [--threads 2] [--json out.json]

DVS-Gesture-like size: 100 steps, 2 polarities, 32 x 32 pixels (128 / 4), batch 16, input spikes of
density 0.02 (binary), 2 -> 16 channels, k = 5, padding 2, Td = 25 (delays 0..24 steps), one delay
per kernel element. Training step (forward, summed-rate loss, backward) at sigma Td // 2 and 0.5;
evaluation with rounded delays (ours: the event-driven compiled loops on the CPU; the reference:
its training kernel in eval mode, dcls having no rounded-delay form) after BatchNorm calibration.
Each case runs once to warm up, then the cases are timed interleaved, one step each per round;
the minimum over rounds is reported, and ratios reference / ours (> 1: ours is faster).

Needs the reference stack: ``pip install --no-deps dcls==0.1.1 spikingjelly==2.0.0 && pip install loguru``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
from torch import nn

from neuromorphic_export.conv import ConvSpec
from snn_delays.conv_model import ConvBlock
from snn_delays.conv_synapse import DelayConv2d
from snn_delays.model import TimeSharedDropout, calibrate_batchnorm

T, B, C_IN, HW, C_OUT, K, TD = 100, 16, 2, 32, 16, 5, 25


class Reference(nn.Module):
    """pad Td - 1 zeros on the left of time -> Dcls3_1d -> SpikingJelly BatchNorm2d -> LIFNode; (T, B, C, H, W)."""

    def __init__(self, sigma: float):
        super().__init__()
        from DCLS.construct.modules import Dcls3_1d
        from spikingjelly.activation_based import layer, neuron, surrogate

        # dcls 0.1.1's construct API, as the public DVS Gesture attempt builds it: time is the last axis,
        # (B, C, H, W, T); dense k x k in space, one learned position (delay) per element along time
        self.conv = Dcls3_1d(C_IN, C_OUT, kernel_count=1, stride=(1, 1, 1), padding=(K // 2, K // 2, 0),
                             dense_kernel_size=(K, K), dilated_kernel_size=(TD,), bias=False, version="gauss")
        self.conv.SIG.requires_grad = False
        self.set_sigma(sigma)
        self.bn = layer.BatchNorm2d(C_OUT, step_mode="m")
        self.lif = neuron.LIFNode(tau=1.005, surrogate_function=surrogate.ATan(), detach_reset=True, step_mode="m")

    def set_sigma(self, sigma: float) -> None:
        with torch.no_grad():
            self.conv.SIG.fill_(sigma)

    def forward(self, x):
        xb = x.permute(1, 2, 3, 4, 0)  # (B, C, H, W, T)
        xb = nn.functional.pad(xb, (TD - 1, 0))
        y = self.conv(xb).permute(4, 0, 1, 2, 3).contiguous()  # (T, B, C_out, H, W)
        return self.lif(self.bn(y))


def ours(sigma: float) -> ConvBlock:
    syn = DelayConv2d(C_IN, C_OUT, K, TD, padding=K // 2, sigma=sigma, generator=torch.Generator().manual_seed(0))
    return ConvBlock(syn, ConvSpec(C_OUT, K, 1, K // 2), 1.005, 1.0, 5.0, TimeSharedDropout(0.0))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from spikingjelly.activation_based import functional

    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(T, B, C_IN, HW, HW, generator=gen) < 0.02).float()

    def ours_train(sigma):
        m = ours(sigma).train()
        return lambda: m(x)[1].mean().backward()

    def ref_train(sigma):
        m = Reference(sigma).train()

        def step():
            m(x).mean().backward()
            functional.reset_net(m)
        return step

    def ours_eval():
        m = calibrate_batchnorm(ours(0.5), x)

        def step():
            with torch.no_grad():
                m(x)
        return step

    def ref_eval():
        m = Reference(0.5)
        calibrate_batchnorm(m, x)
        functional.reset_net(m)

        def step():
            with torch.no_grad():
                m(x)
            functional.reset_net(m)
        return step

    cases = {}
    for sigma in (TD // 2, 0.5):
        cases[f"train, sigma {sigma:g}"] = (ours_train(sigma), ref_train(sigma))
    cases["eval, rounded delays (ours: event-driven)"] = (ours_eval(), ref_eval())
    for a, b in cases.values():  # warm up (numba compiles, caches)
        a(), b()
    best = {(k, who): float("inf") for k in cases for who in (0, 1)}
    for _ in range(args.repeats):
        for label, fns in cases.items():
            for who, fn in enumerate(fns):
                t0 = time.perf_counter()
                fn()
                best[label, who] = min(best[label, who], time.perf_counter() - t0)
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}, "
          f"T {T}, batch {B}, {C_IN} x {HW} x {HW} -> {C_OUT} channels, k {K}, Td {TD}, min of {args.repeats}")
    rows = []
    for label in cases:
        o, r = best[label, 0], best[label, 1]
        rows.append({"case": label, "ours_s": o, "reference_s": r, "reference_over_ours": r / o})
        print(f"{label:<44} ours {o:8.3f} s  reference {r:8.3f} s  x{r / o:6.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "sizes": {"T": T, "B": B, "C_in": C_IN, "HW": HW, "C_out": C_OUT,
                                                          "k": K, "Td": TD}, "repeats": args.repeats,
                       "rows": rows, "torch": torch.__version__, "cpu": platform.processor()}, f, indent=1)


if __name__ == "__main__":
    main()
