"""Synthetic inhale/exhale-like clips in the Kaggle layout, for the no-download default run.

Not a model of real breathing: two classes of band-limited noise that differ the way the
phases often do on a stethoscope — inhale brighter and swelling early, exhale darker and
fading late — with per-session gain, band and timing jitter so that sessions matter, like in
the real data. ``write_synthetic_breath`` writes ``train.csv`` + ``train/*.wav`` (16-bit PCM).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import scipy.signal
import soundfile as sf

BANDS_HZ = {"I": (700.0, 2200.0), "E": (150.0, 900.0)}
"""Pass band of each phase's noise."""

PEAK_AT = {"I": 0.35, "E": 0.65}
"""Where in the clip each phase's loudness envelope peaks (fraction of the clip)."""

BAND_JITTER = 0.15
"""Per-session relative shift of the pass band."""

TIMING_JITTER = 0.1
"""Per-clip shift of the envelope peak (fraction of the clip)."""

GAIN_RANGE_DB = (-18.0, -6.0)
"""Per-session peak level."""

BACKGROUND_DB = -40.0
"""Broadband hiss under every clip, relative to full scale."""

FILTER_ORDER = 4
ENVELOPE_WIDTH = 0.22
"""Standard deviation of the Gaussian loudness envelope (fraction of the clip)."""


def synthetic_clip(phase: str, rng: np.random.Generator, sample_rate: int, n_samples: int,
                   band_shift: float, gain_db: float) -> np.ndarray:
    """One clip of the given phase ("I" or "E"). ``[n_samples]`` float32 in [-1, 1]"""
    low, high = (edge * (1.0 + band_shift) for edge in BANDS_HZ[phase])
    nyquist = sample_rate / 2.0
    sos = scipy.signal.butter(FILTER_ORDER, [low / nyquist, min(high / nyquist, 0.99)], btype="band", output="sos")
    noise = scipy.signal.sosfilt(sos, rng.standard_normal(n_samples))
    t = np.linspace(0.0, 1.0, n_samples)
    centre = PEAK_AT[phase] + rng.uniform(-TIMING_JITTER, TIMING_JITTER)
    envelope = np.exp(-0.5 * ((t - centre) / ENVELOPE_WIDTH) ** 2)
    clip = noise / (np.abs(noise).max() + 1e-12) * envelope * 10.0 ** (gain_db / 20.0)
    clip += rng.standard_normal(n_samples) * 10.0 ** (BACKGROUND_DB / 20.0)
    return np.clip(clip, -1.0, 1.0).astype(np.float32)


def write_synthetic_breath(root: str | Path, n_sessions: int = 48, clips_per_session: int = 4,
                           sample_rate: int = 16000, duration_s: float = 1.0, seed: int = 0,
                           unlabelled_per_session: int = 0) -> Path:
    """Write a labelled Kaggle-layout folder of synthetic clips and return it.

    Session ``k`` is ``steth_20990101_HH_MM_SS``-named like the real data; labels alternate
    within a session with a random start, so the classes are balanced. With
    ``unlabelled_per_session``, each session also gets that many more clips in ``test.csv`` +
    ``test/``, unlabelled (the Kaggle test layout).
    """
    root = Path(root)
    (root / "train").mkdir(parents=True, exist_ok=True)
    if unlabelled_per_session:
        (root / "test").mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    n_samples = int(round(sample_rate * duration_s))
    rows, unlabelled = [], []
    for session in range(n_sessions):
        name = f"steth_20990101_{session // 3600:02d}_{session // 60 % 60:02d}_{session % 60:02d}"
        band_shift = rng.uniform(-BAND_JITTER, BAND_JITTER)
        gain_db = rng.uniform(*GAIN_RANGE_DB)
        first = rng.integers(2)
        for clip in range(clips_per_session + unlabelled_per_session):
            phase = "IE"[(first + clip) % 2]
            audio = synthetic_clip(phase, rng, sample_rate, n_samples, band_shift, gain_db)
            file_name = f"{name}_{clip:03d}.wav"
            if clip < clips_per_session:
                sf.write(root / "train" / file_name, audio, sample_rate, subtype="PCM_16")
                rows.append((f"{name}_{phase}_{clip:03d}", phase))
            else:
                sf.write(root / "test" / file_name, audio, sample_rate, subtype="PCM_16")
                unlabelled.append((file_name,))
    _write_csv(root / "train.csv", ["ID", "Target"], rows)
    if unlabelled:
        _write_csv(root / "test.csv", ["ID"], unlabelled)
    return root


def _write_csv(path: Path, header: list[str], rows: list[tuple]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
