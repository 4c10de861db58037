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

Stage 1 keeps its last epoch's weights, or with ``[train] select = "best"`` the epoch that
scored best (ICBHI score) on a validation split of the training patients (``BestEpoch``; the
authors' code picks the epoch by accuracy on the test fold, which this never does). The loss may
weigh each class (``[train] class_weights``) and SGD may decay the weights
(``[train] weight_decay``), both as the authors' PyTorch code does (``WeightedCategoricalCrossentropy``,
``CoupledDecaySGD``).

The copies share one Keras model and differ only in their weights, so the training and
prediction functions are traced once, not once per device. Each copy is still saved as a
complete model, ``device_<DEVICE>.keras``. Every stage resumes: ``tfbreath.checkpoint.TrainingBackup``
(a kill-safe Keras ``BackupAndRestore``) continues an interrupted ``fit`` from its last finished epoch, and a stage whose ``.keras``
file exists is loaded instead of trained again.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import keras
import numpy as np

from tfbreath import artifacts
from tfbreath.checkpoint import TrainingBackup
from tfbreath.icbhi.dataset import CycleSet
from tfbreath.icbhi.score import icbhi_scores
from tfbreath.run_folder import MODEL_SUFFIX, RunFolder

if TYPE_CHECKING:
    from tfbreath.icbhi.config import IcbhiConfig

STAGE1 = "stage1"
"""Name (and file stem) of the stage-1 model."""
DEVICE_PREFIX = "device_"
"""File stem prefix of a device's fine-tuned copy: ``device_<DEVICE>.keras``."""
SELECT_BEST = "best"
"""The ``[train] select`` value that keeps stage 1's best validation epoch instead of its last."""
VALIDATION_SCORE = "val_icbhi_score"
"""Column of ``history_<stage>.csv`` holding each epoch's validation ICBHI score (``BestEpoch``)."""
SELECTION_SUFFIX = "_selection.json"
"""``<stage>_selection.json``: the epoch ``BestEpoch`` kept and its validation score."""
NEVER = sys.maxsize
"""``BestEpoch``'s patience: it never stops training early."""


def device_model_name(device: str) -> str:
    return f"{DEVICE_PREFIX}{device}"


@keras.saving.register_keras_serializable(package="tfbreath")
class WeightedCategoricalCrossentropy(keras.losses.Loss):
    """Categorical cross-entropy with a weight per class, averaged as PyTorch's
    ``CrossEntropyLoss(weight=w)`` (the authors' loss) averages it: per batch,
    ``sum_i w[y_i] * CE_i / sum_i w[y_i]``.

    Dividing by the weights' sum rather than the batch size keeps the loss on the unweighted
    scale, so the learning rate means the same with and without weights. A soft label (a row
    mixing classes) weighs ``y . w``; the dataset's labels are one-hot (concatenation only joins
    cycles of one class).
    """

    def __init__(self, class_weights: tuple[float, ...], name: str = "weighted_categorical_crossentropy",
                 **kwargs: Any):
        super().__init__(name=name, **kwargs)
        self.class_weights = tuple(float(w) for w in class_weights)

    def call(self, y_true, y_pred):
        y_true = keras.ops.cast(y_true, y_pred.dtype)
        weights = keras.ops.sum(y_true * keras.ops.convert_to_tensor(self.class_weights, y_pred.dtype), axis=-1)
        per_example = keras.losses.categorical_crossentropy(y_true, y_pred)  # [B]
        return weights / keras.ops.mean(weights) * per_example  # the batch mean of this is the weighted mean

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "class_weights": list(self.class_weights)}


@keras.saving.register_keras_serializable(package="tfbreath")
class CoupledDecaySGD(keras.optimizers.SGD):
    """SGD whose weight decay is PyTorch's (the authors' optimiser): ``coupled_weight_decay * w``
    is added to each gradient before the momentum update (an L2 penalty on every trainable
    variable, batch-norm scales and biases included).

    Keras' own ``SGD(weight_decay=...)`` is decoupled instead: it shrinks ``w`` by
    ``learning_rate * weight_decay * w`` outside the momentum, which with momentum 0.9 decays
    about ten times less at steady state than PyTorch's, so it is left unset here.
    """

    def __init__(self, coupled_weight_decay: float = 0.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.coupled_weight_decay = float(coupled_weight_decay)

    def update_step(self, gradient, variable, learning_rate):
        decay = keras.ops.cast(self.coupled_weight_decay, variable.dtype)
        gradient = keras.ops.add(keras.ops.cast(gradient, variable.dtype), keras.ops.multiply(variable, decay))
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "coupled_weight_decay": self.coupled_weight_decay}


