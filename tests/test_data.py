"""Data layouts, session-grouped splits, and the cached tf.data feature pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from conftest import BREATH_DIR, SAMPLE_RATE, assert_same_scalars, breath_like, needs_breath, real_clips
from test_audio import lock
import tfbreath.features.__main__ as features_cli
from tfbreath import audio, data, features
from tfbreath.config import AudioConfig, DataConfig, FeatureConfig, PipelineConfig

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


def test_a_train_csv_with_only_a_header_is_refused(tmp_path):
    (tmp_path / "train.csv").write_text("ID,Target\n")
    with pytest.raises(data.DataError, match=r"train\.csv: no data rows, only a header$"):
        data.read_kaggle_train(tmp_path)


def test_test_csv_ids_name_their_wav_with_or_without_the_extension(tmp_path, write_wav):
    """Kaggle's test.csv IDs are file names; an ID without ``.wav`` names the same file."""
    (tmp_path / "test").mkdir()
    wavs = [write_wav(f"test/{name}.wav", breath_like(i)) for i, name in enumerate(("a", "b"))]
    (tmp_path / "test.csv").write_text("ID\na.wav\nb\n")
    ids, examples = data.read_kaggle_test(tmp_path)
    assert ids == ["a.wav", "b"] and examples.files == tuple(wavs)


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
    few = examples.subset(np.flatnonzero(np.isin(examples.groups, sorted(set(examples.groups))[:4])))
    with pytest.raises(data.DataError, match=r"need at least 5 recording sessions for a 20% validation split, got 4"):
        data.split_by_session(few, 0.2, seed=1)
    with pytest.raises(data.DataError, match=r"need at least 7 recording sessions for a 15% "):  # round(1 / 0.15)
        data.split_by_session(few, 0.15, seed=1)


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
    assert set(inputs) == {"spectral", "scalars"}  # the model's inputs only: no status, label or index
    assert inputs["spectral"].shape == (4, 128, 63, 9)
    assert inputs["scalars"].shape == (4, 39)
    assert sum(int(b[1].shape[0]) for b in batches) == 5
    assert label.dtype == tf.float32

    # An epoch-seeded shuffle: each epoch's order is a function of (seed, epoch) alone, so a resumed
    # run replays the uninterrupted one's, and epochs differ from each other.
    epoch = tf.Variable(0, dtype=tf.int64)
    keras.utils.set_random_seed(0)  # TensorFlow's global seed 0 broke its own seed check here (fit --seed 0)

    def order(seed: int = 3, ds: tf.data.Dataset | None = None) -> list[float]:
        """The clips by their first scalar, as one epoch (or one pass over ``ds``) deals them."""
        if ds is None:
            ds = feature_set.batches(2, shuffle_buffer=5, seed=seed, epoch=epoch)
        return [float(x) for inputs, _ in ds for x in inputs["scalars"][:, 0]]

    first = order()
    assert order() == first
    epoch.assign(1)
    second = order()
    assert second != first and sorted(second) == sorted(first)
    epoch.assign(0)
    assert order() == first
    keras.utils.set_random_seed(42)
    assert order() == first  # the order is the pipeline seed's and the epoch's, not TensorFlow's global seed's
    assert order(seed=4) != second  # seed 4's epoch 0 is not seed 3's epoch 1 (the seed is not seed + epoch)
    # Without an epoch variable, each pass over one dataset deals a new order.
    reshuffled = feature_set.batches(2, shuffle_buffer=5, seed=3)
    assert order(ds=reshuffled) != order(ds=reshuffled)


def test_skip_report_counts_the_kept_files_and_groups_the_reasons():
    """The report's first line counts what was kept, not what was read, and sums each reason."""
    bad = data.SkipReport(4, [(Path("a.wav"), "silent"), (Path("b.wav"), "empty"), (Path("c.wav"), "silent")])
    assert str(bad).splitlines() == ["features: 1 of 4 file(s) ok, skipped 3: 2 silent, 1 empty",
                                     "  skipped a.wav: silent", "  skipped b.wav: empty", "  skipped c.wav: silent"]
    assert str(data.SkipReport(2, [])) == "features: 2 of 2 file(s) ok, none skipped"


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


