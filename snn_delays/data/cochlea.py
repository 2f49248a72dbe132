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

from neuromorphic_export._io import Progress

from .audio import MIN_CLIP_SECONDS, SILENCE_PEAK, audio_length, read_wav
from ._interrupt import children_ignore_sigint, terminate_raises_exit
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
MAX_LABEL = 65535  # labels and speakers are uint16 in the SHD layout


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
    empty = [rel for rel, lab in zip(rel_paths, raw_labels) if not lab]
    if empty:
        raise DatasetError(f"file {empty[0]!r}: the label group of {pattern!r} matched nothing (an empty label; "
                           f"{len(empty)} such file(s))")
    if all(s.isascii() and s.isdigit() for s in raw_labels):
        labels = np.array([int(s) for s in raw_labels], dtype=np.int64)
        big = int(np.argmax(labels))
        if labels[big] > MAX_LABEL:  # stored as uint16, and one key per number up to the largest
            raise DatasetError(f"file {rel_paths[big]!r} has label {labels[big]}; numeric labels are class numbers "
                               f"0..{MAX_LABEL} (is the label group of {pattern!r} matching something else?)")
        keys = [str(i) for i in range(int(labels.max()) + 1)] if len(labels) else []
    else:
        keys = sorted(set(raw_labels))
        index = {k: i for i, k in enumerate(keys)}
        labels = np.array([index[s] for s in raw_labels], dtype=np.int64)
    speaker_names = sorted(set(raw_speakers))
    for what, count in (("labels", len(keys)), ("speakers", len(speaker_names))):
        if count > MAX_LABEL + 1:
            raise DatasetError(f"{count} distinct {what} from {pattern!r}; the SHD layout stores at most "
                               f"{MAX_LABEL + 1} (uint16)")
    index = {k: i for i, k in enumerate(speaker_names)}
    speakers = np.array([index[s] for s in raw_speakers], dtype=np.int64)
    return labels, speakers, keys, speaker_names


# The membrane signal of a clip is (700 channels x samples / 2) complex numbers and a batch's drive
# (samples / 2 x clips x 700) floats: these bound both (2^18 samples: 1.5 GB and 0.7 GB at most).
MAX_CLIP_SAMPLES = 1 << 18
MAX_BATCH_SAMPLES = 1 << 18
# MIN_CLIP_SECONDS (audio.py): a shorter clip carries no word; at 10 ms it is also one period of about
# the lowest channel's resonance (110 Hz), below which the membrane resolves nothing.
# SILENCE_PEAK (audio.py, -96 dBFS): the cochlea scales every clip to RMS 0.3; silence has no level
# to scale, and would become a sample of spontaneous spikes under a label it does not hold.


def check_clip_length(path, n_samples: int, sample_rate: int) -> None:
    """DatasetError naming ``path`` and its length if a clip is longer than the cochlea encodes
    (MAX_CLIP_SAMPLES) or shorter than MIN_CLIP_SECONDS."""
    if n_samples > MAX_CLIP_SAMPLES:
        raise DatasetError(f"{path} is {n_samples / sample_rate:.1f} s long ({n_samples} samples at {sample_rate} Hz); "
                           f"the cochlea encodes clips of up to {MAX_CLIP_SAMPLES} samples "
                           f"({MAX_CLIP_SAMPLES / sample_rate:.1f} s at this rate): cut the recording into clips")
    min_samples = math.ceil(MIN_CLIP_SECONDS * sample_rate)
    if n_samples < min_samples:
        raise DatasetError(f"{path} is too short to encode: {n_samples} sample(s), "
                           f"{n_samples / sample_rate * 1e3:.2g} ms at {sample_rate} Hz; the cochlea needs at least "
                           f"{MIN_CLIP_SECONDS * 1e3:g} ms ({min_samples} samples at this rate): remove it or record it "
                           "again")


def check_not_silent(path, samples: np.ndarray) -> None:
    """DatasetError naming ``path`` if every sample is below SILENCE_PEAK (digital silence)."""
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    if peak < SILENCE_PEAK:
        what = "every sample is 0" if peak == 0 else f"its loudest sample is {peak:.2g}, below -96 dBFS"
        raise DatasetError(f"{path} is silent ({what}): the cochlea has no level to encode, and it would become a "
                           "sample of spontaneous spikes under its label; remove it or replace it")


def _read_checked(path) -> tuple[np.ndarray, int]:
    wave, sr = read_wav(path)  # also refuses damaged audio (check_audio)
    check_clip_length(path, wave.size, sr)
    check_not_silent(path, wave)
    return wave, sr


