"""The ICBHI 2017 database as users download it, and its train/test splits.

Layout read (any folder depth under the root; the files are found recursively):

- ``<stem>.wav`` + ``<stem>.txt`` per recording, ``stem = patient_index_location_mode_device``
  (e.g. ``101_1b1_Al_sc_Meditron``); the ``.txt`` has one line per breathing cycle,
  ``start end crackle wheeze`` (seconds, seconds, 0/1, 0/1), tab- or space-separated.
- ``ICBHI_challenge_train_test.txt`` (optional): the official 60/40 division, lines
  ``<stem> <train|test>``, read by ``split.scheme = "official"``; without it that scheme
  falls back to the patient-wise ``FALLBACK_SCHEME`` and says so in the ``ReadReport``.
- ``ICBHI_Challenge_diagnosis.txt`` or ``patient_diagnosis.csv`` (optional): lines
  ``<patient> <diagnosis>`` (tab, space or comma); attached to each ``Recording``.

Bad inputs never stop the whole read: a recording without its ``.txt`` (or ``.txt`` without
its ``.wav``), with a name that is not ``patient_index_location_mode_device``, with a
malformed annotation line, or whose WAV header cannot be decoded is skipped; a cycle that
starts past the end of its recording, or ends more than ``END_TOLERANCE_S`` after it, is
skipped. Every skip is counted and listed in the ``ReadReport``. ``IcbhiError`` (one line,
naming the file) is raised for what leaves nothing to read or makes the split impossible.
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections import Counter
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import tensorflow as tf
from sklearn.model_selection import StratifiedGroupKFold

from tfbreath import audio
from tfbreath.errors import TfbreathError
from tfbreath.icbhi.config import FOLDS_SCHEME, SplitConfig

OFFICIAL_SPLIT_FILE = "ICBHI_challenge_train_test.txt"
"""The challenge's own train/test list (lines ``<stem> <train|test>``)."""

DIAGNOSIS_FILES = ("ICBHI_Challenge_diagnosis.txt", "patient_diagnosis.csv")
"""Per-patient diagnosis lists: the challenge's file, or the Kaggle copy's CSV."""

NAME_PATTERN = re.compile(r"^(\d+)_([A-Za-z0-9]+)_([A-Za-z0-9]+)_([A-Za-z0-9]+)_([A-Za-z0-9]+)$")
"""``patient_index_location_mode_device``: five non-empty tokens, the patient a number."""

NAME_FORMAT = "patient_index_location_mode_device (e.g. 101_1b1_Al_sc_Meditron)"

END_TOLERANCE_S = 0.05
"""A cycle may end this far past its recording (annotation rounding); it is then cut at the end."""

PATIENT_FOLDS = 5
"""The patient-wise splits take 1 (80/20) or 2 (60/40) of 5 stratified patient-grouped folds."""

TEST_FOLDS = {"60_40": 2, "80_20": 1}
"""How many of the ``PATIENT_FOLDS`` folds form the test side of each patient-wise scheme."""

MIN_SPLIT_PATIENTS = 2
"""A patient-wise split needs one patient per side; with fewer than ``PATIENT_FOLDS`` patients
each patient is a fold and the test side takes at most the scheme's share of them (at least one)."""

VALIDATION_FOLDS = 10
"""``validation_patients`` holds out ``round(fraction * 10)`` of 10 stratified patient-grouped folds
of the training patients (one fold per patient when fewer), at least one and never all."""

NORMAL = 0
"""Label of the normal class (4- and 2-class tasks); every other label is abnormal."""

FALLBACK_SCHEME = "60_40"
"""The patient-wise scheme that replaces ``official`` when its list file is absent (same 60/40 share)."""

TRAIN, TEST = "train", "test"

_FIELD_SEPARATORS = re.compile(r"[\s,]+")


class IcbhiError(TfbreathError, ValueError):
    """The ICBHI data is unusable; the one-line message names the file (and line) and the problem."""


@dataclasses.dataclass(frozen=True)
class Cycle:
    """One annotated breathing cycle: its time span and the two adventitious-sound flags."""

    start_s: float
    end_s: float
    crackle: bool
    wheeze: bool

    @property
    def label4(self) -> int:
        """0 normal, 1 crackle, 2 wheeze, 3 both."""
        return int(self.crackle) + 2 * int(self.wheeze)

    @property
    def label2(self) -> int:
        """0 normal, 1 abnormal (crackle, wheeze or both)."""
        return int(self.crackle or self.wheeze)

    def label(self, classes: int) -> int:
        """``label4`` or ``label2`` for a 4- or 2-class task."""
        return self.label4 if classes == 4 else self.label2


