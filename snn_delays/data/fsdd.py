"""FSDD (Free Spoken Digit Dataset): real spoken digits, read from their folder, never copied.

Files ``{digit}_{speaker}_{take}.wav`` (8 kHz mono) in ROOT or ROOT/recordings; ROOT defaults to
``../shared/data/fsdd`` beside the repository. Two input kinds:

* ``input="mel"``: the GSC front end (:func:`snn_delays.data.audio.front_end`): 1 s clips (padded or
  cut), (101, ``n_mels``) dB frames (140 bands by default, as GSC); ``f_max_hz`` as for GSC (14,000 Hz
  = the paper's setting; 4,000 Hz = the corrected one).
* ``input="spikes"``: the cochlea (:mod:`.cochlea`) turns every recording into 700 channels of
  spikes, written once as an SHD-layout HDF5 file in the cache and read and binned by the SHD reader
  (``dt_ms``, ``pool``, ``frame_convention``); ``encode_workers`` processes encode (0 or 1: this one).

Splits: by take (default): takes 0-4 are ``test``; ``valid`` is a seeded, stratified
``valid_fraction`` slice of takes 5-49 and ``train`` the rest. By speaker (``test_speakers="a,b"``):
those speakers' files are ``test``, ``valid`` a slice of the others, or, with
``valid_speakers="c"``, every file of those speakers (disjoint from the test speakers; then no
``test`` or ``valid`` speaker is ever in ``train``). ``all`` = every file.
``normalize`` (mel only; spike counts are left as they are): ``"none"``, ``"utterance"`` (each clip
minus its mean, over its standard deviation), ``"channel"`` (each band of each clip minus its mean
over time, over the clip's standard deviation) or ``"tilt"`` (the clip's spectral slope across the
bands removed, then as ``"utterance"``): see :func:`snn_delays.data.audio.normalize_db`.
``n_steps`` pads or cuts every sample to that many steps (0: 101 frames for mel, the longest
recording for spikes).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from neuromorphic_export._io import remove_stale_parts

from ._interrupt import terminate_raises_exit
from .arrays import ArrayDataset, fit_steps, require_samples, stratified_split
from .audio import DB_FLOOR, NORMALIZATIONS, front_end_params, normalize_db, wav_features
from .cache import build_lock, cache_key, folder_fingerprint, load_or_build, resolve_cache_dir
from .cochlea import encode_folder
from .registry import DatasetError, register
from .spikefile import bin_spikes, check_binning, read_spike_file, read_spike_file_attrs

__all__ = ["default_fsdd_root", "fsdd_files", "fsdd_speakers", "open_fsdd", "N_TEST_TAKES"]

N_TEST_TAKES = 5
_NAME = re.compile(r"(?P<digit>\d)_(?P<speaker>[A-Za-z0-9-]+)_(?P<take>\d+)\.wav")


def default_fsdd_root() -> Path:
    """``../shared/data/fsdd`` beside the repository (the folder provided with this project)."""
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "fsdd"


def fsdd_files(root: Path) -> tuple[Path, list[str], np.ndarray, list[str], np.ndarray]:
    """(folder of the WAV files, file names, digits (N,), speakers (N,) names, takes (N,))."""
    folder = root / "recordings" if (root / "recordings").is_dir() else root
    if not folder.is_dir():
        raise DatasetError(f"FSDD folder {root} does not exist; give the folder of the recordings with "
                           "--data-dir DIR (files {digit}_{speaker}_{take}.wav, e.g. ../shared/data/fsdd)")
    names = sorted(p.name for p in folder.glob("*.wav"))
    if not names:
        raise DatasetError(f"{folder} holds no .wav files; expected FSDD recordings {{digit}}_{{speaker}}_{{take}}.wav")
    parsed = [_NAME.fullmatch(n) for n in names]
    bad = [n for n, m in zip(names, parsed) if m is None]
    if bad:
        raise DatasetError(f"{folder / bad[0]}: name does not follow FSDD's {{digit}}_{{speaker}}_{{take}}.wav "
                           f"({len(bad)} such file(s))")
    digits = np.array([int(m["digit"]) for m in parsed], dtype=np.int64)
    speakers = [m["speaker"] for m in parsed]
    takes = np.array([int(m["take"]) for m in parsed], dtype=np.int64)
    return folder, names, digits, speakers, takes


def fsdd_speakers(root=None) -> list[str]:
    """The speakers of the FSDD folder ``root`` (None: the default folder), sorted."""
    root = Path(root) if root else default_fsdd_root()
    return sorted(set(fsdd_files(root)[3]))


def _speaker_list(option: str, text: str, speakers: list[str]) -> list[str]:
    names = list(dict.fromkeys(s.strip() for s in text.split(",") if s.strip()))
    unknown = sorted(set(names) - set(speakers))
    if unknown:
        raise DatasetError(f"{option} {', '.join(unknown)} not in the folder; speakers: "
                           f"{', '.join(sorted(set(speakers)))}")
    return names


def _select(split: str, digits, speakers, takes, test_speakers: str, valid_fraction: float,
            split_seed: int, valid_speakers: str = "") -> tuple[np.ndarray, str]:
    n = len(digits)
    if split == "all":
        return np.arange(n), "fsdd: every file in the folder"
    held_speakers = _speaker_list("test_speakers", test_speakers, speakers)
    valid_names = _speaker_list("valid_speakers", valid_speakers, speakers)
    if valid_names and not held_speakers:
        raise DatasetError("valid_speakers needs test_speakers (a speaker split); with the take split the "
                           "validation set is a slice of takes 5+")
    both = sorted(set(valid_names) & set(held_speakers))
    if both:
        raise DatasetError(f"speaker(s) {', '.join(both)} in both test_speakers and valid_speakers; a test "
                           "speaker must never be used for model selection")
    if valid_names:
        spk = np.array(speakers)
        is_test, is_valid = np.isin(spk, held_speakers), np.isin(spk, valid_names)
        parts = {"train": np.flatnonzero(~is_test & ~is_valid), "valid": np.flatnonzero(is_valid),
                 "test": np.flatnonzero(is_test)}
        note = (f"fsdd speaker split: test = speakers {','.join(held_speakers)}, valid = speakers "
                f"{','.join(valid_names)} (neither seen in training)")
        require_samples(split, {k: len(v) for k, v in parts.items()}, f"fsdd, {n} recordings")
        return parts[split], note
    if held_speakers:
        is_test = np.isin(np.array(speakers), held_speakers)
        note = (f"fsdd speaker split: test = speakers {','.join(held_speakers)} (unseen in training); valid = "
                f"seeded stratified {valid_fraction:.0%} slice of the other speakers (split_seed {split_seed})")
    else:
        is_test = takes < N_TEST_TAKES
        note = (f"fsdd take split: test = takes 0-{N_TEST_TAKES - 1}; valid = seeded stratified "
                f"{valid_fraction:.0%} slice of takes {N_TEST_TAKES}+ (split_seed {split_seed})")
    rest = np.flatnonzero(~is_test)
    keep, held = stratified_split(digits[rest], valid_fraction, split_seed)
    parts = {"train": rest[keep], "valid": rest[held], "test": np.flatnonzero(is_test)}
    require_samples(split, {k: len(v) for k, v in parts.items()}, f"fsdd, {n} recordings")
    return parts[split], note


@register("fsdd")
def open_fsdd(root=None, split: str = "train", input: str = "mel", test_speakers: str = "",
              valid_fraction: float = 0.1, split_seed: int = 0, f_max_hz: float = 14000.0, dt_ms: float = 10.0,
              pool: int = 5, frame_convention: str = "uniform", n_steps: int = 0,
              cache_dir: str = "", valid_speakers: str = "", normalize: str = "none",
              n_mels: int = 140, encode_workers: int = 2) -> ArrayDataset:
    """Open a split of FSDD as log-mel frames (``input="mel"``) or binned cochlea spikes (``"spikes"``)."""
    if root in (None, "") and not default_fsdd_root().is_dir():
        raise DatasetError(f"FSDD not found at the default {default_fsdd_root()}; pass --data-dir DIR")
    root = Path(root) if root else default_fsdd_root()
    folder, names, digits, speakers, takes = fsdd_files(root)
    cdir = resolve_cache_dir(cache_dir)
    if input not in ("mel", "spikes"):
        raise DatasetError(f"input must be 'mel' or 'spikes'; got {input!r}")
    if normalize not in NORMALIZATIONS:
        raise DatasetError(f"normalize must be one of {', '.join(NORMALIZATIONS)}; got {normalize!r}")
    if input == "spikes":
        check_binning(dt_ms, pool, frame_convention)  # before an encoding of many minutes
        if int(encode_workers) != encode_workers or encode_workers < 0:
            raise DatasetError(f"encode_workers must be an integer >= 0 (processes for the cochlea encoding; "
                               f"0 or 1: in this process); got {encode_workers}")
    else:
        front_end_params(f_max_hz, n_mels=n_mels)  # checks f_max_hz and n_mels
    idx, note = _select(split, digits, speakers, takes, test_speakers, valid_fraction, split_seed,
                        valid_speakers)  # before any work
    fingerprint = folder_fingerprint([folder / n for n in names], folder)
    if input == "mel":
        params = {"dataset": "fsdd-mel", "source": fingerprint, **front_end_params(f_max_hz, n_mels=n_mels)}
        arrays, _ = load_or_build(cdir, "fsdd-mel", params,
                                  lambda: ({"x": wav_features(folder, names, f_max_hz, desc="fsdd: log-mel features",
                                                              n_mels=n_mels)},
                                          {"n": len(names)}))
        x_all = arrays["x"]
        fill = 10.0 * np.log10(DB_FLOOR)
    else:
        x_all = _fsdd_spikes(folder, names, fingerprint, cdir, dt_ms, pool, frame_convention, int(encode_workers))
        fill = 0
    x = fit_steps(np.asarray(x_all[idx]), n_steps, fill)
    if input == "mel" and normalize != "none":  # spikes are counts: left as they are
        x = normalize_db(x, normalize)
    return ArrayDataset(x, digits[idx], 10, speakers=[speakers[i] for i in idx], files=[names[i] for i in idx],
                        keys=[str(d) for d in range(10)], protocol_note=note, input=input)


def _fsdd_spikes(folder: Path, names: list[str], fingerprint: str, cdir: Path | None, dt_ms: float, pool: int,
                 frame_convention: str, encode_workers: int = 2) -> np.ndarray:
    """All recordings as binned spike counts (N, T, C): cochlea -> SHD-layout file (cached) -> SHD binning.
    The encoding (``encode_workers`` processes) writes the file atomically under a build lock; Ctrl-C
    or SIGTERM leaves neither the file, its temporary file nor the lock."""
    spike_params = {"dataset": "fsdd-spikes", "source": fingerprint, "encoder": "cochlea-v1", "seed": 0}
    h5_dir = cdir if cdir is not None else Path.cwd() / "data_cache"
    h5 = h5_dir / f"fsdd-spikes-{cache_key(spike_params)[:20]}.h5"  # the recordings in SHD layout
    # parallel workers (cv, ablate) encode once, not once each
    with terminate_raises_exit(), build_lock(h5, "the FSDD cochlea spikes"):
        if not h5.exists():
            remove_stale_parts(h5.parent)  # the temporary files of an encoding that was killed (SIGKILL)
            print(f"fsdd: encoding {len(names)} recordings with the cochlea into {h5} (once; ~0.5 s per s of audio; "
                  f"data.encode_workers = {encode_workers})", file=sys.stderr, flush=True)
            encode_folder(folder, h5, seed=0, workers=encode_workers, progress=True,
                          desc="fsdd: encoding with the cochlea")
    encoded = str(read_spike_file_attrs(h5).get("files", "")).split("\n")
    if encoded != [n[: -len(".wav")] for n in names]:
        raise DatasetError(f"{h5} does not hold the recordings of {folder} in order; delete it to re-encode")
    params = {**spike_params, "dt_ms": float(dt_ms), "pool": int(pool), "frame_convention": frame_convention}

    def build():
        rec = read_spike_file(h5)
        return {"x": bin_spikes(rec.times, rec.units, dt_ms, pool, frame_convention)}, {"h5": str(h5)}

    arrays, _ = load_or_build(cdir, "fsdd-spikes", params, build)
    return arrays["x"]
