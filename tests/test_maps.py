"""The nine spectral maps: librosa parity on synthetic and real clips, known answers, batching, graph mode."""

from __future__ import annotations

import keras
import librosa
import numpy as np
import pytest
import soundfile as sf
import tensorflow as tf

from conftest import BAND_LIMIT_HZ, PARITY_KINDS, SAMPLE_RATE, breath_like, needs_breath, parity_clip, real_clips, sine
from librosa_reference.maps import _cens, reference_maps, reference_raw_maps
from tfbreath import filters, maps, spectral
from tfbreath.config import MAP_NAMES, FeatureConfig

FEATURES = FeatureConfig()
N_PARITY_CLIPS = 12
PARITY_MIN_CORRELATION = 0.9999
"""Per map and per clip; tighter than the 0.99 the issue asks, since every map is exact up to float32."""
PARITY_MAX_ABS = 0.01
"""On the z-scored maps (unit variance); the worst value seen on real clips is ~2e-3, on the
synthetic ones 6e-5. Both checks are needed: the modulation map of another clip still correlates
0.99999 (88 of its 128 rows are padding at the map's far-off minimum); only the absolute error
(0.46) tells them apart."""
RAW_PARITY_RTOL = 1e-4
"""Raw maps: error / the map's largest |value| (measured: 1.2e-5 on real clips, 6e-6 synthetic)."""
TEMPOGRAM_ATOL = 1e-4
"""The raw tempogram is already normalised to [-1, 1] per frame (measured: <= 1.5e-6)."""
SMALL_MAP_FRAMES = 8
CENS_STEP_WEIGHTS = (8, 4, 2, 1, 1, 1, 1, 1, 1)
"""Chroma bins whose shares of their sum (20) are exactly the CENS steps 0.4, 0.2, 0.1 and 0.05."""
SMALL_STEP, LARGE_VALUE = 1e-4, 1e3
"""A band's step and a value elsewhere in its map: its spread is below ZSCORE_RESOLUTION of the map's
largest |value|, above it of each frame's but the spike's."""


def _maps(y, features=FEATURES):
    return maps.spectral_maps(y, SAMPLE_RATE, features).numpy()


def _map_mismatches(ours: np.ndarray, reference: np.ndarray) -> dict[str, str]:
    """The maps (``[n_mels, frames, 9]`` each) that miss the parity tolerances, with how far."""
    assert ours.shape == reference.shape == (128, 63, len(MAP_NAMES))
    mismatches = {}
    for channel, name in enumerate(MAP_NAMES):
        a, b = ours[..., channel].ravel(), reference[..., channel].ravel()
        correlation, worst = np.corrcoef(a, b)[0, 1], np.abs(a - b).max()
        if not (correlation >= PARITY_MIN_CORRELATION and worst <= PARITY_MAX_ABS):
            mismatches[name] = f"correlation {correlation:.6f}, max |error| {worst:.2e}"
    return mismatches


def _assert_raw_maps_match_librosa(y: np.ndarray) -> None:
    ours = maps.raw_maps(y, SAMPLE_RATE, FEATURES)
    reference = reference_raw_maps(y, SAMPLE_RATE, FEATURES)
    for name in ("mel", "mfcc", "gammatone", "chroma"):
        raw = ours[name].numpy().T
        scale = np.abs(reference[name]).max()
        np.testing.assert_allclose(raw, reference[name], atol=RAW_PARITY_RTOL * scale, err_msg=name)
    np.testing.assert_allclose(ours["tempogram"].numpy().T, reference["tempogram"], atol=TEMPOGRAM_ATOL)


def _real_clip(path) -> np.ndarray:
    y, sample_rate = sf.read(path, dtype="float32")
    assert sample_rate == SAMPLE_RATE
    return y


@pytest.mark.parametrize("kind", PARITY_KINDS)
def test_every_map_matches_librosa_on_synthetic_breathing(kind):
    y = parity_clip(kind, seed=0)
    assert _map_mismatches(_maps(y), reference_maps(y, SAMPLE_RATE, FEATURES)) == {}


def test_map_parity_fails_against_the_reference_of_another_clip():
    # The same kind, another seed: the closest wrong input. Every map must notice.
    ours = _maps(parity_clip("breath", seed=0))
    other = reference_maps(parity_clip("breath", seed=1), SAMPLE_RATE, FEATURES)
    assert _map_mismatches(ours, other).keys() == set(MAP_NAMES)


