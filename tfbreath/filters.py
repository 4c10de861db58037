"""Constant matrices built once in NumPy with librosa/SciPy and applied in-graph.

Every builder is cached and returns float32 arrays laid out for ``time-major @ matrix``
products: a spectrogram is ``[..., frames, bins]`` in-graph, so a filterbank is ``[bins, bands]``.
Linear operators along time (deltas, smoothing) are ``[frames, frames]`` and applied as
``operator @ x`` on ``[..., frames, bands]``.
"""

from __future__ import annotations

import functools

import librosa
import numpy as np
import scipy.fft
import scipy.ndimage
import scipy.signal

DELTA_WIDTH = 9
"""librosa.feature.delta's default Savitzky-Golay window (frames)."""

CENS_SMOOTHING_FRAMES = 41
"""librosa.feature.chroma_cens's default Hann smoothing length (frames)."""

LOWPASS_TRANSITION_HZ = 200.0
"""Width of the band-limit filter's transition band, ending at the band limit."""

LOWPASS_STOPBAND_DB = 100.0
"""The band-limit filter's stopband attenuation: beyond the dB maps' 80-dB range below their peak."""


@functools.lru_cache(maxsize=None)
def hann_window(length: int) -> np.ndarray:
    """Periodic Hann window, as librosa's STFT uses (``fftbins=True``). ``[length]``"""
    return scipy.signal.get_window("hann", length, fftbins=True).astype(np.float32)


@functools.lru_cache(maxsize=None)
def fft_frequencies(sample_rate: int, n_fft: int) -> np.ndarray:
    """Centre frequency of every rFFT bin in Hz. ``[n_fft // 2 + 1]``"""
    return librosa.fft_frequencies(sr=sample_rate, n_fft=n_fft).astype(np.float32)


@functools.lru_cache(maxsize=None)
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmax: float | None = None,
                   fmin: float = 0.0) -> np.ndarray:
    """Slaney-normalised mel filterbank from ``fmin`` to ``fmax`` (librosa defaults). ``[n_fft // 2 + 1, n_mels]``"""
    return librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax).T.astype(np.float32)


@functools.lru_cache(maxsize=None)
def chroma_filterbank(sample_rate: int, n_fft: int) -> np.ndarray:
    """12-bin chroma filterbank at A440 tuning (tuning = 0). ``[n_fft // 2 + 1, 12]``"""
    return librosa.filters.chroma(sr=sample_rate, n_fft=n_fft, tuning=0.0).T.astype(np.float32)


@functools.lru_cache(maxsize=None)
def dct_matrix(n_inputs: int, n_outputs: int) -> np.ndarray:
    """Orthonormal DCT-II keeping the first ``n_outputs`` coefficients. ``[n_inputs, n_outputs]``"""
    basis = scipy.fft.dct(np.eye(n_inputs), type=2, norm="ortho", axis=0)  # [n_out_all, n_in]
    return basis[:n_outputs].T.astype(np.float32)


@functools.lru_cache(maxsize=None)
def delta_operator(n_frames: int, order: int) -> np.ndarray:
    """librosa.feature.delta (width 9, ``mode="interp"``) as a matrix along time. ``[frames, frames]``

    Row ``t`` holds the weights that make output frame ``t`` from all input frames, edges
    included, so the in-graph delta equals librosa's exactly.
    """
    impulses = np.eye(n_frames)
    responses = librosa.feature.delta(impulses, width=DELTA_WIDTH, order=order, axis=-1)
    return responses.T.astype(np.float32)


@functools.lru_cache(maxsize=None)
def cens_smoothing_operator(n_frames: int) -> np.ndarray:
    """chroma_cens's normalised Hann smoothing (zero-padded convolution) along time. ``[frames, frames]``"""
    window = scipy.signal.get_window("hann", CENS_SMOOTHING_FRAMES + 2, fftbins=False)
    window = window / window.sum()
    impulses = np.eye(n_frames)
    responses = scipy.ndimage.convolve(impulses, window[np.newaxis, :], mode="constant")
    return responses.T.astype(np.float32)


@functools.lru_cache(maxsize=None)
def lowpass_taps(sample_rate: int, band_limit_hz: float) -> np.ndarray:
    """Linear-phase Kaiser-window FIR low-pass whose stopband starts at ``band_limit_hz``. ``[taps]``

    Passband up to ``band_limit_hz - LOWPASS_TRANSITION_HZ``, at least ``LOWPASS_STOPBAND_DB`` of
    attenuation from ``band_limit_hz`` up (``scipy.signal.kaiserord`` sizes it); an odd, symmetric
    tap count, so a centred convolution delays nothing.
    """
    nyquist = sample_rate / 2.0
    numtaps, beta = scipy.signal.kaiserord(LOWPASS_STOPBAND_DB, LOWPASS_TRANSITION_HZ / nyquist)
    numtaps |= 1  # odd: a whole-sample delay, removed by centring
    cutoff = band_limit_hz - LOWPASS_TRANSITION_HZ / 2.0  # firwin's cutoff is the transition's middle
    return scipy.signal.firwin(numtaps, cutoff, window=("kaiser", beta), fs=sample_rate).astype(np.float32)


@functools.lru_cache(maxsize=None)
def band_mask(sample_rate: int, n_fft: int, band_limit_hz: float) -> np.ndarray:
    """1 for rFFT bins below ``band_limit_hz``, 0 from it up. ``[n_fft // 2 + 1]``"""
    return (fft_frequencies(sample_rate, n_fft) < band_limit_hz).astype(np.float32)


@functools.lru_cache(maxsize=None)
def hilbert_kernel_spectrum(n: int, fft_length: int) -> tuple[np.ndarray, np.ndarray]:
    """rFFT (real, imaginary parts) of scipy.signal.hilbert's length-``n`` kernel, laid out for a
    circular convolution of length ``fft_length >= 2n - 1``. 2 x ``[fft_length // 2 + 1]``

    scipy's analytic signal is ifft(fft(y) h), the length-n circular convolution of y with
    ifft(h) = delta + i k (h: 1 at DC and Nyquist, 2 on positive, 0 on negative frequencies).
    Moving the kernel's negative lags -n < d < 0 from n + d to fft_length + d makes the longer
    circular convolution of the zero-padded y equal that one on its first n samples.
    """
    if fft_length < 2 * n - 1:
        raise ValueError(f"fft_length must be >= 2n - 1 = {2 * n - 1}, got {fft_length}")
    weights = np.zeros(n)
    weights[0] = 1.0
    weights[1:(n + 1) // 2] = 2.0
    if n % 2 == 0:
        weights[n // 2] = 1.0
    kernel = np.fft.ifft(weights).imag  # [n]  float64
    laid_out = np.zeros(fft_length)
    laid_out[:n] = kernel  # lags 0 .. n-1
    laid_out[fft_length - n + 1:] = kernel[1:]  # lags -(n-1) .. -1 (the kernel is n-periodic)
    spectrum = np.fft.rfft(laid_out)  # [fft_length // 2 + 1]
    return spectrum.real.astype(np.float32), spectrum.imag.astype(np.float32)
