"""Synthetic recordings in the ICBHI 2017 layout: a small, learnable 4-class cycle task.

Not a model of real lung sounds: every cycle is band-limited breath noise under a swell, and
the adventitious sounds are added the way the paper describes them: crackles as trains of
short (5-15 ms) damped bursts around 300-800 Hz, wheezes as a sustained tone of 250-800 Hz
lasting most of the cycle. "Both" cycles carry both. Recordings are written as ICBHI names them
(``patient_index_location_mode_device``), with one device per patient, a mix of sample rates
and bit depths, a ``.txt`` of ``start\\tend\\tcrackle\\twheeze`` lines, and optionally the
official-style split list and diagnosis file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.signal
import soundfile as sf

from tfbreath.icbhi.reader import DIAGNOSIS_FILES, OFFICIAL_SPLIT_FILE, TEST, TRAIN, Cycle

DEVICE_FORMATS = {"AKGC417L": (22050, "PCM_24"), "LittC2SE": (8000, "PCM_16"),
                  "Meditron": (44100, "PCM_16"), "Litt3200": (4000, "PCM_16")}
"""Sample rate and WAV subtype written for each device (a spread like the real data's 4-44.1 kHz)."""

LOCATIONS = ("Tc", "Al", "Ar", "Pl", "Pr", "Ll", "Lr")
DIAGNOSES = ("COPD", "URTI", "Healthy", "Asthma")

CLASS_PROBABILITIES = (0.4, 0.2, 0.2, 0.2)
"""Share of normal / crackle / wheeze / both cycles (normal the most common, as in ICBHI)."""

CYCLE_S = (1.2, 3.0)
"""Range of cycle lengths (ICBHI's mean cycle is 2.7 s)."""

LEAD_S = (0.0, 0.4)
"""Silence-free lead-in before the first cycle and tail after the last."""

BREATH_BAND_HZ = (100.0, 900.0)
BREATH_LEVEL = 0.15
CRACKLES_PER_CYCLE = (6, 14)
CRACKLE_HZ = (300.0, 800.0)
CRACKLE_DECAY_S = 0.004
"""Time constant of a crackle's damped burst (a 5-15 ms click)."""
CRACKLE_LEVEL = 0.5
WHEEZE_HZ = (250.0, 800.0)
WHEEZE_GLIDE = 0.1
"""Relative pitch drift of a wheeze over its length."""
WHEEZE_LEVEL = 0.2
WHEEZE_SPAN = (0.5, 0.9)
"""Share of the cycle a wheeze lasts."""
BACKGROUND_LEVEL = 0.003
PEAK = 0.8
"""Each recording is scaled to this peak before writing."""
FILTER_ORDER = 4


def _breath(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """Band-limited noise under a sin^2 swell. ``[n]``"""
    high = min(BREATH_BAND_HZ[1], 0.45 * rate)
    sos = scipy.signal.butter(FILTER_ORDER, [BREATH_BAND_HZ[0], high], btype="band", fs=rate, output="sos")
    noise = scipy.signal.sosfilt(sos, rng.standard_normal(n))
    swell = np.sin(np.pi * np.linspace(0.0, 1.0, n)) ** 2
    return BREATH_LEVEL * noise / (np.abs(noise).max() + 1e-12) * swell


def _crackles(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """A train of short damped bursts at random times. ``[n]``"""
    out = np.zeros(n)
    burst_t = np.arange(int(5 * CRACKLE_DECAY_S * rate)) / rate
    for _ in range(rng.integers(*CRACKLES_PER_CYCLE)):
        freq = rng.uniform(*CRACKLE_HZ)
        burst = np.sin(2 * np.pi * freq * burst_t) * np.exp(-burst_t / CRACKLE_DECAY_S)
        at = rng.integers(0, max(1, n - len(burst)))
        out[at:at + len(burst)] += CRACKLE_LEVEL * rng.uniform(0.6, 1.0) * burst[:n - at]
    return out


def _wheeze(rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """A gliding tone over most of the cycle, faded in and out. ``[n]``"""
    length = int(n * rng.uniform(*WHEEZE_SPAN))
    start = rng.integers(0, n - length + 1)
    f0 = rng.uniform(*WHEEZE_HZ)
    freq = f0 * (1.0 + WHEEZE_GLIDE * rng.uniform(-1, 1) * np.linspace(0.0, 1.0, length))
    tone = np.sin(2 * np.pi * np.cumsum(freq) / rate) * np.hanning(length)
    out = np.zeros(n)
    out[start:start + length] = WHEEZE_LEVEL * tone
    return out


def synthetic_cycle(label4: int, rng: np.random.Generator, n: int, rate: int) -> np.ndarray:
    """One cycle of class ``label4`` (0 normal, 1 crackle, 2 wheeze, 3 both). ``[n]`` float64"""
    cycle = _breath(rng, n, rate)
    if label4 in (1, 3):
        cycle += _crackles(rng, n, rate)
    if label4 in (2, 3):
        cycle += _wheeze(rng, n, rate)
    return cycle


def write_recording(root: str | Path, stem: str, waveform: np.ndarray, sample_rate: int,
                    cycles: Sequence[Cycle], subtype: str = "PCM_16") -> Path:
    """Write ``<stem>.wav`` and its ``<stem>.txt`` annotation into ``root``; returns the WAV path."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    wav = root / f"{stem}.wav"
    sf.write(wav, np.asarray(waveform, np.float64), sample_rate, subtype=subtype)
    lines = [f"{c.start_s:.4f}\t{c.end_s:.4f}\t{int(c.crackle)}\t{int(c.wheeze)}" for c in cycles]
    (root / f"{stem}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return wav


def write_split_list(root: str | Path, stems: Sequence[str], test_fraction: float = 0.4, seed: int = 0) -> Path:
    """An official-style ``<stem>\\t<train|test>`` list, whole patients to a side. Returns its path."""
    rng = np.random.default_rng(seed)
    patients = sorted({stem.split("_")[0] for stem in stems})
    n_test = max(1, int(round(test_fraction * len(patients))))
    test = set(rng.permutation(patients)[:n_test].tolist())
    path = Path(root) / OFFICIAL_SPLIT_FILE
    path.write_text("".join(f"{s}\t{TEST if s.split('_')[0] in test else TRAIN}\n" for s in stems), encoding="utf-8")
    return path


def write_synthetic_icbhi(root: str | Path, n_patients: int = 10, recordings_per_patient: int = 2,
                          cycles_per_recording: int = 6, seed: int = 0, split_list: bool = True,
                          diagnosis: bool = True) -> Path:
    """Write an ICBHI-layout folder of synthetic recordings into ``root`` and return ``root``.

    Patient ``k`` is ``101 + k`` and records with device ``k mod 4`` (all four devices appear
    once ``n_patients >= 4``). ``split_list`` writes ``ICBHI_challenge_train_test.txt`` (60/40 by
    patient), ``diagnosis`` writes ``ICBHI_Challenge_diagnosis.txt``.
    """
    root = Path(root)
    rng = np.random.default_rng(seed)
    devices = list(DEVICE_FORMATS)
    stems = []
    for k in range(n_patients):
        patient = str(101 + k)
        device = devices[k % len(devices)]
        rate, subtype = DEVICE_FORMATS[device]
        for r in range(recordings_per_patient):
            location = LOCATIONS[r % len(LOCATIONS)]
            stem = f"{patient}_{r + 1}b1_{location}_{'mc' if recordings_per_patient > 1 else 'sc'}_{device}"
            pieces = [np.zeros(int(rng.uniform(*LEAD_S) * rate))]
            cycles = []
            at = len(pieces[0])
            for _ in range(cycles_per_recording):
                label = int(rng.choice(len(CLASS_PROBABILITIES), p=CLASS_PROBABILITIES))
                n = int(rng.uniform(*CYCLE_S) * rate)
                pieces.append(synthetic_cycle(label, rng, n, rate))
                cycles.append(Cycle(at / rate, (at + n) / rate, label in (1, 3), label in (2, 3)))
                at += n
            pieces.append(np.zeros(int(rng.uniform(*LEAD_S) * rate)))
            waveform = np.concatenate(pieces)
            waveform += BACKGROUND_LEVEL * rng.standard_normal(len(waveform))
            write_recording(root, stem, PEAK * waveform / np.abs(waveform).max(), rate, cycles, subtype)
            stems.append(stem)
    if split_list:
        write_split_list(root, stems, seed=seed)
    if diagnosis:
        lines = [f"{101 + k}\t{DIAGNOSES[k % len(DIAGNOSES)]}\n" for k in range(n_patients)]
        (root / DIAGNOSIS_FILES[0]).write_text("".join(lines), encoding="utf-8")
    return root
