"""Progress of the long data steps: a bar on a terminal, periodic lines elsewhere, the parent counting
the work of its encoding workers; and the data sub-commands' flags and bad values."""

from __future__ import annotations

import io
import urllib.error

import numpy as np
import pytest
import soundfile

from snn_delays.cli import main
from snn_delays.data import DatasetError, open_dataset
from snn_delays.data import download as dl
from snn_delays.data.audio import wav_features
from neuromorphic_export._io import Progress, format_duration


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_lines_off_a_terminal_say_what_how_far_and_time_left(monkeypatch):
    monkeypatch.setenv("SNN_DELAYS_PROGRESS_INTERVAL", "0")
    out = io.StringIO()
    with Progress(4, "encoding", "files", stream=out) as bar:
        for _ in range(4):
            bar.update()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("encoding: 1/4 files (25%)") and "elapsed" in lines[0] and "left" in lines[0]
    assert len(lines) == 4 and lines[-1].startswith("encoding: 4/4 files (100%)") and lines[-1].endswith("done")


def test_short_steps_stay_quiet_and_terminals_get_a_bar(monkeypatch):
    monkeypatch.delenv("SNN_DELAYS_PROGRESS_INTERVAL", raising=False)
    out = io.StringIO()
    with Progress(3, "quick", stream=out) as bar:
        bar.update(3)
    assert out.getvalue() == ""  # shorter than the 30 s interval: nothing in the log
    term = Terminal()
    with Progress(3, "cache", stream=term) as bar:
        bar.update(3)
    assert "cache" in term.getvalue() and "3/3" in term.getvalue()
    with Progress(3, "off", stream=term, enabled=False) as bar:
        bar.update(3)
    assert "off" not in term.getvalue()
    assert format_duration(3725) == "1:02:05" and format_duration(65) == "1:05"


def test_feature_building_and_encode_audio_report_progress(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SNN_DELAYS_PROGRESS_INTERVAL", "0")
    src = tmp_path / "rec"
    src.mkdir()
    for k, name in enumerate(["1_amy_0", "2_bob_3", "1_bob_7"] + [f"3_cy_{i}" for i in range(6)]):
        t = np.arange(800) / 8000
        soundfile.write(src / f"{name}.wav", (0.3 * np.sin(2 * np.pi * (300 + 200 * k) * t)).astype(np.float32), 8000)
    x = wav_features(src, ["1_amy_0.wav", "2_bob_3.wav", "1_bob_7.wav"], 4000.0, chunk=1, desc="mel of rec")
    assert x.shape == (3, 101, 140)
    err = capsys.readouterr().err
    assert "mel of rec: 1/3 files" in err and "mel of rec: 3/3 files" in err
    assert main(["encode-audio", str(src), str(tmp_path / "o.h5")]) == 0  # (2 workers: test_data_cochlea)
    err = capsys.readouterr().err
    assert "encoding with the cochlea: 8/9 files" in err or "encoding with the cochlea: 1/9 files" in err
    assert "9/9 files (100%)" in err


@pytest.mark.parametrize("argv, message", [
    (["--workers", "-1"], "workers must be an integer >= 0"),  # 0 or 1: in-process
    (["--seed", "-1"], "seed must be >= 0"),
])
def test_encode_audio_bad_values(tmp_path, capsys, argv, message):
    (tmp_path / "rec").mkdir()
    rc = main(["encode-audio", str(tmp_path / "rec"), str(tmp_path / "o.h5"), *argv])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err


def test_encode_audio_output_that_cannot_be_written(tmp_path, capsys):
    (tmp_path / "rec").mkdir()
    soundfile.write(tmp_path / "rec" / "1_a_0.wav", np.zeros(400, np.float32), 8000)
    (tmp_path / "a_file").write_text("x")
    for out, message in ((tmp_path, "is a folder"), (tmp_path / "a_file" / "o.h5", "cannot write")):
        rc = main(["encode-audio", str(tmp_path / "rec"), str(out)])
        err = capsys.readouterr().err
        assert rc == 2 and message in err and str(out) in err and "Traceback" not in err


@pytest.mark.parametrize("options, message", [
    (dict(dt_ms=0), "dt_ms must be > 0"), (dict(dt_ms=float("nan")), "dt_ms must be > 0"),
    (dict(pool=0), "pool must be"), (dict(frame_convention="middle"), "frame_convention"),
])
def test_binning_options_are_checked_before_reading(tmp_path, options, message):
    with pytest.raises(DatasetError, match=message):  # before the files are looked for (there are none)
        open_dataset("shd", str(tmp_path), "train", cache_dir="off", **options)


def test_mel_top_frequency_is_checked(tmp_path):
    soundfile.write(tmp_path / "0_a_7.wav", np.zeros(400, np.float32), 8000)
    with pytest.raises(DatasetError, match="f_max_hz"):
        open_dataset("fsdd", str(tmp_path), "train", f_max_hz=0.0, cache_dir="off")


def test_download_takes_data_dir_like_the_other_commands(tmp_path, monkeypatch, capsys):
    def offline(*a, **k):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(dl.urllib.request, "urlopen", offline)
    for flag in ("--data-dir", "--root"):
        rc = main(["data", "download", "shd", flag, str(tmp_path / "d")])
        err = capsys.readouterr().err
        assert rc == 2 and "Traceback" not in err
        assert f"shd_train.h5.zip is needed in {tmp_path / 'd'}" in err and "--data-dir" in err


def test_synthetic_splits_that_cannot_exist():
    with pytest.raises(DatasetError, match="valid 0"):
        open_dataset("synthetic", None, "valid", synthetic_valid=0)
    with pytest.raises(DatasetError, match="n_steps must be >= "):
        open_dataset("synthetic", None, "train", n_steps=10, synthetic_train=10)
    with pytest.raises(DatasetError, match="synthetic_p_fire"):
        open_dataset("synthetic", None, "train", synthetic_p_fire=1.5, synthetic_train=10)
