"""The predict CLI on a tiny untrained run (mel map only, no scalars) and synthetic WAVs."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np
import pytest
import soundfile as sf
from tensorflow.lite.python import schema_py_generated as tflite_schema

from conftest import breath_like
from tfbreath import artifacts, export, predict, serving, timeline, tflite_metadata
from tfbreath.audio import load_audio
from tfbreath.classifier import EXHALE, INHALE, Classifier, default_model_path, load_classifier, target
from tfbreath.config import PipelineConfig, dump_config, with_overrides
from tfbreath.ensemble import build_ensemble
from tfbreath.errors import EXIT_USAGE
from tfbreath.models import build_model_for_pipeline
from tfbreath.recording import smooth, window_starts

PIPELINE = with_overrides(PipelineConfig(), "features", maps=("mel",), scalars=False)
RATE = PIPELINE.audio.sample_rate
CLIP = PIPELINE.audio.num_samples
CLIP_FORMATS = {"a_16k.wav": (16000, "PCM_16"), "b_44k.wav": (44100, "PCM_24"),
                "c_4k.wav": (4000, "PCM_16"), "d_22k.wav": (22050, "FLOAT")}
"""One-second clips at the rates and bit depths a user may have."""
LONG_S = 3.2
SHORT_S = 0.6
PADDED_S = 0.1
"""A clip that is mostly repeats of itself."""
SAME_SHAPES = with_overrides(PIPELINE, "features", fmax=3000.0)
"""Another pipeline whose features have the same shapes (so a model takes them silently)."""
CUT_FRACTIONS = (0.1, 0.5, 0.99)
RANDOM_FLIPS = 40
"""Single-bit flips in a ``.tflite``'s structure (not its weights): each a valid model or an error."""
SAME_MODEL_ATOL = 1e-5
"""The CLI and a direct Keras call on the same model and audio."""
EXPORT_ATOL = export.MAX_PROBABILITY_DIFF["none"]
"""Two formats of the same model: the export's own float32 limit."""
PIPELINE_NOTE = "no pipeline.toml beside"
"""What predict says when it falls back to the default pipeline's rate for a ``.tflite``."""


def _write(path, seconds, rate=RATE, subtype="PCM_16", seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, breath_like(seed, seconds, rate), rate, subtype=subtype)
    return path


def _run(capsys, *argv):
    """``predict.main`` in-process: ``(exit code, stdout, stderr lines)``; argparse errors exit."""
    try:
        code = predict.main([str(a) for a in argv])
    except SystemExit as exit_:
        code = exit_.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip().splitlines()