def test_a_file_cache_is_named_for_what_its_features_depend_on(tmp_path):
    files = [tmp_path / f"steth_20990101_00_00_0{i}_000.wav" for i in range(3)]  # never read
    examples = data.Examples(tuple(files), np.array([0, 1, 0], np.float32), tuple(f.stem for f in files))
    on_file = PipelineConfig(data=DataConfig(cache=str(tmp_path / "c")))
    name = data.cache_for(on_file, "train", examples)
    assert name.startswith(f"{tmp_path / 'c'}_train_") and name == data.cache_for(on_file, "train", examples)
    others = [data.cache_for(on_file, "validation", examples),
              data.cache_for(on_file, "train", examples.subset([0, 1])),
              data.cache_for(on_file, "train", examples.subset([1, 0, 2])),
              data.cache_for(PipelineConfig(data=DataConfig(cache=str(tmp_path / "c")),
                                            features=FeatureConfig(maps=("mel",))), "train", examples),
              data.cache_for(PipelineConfig(data=DataConfig(cache=str(tmp_path / "c")),
                                            audio=AudioConfig(duration_s=0.5)), "train", examples),
              data.cache_for(on_file, "train", data.Examples(examples.files, np.array([1, 1, 0], np.float32),
                                                             examples.groups))]  # labels are cached too
    assert len({name, *others}) == 7
    for kept_as_is in ("memory", "none"):  # not file caches: "none" must not become a file named none_train_...
        assert data.cache_for(PipelineConfig(data=DataConfig(cache=kept_as_is)), "train", examples) == kept_as_is


def test_extract_without_a_cache_argument_keys_the_pipelines_file_cache_by_its_files(tmp_path, write_wav):
    """``features`` and the benchmarks call ``extract`` without ``cache=``: a second list of files
    must not be served the first list's cached features."""
    pipeline = PipelineConfig(data=DataConfig(cache=str(tmp_path / "c")), features=FeatureConfig(maps=("mel",)))
    first, second = (write_wav(f"clip{i}.wav", breath_like(i)) for i in range(2))

    def scalars(files, cache=None):
        extracted = data.extract(files, None, pipeline, cache=cache, progress=False)
        return np.stack([e["scalars"] for e in extracted.kept.as_numpy_iterator()])

    data.extract([first], None, pipeline, progress=False)
    np.testing.assert_array_equal(scalars([second]), scalars([second], cache="none"))


def test_features_cli_writes_every_map_and_reports_skips(tmp_path, write_wav, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(2):
        write_wav(f"clips/c{i}.wav", breath_like(i))
    (folder / "notes.wav").write_text("not audio")
    out = tmp_path / "f.npz"
    code = features_cli.main([str(folder), "--out", str(out)])
    assert code == 1  # one file skipped
    assert "skipped 1" in capsys.readouterr().err
    saved = np.load(out, allow_pickle=False)
    assert saved["mel"].shape == (2, 128, 63)
    assert saved["lpc"].shape == (2, 128, 63)
    assert saved["scalars"].shape == (2, 39)
    assert [s.rsplit("/", 1)[-1] for s in saved["files"]] == ["c0.wav", "c1.wav"]


def test_features_cli_rejects_a_missing_input(tmp_path, capsys):
    assert features_cli.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "x.npz")]) == 2
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


