"""``[features] band_limit_hz``: the Kaiser FIR low-pass in front of the feature graph.

Known answers on synthetic signals (the filter's response, a tone above the limit vanishes, one
below it stays), parity with NumPy's convolution, batched == unbatched == inside ``ds.map``.
"""

from __future__ import annotations

import numpy as np
import scipy.signal
import tensorflow as tf

from conftest import BAND_LIMIT_HZ, SAMPLE_RATE, assert_features_equal, breath_like, sine
from tfbreath import filters, maps, spectral
from tfbreath.config import NO_BAND_LIMIT, PipelineConfig, with_overrides
from tfbreath.features import SCALARS, SPECTRAL, extract_features

PIPELINE = PipelineConfig()
LIMITED = with_overrides(PIPELINE, "features", band_limit_hz=BAND_LIMIT_HZ)

PASSBAND_RIPPLE_DB = 0.01
STOPBAND_SLACK_DB = 0.5
"""Kaiser's formulas size the filter approximately (measured -99.91 dB at the limit)."""
FIR_ATOL = 1e-5
"""float32 convolution of a unit-scale signal with 500-odd taps vs NumPy's float64 (measured 2e-6)."""
FEATURE_ATOL = 1e-3
"""Model-input units (z-scored maps): a tone 100 dB down moves nothing further than float32
round-off (measured 2e-5 on the maps); an unfiltered one moves them by O(1)."""
SCALAR_RTOL = 1e-3


def _features(y: np.ndarray, pipeline: PipelineConfig = LIMITED) -> dict[str, np.ndarray]:
    return {key: value.numpy() for key, value in extract_features(y, pipeline).items()}


def test_taps_pass_the_band_and_stop_everything_from_the_limit_up():
    taps = filters.lowpass_taps(SAMPLE_RATE, BAND_LIMIT_HZ)
    assert taps.size % 2 == 1
    np.testing.assert_array_equal(taps, taps[::-1])  # linear phase: symmetric
    freqs, response = scipy.signal.freqz(taps, worN=16384, fs=SAMPLE_RATE)
    db = 20 * np.log10(np.abs(response) + 1e-30)
    passband = freqs <= BAND_LIMIT_HZ - filters.LOWPASS_TRANSITION_HZ
    assert np.abs(db[passband]).max() < PASSBAND_RIPPLE_DB
    assert db[freqs >= BAND_LIMIT_HZ].max() < -filters.LOWPASS_STOPBAND_DB + STOPBAND_SLACK_DB


def test_fir_filter_equals_numpy_convolution_batched_and_in_dataset_map():
    taps = filters.lowpass_taps(SAMPLE_RATE, BAND_LIMIT_HZ)
    batch = np.stack([breath_like(seed) for seed in range(3)])  # [3, n]
    want = np.stack([np.convolve(y.astype(np.float64), taps, mode="same") for y in batch])
    np.testing.assert_allclose(spectral.fir_filter(batch, taps).numpy(), want, atol=FIR_ATOL)
    mapped = tf.data.Dataset.from_tensor_slices(batch).batch(3).map(lambda y: spectral.fir_filter(y, taps))
    np.testing.assert_allclose(next(iter(mapped)).numpy(), want, atol=FIR_ATOL)


def test_a_tone_above_the_limit_leaves_the_features_of_the_clip_below_it():
    below = breath_like(0) * 0.1 + sine(1000.0, amplitude=0.1)
    above = sine(3000.0, amplitude=0.3) * np.hanning(SAMPLE_RATE).astype(np.float32)  # no edge clicks
    limited, alone = _features(below + above), _features(below)
    np.testing.assert_allclose(limited[SPECTRAL], alone[SPECTRAL], atol=FEATURE_ATOL)
    np.testing.assert_allclose(limited[SCALARS], alone[SCALARS], rtol=SCALAR_RTOL, atol=FEATURE_ATOL)
    full = _features(below + above, PIPELINE)[SPECTRAL]  # the same comparison can fail
    assert np.abs(full - _features(below, PIPELINE)[SPECTRAL]).max() > 100 * FEATURE_ATOL


def test_silence_stays_silent_and_batches_equal_single_clips():
    batch = np.stack([np.zeros(SAMPLE_RATE, np.float32), breath_like(1), breath_like(2)])
    together = _features(batch)
    np.testing.assert_array_equal(together[SPECTRAL][0], 0.0)
    for i, y in enumerate(batch):
        single = _features(y)
        np.testing.assert_allclose(together[SPECTRAL][i], single[SPECTRAL], atol=FEATURE_ATOL)


def test_off_leaves_the_full_band_exactly():
    y = breath_like(3)
    assert_features_equal(_features(y, with_overrides(LIMITED, "features", band_limit_hz=NO_BAND_LIMIT)),
                          _features(y, PIPELINE))


def test_lpc_runs_at_the_lowest_rate_that_holds_the_band_on_the_maps_frames():
    assert maps.lpc_decimation(SAMPLE_RATE, LIMITED.features) == 4  # 16 kHz -> 4 kHz
    assert maps.lpc_decimation(SAMPLE_RATE, PIPELINE.features) == 1
    odd_hop = with_overrides(LIMITED, "features", hop_length=250).features
    assert maps.lpc_decimation(SAMPLE_RATE, odd_hop) == 2  # 4 does not divide 250
    wide = with_overrides(LIMITED, "features", band_limit_hz=5000.0).features
    assert maps.lpc_decimation(SAMPLE_RATE, wide) == 1
    # A clip of n samples, n % hop > hop - 4, decimates to ceil(n / 4) samples: a frame more, cut.
    for n in (16125, 16127):
        y = breath_like(0, seconds=n / SAMPLE_RATE)
        features = _features(y)
        assert features[SPECTRAL].shape == (PIPELINE.features.n_mels, 1 + n // PIPELINE.features.hop_length,
                                            len(PIPELINE.features.maps))
        unlimited = _features(y, PIPELINE)[SPECTRAL]
        assert features[SPECTRAL].shape == unlimited.shape


def test_spectrogram_cache_zeroes_every_bin_from_the_limit_up():
    y = breath_like(4)[np.newaxis]
    power = spectral.SpectrogramCache(y, SAMPLE_RATE, BAND_LIMIT_HZ).power(512, 256).numpy()  # [1, T, 257]
    freqs = filters.fft_frequencies(SAMPLE_RATE, 512)
    assert np.all(power[..., freqs >= BAND_LIMIT_HZ] == 0.0)
    full = spectral.SpectrogramCache(y).power(512, 256).numpy()
    np.testing.assert_array_equal(power[..., freqs < BAND_LIMIT_HZ], full[..., freqs < BAND_LIMIT_HZ])
    assert np.all(full[..., freqs >= BAND_LIMIT_HZ].max(axis=-2) > 0.0)
