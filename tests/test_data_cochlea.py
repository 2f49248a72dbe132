"""The vectorised cochlea and encode-audio: channel order, tuning, refractoriness, SHD layout output."""

from __future__ import annotations

import time

import numpy as np
import pytest
import soundfile

from snn_delays.cli import main
from snn_delays.data import DatasetError, open_dataset
from snn_delays.data.cochlea import bm_response, channel_cf_hz, encode, parse_names
from snn_delays.data.spikefile import read_spike_file
from _procs import kill_parent_and_check_workers_end


def tone(freq, seconds=0.3, sr=16000):
    t = np.arange(int(seconds * sr)) / sr
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def test_channels_ordered_like_shd():
    cf = channel_cf_hz()
    assert cf.shape == (700,) and np.all(np.diff(cf) < 0)  # unit 0 = base = highest frequency
    assert 22000 < cf[0] < 23000 and 105 < cf[-1] < 115
    r = bm_response(np.array([1000.0]))[:, 0]
    best = int(np.argmax(r))
    assert abs(cf[best] * 0.988 - 1000) < 20  # a channel responds most at 0.988 x its resonance


@pytest.mark.parametrize("freq", [300.0, 1500.0])
def test_tone_excites_its_place(freq):
    (t, u), = encode([tone(freq)], 16000, seed=0)
    counts = np.bincount(u, minlength=700)
    cf = channel_cf_hz()
    peak_cf = cf[int(np.argmax(np.convolve(counts, np.ones(15) / 15, mode="same")))]
    assert 0.6 * freq < peak_cf < 1.6 * freq
    assert np.all(np.diff(t) >= 0) and t.max() < 0.3 and u.min() >= 0 and u.max() < 700


def test_refractory_and_deterministic():
    clip = tone(800.0, 0.2)
    (t1, u1), = encode([clip], 16000, seed=5)
    (t2, u2), = encode([clip], 16000, seed=5)
    np.testing.assert_array_equal(t1, t2)
    np.testing.assert_array_equal(u1, u2)
    for ch in np.unique(u1):
        isi = np.diff(t1[u1 == ch])
        assert isi.size == 0 or isi.min() >= 1e-3 - 1e-9  # the bushy cell's 1 ms refractory period
    silent, = encode([np.zeros(3200, np.float32)], 16000)
    # silence leaves only the hair cells' spontaneous release: a few spikes per channel and second
    assert silent[0].size / 700 / 0.2 < 20
    assert np.bincount(u1, minlength=700).max() > 3 * np.bincount(silent[1], minlength=700).max()


def test_speed_under_a_few_seconds_per_second_of_audio():
    clip = tone(500.0, 1.0, 8000)
    t0 = time.perf_counter()
    encode([clip], 8000)
    assert time.perf_counter() - t0 < 5.0  # measured ~0.55 s on the 2-core test machine


def test_parse_names():
    labels, speakers, keys, names = parse_names(["3_bob_1", "0_amy_12", "sub/9_amy_0"])
    assert labels.tolist() == [3, 0, 9] and speakers.tolist() == [1, 0, 0] and names == ["amy", "bob"]
    labels, _, keys, _ = parse_names(["yes/a1", "no/b2"], r"(?P<label>[a-z]+)/(?P<speaker>[a-z])\d")
    assert keys == ["no", "yes"] and labels.tolist() == [1, 0]
    with pytest.raises(DatasetError, match="does not match"):
        parse_names(["oops"])
    with pytest.raises(DatasetError, match="label"):
        parse_names(["x"], r"(?P<speaker>x)")


def test_encode_audio_cli_writes_shd_layout(tmp_path, capsys):
    src = tmp_path / "rec"
    src.mkdir()
    for name, f in [("1_amy_0", 400.0), ("2_bob_3", 900.0), ("1_bob_7", 2000.0)]:
        soundfile.write(src / f"{name}.wav", tone(f, 0.15, 8000), 8000, subtype="PCM_16")
    out = tmp_path / "spikes.h5"
    assert main(["encode-audio", str(src), str(out)]) == 0
    assert "per minute of audio" in capsys.readouterr().out
    rec = read_spike_file(out)
    assert rec.labels.tolist() == [1, 1, 2] and rec.speakers.tolist() == [0, 1, 1]
    assert all(t.size > 0 for t in rec.times)
    import h5py

    with h5py.File(out) as f:  # exactly the published layout: vlen float16 seconds, vlen uint16 units
        assert h5py.check_vlen_dtype(f["spikes/times"].dtype) == np.float16
        assert h5py.check_vlen_dtype(f["spikes/units"].dtype) == np.uint16
    # the same file is a valid SHD source for the loader
    root = tmp_path / "as_shd"
    root.mkdir()
    for part in ("train", "test"):
        (root / f"shd_{part}.h5").write_bytes(out.read_bytes())
    ds = open_dataset("shd", str(root), "test", cache_dir=str(tmp_path / "c"))
    assert ds.x.shape[0] == 3 and ds.x.shape[2] == 140 and int(ds.x.sum()) > 0


