"""Small pure-TF spectral primitives shared by the maps and the scalars.

Layout: signals are ``[..., samples]``; spectrograms are time-major ``[..., frames, bins]``
(any number of leading batch axes, including none). All math is float32, whatever the global
Keras dtype policy, so features are identical under mixed precision.

How FFTs are built is the caller's choice, an ``FftMode`` passed down explicitly from
``features.extract_features`` (through ``SpectrogramCache``) to the primitive that builds them;
no module state is read while a graph is traced, so the same function traced in two modes gives
two graphs. The default mode suits a graph TF runs itself (training, prediction, the tf.data
feature map): TF's FFTs of any length and their inverses. ``FftMode(tflite_compatible=True)``
(the export) keeps every op a TFLite builtin that TFLite runs fast: short transforms (the STFTs,
the tempogram's windows and lags) are products with constant DFT matrices (``tfbreath.dft``), and only
whole-clip transforms stay FFTs, of power-of-two length (``real_fft``). Whatever the mode,
spectra are at once float32 real and imaginary parts.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import scipy.fft
import tensorflow as tf

from tfbreath import dft, filters
from tfbreath.config import NO_BAND_LIMIT

AMIN = 1e-10
"""librosa.power_to_db's floor on power before the log."""

TOP_DB = 80.0
"""librosa.power_to_db's dynamic range below the peak."""

EPS = 1e-8
"""Guards divisions by a zero norm or zero energy."""

SILENT_RMS = 1e-5
"""RMS below which ``scale_to_rms`` treats a clip as silence (-100 dBFS, about the RMS of 16-bit
quantisation noise, 8.8e-6)."""

BAND_GROUP = 16
"""Bands per block when a filterbank is applied block by block (``apply_filterbank``)."""

MAX_BLOCK_FILL = 0.5
"""Block by block only when the blocks hold at most this share of the dense matrix."""

FIR_SPAN_BLOCKS = 6
"""Input blocks per output block of ``fir_filter``. More, shorter blocks waste fewer
multiplications on the band matrix's zeros and keep it in cache: for 515 taps, 1 thread in
TFLite, one interleaved run on a busy machine gave 0.38 ms at 6 (blocks of 103) against 0.55
at 4 and 1.4 at 2 (blocks of 514)."""


@dataclasses.dataclass(frozen=True)
class FftMode:
    """How a feature graph builds its FFTs: chosen by whoever traces it, for where it will run.

    The default suits a graph TF runs itself (training, ``predict``, the tf.data feature map).
    Every function here that builds an FFT takes one and passes it on.
    """

    tflite_compatible: bool = False
    """Only ops with a TFLite builtin kernel, chosen for TFLite's speed, for a TFLite conversion
    (the export). Transforms whose DFT matrix is small (``dft.fits``) are matrix products
    (``dft``): the STFTs by blocks, the tempogram's windows and lags, any short ``real_fft``;
    TFLite's RFFT2D took 0.85 ms for the 63 frames of 2048 points, the products about 0.3 ms.
    Longer ones are forward real FFTs of power-of-two length (TFLite's RFFT2D takes no other
    size) and inverse FFTs go through ``inverse_rfft``, one more forward real FFT. Off, TF's FFT
    of any length and its inverse: the Hilbert envelope and the autocorrelation of a
    16000-sample clip then cost two FFTs of about 16000 points each instead of about 32768
    (about 2x less time for those two features)."""


def as_float32(x: tf.Tensor) -> tf.Tensor:
    return tf.cast(tf.convert_to_tensor(x), tf.float32)


def smooth_fft_length(length: int) -> int:
    """The smallest length >= ``length`` with no prime factor above 5 (``scipy.fft.next_fast_len``
    for real input): the lengths TF's CPU FFT, like SciPy's, transforms fastest."""
    return scipy.fft.next_fast_len(length, real=True)


def fft_length_at_least(length: int) -> int:
    """The smallest power of two >= ``length``: the FFT sizes TFLite's RFFT2D kernel accepts."""
    return 1 << max(length - 1, 0).bit_length()


