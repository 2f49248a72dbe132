"""``snn-delays data download|info``: fetch and inspect datasets through :mod:`snn_delays.data`."""

from __future__ import annotations

import argparse

from ..config import load_config, named_configs
from ..data import available_datasets, open_dataset
from ..data.download import download_dataset
from ..data.registry import DatasetError, opener_options

__all__ = ["add_parser", "run_download", "run_info"]


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="download, verify and inspect datasets")
    dsub = p.add_subparsers(dest="data_command", required=True)
    q = dsub.add_parser("download", help="fetch the official files, verify checksums, unpack")
    q.add_argument("name", choices=["shd", "ssc", "gsc"])
    q.add_argument("--data-dir", "--root", dest="root",
                   help="folder for the files (default: datasets/ of the source tree); --root is an alias")
    q.set_defaults(func=run_download)
    q = dsub.add_parser("info", help="open every split of a dataset and print its shapes")
    q.add_argument("name")
    q.add_argument("--data-dir", "--root", dest="root", help="the dataset's folder; --root is an alias")
    q.add_argument("--input", choices=["mel", "spikes"], help="FSDD input kind (default mel)")
    q.add_argument("--workers", type=int, help="processes for the cochlea encoding of FSDD --input spikes on "
                   "first use (data.encode_workers; default 2; 0 or 1: this process)")
    q.add_argument("--cache-dir", help="binned cache folder (default $SNN_DELAYS_CACHE or ./data_cache)")
    q.set_defaults(func=run_info)


def run_download(args: argparse.Namespace) -> int:
    for path in download_dataset(args.name, args.root):
        print(f"ok  {path}")
    return 0


def run_info(args: argparse.Namespace) -> int:
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
    if name not in named_configs():
        return {}, ""
    cfg = load_config(name)
    if cfg.data.dataset != name:
        return {}, ""
    return cfg.data.dataset_options(), f"experiments/{name}.toml"
