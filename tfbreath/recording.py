"""Long recordings cut into clip-long windows: their P(exhale) and their smoothed breathing phases.

A ``Recording`` is one decoded file at the classifier's rate: its ``audio`` (``[samples]``), the
``starts`` of its windows (``[T]`` sample indices, in time order), then, once ``classify`` has run,
each window's P(exhale) (``probabilities``, ``[T]``) and, once ``smooth`` has, each window's phase
in the recording's most probable phase sequence (``smoothed``, ``[T]`` bool, ``True`` exhale).

Windows are one clip long (the classifier's ``num_samples``), placed by ``window_starts``: the
first starting with the recording, the last ending with it, and as few as keep every step at most
``hop`` samples, spread evenly (steps differ by at most a sample; ``window_step`` is their mean,
the spacing the decoder assumes). A recording of at most one clip has the one window ``ONE_CLIP``,
its audio repeated to fill it (``classifier.window``); so is any file classified as one clip. Such a
recording holding less than ``MIN_AUDIO_FRACTION`` of a clip is mostly padding (``is_padded``).

``classify`` calls a ``tfbreath.classifier.Classifier`` on every window of every recording in
batches; ``smooth`` decodes the phases (``tfbreath.timeline.decode_phases``), ``breathing``
summarises them (rate, I:E ratio, ``tfbreath.timeline.summarize``); ``window_centres_s`` places each
window in time, ``sample_probability`` spreads the windows' P(exhale) over the samples they cover.
``python -m tfbreath.predict`` classifies long recordings this way (``--hop``), as does
``benchmarks/breathing_rate.py``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from tqdm.auto import tqdm

from tfbreath import timeline
from tfbreath.classifier import Classifier, window

MIN_AUDIO_FRACTION = 0.5
"""A recording with less audio than this fraction of a clip is mostly repeats of itself (predict flags
its prediction ``Padded`` and warns about it)."""

ONE_CLIP = np.zeros(1, np.int64)
"""Window starts of a file classified as one clip (trimmed or repeated to fill it)."""


@dataclasses.dataclass(frozen=True)
class Recording:
    """One decoded file at the classifier's rate, its window starts and their P(exhale)."""

    id: str
    """Its name: in predict's CSV, the file name or the competition's ID (``--kaggle``)."""
    path: Path
    audio: np.ndarray
    starts: np.ndarray
    probabilities: np.ndarray | None = None
    smoothed: np.ndarray | None = None
    """Per window: the decoded phase (``True`` exhale) of ``tfbreath.timeline.decode_phases``."""


def window_starts(length: int, clip: int, hop: int) -> np.ndarray:
    """Starts of clip-long windows from ``0`` to ``length - clip``, the fewest with every step at
    most ``hop``, evenly spread (rounded to samples). ``-> [T]`` int64

    ``[0]`` when the audio fits in one clip (it is then repeated to fill it). Spreading the windows keeps
    them one spacing apart: a last window a few samples after the one before would be counted as a
    whole step of the recording's timeline.
    """
    span = length - clip
    if span <= 0:
        return ONE_CLIP
    steps = -(-span // hop)                                             # ceil: the fewest steps <= hop
    return (np.arange(steps + 1, dtype=np.int64) * span + steps // 2) // steps   # [steps + 1], rounded


def window_step(starts: np.ndarray, hop: int) -> float:
    """Mean samples between consecutive window starts (``hop`` for a single window)."""
    return float(starts[-1] - starts[0]) / (len(starts) - 1) if len(starts) > 1 else float(hop)


def _batches(recordings: Sequence[Recording], clip: int, batch_size: int) -> Iterator[np.ndarray]:
    """Every window of every recording, in order, as ``[<= batch_size, clip]`` arrays."""
    windows = [(r.audio, int(s)) for r in recordings for s in r.starts]
    for first in range(0, len(windows), batch_size):
        yield np.stack([window(audio, start, clip) for audio, start in windows[first:first + batch_size]])


def classify(classifier: Classifier, recordings: Sequence[Recording], batch_size: int) -> list[Recording]:
    """The recordings with the P(exhale) of each window, from batched model calls."""
    batches = _batches(recordings, classifier.num_samples, batch_size)
    total = sum(len(r.starts) for r in recordings)
    probabilities = np.concatenate([classifier(batch) for batch in tqdm(
        batches, desc="classify", unit="batch", total=-(-total // batch_size), leave=False, disable=None)])
    ends = np.cumsum([len(r.starts) for r in recordings])
    return [dataclasses.replace(r, probabilities=p)
            for r, p in zip(recordings, np.split(probabilities, ends[:-1]))]


def is_padded(recording: Recording, clip: int) -> bool:
    """Whether the recording fills less than ``MIN_AUDIO_FRACTION`` of a clip (only a recording
    shorter than a clip is padded: the windows of a longer one are all full)."""
    return len(recording.audio) < MIN_AUDIO_FRACTION * clip


def sample_probability(recording: Recording, clip: int) -> np.ndarray:
    """Per sample: the mean P(exhale) of the windows covering it. ``-> [len(audio)]``"""
    length = len(recording.audio)
    total, count = np.zeros(length + clip), np.zeros(length + clip)
    for start, probability in zip(recording.starts, recording.probabilities):
        total[start:start + clip] += probability
        count[start:start + clip] += 1
    return (total / np.maximum(count, 1))[:length]


def window_centres_s(recording: Recording, clip: int, sample_rate: int) -> np.ndarray:
    """Each window's centre in seconds (the one window of a short recording: its audio's middle). ``-> [T]``"""
    return (recording.starts + min(clip, len(recording.audio)) / 2) / sample_rate


def smooth(recordings: Sequence[Recording], hop: int, sample_rate: int,
           config: timeline.TimelineConfig) -> list[Recording]:
    """The recordings with each window's phase in their most probable phase sequence (windows
    ``window_step`` apart; ``hop`` is the step asked for, in samples)."""
    return [dataclasses.replace(r, smoothed=timeline.decode_phases(
        r.probabilities, window_step(r.starts, hop) / sample_rate, config)) for r in recordings]


def breathing(recording: Recording, clip: int, sample_rate: int) -> timeline.BreathingSummary:
    """Rate, I:E ratio and phase counts of a smoothed recording (``timeline.summarize``)."""
    return timeline.summarize(recording.smoothed, window_centres_s(recording, clip, sample_rate),
                              len(recording.audio) / sample_rate, recording.probabilities)
