"""Training step (forward + backward) of the SHD-sized model for each interpolation kernel.

    nice -n 10 .venv/bin/python benchmarks/bench_interpolation.py [--repeats 7] [--threads 1]

Model 140 -> 256 -> 256 -> 20, Td = 25, batch 256, 100 input steps (+ 36 padding), binary input
of density 0.05, backend "auto" (what training uses). The kernels are measured back to back in
one process, interleaved (one step of each per round), and the minimum over rounds is reported:
on a shared machine the minimum is the least disturbed figure.
"""

from __future__ import annotations

import argparse
import time

import torch

from snn_delays.backends.interpolation import WIDTH_MIN
from snn_delays.config import ModelConfig
from snn_delays.model import DelaySNN

CASES = [  # (label, interpolation, learn_sigma, width in steps)
    ("gauss, sigma 0.5", "gauss", False, 0.5),
    ("triangle, sigma 0.5", "triangle", False, 0.5),
    ("triangle, sigma 1.0", "triangle", False, 1.0),
    ("bilinear", "bilinear", False, 0.5),
    ("gauss, learned widths ~0.5", "gauss", True, 0.5),
    ("triangle, learned widths ~1.2", "triangle", True, 1.2),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(100, args.batch, 140, generator=gen) < 0.05).float()
    y = torch.randint(0, 20, (args.batch,), generator=gen)
    models = {}
    for label, interp, learn, width in CASES:
        cfg = ModelConfig(input_size=140, n_classes=20, hidden_size=256, n_layers=2, kernel_size=25,
                          interpolation=interp, learn_sigma=learn)
        m = DelaySNN(cfg, seed=0, sigma_init=width).train()
        m.sigma = width
        if learn:  # widths spread around `width` as after some training (the widest sets the tap count)
            low = max(0.0, width - WIDTH_MIN[interp] - 0.15)
            with torch.no_grad():
                for s in m.synapses():
                    s.sigma_delta.copy_(low + 0.3 * torch.rand_like(s.sigma_delta))
        models[label] = m

    def step(m):
        m.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(DelaySNN.scores(m(x)), y)
        loss.backward()

    for m in models.values():  # compile, warm caches
        step(m)
    best = {k: float("inf") for k in models}
    for _ in range(args.repeats):
        for label, m in models.items():
            t0 = time.perf_counter()
            step(m)
            best[label] = min(best[label], time.perf_counter() - t0)
    ref = best[CASES[0][0]]
    print(f"threads {args.threads}, batch {args.batch}, min of {args.repeats} interleaved rounds")
    for label, m in models.items():
        taps = [s.resolved_backend(x) for s in m.synapses()]
        print(f"{label:<32} {best[label] * 1e3:8.0f} ms  x{best[label] / ref:5.2f}  backends {'/'.join(taps)}")


if __name__ == "__main__":
    main()