@needs_breath
@pytest.mark.parametrize("path", real_clips(N_PARITY_CLIPS), ids=lambda p: p.stem)
def test_every_map_matches_librosa_on_real_clips(path):
    y = _real_clip(path)
    assert _map_mismatches(_maps(y), reference_maps(y, SAMPLE_RATE, FEATURES)) == {}


@pytest.mark.parametrize("kind", PARITY_KINDS)
def test_raw_maps_match_librosa_before_normalisation_on_synthetic_breathing(kind):
    _assert_raw_maps_match_librosa(parity_clip(kind, seed=0))


@needs_breath
def test_raw_maps_match_librosa_before_normalisation_on_a_real_clip():
    _assert_raw_maps_match_librosa(_real_clip(real_clips(1)[0]))


def test_silence_gives_all_zero_maps():
    out = _maps(np.zeros(SAMPLE_RATE, np.float32))
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out, 0.0)


def test_sine_lights_the_right_mel_band_and_chroma_bin():
    freq = 1000.0
    raw = maps.raw_maps(sine(freq), SAMPLE_RATE, FEATURES)
    centres = librosa.mel_frequencies(n_mels=FEATURES.n_mels + 2, fmax=FEATURES.fmax)[1:-1]
    loudest = int(np.argmax(raw["mel"].numpy().mean(axis=0)))
    assert abs(centres[loudest] - freq) < 40.0
    chroma = maps.raw_maps(sine(440.0), SAMPLE_RATE, FEATURES)["chroma"].numpy()
    a_index = 9  # chroma bins start at C: C C# D D# E F F# G G# A
    assert (chroma[:, :12].argmax(axis=1) == a_index).all()
    cens = chroma[:, 12:]  # quantised, so A may tie with a neighbour for the top step
    assert (cens[:, a_index] == cens.max(axis=1)).all()


