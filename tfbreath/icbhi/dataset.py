"""ICBHI cycles: from the database folder to padded waveforms to tf.data batches.

``load_cycle_sets(config, root)`` reads the database (``reader``), splits it
(``config.split``), preprocesses each recording in a tf.data pipeline (``preprocess``: 4 kHz,
Butterworth band, [-1, 1]), cuts every annotated cycle out and pads it to ``cycle_s``
(``padding``: smart padding on the training side, and on the test side only with
``padding.smart_test``); a longer cycle is cut to ``cycle_s`` or, with ``[padding] long_cycles =
"windows"``, into windows that are examples of their own (``tfbreath.recording.window_starts``)
and vote at test time (``CycleSet.per_cycle``). The result is two ``CycleSet``s of numpy arrays, computed once.

``CycleSet.dataset(config, batch_size, training)`` serves ``(spectrogram [B, H, W, 1],
one_hot [B, classes])`` batches; spectrograms (``spectrogram``) and, when training, the
augmentations and the class-balanced sampler (``augment``) are computed in-graph per batch:
index stream -> batch -> gather -> augment -> spectrogram -> prefetch.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from tfbreath import audio
from tfbreath.icbhi.augment import CycleAugmenter, balanced_indices
from tfbreath.icbhi.config import IcbhiConfig
from tfbreath.icbhi.padding import smart_pad
from tfbreath.icbhi.preprocess import cut_cycle, recording_dataset
from tfbreath.icbhi.reader import IcbhiError, ReadReport, Recording, read_database, split_recordings
from tfbreath.icbhi.spectrogram import cycle_spectrogram
from tfbreath.recording import window_starts

CLASS_NAMES = {4: ("normal", "crackle", "wheeze", "both"), 2: ("normal", "abnormal")}
"""Class names by index, for each task size."""

TIE_BREAK = 1e-3
"""Weight of the windows' mean probability in a cycle's vote: it only decides between classes
with equally many windows (a vote share differs by at least 1 / windows, far more)."""


@dataclasses.dataclass(frozen=True, eq=False)
class CycleSet:
    """Preprocessed cycles, each padded to ``cycle_s``, with its label, device and recording.

    ``waveforms[i, offsets[i]:offsets[i] + lengths[i]]`` is cycle i's own audio (the rest is
    padding); both default to the whole waveform, for cycles made elsewhere. ``cycle_ids[i]``
    numbers the annotated cycle a row comes from: rows are windows of one long cycle when they
    share it (default: every row its own cycle).
    """

    waveforms: np.ndarray  # [N, samples] float32
    labels: np.ndarray  # [N] int64, per config.train.classes
    devices: np.ndarray  # [N] str_
    recordings: np.ndarray  # [N] str_ (stems)
    offsets: np.ndarray | None = None  # [N] int32
    lengths: np.ndarray | None = None  # [N] int32
    cycle_ids: np.ndarray | None = None  # [N] int64

    def __post_init__(self) -> None:
        waveforms = np.asarray(self.waveforms, np.float32)
        if waveforms.ndim != 2:
            raise ValueError(f"waveforms must be [N, samples], got shape {waveforms.shape}")
        n, samples = waveforms.shape
        offsets = np.zeros(n) if self.offsets is None else self.offsets
        lengths = np.full(n, samples) if self.lengths is None else self.lengths
        cycle_ids = np.arange(n) if self.cycle_ids is None else self.cycle_ids
        arrays = {"waveforms": waveforms, "labels": np.asarray(self.labels, np.int64),
                  "devices": np.asarray(self.devices, np.str_), "recordings": np.asarray(self.recordings, np.str_),
                  "offsets": np.asarray(offsets, np.int32), "lengths": np.asarray(lengths, np.int32),
                  "cycle_ids": np.asarray(cycle_ids, np.int64)}
        for name, array in arrays.items():
            if len(array) != n:
                raise ValueError(f"{name} must have {n} entries (one per waveform), got {len(array)}")
            object.__setattr__(self, name, array)

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int] | np.ndarray) -> "CycleSet":
        indices = np.asarray(indices, np.int64)
        return CycleSet(self.waveforms[indices], self.labels[indices], self.devices[indices],
                        self.recordings[indices], self.offsets[indices], self.lengths[indices],
                        self.cycle_ids[indices])

    def per_cycle(self, probabilities: np.ndarray) -> tuple[np.ndarray, "CycleSet"]:
        """Row probabilities ``[N, C]`` to one score row per annotated cycle ``[M, C]``, with the
        ``CycleSet`` of each cycle's first row (its label, device and recording).

        A cycle of one row keeps its probabilities. The windows of a long cycle vote: a cycle's
        score is the share of its windows whose most probable class is each class, plus
        ``TIE_BREAK`` times their mean probability, so ``argmax`` is the majority class and a
        tie goes to the higher mean probability.
        """
        ids, first, owner = np.unique(self.cycle_ids, return_index=True, return_inverse=True)  # [M], [M], [N]
        if len(ids) == len(self):
            return probabilities, self
        classes = probabilities.shape[-1]
        votes = np.zeros((len(ids), classes))
        np.add.at(votes, owner, np.eye(classes)[np.argmax(probabilities, axis=-1)])  # [M, C] window counts
        sums = np.zeros((len(ids), classes))
        np.add.at(sums, owner, probabilities)
        windows = np.bincount(owner, minlength=len(ids))[:, None]  # [M, 1]
        scores = (votes + TIE_BREAK * sums) / windows
        return scores.astype(np.float32), self.subset(first)

    def dataset(self, config: IcbhiConfig, batch_size: int, training: bool,
                seed: int | None = None) -> tf.data.Dataset:
        """``(spectrogram [B, H, W, 1], one_hot [B, classes])`` batches, one epoch = ``len(self)`` cycles.

        ``training=False``: every cycle once, in order, unaugmented. ``training=True``: the
        cycles drawn by the class-balanced sampler (or shuffled, with ``balanced_sampler = false``),
        then augmented as ``config.augment`` says; ``seed`` makes it reproducible.
        """
        if len(self) == 0:
            raise ValueError("cannot make a dataset of an empty CycleSet")
        classes = config.train.classes
        if self.labels.min() < 0 or self.labels.max() >= classes:
            raise ValueError(f"labels must be in [0, {classes}), got {sorted(set(self.labels.tolist()))}")
        columns = tuple(tf.constant(a) for a in (self.waveforms, self.labels, self.offsets, self.lengths,
                                                 self.cycle_ids))

        def gather(indices: tf.Tensor) -> tuple[tf.Tensor, ...]:
            return tuple(tf.gather(column, indices) for column in columns)  # [B, L], [B], [B], [B], [B]

        def model_inputs(waveforms, labels, *offsets_lengths_ids):
            return cycle_spectrogram(waveforms, config), tf.one_hot(labels, classes, dtype=tf.float32)

        if not training:
            indices = tf.data.Dataset.range(len(self))
        elif config.augment.balanced_sampler:
            indices = balanced_indices(self.labels, seed).take(len(self))
        else:
            indices = tf.data.Dataset.range(len(self)).shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        ds = indices.batch(batch_size).map(gather)
        if training:
            ds = ds.map(CycleAugmenter(config.augment, seed))  # sequential: seeded runs reproduce
        ds = ds.map(model_inputs, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.prefetch(tf.data.AUTOTUNE)


def build_cycle_set(recordings: Sequence[Recording], config: IcbhiConfig, smart: bool,
                    report: ReadReport, description: str = "cycles", progress: bool = True) -> CycleSet:
    """Preprocess the recordings, cut and pad their cycles; undecodable recordings are reported skips."""
    rate, length, classes = config.audio.sample_rate, config.audio.num_samples, config.train.classes
    windowed, hop = config.padding.long_cycles == "windows", int(round(config.padding.window_hop_s * rate))
    waveforms, labels, devices, stems, offsets, lengths, cycle_ids = [], [], [], [], [], [], []
    kept_cycles = 0
    stream = recording_dataset([str(r.wav) for r in recordings], config.audio).as_numpy_iterator()
    for recording, (signal, status) in tqdm(zip(recordings, stream), total=len(recordings), desc=description,
                                            unit="recording", disable=not progress, leave=False):
        if status != audio.OK:
            report.skip_file(recording.wav, "undecodable WAV", f"{recording.wav}: {audio.status_message(status)}")
            report.recordings -= 1
            report.cycles -= len(recording.cycles)
            continue
        cycles = [cut_cycle(signal, cycle, rate) for cycle in recording.cycles]
        cycle_labels = [cycle.label(classes) for cycle in recording.cycles]
        for i, cycle in enumerate(cycles):
            if len(cycle) == 0:
                report.skip_cycle(recording.wav, "empty cycle",
                                  f"{recording.wav}: cycle {i + 1} has no samples at {rate} Hz")
                report.cycles -= 1
                continue
            if windowed and len(cycle) > length:
                pieces = [(np.asarray(cycle[start:start + length], np.float32), 0, length)
                          for start in window_starts(len(cycle), length, hop)]
            else:
                padded = smart_pad(cycles, cycle_labels, i, length, smart)
                pieces = [(padded.waveform, padded.offset, padded.cycle_length)]
            for waveform, offset, own_length in pieces:
                waveforms.append(waveform)
                offsets.append(offset)
                lengths.append(own_length)
                labels.append(cycle_labels[i])
                devices.append(recording.device)
                stems.append(recording.stem)
                cycle_ids.append(kept_cycles)
            kept_cycles += 1
    if not waveforms:
        raise IcbhiError(f"{report.root}: no usable cycles for the {description} set")
    return CycleSet(np.stack(waveforms), np.array(labels), np.array(devices), np.array(stems),
                    np.array(offsets), np.array(lengths), np.array(cycle_ids))


def load_cycle_sets(config: IcbhiConfig, root: str | Path,
                    progress: bool = True) -> tuple[CycleSet, CycleSet, ReadReport]:
    """``(train, test, report)``: the database under ``root``, split and padded as ``config`` says.

    ``report`` says what was read and skipped, and which split scheme was actually made.
    """
    recordings, report = read_database(root)
    split = split_recordings(recordings, config.split, root)
    report.split_scheme, report.split_note = split.scheme, split.note
    smart = config.padding.smart
    train_set = build_cycle_set(split.train, config, smart, report, "train", progress)
    test_set = build_cycle_set(split.test, config, smart and config.padding.smart_test, report, "test", progress)
    return train_set, test_set, report