@dataclasses.dataclass(frozen=True)
class Recording:
    """One ICBHI recording: its WAV, the five name fields, its cycles and what the header said."""

    wav: Path
    stem: str
    patient: str
    index: str
    location: str
    mode: str
    device: str
    cycles: tuple[Cycle, ...]
    sample_rate: int = 0
    duration_s: float = 0.0
    diagnosis: str = ""


@dataclasses.dataclass(frozen=True)
class Skip:
    """One skipped file or cycle: a short ``kind`` for the counts and the one-line ``message``."""

    path: Path
    kind: str
    message: str


@dataclasses.dataclass(frozen=True)
class Split:
    """Train and test recordings, the scheme that divided them, and how it differs from the configured one.

    ``note`` is one line, empty when the configured scheme was made as specified.
    """

    train: list[Recording]
    test: list[Recording]
    scheme: str
    note: str = ""


@dataclasses.dataclass
class ReadReport:
    """What was read and what was skipped (whole files, single cycles), with the reasons.

    ``split_scheme`` and ``split_note`` are the ``Split.scheme`` and ``Split.note`` of the
    split made from it, once made.
    """

    root: Path
    recordings: int = 0
    cycles: int = 0
    skipped_files: list[Skip] = dataclasses.field(default_factory=list)
    skipped_cycles: list[Skip] = dataclasses.field(default_factory=list)
    split_scheme: str = ""
    split_note: str = ""

    def skip_file(self, path: Path, kind: str, message: str) -> None:
        self.skipped_files.append(Skip(Path(path), kind, message))

    def skip_cycle(self, path: Path, kind: str, message: str) -> None:
        self.skipped_cycles.append(Skip(Path(path), kind, message))

    def __str__(self) -> str:
        lines = [f"icbhi: {self.recordings} recording(s), {self.cycles} cycle(s) from {self.root}"]
        for what, skipped in (("file", self.skipped_files), ("cycle", self.skipped_cycles)):
            if skipped:
                kinds = Counter(skip.kind for skip in skipped)
                summary = ", ".join(f"{count} {kind}" for kind, count in kinds.most_common())
                lines.append(f"  skipped {len(skipped)} {what}(s): {summary}")
                lines += [f"    {skip.message}" for skip in skipped]
        if len(lines) == 1:
            lines[0] += ", none skipped"
        if self.split_note:
            lines.append(f"  split: {self.split_note}")
        return "\n".join(lines)


# ----------------------------------------------------------------------------- single files

def parse_recording_name(name: str | Path) -> tuple[str, str, str, str, str]:
    """``(patient, index, location, mode, device)`` of a stem or file path; ``IcbhiError`` if not ICBHI's."""
    match = NAME_PATTERN.match(Path(name).stem)
    if not match:
        raise IcbhiError(f"{name}: not an ICBHI recording name; expected {NAME_FORMAT}")
    return match.groups()  # type: ignore[return-value]


def _flag(token: str) -> bool:
    if token not in ("0", "1"):
        raise ValueError(f"flag must be 0 or 1, got {token!r}")
    return token == "1"


def read_annotations(path: str | Path) -> tuple[Cycle, ...]:
    """The cycles of one ``.txt`` (``start end crackle wheeze`` per line; blank lines ignored).

    Raises ``IcbhiError("<path> line <n>: ...")`` for a line that is not four fields, not
    numbers, has a flag other than 0/1, or has ``end <= start`` or a negative start.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise IcbhiError(f"{path}: cannot read annotations ({err})") from None
    cycles = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        try:
            if len(fields) != 4:
                raise ValueError(f"expected 4 fields 'start end crackle wheeze', got {len(fields)}")
            start, end = float(fields[0]), float(fields[1])
            cycle = Cycle(start, end, _flag(fields[2]), _flag(fields[3]))
            if not (np.isfinite(start) and np.isfinite(end)) or start < 0 or end <= start:
                raise ValueError(f"need 0 <= start < end, got start {start!r}, end {end!r}")
        except ValueError as err:
            raise IcbhiError(f"{path} line {number}: malformed annotation {line.strip()!r} ({err})") from None
        cycles.append(cycle)
    if not cycles:
        raise IcbhiError(f"{path}: no annotated cycles")
    return tuple(cycles)


@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def _wav_header(path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(status, sample_rate, frames)`` of a WAV file, from its header only."""
    header = audio.parse_wav_header(tf.io.read_file(path))
    frames = header.data_size // tf.maximum(header.block_align, 1)
    return header.status, header.sample_rate, frames


