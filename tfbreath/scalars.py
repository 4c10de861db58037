"""The 39 scalar features of the breathing-phase paper, computed in-graph.

``scalar_features(y)`` maps waveforms ``[..., n]`` to ``[..., 39]`` float32 with plain TF ops
(usable inside ``tf.data.Dataset.map``, no ``tf.py_function``). The ground truth is the
parity tests' literal NumPy/librosa implementation; the order is ``config.SCALAR_NAMES``:

====  ===========================================================================
 0-7  RMS and zero-crossing rate (frame 2048, hop 256): mean, std, max, min of each
 8-10 spectral centroid: mean/(sr/2), std/(sr/2), skewness
11-12 spectral bandwidth: mean/(sr/2), std/(sr/2)
13-14 spectral rolloff (85 %, librosa's default hop 512): mean/(sr/2), std/(sr/2)
15-16 spectral flatness: mean, std
17-18 spectral contrast (7 bands x frames, dB): mean, std
19-24 Hilbert envelope: mean, std, mean/(std+eps), peak count, peak-height mean, std
25    energy share below 1 kHz (STFT n_fft 512)
26-28 spectral flux of the dB mel spectrogram (128 mels): mean, std, max
29-32 waveform skewness, excess kurtosis, 90th and 10th percentile of |y|
33-35 normalised autocorrelation at 10 ms and 20 ms, lag (s) of its minimum below 50 ms
36-38 skewness of bandwidth, rolloff and flatness
====  ===========================================================================

The paper's published list stops at 36; indices 36-38 complete it to the stated 39 with the
skewness of the three other spectral-shape descriptors (centroid already has one). They are
at the END so that indices 0-35 follow the published order.

The n_fft-2048/hop-256 magnitude STFT is computed once and shared by centroid, bandwidth,
flatness, contrast, rolloff (every second frame = hop 512) and the mel flux. Every constant
(frequencies, filterbank, contrast band edges and quantile counts, the Hilbert kernel's
spectrum) is built once in NumPy. The FFTs follow the cache's ``spectral.FftMode``: with
``tflite_compatible`` every op has a TFLite builtin kernel; without, the Hilbert envelope and the
autocorrelation use TF's cheaper FFTs of any length (see ``tfbreath.spectral``).

Deviations from the reference (all measured on 512 real clips: every correlation >= 0.9999999,
worst relative error 3.4e-4 (contrast std), peak counts identical):

* Degenerate input: an all-zero clip gives finite values. Where SciPy returns NaN (skewness /
  kurtosis of a constant series, autocorrelation normalised by zero energy) this returns 0. So
  does every constant series: SciPy's float32 mean of one (a DC clip's) can round off into a
  skewness of +-1, the moments here are taken about its first value and cannot.
* float32 throughout (TF's FFT is float32; NumPy's is float64 then rounded): a pure tone's
  ~-140 dB FFT noise floor lifts its bandwidth by a few Hz, and a pure tone's Hilbert envelope
  is constant up to rounding, so its mean/std ratio and peak picks are rounding noise in both.
* find_peaks plateaus longer than two samples are not detected (never seen on float envelopes).
"""

from __future__ import annotations

import functools

import librosa
import numpy as np
import tensorflow as tf

from tfbreath import filters, spectral

LIBROSA_N_FFT = 2048
"""librosa's default STFT size, used by every librosa feature of the recipe."""

RMS_FRAME_LENGTH = LIBROSA_N_FFT
"""librosa.feature.rms / zero_crossing_rate default frame length."""

ZCR_THRESHOLD = 1e-10
"""librosa.zero_crossings: samples with |x| <= threshold count as zero (non-negative)."""

ROLL_PERCENT = 0.85
ROLLOFF_HOP = LIBROSA_N_FFT // 4
"""spectral_rolloff is called without hop_length in the recipe: librosa's default n_fft // 4."""

CONTRAST_BLOCK = 8
"""Bins per block of the exact block-pruned top-k in the contrast peaks and valleys."""

FLATNESS_AMIN = 1e-10
"""spectral_flatness's floor on power."""

CONTRAST_FMIN = 200.0
N_BANDS = 6
QUANTILE = 0.02

PEAK_DISTANCE_S = 0.1
"""find_peaks ``distance = sr // 10``."""

LOW_FREQ_N_FFT = 512
LOW_FREQ_CUTOFF_HZ = 1000.0

N_MELS = 128

PRESELECT_STEP = 8
"""Stride of the subsample whose order statistics bracket the wanted ones (``_largest_pair``)."""

PRESELECT_BRACKET = 32
"""Subsample ranks from the wanted rank (k / step) to either end of the bracket. On the 4,200
real clips (train and test) it misses 1 row at p90 and 12 (0.3 %) at p10; those search wider."""

AUTOCORR_LAG_SHORT_S = 0.01
AUTOCORR_LAG_LONG_S = 0.02
AUTOCORR_SEARCH_S = 0.05
"""Autocorrelation read at sr//100 and sr//50 lags; its argmin is searched over sr//20 lags."""

