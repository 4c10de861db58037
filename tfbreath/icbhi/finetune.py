"""RespireNet's two-stage training and device-routed prediction.

Stage 1 trains one model on every training cycle (SGD, momentum 0.9, learning rate 1e-3).
Stage 2 makes one copy of it per recording device and fine-tunes each copy on that device's
training cycles only, at the lower learning rate (1e-4) with fresh momentum: the devices sound
different and the small ones (Litt3200, LittC2SE: 7-9 % of the cycles) are otherwise
underfitted; the paper measures +9 points on their scores. At prediction time the device of
each cycle's recording (the last token of its file name, ``..._AKGC417L.wav``) picks its copy;
a device without one falls back to the stage-1 weights.

    stage1 = train_stage1(model, train_set, config, run_dir, seed, validation=test_set)
    devices = finetune_devices(stage1, train_set, config, run_dir, seed)      # DeviceModels
    probabilities = devices.predict(test_set, config)                         # [N, classes]
    devices = DeviceModels.load(run_dir)                                      # a finished run

The copies share one Keras model and differ only in their weights, so the training and
prediction functions are traced once, not once per device. Each copy is still saved as a
complete model, ``device_<DEVICE>.keras``. Every stage resumes: ``tfbreath.checkpoint.TrainingBackup``
(a kill-safe Keras ``BackupAndRestore``) continues an interrupted ``fit`` from its last finished epoch, and a stage whose ``.keras``
file exists is loaded instead of trained again.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import keras
import numpy as np

from tfbreath import artifacts
from tfbreath.checkpoint import TrainingBackup
from tfbreath.icbhi.dataset import CycleSet
from tfbreath.run_folder import MODEL_SUFFIX, RunFolder

if TYPE_CHECKING:
    from tfbreath.icbhi.config import IcbhiConfig

STAGE1 = "stage1"
"""Name (and file stem) of the stage-1 model."""
DEVICE_PREFIX = "device_"
"""File stem prefix of a device's fine-tuned copy: ``device_<DEVICE>.keras``."""


def device_model_name(device: str) -> str:
    return f"{DEVICE_PREFIX}{device}"


def compile_stage(model: keras.Model, learning_rate: float, config: IcbhiConfig) -> keras.Model:
    """SGD with the configured momentum and a fixed learning rate, categorical cross-entropy."""
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=learning_rate, momentum=config.train.momentum),
                  loss=keras.losses.CategoricalCrossentropy(),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    return model


def fit_stage(name: str, model: keras.Model, cycles: CycleSet, config: IcbhiConfig, epochs: int, run_dir: Path,
              seed: int, validation: CycleSet | None = None) -> None:
    """Fit the compiled ``model`` on ``cycles`` (augmented, class-balanced), then save ``<name>.keras``.

    ``validation`` is only evaluated and logged per epoch (``val_*`` in ``history_<name>.csv``),
    never used to pick weights: the model kept is the last epoch's.
    """
    folder = RunFolder(run_dir)
    print(f"{name}: {len(cycles)} cycles, {epochs} epochs, batch {config.train.batch_size}, "
          f"learning rate {float(model.optimizer.learning_rate):g}")
    model.fit(cycles.dataset(config, config.train.batch_size, training=True, seed=seed),
              validation_data=None if validation is None else
              validation.dataset(config, config.train.batch_size, training=False),
              epochs=epochs, shuffle=False,  # the tf.data pipeline samples and shuffles
              callbacks=[TrainingBackup(folder.backup_dir(name)),
                         keras.callbacks.CSVLogger(str(folder.history_file(name)), append=True)],
              verbose=1 if sys.stdout.isatty() else 2)
    artifacts.save_model(model, folder.model_file(name))
    shutil.rmtree(folder.backup_dir(name), ignore_errors=True)  # the finished stage replaces its checkpoints


def train_stage1(model: keras.Model, cycles: CycleSet, config: IcbhiConfig, run_dir: Path, seed: int,
                 validation: CycleSet | None = None) -> keras.Model:
    """Stage 1 on every training cycle; a finished ``stage1.keras`` is loaded instead."""
    path = RunFolder(run_dir).model_file(STAGE1)
    if path.exists():
        print(f"{STAGE1}: already trained, loading {path}")
        return keras.models.load_model(path)
    compile_stage(model, config.train.learning_rate, config)
    fit_stage(STAGE1, model, cycles, config, config.train.epochs, run_dir, seed, validation)
    return model


