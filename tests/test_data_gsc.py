"""GSC folder walk and the reference log-mel front end against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import torch

from snn_delays.cli import main
from snn_delays.data import DatasetError, open_dataset
from snn_delays.data.audio import front_end, mel_filterbank, resample


def numpy_mel_matrix(sr, n_fft, n_mels, f_min, f_max):
    """HTK mel filters built band by band with np.interp over (lower, centre, upper) corner points."""
    mel = lambda f: 2595.0 * math.log10(1.0 + f / 700.0)  # noqa: E731
    inv = lambda m: 700.0 * (10.0 ** (m / 2595.0) - 1.0)  # noqa: E731
    pts = [inv(mel(f_min) + k * (mel(f_max) - mel(f_min)) / (n_mels + 1)) for k in range(n_mels + 2)]
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    return np.stack([np.interp(freqs, pts[b:b + 3], [0.0, 1.0, 0.0], left=0.0, right=0.0) for b in range(n_mels)], 1)


def numpy_resample_half(x):
    """16 kHz -> 8 kHz by the windowed-sinc formula, one output sample at a time (float64)."""
    zeros, roll = 6, 0.99  # Hann-windowed sinc over 6 zero crossings, cut-off at 0.99 x the new Nyquist
    width = math.ceil(zeros * 2 / roll)
    n_out = math.ceil(len(x) / 2)
    padded = np.concatenate([np.zeros(width), x, np.zeros(width + 2)])
    out = np.zeros(n_out)
    k = np.arange(-width, width + 2)
    for n in range(n_out):
        t = np.clip((k / 2.0) * roll, -zeros, zeros)  # time of each tap in output-rate periods * rolloff
        h = np.sinc(t) * np.cos(t * np.pi / zeros / 2) ** 2 * (roll / 2)
        out[n] = np.dot(h, padded[2 * n + width + k])
    return out


def numpy_front_end(wave16k, f_max, n_mels=140):
    x = np.zeros(16000)
    x[: min(16000, len(wave16k))] = wave16k[:16000]
    x = numpy_resample_half(x)  # (8000,)
    n_fft, hop = 256, 80
    padded = np.pad(x, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = np.stack([padded[i * hop:i * hop + n_fft] * window for i in range(1 + len(x) // hop)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (101, 129)
    mel = power @ numpy_mel_matrix(8000, n_fft, n_mels, 50.0, f_max)
    return 10 * np.log10(np.maximum(mel, 1e-10))


def test_mel_matrix_against_independent_constructions():
    for f_max in (14000.0, 4000.0):
        ours = mel_filterbank(8000, 256, 140, 50.0, f_max).numpy()
        np.testing.assert_allclose(ours, numpy_mel_matrix(8000, 256, 140, 50.0, f_max), atol=1e-6)
    # 14 kHz is above Nyquist: only 87 of the 140 bands reach an FFT bin (the paper's setting)
    assert int((mel_filterbank(f_max=14000.0).sum(0) > 0).sum()) == 87
    assert int((mel_filterbank(f_max=4000.0).sum(0) > 0).sum()) > 120
    try:
        import librosa
    except ImportError:
        return
    ref = librosa.filters.mel(sr=8000, n_fft=256, n_mels=140, fmin=50, fmax=14000, htk=True, norm=None).T
    np.testing.assert_allclose(mel_filterbank().numpy(), ref, atol=1e-5)


def test_resampler_against_direct_formula():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(1600)
    ours = resample(torch.tensor(x, dtype=torch.float64)[None], 16000, 8000)[0].numpy()
    np.testing.assert_allclose(ours, numpy_resample_half(x), atol=1e-5)
    tone = np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)  # a tone below the cut-off survives intact
    out = resample(torch.tensor(tone, dtype=torch.float32)[None], 16000, 8000)[0].numpy()
    np.testing.assert_allclose(out[100:-100], np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)[100:-100], atol=2e-3)


@pytest.mark.parametrize("f_max", [14000.0, 4000.0])
def test_front_end_against_numpy(f_max):
    rng = np.random.default_rng(1)
    t = np.arange(12000) / 16000  # 0.75 s: padded to 1 s
    wave = 0.3 * np.sin(2 * np.pi * 700 * t) + 0.05 * rng.standard_normal(t.size)
    ours = front_end([wave.astype(np.float32)], 16000, f_max)[0]
    ref = numpy_front_end(wave, f_max)
    assert ours.shape == (101, 140)
    live = ref > -60  # compare where there is power (float32 vs float64 below that)
    np.testing.assert_allclose(ours[live], ref[live], atol=0.05)
    assert np.all(ours[ref <= -99.99] <= -60)


def test_front_end_with_fewer_mel_bands():
    """``n_mels`` (data.n_mels) against the numpy reference, and a tone lands in the band around it."""
    t = np.arange(16000) / 16000
    wave = 0.3 * np.sin(2 * np.pi * 1000 * t)
    ours = front_end([wave.astype(np.float32)], 16000, 4000.0, n_mels=40)[0]
    ref = numpy_front_end(wave, 4000.0, n_mels=40)
    assert ours.shape == (101, 40)
    live = ref > -60
    np.testing.assert_allclose(ours[live], ref[live], atol=0.05)
    edges = 700 * (10 ** (np.linspace(2595 * np.log10(1 + 50 / 700), 2595 * np.log10(1 + 4000 / 700), 42) / 2595) - 1)
    loudest = int(ours[50].argmax())
    assert edges[loudest] <= 1000 <= edges[loudest + 2]  # the band's triangle spans the tone


WORDS = ["cat", "bed", "yes"]


@pytest.fixture()
def gsc_root(tmp_path):
    root = tmp_path / "speech_commands_v0.02"
    rng = np.random.default_rng(2)
    rel = []
    for w in WORDS:
        (root / w).mkdir(parents=True)
        for spk in range(4):
            n = int(rng.integers(4000, 20000))  # shorter and longer than 1 s
            soundfile.write(root / w / f"{spk:08x}_nohash_0.wav", (0.1 * rng.standard_normal(n)).astype(np.float32),
                            16000, subtype="PCM_16")
            rel.append(f"{w}/{spk:08x}_nohash_0.wav")
    (root / "_background_noise_").mkdir()
    soundfile.write(root / "_background_noise_" / "noise.wav", np.zeros(16000, np.float32), 16000)
    (root / "validation_list.txt").write_text("\n".join([rel[0], rel[5]]) + "\n")
    (root / "testing_list.txt").write_text("\n".join([rel[1], rel[9], rel[10]]) + "\n")
    return tmp_path, root, rel


@pytest.mark.filterwarnings("ignore:.*word folders")
def test_gsc_splits_and_features(gsc_root):
    parent, root, rel = gsc_root
    c = str(parent / "cache")
    tr = open_dataset("gsc", str(parent), "train", cache_dir=c)
    va = open_dataset("gsc", str(parent), "valid", cache_dir=c)
    te = open_dataset("gsc", str(parent), "test", cache_dir=c)
    assert (len(tr), len(va), len(te)) == (7, 2, 3)
    assert tr.keys == ["bed", "cat", "yes"]  # alphabetical
    assert va.files == sorted([rel[0], rel[5]]) and set(tr.files).isdisjoint(va.files + te.files)
    assert tuple(tr.x.shape) == (7, 101, 140) and tr.x.dtype == torch.float32
    for i, f in enumerate(tr.files):
        assert tr.y[i] == tr.keys.index(f.split("/")[0])
    wave, sr = soundfile.read(root / tr.files[0], dtype="float32")
    ref = numpy_front_end(wave.astype(np.float64), 14000.0)
    live = ref > -60
    np.testing.assert_allclose(tr.x[0].numpy()[live], ref[live], atol=0.05)
    corrected = open_dataset("gsc", str(parent), "train", cache_dir=c, f_max_hz=4000.0)
    assert not np.allclose(corrected.x.numpy(), tr.x.numpy())
    assert len(open_dataset("gsc", str(root), "all", cache_dir=c)) == 12


@pytest.mark.filterwarnings("ignore:.*word folders")
def test_gsc_errors_name_the_file(gsc_root, capsys):
    parent, root, rel = gsc_root
    bad = root / rel[2]
    bad.write_bytes(b"RIFF\x00\x00 not really a wav")
    with pytest.raises(DatasetError, match=str(bad)):
        open_dataset("gsc", str(parent), "train", cache_dir="off")
    (root / "testing_list.txt").write_text("cat/missing_nohash_0.wav\n")
    rc = main(["data", "info", "gsc", "--root", str(parent), "--cache-dir", "off"])
    err = capsys.readouterr().err
    assert rc == 2 and "testing_list.txt" in err and "missing_nohash_0.wav" in err and "Traceback" not in err
    (root / "testing_list.txt").unlink()
    (root / "validation_list.txt").unlink()
    with pytest.raises(DatasetError, match="speech_commands_v0.02.tar.gz"):
        open_dataset("gsc", str(parent), "train", cache_dir="off")
