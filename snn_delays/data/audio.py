"""Audio helpers shared by GSC, FSDD and the cochlea: WAV reading and the reference log-mel front end.

The front end of the reference (SNN-delays, GSC) is, per clip:

    pad with zeros at the end or cut to 1 s (16,000 samples at 16 kHz)
    -> resample to 8 kHz (torchaudio's default: windowed sinc, Hann window, 6 zero crossings, rolloff 0.99)
    -> power spectrogram (n_fft 256, hop 80, periodic Hann window, centred with reflect padding)
    -> 140 mel bands (HTK mel scale, triangular filters without normalisation, 50 Hz .. f_max)
    -> decibels 10 * log10(max(x, 1e-10))                                   (101 frames, 140 bands)

``f_max_hz`` is 14,000 Hz in the reference, above the 4 kHz Nyquist limit of 8 kHz audio, so only
87 of the 140 bands carry signal; ``f_max_hz=4000`` is the corrected setting. Everything here is
torch (CPU or GPU) without torchaudio, whose wheels cannot load beside this torch.
"""

from __future__ import annotations

import math
import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from neuromorphic_export._io import Progress

from .._optional import require
from .registry import DatasetError

__all__ = ["read_wav", "check_audio", "audio_length", "pad_or_cut", "resample", "hz_to_mel_htk", "mel_to_hz_htk", "mel_filterbank",
           "power_spectrogram", "log_mel", "front_end", "front_end_params", "wav_features", "normalize_db",
           "NORMALIZATIONS", "TOP_DB"]

SAMPLE_RATE = 8000  # the front end works on 8 kHz audio
CLIP_SECONDS = 1.0
N_FFT = 256
HOP = 80
N_MELS = 140
F_MIN_HZ = 50.0
F_MAX_HZ = 14000.0
DB_FLOOR = 1e-10
NORMALIZATIONS = ("none", "utterance", "channel", "tilt")
TILT_SPEECH_DB = 20.0  # normalize_db "tilt": frames whose mean level is within this of the loudest frame's
TOP_DB = 80.0  # normalize_db: dynamic range kept below each clip's loudest value (as librosa's top_db)


