"""ICBHI reader: the real sample folder, synthetic folders, every bad-input case, and the splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import ICBHI_DIR, SHARED_DATA, needs_icbhi, sine
from tfbreath.icbhi.config import SplitConfig
from tfbreath.icbhi.reader import (END_TOLERANCE_S, FALLBACK_SCHEME, OFFICIAL_SPLIT_FILE, PATIENT_FOLDS,
                                   TEST_FOLDS, Cycle, IcbhiError, parse_recording_name, patient_folds,
                                   read_annotations, read_database, split_recordings)
from tfbreath.icbhi.synthetic import DEVICE_FORMATS, write_recording, write_split_list, write_synthetic_icbhi

REAL_CYCLES = {
    "101_1b1_Al_sc_Meditron": 12, "101_1b1_Pr_sc_Meditron": 11, "102_1b1_Ar_sc_Meditron": 13,
    "103_2b2_Ar_mc_LittC2SE": 6, "104_1b1_Al_sc_Litt3200": 6, "104_1b1_Ar_sc_Litt3200": 14,
    "104_1b1_Ll_sc_Litt3200": 7, "104_1b1_Lr_sc_Litt3200": 5, "104_1b1_Pl_sc_Litt3200": 13,
    "104_1b1_Pr_sc_Litt3200": 10,
}
"""Lines of each real annotation file in ../shared/data/icbhi_sample."""

RESPIRENET_FOLDS = SHARED_DATA / "icbhi_folds" / "patient_list_foldwise.txt"
"""RespireNet's patient folds, as shared next to the sample."""

RATE = 4000
TWO_CYCLES = (Cycle(0.1, 0.9, False, False), Cycle(0.9, 1.8, True, False))


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return write_synthetic_icbhi(tmp_path_factory.mktemp("icbhi"), n_patients=10, recordings_per_patient=2,
                                 cycles_per_recording=3)


def _good(root: Path, stem: str = "105_1b1_Al_sc_Meditron", cycles=TWO_CYCLES) -> Path:
    return write_recording(root, stem, sine(300.0, 2.0, RATE), RATE, cycles)


@needs_icbhi
def test_reads_the_real_sample_folder_exactly():
    recordings, report = read_database(ICBHI_DIR)
    assert {r.stem: len(r.cycles) for r in recordings} == REAL_CYCLES
    assert report.cycles == 97 and not report.skipped_files and not report.skipped_cycles
    by_stem = {r.stem: r for r in recordings}
    assert {r.device for r in recordings} == {"Meditron", "LittC2SE", "Litt3200"}
    first = by_stem["101_1b1_Al_sc_Meditron"]
    fields = (first.patient, first.index, first.location, first.mode, first.device)
    assert fields == ("101", "1b1", "Al", "sc", "Meditron")
    assert (first.sample_rate, first.duration_s, first.diagnosis) == (44100, 20.0, "URTI")
    assert by_stem["104_1b1_Ar_sc_Litt3200"].sample_rate == 4000
    assert by_stem["103_2b2_Ar_mc_LittC2SE"].cycles[0] == Cycle(0.364, 3.25, False, True)
    assert by_stem["103_2b2_Ar_mc_LittC2SE"].cycles[0].label4 == 2


def test_reads_a_synthetic_folder(synthetic_root):
    recordings, report = read_database(synthetic_root)
    assert len(recordings) == 20 and report.cycles == 60
    assert {r.device for r in recordings} == set(DEVICE_FORMATS)
    assert {r.sample_rate for r in recordings} == {rate for rate, _ in DEVICE_FORMATS.values()}
    assert all(r.diagnosis for r in recordings)
    assert "none skipped" in str(report)


def test_labels():
    assert [Cycle(0, 1, c, w).label4 for c, w in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 1, 2, 3]
    assert [Cycle(0, 1, c, w).label2 for c, w in ((0, 0), (1, 0), (0, 1), (1, 1))] == [0, 1, 1, 1]


