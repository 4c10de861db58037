"""Training one model: precision policy, AdamW with warm-up + cosine, callbacks, resumption.

The recipe (breathing-phase paper): AdamW (weight decay 1e-4), learning rate warmed up
linearly from 0.1x over the first 5 % of steps then cosine-decayed to 1e-6 (Keras'
``CosineDecay`` with ``warmup_target``), gradient-norm clipping at 1.0, binary cross-entropy
on logits, early stopping on validation accuracy with the best weights restored, CutMix/MixUp
after the warm-up epochs; optionally (``[train] ema_momentum``) an exponential moving average of
the weights, scored and kept in their place. An interrupted ``fit`` resumes from its last finished epoch
(Keras ``BackupAndRestore``); finished models are saved atomically and not trained again.

The ``pooled`` and ``rbf`` members (``tfbreath.models.pooled``, ``tfbreath.models.rbf``) are
not trained by gradient steps: ``fit_closed_form`` standardises their statistics and fits an L2
logistic regression (scikit-learn, L-BFGS) in closed form, on the statistics themselves or on
their RBF similarities to landmark clips, its inverse strength chosen by log-loss on the
early-stopping split. ``train_member`` picks the right one of the two for a member name.

Under a ``tf.distribute`` strategy (``tfbreath.distribute``) the model is built, adapted and
compiled inside ``strategy.scope()``, so Keras distributes its datasets and gradients;
``[data] batch_size`` is per replica and the schedule counts global steps. With several
replicas, batch normalisation uses the statistics of the global batch.
"""

from __future__ import annotations

import csv
import math
import shutil
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfbreath import artifacts
from tfbreath.augment import AugmentationSchedule, Augmenter
from tfbreath.checkpoint import TrainingBackup
from tfbreath.config import (CLOSED_FORM_MODELS, POOLED_MODEL, RBF_MODEL, SCALARS, PipelineConfig, TrainConfig,
                             dump_config)
from tfbreath.data import FeatureSet
from tfbreath.distribute import global_batch_size, shard_by_data
from tfbreath.evaluation import accuracy, log_loss
from tfbreath.models import LOGIT, SCALAR_NORM, build_model_for_pipeline
from tfbreath.models.pooled import POOLED_NORM, POOLED_STATS
from tfbreath.models.rbf import RBF_KERNEL
from tfbreath.run_folder import RunFolder

CONSTANT_SPREAD = 1e-4
"""Relative spread over the training clips below which a pooled statistic is constant (e.g. the
mean and std of a per-band z-scored map's band: 0 and 1 up to round-off)."""

POOLED_MAX_ITERATIONS = 5000
"""L-BFGS iterations the logistic regression may take (it converges in a few hundred)."""

LOGIT_THRESHOLD = 0.0
"""Logit at which a prediction flips to exhale (P = 0.5)."""

DOMINANT_LABEL = 0.5
"""A blended (CutMix/MixUp) label at or above this counts as exhale."""


def learning_rate_schedule(peak: float, total_steps: int, train: TrainConfig):
    warmup_steps = int(round(train.warmup_fraction * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak * train.warmup_start_factor,
        decay_steps=max(1, total_steps - warmup_steps),
        alpha=train.min_learning_rate / peak,
        warmup_target=peak,
        warmup_steps=warmup_steps,
    )


@keras.saving.register_keras_serializable(package="tfbreath")
def dominant_label_accuracy(y_true, logits):
    """Per-clip hit of ``logit > 0`` against ``y_true >= DOMINANT_LABEL``. ``[B], [B, 1]`` -> ``[B]``

    Under CutMix/MixUp a training label is a blend; its dominant class is what the prediction
    should match. (Keras' BinaryAccuracy compares the blend itself and counts every mixed clip
    wrong.) On hard labels it is plain binary accuracy.
    """
    y_true = keras.ops.reshape(y_true, (-1,))
    logits = keras.ops.reshape(logits, (-1,))
    return keras.ops.cast(keras.ops.equal(y_true >= DOMINANT_LABEL, logits > LOGIT_THRESHOLD), "float32")


def compile_model(model: keras.Model, peak: float, total_steps: int, train: TrainConfig) -> keras.Model:
    clip = {"global_clipnorm" if train.clip_scope == "global" else "clipnorm": train.clipnorm}
    averaging = {"use_ema": True, "ema_momentum": train.ema_momentum} if train.ema_momentum else {}
    optimizer = keras.optimizers.AdamW(learning_rate=learning_rate_schedule(peak, total_steps, train),
                                       weight_decay=train.weight_decay, **clip, **averaging)
    model.compile(optimizer=optimizer,
                  loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.MeanMetricWrapper(dominant_label_accuracy, name="accuracy"),
                           keras.metrics.AUC(name="auc", from_logits=True)])
    return model


