"""Audio input that no recording holds (non-finite, far beyond full scale, 0 samples, odd rates, stereo),
the bounded resampler, and FSDD-layout folders that cannot make a split; WAVs are written in tmp_path."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import soundfile
import torch

from snn_delays.cli import main
from snn_delays.data import DatasetError, open_dataset
from snn_delays.data.audio import _resample_direct, _resample_polyphase, read_wav, resample


def tone(freq, seconds=0.2, sr=8000, amp=0.5):
    return (amp * np.sin(2 * np.pi * freq * np.arange(int(seconds * sr)) / sr)).astype(np.float32)


def fsdd_folder(tmp_path, names=("0_amy_0", "1_amy_7", "0_bob_9", "1_bob_2", "0_amy_12", "1_bob_11")):
    """A tiny folder laid out like FSDD: {digit}_{speaker}_{take}.wav, 8 kHz mono."""
    folder = tmp_path / "fsdd" / "recordings"
    folder.mkdir(parents=True)
    for k, name in enumerate(names):
        soundfile.write(folder / f"{name}.wav", tone(300.0 + 100 * k), 8000, subtype="PCM_16")
    return folder


def _cli_error(capsys, argv, *fragments):
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err
    for frag in fragments:
        assert frag in err, (frag, err)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf, 1e6])
def test_non_finite_or_absurd_samples_are_refused_naming_the_file(tmp_path, capsys, bad_value):
    folder = fsdd_folder(tmp_path)
    wave = tone(440.0)
    wave[123] = bad_value
    bad = folder / "1_bob_11.wav"
    soundfile.write(bad, wave, 8000, subtype="FLOAT")  # a float WAV stores the value as it is
    with pytest.raises(DatasetError, match="1_bob_11.wav") as e:
        read_wav(bad)
    assert "sample 123" in str(e.value)
    with pytest.raises(DatasetError, match="1_bob_11.wav"):  # the mel cache is never built from it
        open_dataset("fsdd", str(tmp_path / "fsdd"), "train", input="mel", cache_dir=str(tmp_path / "c"))
    assert not list((tmp_path / "c").glob("fsdd-mel-*/meta.json"))
    _cli_error(capsys, ["data", "info", "fsdd", "--data-dir", str(tmp_path / "fsdd"), "--cache-dir",
                        str(tmp_path / "c")], "1_bob_11.wav")
    # the cochlea reads through the same check
    _cli_error(capsys, ["encode-audio", str(folder), str(tmp_path / "o.h5")], "1_bob_11.wav")
    assert not (tmp_path / "o.h5").exists()


def test_float_audio_slightly_above_full_scale_is_kept(tmp_path):
    path = tmp_path / "1_a_0.wav"
    soundfile.write(path, tone(440.0, amp=1.5), 8000, subtype="FLOAT")
    wave, sr = read_wav(path)
    assert sr == 8000 and np.isclose(np.abs(wave).max(), 1.5, atol=1e-3)


def test_empty_stereo_and_odd_rate_files(tmp_path):
    empty = tmp_path / "0_a_0.wav"
    soundfile.write(empty, np.zeros(0, np.float32), 8000, subtype="PCM_16")
    with pytest.raises(DatasetError, match="0_a_0.wav.*0 samples"):
        read_wav(empty)
    stereo = tmp_path / "1_a_0.wav"  # two channels are mixed to one, not the first channel kept
    left, right = tone(300.0), tone(700.0)
    soundfile.write(stereo, np.stack([left, right], 1), 8000, subtype="FLOAT")
    wave, _ = read_wav(stereo)
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-6)
    slow = tmp_path / "2_a_0.wav"
    soundfile.write(slow, tone(10.0, sr=100), 100, subtype="PCM_16")
    with pytest.raises(DatasetError, match="2_a_0.wav.*100 Hz"):
        read_wav(slow)


def reference_resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited interpolation written out per output sample (float64): a Hann-windowed sinc over 6
    zero crossings of the cut-off 0.99 x min(sr_in, sr_out) / 2, on every input sample."""
    cutoff = 0.99 * min(sr_in, sr_out)
    m = np.arange(len(x))
    out = np.zeros(math.ceil(len(x) * sr_out / sr_in))
    for n in range(len(out)):
        t = (m / sr_in - n / sr_out) * cutoff
        h = np.where(np.abs(t) < 6, np.sinc(t) * np.cos(np.pi * t / 12) ** 2, 0.0) * cutoff / sr_in
        out[n] = h @ x
    return out


