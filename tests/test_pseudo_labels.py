"""Pseudo-labelling: relabelled feature sets, the teacher, which clips a fold may use, and the fit run."""

from __future__ import annotations

import csv

import keras
import numpy as np
import pytest

from conftest import breath_like
from tfbreath import crossval, data, fit, pseudo_labels, train
from tfbreath.config import ConfigError, PipelineConfig, with_overrides
from tfbreath.run_folder import OOF_PREDICTIONS, RunFolder
from tfbreath.synthetic import write_synthetic_breath

TINY = with_overrides(with_overrides(with_overrides(
    PipelineConfig(), "train", models=("cnn8", "pooled"), model_width=0.125, epochs=2, folds=2,
    early_stopping_patience=10, pseudo_labels="soft"), "data", batch_size=8, validation_fraction=0.25),
    "augment", warmup_epochs=1)


def test_relabelled_serves_the_new_labels_with_the_same_features(write_wav):
    files = [write_wav(f"clip{i}.wav", breath_like(i)) for i in range(3)]
    feature_set = data.extract(files, np.array([0, 1, 0], np.float32), TINY, progress=False)
    soft = np.array([0.25, 0.5, 0.75], np.float32)

    relabelled = feature_set.relabelled(soft)
    before, after = feature_set.to_numpy(), relabelled.to_numpy()
    np.testing.assert_array_equal(after["labels"], soft)
    np.testing.assert_array_equal(after["spectral"], before["spectral"])
    np.testing.assert_array_equal(relabelled.kept_examples.labels, soft)
    np.testing.assert_array_equal(relabelled.subset([0, 2]).to_numpy()["labels"], [0.25, 0.75])
    np.testing.assert_array_equal(next(iter(relabelled.batches(3)))[1].numpy(), soft)
    with pytest.raises(ValueError, match="expected 3, got shape"):
        feature_set.relabelled(soft[:2])


def test_a_training_set_holds_the_chosen_labelled_clips_and_the_used_unlabelled_ones_with_their_targets(write_wav):
    files = [write_wav(f"clip{i}.wav", breath_like(i)) for i in range(4)]
    labels = np.array([0, data.UNLABELLED, 1, data.UNLABELLED], np.float32)
    extracted = data.extract(files, labels, TINY, progress=False)
    labelled_at, unlabelled_at = np.array([0, 2]), np.array([1, 3])

    chosen = pseudo_labels.training_set(extracted, labelled_at, unlabelled_at, np.array([0.3, 0.9]),
                                        np.array([False, True]), labelled=np.array([1]))
    assert [f.name for f in chosen.kept_examples.files] == ["clip2.wav", "clip3.wav"]
    np.testing.assert_allclose(chosen.to_numpy()["labels"], [1.0, 0.9])
    # the folds' sets are all cut from the one extracted set: its own labels stay as read
    np.testing.assert_array_equal(extracted.kept_examples.labels, labels)


def test_unheard_leaves_out_the_named_sessions():
    np.testing.assert_array_equal(pseudo_labels.unheard(["a", "b", "c", "a"], {"a", "c"}), [False, True, False, False])


@pytest.mark.parametrize("train_values, message", [
    ({"folds": 1}, "pseudo_labels = 'soft' needs folds >= 2"),
    ({"models": ("pooled",)}, "needs a gradient member"),
    ({"pseudo_labels": "hard"}, "pseudo_labels must be one of ['none', 'soft'], got 'hard'"),
])
def test_bad_pseudo_label_settings_are_refused(train_values, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        with_overrides(TINY, "train", **train_values)


def test_a_data_folder_without_unlabelled_clips_is_one_line_and_claims_nothing(tmp_path):
    root = write_synthetic_breath(tmp_path / "d", n_sessions=6, clips_per_session=2)
    with pytest.raises(data.DataError, match="pseudo_labels needs unlabelled clips .* no test.csv"):
        fit.run(TINY, root, tmp_path / "run")
    assert not (tmp_path / "run" / "pipeline.toml").exists()


def test_students_train_on_unheard_sessions_and_give_the_estimate_and_the_refit(tmp_path, capsys):
    root = write_synthetic_breath(tmp_path / "d", n_sessions=10, clips_per_session=4, unlabelled_per_session=1)
    metrics = fit.run(TINY, root, tmp_path / "run")
    printed = capsys.readouterr().out
    run = RunFolder(tmp_path / "run")
    with open(run.oof_predictions, newline="") as handle:
        rows = list(csv.DictReader(handle))
    labelled = data.read_kaggle_train(root)
    unlabelled = data.read_kaggle_test(root)[1]
    assert len(rows) == len(labelled) == 40 and len(unlabelled) == 10  # no unlabelled clip is scored
    assert metrics["split"] == {"clips": 40, "sessions": 10, "skipped": 0, "unlabelled_clips": 10}

    protocol = metrics["cross_validation"]["protocol"]
    folds = np.array([int(row["fold"]) for row in rows])
    by_name = {f.name: i for i, f in enumerate(labelled.files)}
    order = [by_name[row["file"]] for row in rows]
    for fold in range(2):
        training = labelled.subset([order[i] for i in np.flatnonzero(folds != fold)])
        _, stopping = data.split_by_session(training, TINY.data.validation_fraction, TINY.data.seed)
        scored = {row["session"] for row in rows if int(row["fold"]) == fold}
        expected = sum(group not in scored | set(stopping.groups) for group in unlabelled.groups)
        assert 0 < expected < len(unlabelled)
        assert protocol["pseudo_labels"]["used_per_fold"][fold] == expected
        students = RunFolder(run.fold(fold).path / pseudo_labels.STUDENT_FOLDER)
        assert students.model_file("cnn8").is_file() and not students.model_file("pooled").exists()
        assert protocol["best_epochs"]["cnn8"][fold] == train.best_epoch_count(students.history_file("cnn8"))
        assert f"{expected} pseudo-labelled (soft)" in printed
    teacher = protocol["pseudo_labels"]["teacher_ensemble"]["accuracy"]
    assert len(teacher["folds"]) == 2
    # The teachers are each fold's first models (its folder's own, beside the students' folder),
    # scored on the clips that fold holds out and combined with cross-fitted weights.
    labels = np.array([data.LABELS[row["Target"]] for row in rows])
    clips = data.extract([labelled.files[i] for i in order], labels, TINY, progress=False)
    teachers = {name: np.zeros(len(rows)) for name in TINY.train.models}
    for fold in range(2):
        held_out = clips.subset(np.flatnonzero(folds == fold))
        for name in teachers:
            model = keras.models.load_model(run.fold(fold).model_file(name))
            teachers[name][folds == fold] = train.predict_probabilities(model, held_out, 8)
    teacher_oof, _ = crossval.cross_fitted_ensemble(teachers, labels, folds)
    assert teacher["pooled"] == pytest.approx(crossval.accuracy(labels, teacher_oof), abs=1e-4)

    ensemble = np.array([float(row["ensemble"]) for row in rows])
    assert metrics["cross_validation"]["ensemble"]["accuracy"]["pooled"] == pytest.approx(
        crossval.accuracy(labels, ensemble), abs=1e-4)
    # the refit: CNN8 on the 40 labelled and all 10 unlabelled clips (7 steps of 8), pooled on the 40
    assert "epochs x 7 steps of 8 clips" in printed and "pooled statistics of 40 clips" in printed
    for artifact in ("cnn8.keras", "pooled.keras", "ensemble.keras", OOF_PREDICTIONS):
        assert (run.path / artifact).is_file(), artifact
