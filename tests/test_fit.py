"""Training, ensembling and the fit CLI, on tiny models and synthetic audio."""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest

from conftest import InterruptAfter
from tfbreath import artifacts, data, fit, run_folder, train
from tfbreath.config import ENSEMBLE, ConfigError, PipelineConfig, load_config, parse_config, with_overrides
from tfbreath.ensemble import WeightedSigmoidAverage, build_ensemble, softmax_weights, weighted_average
from tfbreath.precision import choose_precision
from tfbreath.run_folder import OOF_PREDICTIONS
from tfbreath.synthetic import write_synthetic_breath

TINY = with_overrides(with_overrides(PipelineConfig(), "train", model_width=0.125, epochs=3,
                                     early_stopping_patience=10),
                      "data", batch_size=16)
TINY = with_overrides(TINY, "augment", warmup_epochs=1)


def _inputs(n, pipeline=TINY, seed=0):
    rng = np.random.default_rng(seed)
    return {"spectral": rng.standard_normal((n, 128, 63, len(pipeline.features.maps))).astype("float32"),
            "scalars": rng.standard_normal((n, 39)).astype("float32")}


def test_softmax_weights_follow_the_rule():
    weights = softmax_weights([0.8, 0.9])
    expected = np.exp([0.8, 0.9]) / np.exp([0.8, 0.9]).sum()
    np.testing.assert_allclose(weights, expected)
    assert weights[1] > weights[0]
    np.testing.assert_allclose(softmax_weights([0.7, 0.7, 0.7]), [1 / 3] * 3)


def test_the_numpy_weighted_average_weighs_members_in_their_order():
    members = {"cnn8": np.array([0.2, 0.9]), "pooled": np.array([0.6, 0.1])}
    np.testing.assert_allclose(weighted_average(members, [0.75, 0.25]), [0.3, 0.7])


def test_ensemble_is_the_weighted_sigmoid_average_and_round_trips(tmp_path):
    members = {name: train.new_model(name, TINY) for name in ("cnn8", "vgg")}
    alphas = softmax_weights([0.75, 0.8])
    ensemble = build_ensemble(members, alphas)
    x = _inputs(4)
    logits = [members[name].predict(x, verbose=0) for name in members]
    expected = sum(a / (1 + np.exp(-z)) for a, z in zip(alphas, logits))
    out = ensemble.predict(x, verbose=0)
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert ensemble.name == ENSEMBLE  # its waveform and probability models, and messages, are named after it
    path = tmp_path / "e.keras"
    ensemble.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), out, atol=1e-6)
    layer = WeightedSigmoidAverage([0.25, 0.75])
    assert WeightedSigmoidAverage.from_config(layer.get_config()).alphas == [0.25, 0.75]


def test_an_ensemble_needs_exactly_one_weight_per_model():
    """Checked before any model is read: an extra weight is refused, not broadcast into a shape error."""
    members = {"cnn8": None}
    for alphas in ([], [0.5, 0.5]):
        with pytest.raises(ValueError, match=f"need one weight per model: 1 models, {len(alphas)} weights"):
            build_ensemble(members, alphas)


@pytest.mark.parametrize("scope", ["variable", "global"])
def test_gradients_are_clipped_per_variable_or_globally(scope):
    """Two gradient tensors of norm 3 and 4 (global norm 5) clipped to 1: per variable each gets
    norm 1; globally both shrink by 5, to norms 0.6 and 0.8."""
    recipe = with_overrides(TINY, "train", clipnorm=1.0, clip_scope=scope).train
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=True)])
    optimizer = train.compile_model(model, 1e-3, 10, recipe).optimizer
    gradients = [np.full((1, 1), 3.0, np.float32), np.full((1,), 4.0, np.float32)]
    clipped = [np.linalg.norm(g) for g in optimizer._clip_gradients([keras.ops.convert_to_tensor(g)
                                                                     for g in gradients])]
    np.testing.assert_allclose(clipped, [1.0, 1.0] if scope == "variable" else [0.6, 0.8], rtol=1e-5)