def test_cens_steps_are_crossed_only_above_their_threshold():
    # librosa's quantisation counts distribution > step: bins of exactly 0.4, 0.2, 0.1 and 0.05 of
    # a frame's sum sit on the steps, which they do not cross.
    chroma = np.zeros((SMALL_MAP_FRAMES, maps.CHROMA_ROWS // 2), np.float32)  # [T, 12]
    chroma[:, :len(CENS_STEP_WEIGHTS)] = CENS_STEP_WEIGHTS
    got = maps.chroma_cens(tf.constant(chroma)).numpy()  # [T, 12]
    np.testing.assert_allclose(got, _cens(chroma.T).T, atol=1e-6)


def test_burg_lpc_recovers_a_known_ar2_process():
    rng = np.random.default_rng(0)
    a1, a2 = -1.3, 0.8  # y[n] = 1.3 y[n-1] - 0.8 y[n-2] + e[n]
    y = np.zeros(20000)
    e = rng.standard_normal(len(y))
    for n in range(2, len(y)):
        y[n] = -a1 * y[n - 1] - a2 * y[n - 2] + e[n]
    coeffs = maps.burg_lpc(tf.constant(y[np.newaxis], tf.float32), order=2).numpy()[0]
    np.testing.assert_allclose(coeffs, [a1, a2], atol=0.03)


def test_band_limited_lpc_is_the_lpc_of_the_clip_at_the_decimated_rate():
    # With a band limit the LPC runs at sample_rate / D on every D-th sample: its frames (25 ms) and
    # hop must be those of the slower clip, so the map equals that clip's own LPC map, frame for frame.
    limited = FeatureConfig(maps=("lpc",), band_limit_hz=BAND_LIMIT_HZ)
    step = maps.lpc_decimation(SAMPLE_RATE, limited)
    assert step > 1
    slower = FeatureConfig(maps=("lpc",), hop_length=limited.hop_length // step)
    y = breath_like(0)
    got = maps.raw_maps(y, SAMPLE_RATE, limited)["lpc"].numpy()
    want = maps.raw_maps(y[::step], SAMPLE_RATE // step, slower)["lpc"].numpy()
    assert got.shape == want.shape == (1 + len(y) // limited.hop_length, limited.lpc_order)
    np.testing.assert_array_equal(got, want)


def test_lpc_of_a_clip_opening_in_digital_silence_is_zero_there():
    # Silent frames (a zero-padded clip) have no energy to divide by: their coefficients are 0 (as
    # the reference's), not NaN, which would also blank the whole z-scored LPC map.
    y = breath_like(0)
    y[:len(y) // 2] = 0.0
    lpc = maps.raw_maps(y, SAMPLE_RATE, FEATURES)["lpc"].numpy()  # [T, order]
    silent_frames = (len(y) // 2 - int(FEATURES.lpc_frame_s * SAMPLE_RATE) // 2) // FEATURES.hop_length
    assert np.isfinite(lpc).all()
    np.testing.assert_array_equal(lpc[:silent_frames], 0.0)
    assert np.ptp(_maps(y, FeatureConfig(maps=("lpc",)))) > 0


@pytest.mark.parametrize("graph", [True, False], ids=["graph", "eager"])
def test_log1p_keeps_float32_precision_eagerly_and_in_graph_mode(graph):
    # Grappler folds the usual (1 + x) - 1 repair, so the check runs in a tf.function; it also
    # rewrites log(1 + x) to LOG1P, which TFLite lacks, so eagerly the series itself is checked.
    x = np.concatenate([[0.0], np.logspace(-30, 6, 2000), -np.logspace(-30, np.log10(0.99), 500)])
    x = x.astype(np.float32)
    got = (tf.function(maps.log1p) if graph else maps.log1p)(tf.constant(x)).numpy()
    np.testing.assert_allclose(got, np.log1p(x.astype(np.float64)), rtol=4e-7)  # tf.math.log1p: 2.4e-7


def test_autocorrelation_and_inverse_rfft_match_numpy():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 3, 384))
    spectrum = spectral.real_fft(tf.constant(x, tf.float32), 1024)  # M >= 2 L - 1: no wrap-around
    lags = spectral.autocorrelation_of_spectrum(spectrum, 384).numpy()  # [2, 3, 384]
    want = np.apply_along_axis(lambda row: np.correlate(row, row, "full")[383:], -1, x)
    np.testing.assert_allclose(lags, want, atol=1e-5 * np.abs(want).max())
    spectrum = rng.standard_normal(33) + 1j * rng.standard_normal(33)  # DC, Nyquist imag ignored
    real, imag = (tf.constant(part, tf.float32) for part in (spectrum.real, spectrum.imag))
    got = spectral.inverse_rfft(real, imag, 33).numpy()  # [33]: the first half of 64 samples
    np.testing.assert_allclose(got, np.fft.irfft(spectrum)[:33], atol=1e-6)
    got = spectral.inverse_rfft(real, None, 20).numpy()  # a real spectrum: its imaginary part skipped
    np.testing.assert_allclose(got, np.fft.irfft(spectrum.real)[:20], atol=1e-6)


def test_smooth_fft_length_is_the_next_length_of_small_prime_factors():
    assert [spectral.smooth_fft_length(n) for n in (1, 7, 16000, 16799)] == [1, 8, 16000, 16875]


def test_autocorrelation_of_a_whole_clip_refuses_a_tflite_graph():
    # Short signals take DFT matrices (tests/test_dft.py); a whole clip's would be 1 GB.
    with pytest.raises(ValueError, match="tflite_compatible FftMode use autocorrelation_of_spectrum"):
        spectral.autocorrelation(tf.zeros([1, 16000]), 800, spectral.FftMode(tflite_compatible=True))


def test_sliding_windows_equal_tf_signal_frame():
    x = np.random.default_rng(3).standard_normal((2, 3, 50)).astype(np.float32)
    got = spectral.sliding_windows(tf.constant(x), 8, 40).numpy()  # [2, 3, 40, 8]
    np.testing.assert_array_equal(got, tf.signal.frame(x, 8, 1)[..., :40, :].numpy())
    with pytest.raises(ValueError, match="count \\+ width - 1 = 51"):
        spectral.sliding_windows(tf.constant(x), 12, 40)


def test_block_filterbank_equals_the_dense_product():
    bank = filters.mel_filterbank(SAMPLE_RATE, 2048, 128)  # [1025, 128], ~13 % inside the blocks
    blocks = spectral.filterbank_blocks(bank)
    assert blocks is not None and len(blocks) == 128 // spectral.BAND_GROUP
    assert all(not bank[:first, a:b].any() and not bank[end:, a:b].any() for first, end, a, b in blocks)
    power = np.random.default_rng(0).random((2, 5, 1025)).astype(np.float32)  # [B, T, F]
    got = spectral.apply_filterbank(tf.constant(power), bank).numpy()  # [2, 5, 128]
    np.testing.assert_allclose(got, power @ bank, rtol=1e-5, atol=1e-7)
    assert spectral.filterbank_blocks(filters.chroma_filterbank(SAMPLE_RATE, 512)) is None  # dense: one product
    silent_group = bank.copy()
    silent_group[:, :spectral.BAND_GROUP] = 0.0  # a group of all-zero filters still gives its zero columns
    got = spectral.apply_filterbank(tf.constant(power), silent_group).numpy()
    np.testing.assert_allclose(got, power @ silent_group, rtol=1e-5, atol=1e-7)


def test_noise_and_sine_differ_in_gammatone_spread():
    noise = maps.raw_maps(np.random.default_rng(1).uniform(-0.5, 0.5, SAMPLE_RATE).astype(np.float32),
                          SAMPLE_RATE, FEATURES)["gammatone"].numpy()
    tone = maps.raw_maps(sine(1000.0), SAMPLE_RATE, FEATURES)["gammatone"].numpy()
    assert noise.mean(axis=0).std() < tone.mean(axis=0).std()


def test_batched_equals_unbatched():
    batch = np.stack([breath_like(seed) for seed in range(3)])
    together = _maps(batch)
    assert together.shape == (3, 128, 63, 9)
    for i, y in enumerate(batch):
        np.testing.assert_allclose(together[i], _maps(y), atol=1e-4)


def test_direct_call_equals_inside_dataset_map():
    batch = np.stack([breath_like(seed) for seed in range(2)])
    direct = _maps(batch)
    ds = tf.data.Dataset.from_tensor_slices(batch).map(
        lambda y: maps.spectral_maps(y, SAMPLE_RATE, FEATURES))
    mapped = np.stack([x.numpy() for x in ds])
    np.testing.assert_allclose(mapped, direct, rtol=1e-3, atol=1e-4)


def test_config_selects_maps_and_their_order():
    y = breath_like(3)
    chosen = FeatureConfig(maps=("lpc", "mel"))
    out = _maps(y, chosen)
    full = _maps(y)
    assert out.shape == (128, 63, 2)
    np.testing.assert_allclose(out[..., 0], full[..., MAP_NAMES.index("lpc")], atol=1e-5)
    np.testing.assert_allclose(out[..., 1], full[..., MAP_NAMES.index("mel")], atol=1e-5)


def test_a_band_is_constant_beside_the_whole_maps_largest_value():
    # ZSCORE_RESOLUTION compares a band's spread with the largest |value| of the whole map (silence's
    # round-off spreads from MFCC's c0 into every band), not of each frame: a band varying 1e-4 of a
    # value 1000 in one frame is zeroed in every frame.
    frames = np.arange(SMALL_MAP_FRAMES)
    x = np.stack([1.0 + np.where(frames % 2, SMALL_STEP, 0.0), np.where(frames == 0, LARGE_VALUE, 0.0)], -1)
    x = x.astype(np.float32)  # [T, 2]: a band near 1 barely varying, one spike elsewhere in the map
    out = maps.zscore(tf.constant(x), per_band=True).numpy()  # [T, 2]
    np.testing.assert_array_equal(out[:, 0], 0.0)
    assert np.ptp(out[:, 1]) > 0


def test_small_maps_are_padded_with_their_minimum():
    out = _maps(breath_like(4), FeatureConfig(maps=("chroma",)))[..., 0]
    assert np.all(out[24:] == out.min())
    assert np.ptp(out[:24]) > 0


def test_maps_stay_float32_under_mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        out = maps.spectral_maps(breath_like(5), SAMPLE_RATE, FEATURES)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert out.dtype == tf.float32
    np.testing.assert_allclose(out.numpy(), _maps(breath_like(5)), atol=1e-5)


@pytest.mark.parametrize("fft_mode", [spectral.FftMode(), spectral.FftMode(tflite_compatible=True)],
                         ids=["default", "tflite"])
def test_zscored_tempogram_equals_the_whole_map_zscored_then_cut(fft_mode):
    # Its mean and std over all 384 lags come from the spectrum (Parseval), only n_mels lags are built.
    y = tf.constant(np.stack([breath_like(0), sine(), np.zeros(SAMPLE_RATE, np.float32)]))
    shared = maps._Intermediates(spectral.SpectrogramCache(y, fft_mode=fft_mode), SAMPLE_RATE, FEATURES)
    want = maps.zscore(maps.tempogram_map(shared), per_band=False)[..., :FEATURES.n_mels].numpy()
    got = maps.zscored_tempogram(shared, FEATURES.n_mels).numpy()
    assert got.shape == want.shape == (3, 63, FEATURES.n_mels)
    np.testing.assert_allclose(got, want, atol=1e-5 * np.abs(want).max())
    np.testing.assert_array_equal(got[2], 0.0)  # silence stays 0
