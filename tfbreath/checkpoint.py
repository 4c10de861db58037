"""Resumable training: a per-epoch backup that a kill cannot corrupt, early stopping included.

``TrainingBackup`` is Keras' ``BackupAndRestore`` with two differences:

- **Atomic, two generations.** Each epoch writes ``epoch_<N>.weights.h5`` (and, with early
  stopping, ``best_<N>.npz``) under a temporary name, renames it into place, and only then
  commits ``state.json``, which names the newest two checkpoints. Files no checkpoint names are
  removed. A kill at any moment leaves a readable ``state.json`` naming complete files. If a
  checkpoint's files are damaged anyway (a truncated copy, a full disk), the previous one is
  used, and with none left the model starts from scratch; each case is said on one line.
- **Early stopping survives a resume.** The state of the run's ``EarlyStopping`` (epochs
  without improvement, best value and epoch, best weights) is part of each checkpoint, so a
  resumed run stops at the epoch an uninterrupted one stops at and restores the same weights.
- **So do the random draws.** The model's random-number state (its layers' seed generators,
  such as dropout's, which ``save_weights`` leaves out) is part of each checkpoint too. With the
  training data's order and augmentation a function of (seed, epoch) (``FeatureSet.batches``,
  ``augment.Augmenter``), a resumed run ends with the weights an uninterrupted one ends with.

Put it after the ``EarlyStopping`` in the callback list: it must see that epoch's update
before saving, and restore the state after ``EarlyStopping`` has reset itself. With weight
averaging (``SwapEMAWeights(swap_on_epoch=True)`` before it), an epoch's checkpoint holds the
averages in the model's variables and the raw weights in the optimiser's average slots, so a
resumed run tells the swap callback that the averages are in place.
"""

from __future__ import annotations

import io
import json
import tempfile
import zipfile
from pathlib import Path

import keras
import numpy as np

from tfbreath import artifacts

BACKUP_DIR = "backup"
"""Folder of a run holding each unfinished model's epoch checkpoints, one subfolder per model."""
STATE_FILE = "state.json"
GENERATIONS = 2
"""Checkpoints kept: the newest and the one before it, the fallback."""

UNREADABLE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)
"""What reading a damaged checkpoint raises (h5py, numpy's npz, json)."""


def _weights_name(epoch: int) -> str:
    return f"epoch_{epoch}.weights.h5"


def _best_name(epoch: int) -> str:
    return f"best_{epoch}.npz"


def _random_name(epoch: int) -> str:
    return f"random_{epoch}.npz"


