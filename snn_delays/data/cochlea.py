"""A vectorised cochlea: audio -> 700 channels of spikes, ordered like SHD (unit 0 = highest frequency).

The chain follows the converter that made SHD (lauscher, Cramer et al. 2022), stage by stage, but
computes every channel (and every clip of a batch) at once:

1. RMS-normalise the clip to 0.3, multiply by a full-length Hann window (rising over the first half,
   falling over the second).
2. Basilar membrane: the clip's spectrum times one real, zero-phase frequency response per channel,
   back to time at half the audio rate as the converter does (``real(ifft(H * X[:N//2 + 1]))``).
   Channel k sits at position c_k = 3.5 k / 699 of the hydrodynamic model, whose resonance is
   ``cf = sqrt((1e9 exp(-3 c) - 3500) / 0.05) / 2 pi`` (22.5 kHz at unit 0, 110 Hz at unit 699). The
   response is a fit to that model's transfer function: peak at 0.988 cf, ``exp(-1.355 |u|^1.063)``
   below and ``exp(-16.04 u^0.776)`` above the peak (u = ln(f / f_peak)), peak gain interpolated
   from the model's (74 at 13 kHz ... 214 at 200 Hz).
3. Meddis inner hair cell (transmitter reservoirs q, c, w; same constants) -> release probability.
4. Per channel 40 fibres, each firing with that probability per sample with 1 ms refractoriness.
   The fibres are exchangeable, so their count is drawn at once: Binomial(40 - fibres still
   refractory, p). This is the same distribution as 40 separate Bernoulli fibres.
5. A LIF "bushy cell" per channel (tau_mem 1 ms, tau_syn 0.5 ms, weight 13,000 / 40, threshold 1,
   1 ms refractory) whose spikes are the output.

Everything after step 2 is one loop over time steps on arrays of shape (clips x 700,).
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import numpy as np

from .audio import audio_length, read_wav
from .._progress import Progress
from ..workers import die_with_parent
from .registry import DatasetError
from .spikefile import write_spike_file

__all__ = ["N_CHANNELS", "channel_cf_hz", "bm_response", "encode", "CochleaParams"]

N_CHANNELS = 700

# Observed peak gains of the hydrodynamic model's transfer function at these resonance frequencies.
_GAIN_CF_HZ = np.array([194.0, 333.0, 566.0, 959.0, 1624.0, 2748.0, 4649.0, 7864.0, 13305.0])
_GAIN = np.array([214.4, 206.1, 194.3, 176.6, 152.9, 126.4, 101.8, 82.6, 73.8])


class CochleaParams:
    """The constants of every stage (names as in the models' papers)."""

    rms_level = 0.3
    # basilar membrane position -> resonance
    c0, alpha, a_bm, m_bm, span = 1e9, 3.0, 3500.0, 0.05, 3.5
    peak_ratio, low_a, low_p, high_a, high_p = 0.988, 1.355, 1.063, 16.04, 0.776
    # Meddis hair cell
    y, g, l, r, x, a, b, h, m = 5.05, 2000.0, 2500.0, 6580.0, 66.3, 5.0, 300.0, 50000.0, 1.0
    # fibres and bushy cell
    n_fibres, tau_refrac_s, tau_mem_s, tau_syn_s, weight = 40, 1e-3, 1e-3, 5e-4, 13e3


def channel_cf_hz(n_channels: int = N_CHANNELS) -> np.ndarray:
    """Resonance frequency (Hz) of each channel, unit 0 the highest (base) to the lowest (apex)."""
    p = CochleaParams
    c = np.linspace(0.0, p.span, n_channels)
    return np.sqrt((p.c0 * np.exp(-p.alpha * c) - p.a_bm) / p.m_bm) / (2 * np.pi)


def bm_response(freqs_hz: np.ndarray, n_channels: int = N_CHANNELS) -> np.ndarray:
    """Real gain of each channel at each frequency: (n_channels, F)."""
    p = CochleaParams
    cf = channel_cf_hz(n_channels)
    gain = np.interp(np.log(cf), np.log(_GAIN_CF_HZ), _GAIN)  # (C,) flat beyond the table
    f = np.maximum(np.asarray(freqs_hz, dtype=np.float64), 1e-3)
    u = np.log(f[None, :] / (p.peak_ratio * cf[:, None]))  # (C, F)
    shape = np.where(u < 0, np.exp(-p.low_a * np.abs(u) ** p.low_p), np.exp(-p.high_a * np.abs(u) ** p.high_p))
    return gain[:, None] * shape


def _basilar_membrane(wave: np.ndarray, sample_rate: int, n_channels: int) -> np.ndarray:
    """(S,) normalised, windowed clip -> (C, S // 2 + 1) membrane signal at sample_rate // 2."""
    n_out = wave.size // 2 + 1
    spectrum = np.fft.fft(wave)[:n_out]  # (M,)
    freqs = np.linspace(1.0, sample_rate // 2, n_out)  # the converter's frequency axis
    return np.real(np.fft.ifft(bm_response(freqs, n_channels) * spectrum[None, :], axis=-1))


def _prepare(wave: np.ndarray) -> np.ndarray:
    w = np.asarray(wave, dtype=np.float64).copy()
    rms = np.sqrt(np.mean(w ** 2))
    if rms > 0:
        w *= CochleaParams.rms_level / rms
    up, down = w.size // 2, w.size // 2
    if up:
        w[:up] *= np.hanning(2 * up)[:up]
        w[-down:] *= np.hanning(2 * down)[:down][::-1]
    return w


def encode(waves: list[np.ndarray], sample_rate: int, seed: int = 0, n_channels: int = N_CHANNELS,
           ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Encode clips (1-D float arrays at ``sample_rate``) into spikes: per clip (times in seconds
    float64 ascending, units int64 0..n_channels-1). Deterministic for the same clips and seed."""
    p = CochleaParams
    if not waves:
        return []
    fs = sample_rate // 2  # the membrane and everything after it run at half the audio rate
    bms = [_basilar_membrane(_prepare(w), sample_rate, n_channels) for w in waves]
    lengths = np.array([b.shape[1] for b in bms])
    n_steps = int(lengths.max())
    B, C = len(waves), n_channels
    drive = np.zeros((n_steps, B * C))  # (M, B*C) membrane signal, time-major
    for i, b in enumerate(bms):
        drive[: b.shape[1], i * C:(i + 1) * C] = b.T
    del bms
    rng = np.random.default_rng([int(seed), B, n_steps])

    # Meddis hair cell, per-sample rates
    ymdt, xdt, ydt, rdt = p.y * p.m / fs, p.x / fs, p.y / fs, p.r / fs
    gdt, hdt, lrdt = p.g / fs, p.h / fs, (p.l + p.r) / fs
    kt0 = p.g * p.a / (p.a + p.b)
    c0 = p.m * p.y * kt0 / (p.l * kt0 + p.y * (p.l + p.r))
    q = np.full(B * C, c0 * (p.l + p.r) / kt0)
    c = np.full(B * C, c0)
    w = np.full(B * C, c0 * p.r / p.x)
    # fibres: spikes of the last (refrac - 1) samples keep those fibres silent
    refrac = p.tau_refrac_s * fs
    n_ring = max(int(math.ceil(refrac)) - 1, 0)
    ring = np.zeros((max(n_ring, 1), B * C), dtype=np.int64)
    recent = np.zeros(B * C, dtype=np.int64)
    # bushy cell
    decay_m, decay_s = math.exp(-1.0 / (fs * p.tau_mem_s)), math.exp(-1.0 / (fs * p.tau_syn_s))
    w_in = p.weight / p.n_fibres / fs
    vm = np.zeros(B * C)
    isyn = np.zeros(B * C)
    rc = np.zeros(B * C)
    out_t: list[np.ndarray] = []
    out_i: list[np.ndarray] = []
    for step in range(n_steps):
        s = drive[step] + p.a
        kt = np.where(s > 0, gdt * s / np.where(s + p.b == 0, 1.0, s + p.b), 0.0)
        replenish = np.where(q < p.m, ymdt - ydt * q, 0.0)
        eject = kt * q
        reprocess = xdt * w
        q_new = np.maximum(q + replenish - eject + reprocess, 0.0)
        w = np.maximum(w + rdt * c - reprocess, 0.0)
        c = np.maximum(c + eject - lrdt * c, 0.0)
        q = q_new
        prob = np.clip(c * hdt, 0.0, 1.0)
        n_fire = rng.binomial(p.n_fibres - recent, prob)
        if n_ring:
            slot = step % n_ring
            recent += n_fire - ring[slot]
            ring[slot] = n_fire
        # bushy cell (the converter's update order)
        if step > 0:
            active = rc <= 0
            fire = active & (vm >= 1.0)
            if fire.any():
                idx = np.flatnonzero(fire)
                out_t.append(np.full(idx.size, step - 1))
                out_i.append(idx)
            vm = np.where(active & ~fire, vm * decay_m, 0.0)
            rc = np.where(fire, refrac, rc)
            isyn = isyn * decay_s
        isyn = isyn + n_fire
        vm = np.minimum(np.where(rc <= 0, vm + isyn * w_in, vm), 1.0)
        rc = rc - 1
    steps = np.concatenate(out_t) if out_t else np.zeros(0, dtype=np.int64)
    flat = np.concatenate(out_i) if out_i else np.zeros(0, dtype=np.int64)
    clip, unit = flat // C, flat % C
    result = []
    for i in range(B):
        sel = (clip == i) & (steps < lengths[i])
        order = np.lexsort((unit[sel], steps[sel]))
        result.append((steps[sel][order] / fs, unit[sel][order].astype(np.int64)))
    return result


# ----------------------------------------------------------------------------------------------
# Folders of recordings -> an SHD-layout HDF5 file

DEFAULT_LABEL_PATTERN = r"(?:.*/)?(?P<label>\d+)_(?P<speaker>[^_/]+)_(?P<take>\d+)"


def parse_names(rel_paths: list[str], pattern: str = DEFAULT_LABEL_PATTERN) -> tuple[np.ndarray, np.ndarray, list[str],
                                                                                        list[str]]:
    """Labels and speakers from file paths (relative, without extension) with a regular expression
    holding a ``label`` group and optionally a ``speaker`` group. Numeric labels are kept as numbers;
    word labels become indices into the sorted words (returned as keys). Returns
    (labels (N,) int64, speakers (N,) int64, keys, speaker names)."""
    try:
        rx = re.compile(pattern)
    except re.error as e:
        raise DatasetError(f"--label-pattern {pattern!r} is not a valid regular expression: {e}") from None
    if "label" not in rx.groupindex:
        raise DatasetError(f"--label-pattern {pattern!r} needs a named group (?P<label>...)")
    raw_labels, raw_speakers = [], []
    for rel in rel_paths:
        m = rx.fullmatch(rel)
        if m is None:
            raise DatasetError(f"file {rel!r} does not match the label pattern {pattern!r}")
        raw_labels.append(m.group("label"))
        raw_speakers.append(m.group("speaker") if "speaker" in rx.groupindex and m.group("speaker") else "")
    if all(s.isdigit() for s in raw_labels):
        labels = np.array([int(s) for s in raw_labels], dtype=np.int64)
        keys = [str(i) for i in range(int(labels.max()) + 1)] if len(labels) else []
    else:
        keys = sorted(set(raw_labels))
        labels = np.array([keys.index(s) for s in raw_labels], dtype=np.int64)
    speaker_names = sorted(set(raw_speakers))
    speakers = np.array([speaker_names.index(s) for s in raw_speakers], dtype=np.int64)
    return labels, speakers, keys, speaker_names


# The membrane signal of a clip is (700 channels x samples / 2) complex numbers and a batch's drive
# (samples / 2 x clips x 700) floats: these bound both (2^18 samples: 1.5 GB and 0.7 GB at most).
MAX_CLIP_SAMPLES = 1 << 18
MAX_BATCH_SAMPLES = 1 << 18


def check_clip_length(path, n_samples: int, sample_rate: int) -> None:
    """DatasetError naming ``path`` if a clip is longer than the cochlea encodes (MAX_CLIP_SAMPLES)."""
    if n_samples > MAX_CLIP_SAMPLES:
        raise DatasetError(f"{path} is {n_samples / sample_rate:.1f} s long ({n_samples} samples at {sample_rate} Hz); "
                           f"the cochlea encodes clips of up to {MAX_CLIP_SAMPLES} samples "
                           f"({MAX_CLIP_SAMPLES / sample_rate:.1f} s at this rate): cut the recording into clips")


def _encode_chunk(args) -> list[tuple[np.ndarray, np.ndarray]]:
    paths, seed = args
    clips = [read_wav(p) for p in paths]
    for p, (w, sr) in zip(paths, clips):
        check_clip_length(p, w.size, sr)
    rates = {sr for _, sr in clips}
    if len(rates) == 1 and sum(w.size for w, _ in clips) <= MAX_BATCH_SAMPLES:
        return encode([w for w, _ in clips], rates.pop(), seed=seed)
    return [encode([w], sr, seed=seed)[0] for w, sr in clips]  # mixed rates, or too long together


def encode_files(paths: list, seed: int = 0, workers: int = 1, batch: int = 8,
                 progress: bool = False, desc: str = "encoding with the cochlea") -> list[tuple[np.ndarray, np.ndarray]]:
    """Encode audio files into spikes, in batches of similar length (``workers`` processes, which end
    with this one even when it is killed). ``progress``: what is done, how far, time left on stderr
    (:class:`.progress.Progress`; with several workers this process counts the finished files of all)."""
    if workers < 1:
        raise DatasetError(f"workers must be >= 1; got {workers}")
    order = sorted(range(len(paths)), key=lambda i: os.path.getsize(paths[i]))
    chunks = [order[s:s + batch] for s in range(0, len(order), batch)]
    jobs = [([paths[i] for i in ch], seed * 1_000_003 + k) for k, ch in enumerate(chunks)]
    out: list = [None] * len(paths)
    with Progress(len(paths), desc, "files", enabled=progress) as bar:
        if workers > 1 and len(jobs) > 1:
            import multiprocessing as mp
            from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

            ex = ProcessPoolExecutor(min(workers, len(jobs)), mp_context=mp.get_context("spawn"),
                                     initializer=die_with_parent, initargs=(os.getpid(),))
            try:
                pending = {ex.submit(_encode_chunk, job): ch for job, ch in zip(jobs, chunks)}
                while pending:
                    finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        ch = pending.pop(fut)
                        for i, r in zip(ch, fut.result()):  # re-raises a worker's error here
                            out[i] = r
                        bar.update(len(ch))
            except BaseException:  # a worker's error, Ctrl-C: stop the others now, not after their chunks
                ex.shutdown(wait=False, cancel_futures=True)
                for proc in list((getattr(ex, "_processes", None) or {}).values()):
                    proc.terminate()
                raise
            ex.shutdown(wait=True)
        else:
            for ch, job in zip(chunks, jobs):
                for i, r in zip(ch, _encode_chunk(job)):
                    out[i] = r
                bar.update(len(ch))
    return out


def _check_writable(out_h5: Path) -> None:
    """DatasetError unless a file can be written at ``out_h5`` (a file name in a folder we may write)."""
    import tempfile

    if out_h5.is_dir():
        raise DatasetError(f"{out_h5} is a folder; give the output file, e.g. {out_h5 / 'spikes.h5'}")
    try:
        out_h5.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_h5.parent):
            pass
    except OSError as e:
        raise DatasetError(f"cannot write {out_h5}: {e.strerror or e}") from None


def encode_folder(in_dir, out_h5, label_pattern: str = DEFAULT_LABEL_PATTERN, seed: int = 0, workers: int = 1,
                  progress: bool = False, desc: str = "encoding with the cochlea") -> dict:
    """Every ``*.wav``/``*.flac`` under ``in_dir`` -> an SHD-layout HDF5 file ``out_h5`` (times float16 s,
    units uint16 0..699 with unit 0 the highest frequency, labels and speakers from the file names).
    Returns a summary (files, seconds of audio, seconds taken)."""
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise DatasetError(f"{in_dir} is not a folder of recordings")
    if workers < 1:
        raise DatasetError(f"workers must be >= 1 (processes); got {workers}")
    if seed < 0:
        raise DatasetError(f"seed must be >= 0; got {seed}")
    _check_writable(Path(out_h5))  # before the encoding, not after it
    files = sorted(p for p in in_dir.rglob("*") if p.suffix.lower() in (".wav", ".flac") and p.is_file())
    if not files:
        raise DatasetError(f"{in_dir} holds no .wav or .flac files")
    rel = [p.relative_to(in_dir).with_suffix("").as_posix() for p in files]
    labels, speakers, keys, speaker_names = parse_names(rel, label_pattern)
    lengths = [audio_length(p) for p in files]  # (samples, rate) from the headers: refuse before encoding
    for p, (n_samples, sr) in zip(files, lengths):
        check_clip_length(p, n_samples, sr)
    t0 = time.perf_counter()
    spikes = encode_files([str(p) for p in files], seed=seed, workers=workers, progress=progress, desc=desc)
    elapsed = time.perf_counter() - t0
    audio_s = float(sum(n / sr for n, sr in lengths))
    write_spike_file(out_h5, [t for t, _ in spikes], [u for _, u in spikes], labels, speakers, keys,
                     attrs={"encoder": "snn_delays.data.cochlea", "seed": seed, "label_pattern": label_pattern,
                            "speaker_names": ",".join(speaker_names), "files": "\n".join(rel)})
    return {"files": len(files), "audio_seconds": audio_s, "seconds": elapsed, "out": str(out_h5),
            "classes": len(keys), "speakers": speaker_names}