def _encode_chunk(args) -> list[tuple[np.ndarray, np.ndarray]]:
    paths, seed = args
    clips = [_read_checked(p) for p in paths]
    rates = {sr for _, sr in clips}
    if len(rates) == 1 and sum(w.size for w, _ in clips) <= MAX_BATCH_SAMPLES:
        return encode([w for w, _ in clips], rates.pop(), seed=seed)
    return [encode([w], sr, seed=seed)[0] for w, sr in clips]  # mixed rates, or too long together


def _worker_loop(conn, parent_pid: int) -> None:
    """A worker: encode the jobs (paths, seed) received on ``conn`` until None or the parent's end; send
    back ("ok", spikes) or ("error", exception, traceback). SIGINT is the parent's business."""
    import signal
    import traceback

    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # already ignored since start-up (children_ignore_sigint)
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return  # the parent closed the pipe
        if job is None:
            return
        try:
            reply = ("ok", _encode_chunk(job))
        except Exception as e:  # a bad file: the parent raises it
            reply = ("error", e, traceback.format_exc())
        try:
            conn.send(reply)
        except (EOFError, OSError):
            return
        except Exception as e:  # an error that cannot be pickled
            conn.send(("error", RuntimeError(repr(e)), traceback.format_exc()))


def _worker_gone(proc, paths: list) -> BaseException:
    """The error for a worker that ended without answering (while encoding ``paths``)."""
    import signal

    proc.join(timeout=1.0)
    code = proc.exitcode
    if code is not None and code < 0 and -code in (signal.SIGTERM, getattr(signal, "SIGHUP", 0)):
        return SystemExit(128 - code)  # the process group was told to stop: stop with it
    how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
    hint = " (out of memory?)" if code == -getattr(signal, "SIGKILL", 9) else ""
    return RuntimeError(f"a cochlea worker ended ({how}{hint}) while encoding {paths[0]} and "
                        f"{len(paths) - 1} other file(s)")