def random_state(model: keras.Model) -> list:
    """The model's variables that are not weights: its layers' seed-generator states, in order."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class TrainingBackup(keras.callbacks.BackupAndRestore):
    """Per-epoch backup of the model and of ``early_stopping``'s state in ``backup_dir``.

    The folder is kept when training ends; the caller deletes it once the finished model is
    saved (a kill in between then reloads the last epoch instead of starting again).
    """

    def __init__(self, backup_dir: str | Path, early_stopping: keras.callbacks.EarlyStopping | None = None,
                 averaging: keras.callbacks.SwapEMAWeights | None = None):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        self.folder = Path(backup_dir)
        self.early_stopping = early_stopping
        self.averaging = averaging

    # -- saving -------------------------------------------------------------------------------
    def _save_model(self) -> None:
        epoch = self._current_epoch
        entry = {"epoch": epoch, "weights": _weights_name(epoch), "random": _random_name(epoch)}
        with tempfile.TemporaryDirectory() as tmp:  # Keras writes h5 to a path; renamed in whole
            staged = Path(tmp) / entry["weights"]
            self.model.save_weights(staged)
            artifacts.write_bytes(self.folder / entry["weights"], staged.read_bytes())
        _write_arrays(self.folder / entry["random"], [v.numpy() for v in random_state(self.model)])
        stopper = self.early_stopping
        if stopper is not None:
            entry["early_stopping"] = {"wait": stopper.wait, "best": float(stopper.best),  # +-inf as Infinity
                                       "best_epoch": stopper.best_epoch, "best_weights": None}
            if stopper.best_weights is not None:
                entry["early_stopping"]["best_weights"] = _best_name(epoch)
                _write_arrays(self.folder / _best_name(epoch), stopper.best_weights)
        kept = [entry, *self._checkpoints()][:GENERATIONS]
        artifacts.write_json(self.folder / STATE_FILE, {"checkpoints": kept})  # the commit point
        self._remove_unnamed(kept)

    def _remove_unnamed(self, kept: list[dict]) -> None:
        named = {STATE_FILE} | {e["weights"] for e in kept} | {e["random"] for e in kept if e.get("random")}
        named |= {e["early_stopping"]["best_weights"] for e in kept if e.get("early_stopping")}
        for path in self.folder.iterdir():
            if path.is_file() and path.name not in named:
                path.unlink()

    # -- restoring ----------------------------------------------------------------------------
    def on_train_begin(self, logs=None) -> None:
        self.model._initial_epoch = None  # a resume of an earlier fit of this model must not skip epochs of this one
        self._load_model()

    def on_train_end(self, logs=None) -> None:
        self.model._initial_epoch = None  # Keras starts every later fit at it (the ICBHI fine-tunes fit stage 1 again)
        super().on_train_end(logs)

    def _checkpoints(self) -> list[dict]:
        """The checkpoints ``state.json`` names, newest first; none if it is missing or unreadable."""
        path = self.folder / STATE_FILE
        if not path.is_file():
            return []
        try:
            checkpoints = list(json.loads(path.read_text(encoding="utf-8"))["checkpoints"])
            if not all(isinstance(e, dict) and {"epoch", "weights"} <= e.keys() for e in checkpoints):
                raise ValueError(f"a checkpoint without its epoch or weights in {checkpoints!r}")
            return checkpoints
        except UNREADABLE + (TypeError,) as err:
            print(f"warning: {path}: unreadable backup state ({err}); training starts from scratch")
            return []

    def _load_model(self) -> None:
        if self.model.optimizer is not None and not self.model.optimizer.built:
            self.model.optimizer.build(self.model.trainable_variables)
        checkpoints = self._checkpoints()
        variables = self.model.weights + (self.model.optimizer.variables if self.model.optimizer else [])
        fresh = [v.numpy() for v in variables] if checkpoints else []  # a failed load may stop half-way
        for entry in checkpoints:
            try:
                self._restore(entry)
                return
            except UNREADABLE as err:
                print(f"warning: {self.folder / entry['weights']}: damaged checkpoint of epoch {entry['epoch']} "
                      f"({' '.join(str(err).split())}); trying an older one")
        for variable, value in zip(variables, fresh):
            variable.assign(value)
        if checkpoints:
            print(f"warning: {self.folder}: no usable checkpoint left; training starts from scratch")

    def _restore(self, entry: dict) -> None:
        """Load one checkpoint into the model and the early-stopping callback, or raise."""
        state = entry.get("early_stopping")
        best_weights = None
        if state and state["best_weights"]:
            best_weights = _read_arrays(self.folder / state["best_weights"])
        randoms = _read_arrays(self.folder / entry["random"]) if entry.get("random") else None
        self.model.load_weights(self.folder / entry["weights"])
        for variable, value in zip(random_state(self.model), randoms or ()):
            variable.assign(value)
        self.model._initial_epoch = int(entry["epoch"])  # as BackupAndRestore does
        stopper = self.early_stopping
        if stopper is not None and state:
            stopper.wait, stopper.best, stopper.best_epoch = state["wait"], state["best"], state["best_epoch"]
            stopper.best_weights = best_weights
        if self.averaging is not None:  # swapped in at the saved epoch's end; swapped out as the next begins
            self.averaging._ema_weights_in_model = True
        print(f"resuming after epoch {entry['epoch']} from {self.folder}")


def _write_arrays(path: Path, arrays: list[np.ndarray]) -> None:
    """A list of arrays to one ``.npz``, atomically, in order."""
    buffer = io.BytesIO()
    np.savez(buffer, *arrays)
    artifacts.write_bytes(path, buffer.getvalue())


def _read_arrays(path: Path) -> list[np.ndarray]:
    with np.load(path) as archive:
        return [archive[f"arr_{i}"] for i in range(len(archive.files))]
