"""``snn-delays encode-audio``: a folder of recordings -> SHD-layout spikes
(:func:`snn_delays.data.cochlea.encode_folder`)."""

from __future__ import annotations

import argparse

from ..data.cochlea import DEFAULT_LABEL_PATTERN, describe_classes, encode_folder

__all__ = ["add_parser", "run_encode_audio"]


def add_parser(sub) -> None:
    p = sub.add_parser("encode-audio", help="a folder of recordings -> SHD-layout spikes (cochlea model)")
    p.add_argument("in_dir", help="folder of .wav/.flac files (searched recursively)")
    p.add_argument("out", help="output HDF5 file (SHD layout)")
    p.add_argument("--label-pattern", default=DEFAULT_LABEL_PATTERN,
                   help="regular expression matched against each file's relative path without extension, "
                        "with a (?P<label>...) group and optionally (?P<speaker>...); default: FSDD names "
                        "{digit}_{speaker}_{take}")
    p.add_argument("--seed", type=int, default=0, help="seed of the fibres' random spikes")
    p.add_argument("--workers", type=int, default=1, help="processes for the encoding (default 1; 0 or 1: this "
                   "process); Ctrl-C or SIGTERM ends them and leaves no output file")
    p.set_defaults(func=run_encode_audio)


def run_encode_audio(args: argparse.Namespace) -> int:
    res = encode_folder(args.in_dir, args.out, label_pattern=args.label_pattern, seed=args.seed,
                        workers=args.workers, progress=True)
    speed = res["seconds"] / max(res["audio_seconds"], 1e-9) * 60
    print(f"wrote {res['out']}: {res['files']} files, {res['audio_seconds']:.1f} s of audio, "
          f"{describe_classes(res['labels'])}, speakers {', '.join(res['speakers']) or '-'}; "
          f"encoded in {res['seconds']:.1f} s ({speed:.1f} s per minute of audio)")
    return 0
