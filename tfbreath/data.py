"""Datasets: Kaggle-layout and plain folders of WAVs to cached tf.data feature pipelines.

Layouts read:

- Kaggle labelled: ``train.csv`` (``ID,Target``, Target ``I`` or ``E``) with ``train/*.wav``,
  where the file name is the ID without its ``_I_``/``_E_`` token. Labels come from the
  ``Target`` column only (I -> 0, E -> 1), never from names.
- Kaggle unlabelled: ``test.csv`` (``ID`` = file name) with ``test/*.wav``.
- Any files or folders of ``*.wav`` (unlabelled).

The CSVs are UTF-8, with or without a byte-order mark. A CSV problem (not UTF-8, a missing
column or value, an ID on two rows, two IDs naming one WAV, a missing WAV) is a ``DataError``
naming the file and its line(s); a WAV that exists but cannot be read or decoded is skipped at
extraction and reported.

``split_by_session`` makes a stratified train/validation split in which no recording session
(``steth_YYYYMMDD_HH_MM_SS``) is on both sides. ``extract`` runs decode -> features -> cache
once, with a progress bar, counting and reporting the files it had to skip;
``FeatureSet.batches`` then serves ``({"spectral", "scalars"}, label)`` batches:
cache -> shuffle -> batch -> prefetch.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import os
import re
from collections import Counter
from pathlib import Path
from typing import Sequence

import numpy as np
import tensorflow as tf
from sklearn.model_selection import StratifiedGroupKFold
from tqdm.auto import tqdm

from tfbreath import audio
from tfbreath.config import PipelineConfig
from tfbreath.errors import TfbreathError
from tfbreath.features import extract_features

LABELS = {"I": 0, "E": 1}
"""Target letter -> class index (P(exhale) is the model's output)."""

LABEL_NAMES = tuple(LABELS)

LABEL_WORDS = {"I": "inhale", "E": "exhale"}
"""Target letter -> the phase it names, for people and apps reading a model's labels."""

UNLABELLED = -1.0
"""Label stored for files without one."""

SESSION_PATTERN = re.compile(r"^(steth_\d{8}_\d{2}_\d{2}_\d{2})")
LABEL_TOKEN = re.compile(r"_[IE]_(\d+)$")

FEATURE_BATCH = 8
"""Clips per in-graph feature call, vectorised over the batch. 8 measured fastest on 2 cores
(``benchmarks/feature_speed.py --compare-feature-batches 4 6 8 10 ...``, 6 interleaved
rounds: 374 clips/s at 8 vs 362 at 16, faster in 6 of 6 rounds, and 370 vs 337 in 5 of 6 in
a second run; 4, 6 and 24 were slower than 16, 10 level with it): most of the graph's ops are
memory-bound (Burg LPC, spectra), and smaller batches keep their arrays in cache."""

EPOCH_SEED_STRIDE = 1 << 20
"""Shuffle seed of an epoch: ``seed * EPOCH_SEED_STRIDE + epoch``, distinct for every (seed, epoch < 2**20)."""

EPOCH_ORDER_GRAPH_SEED = 1
"""The graph-level half of that shuffle's seed pair, fixed, so the order depends on (seed, epoch)
alone and not on TensorFlow's global seed. A global seed of 0 also made TensorFlow's seed check
read the epoch tensor as a Python bool, which fails in a graph (``fit --seed 0`` crashed)."""

CACHE_KEY_DIGITS = 12
"""Hex digits of the hash that ends a file cache's name (``cache_for``)."""

STATUS = "status"
LABEL = "label"
INDEX = "index"


class DataError(TfbreathError, ValueError):
    """A data folder or CSV is unusable; the message names the file (and row) and the problem."""


@dataclasses.dataclass(frozen=True)
class Examples:
    """Audio files with their labels (``UNLABELLED`` when unknown) and recording-session groups."""

    files: tuple[Path, ...]
    labels: np.ndarray
    groups: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.files)

    def subset(self, indices: Sequence[int]) -> "Examples":
        return Examples(tuple(self.files[i] for i in indices), self.labels[list(indices)],
                        tuple(self.groups[i] for i in indices))