def test_learning_rate_warms_up_then_decays_to_the_floor():
    recipe = PipelineConfig().train
    schedule = train.learning_rate_schedule(4e-4, 1000, recipe)
    assert float(schedule(0)) == pytest.approx(4e-5)
    assert float(schedule(50)) == pytest.approx(4e-4)
    assert float(schedule(525)) == pytest.approx((4e-4 + 1e-6) / 2, rel=0.02)
    assert float(schedule(1000)) == pytest.approx(1e-6)


@pytest.fixture(scope="module")
def tiny_sets(tmp_path_factory):
    root = write_synthetic_breath(tmp_path_factory.mktemp("synthetic"), n_sessions=12, clips_per_session=4)
    train_ex, val_ex = data.split_by_session(data.read_kaggle_train(root), 0.25, seed=0)
    return (data.extract(train_ex, None, TINY, progress=False),
            data.extract(val_ex, None, TINY, progress=False))


def test_an_interrupted_model_resumes_from_its_last_epoch_and_ends_as_an_uninterrupted_one(tiny_sets, tmp_path):
    """Epochs 2-3 after the kill see the data order, augmentation and dropout draws an uninterrupted
    run sees there, so both end with the same weights and the same history."""
    train_set, val_set = tiny_sets
    pipeline = with_overrides(TINY, "train", epochs=4)
    keras.utils.set_random_seed(pipeline.data.seed)  # as fit.run does
    whole = train.train_model("cnn8", pipeline, train_set, val_set, tmp_path / "whole")
    keras.utils.set_random_seed(pipeline.data.seed)
    with pytest.raises(KeyboardInterrupt):
        train.train_model("cnn8", pipeline, train_set, val_set, tmp_path, extra_callbacks=(InterruptAfter(1),))
    assert not (tmp_path / "cnn8.keras").exists()
    keras.utils.set_random_seed(pipeline.data.seed)  # a new process: fit.run seeds it again, nothing else carries over
    resumed = train.train_model("cnn8", pipeline, train_set, val_set, tmp_path)
    with open(tmp_path / "history_cnn8.csv", newline="") as handle:
        history = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in history] == [0, 1, 2, 3]  # 0-1 before the kill, 2-3 after: none repeated
    assert (tmp_path / "cnn8.keras").exists()
    with open(tmp_path / "whole" / "history_cnn8.csv", newline="") as handle:
        assert [row["loss"] for row in csv.DictReader(handle)] == [row["loss"] for row in history]
    for ours, theirs in zip(resumed.weights, whole.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy(), err_msg=ours.path)


