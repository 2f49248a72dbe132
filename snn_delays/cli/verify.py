"""``snn-delays verify``: print what :func:`snn_delays.verification.verify_run` found (a table, or
JSON) and exit 0 when it passed, 1 when it failed."""

from __future__ import annotations

import argparse
import json

from neuromorphic_export.verify import VENDOR_SOFTWARE, format_side_by_side, format_table

from .. import verification
from ._common import count, export_errors

__all__ = ["add_parser", "run_verify"]


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="run model and exported network(s) on a split; compare")
    p.add_argument("run_dir")
    p.add_argument("export_dir", help="folder written by `snn-delays export`")
    p.add_argument("--dataset", help="dataset name (default: the run's)")
    p.add_argument("--data-dir")
    p.add_argument("--split", default="test", choices=["train", "valid", "test", "all"])
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--samples", type=count, default=0, help="use the first N samples (0: all)")
    p.add_argument("--export-only", action="store_true",
                   help="skip the in-memory check of every target (quantised, clipped where needed)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--in", dest="software", action="append", default=[], choices=VENDOR_SOFTWARE,
                   help="also run the export in a vendor's own software: lava (netx.h5 in Lava, loihi "
                   "targets) or nest (pynn/ in PyNN on NEST, spinnaker1 and generic); its classes and spikes "
                   "must equal our simulator's, or verify fails. Needs spike-count input and the side "
                   "environment of scripts/test-env-lava.sh / test-env-nest.sh; about 1 s per sample in "
                   "Lava: choose --samples. Repeatable")
    p.add_argument("--finetuned", nargs="+", default=[], metavar="RUN",
                   help="runs fine-tuned from this one (snn-delays finetune): their exports for their targets "
                        "are shown beside the float model and the plain export")
    p.set_defaults(func=run_verify)


@export_errors
def run_verify(args: argparse.Namespace) -> int:
    v = verification.verify_run(args.run_dir, args.export_dir, dataset=args.dataset, data_dir=args.data_dir,
                                split=args.split, checkpoint=args.checkpoint, samples=args.samples,
                                export_only=args.export_only, software=args.software, finetuned=args.finetuned)
    if args.json:
        print(json.dumps(v.as_dict(), indent=1))
    else:
        print(f"{v.dataset} / {v.split}:")
        print(format_table(v.model_accuracy, v.n, v.results))
        if v.per_target:
            print(format_side_by_side(v.model_accuracy, v.per_target, v.chip_model))
        for note in v.check.notes:
            print(f"note: {note}")
        if v.passed:
            print(f"PASSED: the files of {v.export_dir} are the ones export wrote (SHA-256 in export.json), network.h5 "
                  f"holds the checkpoint's {v.export_target} tables"
                  + (f"; {', '.join(v.check.readable)} computes the same spikes and classes" if v.check.readable
                     else "")
                  + (f"; {' and '.join(v.software)} computed our simulator's classes and spikes, "
                     "entry for entry" if v.software else ""))
        else:
            print(f"FAILED: {v.export_dir} is not what export wrote from this checkpoint:")
            for problem in v.check.problems:
                print(f"  {problem}")
    return 0 if v.passed else 1
