"""Training step (forward + backward) and evaluation of the SHD-sized model, feed-forward against
recurrent (``model.recurrent = true``: every hidden layer's recurrent delay synapses, 256 x 256,
delays 1..25 steps).

    nice -n 10 .venv/bin/python benchmarks/bench_recurrent.py [--repeats 5] [--threads 2] [--json out.json]

Model 140 -> 256 -> 256 -> 20, Td = Dr = 25, batch 256, 100 input steps (+ 36 padding), binary
input of density 0.05, backend "auto". Training at sigma 0.5 (the schedule's floor) and at the
initial sigma Td // 2 = 12; evaluation with rounded delays, BatchNorm calibrated. The cases run
interleaved (one step of each per round) and the minimum over rounds is reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from snn_delays.config import ModelConfig
from snn_delays.model import DelaySNN, calibrate_batchnorm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(100, args.batch, 140, generator=gen) < 0.05).float()
    y = torch.randint(0, 20, (args.batch,), generator=gen)
    models = {}
    for rec in (False, True):
        cfg = ModelConfig(input_size=140, n_classes=20, hidden_size=256, n_layers=2, kernel_size=25, recurrent=rec)
        models[rec] = DelaySNN(cfg, seed=0, sigma_init=12.0)
    evals = {rec: calibrate_batchnorm(DelaySNN(m.config, seed=0), x) for rec, m in models.items()}

    def train_step(m, sigma):
        m.train()
        m.sigma = sigma
        m.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(DelaySNN.scores(m(x)), y).backward()

    def eval_step(m, _):
        with torch.no_grad():
            m(x)

    cases = {}
    for sigma in (0.5, 12.0):
        for rec in (False, True):
            cases[f"train, sigma {sigma:g}, {'recurrent' if rec else 'feed-forward'}"] = (train_step, models[rec], sigma)
    for rec in (False, True):
        cases[f"eval, rounded delays, {'recurrent' if rec else 'feed-forward'}"] = (eval_step, evals[rec], None)
    forms = {}
    for label, (fn, m, sigma) in cases.items():  # compile, warm caches; note the recurrent form used
        fn(m, sigma)
        if m.config.recurrent:
            blk = m.hidden[0]
            blk.train(fn is train_step)
            if sigma is not None:
                m.sigma = sigma
            forms[label] = "taps" if blk.recurrent.uses_taps(x.permute(0, 2, 1)) else "dense"
    best = {k: float("inf") for k in cases}
    for _ in range(args.repeats):
        for label, (fn, m, sigma) in cases.items():
            t0 = time.perf_counter()
            fn(m, sigma)
            best[label] = min(best[label], time.perf_counter() - t0)
    print(f"{platform.processor() or platform.machine()}, threads {args.threads}, batch {args.batch}, "
          f"min of {args.repeats} interleaved rounds")
    rows = []
    labels = list(cases)
    for i in range(0, len(labels), 2):
        ff, rc = labels[i], labels[i + 1]
        ratio = best[rc] / best[ff]
        rows.append({"case": ff.rsplit(",", 1)[0], "feed_forward_s": best[ff], "recurrent_s": best[rc],
                     "recurrent_over_feed_forward": ratio, "recurrent_form": forms.get(rc, "")})
        print(f"{ff.rsplit(',', 1)[0]:<28} feed-forward {best[ff]:7.3f} s  recurrent {best[rc]:7.3f} s  "
              f"x{ratio:5.2f}  ({forms.get(rc, '')})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "batch": args.batch, "repeats": args.repeats, "rows": rows,
                       "torch": torch.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
