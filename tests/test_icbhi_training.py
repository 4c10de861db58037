"""RespireNet's training options: class-weighted loss, PyTorch's SGD weight decay, best-epoch
selection on held-out training patients (``tfbreath.icbhi.finetune``, ``trainer``, ``reader``)."""

from __future__ import annotations

import csv
import json

import keras
import numpy as np
import pytest

from conftest import REPO, InterruptAfter
from tfbreath.checkpoint import TrainingBackup
from tfbreath.config import with_overrides
from tfbreath.icbhi import trainer
from tfbreath.icbhi.config import IcbhiConfig, load_icbhi_config
from tfbreath.icbhi.finetune import (SELECT_BEST, STAGE1, VALIDATION_SCORE, BestEpoch, CoupledDecaySGD,
                                     WeightedCategoricalCrossentropy, compile_stage, read_selection)
from tfbreath.icbhi.reader import IcbhiError, read_database, split_recordings, validation_patients
from tfbreath.icbhi.synthetic import write_synthetic_icbhi
from tfbreath.run_folder import RunFolder

from test_icbhi_fit import _tiny

PAPER = REPO / "pipelines" / "icbhi_respirenet_paper.toml"
AUTHORS_CLASS_WEIGHTS = (0.1, 0.3, 0.3, 0.3)
AUTHORS_WEIGHT_DECAY = 5e-4


def test_weighted_cross_entropy_is_pytorchs_weighted_mean():
    probabilities = np.array([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1]], np.float32)
    one_hot = np.eye(4, dtype=np.float32)[[0, 1]]
    # (0.1 * -ln 0.7 + 0.3 * -ln 0.5) / (0.1 + 0.3) = (0.0356675 + 0.2079442) / 0.4
    loss = WeightedCategoricalCrossentropy(AUTHORS_CLASS_WEIGHTS)
    assert float(loss(one_hot, probabilities)) == pytest.approx(0.6090292, abs=1e-6)
    unweighted = keras.losses.CategoricalCrossentropy()(one_hot, probabilities)
    assert float(WeightedCategoricalCrossentropy((1.0,) * 4)(one_hot, probabilities)) == pytest.approx(
        float(unweighted), abs=1e-6)  # (0.356675 + 0.693147) / 2
    restored = WeightedCategoricalCrossentropy.from_config(loss.get_config())
    assert restored.class_weights == AUTHORS_CLASS_WEIGHTS


def test_compile_stage_takes_the_authors_loss_and_weight_decay():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="softmax")])
    config = with_overrides(IcbhiConfig(), "train", weight_decay=AUTHORS_WEIGHT_DECAY,
                            class_weights=AUTHORS_CLASS_WEIGHTS)
    compile_stage(model, 1e-3, config)
    assert isinstance(model.optimizer, CoupledDecaySGD) and isinstance(model.optimizer, keras.optimizers.SGD)
    assert model.optimizer.coupled_weight_decay == AUTHORS_WEIGHT_DECAY
    assert model.optimizer.weight_decay is None  # Keras' decoupled decay is not applied on top
    assert model.loss.class_weights == AUTHORS_CLASS_WEIGHTS
    compile_stage(model, 1e-3, IcbhiConfig())  # the defaults: Keras' plain SGD and cross-entropy
    assert type(model.optimizer) is keras.optimizers.SGD
    assert type(model.loss) is keras.losses.CategoricalCrossentropy


def test_coupled_weight_decay_steps_as_pytorch_sgd():
    """torch.optim.SGD(lr=0.1, momentum=0.9, weight_decay=0.01) from w = 2 with gradient 0.5:
    g = 0.5 + 0.01 * 2 = 0.52, buf = 0.52, w = 2 - 0.052 = 1.948; then g = 0.5 + 0.01948,
    buf = 0.9 * 0.52 + 0.51948 = 0.98748, w = 1.948 - 0.098748 = 1.849252."""
    optimizer = CoupledDecaySGD(0.01, learning_rate=0.1, momentum=0.9)
    weight = keras.Variable(np.array([2.0], np.float32))
    for expected in (1.948, 1.849252):
        optimizer.apply([np.array([0.5], np.float32)], [weight])
        assert float(weight.numpy()[0]) == pytest.approx(expected, abs=1e-6)


class _Recorder(keras.callbacks.Callback):
    """Each epoch's weights, as the epoch ends."""

    def __init__(self):
        super().__init__()
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append(self.model.get_weights())


def _scripted(scores):
    """A scorer returning ``scores`` in turn, whatever the model."""
    remaining = iter(scores)
    return lambda model: next(remaining)


def _fit_tiny(scores, epochs: int, *callbacks: keras.callbacks.Callback) -> tuple[keras.Model, BestEpoch]:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    inputs, targets = rng.normal(size=(16, 3)), np.eye(2)[rng.integers(0, 2, 16)]
    selector = BestEpoch(_scripted(scores))
    model.fit(inputs, targets, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[selector, *callbacks])
    return model, selector


def test_best_epoch_keeps_the_first_best_scored_epoch_and_logs_every_score():
    recorder = _Recorder()
    model, selector = _fit_tiny([0.2, 0.7, 0.5, 0.7], 4, recorder)
    assert (selector.best_epoch, selector.best) == (1, 0.7)  # the tie at epoch 3 keeps epoch 1
    for restored, kept in zip(model.get_weights(), recorder.weights[1]):
        np.testing.assert_array_equal(restored, kept)
    assert model.history.history[VALIDATION_SCORE] == [0.2, 0.7, 0.5, 0.7]


