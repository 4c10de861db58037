"""Atomic outputs: a ``.keras`` carrying its pipeline, and output paths refused before any work."""

from __future__ import annotations

import concurrent.futures
import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest

from tfbreath import artifacts
from tfbreath.config import PipelineConfig, dump_config, parse_config, with_overrides

PIPELINE = with_overrides(PipelineConfig(), "features", fmax=3000.0)
INPUT_SIZE = 8
WRITERS = 4
ROUNDS = 50


@pytest.fixture
def tiny_model():
    """A dense model, ``[B, 8] -> [B, 1]`` (float32: conftest starts each test from that policy)."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((INPUT_SIZE,))
    return keras.Model(inputs, keras.layers.Dense(1)(inputs))


def test_a_saved_model_carries_its_pipeline_and_keras_still_loads_it(tmp_path, tiny_model):
    path = artifacts.save_model(tiny_model, tmp_path / "model.keras", pipeline_toml=dump_config(PIPELINE))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.keras"]  # no partial file left
    assert parse_config(artifacts.model_pipeline_toml(path)) == PIPELINE
    assert artifacts.MODEL_PIPELINE_ENTRY in zipfile.ZipFile(path).namelist()
    x = np.random.default_rng(0).standard_normal((3, INPUT_SIZE)).astype(np.float32)
    np.testing.assert_array_equal(keras.models.load_model(path)(x), tiny_model(x))


def test_a_model_saved_without_a_pipeline_has_none(tmp_path, tiny_model):
    assert artifacts.model_pipeline_toml(artifacts.save_model(tiny_model, tmp_path / "model.keras")) is None


def test_check_writable_accepts_new_and_existing_places_and_leaves_nothing(tmp_path):
    existing = tmp_path / "old.csv"
    existing.write_text("old\n")
    for path, folder in ((tmp_path / "new" / "deeper" / "out.csv", False), (existing, False),
                         (tmp_path / "plots", True), (tmp_path, True)):
        assert artifacts.check_writable(path, folder=folder) == path
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.csv"]


def test_check_writable_refuses_what_cannot_be_written(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x\n")
    refused = {(a_file / "out.csv", False): f"cannot be created, {a_file} is a file",
               (tmp_path, False): "is a folder; name a file",
               (a_file, True): "is a file, not a folder",
               (a_file / "plots", True): f"cannot be created, {a_file} is a file"}
    for (path, folder), problem in refused.items():
        with pytest.raises(artifacts.OutputPathError) as err:
            artifacts.check_writable(path, folder=folder)
        assert str(err.value) == f"{path}: {problem}"


def test_check_writable_tries_a_write_as_permission_bits_do_not_tell_root():
    unwritable = Path("/sys/tfbreath_artifacts_test") / "out.csv"
    with pytest.raises(artifacts.OutputPathError, match=r"cannot write in /sys \("):
        artifacts.check_writable(unwritable)


def test_writers_of_one_file_at_once_do_not_collide(tmp_path):
    """Each write stages under its own name (a search's chief and workers write its pipeline together)."""
    path = tmp_path / "search_pipeline.toml"
    texts = [f"writer = {i}\n" for i in range(WRITERS)]
    with concurrent.futures.ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(lambda text: artifacts.write_text(path, text), texts * ROUNDS))
    assert path.read_text() in texts
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no partial file left


def test_a_folder_is_swapped_whole_and_a_failed_swap_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "saved"
    artifacts.write_folder(target, lambda staged: (staged.mkdir(), (staged / "old.txt").write_text("old")))
    artifacts.write_folder(target, lambda staged: (staged.mkdir(), (staged / "new.txt").write_text("new")))
    assert [p.name for p in target.iterdir()] == ["new.txt"]

    real_replace = artifacts.os.replace

    def refuse_the_new_folder(source, destination):
        if ".partial" in Path(source).name:
            raise OSError(39, "Directory not empty")
        real_replace(source, destination)

    monkeypatch.setattr(artifacts.os, "replace", refuse_the_new_folder)
    with pytest.raises(OSError):
        artifacts.write_folder(target, lambda staged: (staged.mkdir(), (staged / "newer.txt").write_text("x")))
    assert [p.name for p in target.iterdir()] == ["new.txt"]  # the old folder is back, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["saved"]  # no staging or set-aside folder left


def test_a_failed_write_leaves_the_old_file_and_no_partial_one(tmp_path):
    target = artifacts.write_text(tmp_path / "metrics.json", "old")

    with pytest.raises(UnicodeEncodeError):  # fails once the file is open
        artifacts.write_text(target, "\ud800")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_saved_figure_is_closed_written_or_not(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.close("all")
    artifacts.save_figure(plt.figure(), tmp_path / "a.png")
    with pytest.raises(OSError):
        artifacts.save_figure(plt.figure(), tmp_path / "a.png" / "b.png")  # a file where a folder should be
    assert plt.get_fignums() == [] and (tmp_path / "a.png").stat().st_size > 0


def test_write_json_makes_missing_folders_and_keeps_the_key_order(tmp_path):
    """Metrics are written in the order the run records them (not sorted), into a new run folder."""
    payload = {"val_accuracy": 0.9, "epochs": 3, "dtype_policy": "float32"}
    path = artifacts.write_json(tmp_path / "run" / "fold_1" / "metrics.json", payload)
    assert list(json.loads(path.read_text())) == list(payload)


def test_format_csv_ends_lines_with_newline_only():
    """One ``\\n`` per line whatever the platform (the csv module's default is ``\\r\\n``)."""
    assert artifacts.format_csv(["File", "Probability"], [["a, b.wav", "0.5"]]) == \
        'File,Probability\n"a, b.wav",0.5\n'