def _restart_optimizer(model: keras.Model, learning_rate: float, config: IcbhiConfig) -> None:
    """Fresh SGD state (no momentum, step 0) at ``learning_rate``, keeping the traced train function."""
    optimizer = model.optimizer
    if not isinstance(optimizer, keras.optimizers.SGD) or not optimizer.built:
        compile_stage(model, learning_rate, config)
        return
    optimizer.learning_rate = learning_rate  # assigned into the existing variable
    optimizer.iterations.assign(0)
    for momentum in optimizer.momentums:
        momentum.assign(keras.ops.zeros_like(momentum))


@dataclasses.dataclass
class DeviceModels:
    """One model architecture with the stage-1 weights and a fine-tuned weight set per device."""

    model: keras.Model
    stage1: list[np.ndarray]
    devices: dict[str, list[np.ndarray]]

    def weights_for(self, device: str) -> list[np.ndarray]:
        """The device's fine-tuned weights, or stage 1's for a device without a copy."""
        return self.devices.get(str(device), self.stage1)

    def predict(self, cycles: CycleSet, config: IcbhiConfig) -> np.ndarray:
        """Class probabilities, each cycle scored by its device's copy (else stage 1). ``[N, classes]``"""
        probabilities = np.zeros((len(cycles), config.train.classes), np.float32)
        for device in sorted(set(cycles.devices.tolist())):
            rows = np.flatnonzero(cycles.devices == device)
            self.model.set_weights(self.weights_for(device))
            probabilities[rows] = predict_probabilities(self.model, cycles.subset(rows), config)
        self.model.set_weights(self.stage1)
        return probabilities

    @classmethod
    def load(cls, run_dir: Path) -> DeviceModels:
        """``stage1.keras`` and every ``device_<DEVICE>.keras`` of a finished run folder."""
        model = keras.models.load_model(RunFolder(run_dir).model_file(STAGE1), compile=False)
        devices = {path.stem[len(DEVICE_PREFIX):]: keras.models.load_model(path, compile=False).get_weights()
                   for path in sorted(Path(run_dir).glob(f"{DEVICE_PREFIX}*{MODEL_SUFFIX}"))}
        return cls(model, model.get_weights(), devices)


def finetune_devices(stage1: keras.Model, cycles: CycleSet, config: IcbhiConfig, run_dir: Path,
                     seed: int) -> DeviceModels:
    """Stage 2: per device of ``cycles``, the stage-1 weights fine-tuned on that device's cycles.

    Each copy starts from the stage-1 weights with a fresh optimizer at ``finetune_learning_rate``
    and trains ``finetune_epochs``; a finished ``device_<DEVICE>.keras`` is loaded instead.
    ``stage1`` is trained in place and holds its stage-1 weights again on return.
    """
    start = stage1.get_weights()
    copies = {}
    for device in sorted(set(cycles.devices.tolist())):
        name = device_model_name(device)
        path = RunFolder(run_dir).model_file(name)
        if path.exists():
            print(f"{name}: already fine-tuned, loading {path}")
            copies[device] = keras.models.load_model(path, compile=False).get_weights()
            continue
        stage1.set_weights(start)
        _restart_optimizer(stage1, config.train.finetune_learning_rate, config)
        fit_stage(name, stage1, cycles.subset(np.flatnonzero(cycles.devices == device)), config,
                  config.train.finetune_epochs, run_dir, seed)
        copies[device] = stage1.get_weights()
    stage1.set_weights(start)
    return DeviceModels(stage1, start, copies)


def predict_probabilities(model: keras.Model, cycles: CycleSet, config: IcbhiConfig) -> np.ndarray:
    """Class probabilities of every cycle, in order. ``[N, classes]``"""
    batches = cycles.dataset(config, config.train.batch_size, training=False)
    return np.asarray(model.predict(batches, verbose=0), np.float32)