def weight_averaging(train: TrainConfig) -> list[keras.callbacks.Callback]:
    """With ``[train] ema_momentum``, Keras' ``SwapEMAWeights`` swapping the averaged weights into
    the model at each epoch's end (and out again before the next): put it before every callback
    that scores, keeps or saves the epoch's weights. Empty without averaging."""
    return [keras.callbacks.SwapEMAWeights(swap_on_epoch=True)] if train.ema_momentum else []


def adapt_scalar_normalisation(model: keras.Model, train_set: FeatureSet) -> None:
    """Fit the model's scalar Normalization layer (mean/variance) to the training scalars."""
    if SCALARS not in model.input:
        return
    scalars = train_set.kept.map(lambda e: e[SCALARS]).batch(256)
    model.get_layer(SCALAR_NORM).adapt(scalars)


def new_model(name: str, pipeline: PipelineConfig, **kwargs) -> keras.Model:
    """An untrained model of the pipeline's input sizes, ``[train] model_width`` and, when set,
    ``[train] dropouts`` (the closed-form members have neither: ``kwargs`` go to their builder)."""
    if name in CLOSED_FORM_MODELS:
        return build_model_for_pipeline(name, pipeline, **kwargs)
    dropout = pipeline.train.dropouts.get(name)
    return build_model_for_pipeline(name, pipeline, width=pipeline.train.model_width,
                                    **({} if dropout is None else {"dropout": dropout}))


def synchronise_batch_norm(model: keras.Model) -> None:
    """Switch the model's BatchNormalization layers to Keras' cross-replica (synchronized) statistics.

    Unsynchronised, each replica normalises by, and updates the moving averages from, its own
    slice of the global batch: the replicas of one machine end up saving the first replica's
    averages, and the workers of a multi-worker run each save different ones. Synchronised,
    every replica uses the global batch's statistics, as one device training on it would.
    """
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = True


def _finished_model(final: Path, strategy: tf.distribute.Strategy, done: str) -> keras.Model | None:
    """A member a run already finished (``<name>.keras``), loaded under ``strategy``; else None."""
    if not final.exists():
        return None
    print(f"{final.stem}: already {done}, loading {final}")
    with strategy.scope():
        return keras.models.load_model(final)


def prepare(model: keras.Model, name: str, pipeline: PipelineConfig, train_set: FeatureSet, total_steps: int,
            member: keras.Model | None = None) -> None:
    """The recipe's model side, shared by ``fit`` and ``tune``: the scalar normalisation of
    ``member`` (default: ``model``) adapted to the training clips, then ``compile_model`` with the
    member's peak learning rate over ``total_steps``. Call it under the model's strategy scope."""
    adapt_scalar_normalisation(member or model, train_set)
    compile_model(model, pipeline.train.learning_rates[name], total_steps, pipeline.train)


def augmented_batches(pipeline: PipelineConfig, train_set: FeatureSet,
                      batch_size: int) -> tuple[tf.data.Dataset, keras.callbacks.Callback]:
    """The recipe's data side, shared by ``fit`` and ``tune``: the training clips shuffled and
    augmented as ``[augment]`` says, both seeded by ``[data] seed`` (the same every run), split
    among the strategy's replicas; and the callback that steps the augmentation's schedule."""
    augmenter = Augmenter(pipeline.augment, seed=pipeline.data.seed)
    batches = train_set.batches(batch_size, pipeline.data.shuffle_buffer, seed=pipeline.data.seed,
                                epoch=augmenter.epoch)  # the order too is a function of (seed, epoch)
    return shard_by_data(augmenter.apply(batches).prefetch(tf.data.AUTOTUNE)), AugmentationSchedule(augmenter)