@pytest.mark.parametrize("sr_in", [48001, 7919])
def test_odd_rates_resample_in_bounded_time_and_memory(sr_in):
    wave = torch.tensor(tone(440.0, 1.0, sr_in))[None]  # 1 s of audio at a rate prime to 8 kHz
    start = time.process_time()
    out = resample(wave, sr_in, 8000)[0].numpy()
    assert time.process_time() - start < 1.0  # the old kernel needed 3.4-9.4 GB and tens of seconds
    assert out.shape == (8000,)
    np.testing.assert_allclose(out[100:-100], tone(440.0, 1.0, 8000)[100:-100], atol=2e-3)  # a known sine
    x = np.random.default_rng(0).standard_normal(600)
    ours = resample(torch.tensor(x)[None], sr_in, 8000)[0].numpy()
    np.testing.assert_allclose(ours, reference_resample(x, sr_in, 8000), atol=1e-6)


@pytest.mark.parametrize("sr_in, sr_out", [(16000, 8000), (44100, 8000), (22050, 8000), (8000, 16000)])
def test_the_direct_path_agrees_with_the_polyphase_one_on_ordinary_rates(sr_in, sr_out):
    x = torch.tensor(np.random.default_rng(1).standard_normal((2, 900)))
    g = math.gcd(sr_in, sr_out)
    poly = _resample_polyphase(x, sr_in // g, sr_out // g).numpy()
    np.testing.assert_allclose(_resample_direct(x, sr_in, sr_out).numpy(), poly, atol=1e-6)
    np.testing.assert_allclose(poly[0], reference_resample(x[0].numpy(), sr_in, sr_out), atol=1e-6)


def test_fsdd_folder_that_cannot_make_a_split(tmp_path, capsys):
    fsdd_folder(tmp_path, names=("0_amy_0", "1_amy_1", "0_bob_2", "1_bob_3"))  # every take < 5: all test
    root = str(tmp_path / "fsdd")
    assert len(open_dataset("fsdd", root, "test", cache_dir="off")) == 4
    with pytest.raises(DatasetError, match="train 0, valid 0, test 4"):
        open_dataset("fsdd", root, "train", cache_dir="off")
    _cli_error(capsys, ["data", "info", "fsdd", "--data-dir", root, "--cache-dir", "off"], "train 0, valid 0, test 4")
    with pytest.raises(DatasetError, match="valid_fraction"):
        open_dataset("fsdd", root, "test", valid_fraction=1.5, cache_dir="off")


def test_folder_without_wavs(tmp_path, capsys):
    (tmp_path / "fsdd").mkdir()
    (tmp_path / "fsdd" / "notes.txt").write_text("no audio here")
    _cli_error(capsys, ["data", "info", "fsdd", "--data-dir", str(tmp_path / "fsdd")], "no .wav files")


def test_silent_and_too_short_recordings_are_named_in_a_warning_for_mel(tmp_path, capsys):
    """The log-mel front end pads every clip to 1 s, so it can compute features of silence or of one
    sample; it keeps them (a mel dataset is not refused for one odd file) but names them, one line each."""
    folder = fsdd_folder(tmp_path)
    soundfile.write(folder / "0_amy_12.wav", np.zeros(4000, np.float32), 8000, subtype="PCM_16")
    soundfile.write(folder / "1_bob_11.wav", np.array([0.2, -0.2], np.float32), 8000, subtype="PCM_16")
    ds = open_dataset("fsdd", str(tmp_path / "fsdd"), "all", input="mel", cache_dir="off")
    assert len(ds) == 6
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("warning:")]
    assert len(lines) == 2, lines
    assert "0_amy_12.wav is silent" in lines[0] and "1_bob_11.wav is shorter than 10 ms" in lines[1]