FLOAT32_RESOLUTION = float(np.finfo(np.float32).resolution)
"""scipy.stats.skew/kurtosis call a series constant when var <= (resolution * mean)**2."""

EPS = spectral.EPS



def _samples(sample_rate: int, seconds: float) -> int:
    """``sr // k`` for ``seconds = 1 / k``, robust to float rounding (0.05 * 16000 = 800.0000001)."""
    return int(np.floor(sample_rate * seconds + 1e-9))


@functools.lru_cache(maxsize=None)
def contrast_bands(sample_rate: int, n_fft: int = LIBROSA_N_FFT, fmin: float = CONTRAST_FMIN,
                   n_bands: int = N_BANDS, quantile: float = QUANTILE) -> tuple[tuple[int, int, int], ...]:
    """librosa.feature.spectral_contrast's sub-bands as ``(first_bin, end_bin, k)`` per band.

    Band ``b`` spans octave ``[fmin 2**(b-1), fmin 2**b]`` (band 0 starts at 0 Hz), widened by
    one bin below (b > 0), by everything above for the last band, and minus its top bin for the
    others; ``k = max(1, rint(quantile * size_before_dropping_the_top_bin))`` bins are averaged
    for the peak and the valley. The bins of every band are contiguous.
    """
    freq = librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft)
    edges = np.zeros(n_bands + 2)
    edges[1:] = fmin * (2.0 ** np.arange(n_bands + 1))
    if np.any(edges[:-1] >= 0.5 * sample_rate):
        raise ValueError(f"contrast bands exceed Nyquist for sample_rate {sample_rate}")
    bands = []
    for band, (f_low, f_high) in enumerate(zip(edges[:-1], edges[1:])):
        member = (freq >= f_low) & (freq <= f_high)
        inside = np.flatnonzero(member)
        if band > 0:
            member[inside[0] - 1] = True
        if band == n_bands:
            member[inside[-1] + 1:] = True
        k = int(max(np.rint(quantile * member.sum()), 1))
        bins = np.flatnonzero(member)
        if band < n_bands:
            bins = bins[:-1]
        assert np.all(np.diff(bins) == 1), "contrast band bins must be contiguous"
        bands.append((int(bins[0]), int(bins[-1]) + 1, k))
    return tuple(bands)


@functools.lru_cache(maxsize=None)
def moment_basis(sample_rate: int, n_fft: int) -> np.ndarray:
    """Columns ``[1, f, f^2]`` over the rFFT bins, for spectral moments by one product. ``[F, 3]``"""
    freq = filters.fft_frequencies(sample_rate, n_fft).astype(np.float64)
    return np.stack([np.ones_like(freq), freq, freq ** 2], axis=1).astype(np.float32)


def _mean_std_max_min(x: tf.Tensor) -> list[tf.Tensor]:
    """Four statistics over the last axis. ``[B, T]`` -> 4 x ``[B]``"""
    return [tf.reduce_mean(x, -1), tf.math.reduce_std(x, -1), tf.reduce_max(x, -1), tf.reduce_min(x, -1)]