def train_model(name: str, pipeline: PipelineConfig, train_set: FeatureSet, val_set: FeatureSet | None,
                run_dir: Path, extra_callbacks: tuple = (),
                strategy: tf.distribute.Strategy | None = None, epochs: int | None = None) -> keras.Model:
    """Train (or resume, or reload) one model by the recipe (``prepare``, ``augmented_batches``)
    and save it as ``run_dir/<name>.keras``.

    With ``val_set``, early stopping on its accuracy ends training and the best epoch's weights
    are kept. Without one (a refit on every clip) the model trains ``epochs`` epochs, chosen
    elsewhere (cross-validation). The learning-rate schedule always spans ``[train] epochs``, so
    stopping after ``epochs`` follows the path the validated runs took up to that epoch.
    ``strategy`` (default: the current one) owns the model's variables; each step takes
    ``[data] batch_size`` examples per replica.
    """
    strategy = strategy or tf.distribute.get_strategy()
    folder = RunFolder(run_dir)
    final = folder.model_file(name)
    finished = _finished_model(final, strategy, "trained")
    if finished is not None:
        return finished
    data, train = pipeline.data, pipeline.train
    batch_size = global_batch_size(data.batch_size, strategy)
    steps = math.ceil(len(train_set.kept_examples) / batch_size)
    with strategy.scope():
        model = new_model(name, pipeline)
        if strategy.num_replicas_in_sync > 1:
            synchronise_batch_norm(model)
        prepare(model, name, pipeline, train_set, steps * train.epochs)
    batches, schedule = augmented_batches(pipeline, train_set, batch_size)
    stopper = None if val_set is None else keras.callbacks.EarlyStopping(
        monitor="val_accuracy", mode="max", patience=train.patience(name), restore_best_weights=True)
    averaging = weight_averaging(train)
    callbacks = [
        schedule,
        *averaging,
        *([stopper] if stopper else []),
        keras.callbacks.CSVLogger(str(folder.history_file(name)), append=True),
        keras.callbacks.TensorBoard(str(folder.logs_dir(name))),
        # after the stopper: saves the epoch as the stopper left it
        TrainingBackup(folder.backup_dir(name), early_stopping=stopper, averaging=next(iter(averaging), None)),
        *extra_callbacks,
    ]
    replicas = strategy.num_replicas_in_sync
    epochs = train.epochs if epochs is None else epochs
    print(f"{name}: {model.count_params():,} parameters, {epochs} epochs x {steps} steps of {batch_size} "
          f"clips" + (f" ({replicas} replicas x {data.batch_size})" if replicas > 1 else "")
          + f", peak learning rate {train.learning_rates[name]:g}"
          + ("" if val_set else ", no validation (a refit on every clip)"))
    validation = None if val_set is None else shard_by_data(val_set.batches(batch_size))
    model.fit(batches, validation_data=validation,
              epochs=epochs, callbacks=callbacks, shuffle=False,  # the tf.data pipeline shuffles
              verbose=1 if sys.stdout.isatty() else 2)
    artifacts.save_model(model, final, pipeline_toml=dump_config(pipeline))  # the model carries its features
    shutil.rmtree(folder.backup_dir(name), ignore_errors=True)  # the finished model replaces its epoch checkpoints
    return model


def _pooled_statistics(model: keras.Model, feature_set: FeatureSet, batch_size: int) -> np.ndarray:
    """The pooled member's statistics of every kept clip, before standardisation. ``[N, D]``"""
    statistics = keras.Model(model.input, model.get_layer(POOLED_STATS).output)
    return np.asarray(statistics.predict(feature_set.batches(batch_size), verbose=0), np.float64)


def set_standardisation(norm: keras.layers.Normalization, x: np.ndarray) -> None:
    """Set a built ``Normalization`` to the mean and variance of ``x`` ``[N, D]``, as scikit-learn's
    ``StandardScaler``: a column constant over the clips is centred, not scaled. Divided by its
    zero spread (Keras floors it at 1e-7), its float32 round-off would weigh like a feature, and
    differ between TF and TFLite."""
    mean, variance = x.mean(axis=0), x.var(axis=0)  # [D] each
    constant = np.sqrt(variance) <= CONSTANT_SPREAD * (1.0 + np.abs(mean))
    variance = np.where(constant, 1.0, variance)
    norm.set_weights([w.reshape(norm.weights[i].shape).astype(np.float32)
                      for i, w in enumerate((mean, variance, np.asarray(len(x))))])
    norm.finalize_state()


def _logistic_regression(z: np.ndarray, labels: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=POOLED_MAX_ITERATIONS).fit(z, labels)


