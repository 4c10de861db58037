"""Per-recording preprocessing, in-graph: decode -> resample -> Butterworth band -> [-1, 1].

The paper (section II): "we downsample the recordings to 4 kHz, and apply a 5-th order
Butterworth band-pass filter to preserve frequencies in the range of 50-2000 Hz", then
normalise to (-1, 1). In that order, here:

1. ``tfbreath.audio.decode_wav`` decodes any 16/24/32-bit PCM or float WAV and resamples it
   in-graph to ``config.sample_rate`` (4 kHz). Its resampler's anti-aliasing low-pass removes
   everything above the new Nyquist frequency (a 2.5 kHz tone in a 44.1 kHz file comes out
   about 85 dB down).
2. The Butterworth filter is designed once, with ``scipy.signal.butter`` as second-order
   sections, at ``config.sample_rate``. A band top at or above that Nyquist frequency (the
   default: 2000 Hz at 4 kHz, where the top edge would sit exactly at Nyquist, which
   ``butter`` rejects) makes it a high-pass at ``band_low_hz``; step 1's anti-aliasing filter
   is then the band's top. Below Nyquist (say ``sample_rate = 8000``) it is a true band-pass.
3. The filter runs zero-phase (like ``scipy.signal.sosfiltfilt``: |H|^2, no delay, so cycle
   boundaries stay put) as one FFT product over the whole recording, whose rFFT-bin response
   is evaluated in-graph from the sections. The recording is first extended at both ends by
   its mirror image over ``EDGE_PAD_S`` (``sosfiltfilt``'s ``padtype="even"``) so the circular
   product does not wrap the end into the start. (The odd extension, ``sosfiltfilt``'s default,
   shifts the extension by twice the end sample; on a tonal or noisy end that step rings
   through the high-pass into a spike that would then set the peak normalisation.)
4. The filtered recording is divided by its peak |x|: one scale per recording, so the cycles
   of a recording keep their relative loudness and smart padding joins them seamlessly.

Cycles are then cut out of the preprocessed recording (``cut_cycle``).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.signal
import tensorflow as tf

from tfbreath import audio
from tfbreath.icbhi.config import AudioConfig
from tfbreath.icbhi.reader import Cycle

EDGE_PAD_S = 0.25
"""Mirror padding at each end before filtering; the 50 Hz high-pass's impulse response
has decayed below 1e-4 of its peak well within it at 4 kHz."""

_LOG_2 = math.log(2.0)


@functools.lru_cache(maxsize=None)
def filter_sos(config: AudioConfig) -> np.ndarray:
    """The Butterworth filter as second-order sections at ``config.sample_rate``. ``[sections, 6]``

    Band-pass ``[band_low_hz, band_high_hz]``, or a high-pass at ``band_low_hz`` when the band top
    is at or above the Nyquist frequency (``config.highpass_only``; see the module docstring).
    """
    if config.highpass_only:
        return scipy.signal.butter(config.filter_order, config.band_low_hz, btype="highpass",
                                   fs=config.sample_rate, output="sos")
    return scipy.signal.butter(config.filter_order, [config.band_low_hz, config.band_high_hz], btype="band",
                               fs=config.sample_rate, output="sos")


def sos_power_response(sos: np.ndarray, fft_length: tf.Tensor) -> tf.Tensor:
    """|H(e^{jw})|^2 of the sections at the rFFT bins w_k = 2 pi k / fft_length. ``[fft_length // 2 + 1]``

    Each section is (b0 + b1 z^-1 + b2 z^-2) / (a0 + a1 z^-1 + a2 z^-2); evaluated in float64.
    """
    with tf.name_scope("sos_power_response"):
        fft_length = tf.cast(fft_length, tf.int32)
        bins = tf.cast(tf.range(fft_length // 2 + 1), tf.float64)  # [K]
        omega = 2.0 * np.pi * bins / tf.cast(fft_length, tf.float64)  # [K]
        cos = tf.stack([tf.ones_like(omega), tf.cos(omega), tf.cos(2.0 * omega)])  # [3, K]
        sin = tf.stack([tf.zeros_like(omega), tf.sin(omega), tf.sin(2.0 * omega)])  # [3, K]
        coefficients = tf.constant(np.asarray(sos, np.float64))  # [S, 6]

        def power(poly: tf.Tensor) -> tf.Tensor:  # [S, 3] -> [S, K]
            return tf.square(poly @ cos) + tf.square(poly @ sin)

        ratio = power(coefficients[:, :3]) / power(coefficients[:, 3:])  # [S, K]
        return tf.cast(tf.reduce_prod(ratio, axis=0), tf.float32)  # [K]


def _power_of_two_at_least(length: tf.Tensor) -> tf.Tensor:
    """Smallest power of two >= ``length`` (> 0), in-graph. ``[] int32``"""
    exponent = tf.math.ceil(tf.math.log(tf.cast(length, tf.float64)) / _LOG_2)
    size = tf.cast(tf.pow(tf.constant(2.0, tf.float64), exponent), tf.int32)
    return tf.where(size < length, 2 * size, size)  # guards log round-off


def zero_phase_filter(y: tf.Tensor, sos: np.ndarray, edge_pad: int) -> tf.Tensor:
    """Filter forward and backward (|H|^2, zero phase) by one FFT product. ``[n] -> [n]``

    Matches ``scipy.signal.sosfiltfilt(sos, y, padtype="even", padlen=edge_pad)`` except within
    the filter's settling time of the two ends. Signals shorter than 2 samples pass unchanged.
    """
    with tf.name_scope("zero_phase_filter"):
        y = tf.convert_to_tensor(y, tf.float32)
        n = tf.shape(y)[0]

        def filtered() -> tf.Tensor:
            pad = tf.minimum(edge_pad, n - 1)
            extended = tf.pad(y, [[pad, pad]], mode="REFLECT")  # [n + 2 pad], scipy's "even" extension
            fft_length = _power_of_two_at_least(n + 2 * pad)
            spectrum = tf.signal.rfft(extended, [fft_length])  # [M/2 + 1]
            gain = tf.complex(sos_power_response(sos, fft_length), 0.0)  # [M/2 + 1]
            out = tf.signal.irfft(spectrum * gain, [fft_length])  # [M]
            return out[pad:pad + n]  # [n]

        return tf.cond(n >= 2, filtered, lambda: y)


def normalize_peak(y: tf.Tensor) -> tf.Tensor:
    """Scale to a peak |x| of 1 (all-zero stays zero). ``[n] -> [n]`` in [-1, 1]"""
    return tf.math.divide_no_nan(y, tf.reduce_max(tf.abs(y)))


@tf.autograph.experimental.do_not_convert
def preprocess_wav(contents: tf.Tensor, config: AudioConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """A whole WAV file's bytes -> the preprocessed recording, in-graph. ``[] -> ([n] float32, [] int32)``

    Returns ``(audio, status)`` as ``tfbreath.audio.decode_wav`` does: audio at
    ``config.sample_rate``, band-filtered and peak-normalised; empty when ``status != OK``.
    """
    with tf.name_scope("icbhi_preprocess"):
        decoded, status = audio.decode_wav(contents, config.sample_rate)  # [n] at sample_rate
        edge_pad = int(round(EDGE_PAD_S * config.sample_rate))
        return normalize_peak(zero_phase_filter(decoded, filter_sos(config), edge_pad)), status


@tf.autograph.experimental.do_not_convert
def read_recording(path: tf.Tensor, config: AudioConfig) -> tuple[tf.Tensor, tf.Tensor]:
    """``tf.io.read_file`` + ``preprocess_wav``, for ``Dataset.map``. ``[] string -> ([n], [])``"""
    return preprocess_wav(tf.io.read_file(path), config)


@functools.lru_cache(maxsize=None)
def _traced_reader(config: AudioConfig) -> tf.types.experimental.PolymorphicFunction:
    """``read_recording`` as one tf.function per config, so every dataset reuses one trace."""
    return tf.function(lambda path: read_recording(path, config), input_signature=[tf.TensorSpec([], tf.string)])


def recording_dataset(paths: list[str], config: AudioConfig) -> tf.data.Dataset:
    """``(audio [n], status [])`` per path, in order, preprocessed in parallel."""
    ds = tf.data.Dataset.from_tensor_slices(tf.constant(paths, tf.string))
    return ds.map(_traced_reader(config), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def cycle_bounds(cycle: Cycle, sample_rate: int, length: int) -> tuple[int, int]:
    """``[start, end)`` sample indices of a cycle, clipped to a recording of ``length`` samples."""
    start = min(int(round(cycle.start_s * sample_rate)), length)
    end = min(int(round(cycle.end_s * sample_rate)), length)
    return start, max(end, start)


def cut_cycle(recording: np.ndarray, cycle: Cycle, sample_rate: int) -> np.ndarray:
    """The samples of one cycle from a preprocessed recording. ``[n] -> [end - start]``"""
    start, end = cycle_bounds(cycle, sample_rate, len(recording))
    return recording[start:end]