def _rows(text):
    return list(csv.DictReader(io.StringIO(text)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A fake run folder: pipeline.toml and an untrained width-0.125 CNN8 ensemble."""
    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("run")
    members = {"cnn8": build_model_for_pipeline("cnn8", PIPELINE, width=0.125)}
    artifacts.write_text(folder / "pipeline.toml", dump_config(PIPELINE))
    artifacts.save_model(build_ensemble(members, [1.0]), folder / "ensemble.keras")
    return folder


@pytest.fixture(scope="module")
def waveform(run_dir):
    """The run's ensemble as a waveform-input Keras model: the reference probabilities."""
    return serving.waveform_model(keras.models.load_model(run_dir / "ensemble.keras"), PIPELINE)


@pytest.fixture(scope="module")
def tflite_bytes(waveform, tmp_path_factory):
    """The waveform model as a float32 ``.tflite``."""
    saved = export.save_serving(waveform, tmp_path_factory.mktemp("serving") / "savedmodel")
    return export.convert(saved, "none")


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """A folder of one-second clips (one in a subfolder) at several rates and bit depths."""
    folder = tmp_path_factory.mktemp("clips")
    for seed, (name, (rate, subtype)) in enumerate(CLIP_FORMATS.items()):
        _write(folder / ("sub" if seed == 0 else "") / name, 1.0, rate, subtype, seed)
    return folder


def _reference(waveform, files):
    """P(exhale) straight from the Keras model, on clips decoded as in training."""
    audio = np.stack([load_audio(f, RATE, PIPELINE.audio.duration_s) for f in files])
    return waveform.predict(audio, verbose=0).reshape(-1)


def _split_threshold(probabilities):
    """A threshold between the middle two probabilities, so both targets occur."""
    ordered = np.sort(probabilities)
    middle = len(ordered) // 2
    return float(ordered[middle - 1] + ordered[middle]) / 2


def test_clip_rows_match_the_model_and_the_threshold(capsys, run_dir, waveform, clips):
    files = sorted(clips.rglob("*.wav"))
    expected = dict(zip((f.name for f in files), _reference(waveform, files)))
    threshold = _split_threshold(list(expected.values()))
    code, out, err = _run(capsys, "--model", run_dir, *files, "--threshold", threshold)
    assert code == predict.EXIT_OK, err
    rows = _rows(out)
    assert list(rows[0]) == list(predict.CLIP_COLUMNS)
    assert [r["ID"] for r in rows] == [f.name for f in files]
    for row in rows:
        probability = float(row["Probability"])
        assert len(row["Probability"].split(".")[1]) >= 4
        assert probability == pytest.approx(expected[row["ID"]], abs=SAME_MODEL_ATOL)
        assert row["Target"] == ("E" if probability >= threshold else "I")
    assert {r["Target"] for r in rows} == {"I", "E"}


def test_a_probability_at_the_threshold_is_exhale():
    """``--threshold`` is the P(exhale) at or above which the target is E (``classifier.target``); the
    CLI tests' thresholds fall between probabilities, so this pins the boundary."""
    assert target(predict.THRESHOLD, predict.THRESHOLD) == EXHALE
    assert target(np.nextafter(predict.THRESHOLD, 0.0), predict.THRESHOLD) == INHALE


def test_a_classifiers_clip_lasts_its_samples_over_its_rate():
    """``clip_s`` (``--hop``'s limit, the summary's note): the 1-s clips of the CLI tests read the
    same either way up, so a half-second clip at twice the rate pins it."""
    half_second = Classifier(lambda waveforms: np.zeros(len(waveforms)), 2 * RATE, CLIP, "half a second")
    assert half_second.clip_s == CLIP / (2 * RATE)


def test_a_folder_is_searched_and_the_csv_written_to_out(capsys, tmp_path, run_dir, clips):
    out_csv = tmp_path / "predictions.csv"
    code, out, err = _run(capsys, "--model", run_dir, clips, "--out", out_csv)
    assert code == predict.EXIT_OK, err
    assert out == ""
    rows = _rows(out_csv.read_text())
    assert sorted(r["ID"] for r in rows) == sorted(CLIP_FORMATS)
    assert {r["Target"] for r in rows} <= {"I", "E"}


def test_files_of_one_name_in_two_folders_keep_apart(capsys, tmp_path, run_dir):
    """Their rows are told apart by path, and each gets its own timeline."""
    first = _write(tmp_path / "wavs" / "a" / "rec.wav", LONG_S, seed=1)
    second = _write(tmp_path / "wavs" / "b" / "rec.wav", LONG_S, seed=2)
    other = _write(tmp_path / "wavs" / "b" / "other.wav", LONG_S, seed=3)
    plots = tmp_path / "plots"
    code, out, err = _run(capsys, "--model", run_dir, tmp_path / "wavs", "--plot", plots)
    assert code == predict.EXIT_OK, err
    assert list(dict.fromkeys(r["ID"] for r in _rows(out))) == [first.as_posix(), other.name, second.as_posix()]
    assert len(list(plots.glob("*.png"))) == 3 and (plots / "other.wav.png").is_file()
    assert f"wrote 3 timeline(s) to {plots}" in err


def test_a_one_sample_file_beside_a_long_one_is_plotted_without_a_warning(capsys, tmp_path, run_dir):
    _write(tmp_path / "wavs" / "long.wav", LONG_S, seed=1)
    sf.write(tmp_path / "wavs" / "tick.wav", np.full(1, 0.1, np.float32), RATE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warned of an empty x range (0 to 0 s) for the tick
        code, _, err = _run(capsys, "--model", run_dir, tmp_path / "wavs", "--plot", tmp_path / "plots")
    assert code == predict.EXIT_OK, err
    assert (tmp_path / "plots" / "tick.wav.png").is_file()


def test_long_recording_is_windowed_and_plotted(capsys, tmp_path, run_dir, waveform):
    long_wav = _write(tmp_path / "wavs" / "long.wav", LONG_S, seed=1)
    _write(tmp_path / "wavs" / "short.wav", SHORT_S, 8000, seed=2)
    plots = tmp_path / "plots"
    code, out, err = _run(capsys, "--model", run_dir, tmp_path / "wavs", "--plot", plots)
    assert code == predict.EXIT_OK, err
    rows = _rows(out)
    assert list(rows[0]) == list(predict.WINDOW_COLUMNS)
    spans = [(r["ID"], float(r["start_s"]), float(r["end_s"])) for r in rows]
    # 3.2 s: the fewest windows at most half a clip apart, from 0 to 2.2 s, are 0.44 s apart
    assert spans == [("long.wav", 0.0, 1.0), ("long.wav", 0.44, 1.44), ("long.wav", 0.88, 1.88),
                     ("long.wav", 1.32, 2.32), ("long.wav", 1.76, 2.76), ("long.wav", 2.2, 3.2),
                     ("short.wav", 0.0, SHORT_S)]
    audio = load_audio(long_wav, RATE, None)
    windows = np.stack([audio[int(round(s * RATE)):int(round(s * RATE)) + CLIP] for _, s, _ in spans[:-1]])
    np.testing.assert_allclose([float(r["Probability"]) for r in rows[:-1]],
                               waveform.predict(windows, verbose=0).reshape(-1), atol=SAME_MODEL_ATOL)
    assert {r["Smoothed"] for r in rows} <= {"I", "E"}
    for name in ("long", "short"):
        assert (plots / f"{name}.wav.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "pass --summary FILE.csv" in err[-1], err  # the CSV went to stdout: no summary, said why

    code, out, err = _run(capsys, "--model", run_dir, long_wav, "--hop", 0.8)
    assert code == predict.EXIT_OK, err
    assert [float(r["start_s"]) for r in _rows(out)] == [0.0, 0.733, 1.467, 2.2]  # 2.2 s in three steps


def test_bad_files_are_reported_and_skipped(capsys, tmp_path, run_dir):
    good = _write(tmp_path / "good.wav", 1.0)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(good.read_bytes()[:30])
    not_wav = tmp_path / "notes.txt"
    not_wav.write_text("not audio\n")
    code, out, err = _run(capsys, "--model", run_dir, good, corrupt, not_wav)
    assert code == predict.EXIT_SKIPPED
    assert [r["ID"] for r in _rows(out)] == ["good.wav"]
    skipped = [line for line in err if line.startswith("skipped ")]
    assert len(skipped) == 2
    assert str(corrupt) in skipped[0] and "truncated" in skipped[0]
    assert str(not_wav) in skipped[1] and "not a WAV" in skipped[1]
    assert any("decoded 1 of 3" in line and "skipped 2" in line for line in err)
    assert not any("Traceback" in line for line in err)


@pytest.fixture
def bad_models(tmp_path, run_dir):
    """``--model`` values that must each give one ``error:`` line and exit code 2."""
    junk_keras = tmp_path / "junk.keras"
    junk_keras.write_bytes(b"PK\x03\x04 not a zip")
    corrupt_keras = tmp_path / "corrupt.keras"  # a whole zip whose weights fail their CRC
    archive = bytearray((run_dir / "ensemble.keras").read_bytes())
    archive[len(archive) // 2] ^= 0xFF
    corrupt_keras.write_bytes(bytes(archive))
    junk_tflite = tmp_path / "junk.tflite"
    junk_tflite.write_bytes(b"not a flatbuffer")
    lonely = tmp_path / "lonely" / "ensemble.keras"  # feature-input model without its pipeline
    lonely.parent.mkdir()
    shutil.copy(run_dir / "ensemble.keras", lonely)
    mismatched = tmp_path / "mismatched" / "ensemble.keras"  # its pipeline makes 9 maps + scalars
    mismatched.parent.mkdir()
    shutil.copy(run_dir / "ensemble.keras", mismatched)
    artifacts.write_text(mismatched.parent / "pipeline.toml", dump_config(PipelineConfig()))
    not_a_run = tmp_path / "not_a_run"
    not_a_run.mkdir()
    text = tmp_path / "notes.txt"
    text.write_text("hello\n")
    return {"missing": tmp_path / "missing.keras", "junk keras": junk_keras, "corrupt keras": corrupt_keras,
            "junk tflite": junk_tflite,
            "no pipeline": lonely, "wrong pipeline": mismatched, "not a run": not_a_run,
            "not a model": text}


def _assert_one_error_line(code, out, err):
    assert code == EXIT_USAGE
    assert out == ""
    assert len(err) == 1 and err[0].startswith("error: "), err


def test_bad_model_is_one_error_line_and_exit_2(capsys, bad_models, clips):
    wav = next(clips.rglob("*.wav"))
    for name, model in bad_models.items():
        code, out, err = _run(capsys, "--model", model, wav)
        _assert_one_error_line(code, out, err)
        assert str(model) in err[0], name
    assert "pipeline.toml" in _run(capsys, "--model", bad_models["no pipeline"], wav)[2][0]
    assert "not a run folder" in _run(capsys, "--model", bad_models["not a run"], wav)[2][0]
    absent = bad_models["not a run"] / "absent.toml"  # an explicit --pipeline that is not there is named
    code, out, err = _run(capsys, "--model", bad_models["no pipeline"], "--pipeline", absent, wav)
    _assert_one_error_line(code, out, err)
    assert str(absent) in err[0], err


def test_usage_errors_are_one_line_and_exit_2(capsys, monkeypatch, tmp_path, run_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in ([empty], [], [tmp_path / "absent.wav"], ["--threshold", 1.5, empty], ["--hop", 2.0, empty]):
        _assert_one_error_line(*_run(capsys, "--model", run_dir, *argv))
    monkeypatch.setattr("tfbreath.classifier.DEFAULT_MODEL_DIR", tmp_path / "no_pretrained_model")
    code, out, err = _run(capsys, empty)
    _assert_one_error_line(code, out, err)
    assert "--model" in err[0]


def test_the_default_model_prefers_its_tflite(monkeypatch, tmp_path, run_dir):
    monkeypatch.setattr("tfbreath.classifier.DEFAULT_MODEL_DIR", run_dir)
    assert default_model_path() == run_dir
    shipped = tmp_path / "breath_phase"
    shutil.copytree(run_dir, shipped)
    (shipped / "ensemble.tflite").write_bytes(b"")
    monkeypatch.setattr("tfbreath.classifier.DEFAULT_MODEL_DIR", shipped)
    assert default_model_path() == shipped / "ensemble.tflite"


def test_kaggle_submission_keeps_the_csv_order_and_spelling(capsys, tmp_path, run_dir, waveform):
    root = tmp_path / "kaggle"
    ids = ["steth_b.wav", "steth_a", "steth_c.wav"]
    files = [_write(root / "test" / (i if i.endswith(".wav") else i + ".wav"), 1.0, seed=n)
             for n, i in enumerate(ids)]
    (root / "test.csv").write_text("ID\n" + "\n".join(ids) + "\n")
    expected = _reference(waveform, files)
    threshold = _split_threshold(expected)
    out_csv = tmp_path / "submission.csv"
    code, out, err = _run(capsys, "--model", run_dir, "--kaggle", root / "test.csv", "--out", out_csv,
                          "--threshold", threshold)
    assert code == predict.EXIT_OK, err
    assert out_csv.read_text().splitlines()[0] == "ID,Target"
    rows = _rows(out_csv.read_text())
    assert [r["ID"] for r in rows] == ids
    assert [r["Target"] for r in rows] == ["E" if p >= threshold else "I" for p in expected]


def _probabilities(classifier, files):
    audio = np.stack([load_audio(f, classifier.sample_rate, classifier.clip_s) for f in files])
    return classifier(audio)


def test_keras_files_give_the_run_folder_probabilities(tmp_path, run_dir, waveform, clips):
    files = sorted(clips.rglob("*.wav"))
    waveform_keras = artifacts.save_model(waveform, tmp_path / "ensemble_waveform.keras")
    expected = _reference(waveform, files)  # what the run folder gives (first test)
    for model in (waveform_keras, run_dir / "ensemble.keras"):
        classifier = load_classifier(model)
        assert (classifier.sample_rate, classifier.num_samples) == (RATE, CLIP)
        np.testing.assert_allclose(_probabilities(classifier, files), expected, atol=EXPORT_ATOL)
        empty = classifier(np.zeros((0, CLIP), np.float32))  # no clip: no probability (and no model call)
        assert empty.shape == (0,) and empty.dtype == np.float32


def test_tflite_gives_the_run_folder_probabilities(capsys, tmp_path, waveform, tflite_bytes, clips):
    files = sorted(clips.rglob("*.wav"))
    tflite = artifacts.write_bytes(tmp_path / "alone" / "ensemble.tflite", tflite_bytes)
    expected = _reference(waveform, files)
    code, out, err = _run(capsys, "--model", tflite, *files)
    assert code == predict.EXIT_OK, err
    assert any("assuming the default pipeline's 16000 Hz" in line for line in err)
    np.testing.assert_allclose([float(r["Probability"]) for r in _rows(out)], expected, atol=EXPORT_ATOL)
    beside = tmp_path / "beside" / "ensemble.tflite"
    beside.parent.mkdir()
    shutil.copy(tflite, beside)
    custom_rate = with_overrides(PIPELINE, "audio", sample_rate=2 * RATE, duration_s=0.5)
    artifacts.write_text(beside.parent / "pipeline.toml", dump_config(custom_rate))
    explicit = load_classifier(tflite, pipeline_arg=beside.parent / "pipeline.toml")
    for classifier in (load_classifier(beside), explicit):
        assert (classifier.sample_rate, classifier.num_samples) == (2 * RATE, CLIP)
    assert "assuming" not in capsys.readouterr().err
    # a pipeline of another clip length: the model's own input length is used, with a warning
    half_clip = with_overrides(PIPELINE, "audio", duration_s=PIPELINE.audio.duration_s / 2)
    shorter = artifacts.write_text(tmp_path / "shorter.toml", dump_config(half_clip))
    assert load_classifier(tflite, pipeline_arg=shorter).num_samples == CLIP
    assert f"takes {CLIP} samples per clip" in capsys.readouterr().err


def test_tflite_metadata_gives_the_sample_rate_without_a_pipeline(capsys, tmp_path, waveform, tflite_bytes, clips):
    files = sorted(clips.rglob("*.wav"))
    identity = {"run": "run", "member": "ensemble", "quantize": "none", "weights_sha256": "0" * 64}
    tagged = tflite_metadata.with_metadata(tflite_bytes, tflite_metadata.describe(PIPELINE, identity))
    tflite = artifacts.write_bytes(tmp_path / "alone" / "ensemble.tflite", tagged)
    code, out, err = _run(capsys, "--model", tflite, *files)
    assert code == predict.EXIT_OK, err
    assert not any(PIPELINE_NOTE in line for line in err), err
    np.testing.assert_allclose([float(r["Probability"]) for r in _rows(out)], _reference(waveform, files),
                               atol=EXPORT_ATOL)

    # a rate only the metadata states wins over the pipeline.toml beside the file ...
    custom_rate = with_overrides(PIPELINE, "audio", sample_rate=2 * RATE, duration_s=0.5)
    beside = tmp_path / "beside" / "ensemble.tflite"
    artifacts.write_bytes(beside, tflite_metadata.with_metadata(tflite_bytes,
                                                                tflite_metadata.describe(custom_rate, identity)))
    artifacts.write_text(beside.parent / "pipeline.toml", dump_config(PIPELINE))
    classifier = load_classifier(beside)
    assert (classifier.sample_rate, classifier.num_samples) == (2 * RATE, CLIP)
    assert capsys.readouterr().err == ""
    # ... and an explicit --pipeline at another rate is refused
    code, out, err = _run(capsys, "--model", beside, "--pipeline", beside.parent / "pipeline.toml", files[0])
    assert (code, out) == (EXIT_USAGE, "")
    assert err == [f"error: {beside}: its metadata says {2 * RATE} Hz but {beside.parent / 'pipeline.toml'} "
                   f"gives {RATE} Hz; the model carries its own rate, so leave out --pipeline"]
    # ... while one at the metadata's rate is taken
    same_rate = artifacts.write_text(tmp_path / "same_rate.toml", dump_config(custom_rate))
    assert load_classifier(beside, pipeline_arg=same_rate).sample_rate == 2 * RATE


# ---------------------------------------------------------------------------------------------
# Bad inputs: one error line, the promised exit code, nothing half-written (issue 18)
# ---------------------------------------------------------------------------------------------
PREDICT_EACH = """
import contextlib, io, json, sys
from tfbreath import predict
results = []
for model in sys.argv[2:]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = predict.main(["--model", model, sys.argv[1]])
    results.append([model, code, err.getvalue().strip().splitlines()])
print(json.dumps(results))
"""
"""A child process running predict on one WAV with each model: a segmentation fault kills it."""


def _predict_each(wav, models):
    """``{model: (exit code, stderr lines)}`` from a child process (a crash fails the test)."""
    child = subprocess.run([sys.executable, "-c", PREDICT_EACH, str(wav), *map(str, models)],
                           capture_output=True, text=True, timeout=600)
    assert child.returncode == 0, f"predict crashed (exit {child.returncode}): {child.stderr[-2000:]}"
    return {model: (code, err) for model, code, err in json.loads(child.stdout.splitlines()[-1])}


def _structure_positions(flatbuffer):
    """Byte positions of a ``.tflite`` outside its buffers' data: the flatbuffer's structure."""
    model = tflite_schema.Model.GetRootAsModel(flatbuffer, 0)
    weights = np.zeros(len(flatbuffer), bool)
    for i in range(model.BuffersLength()):
        table = model.Buffers(i)._tab
        field = table.Offset(4)  # Buffer.data
        if field:
            start = table.Vector(field)
            weights[start:start + table.VectorLen(field)] = True
    return np.flatnonzero(~weights)


def _input_index_position(flatbuffer):
    """Where the first operator's first input tensor index is stored."""
    operator = tflite_schema.Model.GetRootAsModel(flatbuffer, 0).Subgraphs(0).Operators(0)
    return operator._tab.Vector(operator._tab.Offset(6))  # Operator.inputs


def test_cut_or_corrupt_tflite_is_an_error_line_not_a_crash(tmp_path, tflite_bytes, clips):
    wav = next(clips.rglob("*.wav"))
    rng = np.random.default_rng(0)
    bad = {f"cut {f:.0%}": tflite_bytes[:int(len(tflite_bytes) * f)] for f in CUT_FRACTIONS}
    bad["random bytes"] = tflite_bytes[:8] + rng.bytes(len(tflite_bytes) - 8)
    out_of_range = bytearray(tflite_bytes)
    out_of_range[_input_index_position(tflite_bytes) + 3] ^= 0x40  # tensor index + 2**30
    bad["tensor index out of range"] = bytes(out_of_range)
    flipped = {}
    for n, position in enumerate(rng.choice(_structure_positions(tflite_bytes), RANDOM_FLIPS, replace=False)):
        corrupt = bytearray(tflite_bytes)
        corrupt[position] ^= 1 << int(rng.integers(8))
        flipped[f"flip {n} at byte {position}"] = bytes(corrupt)
    paths = {name: artifacts.write_bytes(tmp_path / f"bad_{n}.tflite", payload)
             for n, (name, payload) in enumerate({**bad, **flipped}.items())}
    results = _predict_each(wav, paths.values())
    for name, path in paths.items():
        code, err = results[str(path)]
        if name in bad or code != predict.EXIT_OK:
            assert code == EXIT_USAGE, (name, err)
            assert len(err) == 1 and err[0].startswith(f"error: {path}: "), (name, err)
    for name in bad:
        assert "not a valid TFLite model" in results[str(paths[name])][1][0], name


def test_a_model_carrying_its_pipeline_needs_no_file_and_refuses_another(capsys, tmp_path, run_dir, waveform,
                                                                         clips):
    files = sorted(clips.rglob("*.wav"))
    carrying = tmp_path / "alone" / "ensemble.keras"
    artifacts.save_model(serving.load_trained_model(run_dir / "ensemble.keras"), carrying, dump_config(PIPELINE))
    code, out, err = _run(capsys, "--model", carrying, *files)
    assert code == predict.EXIT_OK, err
    np.testing.assert_allclose([float(r["Probability"]) for r in _rows(out)], _reference(waveform, files),
                               atol=SAME_MODEL_ATOL)

    other = artifacts.write_text(tmp_path / "other.toml", dump_config(SAME_SHAPES))
    beside = tmp_path / "beside" / "ensemble.keras"
    beside.parent.mkdir()
    shutil.copy(carrying, beside)
    artifacts.write_text(beside.parent / "pipeline.toml", dump_config(SAME_SHAPES))
    for argv, source in (((carrying, "--pipeline", other), other), ((beside,), beside.parent / "pipeline.toml")):
        code, out, err = _run(capsys, "--model", *argv, files[0])
        _assert_one_error_line(code, out, err)
        assert err[0].startswith(f"error: {argv[0]}: trained with pipeline 'breath_phase' but {source} gives"), err
        assert "[features] fmax: 4500.0 vs 3000.0" in err[0]

    other_training = with_overrides(PIPELINE, "train", epochs=PIPELINE.train.epochs + 1)
    artifacts.write_text(beside.parent / "pipeline.toml", dump_config(other_training))
    code, out, err = _run(capsys, "--model", beside, files[0])
    assert code == predict.EXIT_OK, err


@pytest.fixture
def output_clash(tmp_path):
    """A file where a folder must be."""
    clash = tmp_path / "clash.txt"
    clash.write_text("a file\n")
    return clash


def test_bad_output_paths_are_refused_before_any_work(capsys, tmp_path, run_dir, clips, output_clash):
    wav = next(clips.rglob("*.wav"))
    folder = tmp_path / "existing_folder"
    folder.mkdir()
    bad = [("--out", output_clash / "predictions.csv"), ("--out", folder),
           ("--plot", output_clash), ("--plot", output_clash / "plots"),
           ("--summary", output_clash / "summary.csv"), ("--summary", folder)]
    unwritable = Path("/sys/tfbreath_predict_test.csv")
    try:
        tempfile.NamedTemporaryFile(dir=unwritable.parent).close()
    except OSError:  # as it should be, even for root
        bad.append(("--out", unwritable))
    before = sorted(tmp_path.rglob("*"))
    for option, path in bad:
        code, out, err = _run(capsys, "--model", run_dir, wav, option, path)
        _assert_one_error_line(code, out, err)
        assert err[0].startswith(f"error: {path}: "), err
    assert sorted(tmp_path.rglob("*")) == before


def test_a_failed_plot_leaves_no_csv_and_no_timeline(capsys, monkeypatch, tmp_path, run_dir):
    wavs = [_write(tmp_path / "wavs" / f"long_{n}.wav", LONG_S, seed=n) for n in range(2)]
    drawn = []

    def disk_full_on_the_second(recording, classifier, threshold, hop, path):
        if drawn:
            raise OSError(28, "No space left on device")
        drawn.append(draw(recording, classifier, threshold, hop, path))
        return drawn[-1]

    draw = predict.plot_timeline
    monkeypatch.setattr(predict, "plot_timeline", disk_full_on_the_second)
    out_csv, plots = tmp_path / "out" / "windows.csv", tmp_path / "plots"
    code, out, err = _run(capsys, "--model", run_dir, *wavs, "--out", out_csv, "--plot", plots)
    assert code == EXIT_USAGE
    assert err[-1].startswith(f"error: {plots}: ") and "No space left" in err[-1], err
    assert len(drawn) == 1
    assert not out_csv.exists() and not plots.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["wavs"]  # no staging folder left


def test_a_short_file_is_classified_as_its_audio_repeated_to_a_clip(capsys, tmp_path, run_dir, waveform):
    short = _write(tmp_path / "short.wav", SHORT_S, seed=3)
    code, out, err = _run(capsys, "--model", run_dir, short)
    assert code == predict.EXIT_OK, err
    audio = load_audio(short, RATE, None)
    repeated = np.concatenate([audio, audio])[:CLIP]  # 0.6 s twice, cut to the clip
    assert float(_rows(out)[0]["Probability"]) == pytest.approx(
        waveform.predict(repeated[np.newaxis], verbose=0).item(), abs=SAME_MODEL_ATOL)


def test_a_mostly_padded_clip_is_flagged_and_warned(capsys, tmp_path, run_dir):
    tiny = _write(tmp_path / "wavs" / "tiny.wav", PADDED_S)
    _write(tmp_path / "wavs" / "full.wav", 1.0, seed=1)
    code, out, err = _run(capsys, "--model", run_dir, tmp_path / "wavs")
    assert code == predict.EXIT_OK, err
    assert {r["ID"]: r["Padded"] for r in _rows(out)} == {"full.wav": "False", "tiny.wav": "True"}
    warnings = [line for line in err if line.startswith("warning: ")]
    assert len(warnings) == 1 and f"{tiny}: only {PADDED_S:.3f} s of audio" in warnings[0], err

    _write(tmp_path / "wavs" / "long.wav", LONG_S, seed=2)
    code, out, err = _run(capsys, "--model", run_dir, tmp_path / "wavs")
    assert code == predict.EXIT_OK, err
    assert {r["ID"] for r in _rows(out) if r["Padded"] == "True"} == {"tiny.wav"}


def test_misleading_cases_get_a_message_that_says_what_is_wrong(capsys, tmp_path, run_dir, clips):
    wav = next(clips.rglob("*.wav"))
    cut = tmp_path / "cut.keras"
    cut.write_bytes((run_dir / "ensemble.keras").read_bytes()[:1000])
    only_pipeline = tmp_path / "only_pipeline"
    only_pipeline.mkdir()
    shutil.copy(run_dir / "pipeline.toml", only_pipeline)
    expected = {cut: "not a valid .keras file (cut short or corrupt zip archive",
                only_pipeline: "not a run folder (no ensemble.keras)",
                Path("/dev/null"): "not a model; --model takes a run folder"}
    for model, message in expected.items():
        code, out, err = _run(capsys, "--model", model, wav)
        _assert_one_error_line(code, out, err)
        assert err[0].startswith(f"error: {model}: {message}"), err
    for hop in ("nan", "inf"):
        _assert_one_error_line(*_run(capsys, "--model", run_dir, wav, "--hop", hop))


def test_no_decodable_file_exits_1_and_writes_nothing(capsys, tmp_path, run_dir):
    noise = tmp_path / "noise.wav"
    noise.write_bytes(b"RIFF but not a WAV")
    out_csv = tmp_path / "out.csv"
    code, out, err = _run(capsys, "--model", run_dir, noise, "--out", out_csv)
    assert code == predict.EXIT_SKIPPED
    assert out == "" and not out_csv.exists()
    assert not any(line.startswith("error:") for line in err) and "nothing written" in err[-1], err


BREATH_WINDOWS = (3, 4)
"""A scripted timeline: 3 inhale windows then 4 exhale windows, every 0.5 s (a 3.5-s breath)."""
BREATHING_S = 20.0


def _scripted_classify(classifier, recordings, batch_size):
    """``tfbreath.recording.classify``, as predict calls it, with known P(exhale): the ``BREATH_WINDOWS``
    pattern from the first window, or sure exhale all along for a ``steady`` recording."""
    inhale, exhale = BREATH_WINDOWS
    pattern = np.r_[np.full(inhale, 0.1), np.full(exhale, 0.9)]
    return [dataclasses.replace(r, probabilities=np.resize([0.9] if r.id.startswith("steady") else pattern,
                                                           len(r.starts)).astype(np.float32))
            for r in recordings]


def test_the_summary_gives_the_known_rate_beside_out_or_at_summary(capsys, monkeypatch, tmp_path, run_dir):
    monkeypatch.setattr(predict, "classify", _scripted_classify)
    wavs = [_write(tmp_path / "wavs" / "breathing.wav", BREATHING_S, seed=1),
            _write(tmp_path / "wavs" / "one_second.wav", 1.0, seed=2),
            _write(tmp_path / "wavs" / "steady.wav", BREATHING_S, seed=3)]
    out_csv = tmp_path / "out" / "windows.csv"
    code, _, err = _run(capsys, "--model", run_dir, *wavs, "--out", out_csv)
    assert code == predict.EXIT_OK, err
    default = tmp_path / "out" / "windows_summary.csv"
    rows = _rows(default.read_text())
    assert list(rows[0]) == list(predict.SUMMARY_COLUMNS)
    inhale, exhale = BREATH_WINDOWS
    breath_s = (inhale + exhale) * 0.5
    assert rows[0] == {"ID": "breathing.wav", "duration_s": f"{BREATHING_S:.3f}",
                       "breaths_per_min": f"{60 / breath_s:.2f}", "ie_ratio": f"{inhale / exhale:.2f}",
                       "n_inhale": "6", "n_exhale": "6"}
    assert rows[1] == {"ID": "one_second.wav", "duration_s": "1.000", "breaths_per_min": "", "ie_ratio": "",
                       "n_inhale": "1", "n_exhale": "0"}
    assert rows[2]["ID"] == "steady.wav" and rows[2]["breaths_per_min"] == rows[2]["ie_ratio"] == ""
    notes = [line for line in err if line.startswith("note: ")]
    assert len(notes) == 2 and notes[0].startswith(f"note: {wavs[1]}: breaths_per_min and ie_ratio left empty"), err
    assert notes[1].startswith(f"note: {wavs[2]}: breaths_per_min and ie_ratio left empty: its windows show "
                               f"one phase only"), err
    smoothed = [r["Smoothed"] for r in _rows(out_csv.read_text()) if r["ID"] == "breathing.wav"]
    assert smoothed == [r["Target"] for r in _rows(out_csv.read_text()) if r["ID"] == "breathing.wav"]

    elsewhere = tmp_path / "elsewhere" / "rates.csv"
    code, out, err = _run(capsys, "--model", run_dir, wavs[0], "--summary", elsewhere)  # CSV on stdout
    assert code == predict.EXIT_OK, err
    assert _rows(elsewhere.read_text())[0]["breaths_per_min"] == f"{60 / breath_s:.2f}"
    assert len(_rows(out)) == len(window_starts(int(BREATHING_S * RATE), CLIP, CLIP // 2))


def test_no_recording_for_a_summary_is_said_not_an_error(capsys, tmp_path, run_dir):
    summary = tmp_path / "summary.csv"
    short = _write(tmp_path / "short.wav", 1.0)
    code, out, err = _run(capsys, "--model", run_dir, short, "--summary", summary)
    assert code == predict.EXIT_OK, err
    assert list(_rows(out)[0]) == list(predict.CLIP_COLUMNS) and not summary.exists()
    assert err[-1].startswith("--summary: no recording is longer than one clip (1 s)"), err

    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, np.float32), RATE)
    long_wav = _write(tmp_path / "long.wav", LONG_S, seed=1)
    code, out, err = _run(capsys, "--model", run_dir, empty, long_wav, "--summary", summary)
    assert code == predict.EXIT_SKIPPED
    assert any(line.startswith(f"skipped {empty}: no samples") for line in err), err
    assert [r["ID"] for r in _rows(summary.read_text())] == ["long.wav"]


def test_bad_summary_options_are_one_error_line(capsys, tmp_path, run_dir):
    wav = _write(tmp_path / "long.wav", LONG_S)
    out_csv = tmp_path / "windows.csv"
    prefix = "error: --inhale-s/--exhale-s/--rate-bpm: "
    for argv, message in ((["--inhale-s", 0, 2], prefix + "inhale_low_s must be > 0, got 0.0"),
                          (["--exhale-s", 3, 1], prefix + "exhale_high_s must be > exhale_low_s = 3.0, got 1.0"),
                          (["--rate-bpm", 20, 12], prefix + "rate_high_bpm must be > rate_low_bpm = 20.0, got 12.0"),
                          (["--out", out_csv, "--summary", out_csv], "error: --summary and --out name the same "),
                          (["--kaggle", tmp_path / "test.csv", "--summary", tmp_path / "s.csv"],
                           "error: --plot, --hop and --summary apply to WAV inputs")):
        code, out, err = _run(capsys, "--model", run_dir, *([] if "--kaggle" in argv else [wav]), *argv)
        _assert_one_error_line(code, out, err)
        assert err[0].startswith(message), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.wav"]


def test_the_smoothing_options_reach_the_decoders_config():
    args = predict._parse_args(["x.wav", "--inhale-s", "1", "2.5", "--exhale-s", "1.5", "4", "--rate-bpm", "6", "10"])
    assert predict._timeline_config(args) == timeline.TimelineConfig(
        inhale_low_s=1.0, inhale_high_s=2.5, exhale_low_s=1.5, exhale_high_s=4.0, rate_low_bpm=6.0, rate_high_bpm=10.0)
    assert predict._timeline_config(predict._parse_args(["x.wav"])) == timeline.TimelineConfig()


BLIP = sum(BREATH_WINDOWS) + BREATH_WINDOWS[0] + 1
"""A window inside the second breath's exhale, scripted as inhale."""


def test_smoothing_mends_a_lone_flipped_window_with_the_prior_options_given(capsys, monkeypatch, tmp_path, run_dir):
    def with_blip(classifier, recordings, batch_size):
        scripted = _scripted_classify(classifier, recordings, batch_size)
        for recording in scripted:
            recording.probabilities[BLIP] = 0.1
        return scripted

    monkeypatch.setattr(predict, "classify", with_blip)
    wav = _write(tmp_path / "breathing.wav", BREATHING_S, seed=1)

    def smoothed(*options) -> list[dict]:
        out_csv = tmp_path / "windows.csv"
        code, _, err = _run(capsys, "--model", run_dir, wav, "--out", out_csv, *options)
        assert code == predict.EXIT_OK, err
        return _rows(out_csv.read_text())

    rows = smoothed()
    assert rows[BLIP]["Target"] == "I" and rows[BLIP]["Smoothed"] == "E"  # half a second of inhale: too short
    assert all(row["Smoothed"] == row["Target"] for i, row in enumerate(rows) if i != BLIP)
    decoded_with = []
    monkeypatch.setattr(predict, "smooth", lambda recordings, hop, rate, config: decoded_with.append(config) or
                        smooth(recordings, hop, rate, config))
    smoothed("--inhale-s", "0.3", "2", "--exhale-s", "0.3", "3", "--rate-bpm", "30", "60")
    assert decoded_with == [timeline.TimelineConfig(inhale_low_s=0.3, inhale_high_s=2.0, exhale_low_s=0.3,
                                                    exhale_high_s=3.0, rate_low_bpm=30.0, rate_high_bpm=60.0)]


def test_files_of_one_stem_get_two_timelines_and_no_output_overwrites_an_input(capsys, tmp_path, run_dir):
    lower = _write(tmp_path / "wavs" / "rec.wav", LONG_S, seed=1)
    upper = _write(tmp_path / "wavs" / "rec.WAV", LONG_S, seed=2)
    plots = tmp_path / "plots"
    code, _, err = _run(capsys, "--model", run_dir, lower, upper, "--plot", plots)
    assert code == predict.EXIT_OK, err
    assert sorted(p.name for p in plots.glob("*.png")) == ["rec.WAV.png", "rec.wav.png"]
    before = lower.read_bytes()
    for flag in ("--out", "--summary"):
        code, _, err = _run(capsys, "--model", run_dir, lower, upper, flag, tmp_path / "wavs" / ".." / "wavs" /
                            "rec.wav")
        assert code == EXIT_USAGE and err[-1].endswith(f"{flag} would write over an input WAV; give "
                                                               f"another file"), err
    assert lower.read_bytes() == before