class _LinearFit:
    """The pooled member's learner: logistic regression on the standardised statistics ``z``."""

    def __init__(self, z: np.ndarray, labels: np.ndarray, c: float, train: TrainConfig, seed: int):
        self.regression = _logistic_regression(z, labels, c)
        self.build_kwargs: dict = {}
        self.summary = f"logistic regression on {z.shape[1]} pooled statistics"

    def probability(self, z: np.ndarray) -> np.ndarray:
        return self.regression.predict_proba(z)[:, 1]

    def set_weights(self, model: keras.Model) -> None:
        model.get_layer(LOGIT).set_weights([self.regression.coef_.T.astype(np.float32),
                                            self.regression.intercept_.astype(np.float32)])


class _RBFFit:
    """The rbf member's learner: Nyström features of the RBF kernel (``[train] rbf_landmarks``
    random training clips as landmarks, gamma = 1 / (D var(z)), scikit-learn's ``"scale"``), then
    logistic regression on them."""

    def __init__(self, z: np.ndarray, labels: np.ndarray, c: float, train: TrainConfig, seed: int):
        from sklearn.kernel_approximation import Nystroem

        gamma = 1.0 / (z.shape[1] * z.var())
        self.nystroem = Nystroem(gamma=gamma, n_components=min(train.rbf_landmarks, len(z)),
                                 random_state=seed).fit(z)
        self.regression = _logistic_regression(self.nystroem.transform(z), labels, c)
        landmarks = len(self.nystroem.components_)
        self.build_kwargs = {"n_landmarks": landmarks, "gamma": gamma}
        self.summary = f"kernel logistic regression on {landmarks} landmarks ({z.shape[1]} pooled statistics)"

    def probability(self, z: np.ndarray) -> np.ndarray:
        return self.regression.predict_proba(self.nystroem.transform(z))[:, 1]

    def set_weights(self, model: keras.Model) -> None:
        # Nyström's features are k(z, landmarks) @ normalization_.T: fold that matrix into the weights.
        weights = self.nystroem.normalization_.T @ self.regression.coef_.T  # [L, 1]
        model.get_layer(RBF_KERNEL).set_weights([self.nystroem.components_.astype(np.float32)])
        model.get_layer(LOGIT).set_weights([weights.astype(np.float32), self.regression.intercept_.astype(np.float32)])


CLOSED_FORM_FITS = {POOLED_MODEL: (_LinearFit, "pooled_c"), RBF_MODEL: (_RBFFit, "rbf_c")}
"""Closed-form member -> (its learner, the ``[train]`` key of the C values it tries)."""


def fit_closed_form(name: str, pipeline: PipelineConfig, train_set: FeatureSet, val_set: FeatureSet | None,
                    run_dir: Path, strategy: tf.distribute.Strategy | None = None,
                    c: float | None = None) -> keras.Model:
    """Fit (or reload) the closed-form member ``name`` (``pooled`` or ``rbf``) and save it as
    ``run_dir/<name>.keras``.

    Every C of its ``[train]`` list (``pooled_c``, ``rbf_c``) is fitted on the training clips
    (standardised by their own statistics) and scored on ``val_set`` (log-loss and accuracy, one
    row each in ``history_<name>.csv``); with the lowest log-loss's C the member is then fitted on
    the training and validation clips together (a closed-form fit has no epochs for them to stop).
    Without ``val_set`` (a refit on every clip) ``c`` is given.
    """
    strategy = strategy or tf.distribute.get_strategy()
    folder = RunFolder(run_dir)
    final = folder.model_file(name)
    finished = _finished_model(final, strategy, "fitted")
    if finished is not None:
        return finished
    if (val_set is None) == (c is None):
        raise ValueError("give val_set (to choose C) or c (a refit), not both or neither")
    learner, grid = CLOSED_FORM_FITS[name]
    seed = pipeline.data.seed
    batch_size = global_batch_size(pipeline.data.batch_size, strategy)
    with strategy.scope():
        pooled = new_model(POOLED_MODEL, pipeline)  # the statistics and their standardisation
    x_train, labels = _pooled_statistics(pooled, train_set, batch_size), train_set.kept_examples.labels
    norm = pooled.get_layer(POOLED_NORM)
    if c is None:
        x_val, val_labels = _pooled_statistics(pooled, val_set, batch_size), val_set.kept_examples.labels
        set_standardisation(norm, x_train)  # each C scored as a model of the training clips alone
        z_train, z_val = (np.asarray(norm(x.astype(np.float32)), np.float64) for x in (x_train, x_val))
        rows = []
        for candidate in getattr(pipeline.train, grid):
            p = learner(z_train, labels, candidate, pipeline.train, seed).probability(z_val)
            rows.append({"c": candidate, "val_loss": log_loss(val_labels, p), "val_accuracy": accuracy(val_labels, p)})
        artifacts.write_text(folder.history_file(name), "c,val_loss,val_accuracy\n" + "".join(
            f"{r['c']!r},{r['val_loss']!r},{r['val_accuracy']!r}\n" for r in rows))
        c = min(rows, key=lambda r: r["val_loss"])["c"]
        x_train, labels = np.concatenate([x_train, x_val]), np.concatenate([labels, val_labels])
    set_standardisation(norm, x_train)
    z_train = np.asarray(norm(x_train.astype(np.float32)), np.float64)  # [N, D]
    fitted = learner(z_train, labels, c, pipeline.train, seed)
    if name == POOLED_MODEL:
        model = pooled  # the statistics' own model is the pooled member
    else:
        with strategy.scope():
            model = new_model(name, pipeline, **fitted.build_kwargs)
        model.get_layer(POOLED_NORM).set_weights(norm.get_weights())
        model.get_layer(POOLED_NORM).finalize_state()
    fitted.set_weights(model)
    print(f"{name}: {fitted.summary} of {len(labels)} clips, C = {c:g}" + ("" if val_set else " (a refit on every clip)"))
    artifacts.save_model(model, final, pipeline_toml=dump_config(pipeline))
    return model