def broadcast_like(value, x: tf.Tensor) -> tf.Tensor:
    """``value`` (a tensor, or a number taken in ``x``'s dtype) broadcast to the shape of ``x`` by an
    op of its own. ``[...]`` -> ``x.shape``

    For comparisons and selects of a long tensor against a scalar or a row: TFLite runs those
    about 5x faster between two tensors of one shape (measured on 16000 samples, one thread:
    7 us with the broadcast as its own op, 39 us broadcasting inside the comparison).
    """
    return tf.broadcast_to(tf.convert_to_tensor(value, dtype_hint=x.dtype), tf.shape(x))


def pad_edges(y: tf.Tensor, pad: int, mode: str = "constant") -> tf.Tensor:
    """Pad the last axis by ``pad`` on both sides with zeros or the edge values. ``[..., n + 2 pad]``"""
    with tf.name_scope("pad_edges"):
        y = as_float32(y)
        if mode == "constant":
            paddings = [[0, 0]] * (y.shape.rank - 1) + [[pad, pad]]
            return tf.pad(y, paddings)  # [..., n + 2 pad]
        if mode == "edge":
            first = tf.repeat(y[..., :1], pad, axis=-1)  # [..., pad]
            last = tf.repeat(y[..., -1:], pad, axis=-1)  # [..., pad]
            return tf.concat([first, y, last], axis=-1)  # [..., n + 2 pad]
        raise ValueError(f"pad mode must be 'constant' or 'edge', got {mode!r}")


