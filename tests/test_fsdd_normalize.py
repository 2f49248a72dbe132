"""data.normalize = "tilt" (FSDD log-mel): a clip's spectral slope removed, its formant pattern kept."""

from __future__ import annotations

import numpy as np
import pytest

from snn_delays.config import DataConfig
from snn_delays.data.audio import normalize_db


def _clip(rng, n_steps=60, n_bands=40):
    """(1, T, C) dB: -90 dB silence with a 'vowel' in steps 20-40 (two formant bumps) over a -60 dB bed."""
    x = np.full((1, n_steps, n_bands), -90.0)
    band = np.arange(n_bands)
    vowel = -60.0 + 30.0 * np.exp(-0.5 * ((band - 8) / 2.0) ** 2) + 20.0 * np.exp(-0.5 * ((band - 25) / 3.0) ** 2)
    x[0, 20:40] = vowel + rng.normal(0.0, 1.0, (20, n_bands))
    return x


def test_tilt_is_removed_and_formants_kept():
    rng = np.random.default_rng(0)
    x = _clip(rng)
    band = np.arange(x.shape[2])
    tilted = x + (-0.5 * band)[None, None, :]  # a voice / microphone losing 0.5 dB per band
    a, b = normalize_db(x, "tilt"), normalize_db(tilted, "tilt")
    # the same clip with another tilt normalises to the same frames (up to the top_db clip of silence)
    np.testing.assert_allclose(a[0, 20:40], b[0, 20:40], atol=1e-4)
    # the speech frames' mean spectrum has no slope left (np.polyfit as the independent line fit)
    assert abs(np.polyfit(band, b[0, 20:40].mean(0), 1)[0]) < 1e-3
    # formant peaks stay where they were (channel normalisation keeps the vowel's pattern only by accident)
    assert int(np.argmax(b[0, 20:40].mean(0))) == 8
    # and "utterance" does not remove the tilt: the two clips differ there
    assert np.abs(normalize_db(x, "utterance")[0, 20:40] - normalize_db(tilted, "utterance")[0, 20:40]).max() > 0.1


def test_tilt_is_utterance_normalised_and_gain_free():
    rng = np.random.default_rng(1)
    x = _clip(rng)
    y = normalize_db(x, "tilt")
    assert y.dtype == np.float32 and y.shape == x.shape
    assert y.mean() == pytest.approx(0.0, abs=1e-5) and y.std() == pytest.approx(1.0, abs=1e-4)
    np.testing.assert_allclose(normalize_db(x + 12.0, "tilt"), y, atol=1e-5)  # a level change is removed too


def test_config_accepts_tilt():
    from snn_delays.config import ConfigError

    DataConfig(normalize="tilt").validate()
    with pytest.raises(ConfigError, match="tilt"):
        DataConfig(normalize="slope").validate()
