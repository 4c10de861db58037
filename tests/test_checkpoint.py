"""Resumable training (tfbreath.checkpoint): damaged checkpoints and early stopping across a kill."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from conftest import InterruptAfter
from tfbreath.checkpoint import STATE_FILE, TrainingBackup

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


def test_a_truncated_checkpoint_falls_back_to_the_one_before(tmp_path, capsys):
    folder = tmp_path / "backup"
    with pytest.raises(KeyboardInterrupt):
        _fit(folder, InterruptAfter(3))
    state = json.loads((folder / STATE_FILE).read_text())
    newest, previous = state["checkpoints"]
    assert (newest["epoch"], previous["epoch"]) == (4, 3)  # epochs done, the newest first
    assert {p.name for p in folder.iterdir()} == {STATE_FILE, newest["weights"], previous["weights"],
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
    fresh = _model().get_weights()

    model = _model()
    backup = TrainingBackup(folder)
    backup.set_model(model)
    backup.on_train_begin()
    assert "no usable checkpoint left" in capsys.readouterr().out
    for got, want in zip(model.get_weights(), fresh):
        np.testing.assert_array_equal(got, want)
