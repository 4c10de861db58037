"""NumPy/librosa reference for the 39 scalar features (see ``tfbreath.scalars``).

This follows the breathing-phase paper's recipe literally, one librosa/SciPy call per feature
group (each spectral call recomputes its own STFT, exactly as a librosa user would write it).
It is the ground truth of the parity tests and the baseline of the speed benchmark, so it is
kept deliberately plain. The order and names are ``tfbreath.config.SCALAR_NAMES``.

Degenerate input (an all-zero clip) gives NaN here wherever SciPy/NumPy do (skewness,
kurtosis and the normalised autocorrelation of a constant signal); the in-graph version
defines those as 0 instead.
"""

from __future__ import annotations

import librosa
import numpy as np
import scipy.signal
import scipy.stats

EPS = 1e-8
"""The recipe's guard in the envelope mean/std ratio and the low-frequency energy ratio."""

LOW_FREQ_N_FFT = 512
LOW_FREQ_CUTOFF_HZ = 1000.0
N_MELS = 128


def _stats4(x: np.ndarray) -> list[float]:
    return [np.mean(x), np.std(x), np.max(x), np.min(x)]


def reference_scalars(y: np.ndarray, sample_rate: int = 16000, hop_length: int = 256) -> np.ndarray:
    """The 39 scalars of one mono clip with librosa/SciPy. ``[n]`` -> ``[39]`` float64"""
    y = np.asarray(y, dtype=np.float32)
    sr = sample_rate
    nyquist = sr / 2
    out: list[float] = []

    # 1-8: frame energy and zero-crossing rate.
    rms = librosa.feature.rms(y=y, hop_length=hop_length)[0]
    zcr = librosa.feature.zero_crossing_rate(y, hop_length=hop_length)[0]
    out += _stats4(rms) + _stats4(zcr)

    # 9-17: spectral shape.
    centroid = librosa.feature.spectral_centroid(y=y, sr=sr, hop_length=hop_length)[0]
    bandwidth = librosa.feature.spectral_bandwidth(y=y, sr=sr, hop_length=hop_length)[0]
    rolloff = librosa.feature.spectral_rolloff(y=y, sr=sr, roll_percent=0.85)[0]  # default hop 512
    flatness = librosa.feature.spectral_flatness(y=y, hop_length=hop_length)[0]
    out += [np.mean(centroid) / nyquist, np.std(centroid) / nyquist, scipy.stats.skew(centroid)]
    out += [np.mean(bandwidth) / nyquist, np.std(bandwidth) / nyquist]
    out += [np.mean(rolloff) / nyquist, np.std(rolloff) / nyquist]
    out += [np.mean(flatness), np.std(flatness)]

    # 18-19: spectral contrast over all bands and frames.
    contrast = librosa.feature.spectral_contrast(y=y, sr=sr, hop_length=hop_length)
    out += [np.mean(contrast), np.std(contrast)]

    # 20-25: Hilbert envelope and its peaks.
    env = np.abs(scipy.signal.hilbert(y))
    env_mean, env_std = np.mean(env), np.std(env)
    peaks, props = scipy.signal.find_peaks(env, height=env_mean, distance=sr // 10)
    heights = props["peak_heights"]
    out += [env_mean, env_std, env_mean / (env_std + EPS), len(peaks),
            np.mean(heights) if len(heights) > 0 else 0.0,
            np.std(heights) if len(heights) > 1 else 0.0]

    # 26: share of STFT energy below 1 kHz.
    S = np.abs(librosa.stft(y, n_fft=LOW_FREQ_N_FFT, hop_length=hop_length))
    low_bins = int(LOW_FREQ_CUTOFF_HZ * LOW_FREQ_N_FFT / sr)
    out += [np.sum(S[:low_bins] ** 2) / (np.sum(S ** 2) + EPS)]

    # 27-29: spectral flux of the dB mel spectrogram.
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_mels=N_MELS, hop_length=hop_length)
    mel_db = librosa.power_to_db(mel, ref=np.max)
    flux = np.sqrt(np.sum(np.diff(mel_db, axis=1) ** 2, axis=0))
    out += [np.mean(flux), np.std(flux), np.max(flux)]

    # 30-33: waveform distribution.
    out += [scipy.stats.skew(y), scipy.stats.kurtosis(y),
            np.percentile(np.abs(y), 90), np.percentile(np.abs(y), 10)]

    # 34-36: normalised autocorrelation.
    r = np.correlate(y, y, "full")[len(y) - 1:]
    r = r / r[0]
    out += [r[sr // 100], r[sr // 50], np.argmin(r[: sr // 20]) / sr]

    # 37-39: skewness of the other spectral-shape descriptors (completes the paper's 39).
    out += [scipy.stats.skew(bandwidth), scipy.stats.skew(rolloff), scipy.stats.skew(flatness)]

    return np.asarray(out, dtype=np.float64)