def read_wav(path: str | os.PathLike, max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Read an audio file with soundfile: (float32 samples (S,), rate in Hz), only its first
    ``max_seconds`` if given. Several channels are mixed down to one (their mean). Raises DatasetError
    naming the file when it cannot be read, holds no samples, or holds audio no recording can (see
    :func:`check_audio`)."""
    soundfile = require("soundfile", "reading audio files (GSC, FSDD, encode-audio)")

    try:
        with soundfile.SoundFile(str(path)) as f:
            sr = f.samplerate
            frames = -1 if max_seconds is None else int(math.ceil(max_seconds * sr))
            data = f.read(frames, dtype="float32", always_2d=True)  # (S, channels)
    except (RuntimeError, OSError, ValueError, soundfile.LibsndfileError) as e:
        raise DatasetError(f"{path} cannot be read as audio ({e}): it is truncated, corrupt or not a WAV file") from None
    if data.shape[0] == 0:
        raise DatasetError(f"{path} holds no audio samples (0 samples long)")
    mono = data[:, 0].copy() if data.shape[1] == 1 else data.mean(axis=1, dtype=np.float64).astype(np.float32)
    return check_audio(mono, int(sr), path), int(sr)


def audio_length(path: str | os.PathLike) -> tuple[int, int]:
    """(samples per channel, rate in Hz) from the file's header, without reading the audio."""
    soundfile = require("soundfile", "reading audio files (GSC, FSDD, encode-audio)")
    try:
        info = soundfile.info(str(path))
    except (RuntimeError, OSError, ValueError, soundfile.LibsndfileError) as e:
        raise DatasetError(f"{path} cannot be read as audio ({e}): it is truncated, corrupt or not a WAV file") from None
    return int(info.frames), int(info.samplerate)


# Float WAV/FLAC samples may exceed full scale (1.0) a little after processing, never by this much:
# beyond it the file is damaged (or not audio) and would poison every feature computed from it.
MAX_ABS_SAMPLE = 16.0
MIN_SAMPLE_RATE_HZ = 1000
MAX_SAMPLE_RATE_HZ = 768_000


def check_audio(samples: np.ndarray, sample_rate: int, path: str | os.PathLike) -> np.ndarray:
    """``samples`` (S,) unchanged if they are audio: finite, ``|x| <= MAX_ABS_SAMPLE`` (16 x full scale)
    and a rate between 1 kHz and 768 kHz; else DatasetError naming ``path``, the sample and the value."""
    if not MIN_SAMPLE_RATE_HZ <= sample_rate <= MAX_SAMPLE_RATE_HZ:
        raise DatasetError(f"{path}: sample rate {sample_rate} Hz is not an audio rate (expected "
                           f"{MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz); the file header is damaged")
    finite = np.isfinite(samples)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise DatasetError(f"{path} holds {bad.size} non-finite sample(s) (first: sample {bad[0]} = "
                           f"{samples[bad[0]]}, at {bad[0] / sample_rate:.3f} s); the file is damaged: "
                           "replace or remove it")
    peak_at = int(np.argmax(np.abs(samples)))
    if abs(float(samples[peak_at])) > MAX_ABS_SAMPLE:
        raise DatasetError(f"{path}: sample {peak_at} = {float(samples[peak_at]):.4g} is far beyond full scale "
                           f"(|x| <= 1; refused above {MAX_ABS_SAMPLE:g}); the file is damaged or not audio: "
                           "replace or remove it")
    return samples


def pad_or_cut(x: torch.Tensor, length: int) -> torch.Tensor:
    """(..., S) -> (..., length): zeros appended at the end, or the end cut off."""
    if x.shape[-1] >= length:
        return x[..., :length]
    return torch.nn.functional.pad(x, (0, length - x.shape[-1]))


WIDTH_ZEROS = 6  # zero crossings of the sinc on each side of an output sample
ROLLOFF = 0.99  # cut-off as a fraction of the lower Nyquist frequency
# The polyphase kernel holds (new x (2 width + orig)) taps for a rate ratio orig/new in lowest terms: a
# few thousand for 16 -> 8 kHz or 44.1 -> 8 kHz, but 380 million for 48,001 -> 8,000 Hz. Above this many
# taps the resampler computes the same windowed sinc directly, tap by tap, in chunks of output samples.
MAX_POLYPHASE_TAPS = 1 << 20
_DIRECT_CHUNK_ELEMENTS = 1 << 22  # (rows x output samples x taps) per chunk of the direct path


def _windowed_sinc(t: torch.Tensor, scale: float) -> torch.Tensor:
    """The interpolation kernel at ``t`` (in periods of the cut-off): Hann-windowed sinc, zero beyond
    +-WIDTH_ZEROS, times ``scale``."""
    t = t.clamp(-WIDTH_ZEROS, WIDTH_ZEROS)
    return torch.sinc(t) * torch.cos(t * (math.pi / WIDTH_ZEROS / 2)) ** 2 * scale


@lru_cache(maxsize=8)
def _sinc_kernel(orig: int, new: int) -> tuple[torch.Tensor, int]:
    # Polyphase windowed-sinc kernel (new, 1, K): output phase j at time j/new (in input samples
    # times orig/new); Hann window cos^2 over +-WIDTH_ZEROS zero crossings of the low-pass sinc.
    base = min(orig, new) * ROLLOFF
    width = math.ceil(WIDTH_ZEROS * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float64)[:, None, None] / new + idx
    return _windowed_sinc(t * base, base / orig).float(), width


def _resample_polyphase(flat: torch.Tensor, orig: int, new: int) -> torch.Tensor:
    """(B, S) -> (B, ceil(S * new / orig)) with one strided convolution (orig/new in lowest terms)."""
    kernel, width = _sinc_kernel(orig, new)
    length = flat.shape[-1]
    padded = torch.nn.functional.pad(flat, (width, width + orig))
    out = torch.nn.functional.conv1d(padded[:, None], kernel.to(flat.device, flat.dtype), stride=orig)  # (B, new, L)
    return out.transpose(1, 2).reshape(flat.shape[0], -1)[:, : math.ceil(new * length / orig)]


def _resample_direct(flat: torch.Tensor, sr_in: int, sr_out: int) -> torch.Tensor:
    """(B, S) -> (B, ceil(S * sr_out / sr_in)): the same kernel as the polyphase path, evaluated per output
    sample n on the input samples m within WIDTH_ZEROS zero crossings of it, with
    t = (m / sr_in - n / sr_out) * min(sr_in, sr_out) * ROLLOFF. Memory is bounded by the chunk size,
    whatever the rates."""
    base_hz = min(sr_in, sr_out) * ROLLOFF
    half_taps = math.ceil(WIDTH_ZEROS * sr_in / base_hz)  # input samples on each side of an output sample
    length = flat.shape[-1]
    n_out = math.ceil(length * sr_out / sr_in)
    offsets = torch.arange(-half_taps, half_taps + 2, device=flat.device)  # (K,)
    chunk = max(1, _DIRECT_CHUNK_ELEMENTS // (offsets.numel() * max(flat.shape[0], 1)))
    out = []
    for n0 in range(0, n_out, chunk):
        n = torch.arange(n0, min(n0 + chunk, n_out), device=flat.device, dtype=torch.int64)  # (N,)
        m = (n * sr_in) // sr_out  # input sample at or before each output time, exact in integers
        taps = m[:, None] + offsets[None, :]  # (N, K)
        t = (taps * sr_out - n[:, None] * sr_in).to(torch.float64) / (sr_in * sr_out) * base_hz
        weights = _windowed_sinc(t, base_hz / sr_in)  # (N, K)
        inside = (taps >= 0) & (taps < length)  # samples beyond the clip are zeros
        weights = torch.where(inside, weights, torch.zeros_like(weights)).to(flat.dtype)
        gathered = flat[:, taps.clamp(0, max(length - 1, 0))]  # (B, N, K)
        out.append((gathered * weights).sum(-1))
    return torch.cat(out, dim=1) if out else flat[:, :0]


def resample(x: torch.Tensor, sr_in: int, sr_out: int) -> torch.Tensor:
    """Band-limited resampling of (..., S) from ``sr_in`` to ``sr_out`` Hz; ceil(S * sr_out / sr_in) samples.

    Windowed sinc (Hann, 6 zero crossings, cut-off 0.99 x the lower Nyquist frequency, as torchaudio's
    default). Memory and time grow with the number of samples only, whatever the ratio of the rates.
    """
    sr_in, sr_out = int(sr_in), int(sr_out)
    if sr_in <= 0 or sr_out <= 0:
        raise DatasetError(f"sample rates must be > 0 Hz; got {sr_in} -> {sr_out}")
    if sr_in == sr_out:
        return x
    g = math.gcd(sr_in, sr_out)
    orig, new = sr_in // g, sr_out // g
    shape = x.shape
    flat = x.reshape(-1, shape[-1])  # (B, S)
    width = math.ceil(WIDTH_ZEROS * orig / (min(orig, new) * ROLLOFF))
    if new * (2 * width + orig) <= MAX_POLYPHASE_TAPS:
        out = _resample_polyphase(flat, orig, new)
    else:
        out = _resample_direct(flat, sr_in, sr_out)
    return out.reshape(*shape[:-1], out.shape[-1])


def hz_to_mel_htk(f):
    return 2595.0 * np.log10(1.0 + np.asarray(f, dtype=np.float64) / 700.0)


def mel_to_hz_htk(m):
    return 700.0 * (10.0 ** (np.asarray(m, dtype=np.float64) / 2595.0) - 1.0)


@lru_cache(maxsize=16)
def _mel_filterbank_np(sample_rate: int, n_fft: int, n_mels: int, f_min: float, f_max: float) -> np.ndarray:
    freqs = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)  # (F,) frequency of each FFT bin
    edges = mel_to_hz_htk(np.linspace(hz_to_mel_htk(f_min), hz_to_mel_htk(f_max), n_mels + 2))  # (M+2,)
    lower = (freqs[:, None] - edges[None, :-2]) / (edges[1:-1] - edges[:-2])  # rising edge (F, M)
    upper = (edges[None, 2:] - freqs[:, None]) / (edges[2:] - edges[1:-1])  # falling edge (F, M)
    return np.maximum(0.0, np.minimum(lower, upper))  # (F, M), peak 1, no area normalisation


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS,
                   f_min: float = F_MIN_HZ, f_max: float = F_MAX_HZ) -> torch.Tensor:
    """HTK triangular mel filters (n_fft // 2 + 1, n_mels), float32, without normalisation."""
    return torch.from_numpy(_mel_filterbank_np(int(sample_rate), int(n_fft), int(n_mels), float(f_min),
                                               float(f_max)).astype(np.float32))


