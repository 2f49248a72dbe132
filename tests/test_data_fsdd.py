"""FSDD from ../shared/data/fsdd (real recordings, never copied into the repository)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from snn_delays.data import DatasetError, open_dataset

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
pytestmark = pytest.mark.skipif(not (FSDD / "recordings").is_dir(),
                                reason=f"FSDD recordings not found at {FSDD} (provided beside the repository)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fsdd_cache"))


def test_take_split_mel(cache):
    tr = open_dataset("fsdd", None, "train", input="mel", cache_dir=cache)  # default root: ../shared/data/fsdd
    va = open_dataset("fsdd", str(FSDD), "valid", input="mel", cache_dir=cache)
    te = open_dataset("fsdd", str(FSDD), "test", input="mel", cache_dir=cache)
    assert (len(tr), len(va), len(te)) == (2030, 220, 250)
    assert tuple(te.x.shape) == (250, 101, 140) and te.n_classes == 10
    assert all(int(f.split("_")[2][:-4]) < 5 for f in te.files)
    assert set(tr.files).isdisjoint(va.files) and set(tr.files).isdisjoint(te.files)
    assert np.bincount(va.y.numpy()).tolist() == [22] * 10  # stratified
    assert "take" in te.protocol_note
    assert len(open_dataset("fsdd", str(FSDD), "all", input="mel", cache_dir=cache)) == 2500


def test_speaker_split(cache):
    te = open_dataset("fsdd", str(FSDD), "test", input="mel", test_speakers="lucas", cache_dir=cache, n_steps=100)
    tr = open_dataset("fsdd", str(FSDD), "train", input="mel", test_speakers="lucas", cache_dir=cache, n_steps=100)
    assert len(te) == 500 and set(te.speakers) == {"lucas"} and "lucas" not in set(tr.speakers)
    assert te.x.shape[1] == 100
    with pytest.raises(DatasetError, match="nobody"):
        open_dataset("fsdd", str(FSDD), "test", test_speakers="nobody", cache_dir=cache)


def test_spikes_input_on_a_few_recordings(tmp_path):
    # a few recordings in a temporary folder (not the repository) keep this test short
    sub = tmp_path / "fsdd" / "recordings"
    sub.mkdir(parents=True)
    for name in ["0_george_0.wav", "0_george_7.wav", "6_nicolas_3.wav", "6_nicolas_12.wav"]:
        shutil.copy(FSDD / "recordings" / name, sub / name)
    c = str(tmp_path / "c")
    te = open_dataset("fsdd", str(tmp_path / "fsdd"), "test", input="spikes", cache_dir=c)
    al = open_dataset("fsdd", str(tmp_path / "fsdd"), "all", input="spikes", cache_dir=c, n_steps=100)
    assert len(te) == 2 and te.x.dtype.is_floating_point is False and te.x.shape[2] == 140
    assert tuple(al.x.shape) == (4, 100, 140) and int(al.x.sum()) > 1000
    assert len(list(Path(c).glob("fsdd-spikes-*.h5"))) == 1  # encoded once, in SHD layout