def test_encode_audio_bad_input(tmp_path, capsys):
    (tmp_path / "e").mkdir()
    assert main(["encode-audio", str(tmp_path / "e"), str(tmp_path / "o.h5")]) == 2
    assert "no .wav" in capsys.readouterr().err
    (tmp_path / "e" / "1_a_0.wav").write_bytes(b"garbage")
    assert main(["encode-audio", str(tmp_path / "e"), str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert "1_a_0.wav" in err and "Traceback" not in err


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_workers_die_when_the_encoding_process_is_killed(tmp_path):
    """SIGKILL of a 2-worker encoding: its busy workers end within a few seconds, not after their chunks."""
    import os
    import subprocess
    import sys

    for k in range(10):  # 1 s clips, one per chunk: each worker has several seconds of work queued
        soundfile.write(tmp_path / f"{k}_amy_{k}.wav", tone(300.0 + 100 * k, 1.0, 8000), 8000, subtype="PCM_16")
    script = ("import glob, sys\nfrom snn_delays.data.cochlea import encode_files\n"
              "if __name__ == '__main__':\n"
              f"    encode_files(sorted(glob.glob({str(tmp_path)!r} + '/*.wav')), workers=2, batch=1, progress=True)\n")
    env = {**os.environ, "SNN_DELAYS_PROGRESS_INTERVAL": "0"}  # a line per finished file
    parent = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, env=env)
    first = parent.stderr.readline()  # one file done: both workers are up and encoding
    if "1/10 files" not in first:  # counted by the parent
        parent.kill()
        raise AssertionError(first)
    kill_parent_and_check_workers_end(parent, 2, within_s=2.0)  # each worker has ~4 clips of 1 s left


def test_clips_too_long_for_the_cochlea_are_refused_before_encoding(tmp_path, capsys, monkeypatch):
    from snn_delays.data import cochlea

    src = tmp_path / "rec"
    src.mkdir()
    soundfile.write(src / "1_amy_0.wav", tone(400.0, 0.1, 8000), 8000, subtype="PCM_16")
    soundfile.write(src / "2_amy_0.wav", tone(400.0, 0.5, 8000), 8000, subtype="PCM_16")
    monkeypatch.setattr(cochlea, "MAX_CLIP_SAMPLES", 2000)  # (2^18 samples in earnest: 33 s at 8 kHz)
    start = time.perf_counter()
    assert main(["encode-audio", str(src), str(tmp_path / "o.h5")]) == 2
    err = capsys.readouterr().err
    assert "2_amy_0.wav is 0.5 s long" in err and "Traceback" not in err
    assert time.perf_counter() - start < 2  # refused from the headers, nothing encoded


def test_a_batch_too_long_together_is_encoded_clip_by_clip(monkeypatch):
    from snn_delays.data import cochlea

    clips = [tone(400.0, 0.05, 8000), tone(900.0, 0.05, 8000)]
    monkeypatch.setattr(cochlea, "read_wav", lambda p: (clips[int(p)], 8000))
    together = cochlea._encode_chunk((["0", "1"], 3))
    monkeypatch.setattr(cochlea, "MAX_BATCH_SAMPLES", 500)
    apart = cochlea._encode_chunk((["0", "1"], 3))
    assert [t.size > 0 for t, _ in apart] == [True, True]
    np.testing.assert_array_equal(apart[0][1], cochlea.encode([clips[0]], 8000, seed=3)[0][1])
    assert len(together) == len(apart) == 2


# ---- recordings the cochlea cannot encode, and the class count it reports

def _folder(tmp_path, clips: dict) -> "Path":
    src = tmp_path / "rec"
    src.mkdir()
    for name, wave in clips.items():
        soundfile.write(src / f"{name}.wav", wave, 8000, subtype="PCM_16")
    return src


def _refused(capsys, argv, *fragments) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err  # one clear line
    for frag in fragments:
        assert frag in err, (frag, err)
    return err


def test_a_silent_recording_is_refused_naming_it(tmp_path, capsys):
    src = _folder(tmp_path, {"1_amy_0": tone(400.0, 0.2, 8000), "2_amy_1": np.zeros(1600, np.float32)})
    out = tmp_path / "o.h5"
    start = time.perf_counter()
    _refused(capsys, ["encode-audio", str(src), str(out)], "2_amy_1.wav is silent", "every sample is 0")
    assert not out.exists() and time.perf_counter() - start < 5  # refused before the encoding
    from snn_delays.data.cochlea import encode_files

    with pytest.raises(DatasetError, match="2_amy_1.wav is silent"):  # the encoding itself checks too
        encode_files([str(src / "2_amy_1.wav")])


def test_a_recording_too_short_to_encode_is_refused_with_its_length(tmp_path, capsys):
    src = _folder(tmp_path, {"1_amy_0": tone(400.0, 0.2, 8000), "2_amy_1": np.array([0.3], np.float32)})
    _refused(capsys, ["encode-audio", str(src), str(tmp_path / "o.h5")], "2_amy_1.wav is too short", "1 sample(s)",
             "at least 10 ms (80 samples")
    assert not (tmp_path / "o.h5").exists()


def test_class_count_is_the_labels_present(tmp_path, capsys):
    """One file labelled 2 is 1 class (not 3); labels that are not 0..n-1 are named."""
    src = _folder(tmp_path, {"2_amy_0": tone(400.0, 0.05, 8000)})
    assert main(["encode-audio", str(src), str(tmp_path / "a.h5")]) == 0
    out = capsys.readouterr().out
    assert "1 class (label 2, not 0..0: a reader of the file counts 3 classes, 2 of them without samples)" in out
    assert "3 classes" not in out.split("(")[0]
    src2 = tmp_path / "b"
    src2.mkdir()
    for name in ("0_amy_0", "1_amy_0"):
        soundfile.write(src2 / f"{name}.wav", tone(400.0, 0.05, 8000), 8000, subtype="PCM_16")
    assert main(["encode-audio", str(src2), str(tmp_path / "b.h5")]) == 0
    out = capsys.readouterr().out
    assert ", 2 classes, speakers amy;" in out


def test_labels_the_shd_layout_cannot_hold_are_refused(tmp_path, capsys):
    src = _folder(tmp_path, {"70000_amy_0": tone(400.0, 0.05, 8000)})  # uint16 labels; one key per number
    _refused(capsys, ["encode-audio", str(src), str(tmp_path / "o.h5")], "70000_amy_0", "label 70000", "0..65535")
    src2 = tmp_path / "e"
    src2.mkdir()
    soundfile.write(src2 / "x_amy.wav", tone(400.0, 0.05, 8000), 8000, subtype="PCM_16")
    _refused(capsys, ["encode-audio", str(src2), str(tmp_path / "o.h5"), "--label-pattern",
                      r"(?P<label>\d*)x_(?P<speaker>\w+)"], "x_amy", "empty label")


def test_worker_counts(tmp_path, capsys):
    """--workers 0 encodes in this process (as 1 does); a negative count is refused before any work."""
    src = _folder(tmp_path, {"1_amy_0": tone(400.0, 0.05, 8000)})
    assert main(["encode-audio", str(src), str(tmp_path / "o.h5"), "--workers", "0"]) == 0
    capsys.readouterr()
    _refused(capsys, ["encode-audio", str(src), str(tmp_path / "p.h5"), "--workers", "-1"], "workers must be")


def test_data_info_refuses_options_its_dataset_does_not_take(tmp_path, capsys):
    """`--input`/`--workers` are FSDD's: given for another dataset they were silently ignored."""
    _refused(capsys, ["data", "info", "synthetic", "--input", "spikes"], "--input does not apply to synthetic",
             "fsdd")
    _refused(capsys, ["data", "info", "shd", "--workers", "2"], "--workers does not apply to shd")


def test_encode_workers_reach_every_command_that_encodes():
    """data.encode_workers (train, cv, ablate via --set) reaches the FSDD opener; it is checked, and a
    run may resume with another value (it changes no result)."""
    from snn_delays.config import RUNTIME_ONLY_KEYS, ConfigError, apply_overrides, load_config
    from snn_delays.data.registry import opener_options

    cfg = apply_overrides(load_config("fsdd"), {"data.encode_workers": 0})
    assert cfg.data.dataset_options()["encode_workers"] == 0
    assert "encode_workers" in opener_options("fsdd") and "data.encode_workers" in RUNTIME_ONLY_KEYS
    with pytest.raises(ConfigError, match="data.encode_workers must be >= 0"):
        apply_overrides(load_config("fsdd"), {"data.encode_workers": -1}).validate()