def read_wav_info(path: str | Path) -> tuple[int, float]:
    """``(sample_rate, duration_s)`` from a WAV header; ``IcbhiError`` if tfbreath cannot decode it."""
    path = Path(path)
    try:
        status, rate, frames = (int(v) for v in _wav_header(tf.constant(str(path))))
    except tf.errors.OpError as err:  # unreadable: a broken link, a folder named *.wav, no permission
        raise IcbhiError(f"{path}: cannot read the WAV file ({err.message.splitlines()[0]})") from None
    if status != audio.OK:
        raise IcbhiError(f"{path}: undecodable WAV: {audio.status_message(status)}")
    return rate, frames / rate


def _fit_cycles(cycles: Sequence[Cycle], duration_s: float, txt: Path,
                report: ReadReport) -> tuple[Cycle, ...]:
    """Cycles inside the recording; ends within ``END_TOLERANCE_S`` past it are cut at the end."""
    kept = []
    for number, cycle in enumerate(cycles, start=1):
        if cycle.start_s >= duration_s or cycle.end_s > duration_s + END_TOLERANCE_S:
            report.skip_cycle(txt, "cycle past the end", f"{txt}: cycle {number} ({cycle.start_s}-{cycle.end_s} s) "
                                                         f"is past the end of the {duration_s:.3f}-s recording")
            continue
        kept.append(dataclasses.replace(cycle, end_s=min(cycle.end_s, duration_s)))
    return tuple(kept)


# ----------------------------------------------------------------------------- the database

def _find(root: Path, names: Sequence[str]) -> Path | None:
    """The first of ``names`` found in ``root`` or below it (shallowest, then sorted)."""
    for name in names:
        found = sorted(root.rglob(name), key=lambda p: (len(p.parts), str(p)))
        if found:
            return found[0]
    return None


def _pairs(path: Path, separators: re.Pattern = _FIELD_SEPARATORS) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of the non-blank lines of a small list file; ``IcbhiError`` if unreadable."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise IcbhiError(f"{path}: cannot read this list file ({err})") from None
    return [(n, separators.split(line.strip())) for n, line in enumerate(lines, start=1) if line.strip()]


def _per_patient(path: Path, value_name: str, valid: Callable[[str], bool]) -> dict[str, str]:
    """``{patient: value}`` from ``<patient> <value>`` lines (tab, space or comma)."""
    table = {}
    for number, fields in _pairs(path):
        if len(fields) != 2 or not fields[0].isdigit() or not valid(fields[1]):
            raise IcbhiError(f"{path} line {number}: expected '<patient> <{value_name}>', got {' '.join(fields)!r}")
        table[fields[0]] = fields[1]
    return table


def read_diagnoses(path: str | Path) -> dict[str, str]:
    """``{patient: diagnosis}`` from ``<patient> <diagnosis>`` lines (tab, space or comma)."""
    return _per_patient(Path(path), "diagnosis", bool)


def read_patient_folds(path: str | Path) -> dict[str, int]:
    """``{patient: fold}`` from RespireNet's ``patient_list_foldwise.txt`` (``<patient> <fold>`` lines)."""
    path = Path(path)
    if not path.is_file():
        raise IcbhiError(f"{path}: folds file not found ([split] folds_file)")
    return {patient: int(fold) for patient, fold in _per_patient(path, "fold", str.isdigit).items()}


def read_official_split(path: str | Path) -> dict[str, str]:
    """``{stem: "train" | "test"}`` from the official list (``<stem> <train|test>`` lines)."""
    path = Path(path)
    sides = {}
    for number, fields in _pairs(path, re.compile(r"\s+")):
        if len(fields) != 2 or fields[1] not in (TRAIN, TEST):
            raise IcbhiError(f"{path} line {number}: expected '<recording> <train|test>', got {' '.join(fields)!r}")
        sides[fields[0]] = fields[1]
    return sides


def _read_recording(wav: Path, diagnoses: dict[str, str], report: ReadReport) -> Recording | None:
    """One recording, or None (and a reported skip) when it is unusable."""
    txt = wav.with_suffix(".txt")
    kind = "not an ICBHI name"
    try:
        patient, index, location, mode, device = parse_recording_name(wav)
        kind = "no annotation file"
        if not txt.is_file():
            raise IcbhiError(f"{wav}: no annotation file {txt.name}")
        kind = "malformed annotation"
        cycles = read_annotations(txt)
        kind = "undecodable WAV"
        rate, duration = read_wav_info(wav)
    except IcbhiError as err:
        report.skip_file(wav, kind, str(err))
        return None
    cycles = _fit_cycles(cycles, duration, txt, report)
    if not cycles:
        report.skip_file(wav, "no cycles inside", f"{wav}: no annotated cycle inside the recording")
        return None
    return Recording(wav, wav.stem, patient, index, location, mode, device, cycles, rate, duration,
                     diagnoses.get(patient, ""))


