"""Resumable training (tfbreath.checkpoint): damaged checkpoints and early stopping across a kill."""

from __future__ import annotations

import json

import h5py
import keras
import numpy as np
import pytest

from conftest import InterruptAfter
from tfbreath import train
from tfbreath.checkpoint import STATE_FILE, TrainingBackup
from tfbreath.config import TrainConfig

MONITOR = "val_accuracy"
SCRIPT = [0.5, 0.6, 0.7, 0.65, 0.66, 0.64, 0.9, 0.95]
"""Scripted monitored values: best at epoch 2; with patience 3 the run stops after epoch 5.
A stopper that forgot its state at a resume after epoch 3 would take 0.66 as its best, see the
0.9 at epoch 6 as an improvement and run all 8 epochs."""
PATIENCE = 3
STOPS_AFTER = 5
EPOCHS = len(SCRIPT)


class _Scripted(keras.callbacks.Callback):
    """Puts the scripted value into the epoch's logs before the stopper reads them."""

    def on_epoch_end(self, epoch, logs=None):
        logs[MONITOR] = SCRIPT[epoch]


class _Epochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(epoch)


def _model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


DATA = (np.random.default_rng(0).normal(size=(32, 4)).astype("float32"),
        np.random.default_rng(1).normal(size=(32, 1)).astype("float32"))


def _fit(folder, *extra):
    """Train with scripted monitoring, early stopping and the backup; returns (model, epochs seen, stopper)."""
    model, epochs = _model(), _Epochs()
    stopper = keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=PATIENCE,
                                            restore_best_weights=True)
    model.fit(*DATA, batch_size=32, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=[_Scripted(), stopper, TrainingBackup(folder, early_stopping=stopper), epochs, *extra])
    return model, epochs.seen, stopper


def test_a_resumed_run_stops_where_an_uninterrupted_one_stops(tmp_path):
    whole, seen, stopper = _fit(tmp_path / "whole")
    assert seen[-1] == STOPS_AFTER and stopper.best_epoch == 2

    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "killed", InterruptAfter(3))
    resumed, seen_after, resumed_stopper = _fit(tmp_path / "killed")
    assert seen_after == [4, 5]  # not run to the end of the script
    assert resumed_stopper.best_epoch == 2 and resumed_stopper.best == pytest.approx(0.7)
    for got, want in zip(resumed.get_weights(), whole.get_weights()):  # the best epoch's weights restored
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_later_fit_of_a_resumed_model_runs_all_its_epochs(tmp_path):
    """Keras starts every fit of a model at the epoch a backup restored: the ICBHI device
    fine-tunes, which fit a resumed stage-1 model again, trained no epoch at all."""
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "killed", InterruptAfter(3))
    resumed, _, _ = _fit(tmp_path / "killed")
    for extra in ([], [TrainingBackup(tmp_path / "second")]):
        epochs = _Epochs()
        resumed.fit(*DATA, batch_size=32, epochs=2, verbose=0, callbacks=[epochs, *extra])
        assert epochs.seen == [0, 1], extra


def test_a_truncated_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    folder = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        _fit(folder, InterruptAfter(3))
    state = json.loads((folder / STATE_FILE).read_text())
    newest, previous = state["checkpoints"]
    assert (newest["epoch"], previous["epoch"]) == (4, 3)  # epochs done, the newest first
    assert {p.name for p in folder.iterdir()} == {STATE_FILE, newest["weights"], previous["weights"],
                                                  newest["random"], previous["random"],
                                                  newest["early_stopping"]["best_weights"],
                                                  previous["early_stopping"]["best_weights"]}
    weights = folder / newest["weights"]
    weights.write_bytes(weights.read_bytes()[:96])  # what a kill during a plain write left behind

    _, seen, _ = _fit(folder)
    assert f"{folder / newest['weights']}: damaged checkpoint of epoch 4" in capsys.readouterr().out
    assert seen[0] == 3 and seen[-1] == STOPS_AFTER  # epoch 3 again, from epoch 2's weights


@pytest.mark.parametrize("state, said", [('{"checkpoints": [', "unreadable backup state"),
                                         ('{"checkpoints": [{"epoch": 1}, 3]}', "unreadable backup state")])
def test_unreadable_state_starts_from_scratch_with_a_warning(tmp_path, capsys, state, said):
    folder = tmp_path / "backup"
    folder.mkdir()
    (folder / STATE_FILE).write_text(state)
    _, seen, _ = _fit(folder)
    assert seen[0] == 0 and seen[-1] == STOPS_AFTER
    assert said in capsys.readouterr().out


def test_every_damaged_checkpoint_leaves_the_fresh_weights_alone(tmp_path, capsys):
    folder = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        _fit(folder, InterruptAfter(1))
    for entry in json.loads((folder / STATE_FILE).read_text())["checkpoints"]:
        (folder / entry["weights"]).write_bytes(b"\0" * 96)
    _assert_nothing_restored(folder, _model, capsys)


