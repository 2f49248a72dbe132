"""Sub-commands ``snn-delays data ...`` and ``snn-delays encode-audio``: parse, call the library."""

from __future__ import annotations

import argparse

__all__ = ["add_subcommand"]


def cmd_download(args: argparse.Namespace) -> int:
    from .download import download_dataset

    for path in download_dataset(args.name, args.root):
        print(f"ok  {path}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from . import available_datasets, open_dataset
    from .registry import DatasetError, opener_options

    opts, source = _named_config_options(args.name)
    opts["cache_dir"] = args.cache_dir or ""
    known = opener_options(args.name)  # empty for an unknown name, which open_dataset reports
    for key, flag, value in (("input", "--input", args.input), ("encode_workers", "--workers", args.workers)):
        if value is None:
            continue
        if known and key not in known:  # not silently ignored
            users = [n for n in available_datasets() if key in opener_options(n)]
            raise DatasetError(f"{flag} does not apply to {args.name}; it applies to "
                               f"{', '.join(users) or 'no dataset'}")
        opts[key] = value
    for split in ("train", "valid", "test"):
        ds = open_dataset(args.name, args.root, split, **opts)
        x = ds.x if hasattr(ds, "x") else None
        shape = tuple(x.shape) if x is not None else (len(ds), ds.n_steps, ds.n_channels)
        print(f"{args.name}/{split}: {len(ds)} samples, x {shape} {getattr(x, 'dtype', '')}, "
              f"{ds.n_classes} classes")
    note = getattr(ds, "protocol_note", "")
    if note:
        print(note)
    if source:
        print(f"(opened with the data options of {source}, as `snn-delays train --dataset {args.name}` opens it)")
    return 0


def _named_config_options(name: str) -> tuple[dict, str]:
    """The data options of the config in experiments/ named like the dataset (what ``train
    --dataset NAME`` uses: n_steps, input kind, ...) and its file name; ({}, "") when there is none."""
    from ..config import load_config, named_configs

    if name not in named_configs():
        return {}, ""
    cfg = load_config(name)
    if cfg.data.dataset != name:
        return {}, ""
    return cfg.data.dataset_options(), f"experiments/{name}.toml"


def cmd_encode_audio(args: argparse.Namespace) -> int:
    from .cochlea import describe_classes, encode_folder

    res = encode_folder(args.in_dir, args.out, label_pattern=args.label_pattern, seed=args.seed,
                        workers=args.workers, progress=True)
    speed = res["seconds"] / max(res["audio_seconds"], 1e-9) * 60
    print(f"wrote {res['out']}: {res['files']} files, {res['audio_seconds']:.1f} s of audio, "
          f"{describe_classes(res['labels'])}, speakers {', '.join(res['speakers']) or '-'}; "
          f"encoded in {res['seconds']:.1f} s ({speed:.1f} s per minute of audio)")
    return 0


def add_subcommand(sub, name: str) -> None:
    """Register ``data`` or ``encode-audio`` on the top-level sub-parsers."""
    if name == "data":
        p = sub.add_parser("data", help="download, verify and inspect datasets")
        dsub = p.add_subparsers(dest="data_command", required=True)
        q = dsub.add_parser("download", help="fetch the official files, verify checksums, unpack")
        q.add_argument("name", choices=["shd", "ssc", "gsc"])
        q.add_argument("--data-dir", "--root", dest="root",
                       help="folder for the files (default: datasets/ of the source tree); --root is an alias")
        q.set_defaults(func=cmd_download)
        q = dsub.add_parser("info", help="open every split of a dataset and print its shapes")
        q.add_argument("name")
        q.add_argument("--data-dir", "--root", dest="root", help="the dataset's folder; --root is an alias")
        q.add_argument("--input", choices=["mel", "spikes"], help="FSDD input kind (default mel)")
        q.add_argument("--workers", type=int, help="processes for the cochlea encoding of FSDD --input spikes on "
                       "first use (data.encode_workers; default 2; 0 or 1: this process)")
        q.add_argument("--cache-dir", help="binned cache folder (default $SNN_DELAYS_CACHE or ./data_cache)")
        q.set_defaults(func=cmd_info)
    elif name == "encode-audio":
        from .cochlea import DEFAULT_LABEL_PATTERN

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
        p.set_defaults(func=cmd_encode_audio)
