"""librosa reference for the nine spectral maps (see ``tfbreath.maps`` for the recipe).

Written the obvious way, one librosa call per step, in librosa's freq-major layout
``[bands, frames]``; ``reference_maps`` returns the stacked ``[n_mels, frames, C]`` input.
"""

from __future__ import annotations

import librosa
import numpy as np
import scipy.fft
import scipy.ndimage

from tfbreath.config import FeatureConfig

# The recipe's constants, written here rather than imported from tfbreath, so a change on the
# TensorFlow side shows up as a parity failure instead of moving both sides together.
CENS_THRESHOLDS = (0.4, 0.2, 0.1, 0.05)
CENS_STEP = 0.25
CENS_SMOOTHING_FRAMES = 41
"""librosa.feature.chroma_cens's quantisation steps, weight per step and win_len_smooth."""
PRE_EMPHASIS = 0.97
"""Before the LPC (the usual speech value, as tfbreath documents it)."""
N_MODULATION = 40
"""Quefrency rows of the modulation spectrum."""
PER_BAND_ZSCORE = frozenset({"mfcc", "chroma"})
"""Maps z-scored per band over time; the rest as a whole."""
ZSCORE_EPS = 1e-8


def _cens(chroma: np.ndarray) -> np.ndarray:
    """librosa.feature.chroma_cens's steps applied to an STFT chroma (librosa's own takes a CQT)."""
    distribution = librosa.util.normalize(chroma, norm=1, axis=0)
    quantised = sum(CENS_STEP * (distribution > step) for step in CENS_THRESHOLDS)
    window = librosa.filters.get_window("hann", CENS_SMOOTHING_FRAMES + 2, fftbins=False)
    smooth = scipy.ndimage.convolve(quantised, (window / window.sum())[np.newaxis, :], mode="constant")
    return librosa.util.normalize(smooth, norm=2, axis=0)


def _lpc_frames(y: np.ndarray, sample_rate: int, features: FeatureConfig) -> np.ndarray:
    frame_length = int(round(features.lpc_frame_s * sample_rate))
    emphasised = np.append(y[0], y[1:] - PRE_EMPHASIS * y[:-1])
    padded = np.pad(emphasised, frame_length // 2)
    n_frames = 1 + len(y) // features.hop_length
    window = np.hamming(frame_length)
    rows = []
    for t in range(n_frames):
        start = t * features.hop_length
        segment = padded[start:start + frame_length] * window
        try:
            rows.append(librosa.lpc(segment, order=features.lpc_order)[1:])
        except FloatingPointError:
            rows.append(np.zeros(features.lpc_order))
    return np.array(rows).T


def reference_raw_maps(y: np.ndarray, sample_rate: int, features: FeatureConfig) -> dict[str, np.ndarray]:
    """Each map before normalisation, freq-major ``[bands, frames]``."""
    f = features
    stft = np.abs(librosa.stft(y, n_fft=f.n_fft, hop_length=f.hop_length))
    mel = librosa.feature.melspectrogram(y=y, sr=sample_rate, n_fft=f.n_fft, hop_length=f.hop_length,
                                         n_mels=f.n_mels, fmax=f.fmax)
    mel_db = librosa.power_to_db(mel, ref=np.max)
    mfcc = librosa.feature.mfcc(y=y, sr=sample_rate, n_mfcc=f.n_mfcc, n_fft=f.n_fft,
                                hop_length=f.hop_length, n_mels=f.n_mels)
    chroma = librosa.feature.chroma_stft(S=stft, sr=sample_rate, n_fft=f.n_fft,
                                         hop_length=f.hop_length, tuning=0.0)
    onset = librosa.onset.onset_strength(y=y, sr=sample_rate, hop_length=f.hop_length)
    gammatone_bank = librosa.filters.mel(sr=sample_rate, n_fft=f.n_fft, n_mels=f.n_gammatone)
    builders = {
        "mel": lambda: mel_db,
        "mel_delta": lambda: librosa.feature.delta(mel_db, order=1),
        "mel_delta2": lambda: librosa.feature.delta(mel_db, order=2),
        "mfcc": lambda: np.vstack([mfcc, librosa.feature.delta(mfcc, order=1),
                                   librosa.feature.delta(mfcc, order=2)]),
        "chroma": lambda: np.vstack([chroma, _cens(chroma)]),
        "gammatone": lambda: np.log1p(gammatone_bank @ stft),
        "modulation": lambda: scipy.fft.dct(scipy.fft.dct(mel_db, axis=0, norm="ortho")[:N_MODULATION],
                                            axis=1, norm="ortho"),
        "tempogram": lambda: librosa.feature.tempogram(onset_envelope=onset, sr=sample_rate,
                                                       hop_length=f.hop_length),
        "lpc": lambda: _lpc_frames(y, sample_rate, f),
    }
    return {name: builders[name]() for name in f.maps}


def _finish(raw: np.ndarray, per_band: bool, n_bands: int) -> np.ndarray:
    axis = 1 if per_band else None
    mean = raw.mean(axis=axis, keepdims=per_band)
    std = raw.std(axis=axis, keepdims=per_band)
    normalised = (raw - mean) / (std + ZSCORE_EPS)
    if normalised.shape[0] >= n_bands:
        return normalised[:n_bands]
    filler = np.full((n_bands - normalised.shape[0], normalised.shape[1]), normalised.min())
    return np.vstack([normalised, filler])


def reference_maps(y: np.ndarray, sample_rate: int, features: FeatureConfig) -> np.ndarray:
    """Stacked, normalised maps ``[n_mels, frames, len(features.maps)]``."""
    raw = reference_raw_maps(y, sample_rate, features)
    return np.stack([_finish(raw[name], name in PER_BAND_ZSCORE, features.n_mels) for name in features.maps],
                    axis=-1).astype(np.float32)
