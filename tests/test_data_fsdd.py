"""FSDD from ../shared/data/fsdd (real recordings, never copied into the repository)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from snn_delays.data import DatasetError, open_dataset

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd"
needs_fsdd = pytest.mark.skipif(not (FSDD / "recordings").is_dir(),
                                reason=f"FSDD recordings not found at {FSDD} (provided beside the repository)")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fsdd_cache"))


@needs_fsdd
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


@needs_fsdd
def test_speaker_split(cache):
    te = open_dataset("fsdd", str(FSDD), "test", input="mel", test_speakers="lucas", cache_dir=cache, n_steps=100)
    tr = open_dataset("fsdd", str(FSDD), "train", input="mel", test_speakers="lucas", cache_dir=cache, n_steps=100)
    assert len(te) == 500 and set(te.speakers) == {"lucas"} and "lucas" not in set(tr.speakers)
    assert te.x.shape[1] == 100
    with pytest.raises(DatasetError, match="nobody"):
        open_dataset("fsdd", str(FSDD), "test", test_speakers="nobody", cache_dir=cache)


@needs_fsdd
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


# -- tiny synthetic FSDD folders (no real recordings needed) ----------------------------------------
def write_tiny_fsdd(folder: Path, speakers=("anna", "bob", "carl"), digits=range(3), takes=range(2),
                    seconds: float = 0.25) -> Path:
    """{digit}_{speaker}_{take}.wav at 8 kHz: a tone whose pitch depends on digit and speaker."""
    import soundfile

    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(8000 * seconds)) / 8000.0
    for si, spk in enumerate(speakers):
        for d in digits:
            for k in takes:
                f0 = 300.0 + 250.0 * d + 40.0 * si + 5.0 * k
                soundfile.write(str(folder / f"{d}_{spk}_{k}.wav"), (0.3 * np.sin(2 * np.pi * f0 * t)).astype(np.float32),
                                8000)
    return folder


@pytest.fixture()
def tiny(tmp_path):
    return str(write_tiny_fsdd(tmp_path / "tiny")), str(tmp_path / "cache")


def test_valid_speakers_hold_out_whole_speakers(tiny):
    root, c = tiny
    kw = dict(input="mel", test_speakers="anna", valid_speakers="bob", cache_dir=c)
    parts = {s: open_dataset("fsdd", root, s, **kw) for s in ("train", "valid", "test")}
    assert set(parts["test"].speakers) == {"anna"} and set(parts["valid"].speakers) == {"bob"}
    assert set(parts["train"].speakers) == {"carl"} and len(parts["train"]) == 6
    for bad, msg in (({"valid_speakers": "anna"}, "both"), ({"valid_speakers": "zed"}, "zed"),
                     ({"test_speakers": "", "valid_speakers": "bob"}, "needs test_speakers")):
        with pytest.raises(DatasetError, match=msg):
            open_dataset("fsdd", root, "train", **{**kw, **bad})


def test_normalize_against_a_direct_loop(tiny):
    root, c = tiny
    raw = open_dataset("fsdd", root, "all", input="mel", cache_dir=c).x.numpy().astype(np.float64)
    for mode in ("utterance", "channel"):
        got = open_dataset("fsdd", root, "all", input="mel", cache_dir=c, normalize=mode).x.numpy()
        for i in range(raw.shape[0]):
            clip = np.clip(raw[i], raw[i].max() - 80.0, None)
            if mode == "utterance":
                want = (clip - clip.mean()) / clip.std()
            else:
                centred = clip - clip.mean(axis=0)
                want = centred / centred.std()
            np.testing.assert_allclose(got[i], want, rtol=1e-4, atol=1e-4)
    with pytest.raises(DatasetError, match="normalize"):
        open_dataset("fsdd", root, "all", input="mel", cache_dir=c, normalize="bogus")


def test_augmentation_against_direct_loops():
    import torch

    from snn_delays.data.augment import batch_augmenter, freq_shift, time_shift, time_stretch

    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 3, 5, generator=g)  # (T, B, C)
    shifts = torch.tensor([2, -3, 0])
    ts, fs = time_shift(x, shifts), freq_shift(x, shifts)
    for b in range(3):
        s, low = int(shifts[b]), float(x[:, b].min())
        for t in range(7):
            want_t = x[t - s, b] if 0 <= t - s < 7 else torch.full((5,), low)
            torch.testing.assert_close(ts[t, b], want_t)
            for c in range(5):
                assert fs[t, b, c] == x[t, b, min(max(c - s, 0), 4)]
    # stretch by 2 (T -> 14 steps, the first 7 kept): linear interpolation at (i + 0.5) / 2 - 0.5
    st = time_stretch(x, 2.0)
    for i in range(7):
        pos = min(max((i + 0.5) / 2 - 0.5, 0.0), 6.0)
        lo = int(np.floor(pos))
        hi = min(lo + 1, 6)
        torch.testing.assert_close(st[i], x[lo] * (1 - (pos - lo)) + x[hi] * (pos - lo))
    assert time_stretch(x, 0.5)[4:].eq(x.amin(dim=(0, 2)).view(1, 3, 1)).all()  # padded with the silence

    class D:  # the data.aug_* keys
        aug_time_shift, aug_time_stretch, aug_freq_shift, aug_noise, aug_gain = 0, 0.0, 0, 0.0, 0.0
        aug_freq_mask, aug_time_mask = 0, 0

    assert batch_augmenter(D(), 0) is None
    D.aug_gain, D.aug_noise = 2.0, 0.0
    y = batch_augmenter(D(), 1)(x)
    offset = (y - x)[:, :, :]
    assert torch.allclose(offset, offset[0:1, :, 0:1].expand_as(offset), atol=1e-6)  # one offset per sample
    assert offset.abs().max() <= 2.0
    D.aug_noise = 0.5
    a, b = batch_augmenter(D(), 5)(x), batch_augmenter(D(), 5)(x)
    torch.testing.assert_close(a, b)  # same seed, same draw (a resumed epoch repeats it)


def test_spec_augment_masks_against_a_direct_loop():
    import torch

    from snn_delays.data.augment import N_MASKS, batch_augmenter, mask_spans

    x = torch.randn(9, 4, 6, generator=torch.Generator().manual_seed(1))  # (T, B, C)
    starts, widths = torch.tensor([[0, 2, 5, 1], [3, 2, 0, 9]]), torch.tensor([[2, 0, 1, 3], [1, 3, 0, 0]])
    for dim in (0, 2):
        got = mask_spans(x, starts, widths, dim)
        for b in range(4):
            mean = float(x[:, b].mean())
            for t in range(9):
                for c in range(6):
                    i = t if dim == 0 else c
                    hit = any(starts[k, b] <= i < starts[k, b] + widths[k, b] for k in range(2))
                    assert float(got[t, b, c]) == pytest.approx(mean if hit else float(x[t, b, c]), abs=1e-6)

    class D:
        aug_time_shift, aug_time_stretch, aug_freq_shift, aug_noise, aug_gain = 0, 0.0, 0, 0.0, 0.0
        aug_freq_mask, aug_time_mask = 3, 0

    y = batch_augmenter(D(), 2)(x)
    changed = (y != x).any(dim=0)  # (B, C): whole bands masked, at most N_MASKS x 3 channels per sample
    assert changed.any() and int(changed.sum(dim=1).max()) <= N_MASKS * 3
    assert torch.equal(y, batch_augmenter(D(), 2)(x))


def test_n_mels_sets_the_bands_and_its_own_cache_entry(tiny):
    root, c = tiny
    wide = open_dataset("fsdd", root, "all", input="mel", cache_dir=c)
    narrow = open_dataset("fsdd", root, "all", input="mel", cache_dir=c, n_mels=40)
    assert wide.x.shape[1:] == (101, 140) and narrow.x.shape[1:] == (101, 40)
    assert open_dataset("fsdd", root, "all", input="mel", cache_dir=c).x.shape[2] == 140  # not the 40-band entry
    with pytest.raises(DatasetError, match="n_mels"):
        open_dataset("fsdd", root, "all", input="mel", cache_dir=c, n_mels=0)