def _assert_nothing_restored(folder, make_model, capsys):
    """With every checkpoint in ``folder`` damaged, the backup says so and leaves ``make_model()``'s
    fresh weights, not some layers loaded."""
    fresh = make_model().get_weights()
    model = make_model()
    backup = TrainingBackup(folder)
    backup.set_model(model)
    backup.on_train_begin()
    assert "no usable checkpoint left" in capsys.readouterr().out
    for got, want in zip(model.get_weights(), fresh):
        np.testing.assert_array_equal(got, want)


def _averaged_fit(folder, momentum, *extra, stop_early=True):
    """``_fit`` with the recipe's optimiser and weight averaging, and without early stopping if
    not ``stop_early`` (a refit: the last epoch's averages are kept); returns (model, initial weights)."""
    keras.utils.set_random_seed(0)
    recipe = TrainConfig(ema_momentum=momentum, clipnorm=10.0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="relu"), keras.layers.Dense(1)])
    initial = model.get_weights()
    train.compile_model(model, 1e-2, 4 * EPOCHS, recipe)
    averaging = train.weight_averaging(recipe)
    stopper = keras.callbacks.EarlyStopping(monitor=MONITOR, mode="max", patience=PATIENCE,
                                            restore_best_weights=True) if stop_early else None
    model.fit(*DATA, batch_size=8, epochs=EPOCHS, shuffle=False, verbose=0,
              callbacks=[_Scripted(), *averaging, *([stopper] if stopper else []),
                         TrainingBackup(folder, early_stopping=stopper, averaging=next(iter(averaging), None)),
                         *extra])
    return model, initial


def test_weight_averaging_keeps_the_averages_not_the_last_steps(tmp_path):
    """Keras starts the average at the weights after the first step: Adam's first step moves
    each weight by its learning rate, 1e-3 here (0.1 x 1e-2 at the warm-up's start). A momentum
    of 1 - 1e-7 keeps the average there over the other 23 steps; without averaging the weights
    move by far more."""
    first_step = 1e-3
    averaged, initial = _averaged_fit(tmp_path / "averaged", 1 - 1e-7)
    plain, plain_initial = _averaged_fit(tmp_path / "plain", 0.0)
    for got, want in zip(averaged.get_weights(), initial):
        np.testing.assert_allclose(got, want, atol=1.01 * first_step)
    assert max(np.abs(a - b).max() for a, b in zip(plain.get_weights(), plain_initial)) > 1e-2


@pytest.mark.parametrize("stop_early", [True, False])
def test_a_resumed_averaged_run_ends_with_the_uninterrupted_runs_weights(tmp_path, stop_early):
    whole, _ = _averaged_fit(tmp_path / "whole", 0.5, stop_early=stop_early)
    with pytest.raises(KeyboardInterrupt):
        _averaged_fit(tmp_path / "killed", 0.5, InterruptAfter(3), stop_early=stop_early)
    resumed, _ = _averaged_fit(tmp_path / "killed", 0.5, stop_early=stop_early)
    for got, want in zip(resumed.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def _dropout_model():
    """A seeded dense net with dropout (a seed generator whose state a resume must restore), compiled."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dropout(0.5), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def _dropout_fit(folder, *extra, epochs=4):
    model = _dropout_model()
    model.fit(*DATA, batch_size=8, epochs=epochs, shuffle=False, verbose=0,
              callbacks=[TrainingBackup(folder), *extra])
    return model


def test_a_resumed_dropout_run_replays_the_dropout_masks(tmp_path):
    whole = _dropout_fit(tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        _dropout_fit(tmp_path / "killed", InterruptAfter(1))
    resumed = _dropout_fit(tmp_path / "killed")
    for got, want in zip(resumed.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_damaged_npz_falls_back_to_the_checkpoint_before(tmp_path, capsys):
    folder = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        _dropout_fit(folder, InterruptAfter(2))
    newest = json.loads((folder / STATE_FILE).read_text())["checkpoints"][0]
    damaged = folder / newest["random"]  # the seed generators' state
    damaged.write_bytes(damaged.read_bytes()[:96])  # a cut copy: still starts with the zip magic
    _dropout_fit(folder)
    assert f"damaged checkpoint of epoch {newest['epoch']}" in capsys.readouterr().out


def test_a_checkpoint_failing_half_way_leaves_the_fresh_weights(tmp_path, capsys):
    folder = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        _dropout_fit(folder, InterruptAfter(1))
    for entry in json.loads((folder / STATE_FILE).read_text())["checkpoints"]:
        with h5py.File(folder / entry["weights"], "r+") as f:   # the last layer's weights lost, the first's intact
            names = []
            f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
            last = sorted(n for n in names if n.startswith("layers/"))[-1]
            del f[last]
    _assert_nothing_restored(folder, _dropout_model, capsys)