# ---------------------------------------------------------------------------------------------
# Bad inputs (issue 18): one clear line, nothing lost or half-written
# ---------------------------------------------------------------------------------------------
def test_features_cli_with_no_decodable_file_writes_nothing(tmp_path, capsys):
    folder = tmp_path / "clips"
    folder.mkdir()
    (folder / "a.wav").write_text("not audio")
    (folder / "b.wav").write_bytes(b"")
    out = tmp_path / "x.npz"
    assert features_cli.main([str(folder), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "skipped 2" in err and "a.wav: not a WAV file" in err
    assert err.strip().splitlines()[-1] == "error: no file could be decoded (2 skipped); nothing written"
    assert not out.exists() and list(tmp_path.iterdir()) == [folder]


def test_features_cli_names_an_unwritable_output_before_extracting(tmp_path, write_wav, capsys):
    write_wav("c0.wav", breath_like(0))
    taken = tmp_path / "taken.npz"
    taken.mkdir()
    assert features_cli.main([str(tmp_path / "c0.wav"), "--out", str(taken)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {taken}: is a folder; name a file"
    blocked = tmp_path / "c0.wav" / "x.npz"  # a file where its folder would go
    assert features_cli.main([str(tmp_path / "c0.wav"), "--out", str(blocked)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {blocked}: cannot be created, {tmp_path / 'c0.wav'} is a file"


def test_features_cli_writes_exactly_the_named_file(tmp_path, write_wav):
    write_wav("c0.wav", breath_like(0))
    out = tmp_path / "features"  # np.savez would have written features.npz
    assert features_cli.main([str(tmp_path / "c0.wav"), "--out", str(out)]) == 0
    assert np.load(out)["mel"].shape == (1, 128, 63)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c0.wav", "features"]


def test_a_folder_named_like_a_wav_is_not_collected_but_searched(tmp_path, write_wav):
    (tmp_path / "takes.wav").mkdir()
    write_wav("takes.wav/inner.wav", breath_like(0))
    write_wav("outer.wav", breath_like(1))
    assert [p.name for p in data.collect_wav_files([tmp_path])] == ["outer.wav", "inner.wav"]


def test_wav_files_are_collected_whatever_the_case_of_their_extension(tmp_path, write_wav):
    """Recorders and Windows tools often write ``.WAV``: a folder's ``*.WAV`` and ``*.Wav`` are found
    too, sorted by name whatever order the folder lists them in (written here last first)."""
    names = ["a.WAV", "b.Wav", "c.wav", "d.WAV", "e.wav", "f.Wav"]
    for i, name in reversed(list(enumerate(names))):
        write_wav(name, breath_like(i))
    (tmp_path / "notes.txt").write_text("not audio")
    assert [p.name for p in data.collect_wav_files([tmp_path])] == names


def test_an_unreadable_file_is_a_counted_skip(tmp_path, write_wav, monkeypatch):
    good = write_wav("good.wav", breath_like(0))
    locked = write_wav("locked.wav", breath_like(1))
    lock(locked, monkeypatch)
    feature_set = data.extract([locked, good], None, PIPELINE, progress=False)
    assert feature_set.report.skipped == [(locked, audio.status_message(audio.UNREADABLE))]
    assert "cannot be read (permission denied or not a regular file)" in str(feature_set.report)
    assert list(feature_set.kept_examples.files) == [good]


def test_a_fifo_is_a_counted_skip_not_a_hang(tmp_path, write_wav):
    """Opening a FIFO for reading blocks until a writer comes: it is refused before it is opened."""
    good = write_wav("good.wav", breath_like(0))
    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    assert not audio.is_readable(fifo)
    feature_set = data.extract([fifo, good], None, PIPELINE, progress=False)
    assert feature_set.report.skipped == [(fifo, audio.status_message(audio.UNREADABLE))]


def test_a_train_entry_that_is_a_folder_is_skipped_at_extraction(tmp_path, write_wav):
    root = _kaggle_layout(tmp_path, write_wav, n_sessions=1, clips_per_session=2)
    wav = root / "train" / "steth_20180101_10_00_00_001.wav"
    wav.unlink()
    wav.mkdir()
    examples = data.read_kaggle_train(root)
    assert len(examples) == 2
    report = data.extract(examples, None, PIPELINE, progress=False).report
    assert report.skipped == [(wav, audio.status_message(audio.UNREADABLE))]


def test_duplicate_ids_are_refused_with_their_rows(tmp_path, write_wav):
    root = _kaggle_layout(tmp_path, write_wav, n_sessions=2, clips_per_session=2,
                          rows=["steth_20180101_10_00_00_E_001,I"])
    with pytest.raises(data.DataError) as err:
        data.read_kaggle_train(root)
    assert str(err.value) == (f"{root / 'train.csv'} rows 3 and 6: duplicate ID "
                              "'steth_20180101_10_00_00_E_001'")
    # Two IDs that differ only in their label token name the same WAV: a duplicate as well.
    root2 = tmp_path / "second"
    root2.mkdir()
    (root2 / "train").symlink_to(root / "train")
    (root2 / "train.csv").write_text("ID,Target\nsteth_20180101_10_00_00_I_000,I\n"
                                     "steth_20180101_10_00_00_E_000,E\n")
    with pytest.raises(data.DataError, match=r"rows 2 and 3: 'steth_20180101_10_00_00_E_000' names the same WAV "
                                             r"as 'steth_20180101_10_00_00_I_000'"):
        data.read_kaggle_train(root2)
    (root2 / "train.csv").write_text("ID,Target\nsteth_20180101_10_00_00_I_000,I\n"  # another spelling of one path
                                     "../train/steth_20180101_10_00_00_E_000,E\n")
    with pytest.raises(data.DataError, match=r"rows 2 and 3: '\.\./train/steth_20180101_10_00_00_E_000' names "
                                             r"the same WAV as 'steth_20180101_10_00_00_I_000'"):
        data.read_kaggle_train(root2)
    (root / "test").mkdir()
    write_wav("test/a.wav", breath_like(0))
    (root / "test.csv").write_text("ID\na.wav\nb.wav\na.wav\n")
    with pytest.raises(data.DataError, match=r"test\.csv rows 2 and 4: duplicate ID 'a\.wav'"):
        data.read_kaggle_test(root)


def test_csv_with_a_bom_reads_and_bad_csv_text_is_one_line(tmp_path, write_wav):
    root = _kaggle_layout(tmp_path, write_wav, n_sessions=1, clips_per_session=2)
    csv_path = root / "train.csv"
    csv_path.write_bytes(b"\xef\xbb\xbf" + csv_path.read_bytes())  # as Excel saves "CSV UTF-8"
    assert len(data.read_kaggle_train(root)) == 2
    (root / "test").mkdir()
    write_wav("test/a.wav", breath_like(0))
    (root / "test.csv").write_bytes(b"\xef\xbb\xbfID\r\na.wav\r\n")
    assert data.read_kaggle_test(root)[0] == ["a.wav"]
    csv_path.write_bytes("ID,Target\ncaf\xe9_I_000,I\n".encode("latin-1"))
    with pytest.raises(data.DataError, match=r"train\.csv: not UTF-8 text \(byte 0xe9 at offset 13\)$"):
        data.read_kaggle_train(root)
    csv_path.write_text("ID,Target\n steth_20180101_10_00_00_I_000 , I \n")  # spaces around values are ignored
    assert data.read_kaggle_train(root).labels.tolist() == [0.0]
    csv_path.write_text("ID,Target\nsteth_20180101_10_00_00_I_000\n")
    with pytest.raises(data.DataError, match=r"train\.csv row 2: no Target value$"):
        data.read_kaggle_train(root)
    csv_path.write_text('ID,Target\n"' + "a" * 200_000 + '",I\n')  # beyond the csv module's field limit
    with pytest.raises(data.DataError, match=r"train\.csv: not a readable CSV \(field larger than field limit "
                                             r"\(131072\), after line 1\)$"):
        data.read_kaggle_train(root)
    csv_path.unlink()
    csv_path.mkdir()
    with pytest.raises(data.DataError, match=r"train\.csv: is a folder, not a CSV file$"):
        data.read_kaggle_train(root)


def test_extract_refuses_labels_that_do_not_pair_with_the_files(tmp_path, write_wav):
    files = [write_wav(f"{i}.wav", breath_like(i)) for i in range(2)]
    with pytest.raises(ValueError, match="one label per file: 2 files, 1 labels"):
        data.extract(files, [1.0], PIPELINE, progress=False)