def read_database(root: str | Path) -> tuple[list[Recording], ReadReport]:
    """Every usable recording under ``root`` (sorted by stem) and the report of what was skipped.

    Raises ``IcbhiError`` when ``root`` is not a folder or holds no usable recording.
    """
    root = Path(root)
    if not root.is_dir():
        raise IcbhiError(f"{root}: ICBHI data folder not found")
    report = ReadReport(root)
    diagnosis_file = _find(root, DIAGNOSIS_FILES)
    diagnoses = read_diagnoses(diagnosis_file) if diagnosis_file else {}
    wavs = sorted((p for p in root.rglob("*") if p.suffix.lower() == ".wav"), key=lambda p: p.stem)
    recordings = [r for r in (_read_recording(w, diagnoses, report) for w in wavs) if r is not None]
    wav_stems = {w.stem for w in wavs}
    for txt in sorted(root.rglob("*.txt")):
        if NAME_PATTERN.match(txt.stem) and txt.stem not in wav_stems:
            report.skip_file(txt, "no WAV", f"{txt}: no recording {txt.stem}.wav for this annotation file")
    if not recordings:
        skipped = report.skipped_files
        if skipped:
            raise IcbhiError(f"{root}: no usable ICBHI recordings: {len(skipped)} skipped, e.g. {skipped[0].message}")
        raise IcbhiError(f"{root}: no usable ICBHI recordings; expected {NAME_FORMAT}.wav + .txt pairs")
    report.recordings = len(recordings)
    report.cycles = sum(len(r.cycles) for r in recordings)
    return recordings, report


# ----------------------------------------------------------------------------- splits

def _official_split(recordings: Sequence[Recording], path: Path) -> tuple[list[Recording], list[Recording]]:
    sides = read_official_split(path)
    missing = [r.stem for r in recordings if r.stem not in sides]
    if missing:
        raise IcbhiError(f"{path}: no train/test entry for {len(missing)} recording(s), e.g. {missing[0]}")
    return ([r for r in recordings if sides[r.stem] == TRAIN], [r for r in recordings if sides[r.stem] == TEST])


def _folds_file_split(recordings: Sequence[Recording], path: Path,
                      test_fold: int) -> tuple[list[Recording], list[Recording]]:
    """The patients of fold ``test_fold`` of a RespireNet folds file on the test side, the rest on train."""
    folds = read_patient_folds(path)
    missing = sorted({r.patient for r in recordings} - set(folds))
    if missing:
        raise IcbhiError(f"{path}: no fold for {len(missing)} patient(s), e.g. {missing[0]}")
    numbers = sorted(set(folds.values()))
    if test_fold not in numbers:
        raise IcbhiError(f"{path}: test_fold must be one of the file's folds {numbers}, got {test_fold!r}")
    return ([r for r in recordings if folds[r.patient] != test_fold],
            [r for r in recordings if folds[r.patient] == test_fold])