def test_best_epoch_survives_a_resume(tmp_path):
    """Killed after epoch 2, resumed: the backup restores the selector's best (epoch 1) and its weights."""
    recorder = _Recorder()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    inputs, targets = rng.normal(size=(16, 3)), np.eye(2)[rng.integers(0, 2, 16)]

    def fit(selector, *extra):
        model.fit(inputs, targets, batch_size=8, epochs=4, shuffle=False, verbose=0,
                  callbacks=[selector, TrainingBackup(tmp_path, early_stopping=selector), recorder, *extra])

    with pytest.raises(KeyboardInterrupt):
        fit(BestEpoch(_scripted([0.2, 0.7, 0.5])), InterruptAfter(2))
    resumed = BestEpoch(_scripted([0.6]))
    fit(resumed)
    assert (resumed.best_epoch, resumed.best) == (1, 0.7)
    for restored, kept in zip(model.get_weights(), recorder.weights[1]):
        np.testing.assert_array_equal(restored, kept)


def test_validation_patients_are_training_patients_on_one_side(tmp_path):
    root = write_synthetic_icbhi(tmp_path / "data", n_patients=12, recordings_per_patient=1, cycles_per_recording=8)
    recordings, _ = read_database(root)
    split = split_recordings(recordings, IcbhiConfig().split, root)
    train_patients = [r.patient for r in split.train for _ in r.cycles]
    labels = [c.label4 for r in split.train for c in r.cycles]
    test_patients = {r.patient for r in split.test}
    for seed in range(4):
        held = validation_patients(train_patients, labels, 0.2, seed)
        assert held and set(held) < set(train_patients) and not set(held) & test_patients
        held_labels = [label for patient, label in zip(train_patients, labels) if patient in held]
        assert 0 in held_labels and any(held_labels)  # normal and abnormal cycles: the score is defined


def test_validation_patients_need_normal_and_abnormal_cycles():
    patients, labels = ["101"] * 3 + ["102"] * 3, [0, 0, 0, 0, 2, 1]
    for seed in range(4):  # 101 alone has no abnormal cycle, so 102 is always the one held out
        assert validation_patients(patients, labels, 0.2, seed) == ["102"]
    with pytest.raises(IcbhiError, match="hold both normal and abnormal cycles"):
        validation_patients(patients, [0] * 6, 0.2, 0)
    with pytest.raises(IcbhiError, match="need at least 2 training patients.*got 1"):
        validation_patients(["101"] * 3, [0, 1, 0], 0.2, 0)


def test_the_paper_pipeline_has_the_authors_values():
    paper = load_icbhi_config(PAPER)
    assert (paper.train.weight_decay, paper.train.class_weights) == (AUTHORS_WEIGHT_DECAY, AUTHORS_CLASS_WEIGHTS)
    inverse = 1.0 / (np.array([3.0, 1.0, 1.0, 1.0]) / 6.0)  # the authors' [3, 1, 1, 1], normalised and inverted
    np.testing.assert_allclose(paper.train.class_weights, inverse / inverse.sum())
    assert (paper.train.select, paper.train.momentum, paper.split.scheme, paper.split.test_fold) == (
        SELECT_BEST, 0.9, "folds", 4)
    assert (paper.audio.cycle_s, paper.spectrogram.input, paper.spectrogram.image_scale) == (8.0, "image", 3)
    assert (REPO / paper.split.folds_file).resolve().parent.name == "icbhi_folds"  # run from the repository root


def test_a_best_selecting_run_scores_held_out_training_patients_and_records_the_epoch(tmp_path):
    root = write_synthetic_icbhi(tmp_path / "data", n_patients=8, recordings_per_patient=1, cycles_per_recording=8)
    config = _tiny(IcbhiConfig(name="tiny"), epochs=2, learning_rate=0.01, device_finetune=False,
                   select=SELECT_BEST, weight_decay=AUTHORS_WEIGHT_DECAY, class_weights=AUTHORS_CLASS_WEIGHTS)
    out = tmp_path / "run"
    summary = trainer.run(config, root, out)
    sides = summary["split"]
    train, validation, test = (set(sides[side]["patients"]) for side in ("train", "validation", "test"))
    assert validation and not validation & train and not validation & test and not train & test
    assert len(train | validation | test) == 8
    selection = summary["selection"]
    assert selection["select"] == SELECT_BEST and selection["epoch"] in (1, 2)
    with open(RunFolder(out).history_file(STAGE1), newline="") as history:
        scores = [float(row[VALIDATION_SCORE]) for row in csv.DictReader(history)]
    assert len(scores) == 2 and selection["validation_score"] == pytest.approx(max(scores))
    assert scores.index(max(scores)) + 1 == selection["epoch"]
    assert json.loads((out / "metrics.json").read_text())["selection"] == selection
    # A rerun loads the finished stage 1 (its custom loss and optimiser) and keeps the recorded choice.
    assert trainer.run(config, root, out)["selection"] == selection == {"select": SELECT_BEST,
                                                                      **read_selection(out, STAGE1)}