def _skew_kurtosis(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """scipy.stats.skew and kurtosis (biased, Fisher) over the last axis; 0 for a constant series.

    ``[B, m]`` -> 2 x ``[B]``
    """
    with tf.name_scope("skew_kurtosis"):
        # Moments of x - x[0]: a float32 mean of x itself is off by round-off growing with m (a
        # constant 0.1 over 16000 samples: 2.4e-7), enough alone to fail the test for a constant.
        shift = x[..., :1]  # [B, 1]
        shifted = x - shift  # [B, m]  exactly 0 for a constant series
        shifted_mean = tf.reduce_mean(shifted, -1, keepdims=True)  # [B, 1]
        mean = shift + shifted_mean  # [B, 1]
        dev = shifted - shifted_mean  # [B, m]
        dev2 = tf.square(dev)  # [B, m]
        m2 = tf.reduce_mean(dev2, -1)  # [B]
        m3 = tf.reduce_mean(dev2 * dev, -1)  # [B]
        m4 = tf.reduce_mean(tf.square(dev2), -1)  # [B]
        constant = m2 <= tf.square(FLOAT32_RESOLUTION * mean[..., 0])  # [B]
        safe_m2 = tf.where(constant, tf.ones_like(m2), m2)  # [B]
        skew = tf.where(constant, tf.zeros_like(m3), m3 / tf.pow(safe_m2, 1.5))  # [B]
        kurtosis = tf.where(constant, tf.zeros_like(m4), m4 / tf.square(safe_m2) - 3.0)  # [B]
        return skew, kurtosis


def _frame_sums(x: tf.Tensor, n_frames: int, frame_length: int, hop_length: int) -> tf.Tensor:
    """Sum of ``x`` over frames ``[t hop, t hop + frame_length)``. ``[B, m]`` -> ``[B, T]``

    When the hop divides the frame, sums per hop block are added ``frame_length // hop`` at a
    time, which avoids materialising the ``[B, T, frame_length]`` frames.
    """
    with tf.name_scope("frame_sums"):
        if frame_length % hop_length:
            frames = tf.signal.frame(x, frame_length, hop_length, axis=-1)[..., :n_frames, :]  # [B, T, L]
            return tf.reduce_sum(frames, -1)  # [B, T]
        blocks_per_frame = frame_length // hop_length
        n_blocks = n_frames - 1 + blocks_per_frame
        blocks = tf.reshape(x[:, : n_blocks * hop_length], [tf.shape(x)[0], n_blocks, hop_length])  # [B, T+k-1, hop]
        block_sums = tf.reduce_sum(blocks, -1)  # [B, T + k - 1]
        framed = tf.signal.frame(block_sums, blocks_per_frame, 1, axis=-1)  # [B, T, k]
        return tf.reduce_sum(framed, -1)  # [B, T]


def _rms(y: tf.Tensor, n_frames: int, hop_length: int) -> tf.Tensor:
    """librosa.feature.rms (zero-padded centred frames). ``[B, n]`` -> ``[B, T]``"""
    with tf.name_scope("rms"):
        padded = spectral.pad_edges(y, RMS_FRAME_LENGTH // 2, "constant")  # [B, n + L]
        energy = _frame_sums(tf.square(padded), n_frames, RMS_FRAME_LENGTH, hop_length)  # [B, T]
        return tf.sqrt(energy / RMS_FRAME_LENGTH)  # [B, T]


def _zero_crossing_rate(y: tf.Tensor, n_frames: int, hop_length: int) -> tf.Tensor:
    """librosa.feature.zero_crossing_rate (edge-padded frames). ``[B, n]`` -> ``[B, T]``

    A crossing at sample i of a frame (i >= 1) is a sign-bit change between samples i-1 and i,
    after snapping |x| <= 1e-10 to +0; the first sample of each frame never counts.
    """
    with tf.name_scope("zero_crossing_rate"):
        padded = spectral.pad_edges(y, RMS_FRAME_LENGTH // 2, "edge")  # [B, m = n + L]
        negative = padded < spectral.broadcast_like(-ZCR_THRESHOLD, padded)  # [B, m]
        change = tf.cast(tf.not_equal(negative[:, 1:], negative[:, :-1]), tf.float32)  # [B, m - 1]
        change = tf.pad(change, [[0, 0], [1, 0]])  # [B, m]  change[j]: between samples j-1 and j
        counts = _frame_sums(change, n_frames, RMS_FRAME_LENGTH, hop_length)  # [B, T]
        first = change[:, : (n_frames - 1) * hop_length + 1 : hop_length]  # [B, T]  frame-start samples
        return (counts - first) / RMS_FRAME_LENGTH  # [B, T]


def _centroid_bandwidth(magnitude: tf.Tensor, sample_rate: int) -> tuple[tf.Tensor, tf.Tensor]:
    """librosa spectral_centroid and spectral_bandwidth (p=2) in Hz. ``[B, T, F]`` -> 2 x ``[B, T]``

    Both come from one product with the constant moment basis ``[1, f, f^2]``:
    ``bandwidth^2 = sum S (f - c)^2 / norm = (M2 - 2 c M1 + c^2 M0) / norm``.
    """
    with tf.name_scope("centroid_bandwidth"):
        moments = spectral.apply_filterbank(magnitude, moment_basis(sample_rate, LIBROSA_N_FFT))  # [B, T, 3]
        total, first, second = tf.unstack(moments, axis=-1)  # 3 x [B, T]
        # librosa.util.normalize leaves columns with a (near) zero L1 norm unscaled.
        norm = tf.where(total < np.finfo(np.float32).tiny, tf.ones_like(total), total)  # [B, T]
        centroid = first / norm  # [B, T]
        spread = (second - 2.0 * centroid * first + tf.square(centroid) * total) / norm  # [B, T]
        return centroid, tf.sqrt(tf.maximum(spread, 0.0))  # 2 x [B, T]


def _rolloff(magnitude: tf.Tensor, sample_rate: int, live_bins: int) -> tf.Tensor:
    """librosa spectral_rolloff: lowest bin frequency holding ROLL_PERCENT of |S|. ``[B, T, F]`` -> ``[B, T]``

    The rolloff bin is the first whose running sum reaches the threshold, i.e. the number of
    bins whose running sum stays below it. Only the first ``live_bins`` bins can be nonzero
    (``SpectrogramCache.live_bins``): beyond them the running sum is the total, never below it,
    so they are not searched.
    """
    with tf.name_scope("rolloff"):
        freq = tf.constant(filters.fft_frequencies(sample_rate, LIBROSA_N_FFT))  # [F]
        if live_bins < magnitude.shape[-1]:
            magnitude = magnitude[..., :live_bins]  # [B, T, F']
        n_bins = magnitude.shape[-1]
        running = tf.cumsum(magnitude, axis=-1)  # [B, T, F]
        threshold = ROLL_PERCENT * running[..., -1:]  # [B, T, 1]
        below = tf.reduce_sum(tf.cast(running < spectral.broadcast_like(threshold, running), tf.int32), -1)  # [B, T]
        return tf.gather(freq, tf.minimum(below, n_bins - 1))  # [B, T]


def _flatness(power: tf.Tensor, live_bins: int) -> tf.Tensor:
    """librosa spectral_flatness on power: geometric / arithmetic mean. ``[B, T, F]`` -> ``[B, T]``

    The ratio is scale-free, so each frame is first divided by its peak: a frame that is all
    floor (silence) is then all ones and its flatness exactly 1 whatever order a kernel sums in
    (TF and TFLite differ), which keeps the flatness of silence an exactly constant series.
    Bins from ``live_bins`` up are zero (``SpectrogramCache.live_bins``): each is the floor, whose
    log and share are added once per frame instead of taken per bin (the log was 0.27 ms of
    a TFLite graph's 6 ms).
    """
    with tf.name_scope("flatness"):
        n_bins, dead = power.shape[-1], power.shape[-1] - live_bins
        floored = tf.maximum(power[..., :live_bins] if dead else power, FLATNESS_AMIN)  # [B, T, F']
        peak = tf.reduce_max(floored, -1, keepdims=True)  # [B, T, 1]  >= the floor of the dead bins
        relative = floored / peak  # [B, T, F']  in (0, 1]
        log_sum = tf.reduce_sum(tf.math.log(relative), -1)  # [B, T]
        share_sum = tf.reduce_sum(relative, -1)  # [B, T]
        if dead:
            floor = FLATNESS_AMIN / peak[..., 0]  # [B, T]  a dead bin's relative value
            log_sum += dead * tf.math.log(floor)  # [B, T]
            share_sum += dead * floor  # [B, T]
        return tf.exp(log_sum / n_bins) / (share_sum / n_bins)  # [B, T]


def _mean_of_extremes(band: tf.Tensor, k: int, largest: bool) -> tf.Tensor:
    """Mean of the k largest (or smallest) values of the last axis. ``[B, T, W]`` -> ``[B, T]``

    Exact shortcut for small k: the k extreme values lie in the k blocks (of CONTRAST_BLOCK
    bins) with the most extreme block maxima, so only those k blocks are searched. Measured: 2-6 %
    more clips/s for the whole feature pipeline than one top-k; kept with the block filterbank so
    that the plain rewrites cost under 10 % in all (benchmarks/RESULTS.md, "speed tricks").
    """
    sign = 1.0 if largest else -1.0
    values = sign * band  # [B, T, W]  largest of values = wanted extremes
    width = band.shape[-1]
    if k == 1:
        return sign * tf.reduce_max(values, -1)  # [B, T]
    n_blocks = -(-width // CONTRAST_BLOCK)
    if n_blocks <= 2 * k:
        return sign * tf.reduce_mean(tf.math.top_k(values, k).values, -1)  # [B, T]
    padded = tf.pad(values, [[0, 0], [0, 0], [0, n_blocks * CONTRAST_BLOCK - width]],
                    constant_values=-np.inf)  # [B, T, K*C]
    blocks = tf.reshape(padded, tf.concat([tf.shape(band)[:2], [n_blocks, CONTRAST_BLOCK]], 0))  # [B, T, K, C]
    _, best_blocks = tf.math.top_k(tf.reduce_max(blocks, -1), k)  # [B, T, k]
    pool = tf.gather(blocks, best_blocks, batch_dims=2)  # [B, T, k, C]
    pool = tf.reshape(pool, tf.concat([tf.shape(band)[:2], [k * CONTRAST_BLOCK]], 0))  # [B, T, k*C]
    return sign * tf.reduce_mean(tf.math.top_k(pool, k).values, -1)  # [B, T]


def _contrast(magnitude: tf.Tensor, sample_rate: int) -> tf.Tensor:
    """librosa spectral_contrast (dB of peak minus dB of valley). ``[B, T, F]`` -> ``[B, T, bands]``"""
    with tf.name_scope("contrast"):
        peaks, valleys = [], []
        for first, end, k in contrast_bands(sample_rate):
            band = magnitude[..., first:end]  # [B, T, width]
            peaks.append(_mean_of_extremes(band, k, largest=True))  # [B, T]
            valleys.append(_mean_of_extremes(band, k, largest=False))  # [B, T]
        peak = tf.stack(peaks, -1)  # [B, T, bands]
        valley = tf.stack(valleys, -1)  # [B, T, bands]
        # power_to_db(ref=1.0, top_db=80) of each whole [bands, T] array, as librosa does.
        return (spectral.power_to_db(peak, ref_max=False)
                - spectral.power_to_db(valley, ref_max=False))  # [B, T, bands]


def _mel_flux(mel_db: tf.Tensor) -> tf.Tensor:
    """L2 frame-to-frame change of power_to_db(mel, ref=max), from the dB mel re 1.0 (the
    onset envelope's). ``[B, T, M]`` -> ``[B, T - 1]``

    ref=max only subtracts each clip's peak from every value, and floors them top_db below it
    as ref=1.0 does; the differences between frames cancel that constant.
    """
    with tf.name_scope("mel_flux"):
        step = mel_db[:, 1:] - mel_db[:, :-1]  # [B, T - 1, M]
        return tf.sqrt(tf.reduce_sum(tf.square(step), -1))  # [B, T - 1]


def padded_spectrum(y: tf.Tensor, fft_mode: spectral.FftMode) -> tuple[tf.Tensor, tf.Tensor]:
    """``real_fft`` of the clips zero-padded to a power of two >= 2n - 1. ``[B, n]`` -> 2 x ``[B, M/2 + 1]``

    Long enough for the Hilbert transform's circular convolution and for every autocorrelation
    lag below n, so the two share it in a ``tflite_compatible`` mode.
    """
    return spectral.real_fft(y, spectral.fft_length_at_least(2 * y.shape[-1] - 1), fft_mode)


def _hilbert_transform_of_padded(y: tf.Tensor, spectrum: tuple[tf.Tensor, tf.Tensor],
                                 fft_mode: spectral.FftMode) -> tf.Tensor:
    """scipy.signal.hilbert(y).imag from ``padded_spectrum(y)``, power-of-two FFTs only. ``[B, n]`` -> ``[B, n]``

    scipy's analytic signal ifft(fft(y) h) (h: 1 at DC and Nyquist, 2 on positive, 0 on negative
    frequencies) is y plus i H(y), H(y) the length-n circular convolution of y with the kernel
    imag(ifft(h)). A power-of-two FFT at least 2n - 1 long holds that convolution exactly once
    the kernel is laid out circularly (``filters.hilbert_kernel_spectrum``), so the result is
    scipy's own length-n transform, edges included.
    """
    with tf.name_scope("hilbert_transform_of_padded"):
        n = y.shape[-1]
        real, imag = spectrum  # 2 x [B, M/2 + 1]
        kernel_real, kernel_imag = filters.hilbert_kernel_spectrum(n, 2 * (real.shape[-1] - 1))  # 2 x [M/2 + 1]
        product_real = real * kernel_real - imag * kernel_imag  # [B, M/2 + 1]
        product_imag = real * kernel_imag + imag * kernel_real  # [B, M/2 + 1]
        return spectral.inverse_rfft(product_real, product_imag, n, fft_mode)  # [B, n]


def _hilbert_transform(y: tf.Tensor, fft_mode: spectral.FftMode) -> tf.Tensor:
    """scipy.signal.hilbert(y).imag by TF's n-point FFT and its inverse. ``[B, n]`` -> ``[B, n]``

    With Y = rfft(y), H(y) = irfft(-i s Y), s = 1 on the positive frequencies and 0 at DC and (n
    even) Nyquist: scipy's h without its real part. -i Y is imaginary at those two bins, whose
    imaginary parts irfft drops, so no mask is needed.
    """
    with tf.name_scope("hilbert_transform"):
        real, imag = spectral.real_fft(y, y.shape[-1], fft_mode)  # 2 x [B, n/2 + 1]
        return tf.signal.irfft(tf.complex(imag, -real), [y.shape[-1]])  # [B, n]


def _hilbert_envelope_and_autocorrelation(y: tf.Tensor, n_lags: int,
                                          fft_mode: spectral.FftMode) -> tuple[tf.Tensor, tf.Tensor]:
    """|scipy.signal.hilbert(y)| = sqrt(y^2 + H(y)^2) ``[B, n]``, and np.correlate(y, y, "full")[n-1:]
    [:n_lags] / r[0] ``[B, n_lags]`` (0 for silence).

    TF's FFT takes any length and has an inverse: the transform is scipy's n-point one and the
    lags come from an FFT just longer than n + n_lags. TFLite's takes neither, so with
    ``fft_mode.tflite_compatible`` both come from one shared power-of-two spectrum of about 2n points.
    """
    with tf.name_scope("hilbert_envelope_and_autocorrelation"):
        if fft_mode.tflite_compatible:
            spectrum = padded_spectrum(y, fft_mode)  # 2 x [B, M/2 + 1]
            transform = _hilbert_transform_of_padded(y, spectrum, fft_mode)  # [B, n]
            lags = spectral.autocorrelation_of_spectrum(spectrum, n_lags, fft_mode)  # [B, n_lags]
        else:
            transform = _hilbert_transform(y, fft_mode)  # [B, n]
            lags = spectral.autocorrelation(y, n_lags, fft_mode)  # [B, n_lags]
        envelope = tf.sqrt(tf.square(y) + tf.square(transform))  # [B, n]
        return envelope, tf.math.divide_no_nan(lags, lags[:, :1])  # [B, n], [B, n_lags]


def _envelope_peaks(envelope: tf.Tensor, sample_rate: int) -> list[tf.Tensor]:
    """scipy.signal.find_peaks(env, height=env.mean(), distance=sr // 10): count, height mean, std.

    ``[B, n]`` -> 3 x ``[B]``. Local maxima follow scipy (strict rise, then a strict fall; a
    two-sample plateau counts at its left sample; longer plateaus are ignored, they do not occur
    on float envelopes). The distance rule is scipy's greedy one, batched over clips: the
    candidates are compacted to ``[B, C]``, then each round keeps the highest remaining
    candidate of every clip and drops all candidates closer than ``distance`` (a while loop of
    at most ``n / distance + 1`` rounds, as many as the most kept peaks in the batch).
    """
    with tf.name_scope("envelope_peaks"):
        distance = max(_samples(sample_rate, PEAK_DISTANCE_S), 1)
        height = tf.reduce_mean(envelope, -1, keepdims=True)  # [B, 1]
        left = envelope[:, :-2]  # [B, n - 2]   x[i - 1] for i = 1 .. n-2
        mid = envelope[:, 1:-1]  # [B, n - 2]   x[i]
        right = envelope[:, 2:]  # [B, n - 2]   x[i + 1]
        right2 = tf.pad(envelope[:, 3:], [[0, 0], [0, 1]], constant_values=np.inf)  # [B, n - 2]   x[i + 2]
        # A rise, then right < mid or right == mid > right2: mid > left, mid > min(right, right2) and
        # mid >= right. Folded into two comparisons of whole tensors by min / max, which TFLite runs
        # several times faster than its logical ops (and than comparisons with a broadcast scalar).
        rises_and_falls = mid > tf.maximum(left, tf.minimum(right, right2))  # [B, n - 2]
        high_and_level = mid >= tf.maximum(right, spectral.broadcast_like(height, mid))  # [B, n - 2]
        is_peak = tf.logical_and(rises_and_falls, high_and_level)  # [B, n - 2]
        none = -1.0  # envelope >= 0 and a peak is > its left neighbour, so every peak scores > 0
        # Compact the (few hundred) candidates of every clip to the left: [B, C], padded.
        where = tf.cast(tf.where(is_peak), tf.int32)  # [K, 2]  (clip, position), row-major
        clip, position = where[:, 0], where[:, 1]  # 2 x [K]
        counts = tf.reduce_sum(tf.cast(is_peak, tf.int32), -1)  # [B]
        first = tf.cumsum(counts, exclusive=True)  # [B]  row of each clip's first candidate
        slot = tf.range(tf.shape(where)[0]) - tf.gather(first, clip)  # [K]  rank within its clip
        # At least one slot: TFLite's SCATTER_ND faults on an empty output (no candidate anywhere).
        n_slots = tf.maximum(tf.reduce_max(counts), 1)  # []  C
        far = -2 * distance  # padding position, never within distance of a real candidate
        positions = far + tf.scatter_nd(tf.stack([clip, slot], -1), position - far,
                                        tf.stack([tf.shape(mid)[0], n_slots]))  # [B, C]
        valid = positions != far  # [B, C]
        heights = tf.gather(mid, tf.maximum(positions, 0), batch_dims=1)  # [B, C]
        scores = tf.where(valid, heights, none)  # [B, C]

        def pending(scores, kept):
            return tf.reduce_any(scores > none)

        def keep_highest(scores, kept):
            best = tf.argmax(scores, -1, output_type=tf.int32)  # [B]
            active = tf.reduce_max(scores, -1, keepdims=True) > none  # [B, 1]
            best_position = tf.gather(positions, best[:, tf.newaxis], batch_dims=1)  # [B, 1]
            near = tf.logical_and(tf.abs(positions - best_position) < distance, active)  # [B, C]
            chosen = tf.logical_and(tf.equal(positions, best_position), active)  # [B, C]
            return tf.where(near, none, scores), tf.logical_or(kept, chosen)

        _, kept = tf.while_loop(pending, keep_highest, [scores, tf.zeros_like(valid)])  # [B, C]
        kept_f = tf.cast(kept, tf.float32)  # [B, C]
        count = tf.reduce_sum(kept_f, -1)  # [B]
        safe_count = tf.maximum(count, 1.0)  # [B]
        mean = tf.reduce_sum(kept_f * heights, -1) / safe_count  # [B]   0 without peaks
        spread = tf.reduce_sum(kept_f * tf.square(heights - mean[:, tf.newaxis]), -1)  # [B]
        std = tf.where(count > 1.0, tf.sqrt(spread / safe_count), 0.0)  # [B]
        return [count, mean, std]


def _low_frequency_ratio(power: tf.Tensor, sample_rate: int) -> tf.Tensor:
    """Share of |STFT|^2 (n_fft 512) in bins below 1 kHz. ``[B, T, 257]`` -> ``[B]``"""
    with tf.name_scope("low_frequency_ratio"):
        low_bins = int(LOW_FREQ_CUTOFF_HZ * LOW_FREQ_N_FFT / sample_rate)
        low = tf.reduce_sum(power[..., :low_bins], [-2, -1])  # [B]
        return low / (tf.reduce_sum(power, [-2, -1]) + EPS)  # [B]


def _largest_pair(x: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """The k-th and (k-1)-th largest value of each row, exactly. ``[B, n]`` -> 2 x ``[B]``

    A top-k costs mostly the heap its candidates pass through, which for k ~ n / 10 holds
    thousands. Here order statistics of a strided subsample, a little below and above rank
    k / step, bracket the wanted values: ``above`` values of the row exceed the bracket, so the
    wanted ones are the (k - above)-th and (k - above - 1)-th largest inside it, found by one
    top-k of depth ``k - min(above)`` (a few hundred) over the bracket's values only. A row whose
    bracket misses (fewer than k values reach its low end, or more than k - 2 exceed its high end)
    opens that end, so the result stays exact for every input; only the search gets deeper.
    """
    with tf.name_scope("largest_pair"):
        n = x.shape[-1]
        if not 2 <= k <= n:
            raise ValueError(f"k must be in [2, {n}] (the row length), got {k}")
        sample = x[:, ::PRESELECT_STEP]  # [B, ceil(n / step)]
        wanted = k / PRESELECT_STEP  # rank of the k-th largest in the subsample, roughly
        high_rank = max(int(wanted) - PRESELECT_BRACKET, 1)
        low_rank = min(int(np.ceil(wanted)) + PRESELECT_BRACKET, sample.shape[-1])
        ranked = tf.math.top_k(sample, low_rank).values  # [B, low_rank] descending
        low = ranked[:, low_rank - 1:]  # [B, 1]
        high = ranked[:, high_rank - 1:high_rank]  # [B, 1]
        reached = tf.reduce_sum(tf.cast(x >= spectral.broadcast_like(low, x), tf.int32), -1, keepdims=True)  # [B, 1]
        low = tf.where(reached >= k, low, -np.inf)  # [B, 1]
        above = tf.reduce_sum(tf.cast(x > spectral.broadcast_like(high, x), tf.int32), -1, keepdims=True)  # [B, 1]
        fits = above <= k - 2  # [B, 1]
        high = tf.where(fits, high, np.inf)  # [B, 1]
        above = tf.where(fits, above, 0)  # [B, 1]
        low, high = spectral.broadcast_like(low, x), spectral.broadcast_like(high, x)  # 2 x [B, n]
        # Values outside the bracket become its low end: they rank at or below the wanted ones, which
        # lie inside (k - above of them at least). A select and a maximum: TFLite's logical_and of
        # two comparisons over a clip cost 3x as much.
        inside = tf.where(x > high, low, tf.maximum(x, low))  # [B, n]
        depth = k - tf.reduce_min(above)  # []  the deepest row's rank inside its bracket
        bracketed = tf.math.top_k(inside, depth).values  # [B, depth] descending
        kth = k - 1 - above  # [B, 1]  position of the k-th largest in bracketed
        pair = tf.gather(bracketed, tf.concat([kth, kth - 1], -1), batch_dims=1)  # [B, 2]
        return pair[:, 0], pair[:, 1]


def _abs_percentiles(y: tf.Tensor, quantiles: tuple[float, ...]) -> list[tf.Tensor]:
    """np.percentile(|y|, 100 q) with linear interpolation, 0 < q < 1. ``[B, n]`` -> len(q) x ``[B]``

    Only the two order statistics around position ``(n - 1) q`` are needed, not a sort: they are
    ``_largest_pair`` counted from the nearer end. Measured: the whole feature pipeline is 14-17 %
    faster than with ``tf.sort`` (benchmarks/RESULTS.md, "speed tricks").
    """
    with tf.name_scope("abs_percentiles"):
        magnitude = tf.abs(y)  # [B, n]
        n = y.shape[-1]
        results = []
        for q in quantiles:
            position = (n - 1) * q  # float64, as NumPy's
            below = int(np.floor(position))  # index of the lower neighbour in sorted order
            fraction = np.float32(position - below)
            if q >= 0.5:  # sorted[below] and sorted[below + 1]: the (n - below)-th and next largest
                lower, upper = _largest_pair(magnitude, n - below)  # 2 x [B]
            else:  # the (below + 1)-th and (below + 2)-th smallest
                upper, lower = (-v for v in _largest_pair(-magnitude, below + 2))  # 2 x [B]
            results.append(lower + (upper - lower) * fraction)  # [B]
        return results


def scalars_from_cache(cache: spectral.SpectrogramCache, sample_rate: int, hop_length: int) -> tf.Tensor:
    """All 39 scalars of a flat batch of waveforms (``cache.y``: ``[B, n]``, n static), FFTs as
    ``cache.fft_mode`` says. -> ``[B, 39]``"""
    y = cache.y  # [B, n]
    nyquist = sample_rate / 2.0
    n = y.shape[-1]
    if n is None:
        raise ValueError("the scalars need a static clip length: their FFT kernels depend on it")
    n_frames = 1 + n // hop_length

    magnitude = cache.magnitude(LIBROSA_N_FFT, hop_length)  # [B, T, 1025]

    rms = _rms(y, n_frames, hop_length)  # [B, T]
    zcr = _zero_crossing_rate(y, n_frames, hop_length)  # [B, T]
    centroid, bandwidth = _centroid_bandwidth(magnitude, sample_rate)  # 2 x [B, T]
    power = cache.power(LIBROSA_N_FFT, hop_length)  # [B, T, 1025]
    live_bins = cache.live_bins(LIBROSA_N_FFT)
    if ROLLOFF_HOP % hop_length == 0:  # the hop-512 frames are among the shared STFT's
        rolloff = _rolloff(magnitude[:, :: ROLLOFF_HOP // hop_length], sample_rate, live_bins)  # [B, T']
    else:
        rolloff = _rolloff(cache.magnitude(LIBROSA_N_FFT, ROLLOFF_HOP), sample_rate, live_bins)  # [B, T']
    flatness = _flatness(power, live_bins)  # [B, T]
    contrast = _contrast(magnitude, sample_rate)  # [B, T, 7]
    flux = _mel_flux(cache.mel_db(sample_rate, LIBROSA_N_FFT, hop_length, N_MELS))  # [B, T - 1]
    wave_skew, wave_kurtosis = _skew_kurtosis(y)  # 2 x [B]
    lag_short = _samples(sample_rate, AUTOCORR_LAG_SHORT_S)
    lag_long = _samples(sample_rate, AUTOCORR_LAG_LONG_S)
    search = _samples(sample_rate, AUTOCORR_SEARCH_S)
    n_lags = max(search, lag_long + 1)
    if n_lags > n:  # a TFLite graph's shared spectrum holds lags below n only
        raise ValueError(f"the scalars need clips of at least {n_lags} samples "
                         f"({AUTOCORR_SEARCH_S} s of autocorrelation lags), got {n}")
    envelope, autocorr = _hilbert_envelope_and_autocorrelation(y, n_lags, cache.fft_mode)  # [B, n], [B, lags]

    with tf.name_scope("summaries"):
        env_mean = tf.reduce_mean(envelope, -1)  # [B]
        env_std = tf.math.reduce_std(envelope, -1)  # [B]
        contrast_flat = tf.reshape(contrast, [tf.shape(contrast)[0], -1])  # [B, T * 7]
        min_lag = tf.argmin(autocorr[:, :search], -1, output_type=tf.int32)  # [B]
        columns = [
            *_mean_std_max_min(rms),
            *_mean_std_max_min(zcr),
            tf.reduce_mean(centroid, -1) / nyquist, tf.math.reduce_std(centroid, -1) / nyquist,
            _skew_kurtosis(centroid)[0],
            tf.reduce_mean(bandwidth, -1) / nyquist, tf.math.reduce_std(bandwidth, -1) / nyquist,
            tf.reduce_mean(rolloff, -1) / nyquist, tf.math.reduce_std(rolloff, -1) / nyquist,
            tf.reduce_mean(flatness, -1), tf.math.reduce_std(flatness, -1),
            tf.reduce_mean(contrast_flat, -1), tf.math.reduce_std(contrast_flat, -1),
            env_mean, env_std, env_mean / (env_std + EPS),
            *_envelope_peaks(envelope, sample_rate),
            _low_frequency_ratio(cache.power(LOW_FREQ_N_FFT, hop_length), sample_rate),
            tf.reduce_mean(flux, -1), tf.math.reduce_std(flux, -1), tf.reduce_max(flux, -1),
            wave_skew, wave_kurtosis,
            *_abs_percentiles(y, (0.9, 0.1)),
            autocorr[:, lag_short], autocorr[:, lag_long],
            tf.cast(min_lag, tf.float32) / float(sample_rate),
            _skew_kurtosis(bandwidth)[0], _skew_kurtosis(rolloff)[0], _skew_kurtosis(flatness)[0],
        ]
        return tf.stack(columns, -1)  # [B, 39]


def scalar_features(y, sample_rate: int = 16000, hop_length: int = 256,
                    fft_mode: spectral.FftMode = spectral.FftMode()) -> tf.Tensor:
    """The 39 scalars (``config.SCALAR_NAMES``) of mono waveforms. ``[..., n]`` -> ``[..., 39]`` float32

    Works unbatched (``[n]``) and batched (any leading axes); float32 whatever the Keras policy.
    The clip length ``n`` must be static (the Hilbert kernel and FFT sizes are built for it).
    ``fft_mode`` builds the FFTs (``spectral.FftMode``).
    """
    with tf.name_scope("scalar_features"):
        flat, restore = spectral.flatten_batch(y)  # [B, n]
        cache = spectral.SpectrogramCache(flat, fft_mode=fft_mode)
        return restore(scalars_from_cache(cache, sample_rate, hop_length))  # [..., 39]
