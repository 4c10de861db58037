"""In-graph scalar features (tfbreath.scalars) against the librosa reference on synthetic and real
clips, and known answers."""

from __future__ import annotations

import re

import keras
import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import tensorflow as tf

from conftest import (BAND_LIMIT_HZ, PARITY_KINDS, SAMPLE_RATE, assert_same_scalars, breath_like, needs_breath,
                      parity_clip, real_clips, sine)
from librosa_reference.scalars import reference_scalars
from tfbreath import config, spectral
from tfbreath.config import SCALAR_NAMES
from tfbreath.scalars import (CONTRAST_FMIN, LIBROSA_N_FFT, N_BANDS, PRESELECT_STEP, ZCR_THRESHOLD,
                              _envelope_peaks, _flatness, _hilbert_envelope_and_autocorrelation, _largest_pair,
                              _skew_kurtosis, contrast_bands, scalar_features)

IDX = {name: i for i, name in enumerate(SCALAR_NAMES)}
N_PARITY_CLIPS = 64
N_SYNTHETIC_SEEDS = 6
"""Clips per ``PARITY_KINDS`` kind in the synthetic parity batch (36 clips)."""
MIN_CORRELATION = 0.99
PARITY_RTOL = 1e-3
"""Tighter than correlation: |tf - ref| <= 1e-3 * (|ref| + spread of ref over clips), every clip.
Measured worst case is ~1e-4 (contrast, skewness: float32 FFT and moment rounding) on real clips,
~1.3e-4 (contrast std) on the synthetic ones."""
CONSTANT_RTOL, CONSTANT_ATOL = 1e-5, 1e-7
"""A column the reference gives the same value on every clip: correlation is undefined there."""
PEAK_COUNT_AGREEMENT = 0.95
"""The peak count is an integer decided by thresholds (height >= mean, local-maximum tests) that
float32 vs float64 rounding of the envelope can flip on a borderline sample; exact agreement on
95 % of clips (measured: 100 %) is the meaningful check, correlation is not."""
OTHER_HOPS = (128, 384)
"""Besides the default 256: a hop dividing the frame (2048) and the rolloff's hop 512, so the rolloff
takes every 4th shared frame, and one dividing neither, so the RMS and ZCR sum whole frames and the
rolloff has an STFT of its own."""
DC_OFFSET = 0.1
BELOW_ZCR_THRESHOLD = -ZCR_THRESHOLD / 2
"""A negative sample librosa.zero_crossings snaps to zero."""
DC_LEVELS = (DC_OFFSET, 1e-3, -0.05)
"""Constant clips whose float32 mean TF rounds off (SciPy: -1, NaN and 1 as skewness)."""
ROUND_OFF = 1e-7
"""Relative spread of a series that is float32 round-off on a constant (below its resolution, 1e-6)."""
QUIET_GAIN = 1e-5
"""A clip this far down has STFT power near FLATNESS_AMIN, so the floor of its dead bins weighs in."""
FLATNESS_RTOL = 1e-5
HIGH_TONES_HZ = np.arange(6000.0, 8000.0, 50.0)
"""Pure tones in the top octave: their bandwidth^2 = (M2 - 2 c M1 + c^2 M0) / M0 cancels to
round-off of either sign (without the clamp, 6.6 kHz gave a NaN bandwidth)."""


def _features(y) -> np.ndarray:
    return scalar_features(tf.constant(y)).numpy()


def _white_noise(seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(SAMPLE_RATE)).astype(np.float32)


# ----------------------------------------------------------------------------- API and names


def test_names_match_config_and_are_snake_case():
    assert len(SCALAR_NAMES) == config.N_SCALARS == 39
    assert len(set(SCALAR_NAMES)) == len(SCALAR_NAMES)
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", name) for name in SCALAR_NAMES)
    # The three completing skewness features are at the end (documented in the module docstring).
    assert SCALAR_NAMES[-3:] == ("bandwidth_skew", "rolloff_skew", "flatness_skew")


def test_contrast_bands_follow_librosa_octaves():
    bands = contrast_bands(SAMPLE_RATE)
    assert len(bands) == 7
    assert bands[0][0] == 0 and bands[-1][1] == 1025  # from DC to Nyquist
    assert all(first < end and k >= 1 for first, end, k in bands)
    assert all(a[1] == b[0] for a, b in zip(bands[:-1], bands[1:]))  # contiguous partition