def session_of(name: str) -> str:
    """Recording session of a clip ID or file name; the name itself when it has none."""
    match = SESSION_PATTERN.match(Path(name).stem)
    return match.group(1) if match else Path(name).stem


ID = "ID"
TARGET = "Target"


def _read_csv(path: Path, columns: tuple[str, ...]) -> list[tuple[int, dict[str, str]]]:
    """``(line number, stripped values)`` of every row of a UTF-8 CSV (a byte-order mark allowed,
    as Excel writes one); every row has a value in each of ``columns``, and no ``ID`` repeats."""
    if path.is_dir():
        raise DataError(f"{path}: is a folder, not a CSV file")
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise DataError(f"{path}: cannot be read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        byte = err.object[err.start]
        raise DataError(f"{path}: not UTF-8 text (byte 0x{byte:02x} at offset {err.start})") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows, first_line_of = [], {}
    try:
        if reader.fieldnames is None:
            raise DataError(f"{path}: empty file, no header line (expected columns {list(columns)})")
        missing = [c for c in columns if c not in reader.fieldnames]
        if missing:
            raise DataError(f"{path}: missing column(s) {missing}; header is {reader.fieldnames}")
        for row in reader:
            line = reader.line_num
            values = {c: (row[c] or "").strip() for c in columns}
            empty = [c for c in columns if not values[c]]
            if empty:
                raise DataError(f"{path} row {line}: no {' or '.join(empty)} value")
            clip_id = values[ID]
            if clip_id in first_line_of:
                raise DataError(f"{path} rows {first_line_of[clip_id]} and {line}: duplicate ID {clip_id!r}")
            first_line_of[clip_id] = line
            rows.append((line, values))
    except csv.Error as err:
        raise DataError(f"{path}: not a readable CSV ({err}, after line {reader.line_num})") from None
    return rows


def _wavs_of_rows(csv_path: Path, rows: list[tuple[int, dict[str, str]]], wav_of) -> list[Path]:
    """Each row's WAV, ``wav_of(ID)``: it must exist, and no two rows may name the same one.

    A path that exists but is not a readable file (a folder, no read permission) is kept: the
    extraction skips it as ``audio.UNREADABLE`` and reports it with the other bad files.
    """
    wavs, first_row_of = [], {}
    for line, row in rows:
        wav = wav_of(row[ID])
        if not wav.exists():
            raise DataError(f"{csv_path} row {line}: WAV for {row[ID]!r} not found at {wav}")
        same = wav.resolve()  # an ID may reach the file by another spelling of its path (../train/...)
        if same in first_row_of:
            first_line, first_id = first_row_of[same]
            raise DataError(f"{csv_path} rows {first_line} and {line}: {row[ID]!r} names the same WAV as "
                            f"{first_id!r} ({wav})")
        first_row_of[same] = (line, row[ID])
        wavs.append(wav)
    return wavs


def read_kaggle_train(root: str | Path) -> Examples:
    """``train.csv`` + ``train/*.wav``; every row must name its own existing WAV and a known label."""
    root = Path(root)
    csv_path = root / "train.csv"
    rows = _read_csv(csv_path, (ID, TARGET))
    for line, row in rows:
        if row[TARGET] not in LABELS:
            raise DataError(f"{csv_path} row {line}: unknown Target {row[TARGET]!r} for {row[ID]!r} "
                            f"(expected one of {list(LABELS)})")
    if not rows:
        raise DataError(f"{csv_path}: no data rows, only a header")
    files = _wavs_of_rows(csv_path, rows, lambda clip_id: root / "train" / (LABEL_TOKEN.sub(r"_\1", clip_id)
                                                                             + ".wav"))
    labels = np.array([LABELS[row[TARGET]] for _, row in rows], np.float32)
    return Examples(tuple(files), labels, tuple(session_of(row[ID]) for _, row in rows))


def read_kaggle_test(root: str | Path) -> tuple[list[str], Examples]:
    """``test.csv`` + ``test/``: the competition IDs (as written) and their unlabelled files."""
    root = Path(root)
    csv_path = root / "test.csv"
    rows = _read_csv(csv_path, (ID,))
    files = _wavs_of_rows(csv_path, rows, lambda clip_id: root / "test" / (
        clip_id if clip_id.endswith(".wav") else clip_id + ".wav"))
    return [row[ID] for _, row in rows], unlabelled(files)


def collect_wav_files(inputs: Sequence[str | Path]) -> list[Path]:
    """WAV files named directly or found (sorted, recursively) in the given folders.

    A folder named ``*.wav`` is searched, not collected; any other ``*.wav`` entry is, and one
    that cannot be read is skipped and reported at extraction (``audio.UNREADABLE``).
    """
    files: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.suffix.lower() == ".wav" and not p.is_dir())
            if not found:
                raise DataError(f"{item}: folder has no .wav files")
            files.extend(found)
        elif item.is_file():
            files.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    return files