def power_spectrogram(x: torch.Tensor, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """(B, S) -> (B, frames, n_fft // 2 + 1) |STFT|^2, periodic Hann window, centred, reflect padding."""
    window = torch.hann_window(n_fft, periodic=True, dtype=x.dtype, device=x.device)
    spec = torch.stft(x, n_fft=n_fft, hop_length=hop, win_length=n_fft, window=window, center=True,
                      pad_mode="reflect", normalized=False, onesided=True, return_complex=True)  # (B, F, frames)
    return (spec.abs() ** 2).transpose(1, 2)


def log_mel(x: torch.Tensor, sample_rate: int = SAMPLE_RATE, f_max: float = F_MAX_HZ, n_mels: int = N_MELS,
            f_min: float = F_MIN_HZ, n_fft: int = N_FFT, hop: int = HOP) -> torch.Tensor:
    """(B, S) waveforms -> (B, frames, n_mels) mel power in dB (floor 1e-10, no top-dB clipping)."""
    fb = mel_filterbank(sample_rate, n_fft, n_mels, f_min, f_max).to(x.device, x.dtype)
    mel = power_spectrogram(x, n_fft, hop) @ fb  # (B, frames, n_mels)
    return 10.0 * torch.log10(torch.clamp(mel, min=DB_FLOOR))


def front_end(waves: list[np.ndarray], sample_rate: int, f_max_hz: float = F_MAX_HZ,
              clip_seconds: float = CLIP_SECONDS, batch: int = 256, n_mels: int = N_MELS) -> np.ndarray:
    """The reference front end on a list of clips at ``sample_rate``: (N, 101, n_mels) float32 dB."""
    n_in = int(round(clip_seconds * sample_rate))
    out = []
    for s in range(0, len(waves), batch):
        x = torch.stack([pad_or_cut(torch.from_numpy(np.asarray(w, dtype=np.float32)), n_in)
                         for w in waves[s:s + batch]])  # (B, n_in)
        x = resample(x, sample_rate, SAMPLE_RATE)  # (B, 8000 * clip_seconds)
        out.append(log_mel(x, SAMPLE_RATE, f_max_hz, n_mels).numpy())
    if not out:
        return np.zeros((0, int(clip_seconds * SAMPLE_RATE) // HOP + 1, n_mels), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def front_end_params(f_max_hz: float, clip_seconds: float = CLIP_SECONDS, n_mels: int = N_MELS) -> dict:
    """Every parameter of the front end, for cache keys; DatasetError if ``f_max_hz`` is not above
    F_MIN_HZ or ``n_mels`` is below 1."""
    if not (math.isfinite(float(f_max_hz)) and f_max_hz > F_MIN_HZ):
        raise DatasetError(f"f_max_hz (top of the mel bands) must be above {F_MIN_HZ:g} Hz; got {f_max_hz}")
    if int(n_mels) < 1:
        raise DatasetError(f"n_mels (mel bands) must be >= 1; got {n_mels}")
    return {"front_end": "logmel-v1", "sr": SAMPLE_RATE, "n_fft": N_FFT, "hop": HOP, "n_mels": int(n_mels),
            "f_min": F_MIN_HZ, "f_max": float(f_max_hz), "clip_s": float(clip_seconds), "db_floor": DB_FLOOR,
            "resampler": "sinc-hann-6-0.99",
            "audio_check": 1}  # entries from before non-finite audio was refused are never used


# Peak below which a recording is silence: half a step of 16-bit audio (-96 dBFS).
SILENCE_PEAK = 2.0 ** -16
# A clip shorter than this carries no word: one step of the default binning (10 ms), one period of
# 100 Hz (below the lowest voice pitch and the cochlea's lowest channel, 110 Hz).
MIN_CLIP_SECONDS = 0.01


def _warn_files(files: list, what: str) -> None:
    if files:
        more = f" and {len(files) - 1} more" if len(files) > 1 else ""
        print(f"warning: {files[0]}{more} {what}", file=sys.stderr, flush=True)


def wav_features(base: Path, rel_paths: list[str], f_max_hz: float, chunk: int = 512,
                 desc: str = "log-mel features", progress: bool = True, n_mels: int = N_MELS) -> np.ndarray:
    """Front-end features of many audio files, read in chunks to bound memory: (N, 101, n_mels) float32.
    ``progress``: files done and time left on stderr (:class:`.progress.Progress`). Recordings that
    are silent in their first second (peak below -96 dBFS) or shorter than MIN_CLIP_SECONDS are kept
    (their features are the -100 dB floor, or nearly) but named in one warning line each."""
    out = []
    silent, short = [], []
    with Progress(len(rel_paths), desc, "files", enabled=progress) as bar:
        for s in range(0, len(rel_paths), chunk):
            clips = [read_wav(base / rel, CLIP_SECONDS) for rel in rel_paths[s:s + chunk]]  # cut to 1 s anyway
            for rel, (w, sr) in zip(rel_paths[s:s + chunk], clips):
                if float(np.max(np.abs(w))) < SILENCE_PEAK:
                    silent.append(base / rel)
                elif w.size < MIN_CLIP_SECONDS * sr:
                    short.append(base / rel)
            feats = [None] * len(clips)
            for sr in sorted({r for _, r in clips}):  # normally a single rate
                idx = [i for i, (_, r) in enumerate(clips) if r == sr]
                for i, f in zip(idx, front_end([clips[i][0] for i in idx], sr, f_max_hz, n_mels=n_mels)):
                    feats[i] = f
            out.append(np.stack(feats))
            bar.update(len(clips))
    _warn_files(silent, f"{'are' if len(silent) > 1 else 'is'} silent in the first {CLIP_SECONDS:g} s (peak below "
                        "-96 dBFS): features at the -100 dB floor, a sample without a word under its label; remove "
                        f"{'them' if len(silent) > 1 else 'it'} from the folder")
    _warn_files(short, f"{'are' if len(short) > 1 else 'is'} shorter than {MIN_CLIP_SECONDS * 1e3:g} ms: too short "
                       f"to hold a word; remove {'them' if len(short) > 1 else 'it'} from the folder")
    return np.concatenate(out) if out else front_end([], 8000, f_max_hz, n_mels=n_mels)


def normalize_db(x: np.ndarray, mode: str, top_db: float = TOP_DB) -> np.ndarray:
    """Per-clip normalisation of log-mel frames ``x`` (N, T, C) in dB, float32 out.

    Each clip is first clipped at ``top_db`` below its loudest value (silence and padding at the
    -100 dB floor would otherwise dominate its statistics), then

    * ``"utterance"``: minus the clip's mean, over the clip's standard deviation (over T and C);
    * ``"channel"``: each band minus its mean over time (cepstral mean normalisation: removes a
      fixed spectral tilt of voice and microphone), over the clip's standard deviation after that;
    * ``"tilt"``: the clip's spectral tilt only, then as ``"utterance"``: the least-squares slope over
      the band index of the clip's mean spectrum over its speech frames (frame mean level within
      ``TILT_SPEECH_DB`` of the loudest frame's) is subtracted from every frame as a straight line
      across the bands (dB per band), so a voice's or microphone's tilt goes while the formant peaks,
      which ``"channel"`` flattens with the vowel's own spectrum, stay;
    * ``"none"``: ``x`` unchanged.
    """
    if mode not in NORMALIZATIONS:
        raise DatasetError(f"normalize must be one of {', '.join(NORMALIZATIONS)}; got {mode!r}")
    if mode == "none":
        return x
    x = np.asarray(x, dtype=np.float64)
    peak = x.max(axis=(1, 2), keepdims=True)
    x = np.maximum(x, peak - top_db)
    if mode == "tilt":
        frame_db = x.mean(axis=2)  # (N, T)
        speech = (frame_db >= frame_db.max(axis=1, keepdims=True) - TILT_SPEECH_DB).astype(np.float64)
        spectrum = (x * speech[:, :, None]).sum(axis=1) / speech.sum(axis=1, keepdims=True)  # (N, C) dB
        band = np.arange(x.shape[2]) - (x.shape[2] - 1) / 2.0  # centred band index
        slope = (spectrum * band).sum(axis=1) / max(float((band ** 2).sum()), 1.0)  # (N,) dB per band
        x = x - slope[:, None, None] * band[None, None, :]
    mean = x.mean(axis=1, keepdims=True) if mode == "channel" else x.mean(axis=(1, 2), keepdims=True)
    x = x - mean
    std = x.std(axis=(1, 2), keepdims=True)
    return (x / np.maximum(std, 1e-6)).astype(np.float32)
