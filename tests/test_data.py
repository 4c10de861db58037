"""Data layouts, session-grouped splits, and the cached tf.data feature pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from conftest import BREATH_DIR, SAMPLE_RATE, assert_same_scalars, breath_like, needs_breath, real_clips
from tfbreath import audio, data, features
from tfbreath.config import DataConfig, PipelineConfig

PIPELINE = PipelineConfig(data=DataConfig(batch_size=4))


def _kaggle_layout(tmp_path, write_wav, n_sessions=6, clips_per_session=2, rows=None):
    """A tiny Kaggle-layout folder; row i's label alternates per session."""
    (tmp_path / "train").mkdir()
    lines = ["ID,Target"]
    for s in range(n_sessions):
        session = f"steth_20180101_10_00_{s:02d}"
        for c in range(clips_per_session):
            target = "IE"[(s + c) % 2]
            clip_id = f"{session}_{target}_{c:03d}"
            write_wav(f"train/{session}_{c:03d}.wav", breath_like(seed=10 * s + c))
            lines.append(f"{clip_id},{target}")
    lines += rows or []
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_labels_come_from_the_target_column_not_the_name(tmp_path, write_wav):
    root = _kaggle_layout(tmp_path, write_wav, n_sessions=1, clips_per_session=1)
    write_wav("train/steth_20180101_11_00_00_007.wav", breath_like(99))
    # The ID says inhale, the Target column says exhale: the column wins.
    with (root / "train.csv").open("a") as handle:
        handle.write("steth_20180101_11_00_00_I_007,E\n")
    examples = data.read_kaggle_train(root)
    assert examples.labels.tolist() == [0.0, 1.0]
    assert examples.groups == ("steth_20180101_10_00_00", "steth_20180101_11_00_00")


def test_missing_wav_and_unknown_label_are_one_line_errors(tmp_path, write_wav):
    root = _kaggle_layout(tmp_path, write_wav, rows=["steth_20180101_12_00_00_E_001,E"])
    with pytest.raises(data.DataError, match=r"train\.csv row 14: WAV for 'steth_20180101_12_00_00_E_001' not found"):
        data.read_kaggle_train(root)
    (root / "train.csv").write_text("ID,Target\nsteth_20180101_10_00_00_I_000,X\n")
    with pytest.raises(data.DataError, match=r"row 2: unknown Target 'X'") as err:
        data.read_kaggle_train(root)
    assert "\n" not in str(err.value)
    (root / "train.csv").write_text("Name,Label\n")
    with pytest.raises(data.DataError, match=r"missing column\(s\) \['ID', 'Target'\]"):
        data.read_kaggle_train(root)


def test_split_keeps_sessions_apart_is_stratified_and_seedable(tmp_path, write_wav):
    examples = data.read_kaggle_train(_kaggle_layout(tmp_path, write_wav, n_sessions=20))
    train, val = data.split_by_session(examples, 0.2, seed=1)
    assert set(train.groups).isdisjoint(val.groups)
    assert len(train) + len(val) == len(examples)
    assert set(val.labels) == {0.0, 1.0}
    again, _ = data.split_by_session(examples, 0.2, seed=1)
    other, _ = data.split_by_session(examples, 0.2, seed=2)
    assert again.files == train.files
    assert other.files != train.files


def test_extract_counts_and_reports_bad_files_and_batches_the_rest(tmp_path, write_wav):
    good = [write_wav(f"good{i}.wav", breath_like(i)) for i in range(5)]
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(good[0].read_bytes()[:100])
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    silent = write_wav("silent.wav", np.zeros(SAMPLE_RATE, np.float32))
    files = [good[0], truncated, good[1], empty, *good[2:], silent]
    labels = np.array([0, 1, 1, 0, 1, 0, 1, 0], np.float32)

    feature_set = data.extract(files, labels, PIPELINE, progress=False)
    report = feature_set.report
    assert report.total == 8
    assert {p.name for p, _ in report.skipped} == {"truncated.wav", "empty.wav", "silent.wav"}
    assert "skipped 3" in str(report) and "truncated.wav" in str(report)

    arrays = feature_set.to_numpy()
    assert [p.name for p in arrays["files"]] == [p.name for p in good]
    assert list(feature_set.kept_examples.files) == list(arrays["files"])
    np.testing.assert_array_equal(feature_set.kept_examples.labels, arrays["labels"])
    np.testing.assert_array_equal(arrays["labels"], [0, 1, 1, 0, 1])

    batches = list(feature_set.batches(batch_size=4))
    inputs, label = batches[0]
    assert inputs["spectral"].shape == (4, 128, 63, 9)
    assert inputs["scalars"].shape == (4, 39)
    assert sum(int(b[1].shape[0]) for b in batches) == 5
    assert label.dtype == tf.float32