def unlabelled(files: Sequence[Path]) -> Examples:
    files = tuple(Path(f) for f in files)
    return Examples(files, np.full(len(files), UNLABELLED, np.float32), tuple(session_of(f.name) for f in files))


def split_by_session(examples: Examples, validation_fraction: float, seed: int) -> tuple[Examples, Examples]:
    """Stratified train/validation split that keeps each recording session on one side.

    Uses scikit-learn's ``StratifiedGroupKFold`` with ``round(1 / validation_fraction)`` folds
    and takes the first fold as validation; the same seed gives the same split.
    """
    n_folds = max(2, int(round(1.0 / validation_fraction)))
    if len(set(examples.groups)) < n_folds:
        raise DataError(f"need at least {n_folds} recording sessions for a {validation_fraction:.0%} "
                        f"validation split, got {len(set(examples.groups))}")
    folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(np.zeros(len(examples)), examples.labels, examples.groups))
    return examples.subset(train_idx), examples.subset(val_idx)


@dataclasses.dataclass
class SkipReport:
    """Files skipped during feature extraction, with the decoder's reason for each."""

    total: int
    skipped: list[tuple[Path, str]]

    def __str__(self) -> str:
        kept = self.total - len(self.skipped)
        if not self.skipped:
            return f"features: {kept} of {self.total} file(s) ok, none skipped"
        reasons = Counter(message for _, message in self.skipped)
        summary = ", ".join(f"{count} {message}" for message, count in reasons.most_common())
        lines = [f"features: {kept} of {self.total} file(s) ok, skipped {len(self.skipped)}: {summary}"]
        lines += [f"  skipped {path}: {message}" for path, message in self.skipped]
        return "\n".join(lines)