def test_contrast_bands_refuse_an_octave_edge_at_nyquist():
    # librosa's rule: every band's lower edge (up to fmin 2**(n_bands - 1)) must lie below Nyquist.
    highest_lower_edge = CONTRAST_FMIN * 2 ** (N_BANDS - 1)
    with pytest.raises(ValueError, match="exceed Nyquist"):
        contrast_bands(int(2 * highest_lower_edge))
    assert len(contrast_bands(int(2 * highest_lower_edge) + 2)) == N_BANDS + 1


# ----------------------------------------------------------------------------- parity


def _ours_and_reference(clips: np.ndarray, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    """``[N, n]`` clips -> their scalars in-graph and by the reference, ``[N, 39]`` each."""
    return (scalar_features(tf.constant(clips), **kwargs).numpy(),
            np.stack([reference_scalars(clip, **kwargs) for clip in clips]))


def _scalar_mismatches(got: np.ndarray, want: np.ndarray) -> dict[str, str]:
    """The columns of ``got`` (``[N, 39]``) that miss the reference's ``want`` across the N clips."""
    assert got.shape == want.shape == (len(want), len(SCALAR_NAMES))
    assert np.isfinite(got).all() and np.isfinite(want).all()
    mismatches = {}
    for i, name in enumerate(SCALAR_NAMES):
        a, b = got[:, i], want[:, i]
        if name == "envelope_peak_count":
            agreement = np.mean(a == b)
            if agreement < PEAK_COUNT_AGREEMENT:
                mismatches[name] = f"exact on {agreement:.0%} of clips"
        elif np.ptp(b) == 0:
            if not np.allclose(a, b, rtol=CONSTANT_RTOL, atol=CONSTANT_ATOL):
                mismatches[name] = f"constant reference {b[0]}, got {a}"
        else:
            correlation = np.corrcoef(a, b)[0, 1]
            worst = np.max(np.abs(a - b) / (PARITY_RTOL * (np.abs(b) + np.std(b))))
            if not (correlation >= MIN_CORRELATION and worst <= 1.0):
                mismatches[name] = f"correlation {correlation:.5f}, error {worst:.2f}x the tolerance"
    return mismatches


@pytest.fixture(scope="module")
def synthetic_parity_features():
    return _ours_and_reference(np.stack([parity_clip(kind, seed) for kind in PARITY_KINDS
                                         for seed in range(N_SYNTHETIC_SEEDS)]))


def test_parity_with_reference_on_synthetic_breathing(synthetic_parity_features):
    assert _scalar_mismatches(*synthetic_parity_features) == {}


def test_scalar_parity_fails_against_the_reference_of_other_clips(synthetic_parity_features):
    got, want = synthetic_parity_features
    # Each clip against the reference of its neighbour (mostly the same kind, another seed):
    # every column must notice.
    assert _scalar_mismatches(got, np.roll(want, 1, axis=0)).keys() == set(SCALAR_NAMES)


@pytest.mark.parametrize("hop_length", OTHER_HOPS)
def test_parity_with_reference_at_other_hops(hop_length):
    clips = np.stack([parity_clip(kind, seed=0) for kind in PARITY_KINDS])
    assert _scalar_mismatches(*_ours_and_reference(clips, hop_length=hop_length)) == {}


@needs_breath
def test_parity_with_reference_on_real_clips():
    clips = np.stack([sf.read(path, dtype="float32")[0] for path in real_clips(N_PARITY_CLIPS)])
    assert len(clips) == N_PARITY_CLIPS
    assert _scalar_mismatches(*_ours_and_reference(clips)) == {}


# ----------------------------------------------------------------------------- known answers


def test_silence_is_finite_and_zero_energy():
    out = _features(np.zeros(SAMPLE_RATE, np.float32))
    assert out.shape == (39,)
    assert np.isfinite(out).all()
    # The reference gives 0 for every column but the flatness (NaN where SciPy divides by zero:
    # the module docstring's 0); in particular a rolloff and centroid of 0 Hz, not Nyquist.
    for name in SCALAR_NAMES:
        if name != "flatness_mean":
            assert out[IDX[name]] == 0.0, name
    assert out[IDX["flatness_mean"]] == pytest.approx(1.0, abs=1e-4)  # amin floor everywhere


@pytest.mark.parametrize("level", DC_LEVELS)
def test_a_constant_clip_has_zero_skewness_and_kurtosis(level):
    # A constant series has no skewness: SciPy's NaN (the module docstring's 0). Its float32 mean is
    # off by round-off (0.1 over 16000 samples: 2.4e-7), so the deviations from it are one constant,
    # not zero, and their skewness and kurtosis would be -1 and -2 (so are SciPy's at 0.1).
    out = _features(np.full(SAMPLE_RATE, level, np.float32))
    assert np.isfinite(out).all()
    for name in ("waveform_skew", "waveform_kurtosis"):
        assert out[IDX[name]] == 0.0, name


def test_a_series_varying_below_float32_resolution_of_its_mean_is_constant():
    # var <= (float32 resolution * mean)**2 (SciPy's rule for a constant series): round-off on a
    # constant gives skewness and kurtosis 0, not the O(1) shape of its rounding errors.
    series = DC_OFFSET * (1.0 + ROUND_OFF * np.random.default_rng(0).standard_normal(SAMPLE_RATE))
    series = series.astype(np.float32)
    assert np.ptp(series) > 0
    skew, kurtosis = (t.numpy() for t in _skew_kurtosis(tf.constant(series[np.newaxis])))
    np.testing.assert_array_equal([skew[0], kurtosis[0]], 0.0)


@pytest.mark.parametrize("between", [0.0, BELOW_ZCR_THRESHOLD], ids=["zeros", "below-threshold"])
def test_zero_and_sub_threshold_samples_count_as_non_negative(between):
    # librosa.zero_crossings (threshold 1e-10, zero_pos): a positive tone with exact zeros, or
    # negatives smaller than the threshold, between its samples never crosses zero.
    y = np.full(SAMPLE_RATE, DC_OFFSET, np.float32)
    y[::2] = between
    out = _features(y)
    assert librosa.feature.zero_crossing_rate(y).max() == 0.0
    assert out[IDX["zcr_max"]] == 0.0


def test_sine_1khz_known_answers():
    out = _features(sine(1000.0))
    lag = SAMPLE_RATE // 100
    # The first/last frames see padding, so max (interior frames) is the clean rate.
    assert out[IDX["zcr_max"]] == pytest.approx(2 * 1000 / SAMPLE_RATE, rel=0.01)
    assert out[IDX["centroid_mean"]] == pytest.approx(1000 / (SAMPLE_RATE / 2), rel=0.02)
    assert out[IDX["rms_max"]] == pytest.approx(0.5 / np.sqrt(2), rel=0.01)
    # Finite-length autocorrelation of a sine: (n - k) / n * cos(2 pi f k / sr).
    expected = (SAMPLE_RATE - lag) / SAMPLE_RATE * np.cos(2 * np.pi * 1000 * lag / SAMPLE_RATE)
    assert out[IDX["autocorr_10ms"]] == pytest.approx(expected, abs=1e-3)


def test_autocorrelation_sign_and_minimum_lag():
    out = _features(sine(1250.0))  # 12.5 periods in 10 ms: anti-phase
    assert out[IDX["autocorr_10ms"]] == pytest.approx(-(1 - 0.01), abs=1e-3)
    # 1 kHz: the period is 16 samples, so lag 8 is exactly anti-phase, and the earliest such
    # lag has the largest (n - k) / n overlap: the global minimum below 50 ms.
    out = _features(sine(1000.0))
    assert out[IDX["autocorr_min_lag_s"]] == pytest.approx(8 / SAMPLE_RATE, abs=1e-9)


@pytest.mark.parametrize("freq", [5.0, 15.0])
def test_minimum_lag_is_searched_below_50_ms(freq):
    """A 5 Hz sine's autocorrelation falls until its half period (100 ms), so the minimum below
    50 ms is the last lag searched; 15 Hz's falls to its half period (33 ms), inside the search."""
    lags = np.arange(SAMPLE_RATE // 20)  # [800]: the lags below 50 ms
    expected = np.argmin((SAMPLE_RATE - lags) * np.cos(2 * np.pi * freq * lags / SAMPLE_RATE))
    assert expected == (len(lags) - 1 if freq == 5.0 else 531)
    assert _features(sine(freq))[IDX["autocorr_min_lag_s"]] == pytest.approx(expected / SAMPLE_RATE, abs=2e-4)


@pytest.mark.parametrize(("freq", "expected"), [(3000.0, 0.0), (300.0, 1.0)])
def test_low_frequency_energy_ratio(freq, expected):
    assert _features(sine(freq))[IDX["low_freq_energy_ratio"]] == pytest.approx(expected, abs=1e-3)


def test_high_pure_tones_have_a_finite_bandwidth():
    out = _features(np.stack([sine(freq) for freq in HIGH_TONES_HZ]))
    assert np.isfinite(out).all()
    assert (out[:, IDX["bandwidth_mean"]] >= 0.0).all()


def test_flatness_noise_high_sine_low():
    noise = _features(_white_noise())[IDX["flatness_mean"]]
    tone = _features(sine(1000.0))[IDX["flatness_mean"]]
    assert noise > 0.3
    assert tone < 1e-3


@pytest.mark.parametrize("gain", [1.0, QUIET_GAIN])
def test_flatness_counts_each_bin_above_the_band_limit_as_the_floor(gain):
    # A band-limited cache's dead bins are zero: their floor's log and share are added once per
    # frame, which must equal flooring every zero bin.
    cache = spectral.SpectrogramCache(gain * breath_like(0)[np.newaxis], SAMPLE_RATE, BAND_LIMIT_HZ)
    power = cache.power(LIBROSA_N_FFT, config.FeatureConfig().hop_length)  # [1, T, 1025]
    live_bins = cache.live_bins(LIBROSA_N_FFT)
    assert live_bins < power.shape[-1]
    np.testing.assert_allclose(_flatness(power, live_bins).numpy(), _flatness(power, power.shape[-1]).numpy(),
                               rtol=FLATNESS_RTOL)


def test_percentiles_match_numpy_exactly():
    y = breath_like(3)
    out = _features(y)
    assert out[IDX["abs_amplitude_p90"]] == pytest.approx(np.percentile(np.abs(y), 90), rel=1e-6)
    assert out[IDX["abs_amplitude_p10"]] == pytest.approx(np.percentile(np.abs(y), 10), rel=1e-6)


def _periodic_spikes(n: int = SAMPLE_RATE) -> np.ndarray:
    """Zeros with a 1 at every ``PRESELECT_STEP``-th sample: the strided subsample sees only the
    spikes, so fewer than k values reach its bracket's low end (1.0) for k > n / step."""
    x = np.zeros(n, np.float32)
    x[::PRESELECT_STEP] = 1.0
    return x


def _ones_between_strides(count: int, n: int = SAMPLE_RATE) -> np.ndarray:
    """Zeros with ``count`` ones off the subsample's stride: the subsample sees only zeros."""
    x = np.zeros(n, np.float32)
    x[1:1 + PRESELECT_STEP * count:PRESELECT_STEP] = 1.0
    return x


@pytest.mark.parametrize("rows, k", [
    (np.stack([breath_like(0), -breath_like(1), sine(700.0)]), 1601),  # the percentiles' case
    (np.stack([breath_like(2), np.zeros(SAMPLE_RATE, np.float32)]), 2),  # silence: all ties
    (np.round(np.stack([breath_like(4)]) * 20), 1601),  # many ties at the k-th value
    (np.stack([_periodic_spikes()]), SAMPLE_RATE // PRESELECT_STEP + 1000),  # low end opened
    (np.stack([1.0 - _periodic_spikes(), breath_like(5)]), 1601),  # high end opened in row 0 only
    (np.stack([_ones_between_strides(1600)]), 1601),  # k - 1 values above the bracket: high end opened
    (np.stack([breath_like(6)]), SAMPLE_RATE),  # k = n: the smallest two
])
def test_largest_pair_is_the_kth_and_next_largest(rows, k):
    rows = tf.constant(rows, tf.float32)
    kth, next_largest = (t.numpy() for t in _largest_pair(rows, k))
    descending = -np.sort(-rows.numpy(), -1)
    np.testing.assert_array_equal(kth, descending[:, k - 1])
    np.testing.assert_array_equal(next_largest, descending[:, k - 2])


def test_largest_pair_rejects_k_outside_the_row():
    rows = tf.zeros([1, 100])
    for k in (1, 101):
        with pytest.raises(ValueError, match=f"k must be in \\[2, 100\\].*got {k}"):
            _largest_pair(rows, k)


def test_percentiles_of_periodic_spikes():
    y = _periodic_spikes()
    out = _features(y)
    assert out[IDX["abs_amplitude_p90"]] == pytest.approx(np.percentile(y, 90), abs=1e-7)
    assert out[IDX["abs_amplitude_p10"]] == pytest.approx(np.percentile(y, 10), abs=1e-7)


def _scipy_peak_stats(envelope: np.ndarray) -> list[float]:
    peaks, props = scipy.signal.find_peaks(envelope, height=envelope.mean(), distance=SAMPLE_RATE // 10)
    heights = props["peak_heights"]
    return [len(peaks), heights.mean() if len(heights) else 0.0, heights.std() if len(heights) > 1 else 0.0]


def test_clips_shorter_than_the_autocorrelation_lags_are_a_clear_error():
    with pytest.raises(ValueError, match="at least 800 samples .* got 500"):
        scalar_features(np.zeros(500, np.float32))
    shortest = SAMPLE_RATE // 20  # exactly the 50 ms of lags: accepted
    assert np.isfinite(_features(breath_like(0, seconds=shortest / SAMPLE_RATE))).all()


@pytest.mark.parametrize("tflite", [False, True], ids=["any-length-ffts", "tflite-ffts"])
@pytest.mark.parametrize("n", [SAMPLE_RATE, 1001])
def test_hilbert_envelope_and_autocorrelation_match_scipy_and_numpy(n, tflite):
    # Both ways give scipy's own length-n circular transform: a plain zero-padded FFT would
    # differ most at the edges. TFLite's way needs power-of-two FFTs only.
    y = np.random.default_rng(n).standard_normal((2, n))
    n_lags = 800
    fft_mode = spectral.FftMode(tflite_compatible=tflite)
    envelope, lags = (t.numpy() for t in _hilbert_envelope_and_autocorrelation(tf.constant(y, tf.float32), n_lags,
                                                                               fft_mode))
    want = np.abs(scipy.signal.hilbert(y, axis=-1))
    np.testing.assert_allclose(envelope, want, atol=1e-5 * want.max())
    full = np.stack([np.correlate(row, row, "full")[n - 1:n - 1 + n_lags] for row in y])
    np.testing.assert_allclose(lags, full / full[:, :1], atol=1e-5)


def test_envelope_peaks_match_scipy_greedy_distance_rule():
    rng = np.random.default_rng(7)
    envelopes = []
    for _ in range(6):  # many candidates closer than the distance, unequal heights
        smooth = np.convolve(rng.standard_normal(SAMPLE_RATE + 400), np.hanning(200), mode="valid")
        envelopes.append(np.abs(smooth[:SAMPLE_RATE]))
    crafted = np.zeros(SAMPLE_RATE)
    crafted[[1000, 1500, 2000, 4000, 9000, 9900, 15000]] = [3.0, 5.0, 4.0, 2.0, 1.0, 6.0, 2.5]
    crafted[4001] = 2.0  # a two-sample plateau: scipy puts the peak on its left sample
    envelopes.append(crafted)
    batch = tf.constant(np.stack(envelopes).astype(np.float32))
    got = np.stack([t.numpy() for t in _envelope_peaks(batch, SAMPLE_RATE)], axis=1)
    want = np.array([_scipy_peak_stats(e.astype(np.float32)) for e in envelopes])
    np.testing.assert_array_equal(got[:, 0], want[:, 0])
    np.testing.assert_allclose(got[:, 1:], want[:, 1:], rtol=1e-5, atol=1e-7)
    assert want[-1, 0] == 4  # 1500 (drops 1000, 2000), 4000, 9900 (drops 9000), 15000


# ----------------------------------------------------------------------------- graph behaviour


def test_batched_equals_unbatched():
    clips = np.stack([breath_like(seed) for seed in range(3)] + [sine(700.0)])
    batched = _features(clips)
    assert batched.shape == (4, 39)
    single = np.stack([_features(clip) for clip in clips])
    assert_same_scalars(batched, single)
    nested = _features(clips.reshape(2, 2, -1))
    assert nested.shape == (2, 2, 39)
    assert_same_scalars(nested.reshape(4, 39), batched)


def test_inside_dataset_map_equals_direct_call():
    clips = np.stack([breath_like(seed) for seed in range(3)])
    direct = _features(clips)
    mapped = tf.data.Dataset.from_tensor_slices(clips).map(scalar_features).batch(3)
    (from_dataset,) = [batch.numpy() for batch in mapped]
    assert_same_scalars(from_dataset, direct)
    batched = tf.data.Dataset.from_tensor_slices(clips).batch(3).map(scalar_features)
    assert_same_scalars(next(iter(batched)).numpy(), direct)


def test_float32_under_mixed_precision():
    y = breath_like(5)
    expected = _features(y)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        out = scalar_features(tf.constant(y))
        from_double = scalar_features(tf.constant(y.astype(np.float64)))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert out.dtype == tf.float32 and from_double.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(from_double.numpy(), expected, rtol=1e-5, atol=1e-6)