def frame(y: tf.Tensor, frame_length: int, hop_length: int, pad_mode: str = "constant") -> tf.Tensor:
    """Centred frames, as librosa's ``center=True``. ``[..., n]`` -> ``[..., 1 + n // hop, frame_length]``"""
    with tf.name_scope("frame"):
        padded = pad_edges(y, frame_length // 2, pad_mode)  # [..., n + frame_length]
        return tf.signal.frame(padded, frame_length, hop_length, axis=-1)  # [..., T, frame_length]


def sliding_windows(x: tf.Tensor, width: int, count: int) -> tf.Tensor:
    """The first ``count`` windows ``x[..., t : t + width]`` at hop 1. ``[..., n]`` -> ``[..., count, width]``

    One slice per window, stacked: about 3x cheaper than ``tf.signal.frame``'s gather for the
    few dozen windows of a clip.
    """
    with tf.name_scope("sliding_windows"):
        if x.shape[-1] is None or count + width - 1 > x.shape[-1]:
            raise ValueError(f"need a static length >= count + width - 1 = {count + width - 1}, got {x.shape[-1]}")
        return tf.stack([x[..., t:t + width] for t in range(count)], axis=-2)  # [..., count, width]


def scale_to_rms(y: tf.Tensor, target: float) -> tf.Tensor:
    """Each signal times ``target / RMS``; a signal quieter than ``SILENT_RMS`` (silence) is scaled
    as if it had that RMS, so it stays (near) silent. ``[B, n]`` -> ``[B, n]``"""
    with tf.name_scope("scale_to_rms"):
        y = as_float32(y)
        rms = tf.sqrt(tf.reduce_mean(tf.square(y), axis=-1, keepdims=True))  # [B, 1]
        return y * (target / tf.maximum(rms, SILENT_RMS))  # [B, n]


def fir_filter(y: tf.Tensor, taps) -> tf.Tensor:
    """Centred convolution with an odd, symmetric FIR, zeros beyond the edges, as
    ``np.convolve(y, taps, mode="same")``. ``[B, n]`` -> ``[B, n]``

    Block by block (``fir_block_matrix``): each block of P output samples is one product of the
    ``FIR_SPAN_BLOCKS`` input blocks it needs. Measured for 515 taps on 16000 samples: 8-15 ms
    per 64 clips in TF against 80-90 ms for ``conv1d``, and 0.2 ms against 11.8 ms per clip in
    TFLite (whose one-channel CONV_2D unrolls the signal into a [16000, 515] matrix first).
    """
    with tf.name_scope("fir_filter"):
        y = as_float32(y)
        matrix = fir_block_matrix(np.asarray(taps, np.float32))  # [S P, P]
        n, size = y.shape[-1], matrix.shape[-1]
        n_blocks = -(-n // size)
        half = len(taps) // 2  # the delay that centres the filter
        padded = tf.pad(y, [[0, 0], [half, (n_blocks + FIR_SPAN_BLOCKS - 1) * size - n - half]])  # [B, (nb + S - 1) P]
        blocks = tf.reshape(padded, [-1, n_blocks + FIR_SPAN_BLOCKS - 1, size])  # [B, nb + S - 1, P]
        spans = tf.concat([blocks[:, i:i + n_blocks] for i in range(FIR_SPAN_BLOCKS)], -1)  # [B, nb, S P]
        out = tf.tensordot(spans, tf.constant(matrix), [[-1], [0]])  # [B, nb, P]
        return tf.reshape(out, [-1, n_blocks * size])[:, :n]  # [B, n]


def fir_block_matrix(taps: np.ndarray) -> np.ndarray:
    """One output block of P samples from the ``FIR_SPAN_BLOCKS`` (S) input blocks it spans, the
    signal padded by taps // 2 zeros: out[s] = sum_u in[u] taps[L - 1 - (u - s)] for
    0 <= u - s < L (L taps), P = ceil((L - 1) / (S - 1)) so that S blocks hold P + L - 1
    samples. ``[S P, P]``"""
    if taps.ndim != 1 or len(taps) % 2 == 0:
        raise ValueError(f"need an odd number of taps, got shape {taps.shape}")
    size = max(1, -(-(len(taps) - 1) // (FIR_SPAN_BLOCKS - 1)))
    matrix = np.zeros((FIR_SPAN_BLOCKS * size, size), np.float32)  # [S P, P]
    for s in range(size):
        matrix[s:s + len(taps), s] = taps[::-1]
    return matrix


def stft_power(y: tf.Tensor, n_fft: int, hop_length: int, fft_mode: FftMode = FftMode(),
               n_bins: int | None = None) -> tf.Tensor:
    """|STFT|^2 with a periodic Hann window and zero-padded centring. ``[..., n]`` -> ``[..., T, n_fft//2+1]``

    ``n_bins``: only the first bins can be nonzero (a band-limited caller zeroes the rest), so a
    ``tflite_compatible`` graph computes those only (``dft.stft_power``) and the rest are zeros.
    """
    with tf.name_scope("stft_power"):
        if fft_mode.tflite_compatible and dft.blocked(n_fft, hop_length):
            return _blocked_stft_power(y, n_fft, hop_length, n_bins)  # [..., T, n_fft // 2 + 1]
        frames = frame(y, n_fft, hop_length)  # [..., T, n_fft]
        windowed = frames * filters.hann_window(n_fft)  # [..., T, n_fft]
        return fft_power(windowed, n_fft, fft_mode)  # [..., T, n_fft // 2 + 1]


def _blocked_stft_power(y: tf.Tensor, n_fft: int, hop_length: int, n_bins: int | None) -> tf.Tensor:
    """``stft_power`` by ``dft.stft_power``, its bins from ``n_bins`` up zero. ``[..., n]`` -> ``[..., T, n_fft//2+1]``"""
    all_bins = n_fft // 2 + 1
    n_bins = all_bins if n_bins is None else n_bins
    flat, restore = flatten_batch(y)  # [B, n]
    n_frames = 1 + flat.shape[-1] // hop_length
    padded = pad_edges(flat, n_fft // 2)  # [B, n + n_fft]
    power = dft.stft_power(padded, n_fft, hop_length, n_frames, n_bins)  # [B, T, n_bins]
    if n_bins < all_bins:
        power = tf.pad(power, [[0, 0], [0, 0], [0, all_bins - n_bins]])  # [B, T, n_fft // 2 + 1]
    return restore(power)  # [..., T, n_fft // 2 + 1]


def hann_window_power(x: tf.Tensor, width: int, count: int, fft_mode: FftMode = FftMode()) -> tf.Tensor:
    """|rFFT|^2, zero-padded to 2 ``width`` samples, of the windows ``x[..., t : t + width]`` at
    hop 1, t < ``count``, weighted by a periodic Hann window. ``[..., n]`` -> ``[..., count, width + 1]``

    TF's FFT of the windows, or with ``fft_mode.tflite_compatible`` one product whose radix-2
    halves neighbouring windows share (``dft.sliding_hann_power``, ``width`` even).
    """
    with tf.name_scope("hann_window_power"):
        if fft_mode.tflite_compatible:
            flat, restore = flatten_batch(x)  # [B, n]
            return restore(dft.sliding_hann_power(flat, width, count))  # [..., count, width + 1]
        windows = sliding_windows(x, width, count) * filters.hann_window(width)  # [..., count, width]
        return fft_power(windows, 2 * width, fft_mode)  # [..., count, width + 1]


def inverse_rfft(real: tf.Tensor, imag: tf.Tensor | None, n_out: int, fft_mode: FftMode = FftMode()) -> tf.Tensor:
    """The first ``n_out`` samples of irfft(real + i imag), by one forward real FFT.

    ``[..., M/2 + 1]`` x 2 -> ``[..., n_out]`` with ``M = 2 (bins - 1)`` a power of two and
    ``n_out <= M/2 + 1``. The spectrum Z = A + iB of a real signal extends to all M bins with A
    even and B odd, and irfft(Z)[n] = (Re FFT(A)[n] + Im FFT(B)[n]) / M. FFT(A) is real and FFT(B)
    imaginary, so the real and imaginary parts of the one real FFT of A + B carry both. As with
    irfft, the imaginary parts at DC and Nyquist are ignored (B is 0 there).

    ``imag=None`` is a real spectrum (B = 0, a power spectrum). Then M irfft(A)[n] is
    sum_f w_f A_f cos(2 pi f n / M) over the M/2 + 1 bins, w = 2 but 1 at DC and Nyquist: twice
    the real part of the rFFT of A zero-padded to M, less the DC and Nyquist terms once. No
    extension of A is built.
    """
    with tf.name_scope("inverse_rfft"):
        fft_length = 2 * (real.shape[-1] - 1)
        if fft_length_at_least(fft_length) != fft_length or not 0 < n_out <= fft_length // 2 + 1:
            raise ValueError(f"need a power-of-two FFT length and n_out <= {fft_length // 2 + 1}, "
                             f"got {real.shape[-1]} bins and n_out {n_out}")
        dc, nyquist = real[..., :1], real[..., -1:]  # 2 x [..., 1]  B = 0 there
        if imag is None:
            cosines = real_fft(real, fft_length, fft_mode)[0][..., :n_out]  # [..., n_out]
            alternating = (-1.0) ** np.arange(n_out, dtype=np.float32)  # [n_out]  cos(pi n)
            return (2.0 * cosines - dc - nyquist * alternating) / fft_length  # [..., n_out]
        inner = real[..., 1:-1]  # [..., M/2 - 1]  A, bins 1 .. M/2 - 1
        rising = inner + imag[..., 1:-1]  # [..., M/2 - 1]  A + B, bins 1 .. M/2 - 1
        falling = inner - imag[..., 1:-1]  # [..., M/2 - 1]  A + B, bins M - 1 .. M/2 + 1
        extended = tf.concat([dc, rising, nyquist, tf.reverse(falling, [-1])], -1)  # [..., M]
        real_part, imag_part = real_fft(extended, fft_length, fft_mode)  # 2 x [..., M/2 + 1]
        return (real_part[..., :n_out] + imag_part[..., :n_out]) / fft_length  # [..., n_out]


def real_fft(x: tf.Tensor, fft_length: int, fft_mode: FftMode = FftMode()) -> tuple[tf.Tensor, tf.Tensor]:
    """Real and imaginary parts of the rFFT of ``x`` zero-padded to ``fft_length``. ``[..., L]`` -> 2 x ``[..., M/2 + 1]``

    TF's FFT, or with ``fft_mode.tflite_compatible`` and a small enough DFT matrix
    (``dft.fits``) one product with it (``dft.real_dft``).
    """
    with tf.name_scope("real_fft"):
        if fft_mode.tflite_compatible and dft.fits(x.shape[-1], fft_length // 2 + 1):
            return dft.real_dft(x, fft_length)  # 2 x [..., M/2 + 1]
        spectrum = tf.signal.rfft(x, [fft_length])  # [..., M/2 + 1] complex
        return tf.math.real(spectrum), tf.math.imag(spectrum)  # 2 x [..., M/2 + 1]


def fft_power(x: tf.Tensor, fft_length: int, fft_mode: FftMode = FftMode()) -> tf.Tensor:
    """|rFFT|^2 of ``x`` zero-padded to ``fft_length``. ``[..., L]`` -> ``[..., M/2 + 1]``"""
    with tf.name_scope("fft_power"):
        return power_spectrum(real_fft(x, fft_length, fft_mode))  # [..., M/2 + 1]


def power_spectrum(spectrum: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
    """|X|^2 from ``real_fft``'s parts. 2 x ``[..., F]`` -> ``[..., F]``

    Summed as re^2 + im^2: TF's complex abs (an overflow-safe hypot per bin) costs as much as the
    FFT itself on the CPU, and audio in [-1, 1] cannot overflow float32 here.
    """
    real, imag = spectrum  # 2 x [..., F]
    return tf.square(real) + tf.square(imag)  # [..., F]


def autocorrelation_of_spectrum(spectrum: tuple[tf.Tensor, tf.Tensor], n_lags: int,
                                fft_mode: FftMode = FftMode()) -> tf.Tensor:
    """sum_n x[n] x[n+k] for k < n_lags (0 beyond the end of x) from ``real_fft(x, M)``.

    2 x ``[..., M/2 + 1]`` -> ``[..., n_lags]``. The inverse FFT of the power spectrum; with
    M >= L + n_lags - 1 (L the length of x) its circular products do not wrap around below
    n_lags. Taking the spectrum lets a caller that needs it anyway (the Hilbert envelope) share it.
    """
    with tf.name_scope("autocorrelation_of_spectrum"):
        power = power_spectrum(spectrum)  # [..., M/2 + 1]
        return inverse_rfft(power, None, n_lags, fft_mode)  # [..., n_lags]


def autocorrelation(x: tf.Tensor, n_lags: int, fft_mode: FftMode = FftMode()) -> tf.Tensor:
    """sum_n x[n] x[n+k] for k < n_lags (0 beyond the end of x), by TF's FFT of a smooth length
    M >= L + n_lags - 1 (L the length of x: no wrap-around below n_lags) and its inverse.

    ``[..., L]`` -> ``[..., n_lags]``. With ``fft_mode.tflite_compatible`` (TFLite has no inverse
    FFT) by two products with DFT matrices (``dft.autocorrelation``), for short signals only.
    """
    if fft_mode.tflite_compatible:
        length = dft.autocorrelation_length(x.shape[-1], n_lags)
        if not dft.fits(x.shape[-1], length // 2 + 1):
            raise ValueError(f"a {x.shape[-1]}-sample autocorrelation is too long for DFT matrices: in a "
                             "tflite_compatible FftMode use autocorrelation_of_spectrum on a power-of-two spectrum")
        return dft.autocorrelation(x, n_lags)  # [..., n_lags]
    with tf.name_scope("autocorrelation"):
        fft_length = smooth_fft_length(x.shape[-1] + n_lags - 1)
        power = fft_power(x, fft_length, fft_mode)  # [..., M/2 + 1]
        return lags_of_power(power, fft_length, n_lags, fft_mode)  # [..., n_lags]


def lags_of_power(power: tf.Tensor, fft_length: int, n_lags: int, fft_mode: FftMode = FftMode()) -> tf.Tensor:
    """The first ``n_lags`` samples of the length-``fft_length`` inverse rFFT of a power spectrum:
    TF's inverse FFT, or with ``fft_mode.tflite_compatible`` (M even) one product with a cosine
    matrix (``dft.power_lags``). ``[..., M//2 + 1]`` -> ``[..., n_lags]``"""
    with tf.name_scope("lags_of_power"):
        if fft_mode.tflite_compatible:
            if fft_length != 2 * (power.shape[-1] - 1):
                raise ValueError(f"a tflite_compatible inverse needs an even fft_length, got {fft_length} "
                                 f"for {power.shape[-1]} bins")
            return dft.power_lags(power, n_lags)  # [..., n_lags]
        lags = tf.signal.irfft(tf.complex(power, tf.zeros_like(power)), [fft_length])  # [..., M]
        return lags[..., :n_lags]  # [..., n_lags]


def filterbank_blocks(matrix) -> tuple[tuple[int, int, int, int], ...] | None:
    """``(first_bin, end_bin, first_band, end_band)`` per group of ``BAND_GROUP`` bands: the bin
    range outside which all of the group's filters are zero. ``None`` if the blocks would hold
    more than ``MAX_BLOCK_FILL`` of the dense matrix (a dense bank is cheaper in one product)."""
    matrix = np.asarray(matrix)
    n_bins, n_bands = matrix.shape
    blocks = []
    for first_band in range(0, n_bands, BAND_GROUP):
        end_band = min(first_band + BAND_GROUP, n_bands)
        used = np.flatnonzero(np.any(matrix[:, first_band:end_band] != 0, axis=1))
        first_bin, end_bin = (used[0], used[-1] + 1) if len(used) else (0, 1)  # all-zero: one zero bin
        blocks.append((int(first_bin), int(end_bin), first_band, end_band))
    filled = sum((end_bin - first_bin) * (end_band - first_band) for first_bin, end_bin, first_band, end_band in blocks)
    return tuple(blocks) if filled <= MAX_BLOCK_FILL * n_bins * n_bands else None


def apply_filterbank(spectrogram: tf.Tensor, matrix) -> tf.Tensor:
    """Project the bins of a time-major spectrogram. ``[..., T, F] @ [F, M]`` -> ``[..., T, M]``

    Banks of band-limited filters (mel, gammatone) are applied block by block
    (``filterbank_blocks``): each group of bands multiplies only its own bins, about 13 % of the
    dense products for a 128-band mel bank. Measured: up to 6 % more clips/s for the whole feature
    pipeline than one dense product; kept with the contrast's block pruning so that the plain
    rewrites cost under 10 % in all (benchmarks/RESULTS.md, "speed tricks").
    """
    with tf.name_scope("apply_filterbank"):
        matrix = np.asarray(matrix, np.float32)
        blocks = filterbank_blocks(matrix)
        if blocks is None:
            return tf.tensordot(spectrogram, tf.constant(matrix), axes=[[-1], [0]])  # [..., T, M]
        parts = [tf.tensordot(spectrogram[..., first_bin:end_bin],
                              tf.constant(matrix[first_bin:end_bin, first_band:end_band]), axes=[[-1], [0]])
                 for first_bin, end_bin, first_band, end_band in blocks]  # each [..., T, group]
        return tf.concat(parts, axis=-1)  # [..., T, M]


def apply_time_operator(operator, spectrogram: tf.Tensor) -> tf.Tensor:
    """Mix frames with a constant ``[T, T]`` operator. ``[..., T, F]`` -> ``[..., T, F]``"""
    with tf.name_scope("apply_time_operator"):
        return tf.matmul(tf.constant(operator), spectrogram)  # [T, T] @ [..., T, F] -> [..., T, F]


def power_to_db(power: tf.Tensor, ref_max: bool = True, top_db: float | None = TOP_DB) -> tf.Tensor:
    """librosa.power_to_db per example over the last two axes. ``[..., T, F]`` -> ``[..., T, F]``

    ``ref_max=True`` is ``ref=np.max`` (0 dB at the loudest bin); ``False`` is ``ref=1.0``.
    """
    with tf.name_scope("power_to_db"):
        log_ten = tf.math.log(tf.constant(10.0))
        db = 10.0 * tf.math.log(tf.maximum(power, AMIN)) / log_ten  # [..., T, F]
        peak = tf.reduce_max(db, axis=[-2, -1], keepdims=True)  # [..., 1, 1]
        if ref_max:
            db = db - peak  # [..., T, F]: exactly 0 dB at the peak, and everywhere for silence
            peak = tf.zeros_like(peak)
        if top_db is not None:
            db = tf.maximum(db, peak - top_db)  # [..., T, F]
        return db


class SpectrogramCache:
    """Spectrograms of one waveform batch ``[..., n]``, each built at most once per trace.

    The maps and the scalars ask it for the STFTs and mel powers they need, so a feature
    extraction that wants both computes each one once (the n_fft-2048 STFT serves the tempogram
    and the spectral-shape scalars, its 128-band dB mel the onset envelope and the mel flux).

    With a ``band_limit_hz`` other than ``NO_BAND_LIMIT`` (and the ``sample_rate``), every STFT
    power is exactly zero from that frequency up: after the waveform's low-pass, what is left
    there is round-off, which log-ratio features (spectral contrast, dB maps) would otherwise
    magnify. ``fft_mode`` builds the STFTs, and the maps and scalars pass it on to their own FFTs.
    """

    def __init__(self, y: tf.Tensor, sample_rate: int | None = None, band_limit_hz: float = NO_BAND_LIMIT,
                 fft_mode: FftMode = FftMode()):
        if band_limit_hz != NO_BAND_LIMIT and sample_rate is None:
            raise ValueError(f"a band limit ({band_limit_hz} Hz) needs the sample_rate")
        self.y = as_float32(y)  # [..., n]
        self.sample_rate = sample_rate
        self.band_limit_hz = band_limit_hz
        self.fft_mode = fft_mode
        self._built: dict[tuple, tf.Tensor] = {}

    def _once(self, key: tuple, build) -> tf.Tensor:
        if key not in self._built:
            self._built[key] = build()
        return self._built[key]

    def power(self, n_fft: int, hop_length: int) -> tf.Tensor:
        """|STFT|^2. ``[..., T, n_fft//2+1]``"""
        return self._once(("power", n_fft, hop_length),
                          lambda: self._band_limited(stft_power(self.y, n_fft, hop_length, self.fft_mode,
                                                                self.live_bins(n_fft))))

    def live_bins(self, n_fft: int) -> int:
        """How many STFT bins, from DC up, can be nonzero: those below the band limit, or all."""
        if self.band_limit_hz == NO_BAND_LIMIT:
            return n_fft // 2 + 1
        return int(np.count_nonzero(filters.band_mask(self.sample_rate, n_fft, self.band_limit_hz)))

    def _band_limited(self, power: tf.Tensor) -> tf.Tensor:
        if self.band_limit_hz == NO_BAND_LIMIT:
            return power  # [..., T, F]
        n_fft = 2 * (power.shape[-1] - 1)
        return power * filters.band_mask(self.sample_rate, n_fft, self.band_limit_hz)  # [..., T, F]

    def magnitude(self, n_fft: int, hop_length: int) -> tf.Tensor:
        """|STFT|. ``[..., T, n_fft//2+1]``"""
        return self._once(("magnitude", n_fft, hop_length), lambda: tf.sqrt(self.power(n_fft, hop_length)))

    def mel_power(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int,
                  fmax: float | None = None) -> tf.Tensor:
        """Mel power spectrogram (librosa's Slaney filterbank). ``[..., T, n_mels]``"""
        bank = filters.mel_filterbank(sample_rate, n_fft, n_mels, fmax)
        return self._once(("mel", sample_rate, n_fft, hop_length, n_mels, fmax),
                          lambda: apply_filterbank(self.power(n_fft, hop_length), bank))

    def mel_db(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> tf.Tensor:
        """``power_to_db(mel_power(...), ref=1.0)``, full band. ``[..., T, n_mels]``"""
        return self._once(("mel_db", sample_rate, n_fft, hop_length, n_mels),
                          lambda: power_to_db(self.mel_power(sample_rate, n_fft, hop_length, n_mels), ref_max=False))


def flatten_batch(y: tf.Tensor):
    """Fold any leading axes into one batch axis. ``[..., n]`` -> (``[B, n]``, restore)

    ``restore(x)`` turns a ``[B, ...]`` result back into ``[<leading axes>, ...]``.
    """
    y = as_float32(y)
    if y.shape.rank is not None and y.shape.rank < 1:
        raise ValueError(f"expected waveforms [..., samples], got shape {y.shape}")
    leading = tf.shape(y)[:-1]
    flat = tf.reshape(y, tf.stack([-1, tf.shape(y)[-1]]))  # [B, n]
    flat.set_shape([None, y.shape[-1]] if y.shape.rank is not None else [None, None])

    def restore(x: tf.Tensor) -> tf.Tensor:
        static = y.shape[:-1].concatenate(x.shape[1:]) if y.shape.rank is not None else None
        if static is not None and static.rank >= 1 and static[1:].is_fully_defined():
            # Constant sizes write the static shape into the graph itself (set_shape is Python-only),
            # so a SavedModel -> TFLite conversion still knows every conv's input channels.
            return tf.reshape(x, [-1, *static[1:]])  # [..., *x.shape[1:]]
        out = tf.reshape(x, tf.concat([leading, tf.shape(x)[1:]], 0))  # [..., *x.shape[1:]]
        if static is not None:
            out.set_shape(static)
        return out

    return flat, restore