def patient_folds(patients: int, scheme: str) -> tuple[int, int]:
    """``(folds, test folds)`` of a patient-wise ``scheme`` over ``patients`` patients.

    ``PATIENT_FOLDS`` folds with ``TEST_FOLDS[scheme]`` of them on the test side; with fewer
    patients, one fold per patient and at most the scheme's share of them, at least one, as test.
    """
    if patients < MIN_SPLIT_PATIENTS:
        raise IcbhiError(f"need at least {MIN_SPLIT_PATIENTS} patients for a patient-wise {scheme} split, "
                         f"got {patients}")
    folds = min(PATIENT_FOLDS, patients)
    return folds, max(TEST_FOLDS[scheme] * folds // PATIENT_FOLDS, 1)


def _grouped_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Cycle indices of each of ``folds`` folds, stratified by ``labels`` and grouped by ``groups`` (patients)."""
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class with fewer cycles than folds is normal on small folders
        warnings.filterwarnings("ignore", "The least populated class", UserWarning)
        return [test for _, test in splitter.split(np.zeros(len(labels)), labels, groups)]


def _patient_split(recordings: Sequence[Recording], folds: int, test_folds: int,
                   seed: int) -> tuple[list[Recording], list[Recording]]:
    """Stratified (by cycle class), patient-grouped folds; the first ``test_folds`` are the test side."""
    owner = np.concatenate([np.full(len(r.cycles), i) for i, r in enumerate(recordings)])  # [cycles]
    labels = np.concatenate([[c.label4 for c in r.cycles] for r in recordings])  # [cycles]
    groups = np.array([recordings[i].patient for i in owner])  # [cycles]
    fold_cycles = _grouped_folds(labels, groups, folds, seed)
    test_owners = set(owner[np.concatenate(fold_cycles[:test_folds])].tolist())
    return ([r for i, r in enumerate(recordings) if i not in test_owners],
            [r for i, r in enumerate(recordings) if i in test_owners])


def validation_patients(patients: Sequence[str], labels: Sequence[int], fraction: float, seed: int) -> list[str]:
    """The training patients held out to pick the best epoch (``[train] select = "best"``), sorted.

    ``patients`` and ``labels`` are per training cycle (the task's labels, ``NORMAL`` = 0). The
    patients fall into ``VALIDATION_FOLDS`` folds stratified by label and grouped by patient (as
    the patient-wise test splits, shuffled with ``seed``), and ``round(fraction * folds)``
    consecutive folds are held out: the first such run whose cycles hold both normal and abnormal
    ones, as the ICBHI score (mean of Se and Sp) needs both. Only training cycles are given, so
    no test patient can be picked, and each patient is on one side. ``IcbhiError`` with fewer
    than ``MIN_SPLIT_PATIENTS`` patients or no usable run of folds.
    """
    patients, labels = np.asarray(patients).astype(str), np.asarray(labels)
    count = len(set(patients.tolist()))
    if count < MIN_SPLIT_PATIENTS:
        raise IcbhiError(f"need at least {MIN_SPLIT_PATIENTS} training patients to hold some out for validation, "
                         f"got {count}")
    folds = min(VALIDATION_FOLDS, count)
    held = min(max(round(fraction * folds), 1), folds - 1)
    fold_cycles = _grouped_folds(labels, patients, folds, seed)
    for start in range(folds):
        chosen = np.concatenate([fold_cycles[(start + k) % folds] for k in range(held)])  # [cycles]
        if np.any(labels[chosen] == NORMAL) and np.any(labels[chosen] != NORMAL):
            return sorted(set(patients[chosen].tolist()))
    raise IcbhiError(f"no {held} of the {folds} validation folds of {count} training patients hold both normal "
                     f"and abnormal cycles, so no validation ICBHI score; use select = \"last\" or more patients")


def split_recordings(recordings: Sequence[Recording], split_config: SplitConfig, root: str | Path) -> Split:
    """The train/test ``Split`` of ``recordings`` by ``split_config.scheme``.

    ``official``: the list file found under ``root``, taken as given (every recording must be
    listed; entries for absent recordings are ignored); without that file, the patient-wise
    ``FALLBACK_SCHEME`` instead, said in ``Split.note``. ``60_40`` / ``80_20``: scikit-learn
    ``StratifiedGroupKFold`` over the cycles, grouped by patient and stratified by 4-class
    label, ``PATIENT_FOLDS`` folds shuffled with ``split_config.seed``; the first 2 (60/40) or 1
    (80/20) folds are the test side. Cycles of one patient fall in one fold, so no patient is on
    both sides. With fewer patients than folds see ``patient_folds`` (also said in the note).
    ``folds``: RespireNet's own patient folds (``split_config.folds_file``), fold
    ``split_config.test_fold`` as the test side.
    """
    root = Path(root)
    scheme, notes = split_config.scheme, []
    list_file = _find(root, (OFFICIAL_SPLIT_FILE,)) if scheme == "official" else None
    if scheme == "official" and list_file is None:
        scheme = FALLBACK_SCHEME
        notes.append(f"no {OFFICIAL_SPLIT_FILE} under {root}, so a patient-wise {scheme} split "
                     f"instead of 'official'")
    if list_file is not None:
        train, test = _official_split(recordings, list_file)
    elif scheme == FOLDS_SCHEME:
        train, test = _folds_file_split(recordings, Path(split_config.folds_file), split_config.test_fold)
    else:
        patients = len({r.patient for r in recordings})
        try:
            folds, test_folds = patient_folds(patients, scheme)
        except IcbhiError as err:
            raise IcbhiError("; ".join([*notes, str(err)])) from None
        if folds < PATIENT_FOLDS:
            notes.append(f"only {patients} patients, so {test_folds} of them on the test side")
        train, test = _patient_split(recordings, folds, test_folds, split_config.seed)
    for side, name in ((train, TRAIN), (test, TEST)):
        if not side:
            raise IcbhiError(f"{root}: split scheme {scheme!r} leaves the {name} side empty")
    return Split(train, test, scheme, "; ".join(notes))
