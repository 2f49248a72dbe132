"""SHD and SSC (Heidelberg spiking data sets) as datasets: find the files, bin them, cache, split.

The file format (reading, checking, binning) is :mod:`.spikefile`. Every sample is padded with zeros
at the end to one length per dataset (the longest sample over all its files, in bins of ``dt_ms``),
or padded/cut to ``n_steps``; channels are pooled by ``pool``; ``frame_convention`` as in
:func:`.spikefile.bin_spikes`. The binned arrays are cached (see :mod:`.cache`).

Splits: SSC has train/valid/test files. SHD has no validation file: with ``protocol="clean"``
(default) ``valid`` is a seeded, stratified ``valid_fraction`` slice held out of shd_train (and
``train`` is the rest); ``protocol="paper"`` trains on all of shd_train and validates on shd_test,
as the paper did. ``split="all"`` is every sample of every file.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from neuromorphic_export._io import Progress

from .arrays import ArrayDataset, require_samples, stratified_split
from .cache import load_or_build, resolve_cache_dir, source_checksum
from .download import REMOTE, default_root, missing_message, unpack
from .registry import DatasetError, register
from .spikefile import N_UNITS, bin_spikes, check_binning, check_labels, check_natural_length, read_spike_file

__all__ = ["open_heidelberg", "open_shd", "open_ssc", "locate_file", "SPLIT_FILES", "N_CLASSES"]

SPLIT_FILES = {"shd": ("train", "test"), "ssc": ("train", "valid", "test")}
N_CLASSES = {"shd": 20, "ssc": 35}


def _candidate_dirs(name: str, root: Path) -> list[Path]:
    return [root, root / name.upper(), root / name]  # plain, tonic's layout (root/SHD), lower case


def locate_file(name: str, part: str, root: Path, cache_dir: Path | None) -> Path:
    """Find ``{name}_{part}.h5`` under ``root`` (also tonic's ``root/SHD/``), unpacking a ``.h5.gz`` or
    ``.h5.zip`` there on first use; raise DatasetError saying where to get it otherwise."""
    fname = f"{name}_{part}.h5"
    dirs = _candidate_dirs(name, root)
    for d in dirs:
        if (d / fname).is_file():
            return d / fname
    for d in dirs:
        for ext in (".gz", ".zip"):
            archive = d / (fname + ext)
            if archive.is_file():
                dest = d if os.access(d, os.W_OK) else (cache_dir or Path.cwd() / "data_cache") / "unpacked"
                if (dest / fname).is_file():
                    return dest / fname
                return unpack(archive, dest)
    remote = next(r for r in REMOTE[name] if r.name == fname + ".zip")
    raise DatasetError(missing_message(remote, root, f"not found in {', '.join(str(d) for d in dirs)}"))


def _protocol_note(name: str, protocol: str, valid_fraction: float, split_seed: int) -> str:
    if name == "ssc":
        return "ssc: validation on the official ssc_valid file; test on ssc_test"
    if protocol == "paper":
        return ("shd protocol 'paper': trained on all of shd_train; validation = shd_test (model selection on "
                "the test set, as in the paper); test = shd_test")
    return (f"shd protocol 'clean': validation = seeded stratified {valid_fraction:.0%} slice of shd_train "
            f"(split_seed {split_seed}), trained on the rest; test = shd_test, never seen during training")


def open_heidelberg(name: str, root=None, split: str = "train", dt_ms: float = 10.0, pool: int = 5,
                    protocol: str = "clean", valid_fraction: float = 0.1, frame_convention: str = "uniform",
                    n_steps: int = 0, cache_dir: str = "", split_seed: int = 0) -> ArrayDataset:
    """Open ``split`` of SHD or SSC; see the module docstring for binning, padding and splits."""
    if name not in SPLIT_FILES:
        raise DatasetError(f"unknown Heidelberg dataset {name!r}")
    if protocol not in ("clean", "paper"):
        raise DatasetError(f"protocol must be 'clean' or 'paper'; got {protocol!r}")
    check_binning(dt_ms, pool, frame_convention)
    root = Path(root) if root else default_root()
    cdir = resolve_cache_dir(cache_dir)
    paths = {p: locate_file(name, p, root, cdir) for p in SPLIT_FILES[name]}
    params = {
        "dataset": name,
        "sources": {p: source_checksum(path, cdir) for p, path in paths.items()},
        "dt_ms": float(dt_ms),
        "pool": int(pool),
        "frame_convention": frame_convention,
        "n_steps": int(n_steps),
        "n_units": N_UNITS,
    }

    def build():
        with Progress(len(paths), f"{name}: reading the spike files", "files") as bar:
            records = {}
            for p, path in paths.items():
                records[p] = read_spike_file(path)
                bar.update()
        T = int(n_steps) if n_steps > 0 else check_natural_length(
            {str(paths[p]): r.times for p, r in records.items()}, dt_ms, frame_convention, -(-N_UNITS // pool))
        arrays, keys = {}, []
        for p, r in records.items():
            arrays[f"{p}_x"] = bin_spikes(r.times, r.units, dt_ms, pool, frame_convention, T)
            arrays[f"{p}_y"] = r.labels
            arrays[f"{p}_speaker"] = r.speakers
            keys = keys or r.keys
        if len({a.dtype for k, a in arrays.items() if k.endswith("_x")}) > 1:
            for k in [k for k in arrays if k.endswith("_x")]:
                arrays[k] = arrays[k].astype(np.uint16)
        info = {"keys": keys, "n_steps": T, "files": {p: str(path) for p, path in paths.items()}}
        return arrays, info

    arrays, info = load_or_build(cdir, name, params, build)
    n_classes = max(N_CLASSES[name], len(info["keys"]))
    for p, path in info["files"].items():  # checked at every open: a cached entry may predate the check
        check_labels(np.asarray(arrays[f"{p}_y"]), n_classes, path)
    note = _protocol_note(name, protocol, valid_fraction, split_seed)
    common = dict(keys=info["keys"], protocol_note=note, source_files=info["files"], dt_ms=float(dt_ms))

    def part(p, idx=None):
        x, y, spk = arrays[f"{p}_x"], arrays[f"{p}_y"], arrays[f"{p}_speaker"]
        if idx is not None:
            x, y, spk = x[idx], y[idx], spk[idx]
        return ArrayDataset(x, np.asarray(y), n_classes, speakers=np.asarray(spk), **common)

    sizes = {p: len(arrays[f"{p}_y"]) for p in SPLIT_FILES[name]}
    if name == "shd" and protocol == "paper":
        sizes = {"train": sizes["train"], "valid": sizes["test"], "test": sizes["test"]}
    elif name == "shd":
        keep, held = stratified_split(np.asarray(arrays["train_y"]), valid_fraction, split_seed)
        sizes = {"train": len(keep), "valid": len(held), "test": sizes["test"]}
    require_samples(split, sizes, f"{name} files in {root}" + (
        f", valid = {valid_fraction:g} of {Path(info['files']['train']).name}" if name == "shd" and protocol == "clean"
        else ""))
    if split == "all":
        ps = SPLIT_FILES[name]
        return ArrayDataset(np.concatenate([arrays[f"{p}_x"] for p in ps]),
                            np.concatenate([arrays[f"{p}_y"] for p in ps]), n_classes,
                            speakers=np.concatenate([arrays[f"{p}_speaker"] for p in ps]), **common)
    if name == "ssc" or split == "test":
        return part(split)
    if protocol == "paper":
        return part("train" if split == "train" else "test")
    return part("train", keep if split == "train" else held)


@register("shd")
def open_shd(root=None, split: str = "train", dt_ms: float = 10.0, pool: int = 5, protocol: str = "clean",
             valid_fraction: float = 0.1, frame_convention: str = "uniform", n_steps: int = 0,
             cache_dir: str = "", split_seed: int = 0) -> ArrayDataset:
    """Spiking Heidelberg Digits (20 classes): ``root/shd_{train,test}.h5`` (or tonic's ``root/SHD/``)."""
    return open_heidelberg("shd", root, split, dt_ms, pool, protocol, valid_fraction, frame_convention, n_steps,
                           cache_dir, split_seed)


@register("ssc")
def open_ssc(root=None, split: str = "train", dt_ms: float = 10.0, pool: int = 5, valid_fraction: float = 0.1,
             frame_convention: str = "uniform", n_steps: int = 0, cache_dir: str = "",
             split_seed: int = 0) -> ArrayDataset:
    """Spiking Speech Commands (35 classes): ``root/ssc_{train,valid,test}.h5`` (or ``root/SSC/``)."""
    return open_heidelberg("ssc", root, split, dt_ms, pool, "clean", valid_fraction, frame_convention, n_steps,
                           cache_dir, split_seed)
