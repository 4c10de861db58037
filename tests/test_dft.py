"""DFTs as products with constant matrices (tfbreath.dft) against NumPy's FFT, and the
``tflite_compatible`` spectral primitives built from them against the default ones."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tfbreath import dft, filters, spectral

TFLITE = spectral.FftMode(tflite_compatible=True)

RELATIVE_ATOL = 2e-6
"""|product - float64 FFT| / the largest value. Measured worst 7e-7 (|STFT|^2 of white noise)."""

_rng = np.random.default_rng(0)


def _numpy_stft_power(y: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """librosa's |STFT|^2 (centred, zero-padded, periodic Hann) in float64. ``[B, n]`` -> ``[B, T, F]``"""
    padded = np.pad(y.astype(np.float64), [(0, 0), (n_fft // 2, n_fft // 2)])
    n_frames = 1 + y.shape[-1] // hop
    frames = np.stack([padded[:, t * hop:t * hop + n_fft] for t in range(n_frames)], 1)  # [B, T, N]
    return np.abs(np.fft.rfft(frames * filters.hann_window(n_fft), axis=-1)) ** 2


def _assert_close(got, want) -> None:
    worst = float(np.abs(np.asarray(got) - want).max() / np.abs(want).max())
    assert worst <= RELATIVE_ATOL, f"relative error {worst:.2e}"


def test_real_dft_equals_rfft_of_the_zero_padded_signal():
    x = _rng.standard_normal((2, 3, 300))
    real, imag = dft.real_dft(tf.constant(x, tf.float32), 512)
    want = np.fft.rfft(x, 512)
    _assert_close(real, want.real)
    _assert_close(imag, want.imag)
    real, _ = dft.real_dft(tf.constant(x, tf.float32), 512, n_bins=40)
    assert real.shape == (2, 3, 40)
    with pytest.raises(ValueError, match="longer than fft_length 256"):
        dft.real_dft(tf.constant(x, tf.float32), 256)


@pytest.mark.parametrize("n_fft, hop, n_bins", [(2048, 256, 256), (2048, 256, 1025), (512, 256, 257), (512, 160, 65)],
                         ids=["8-blocks-band", "8-blocks-all", "2-blocks", "gcd-blocks"])
def test_blocked_stft_power_equals_the_frame_by_frame_fft(n_fft, hop, n_bins):
    y = _rng.standard_normal((2, 4000)).astype(np.float32)
    padded = np.pad(y, [(0, 0), (n_fft // 2, n_fft // 2)])
    n_frames = 1 + y.shape[-1] // hop
    got = dft.stft_power(tf.constant(padded), n_fft, hop, n_frames, n_bins)
    assert got.shape == (2, n_frames, n_bins)
    _assert_close(got, _numpy_stft_power(y, n_fft, hop)[..., :n_bins])


def test_stft_by_blocks_needs_few_blocks_per_frame_and_whole_frames():
    assert dft.block_layout(2048, 256) == (256, 8, 1)
    assert dft.block_layout(512, 160) == (32, 16, 5)
    assert not dft.blocked(512, 1)  # 512 one-sample blocks per frame
    with pytest.raises(ValueError, match="need 2304 samples, got 2000"):
        dft.stft_power(tf.zeros([1, 2000]), 2048, 256, 2, 10)


def test_dft_autocorrelation_equals_numpy_correlate():
    x = _rng.standard_normal((2, 5, 384))
    got = dft.autocorrelation(tf.constant(x, tf.float32), 384)
    want = np.apply_along_axis(lambda row: np.correlate(row, row, "full")[383:], -1, x)
    _assert_close(got, want)
    assert dft.autocorrelation_length(384, 384) == 768  # even, >= 2 L - 1


def test_tflite_stft_power_equals_the_default_and_zeroes_dead_bins():
    y = _rng.standard_normal((3, 2000)).astype(np.float32)
    default = spectral.stft_power(y, 2048, 256).numpy()
    portable = spectral.stft_power(y, 2048, 256, TFLITE, n_bins=100).numpy()  # blocked
    assert portable.shape == default.shape
    _assert_close(portable[..., :100], default[..., :100])
    np.testing.assert_array_equal(portable[..., 100:], 0.0)


def test_tflite_stft_power_frame_by_frame_where_blocks_do_not_pay():
    y = _rng.standard_normal((1, 600)).astype(np.float32)
    default = spectral.stft_power(y, 512, 1).numpy()  # 512 blocks per frame: each frame's own product
    _assert_close(spectral.stft_power(y, 512, 1, TFLITE).numpy(), default)


def test_tflite_autocorrelation_of_short_signals_equals_the_default():
    x = _rng.standard_normal((4, 384)).astype(np.float32)
    _assert_close(spectral.autocorrelation(x, 384, TFLITE), spectral.autocorrelation(x, 384).numpy())


def test_fir_block_matrix_holds_the_reversed_taps_on_its_band():
    taps = np.arange(1.0, 8.0, dtype=np.float32)  # 7 taps: blocks of ceil(6 / 5) = 2 samples
    matrix = spectral.fir_block_matrix(taps)
    assert matrix.shape == (spectral.FIR_SPAN_BLOCKS * 2, 2)
    np.testing.assert_array_equal(matrix[:7, 0], taps[::-1])
    np.testing.assert_array_equal(matrix[1:8, 1], taps[::-1])
    y = _rng.standard_normal((2, 37)).astype(np.float32)  # not a whole number of blocks
    want = np.stack([np.convolve(row, taps, "same") for row in y])
    np.testing.assert_allclose(spectral.fir_filter(y, taps).numpy(), want, atol=1e-5)
    with pytest.raises(ValueError, match="odd number of taps"):
        spectral.fir_block_matrix(np.ones(4, np.float32))


def test_real_dft_of_all_bins_splits_into_even_and_odd_samples():
    x = _rng.standard_normal((2, 3, 383))  # odd length: the odd half gets a zero
    assert dft.splits(383, 768, 385) and not dft.splits(383, 768, 40) and not dft.splits(383, 770, 386)
    signal = tf.constant(x, tf.float32)
    for got in (dft.real_dft(signal, 768), dft.split_real_dft(signal, 768)):
        want = np.fft.rfft(x, 768)
        assert got[0].shape == (2, 3, 385)
        _assert_close(got[0], want.real)
        _assert_close(got[1], want.imag)


def test_hop_one_windows_are_the_sliding_windows():
    x = _rng.standard_normal((2, 50)).astype(np.float32)
    got = dft.hop_one_windows(tf.constant(x), 8, 40).numpy()  # [2, 40, 8]
    np.testing.assert_array_equal(got, tf.signal.frame(x, 8, 1)[:, :40].numpy())


@pytest.mark.parametrize("width, count", [(384, 63), (8, 10)])
def test_sliding_hann_power_equals_the_fft_of_each_weighted_window(width, count):
    x = _rng.standard_normal((2, count + width - 1)).astype(np.float32)  # the shortest signal it takes
    got = dft.sliding_hann_power(tf.constant(x), width, count)
    frames = np.stack([x[:, t:t + width] for t in range(count)], 1)  # [2, count, W]
    frames = frames * filters.hann_window(width).astype(np.float64)
    _assert_close(got, np.abs(np.fft.rfft(frames, 2 * width, axis=-1)) ** 2)
    with pytest.raises(ValueError, match="need an even width"):
        dft.sliding_hann_power(tf.constant(x), width - 1, count)


def test_lags_of_power_by_a_product_equal_tf_inverse_fft():
    power = np.abs(np.fft.rfft(_rng.standard_normal((3, 200)), 512)) ** 2  # [3, 257]
    default = spectral.lags_of_power(tf.constant(power, tf.float32), 512, 100).numpy()
    _assert_close(spectral.lags_of_power(tf.constant(power, tf.float32), 512, 100, TFLITE), default)
    _assert_close(default, np.fft.irfft(power, 512)[:, :100])
    with pytest.raises(ValueError, match="even fft_length, got 513"):
        spectral.lags_of_power(tf.constant(power, tf.float32), 513, 100, TFLITE)


def test_tflite_hann_window_power_equals_the_default():
    x = _rng.standard_normal((2, 3, 100)).astype(np.float32)  # leading axes kept
    default = spectral.hann_window_power(x, 32, 60).numpy()
    assert default.shape == (2, 3, 60, 33)
    _assert_close(spectral.hann_window_power(x, 32, 60, TFLITE), default)


def test_autocorrelation_does_not_wrap_when_its_least_length_is_already_smooth():
    x = np.random.default_rng(0).standard_normal((2, 10))  # L + n_lags - 1 = 16 (5-smooth): no spare room
    got = spectral.autocorrelation(tf.constant(x, tf.float32), 7).numpy()
    want = np.stack([np.correlate(row, row, "full")[9:16] for row in x])
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_sliding_windows_accept_the_shortest_signal():
    x = tf.reshape(tf.range(10, dtype=tf.float32), [1, 10])
    windows = spectral.sliding_windows(x, 4, 7).numpy()  # count + width - 1 = 10 samples exactly
    np.testing.assert_array_equal(windows[0, -1], [6, 7, 8, 9])
