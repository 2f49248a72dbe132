"""``snn-delays finetune``: continue a run with a chip's constraints (:func:`snn_delays.finetune.finetune`)."""

from __future__ import annotations

import argparse

from ..finetune import DEFAULT_EPOCHS, finetune

__all__ = ["add_parser", "run_finetune"]


def add_parser(sub) -> None:
    p = sub.add_parser("finetune", help="continue a finished run with a chip's constraints in the loop "
                              "(quantised weights and biases, its delays, threshold rule and latency)")
    p.add_argument("run_dir", help="a finished run folder (its best.pt starts the fine-tuning)")
    p.add_argument("--target", required=True, help="loihi1, loihi2, spinnaker1 or spinnaker2")
    p.add_argument("--out", required=True, help="the new run folder (resumed when it holds last.pt)")
    p.add_argument("--epochs", type=int, help=f"fine-tuning epochs (default {DEFAULT_EPOCHS})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one value of the fine-tuning config (repeatable)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"], help="which checkpoint of RUN_DIR")
    p.add_argument("--restart", action="store_true", help="ignore an existing last.pt in --out and start over")
    p.set_defaults(func=run_finetune)


def run_finetune(args: argparse.Namespace) -> int:
    result = finetune(args.run_dir, args.target, args.out, args.epochs, args.overrides, resume=not args.restart,
                      checkpoint=args.checkpoint)
    print(f"run folder: {args.out} (fine-tuned for {args.target})")
    start = result.get("finetune_start", {})
    if start.get("kept"):
        print(f"  no fine-tuned epoch beat the starting weights on {args.target}'s forward by more than noise "
              f"(validation samples gained {start['gained']}, lost {start['lost']}: sign test p = "
              f"{start['p']:.3g} > {start['alpha']}): best.pt holds them (epoch 0, valid "
              f"{result['best_valid_acc']:.4f})")
    elif result.get("best_epoch", -1) >= 0:
        print(f"  best valid accuracy on {args.target}'s forward {result['best_valid_acc']:.4f} (epoch "
              f"{result['best_epoch']}), test accuracy at that epoch {result['test_acc']:.4f}")
        if start:
            print(f"  it replaced the starting weights (valid {start['valid_acc']:.4f}, test {start['test_acc']:.4f}): "
                  f"validation samples gained {start['gained']}, lost {start['lost']} (sign test p = {start['p']:.3g})")
    print(f"  export it with: snn-delays export {args.out} --target {args.target} --out EXPORT_DIR")
    return 0