def compile_stage(model: keras.Model, learning_rate: float, config: IcbhiConfig) -> keras.Model:
    """SGD with the configured momentum at a fixed learning rate, categorical cross-entropy.

    With ``[train] weight_decay`` the optimiser is ``CoupledDecaySGD`` (PyTorch's decay), with
    ``[train] class_weights`` the loss is ``WeightedCategoricalCrossentropy``; without them, Keras'
    plain ``SGD`` and ``CategoricalCrossentropy``.
    """
    train = config.train
    optimizer = (CoupledDecaySGD(train.weight_decay, learning_rate=learning_rate, momentum=train.momentum)
                 if train.weight_decay else keras.optimizers.SGD(learning_rate=learning_rate, momentum=train.momentum))
    loss = (WeightedCategoricalCrossentropy(train.class_weights) if train.class_weights
            else keras.losses.CategoricalCrossentropy())
    model.compile(optimizer=optimizer, loss=loss, metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    return model


class BestEpoch(keras.callbacks.EarlyStopping):
    """Keeps the weights of the epoch that ``scorer`` rates best and restores them when training ends.

    ``scorer(model)`` scores the model on held-out cycles (higher is better; ``validation_scorer``
    gives the ICBHI score); each epoch's score is logged as ``VALIDATION_SCORE`` (put this
    callback before the ``CSVLogger``) and the first epoch reaching the highest one wins. It is
    an ``EarlyStopping`` that never stops, so ``TrainingBackup(early_stopping=...)`` checkpoints
    its best score, epoch and weights, and a resumed run keeps the epoch an uninterrupted one keeps.
    """

    def __init__(self, scorer: Callable[[keras.Model], float | None]):
        super().__init__(monitor=VALIDATION_SCORE, mode="max", patience=NEVER, restore_best_weights=True)
        self.scorer = scorer

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {} if logs is None else logs
        logs[VALIDATION_SCORE] = self.scorer(self.model)
        super().on_epoch_end(epoch, logs)


def validation_scorer(cycles: CycleSet, config: IcbhiConfig) -> Callable[[keras.Model], float | None]:
    """``model -> ICBHI score`` (mean of Se and Sp) on ``cycles``, a long cycle's windows voting;
    ``None`` when ``cycles`` lack normal or abnormal cycles."""
    def score(model: keras.Model) -> float | None:
        probabilities, scored = cycles.per_cycle(predict_probabilities(model, cycles, config))
        return icbhi_scores(scored.labels, np.argmax(probabilities, axis=-1), config.train.classes)["score"]
    return score


def selection_file(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / f"{name}{SELECTION_SUFFIX}"


def read_selection(run_dir: Path, name: str) -> dict[str, Any]:
    """``{"epoch": 1-based, "validation_score": float}`` the stage kept, {} for a stage that kept its last."""
    path = selection_file(run_dir, name)
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def fit_stage(name: str, model: keras.Model, cycles: CycleSet, config: IcbhiConfig, epochs: int, run_dir: Path,
              seed: int, validation: CycleSet | None = None, select_best: bool = False) -> None:
    """Fit the compiled ``model`` on ``cycles`` (augmented, class-balanced), then save ``<name>.keras``.

    Without ``select_best``, ``validation`` is only evaluated and logged per epoch (``val_*`` in
    ``history_<name>.csv``) and the last epoch's weights are kept. With it, ``validation`` (never
    the test split) is scored per epoch by ``BestEpoch`` (``VALIDATION_SCORE`` in the history),
    the best epoch's weights are kept, and ``<name>_selection.json`` records which.
    """
    folder = RunFolder(run_dir)
    print(f"{name}: {len(cycles)} cycles, {epochs} epochs, batch {config.train.batch_size}, "
          f"learning rate {float(model.optimizer.learning_rate):g}")
    selector = BestEpoch(validation_scorer(validation, config)) if select_best else None
    logged = None if validation is None or select_best else validation.dataset(
        config, config.train.batch_size, training=False)
    model.fit(cycles.dataset(config, config.train.batch_size, training=True, seed=seed), validation_data=logged,
              epochs=epochs, shuffle=False,  # the tf.data pipeline samples and shuffles
              callbacks=[*([] if selector is None else [selector]),  # before the backup, which saves its state
                         TrainingBackup(folder.backup_dir(name), early_stopping=selector),
                         keras.callbacks.CSVLogger(str(folder.history_file(name)), append=True)],
              verbose=1 if sys.stdout.isatty() else 2)
    if selector is not None:
        selection = {"epoch": selector.best_epoch + 1, "validation_score": selector.best}
        print(f"{name}: keeping epoch {selection['epoch']} of {epochs} "
              f"(validation ICBHI score {selection['validation_score']})")
        artifacts.write_json(selection_file(run_dir, name), selection)  # before the model: a saved model has it
    artifacts.save_model(model, folder.model_file(name))
    shutil.rmtree(folder.backup_dir(name), ignore_errors=True)  # the finished stage replaces its checkpoints


def train_stage1(model: keras.Model, cycles: CycleSet, config: IcbhiConfig, run_dir: Path, seed: int,
                 validation: CycleSet | None = None) -> keras.Model:
    """Stage 1 on every training cycle; a finished ``stage1.keras`` is loaded instead.

    With ``[train] select = "best"`` the weights kept are those of the epoch scoring best on
    ``validation`` (held-out training patients; ``read_selection`` says which), else the last
    epoch's, ``validation`` then only logged.
    """
    path = RunFolder(run_dir).model_file(STAGE1)
    if path.exists():
        print(f"{STAGE1}: already trained, loading {path}")
        return keras.models.load_model(path)
    compile_stage(model, config.train.learning_rate, config)
    select_best = config.train.select == SELECT_BEST
    if select_best and validation is None:
        raise ValueError(f"[train] select = {SELECT_BEST!r} needs validation cycles to score the epochs")
    fit_stage(STAGE1, model, cycles, config, config.train.epochs, run_dir, seed, validation, select_best)
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