def _encode_in_workers(jobs: list, n_workers: int, done) -> None:
    """Run ``jobs`` in ``n_workers`` spawned processes, calling ``done(k, spikes)`` for each finished
    job k in this process. Whatever ends it (a worker's error, Ctrl-C, SIGTERM), every worker has
    ended when this returns or raises: the parent keeps no thread that could wait for them."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    ctx = mp.get_context("spawn")
    procs, conns = [], []
    finished = False
    try:
        with children_ignore_sigint():
            for w in range(n_workers):
                parent_end, child_end = ctx.Pipe()
                proc = ctx.Process(target=_worker_loop, args=(child_end, os.getpid()), daemon=True,
                                   name=f"cochlea-worker-{w}")
                proc.start()
                child_end.close()  # the worker's death now reads as the end of its pipe
                procs.append(proc)
                conns.append(parent_end)
        todo = iter(range(len(jobs)))
        busy: dict = {}  # pipe -> (job index, process)

        def give(conn, proc) -> None:
            k = next(todo, None)
            try:
                conn.send(jobs[k] if k is not None else None)
            except OSError:  # the worker is gone (a closed pipe is not this program's output pipe)
                if k is not None:
                    raise _worker_gone(proc, jobs[k][0]) from None
                return
            if k is not None:
                busy[conn] = (k, proc)

        for conn, proc in zip(conns, procs):
            give(conn, proc)
        while busy:
            for conn in wait(list(busy)):
                k, proc = busy.pop(conn)
                try:
                    reply = conn.recv()
                except (EOFError, OSError):
                    raise _worker_gone(proc, jobs[k][0]) from None
                if reply[0] == "error":
                    err, tb = reply[1], reply[2]
                    if isinstance(err, DatasetError):
                        raise err
                    raise RuntimeError(f"a cochlea worker failed:\n{tb}") from err
                done(k, reply[1])
                give(conn, proc)
        finished = True
    finally:  # normally they have all been told to stop; else end them now, not after their chunks
        for proc in procs:
            if not finished and proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(timeout=2.0)
            if proc.is_alive():
                proc.kill()
                proc.join()
        for conn in conns:
            conn.close()


def encode_files(paths: list, seed: int = 0, workers: int = 1, batch: int = 8,
                 progress: bool = False, desc: str = "encoding with the cochlea") -> list[tuple[np.ndarray, np.ndarray]]:
    """Encode audio files into spikes, in batches of similar length. ``workers``: processes (0 or 1:
    in this one), which end with this one even when it is killed; Ctrl-C (to this process or its whole
    process group) or SIGTERM ends them within a second. The result does not depend on ``workers``.
    ``progress``: what is done, how far, time left on stderr (:class:`.progress.Progress`; with
    several workers this process counts the finished files of all)."""
    if int(workers) != workers or workers < 0:
        raise DatasetError(f"workers must be an integer >= 0 (0 or 1: encode in this process); got {workers}")
    order = sorted(range(len(paths)), key=lambda i: os.path.getsize(paths[i]))
    chunks = [order[s:s + batch] for s in range(0, len(order), batch)]
    jobs = [([paths[i] for i in ch], seed * 1_000_003 + k) for k, ch in enumerate(chunks)]
    out: list = [None] * len(paths)
    with terminate_raises_exit(), Progress(len(paths), desc, "files", enabled=progress) as bar:
        def done(k: int, spikes: list) -> None:
            for i, r in zip(chunks[k], spikes):
                out[i] = r
            bar.update(len(chunks[k]))

        if workers > 1 and len(jobs) > 1:
            _encode_in_workers(jobs, min(workers, len(jobs)), done)
        else:
            for k, job in enumerate(jobs):
                done(k, _encode_chunk(job))
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
    units uint16 0..699 with unit 0 the highest frequency, labels and speakers from the file names),
    written atomically: an interrupted encoding leaves no file. ``workers``: processes (0 or 1: this
    one). Every recording is checked before the encoding starts (readable, finite, 10 ms .. 2^18
    samples, not silent): a bad one is a DatasetError naming it. Returns a summary: files, seconds of
    audio, seconds taken, ``classes`` (distinct labels present) and ``labels`` (those labels, sorted)."""
    in_dir = Path(in_dir)
    if not in_dir.is_dir():
        raise DatasetError(f"{in_dir} is not a folder of recordings")
    if int(workers) != workers or workers < 0:
        raise DatasetError(f"workers must be an integer >= 0 (processes; 0 or 1: this one); got {workers}")
    if seed < 0:
        raise DatasetError(f"seed must be >= 0; got {seed}")
    _check_writable(Path(out_h5))  # before the encoding, not after it
    files = sorted(p for p in in_dir.rglob("*") if p.suffix.lower() in (".wav", ".flac") and p.is_file())
    if not files:
        raise DatasetError(f"{in_dir} holds no .wav or .flac files")
    rel = [p.relative_to(in_dir).with_suffix("").as_posix() for p in files]
    labels, speakers, keys, speaker_names = parse_names(rel, label_pattern)
    with terminate_raises_exit():  # SIGTERM cleans up as Ctrl-C does (temporary file, workers)
        lengths = [audio_length(p) for p in files]  # (samples, rate) from the headers: refuse before encoding
        for p, (n_samples, sr) in zip(files, lengths):
            check_clip_length(p, n_samples, sr)
        for p in files:  # a damaged or silent file stops the command now, not an hour into the encoding
            _read_checked(p)
        t0 = time.perf_counter()
        spikes = encode_files([str(p) for p in files], seed=seed, workers=workers, progress=progress, desc=desc)
        elapsed = time.perf_counter() - t0
        audio_s = float(sum(n / sr for n, sr in lengths))
        write_spike_file(out_h5, [t for t, _ in spikes], [u for _, u in spikes], labels, speakers, keys,
                         attrs={"encoder": "snn_delays.data.cochlea", "seed": seed, "label_pattern": label_pattern,
                                "speaker_names": ",".join(speaker_names), "files": "\n".join(rel)})
    present = sorted(int(v) for v in np.unique(labels))
    return {"files": len(files), "audio_seconds": audio_s, "seconds": elapsed, "out": str(out_h5),
            "classes": len(present), "labels": present, "label_keys": keys, "speakers": speaker_names}


def describe_classes(labels: list[int]) -> str:
    """"N classes" for the distinct labels present, with the label values when they are not 0..N-1
    (numeric labels are stored as they are, so a reader of the file counts max + 1 classes)."""
    n = len(labels)
    text = f"{n} class{'es' if n != 1 else ''}"
    if labels and labels != list(range(n)):
        shown = ", ".join(map(str, labels)) if n <= 12 else f"{labels[0]}..{labels[-1]}"
        text += (f" (label{'s' if n != 1 else ''} {shown}, not 0..{n - 1}: a reader of the file counts "
                 f"{labels[-1] + 1} classes, {labels[-1] + 1 - n} of them without samples)")
    return text
