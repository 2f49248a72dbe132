"""``snn-delays export``: a trained run -> network.h5 and a chip's format
(:func:`neuromorphic_export.export.export_run`); with ``--clip``, the accuracy before and after on
the run's test split (opened by :func:`snn_delays.verification.load_split`)."""

from __future__ import annotations

import argparse

from neuromorphic_export.errors import ExportError
from neuromorphic_export.export import export_run
from neuromorphic_export.targets import TARGETS, check_weight_bits, get_target

from .. import verification
from ._common import count, export_errors

__all__ = ["add_parser", "run_export"]


def add_parser(sub) -> None:
    p = sub.add_parser("export", help="export a trained run to network.h5 and a chip's format")
    p.add_argument("run_dir", help="run folder (best.pt) or a checkpoint file")
    p.add_argument("--target", default="generic", help=f"one of {', '.join(TARGETS)} (default generic)")
    p.add_argument("--out", required=True,
                   help="output folder (network.h5, format files, export.json); a previous export there is "
                        "replaced as a whole")
    p.add_argument("--force", action="store_true",
                   help="replace --out even if it holds files that are not an export (they are deleted)")
    p.add_argument("--clip", action="store_true",
                   help="clip what breaks the target's limits instead of stopping; reports the accuracy "
                        "before and after on the run's test split")
    p.add_argument("--weight-bits", type=int, help="integer weight bits (default: the target's)")
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--data-dir", help="dataset folder for the --clip accuracy report")
    p.add_argument("--samples", type=count, default=0, help="test samples for the --clip report (0: all)")
    p.set_defaults(func=run_export)


@export_errors
def run_export(args: argparse.Namespace) -> int:
    target = get_target(args.target)  # unknown target: a clear message before anything is read
    unused = [flag for flag, given in (("--data-dir", args.data_dir), ("--samples", args.samples)) if given]
    if unused and not args.clip:
        raise ExportError(f"{' and '.join(unused)} only choose the data of the --clip accuracy report; add --clip "
                          "or leave them out")
    if args.weight_bits is not None:
        check_weight_bits(target, args.weight_bits)
    data = None
    if args.clip:
        try:
            x, y, _ = verification.load_split(args.run_dir, None, args.data_dir, "test", args.samples,
                                              args.checkpoint)
            data = (x, y)
        except ExportError:
            raise
        except Exception as e:  # noqa: BLE001 - the export itself does not need the data
            print(f"note: accuracy before/after clipping not measured ({type(e).__name__}: {e})")
    rep = export_run(args.run_dir, args.target, args.out, clip=args.clip, weight_bits=args.weight_bits,
                     which=args.checkpoint, data=data, force=args.force)
    print(f"exported {rep['source']} for {rep['target']} ({rep['description']}) into {args.out}")
    for f in rep["files"]:
        print(f"  {f}")
    c = rep["conventions"]
    hop = c["hop_latency_steps"]
    print(f"  conventions: {hop} step{'' if hop == 1 else 's'} of latency per hop, spike when u "
          f"{c['threshold_rule']} threshold, {c['arithmetic']} arithmetic")
    print(f"  synapses per layer {rep['synapses']}, max delay per layer (steps) {rep['max_delay_steps']}")
    for n in rep["notes"]:
        print(f"  {n}")
    d = rep["delays"]
    print(f"  delays: {sum(d['delayed_synapses'])} synapses with a non-zero delay ({d['distinct_delays']} distinct "
          "delays per layer); what each file carries to the chip:")
    for name, what in d["per_file"].items():
        print(f"    {name}: {what}")
    if "per_file_recurrent" in d:
        print(f"  recurrent synapses per hidden layer {rep['recurrent_synapses']}, max recurrent delay (steps) "
              f"{rep['max_recurrent_delay_steps']}; what each file carries of them:")
        for name, what in d["per_file_recurrent"].items():
            print(f"    {name}: {what}")
    for ch in rep["clipped"]:
        print(f"  clipped: {ch}")
    if "accuracy" in rep:
        a = rep["accuracy"]
        print(f"  accuracy on {a['samples']} test samples: float export {a['float_model_convention']:.4f}, "
              f"{rep['target']} before clipping {a['before_clipping']:.4f}, after {a['after_clipping']:.4f}")
    return 0
