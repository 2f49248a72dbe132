"""Google Speech Commands v0.02 (35 words) as log-mel frames, exactly as the reference front end.

Folder layout (the official archive unpacked)::

    ROOT/<word>/<speaker>_nohash_<n>.wav     35 word folders; _background_noise_/ is not a class
    ROOT/validation_list.txt                 relative paths word/file.wav
    ROOT/testing_list.txt

ROOT is the ``root`` option or its ``speech_commands_v0.02/`` (also torchaudio's
``SpeechCommands/speech_commands_v0.02/``). Classes: the 35 words in alphabetical order. Splits:
``valid`` and ``test`` from the two lists, ``train`` = every other ``word/*_nohash_*.wav``,
``all`` = the three together.

Features: :func:`snn_delays.data.audio.front_end` ((101, 140) dB per clip, f_max_hz 14,000 Hz as in
the paper; ``f_max_hz=4000`` is the corrected setting). Computed once per split and cached keyed by
the file list (names, sizes, modification times) and every front-end parameter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .arrays import ArrayDataset, fit_steps, require_samples
from .audio import DB_FLOOR, front_end_params, wav_features
from .cache import folder_fingerprint, load_or_build, resolve_cache_dir
from .download import REMOTE, default_root, missing_message
from .registry import DatasetError, register

__all__ = ["find_gsc_root", "gsc_split_files", "open_gsc"]

N_CLASSES = 35
BACKGROUND = "_background_noise_"


def find_gsc_root(root: Path) -> Path:
    """The folder holding ``testing_list.txt`` (root itself or a known sub-folder)."""
    for d in (root, root / "speech_commands_v0.02", root / "SpeechCommands" / "speech_commands_v0.02"):
        if (d / "testing_list.txt").is_file() or (d / "validation_list.txt").is_file():
            return d
    raise DatasetError(missing_message(REMOTE["gsc"][0], root,
                                       "no validation_list.txt/testing_list.txt found there; unpack the archive "
                                       "into that folder"))


def _read_list(path: Path, base: Path) -> list[str]:
    if not path.is_file():
        raise DatasetError(f"{path} is missing: the GSC folder {base} is incomplete (unpack the archive again)")
    entries = [ln.strip().replace("\\", "/") for ln in path.read_text().splitlines() if ln.strip()]
    missing = [e for e in entries if not (base / e).is_file()]
    if missing:
        raise DatasetError(f"{path} names {len(missing)} file(s) that do not exist under {base}, e.g. {missing[0]}; "
                           "the GSC folder is incomplete (unpack the archive again)")
    return entries


def gsc_split_files(base: Path) -> tuple[list[str], dict[str, list[str]]]:
    """(classes in alphabetical order, {split: sorted relative paths}) for the GSC folder ``base``."""
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and d.name != BACKGROUND
                     and not d.name.startswith(".") and not d.name.startswith("_"))
    if not classes:
        raise DatasetError(f"{base}: no word folders found; expected one folder per word with .wav files")
    valid = _read_list(base / "validation_list.txt", base)
    test = _read_list(base / "testing_list.txt", base)
    held = set(valid) | set(test)
    train = sorted(f"{c}/{p.name}" for c in classes for p in (base / c).glob("*.wav")
                   if "_nohash_" in p.name and f"{c}/{p.name}" not in held)
    for name, entries in (("validation_list.txt", valid), ("testing_list.txt", test)):
        bad = [e for e in entries if e.split("/")[0] not in classes]
        if bad:
            raise DatasetError(f"{base / name}: entry {bad[0]!r} is not in a word folder")
    return classes, {"train": train, "valid": sorted(valid), "test": sorted(test)}


@register("gsc")
def open_gsc(root=None, split: str = "train", f_max_hz: float = 14000.0, n_steps: int = 0,
             cache_dir: str = "", n_mels: int = 140) -> ArrayDataset:
    """Open a split of GSC-35 as (N, 101, n_mels) float32 log-mel features (140 bands by default)."""
    base = find_gsc_root(Path(root) if root else default_root())
    classes, files = gsc_split_files(base)
    if len(classes) != N_CLASSES:
        import warnings

        warnings.warn(f"{base}: found {len(classes)} word folders, GSC v0.02 has {N_CLASSES}", stacklevel=2)
    require_samples(split, {k: len(v) for k, v in files.items()}, f"gsc folder {base}")
    parts = ["train", "valid", "test"] if split == "all" else [split]
    rel = [r for p in parts for r in files[p]]
    cdir = resolve_cache_dir(cache_dir)
    params = {"dataset": "gsc", "source": folder_fingerprint([base / r for r in rel], base), "split": split,
              "classes": classes, **front_end_params(f_max_hz, n_mels=n_mels)}

    def build():
        x = wav_features(base, rel, f_max_hz, desc=f"gsc {split}: log-mel features", n_mels=n_mels)
        y = np.array([classes.index(r.split("/")[0]) for r in rel], dtype=np.int64)
        return {"x": x, "y": y}, {"n": len(rel)}

    arrays, _ = load_or_build(cdir, f"gsc-{split}", params, build)
    x = fit_steps(arrays["x"], n_steps, 10.0 * np.log10(DB_FLOOR))
    return ArrayDataset(x, np.asarray(arrays["y"]), len(classes), keys=classes, files=rel,
                        protocol_note="gsc: official validation_list.txt / testing_list.txt")
