"""``[features] level_rms``: every clip scaled to one RMS before the features, so gain reaches none."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import assert_features_equal, breath_like
from tfbreath import spectral
from tfbreath.config import NO_LEVEL, ConfigError, PipelineConfig, config_from_dict, with_overrides
from tfbreath.features import SCALARS, SPECTRAL, extract_features
from tfbreath.config import SCALAR_NAMES

LEVEL = 0.05
PIPELINE = with_overrides(PipelineConfig(), "features", band_limit_hz=2000.0)
LEVELLED = with_overrides(PIPELINE, "features", level_rms=LEVEL)
GAINS = (0.25, 4.0)
"""-12 dB and +12 dB: float clips, so nothing clips or falls into quantisation noise."""
MAPS_ATOL = 1e-3
SCALARS_RTOL = 1e-3
SCALARS_ATOL = 1e-4
LEVEL_SCALARS = [SCALAR_NAMES.index(name) for name in ("rms_mean", "abs_amplitude_p90", "envelope_mean")]


def _features(y, pipeline=LEVELLED) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in extract_features(y, pipeline).items()}


def test_scale_to_rms_sets_the_rms_and_keeps_silence_silent():
    batch = np.stack([breath_like(0), 0.01 * breath_like(1), np.zeros_like(breath_like(0))])
    out = spectral.scale_to_rms(batch, LEVEL).numpy()
    np.testing.assert_allclose(np.sqrt(np.mean(out[:2] ** 2, axis=-1)), LEVEL, rtol=1e-5)
    np.testing.assert_array_equal(out[2], 0.0)


@pytest.mark.parametrize("gain", GAINS)
def test_a_gain_changes_no_feature(gain):
    y = 0.1 * breath_like(2) / np.abs(breath_like(2)).max()
    want, got = _features(y), _features(gain * y)
    np.testing.assert_allclose(got[SPECTRAL], want[SPECTRAL], atol=MAPS_ATOL)
    np.testing.assert_allclose(got[SCALARS], want[SCALARS], rtol=SCALARS_RTOL, atol=SCALARS_ATOL)
    full = _features(gain * y, PIPELINE)[SCALARS][LEVEL_SCALARS]  # without it the level scalars move
    assert np.all(np.abs(full - _features(y, PIPELINE)[SCALARS][LEVEL_SCALARS]) > 10 * SCALARS_ATOL)


def test_off_keeps_the_recorded_level_exactly():
    y = breath_like(3)
    assert_features_equal(_features(y, with_overrides(LEVELLED, "features", level_rms=NO_LEVEL)),
                          _features(y, PIPELINE))


@pytest.mark.parametrize("value", [-0.1, 1.5])
def test_a_bad_level_is_echoed(value):
    with pytest.raises(ConfigError, match=rf"level_rms must be a number 0.0 \(off\) or in \(0, 1\], got {value}"):
        config_from_dict({"features": {"level_rms": value}}, source="p.toml")


def test_scale_to_rms_levels_a_quiet_but_not_silent_clip():
    y = 3e-5 * np.random.default_rng(0).standard_normal((1, 16000)).astype(np.float32)  # about -90 dBFS RMS
    out = spectral.scale_to_rms(y, 0.05).numpy()
    np.testing.assert_allclose(np.sqrt(np.mean(out ** 2)), 0.05, rtol=1e-5)