def test_each_member_stops_with_its_own_patience(tiny_sets, tmp_path, monkeypatch):
    """``[train] patiences`` reaches that member's early stopping; another member keeps the recipe's."""
    train_set, val_set = tiny_sets
    pipeline = with_overrides(TINY, "train", epochs=1, models=("cnn8", "temporal"), patiences={"temporal": 7},
                              learning_rates={"cnn8": 4e-4, "temporal": 1e-3})
    patience = {}

    class Recorded(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            patience[self.model.name] = self.patience
            super().on_train_begin(logs)

    monkeypatch.setattr(keras.callbacks, "EarlyStopping", Recorded)
    for name in ("temporal", "cnn8"):
        train.train_model(name, pipeline, train_set, val_set, tmp_path)
    assert patience == {"temporal": 7, "cnn8": TINY.train.early_stopping_patience}


def test_fit_without_data_trains_on_synthetic_audio_and_writes_every_artifact(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(run_folder.DATA_ENV, raising=False)
    monkeypatch.setitem(run_folder.SYNTHETIC_RECIPE, "train", {"epochs": 2, "model_width": 0.125})
    out = tmp_path / "run"
    assert fit.main(["--out", str(out), "--seed", "3"]) == 0
    said = capsys.readouterr().out
    assert "synthetic inhale/exhale-like audio" in said
    for artifact in ("pipeline.toml", "cnn8.keras", "vgg.keras", "ensemble.keras", "metrics.json",
                     "training_curves.png", "confusion_matrix.png", "roc.png", "validation_predictions.csv",
                     "history_cnn8.csv", "history_vgg.csv"):
        assert (out / artifact).is_file(), artifact
    assert not (out / "backup").exists()  # resume state is gone once the run is complete
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {"cnn8", "vgg", "ensemble"}
    for name in ("cnn8", "vgg", "ensemble"):
        assert set(metrics["models"][name]) >= {"accuracy", "roc_auc", "precision", "recall", "f1"}
    assert metrics["dtype_policy"] == choose_precision("auto")  # the run records its precision
    for model in ("cnn8", "vgg", "ensemble"):  # each model carries the features it was trained on
        assert parse_config(artifacts.model_pipeline_toml(out / f"{model}.keras")) == load_config(out / "pipeline.toml")
    assert metrics["models"]["cnn8"]["dtype_policy"] == metrics["dtype_policy"]
    weights = metrics["models"]["ensemble"]["weights"]
    expected = softmax_weights([metrics["models"]["cnn8"]["accuracy"], metrics["models"]["vgg"]["accuracy"]])
    np.testing.assert_allclose([weights["cnn8"], weights["vgg"]], expected)
    assert metrics["split"]["validation_sessions"] > 0
    with open(out / "validation_predictions.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["split"]["validation_clips"]
    assert set(rows[0]) == {"file", "Target", "cnn8", "vgg", "ensemble"}
    # The resolved config reloads, and a second run in the same folder resumes instead of retraining.
    assert fit.main(["--out", str(out), "--seed", "3"]) == 0
    assert "already trained" in capsys.readouterr().out


@pytest.mark.parametrize("argv, message", [
    (["--data", "/nonexistent/folder"], "/nonexistent/folder: data folder not found"),
    (["--precision", "float8"], "precision must be one of"),
    (["--epochs", "0"], "epochs must be > 0, got 0"),
    (["--models", "cnn8,resnet"], "models has unknown names ['resnet']"),
    (["--no-refit"], "--no-refit needs K-fold cross-validation (--folds K >= 2), got folds = 1"),
    (["--pseudo-labels", "soft"], "pseudo_labels = 'soft' needs folds >= 2 (the folds' ensembles are the teachers), "
                                  "got folds = 1"),
])
def test_bad_arguments_give_one_line_errors(argv, message, tmp_path, capsys):
    assert fit.main([*argv, "--out", str(tmp_path / "run"), "--data", str(tmp_path)]
                    if "--data" not in argv else [*argv, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert "\n" not in err and "Traceback" not in err


def test_a_csv_row_without_its_wav_is_reported(tmp_path, capsys):
    root = write_synthetic_breath(tmp_path / "d", n_sessions=6, clips_per_session=2)
    next((root / "train").glob("*.wav")).unlink()
    assert fit.main(["--data", str(root), "--out", str(tmp_path / "run")]) == 2
    assert "not found at" in capsys.readouterr().err


def test_a_run_folder_of_another_pipeline_is_not_overwritten(tmp_path, capsys):
    root = write_synthetic_breath(tmp_path / "d", n_sessions=6, clips_per_session=2)
    out = tmp_path / "run"
    out.mkdir()
    (out / "pipeline.toml").write_text('name = "something_else"\n')
    assert fit.main(["--data", str(root), "--out", str(out)]) == 2
    assert "holds a run of a different pipeline" in capsys.readouterr().err


def test_a_folder_of_undecodable_clips_trains_nothing_and_blocks_no_rerun(tmp_path, capsys):
    root = write_synthetic_breath(tmp_path / "d", n_sessions=8, clips_per_session=2)
    for wav in (root / "train").glob("*.wav"):
        wav.write_bytes(b"RIFF")  # cut inside its header: undecodable
    out = tmp_path / "run"
    argv = ["--data", str(root), "--out", str(out), "--models", "cnn8", "--precision", "float32"]
    assert fit.main([*argv, "--epochs", "1"]) == 2
    err = re.split(r"[\r\n]", capsys.readouterr().err.strip())[-1]  # after the progress bars
    assert err.startswith(f"error: {root}: 0 of the ") and "none of them I or E; nothing trained" in err, err
    assert not out.exists() or not any(out.glob("*.keras")) and not (out / "pipeline.toml").exists()

    write_synthetic_breath(tmp_path / "d", n_sessions=8, clips_per_session=2)  # the data mended
    tiny = tmp_path / "tiny.toml"
    tiny.write_text('[train]\nmodel_width = 0.125\n[data]\nbatch_size = 8\n')
    assert fit.main([*argv, "--epochs", "2", "--pipeline", str(tiny)]) == 0  # another recipe: not blocked
    assert json.loads((out / "metrics.json").read_text())["models"]["cnn8"]["dtype_policy"] == "float32"


def test_synthetic_recipe_values_are_valid():
    pipeline = PipelineConfig()
    for section, values in run_folder.SYNTHETIC_RECIPE.items():
        pipeline = with_overrides(pipeline, section, **values)
    assert dataclasses.replace(pipeline.train).epochs == run_folder.SYNTHETIC_RECIPE["train"]["epochs"]


def test_training_accuracy_scores_mixed_labels_by_their_dominant_class():
    labels = np.array([0.0, 1.0, 0.3, 0.7, 0.3], np.float32)
    logits = np.array([[-2.0], [1.0], [-0.5], [0.2], [3.0]], np.float32)
    hits = keras.ops.convert_to_numpy(train.dominant_label_accuracy(labels, logits))
    np.testing.assert_array_equal(hits, [1, 1, 1, 1, 0])


CV_TINY = with_overrides(with_overrides(TINY, "train", models=("cnn8", "pooled", "rbf"), epochs=2, folds=2,
                                        rbf_c=(1.0, 10.0), rbf_landmarks=8),
                         "data", batch_size=8, validation_fraction=0.25)


@pytest.fixture(scope="module")
def cv_data(tmp_path_factory):
    return write_synthetic_breath(tmp_path_factory.mktemp("cv_data"), n_sessions=10, clips_per_session=4)


@pytest.fixture(scope="module")
def cv_run(cv_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv_run")
    return out, fit.run(CV_TINY, cv_data, out)


def test_k_fold_run_predicts_every_clip_out_of_fold_and_refits(cv_run, cv_data):
    out, metrics = cv_run
    with open(out / OOF_PREDICTIONS, newline="") as handle:
        rows = list(csv.DictReader(handle))
    examples = data.read_kaggle_train(cv_data)
    assert sorted(row["file"] for row in rows) == sorted(f.name for f in examples.files)  # each clip once
    fold_of_session = {}
    for row in rows:
        assert fold_of_session.setdefault(row["session"], row["fold"]) == row["fold"]  # a session in one fold
    assert {row["fold"] for row in rows} == {"0", "1"}
    estimate = metrics["cross_validation"]
    assert set(estimate) == {"cnn8", "pooled", "rbf", "ensemble", "protocol"}
    labels = np.array([data.LABELS[row["Target"]] for row in rows])
    for name in ("cnn8", "pooled", "rbf", "ensemble"):
        probabilities = np.array([float(row[name]) for row in rows])
        assert estimate[name]["accuracy"]["pooled"] == pytest.approx(np.mean((probabilities >= 0.5) == labels),
                                                                     abs=1e-4)
        assert len(estimate[name]["accuracy"]["folds"]) == 2
    protocol = estimate["protocol"]
    assert protocol["folds"] == 2 and protocol["clips"] == len(rows) and len(protocol["best_epochs"]["cnn8"]) == 2
    for fold, clips in enumerate(protocol["clips_per_fold"]):  # a fold's models never saw the clips they score
        assert clips["held_out"] == sum(row["fold"] == str(fold) for row in rows)
        assert clips["train"] + clips["early_stopping"] + clips["held_out"] == len(rows), clips
    weights = metrics["models"][ENSEMBLE]["weights"]  # the refit's: the members' out-of-fold accuracies
    expected = softmax_weights([estimate[name]["accuracy"]["pooled"] for name in ("cnn8", "pooled", "rbf")])
    assert [weights[name] for name in ("cnn8", "pooled", "rbf")] == pytest.approx(expected, abs=1e-6)
    assert metrics["models"]["cnn8"]["epochs"] == int(np.ceil(np.median(protocol["best_epochs"]["cnn8"])))
    assert len(protocol["pooled_c"]) == 2 and set(protocol["pooled_c"]) <= set(CV_TINY.train.pooled_c)
    assert metrics["models"]["pooled"]["c"] == min(protocol["pooled_c"])  # the lower middle of two
    assert len(protocol["rbf_c"]) == 2 and set(protocol["rbf_c"]) <= set(CV_TINY.train.rbf_c)
    assert metrics["models"]["rbf"]["c"] == min(protocol["rbf_c"]) and "rbf" not in protocol["best_epochs"]
    for artifact in ("fold_0/cnn8.keras", "fold_1/cnn8.keras", "cnn8.keras", "ensemble.keras",
                     "fold_0/pooled.keras", "fold_1/history_pooled.csv", "pooled.keras",
                     "fold_0/rbf.keras", "fold_1/history_rbf.csv", "rbf.keras",
                     "confusion_matrix.png", "roc.png", "training_curves.png"):
        assert (out / artifact).is_file(), artifact
    with open(out / "history_cnn8.csv", newline="") as handle:  # the refit ran the chosen epochs, unvalidated
        assert len(list(csv.DictReader(handle))) == metrics["models"]["cnn8"]["epochs"]


def test_k_fold_run_resumes_without_training_again(cv_run, capsys):
    out, metrics = cv_run
    again = fit.run(CV_TINY, Path(metrics["data"]), out)
    printed = capsys.readouterr().out
    assert printed.count("already trained") == 3 and printed.count("already fitted") == 6  # two folds, the refit
    for name in ("cnn8", "pooled", "rbf"):
        assert again["cross_validation"][name] == metrics["cross_validation"][name]


def test_a_run_resumes_only_on_the_clips_it_was_claimed_with(cv_run, cv_data, tmp_path):
    """The same data under another path resumes; without one session the folds change, so the
    fold models (which may have trained on clips the new folds hold out) are refused, not reused."""
    out, metrics = cv_run
    claimed = (out / run_folder.CLIPS_FILE).read_text()
    assert claimed.splitlines()[0] == ",".join(run_folder.CLIPS_HEADER) and claimed.count("\n") == 41
    moved = shutil.copytree(cv_data, tmp_path / "moved")
    assert fit.run(CV_TINY, moved, out)["cross_validation"] == metrics["cross_validation"]
    with open(moved / "train.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    first_session = rows[1][0][:len("steth_20990101_00_00_00")]
    with open(moved / "train.csv", "w", newline="") as handle:
        csv.writer(handle).writerows(row for row in rows if not row[0].startswith(first_session))
    with pytest.raises(ConfigError, match=r"holds models trained on other clips \(4 of its clips are not among "
                                          r"these and 0 of these are new, e\.g\. train/steth_20990101_00_00_00"):
        fit.run(CV_TINY, moved, out)
    assert (out / run_folder.CLIPS_FILE).read_text() == claimed


def test_the_same_seed_repeats_a_run_exactly_and_no_refit_stops_at_the_estimate(cv_run, cv_data, tmp_path):
    out, metrics = cv_run
    again = fit.run(CV_TINY, cv_data, tmp_path, refit=False)
    assert (tmp_path / OOF_PREDICTIONS).read_text() == (out / OOF_PREDICTIONS).read_text()
    assert again["cross_validation"] == metrics["cross_validation"] and "models" not in again
    assert not list(tmp_path.glob("*.keras"))  # fold models only


def test_too_few_sessions_for_the_folds_is_one_line_and_claims_nothing(tmp_path, capsys):
    root = write_synthetic_breath(tmp_path / "d", n_sessions=4, clips_per_session=2)
    out = tmp_path / "run"
    assert fit.main(["--data", str(root), "--out", str(out), "--folds", "5", "--models", "cnn8"]) == 2
    err = re.split(r"[\r\n]", capsys.readouterr().err.strip())[-1]
    assert err == f"error: {root}: 5-fold cross-validation needs at least 5 recording sessions, got 4", err
    assert not (out / "pipeline.toml").exists()