@dataclasses.dataclass
class FeatureSet:
    """Features of a list of files, cached after one full extraction pass."""

    examples: Examples
    cached: tf.data.Dataset
    """Every file's element: features, label, index and decode status (zeros when skipped)."""
    report: SkipReport
    kept_examples: Examples
    """The files that decoded, in order: what ``kept`` and ``batches`` yield, one element each."""
    kept_indices: np.ndarray
    """Position in ``cached`` (the element's ``index``) of each of ``kept_examples``. ``[K]``"""

    @property
    def kept(self) -> tf.data.Dataset:
        """Elements of the files that decoded; their count is known from the extraction pass."""
        ds = self.cached.filter(lambda e: tf.equal(e[STATUS], audio.OK))
        return ds.apply(tf.data.experimental.assert_cardinality(len(self.kept_examples)))

    def subset(self, positions: Sequence[int]) -> "FeatureSet":
        """The kept files at ``positions`` (of ``kept_examples``), served from the same cache.

        No feature is computed again: the subset filters the cached elements by their index.
        """
        positions = np.sort(np.asarray(positions, np.int64))
        indices = self.kept_indices[positions]  # [P]
        chosen = np.zeros(int(self.kept_indices.max(initial=-1)) + 1, bool)  # indexed by every kept element
        chosen[indices] = True
        mask = tf.constant(chosen)
        kept = self.kept_examples.subset(positions)
        return FeatureSet(kept, self.kept.filter(lambda e: tf.gather(mask, e[INDEX])),
                          SkipReport(len(kept), []), kept, indices)

    def relabelled(self, labels: np.ndarray) -> "FeatureSet":
        """The same cached features with new labels, one per kept file (soft targets allowed). ``[K]``"""
        labels = np.asarray(labels, np.float32)
        if labels.shape != (len(self.kept_examples),):
            raise ValueError(f"one label per kept file: expected {len(self.kept_examples)}, got shape {labels.shape}")
        by_index = np.full(int(self.kept_indices.max(initial=-1)) + 1, UNLABELLED, np.float32)
        by_index[self.kept_indices] = labels
        table = tf.constant(by_index)
        kept = Examples(self.kept_examples.files, labels, self.kept_examples.groups)
        return dataclasses.replace(self, cached=self.cached.map(lambda e: {**e, LABEL: tf.gather(table, e[INDEX])}),
                                   kept_examples=kept)

    def batches(self, batch_size: int, shuffle_buffer: int = 0, seed: int | None = None,
                epoch: tf.Variable | None = None) -> tf.data.Dataset:
        """``({"spectral", "scalars"}, label)`` batches: cache -> shuffle -> batch -> prefetch.

        With ``epoch`` (an int64 variable that training sets before each epoch's iterator is made,
        ``augment.Augmenter.epoch``) the order of an epoch is a function of ``seed`` and the epoch
        alone, so a run resumed at epoch e sees the order an uninterrupted run sees there; without
        it, each iterator reshuffles from where the last one left off.
        """
        ds = self.kept
        if shuffle_buffer and epoch is not None:
            if seed is None:
                raise ValueError("an epoch-seeded shuffle needs a seed")
            ordered = ds

            def epoch_order(_):  # traced once; runs once per iterator, reading the epoch then
                tf.compat.v1.get_default_graph().seed = EPOCH_ORDER_GRAPH_SEED  # this function's graph only
                return ordered.shuffle(shuffle_buffer, seed=seed * EPOCH_SEED_STRIDE + epoch.read_value())

            ds = tf.data.Dataset.from_tensors(0).flat_map(epoch_order)
            ds = ds.apply(tf.data.experimental.assert_cardinality(len(self.kept_examples)))
        elif shuffle_buffer:
            ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(_model_inputs, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def to_numpy(self) -> dict[str, np.ndarray]:
        """Kept elements as arrays (model inputs, ``labels``, ``files``), in file order."""
        arrays: dict[str, list] = {}
        for element in self.kept.as_numpy_iterator():
            for key, value in element.items():
                arrays.setdefault(key, []).append(value)
        out = {key: np.stack(values) for key, values in arrays.items()} if arrays else {}
        for bookkeeping in (INDEX, STATUS):
            out.pop(bookkeeping, None)
        out["labels"] = out.pop(LABEL, np.zeros(0, np.float32))
        out["files"] = np.array(self.kept_examples.files, dtype=object)
        return out


def _model_inputs(element: dict[str, tf.Tensor]):
    inputs = {key: value for key, value in element.items() if key not in (STATUS, LABEL, INDEX)}
    return inputs, element[LABEL]


def feature_dataset(examples: Examples, pipeline: PipelineConfig,
                    batch_size: int = FEATURE_BATCH) -> tf.data.Dataset:
    """decode -> features, in-graph and un-cached; one element per file, skipped ones included
    (a folder or a file without read permission too: status ``audio.UNREADABLE``).

    Features are computed ``batch_size`` clips per call (vectorised), then unbatched.
    """
    rate, n = pipeline.audio.sample_rate, pipeline.audio.num_samples
    paths = [str(p) for p in examples.files]
    readable = [audio.is_readable(p) for p in examples.files]  # else skipped as UNREADABLE, never read
    ds = tf.data.Dataset.from_tensor_slices((paths, readable, examples.labels, np.arange(len(paths))))

    def decode(path, can_read, label, index):
        waveform, status = audio.read_wav(path, rate, n, can_read)  # [n], []
        return waveform, {STATUS: status, LABEL: label, INDEX: tf.cast(index, tf.int32)}

    def featurize(waveforms, extras):
        return {**extract_features(waveforms, pipeline), **extras}  # [B, ...] each

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(batch_size).map(featurize, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.unbatch()


def cache_for(pipeline: PipelineConfig, part: str, examples: Examples) -> str:
    """``[data] cache`` for one part of the data: ``"memory"`` and ``"none"`` as they are; a file
    path gets ``_<part>_<key>``, ``key`` a hash of what the cached elements depend on, the
    ``[audio]`` and ``[features]`` settings and the part's files and labels in order (so the seed's
    split and the data folder too): a file cache never serves another pipeline's, split's or
    folder's features. A file rewritten in place under the same name is not noticed.
    """
    cache = pipeline.data.cache
    if cache in ("memory", "none"):
        return cache
    described = repr((pipeline.audio, pipeline.features, [os.path.abspath(f) for f in examples.files],
                      examples.labels.tolist()))
    return f"{cache}_{part}_{hashlib.sha256(described.encode()).hexdigest()[:CACHE_KEY_DIGITS]}"


def _cache(ds: tf.data.Dataset, cache: str) -> tf.data.Dataset:
    if cache == "none":
        return ds
    if cache == "memory":
        return ds.cache()
    Path(cache).parent.mkdir(parents=True, exist_ok=True)
    return ds.cache(cache)


def extract(examples: Examples | Sequence[Path], labels: np.ndarray | None, pipeline: PipelineConfig,
            cache: str | None = None, description: str = "features", progress: bool = True) -> FeatureSet:
    """Build the cached feature dataset and run it once (progress bar), counting skipped files.

    ``examples`` may be a plain list of files (then unlabelled unless ``labels`` is given).
    ``cache`` defaults to ``cache_for(pipeline, "features", examples)``: the pipeline's ``data.cache``,
    a file cache named for these files' features.
    """
    if not isinstance(examples, Examples):
        files = tuple(Path(f) for f in examples)
        if labels is not None and len(labels) != len(files):
            raise ValueError(f"one label per file: {len(files)} files, {len(labels)} labels")
        examples = unlabelled(files) if labels is None else Examples(
            files, np.asarray(labels, np.float32), tuple(session_of(f.name) for f in files))
    cached = _cache(feature_dataset(examples, pipeline), cache or cache_for(pipeline, "features", examples))
    skipped, kept_indices = [], []
    status_only = cached.map(lambda e: (e[STATUS], e[INDEX]))
    bar = tqdm(total=len(examples), desc=description, unit="clip", disable=not progress, leave=False)
    for status, index in status_only.as_numpy_iterator():
        if status == audio.OK:
            kept_indices.append(int(index))
        else:
            skipped.append((examples.files[index], audio.status_message(int(status))))
        bar.update(1)
    bar.close()
    return FeatureSet(examples, cached, SkipReport(len(examples), skipped), examples.subset(kept_indices),
                      np.asarray(kept_indices, np.int64))


def require_both_classes(feature_set: FeatureSet, split: str, data_dir: Path) -> None:
    """Refuse to train when a split has no decodable clip of some class (the skip report says why)."""
    kept = feature_set.kept_examples
    present = {LABEL_NAMES[int(label)] for label in kept.labels}
    missing = [name for name in LABEL_NAMES if name not in present]
    if missing:
        raise DataError(f"{data_dir}: {len(kept)} of the {len(feature_set.examples)} {split} clips decode, "
                        f"none of them {' or '.join(missing)}; nothing trained (skipped files listed above)")