def test_annotations_accept_tabs_and_spaces(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("0.1\t0.5\t0\t1\n\n0.5 1.25  1 0\n")
    assert read_annotations(path) == (Cycle(0.1, 0.5, False, True), Cycle(0.5, 1.25, True, False))


@pytest.mark.parametrize("text, problem", [
    ("0.1 0.5 0\n", "expected 4 fields"),
    ("0.1 0.5 0 2\n", "flag must be 0 or 1, got '2'"),
    ("0.1 abc 0 0\n", "could not convert"),
    ("0.5 0.1 0 0\n", "need 0 <= start < end"),
    # Pinned (mutants passed before): a 5th field, a negative start, an empty span and a
    # non-finite time are refused, not read as a cycle.
    ("0.1 0.5 0 0 1\n", "expected 4 fields 'start end crackle wheeze', got 5"),
    ("-0.1 0.5 0 0\n", "need 0 <= start < end"),
    ("0.5 0.5 0 0\n", "need 0 <= start < end"),
    ("nan 0.5 0 0\n", "need 0 <= start < end"),
    ("0.1 inf 0 0\n", "need 0 <= start < end"),
])
def test_malformed_annotation_line_names_file_and_line(tmp_path, text, problem):
    path = tmp_path / "x.txt"
    path.write_text("0.0 0.1 0 0\n" + text)
    with pytest.raises(IcbhiError) as err:
        read_annotations(path)
    assert str(err.value).startswith(f"{path} line 2: malformed annotation")
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_names():
    assert parse_recording_name("101_1b1_Al_sc_Meditron") == ("101", "1b1", "Al", "sc", "Meditron")
    with pytest.raises(IcbhiError, match="recording.wav: not an ICBHI recording name; expected patient_index"):
        parse_recording_name(Path("/x/recording.wav"))


@pytest.mark.parametrize("name", ["abc_1b1_Al_sc_Meditron", "101_1b1_Al_sc_Meditron_copy", "101_1b1_Al_sc"])
def test_names_need_a_numeric_patient_and_exactly_five_fields(name):
    """The patient groups the splits, so it must be a number; a sixth field is not a device."""
    with pytest.raises(IcbhiError, match=f"^{name}: not an ICBHI recording name"):
        parse_recording_name(name)


def test_empty_or_undecodable_annotation_files_are_one_line_errors_and_skips(tmp_path):
    """An annotation file with no cycle, or not UTF-8, gives one line naming the file, never a traceback,
    and ``read_database`` counts it as a malformed annotation."""
    _good(tmp_path)
    contents = {"106_1b1_Al_sc_Meditron": (b"\n  \n", "no annotated cycles"),
                "107_1b1_Al_sc_Meditron": (b"\xff\xfe0.1 0.5 0 0\n", "cannot read annotations")}
    for stem, (content, problem) in contents.items():
        txt = _good(tmp_path, stem).with_suffix(".txt")
        txt.write_bytes(content)
        with pytest.raises(IcbhiError, match=f"^{txt}: {problem}") as err:
            read_annotations(txt)
        assert "\n" not in str(err.value)
    recordings, report = read_database(tmp_path)
    assert [r.stem for r in recordings] == ["105_1b1_Al_sc_Meditron"]
    assert {skip.path.stem: skip.kind for skip in report.skipped_files} == dict.fromkeys(contents,
                                                                                       "malformed annotation")


def test_each_bad_input_is_a_counted_reported_skip(tmp_path):
    _good(tmp_path)
    write_recording(tmp_path, "106_1b1_Al_sc_Meditron", sine(300.0, 2.0, RATE), RATE, TWO_CYCLES)
    (tmp_path / "106_1b1_Al_sc_Meditron.txt").unlink()  # missing .txt
    _good(tmp_path, "107_1b1_Al_sc_Meditron")
    (tmp_path / "107_1b1_Al_sc_Meditron.txt").write_text("0.1 0.5 0\n")  # malformed line
    _good(tmp_path, "108_1b1_Al_sc_Meditron", TWO_CYCLES + (Cycle(1.8, 2.6, False, True),))  # past the end
    _good(tmp_path, "breathing")  # not an ICBHI name
    (tmp_path / "109_1b1_Al_sc_Meditron.wav").write_bytes(b"not a wav file at all")  # undecodable
    (tmp_path / "109_1b1_Al_sc_Meditron.txt").write_text("0.1 0.5 0 0\n")
    (tmp_path / "110_1b1_Al_sc_Meditron.txt").write_text("0.1 0.5 0 0\n")  # no .wav

    recordings, report = read_database(tmp_path)
    assert sorted(r.stem for r in recordings) == ["105_1b1_Al_sc_Meditron", "108_1b1_Al_sc_Meditron"]
    assert report.recordings == 2 and report.cycles == 4
    kinds = {skip.path.name: skip.kind for skip in report.skipped_files}
    assert kinds == {"106_1b1_Al_sc_Meditron.wav": "no annotation file",
                     "107_1b1_Al_sc_Meditron.wav": "malformed annotation",
                     "breathing.wav": "not an ICBHI name",
                     "109_1b1_Al_sc_Meditron.wav": "undecodable WAV",
                     "110_1b1_Al_sc_Meditron.txt": "no WAV"}
    assert [skip.kind for skip in report.skipped_cycles] == ["cycle past the end"]
    assert "cycle 3 (1.8-2.6 s) is past the end of the 2.000-s recording" in report.skipped_cycles[0].message
    messages = {skip.path.name: skip.message for skip in report.skipped_files}
    assert "107_1b1_Al_sc_Meditron.txt line 1: malformed annotation" in messages["107_1b1_Al_sc_Meditron.wav"]
    assert "not a WAV file" in messages["109_1b1_Al_sc_Meditron.wav"]
    text = str(report)
    assert "skipped 5 file(s)" in text and "skipped 1 cycle(s): 1 cycle past the end" in text


def test_unreadable_wavs_are_reported_skips(tmp_path):
    _good(tmp_path)
    (tmp_path / "106_1b1_Al_sc_Meditron.wav").symlink_to(tmp_path / "absent.wav")  # a broken link
    (tmp_path / "107_1b1_Al_sc_Meditron.wav").mkdir()  # a folder named like a recording
    for stem in ("106_1b1_Al_sc_Meditron", "107_1b1_Al_sc_Meditron"):
        (tmp_path / f"{stem}.txt").write_text("0.1 0.5 0 0\n")
    recordings, report = read_database(tmp_path)
    assert [r.stem for r in recordings] == ["105_1b1_Al_sc_Meditron"]
    assert {skip.path.name: skip.kind for skip in report.skipped_files} == {
        "106_1b1_Al_sc_Meditron.wav": "undecodable WAV", "107_1b1_Al_sc_Meditron.wav": "undecodable WAV"}
    assert all("\n" not in skip.message for skip in report.skipped_files)


@pytest.mark.parametrize("name", ["patient_diagnosis.csv", OFFICIAL_SPLIT_FILE])
def test_unreadable_list_files_raise_one_line(tmp_path, name):
    for patient in (105, 106):
        _good(tmp_path, f"{patient}_1b1_Al_sc_Meditron")
    (tmp_path / name).write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(IcbhiError, match=f"^{tmp_path / name}: cannot read this list file") as err:
        recordings, _ = read_database(tmp_path)
        split_recordings(recordings, SplitConfig("official"), tmp_path)
    assert "\n" not in str(err.value)


def test_a_cycle_ending_just_past_the_end_is_cut_to_it(tmp_path):
    _good(tmp_path, cycles=(Cycle(1.0, 2.03, False, False),))
    (recording,), report = read_database(tmp_path)
    assert recording.cycles[0].end_s == pytest.approx(2.0) and not report.skipped_cycles


def test_the_end_tolerance_bounds_which_cycles_are_cut_and_which_skipped(tmp_path):
    """On a 2-s recording: a cycle ending exactly ``END_TOLERANCE_S`` past the end is cut to it; one ending
    twice that far past, or starting at the very end (nothing left after the cut), is a skipped cycle."""
    duration = 2.0
    at_tolerance = Cycle(1.0, duration + END_TOLERANCE_S, False, False)
    beyond = Cycle(1.0, duration + 2 * END_TOLERANCE_S, True, False)
    at_the_end = Cycle(duration, duration + END_TOLERANCE_S / 2, False, True)
    _good(tmp_path, cycles=(at_tolerance, beyond, at_the_end))
    (recording,), report = read_database(tmp_path)
    assert recording.duration_s == duration
    assert recording.cycles == (Cycle(1.0, duration, False, False),)
    assert [skip.kind for skip in report.skipped_cycles] == ["cycle past the end"] * 2
    messages = [skip.message for skip in report.skipped_cycles]
    assert "cycle 2 (1.0-2.1 s)" in messages[0] and "cycle 3 (2.0-2.025 s)" in messages[1]


def test_wav_extension_is_case_insensitive(tmp_path):
    """``.WAV`` files (as some exports name them) are read like ``.wav`` ones."""
    wav = _good(tmp_path)
    wav.rename(wav.with_suffix(".WAV"))
    (recording,), report = read_database(tmp_path)
    assert recording.wav.name == "105_1b1_Al_sc_Meditron.WAV" and not report.skipped_files


def test_unusable_folders_raise_one_line(tmp_path):
    with pytest.raises(IcbhiError, match="ICBHI data folder not found"):
        read_database(tmp_path / "absent")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(IcbhiError, match=f"^{tmp_path}: no usable ICBHI recordings; expected patient_index"):
        read_database(tmp_path)
    _good(tmp_path)
    (tmp_path / "105_1b1_Al_sc_Meditron.txt").write_text("0.1 0.5 0\n")
    with pytest.raises(IcbhiError) as err:  # what went wrong with the skipped files, by example
        read_database(tmp_path)
    assert str(err.value) == (f"{tmp_path}: no usable ICBHI recordings: 1 skipped, e.g. "
                              f"{tmp_path / '105_1b1_Al_sc_Meditron.txt'} line 1: malformed annotation '0.1 0.5 0' "
                              f"(expected 4 fields 'start end crackle wheeze', got 3)")


@pytest.mark.parametrize("scheme, test_share", [("60_40", 0.4), ("80_20", 0.2)])
def test_patient_wise_split_keeps_patients_apart_and_is_seeded(synthetic_root, scheme, test_share):
    recordings, _ = read_database(synthetic_root)
    split = split_recordings(recordings, SplitConfig(scheme, seed=3), synthetic_root)
    train, test = split.train, split.test
    assert (split.scheme, split.note) == (scheme, "")
    assert not {r.patient for r in train} & {r.patient for r in test}
    assert len(train) + len(test) == len(recordings)
    assert len({r.patient for r in test}) == round(test_share * 10)
    again = split_recordings(recordings, SplitConfig(scheme, seed=3), synthetic_root)
    assert [r.stem for r in again.test] == [r.stem for r in test]
    other_seeds = {tuple(r.stem for r in split_recordings(recordings, SplitConfig(scheme, seed=s),
                                                           synthetic_root).test) for s in range(4)}
    assert len(other_seeds) > 1


def test_official_split_honours_the_list(synthetic_root, tmp_path):
    recordings, _ = read_database(synthetic_root)
    sides = dict(line.split("\t") for line in (synthetic_root / OFFICIAL_SPLIT_FILE).read_text().splitlines())
    split = split_recordings(recordings, SplitConfig("official"), synthetic_root)
    train, test = split.train, split.test
    assert (split.scheme, split.note) == ("official", "")
    assert {r.stem for r in train} == {s for s, side in sides.items() if side == "train"}
    assert {r.stem for r in test} == {s for s, side in sides.items() if side == "test"}

    # A hand-written list that puts one patient's two recordings on different sides is honoured as is.
    stems = sorted(r.stem for r in recordings)
    custom = tmp_path / "custom"
    custom.mkdir()
    for path in synthetic_root.glob("*_*_*_*_*.*"):
        (custom / path.name).symlink_to(path)
    (custom / OFFICIAL_SPLIT_FILE).write_text("".join(f"{s} {'test' if i == 0 else 'train'}\n"
                                                      for i, s in enumerate(stems)))
    assert [r.stem for r in split_recordings(recordings, SplitConfig("official"), custom).test] == [stems[0]]


def test_official_split_without_its_list_falls_back_to_patient_wise(synthetic_root, tmp_path):
    recordings, _ = read_database(synthetic_root)
    split = split_recordings(recordings, SplitConfig("official", seed=3), tmp_path)
    assert split.scheme == FALLBACK_SCHEME == "60_40"
    assert split.note == f"no {OFFICIAL_SPLIT_FILE} under {tmp_path}, so a patient-wise 60_40 split instead of 'official'"
    assert [r.stem for r in split.test] == [r.stem for r in split_recordings(recordings, SplitConfig("60_40", seed=3),
                                                                            tmp_path).test]


def test_official_split_errors(synthetic_root, tmp_path):
    recordings, _ = read_database(synthetic_root)
    (tmp_path / OFFICIAL_SPLIT_FILE).write_text(f"{recordings[0].stem}\ttrain\n")
    with pytest.raises(IcbhiError, match=r"no train/test entry for 19 recording\(s\)"):
        split_recordings(recordings, SplitConfig("official"), tmp_path)
    (tmp_path / OFFICIAL_SPLIT_FILE).write_text(f"{recordings[0].stem}\tvalidation\n")
    with pytest.raises(IcbhiError, match="line 1: expected '<recording> <train|test>'"):
        split_recordings(recordings, SplitConfig("official"), tmp_path)


@pytest.mark.parametrize("patients, scheme, folds, test_folds", [
    (126, "60_40", PATIENT_FOLDS, TEST_FOLDS["60_40"]), (5, "80_20", PATIENT_FOLDS, TEST_FOLDS["80_20"]),
    (4, "60_40", 4, 1), (4, "80_20", 4, 1), (3, "60_40", 3, 1), (2, "60_40", 2, 1), (2, "80_20", 2, 1),
])
def test_patient_folds(patients, scheme, folds, test_folds):
    """Fewer patients than folds: a fold per patient, at most the scheme's share of them held out."""
    assert patient_folds(patients, scheme) == (folds, test_folds)


def test_few_patients_split_is_noted_and_one_patient_is_refused(tmp_path):
    for patient in (105, 106, 107):
        _good(tmp_path, f"{patient}_1b1_Al_sc_Meditron")
    recordings, _ = read_database(tmp_path)
    split = split_recordings(recordings, SplitConfig("80_20"), tmp_path)
    assert len(split.test) == 1 and len(split.train) == 2
    assert split.note == "only 3 patients, so 1 of them on the test side"
    with pytest.raises(IcbhiError, match="need at least 2 patients for a patient-wise 80_20 split, got 1"):
        split_recordings(recordings[:1], SplitConfig("80_20"), tmp_path)
    with pytest.raises(IcbhiError, match=f"^no {OFFICIAL_SPLIT_FILE} under .*; need at least 2 patients"):
        split_recordings(recordings[:1], SplitConfig("official"), tmp_path)


def test_a_respirenet_folds_file_makes_the_folds_split(synthetic_root, tmp_path):
    recordings, _ = read_database(synthetic_root)
    folds = tmp_path / "patient_list_foldwise.txt"
    folds.write_text("".join(f"{101 + k} {k % 5}\n" for k in range(10)))
    split = split_recordings(recordings, SplitConfig("folds", folds_file=str(folds)), synthetic_root)
    assert (split.scheme, split.note) == ("folds", "")
    assert {r.patient for r in split.test} == {"105", "110"}  # fold 4, RespireNet's default test fold
    assert len(split.train) + len(split.test) == len(recordings)
    other = split_recordings(recordings, SplitConfig("folds", folds_file=str(folds), test_fold=0), synthetic_root)
    assert {r.patient for r in other.test} == {"101", "106"}
    with pytest.raises(IcbhiError, match=f"^{folds}: test_fold must be one of the file's folds \\[0, 1, 2, 3, 4\\], "
                                         "got 9$"):
        split_recordings(recordings, SplitConfig("folds", folds_file=str(folds), test_fold=9), synthetic_root)

    folds.write_text("101 0\n")
    with pytest.raises(IcbhiError, match=f"^{folds}: no fold for 9 patient\\(s\\), e.g. 102$"):
        split_recordings(recordings, SplitConfig("folds", folds_file=str(folds)), synthetic_root)
    folds.write_text("101 first\n")
    with pytest.raises(IcbhiError, match="line 1: expected '<patient> <fold>', got '101 first'"):
        split_recordings(recordings, SplitConfig("folds", folds_file=str(folds)), synthetic_root)
    with pytest.raises(IcbhiError, match="absent.txt: folds file not found"):
        split_recordings(recordings, SplitConfig("folds", folds_file=str(tmp_path / "absent.txt")), synthetic_root)


@needs_icbhi
@pytest.mark.skipif(not RESPIRENET_FOLDS.is_file(), reason=f"needs {RESPIRENET_FOLDS} (absent)")
def test_respirenet_folds_on_the_real_sample():
    """RespireNet's folds put 101 in fold 1, 103 and 104 in fold 3, and 102 in fold 4 (its test fold)."""
    recordings, _ = read_database(ICBHI_DIR)
    split = split_recordings(recordings, SplitConfig("folds", folds_file=str(RESPIRENET_FOLDS)), ICBHI_DIR)
    assert [r.stem for r in split.test] == ["102_1b1_Ar_sc_Meditron"]
    assert len(split.train) == 9


def test_write_split_list_is_patient_wise(tmp_path):
    stems = [f"{p}_{i}b1_Al_sc_Meditron" for p in range(101, 111) for i in (1, 2)]
    path = write_split_list(tmp_path, stems, test_fraction=0.4, seed=1)
    sides = dict(line.split("\t") for line in path.read_text().splitlines())
    test_patients = {s.split("_")[0] for s, side in sides.items() if side == "test"}
    train_patients = {s.split("_")[0] for s, side in sides.items() if side == "train"}
    assert len(test_patients) == 4 and not test_patients & train_patients
    assert np.isin(list(sides), stems).all()
