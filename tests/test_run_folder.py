"""The run folder: its layout, claiming, refusal of another pipeline, metrics, backups."""

from __future__ import annotations

import pytest

from tfbreath.config import ConfigError, PipelineConfig, dump_config, load_config, with_overrides
from tfbreath import run_folder
from tfbreath.run_folder import RunFolder


def test_layout_names_every_file_from_the_folder(tmp_path):
    run = RunFolder(tmp_path)
    assert run.pipeline_file == tmp_path / "pipeline.toml" and run.metrics_file == tmp_path / "metrics.json"
    assert run.model_file("cnn8") == tmp_path / "cnn8.keras"
    assert run.history_file("cnn8") == tmp_path / "history_cnn8.csv"
    assert run.backup_dir("cnn8") == tmp_path / "backup" / "cnn8"
    assert run.fold(3).model_file("pooled") == tmp_path / "fold_3" / "pooled.keras"
    assert run.oof_predictions.name == "oof_predictions.csv"
    assert run.validation_predictions.name == "validation_predictions.csv"
    assert RunFolder(str(tmp_path)).path == tmp_path  # a string is taken as a path
    for name in ("cnn8.keras", "ensemble.keras", run.waveform_model_file("ensemble").name):
        (tmp_path / name).write_text("")
    assert run.model_names() == ["cnn8", "ensemble"]  # trained models only, not the exported waveform one


def test_a_claimed_folder_takes_only_its_own_pipeline(tmp_path):
    run, pipeline = RunFolder(tmp_path / "run"), PipelineConfig()
    run.refuse_other_run(pipeline, load_config)  # unclaimed: anything goes
    run.claim(dump_config(pipeline))
    run.refuse_other_run(pipeline, load_config)  # the same pipeline resumes
    with pytest.raises(ConfigError, match="holds a run of a different pipeline"):
        run.refuse_other_run(with_overrides(pipeline, "train", epochs=pipeline.train.epochs + 1), load_config)
    run.pipeline_file.write_text("not a pipeline [")
    with pytest.raises(ConfigError, match="holds a run of a different pipeline"):
        run.refuse_other_run(pipeline, load_config)


def test_a_claimed_folder_takes_only_its_own_clips_in_their_order(tmp_path):
    """The order deals the folds: the same clips in another order would reuse fold models on other folds."""
    run, toml = RunFolder(tmp_path / "run"), dump_config(PipelineConfig())
    clips = [("train/a.wav", "s1", 0.0), ("train/b.wav", "s2", 1.0), ("train/c.wav", "s3", 1.0)]
    run.claim(toml, clips)
    run.claim(toml, clips)  # the same clips resume
    with pytest.raises(ConfigError, match=r"holds models trained on other clips \(the same clips in another order"):
        run.claim(toml, clips[::-1])
    with pytest.raises(ConfigError, match=r"1 of its clips are not among these and 0 of these are new, e\.g\. "
                                          r"train/c\.wav,s3,1 \(gone\)"):
        run.claim(toml, clips[:2])


def test_a_refused_demo_run_leaves_the_folder_as_it_was(tmp_path, monkeypatch):
    """Without data the demo writes synthetic audio into the run folder: not into another run's."""
    monkeypatch.delenv(run_folder.DATA_ENV, raising=False)
    out = tmp_path / "run"
    RunFolder(out).claim(dump_config(PipelineConfig(name="another")))
    with pytest.raises(ConfigError, match="holds a run of a different pipeline"):
        run_folder.resolve(None, None, out, {})
    assert sorted(p.name for p in out.iterdir()) == ["pipeline.toml"]


def test_metrics_are_none_until_written(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_metrics() is None
    run.write_metrics({"accuracy": 0.75})
    assert run.read_metrics() == {"accuracy": 0.75}


def test_backups_go_only_once_every_model_emptied_its_own(tmp_path):
    run = RunFolder(tmp_path)
    run.backup_dir("cnn8").mkdir(parents=True)
    run.drop_empty_backups()
    assert run.backup_dir("cnn8").is_dir()  # a model still unfinished keeps its checkpoints
    run.backup_dir("cnn8").rmdir()
    run.drop_empty_backups()
    assert not (tmp_path / "backup").exists()
    run.drop_empty_backups()  # nothing left: no error
    (tmp_path / "cnn8.keras").touch()
    (tmp_path / "ensemble.keras").touch()
    assert run.model_names() == ["cnn8", "ensemble"]