def test_pipeline_features_equal_a_direct_call(tmp_path, write_wav):
    clips = [breath_like(i) for i in range(3)]
    files = [write_wav(f"c{i}.wav", y, subtype="FLOAT") for i, y in enumerate(clips)]
    arrays = data.extract(files, None, PIPELINE, progress=False).to_numpy()
    direct = features.extract_features(np.stack(clips), PIPELINE)
    np.testing.assert_allclose(arrays["spectral"], direct["spectral"].numpy(), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(arrays["scalars"], direct["scalars"].numpy(), rtol=1e-3, atol=1e-4)


def test_feature_calls_of_any_size_give_the_same_elements_in_order(tmp_path, write_wav):
    files = [write_wav(f"c{i}.wav", breath_like(i)) for i in range(5)]
    examples = data.unlabelled(files)
    small, default = (list(data.feature_dataset(examples, PIPELINE, size).as_numpy_iterator())
                      for size in (2, data.FEATURE_BATCH))  # 2 leaves a partial last call
    assert [e[data.INDEX] for e in small] == [e[data.INDEX] for e in default] == list(range(5))
    for a, b in zip(small, default):
        np.testing.assert_allclose(a["spectral"], b["spectral"], atol=1e-5)
        assert_same_scalars(a["scalars"], b["scalars"])


def test_extract_caches_to_a_file(tmp_path, write_wav):
    files = [write_wav(f"c{i}.wav", breath_like(i)) for i in range(2)]
    cache = tmp_path / "cache" / "train"
    first = data.extract(files, None, PIPELINE, cache=str(cache), progress=False).to_numpy()
    assert list(cache.parent.glob("train*.index"))
    second = data.extract(files, None, PIPELINE, cache=str(cache), progress=False).to_numpy()
    np.testing.assert_array_equal(first["spectral"], second["spectral"])


def test_features_cli_writes_every_map_and_reports_skips(tmp_path, write_wav, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(2):
        write_wav(f"clips/c{i}.wav", breath_like(i))
    (folder / "notes.wav").write_text("not audio")
    out = tmp_path / "f.npz"
    code = features.main([str(folder), "--out", str(out)])
    assert code == 1  # one file skipped
    assert "skipped 1" in capsys.readouterr().err
    saved = np.load(out, allow_pickle=False)
    assert saved["mel"].shape == (2, 128, 63)
    assert saved["lpc"].shape == (2, 128, 63)
    assert saved["scalars"].shape == (2, 39)
    assert [s.rsplit("/", 1)[-1] for s in saved["files"]] == ["c0.wav", "c1.wav"]


def test_features_cli_rejects_a_missing_input(tmp_path, capsys):
    assert features.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.npz")]) == 2
    assert "no such file or folder" in capsys.readouterr().err


@needs_breath
def test_real_kaggle_layout_reads_and_splits_by_session():
    examples = data.read_kaggle_train(BREATH_DIR)
    assert len(examples) == 3200
    assert set(examples.labels) == {0.0, 1.0}
    train, val = data.split_by_session(examples, 0.2, seed=42)
    assert set(train.groups).isdisjoint(val.groups)
    assert 0.15 < len(val) / len(examples) < 0.25
    assert abs(val.labels.mean() - 0.5) < 0.05
    ids, test = data.read_kaggle_test(BREATH_DIR)
    assert len(ids) == len(test) == 1000


@needs_breath
def test_real_clips_through_the_pipeline_match_load_audio():
    files = real_clips(4)
    arrays = data.extract(files, None, PIPELINE, progress=False).to_numpy()
    clips = np.stack([audio.load_audio(f, SAMPLE_RATE, 1.0) for f in files])
    direct = features.extract_features(clips, PIPELINE)["spectral"].numpy()
    np.testing.assert_allclose(arrays["spectral"], direct, rtol=1e-3, atol=1e-3)