def best_c(history_csv: Path) -> float:
    """The ``C`` of the lowest validation log-loss in a ``history_pooled.csv`` (the first of equal minima)."""
    with open(history_csv, newline="") as handle:
        rows = [(float(row["val_loss"]), float(row["c"])) for row in csv.DictReader(handle)]
    return min(rows, key=lambda row: row[0])[1]


def chosen_setting(name: str, folder: Path) -> float:
    """What the early-stopping split chose for a member trained in ``folder``: its best epoch
    count (gradient members) or its ``C`` (the closed-form members)."""
    history = RunFolder(folder).history_file(name)
    return best_c(history) if name in CLOSED_FORM_MODELS else best_epoch_count(history)


def refit_setting(name: str, chosen: list[float]) -> float:
    """The setting a refit on every clip uses, from the folds' choices: the median epoch count
    rounded up, or the median ``C`` (the lower middle one of an even count: a value tried)."""
    if name in CLOSED_FORM_MODELS:
        return float(sorted(chosen)[(len(chosen) - 1) // 2])
    return int(np.ceil(np.median(chosen)))


def train_member(name: str, pipeline: PipelineConfig, train_set: FeatureSet, val_set: FeatureSet | None,
                 run_dir: Path, strategy: tf.distribute.Strategy | None = None,
                 setting: float | None = None) -> keras.Model:
    """``fit_closed_form`` or ``train_model`` (augmented as ``[augment]`` says, seeded by ``[data] seed``)
    for one member; ``setting`` is a refit's epoch count or ``C`` (``refit_setting``)."""
    if name in CLOSED_FORM_MODELS:
        return fit_closed_form(name, pipeline, train_set, val_set, run_dir, strategy, c=setting)
    return train_model(name, pipeline, train_set, val_set, run_dir, strategy=strategy,
                       epochs=None if setting is None else int(setting))


def best_epoch_count(history_csv: Path) -> int:
    """Epochs up to and including the best validation accuracy in a ``history_<model>.csv``, as
    early stopping chose it (the first of equal maxima); a resumed epoch counts once (its last row)."""
    with open(history_csv, newline="") as handle:
        rows = {int(row["epoch"]): float(row["val_accuracy"]) for row in csv.DictReader(handle)}
    epochs = sorted(rows)
    return epochs[int(np.argmax([rows[e] for e in epochs]))] + 1


def predict_probabilities(model: keras.Model, feature_set: FeatureSet, batch_size: int,
                          from_logits: bool = True) -> np.ndarray:
    """P(exhale) of every kept file, in file order. ``[N]``

    ``batch_size`` is global: a model of a multi-replica strategy splits each batch among them.
    """
    batches = shard_by_data(feature_set.batches(batch_size))
    outputs = np.asarray(model.predict(batches, verbose=0), np.float32).reshape(-1)
    return 1.0 / (1.0 + np.exp(-outputs)) if from_logits else outputs
