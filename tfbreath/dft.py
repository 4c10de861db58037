"""Short discrete Fourier transforms as products with constant matrices: fast in TFLite.

TFLite's RFFT2D kernel is slow for many short transforms (63 frames of 2048 points: 0.85 ms
on one AVX-512 core), while its matrix products run at 60-100 GFLOP/s there (XNNPACK). As
audio TFLite exports commonly do (YAMNet computes its STFT with constant cos/sin matrices),
the ``tflite_compatible`` feature graph builds its short transforms as products
(``spectral.FftMode``); TF's own graph keeps TF's FFTs. The price is size: for the shipped
pipeline the matrices take the float32 feature graph from 0.8 to 3.5 MB (the tempogram's
two, 1.8 MB, are the largest).

Layout as in ``tfbreath.spectral``: signals ``[..., samples]``, spectra ``[..., bins]``,
spectrograms time-major ``[..., frames, bins]``. Every matrix is built once in float64 NumPy
and stored as float32.

- ``real_dft``: the rFFT's real and imaginary parts, ``[..., L] @ [L, 2 bins]``.
- ``stft_power``: |STFT|^2 with a periodic Hann window, by blocks shared between overlapping
  frames: one product per hop-sized block instead of one per frame (8x fewer multiplications
  for n_fft 2048, hop 256), the frames put together by one small convolution
  (``stft_kernels``) and the window applied as a mix of neighbouring bins.
- ``autocorrelation``: lags of short signals by two products (power spectrum, cosine sums).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import tensorflow as tf

MAX_MATRIX_ENTRIES = 1 << 20
"""Largest constant DFT matrix (4 MB as float32) the products use. A longer transform (a whole
clip: 16000 samples x 16385 bins) would be 1 GB; it stays an FFT."""

MAX_BLOCKS_PER_FRAME = 32
"""Largest R = n_fft / gcd(n_fft, hop) for ``stft_power``: its frame kernel holds 4 R^3 numbers
(R = 32: 131 K), and the convolution costs 4 R multiplications per bin and frame."""

HANN_BIN_WEIGHTS = {-1: -0.25, 0: 0.5, 1: -0.25}
"""The periodic Hann window 0.5 - 0.5 cos(2 pi n / N) is 0.5 - 0.25 e^(2 pi i n/N) - 0.25 e^(-2 pi i n/N),
so the windowed DFT is sum_d w_d X[k + d] of the plain one (Harris 1978, "On the use of windows
for harmonic analysis with the discrete Fourier transform", Proc. IEEE 66(1))."""


def fits(length: int, n_bins: int) -> bool:
    """Whether a ``[length, 2 n_bins]`` DFT matrix is small enough for ``real_dft``."""
    return length * 2 * n_bins <= MAX_MATRIX_ENTRIES


@functools.lru_cache(maxsize=None)
def dft_matrix(length: int, fft_length: int, n_bins: int) -> np.ndarray:
    """Columns cos(2 pi k m / M) then -sin(2 pi k m / M) for bins k < ``n_bins``, rows m < ``length``
    (a signal zero-padded to M = ``fft_length``). ``[length, 2 n_bins]``"""
    m = np.arange(length, dtype=np.float64)[:, np.newaxis]  # [L, 1]
    angle = 2.0 * np.pi * ((m * np.arange(n_bins)) % fft_length) / fft_length  # [L, bins]  exact phase
    return np.concatenate([np.cos(angle), -np.sin(angle)], axis=1).astype(np.float32)


def real_dft(x: tf.Tensor, fft_length: int, n_bins: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Real and imaginary parts of rFFT(x zero-padded to ``fft_length``), first ``n_bins`` bins
    (default all M/2 + 1), by one product. ``[..., L]`` -> 2 x ``[..., n_bins]``"""
    with tf.name_scope("real_dft"):
        n_bins = fft_length // 2 + 1 if n_bins is None else n_bins
        if x.shape[-1] > fft_length:
            raise ValueError(f"signal of {x.shape[-1]} samples longer than fft_length {fft_length}")
        parts = tf.tensordot(x, tf.constant(dft_matrix(x.shape[-1], fft_length, n_bins)), [[-1], [0]])  # [..., 2 bins]
        return parts[..., :n_bins], parts[..., n_bins:]  # 2 x [..., n_bins]


def autocorrelation_length(length: int, n_lags: int) -> int:
    """The DFT length for ``autocorrelation``: the smallest even M >= L + n_lags - 1 (no wrap-around
    below n_lags)."""
    least = length + n_lags - 1
    return least + least % 2


@functools.lru_cache(maxsize=None)
def lag_matrix(fft_length: int, n_lags: int) -> np.ndarray:
    """sum over the rFFT bins f of w_f cos(2 pi f k / M) / M (w = 2, but 1 at DC and Nyquist): the
    first ``n_lags`` samples of the inverse rFFT of a real spectrum. ``[M/2 + 1, n_lags]``"""
    bins = np.arange(fft_length // 2 + 1, dtype=np.float64)[:, np.newaxis]  # [F, 1]
    weights = np.where((bins == 0) | (bins == fft_length // 2), 1.0, 2.0)  # [F, 1]
    cosines = np.cos(2.0 * np.pi * ((bins * np.arange(n_lags)) % fft_length) / fft_length)  # [F, lags]
    return (weights * cosines / fft_length).astype(np.float32)


def autocorrelation(x: tf.Tensor, n_lags: int) -> tf.Tensor:
    """sum_n x[n] x[n+k] for k < n_lags (0 beyond the end of x): the power spectrum (``real_dft``)
    times ``lag_matrix``, two products. ``[..., L]`` -> ``[..., n_lags]``"""
    with tf.name_scope("dft_autocorrelation"):
        fft_length = autocorrelation_length(x.shape[-1], n_lags)
        real, imag = real_dft(x, fft_length)  # 2 x [..., M/2 + 1]
        power = tf.square(real) + tf.square(imag)  # [..., M/2 + 1]
        return tf.tensordot(power, tf.constant(lag_matrix(fft_length, n_lags)), [[-1], [0]])  # [..., n_lags]


def block_layout(n_fft: int, hop_length: int) -> tuple[int, int, int]:
    """``(block, blocks_per_frame, stride)``: frames of ``n_fft`` at ``hop_length`` cut into blocks
    of gcd(n_fft, hop) samples; frame t is blocks t stride .. t stride + R - 1."""
    block = math.gcd(n_fft, hop_length)
    return block, n_fft // block, hop_length // block


def blocked(n_fft: int, hop_length: int) -> bool:
    """Whether ``stft_power`` takes these sizes (``MAX_BLOCKS_PER_FRAME``)."""
    return block_layout(n_fft, hop_length)[1] <= MAX_BLOCKS_PER_FRAME


@functools.lru_cache(maxsize=None)
def stft_kernels(n_fft: int, hop_length: int, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """The block DFT ``[g, G 2R]`` and the frame kernel ``[R, 1, 2R, 2R]`` of ``stft_power``.

    Bins are grouped by R (blocks per frame): bin k = q R + r is group q, slot r. The block DFT
    gives, for the G groups from bin -R up to bin ``n_bins`` (one bin either side of those wanted,
    for the window), B_b[k] = sum_m x[b g + m] e^(-2 pi i k m / N), columns in (group, part, slot)
    order, part 0 the real and 1 the imaginary part. A frame of blocks b .. b + R - 1 has the
    plain DFT U[k] = sum_j e^(-2 pi i k j / R) B_(b+j)[k], whose phase depends on k only through
    r: one VALID convolution over blocks, kernel K[j, 0, (part', r'), (r, part)], nonzero for
    r' = r only, gives U of every frame, output channels 2 r + part.
    """
    block, per_frame, _ = block_layout(n_fft, hop_length)
    groups = 1 + -(-(n_bins + 1) // per_frame)
    bins = np.arange(-per_frame, (groups - 1) * per_frame).reshape(groups, 1, per_frame)  # [G, 1, R]
    m = np.arange(block, dtype=np.float64).reshape(block, 1, 1, 1)  # [g, 1, 1, 1]
    angle = 2.0 * np.pi * ((m * bins[np.newaxis]) % n_fft) / n_fft  # [g, G, 1, R]
    block_dft = np.concatenate([np.cos(angle), -np.sin(angle)], axis=2)  # [g, G, 2, R]
    kernel = np.zeros((per_frame, 1, 2 * per_frame, 2 * per_frame))
    for j in range(per_frame):
        for slot in range(per_frame):
            phase = -2.0 * np.pi * slot * j / per_frame
            c, s = np.cos(phase), np.sin(phase)
            kernel[j, 0, slot, 2 * slot] = c  # real from real
            kernel[j, 0, per_frame + slot, 2 * slot] = -s  # real from imaginary
            kernel[j, 0, per_frame + slot, 2 * slot + 1] = c  # imaginary from imaginary
            kernel[j, 0, slot, 2 * slot + 1] = s  # imaginary from real
    return block_dft.reshape(block, -1).astype(np.float32), kernel.astype(np.float32)


def stft_power(padded: tf.Tensor, n_fft: int, hop_length: int, n_frames: int, n_bins: int) -> tf.Tensor:
    """|STFT|^2 (periodic Hann) of the frames ``padded[t hop : t hop + n_fft]``, t < ``n_frames``,
    first ``n_bins`` bins, by blocks (``stft_kernels``). ``[B, n]`` -> ``[B, T, n_bins]``

    Multiplications per frame and bin: 2 N / R for the blocks (N = n_fft), 4 R for the frames,
    against 2 N for a product per frame. The Hann window then mixes neighbouring bins
    (``HANN_BIN_WEIGHTS``).
    """
    with tf.name_scope("dft_stft_power"):
        if not blocked(n_fft, hop_length):
            raise ValueError(f"n_fft {n_fft} / gcd with hop {hop_length} exceeds {MAX_BLOCKS_PER_FRAME} blocks")
        block, per_frame, stride = block_layout(n_fft, hop_length)
        n_blocks = (n_frames - 1) * stride + per_frame
        if padded.shape[-1] < n_blocks * block:
            raise ValueError(f"{n_frames} frames need {n_blocks * block} samples, got {padded.shape[-1]}")
        block_dft, kernel = stft_kernels(n_fft, hop_length, n_bins)
        groups = block_dft.shape[-1] // (2 * per_frame)
        blocks = tf.reshape(padded[:, :n_blocks * block], [-1, n_blocks, block])  # [B, nb, g]
        spectra = tf.tensordot(blocks, tf.constant(block_dft), [[-1], [0]])  # [B, nb, G 2R]
        spectra = tf.reshape(spectra, [-1, n_blocks, groups, 2 * per_frame])  # [B, nb, G, 2R]
        plain = tf.nn.conv2d(spectra, tf.constant(kernel), [1, stride, 1, 1], "VALID")  # [B, T, G, 2R]
        # Bins -R .. as (real, imaginary) pairs, flat: each shifted slice copies one run per frame,
        # 7x faster in TFLite than slicing a [..., bins, 2] axis.
        plain = tf.reshape(plain, [-1, n_frames, groups * per_frame * 2])  # [B, T, 2 G R]
        windowed = tf.add_n([weight * plain[:, :, 2 * (per_frame + shift):2 * (per_frame + shift + n_bins)]
                             for shift, weight in HANN_BIN_WEIGHTS.items()])  # [B, T, 2 n_bins]
        squared = tf.reshape(tf.square(windowed), [-1, n_frames, n_bins, 2])  # [B, T, n_bins, 2]
        return tf.reduce_sum(squared, -1)  # [B, T, n_bins]
