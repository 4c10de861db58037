"""KerasTuner HyperModels of the breathing-phase classifiers, over a pipeline's ``[tune]`` space.

``BreathHyperModel("cnn8", pipeline)`` (or ``"vgg"``, ``"temporal"``) declares every knob of the space:

- architecture, read in ``build(hp)``: conv width, dropout, and which group of spectral maps
  is fed (one of ``[tune] map_sets``);
- training, read in ``fit(hp, ...)``: peak learning rate, AdamW weight decay, CutMix and
  MixUp probabilities, augmentation warm-up epochs and the per-replica batch size.

Features are extracted once, for every map any set names (``extraction_pipeline``); the
model built for a trial starts with a ``SelectMaps`` layer that keeps the channels of its
set, so no trial re-runs the extraction. A trial trains with the same helpers as
``tfbreath.train`` (scalar normalisation, AdamW + warm-up/cosine, CutMix/MixUp after the
warm-up, early stopping) and is scored by Keras' ``val_accuracy``, the dominant-label
accuracy on the session-grouped validation split. ``trial_pipeline`` turns a trial's values
into the pipeline that ``python -m tfbreath.fit`` trains the same way.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import keras
import keras_tuner as kt
import tensorflow as tf

from tfbreath.config import CNN_MODELS, ConfigError, PipelineConfig, with_overrides
from tfbreath.data import FeatureSet
from tfbreath.distribute import global_batch_size, shard_by_data
from tfbreath.models import SCALARS, SPECTRAL, build_model_for_pipeline
from tfbreath.models.select_maps import SELECT_MAPS, SelectMaps
from tfbreath.train import augmented_batches, prepare, synchronise_batch_norm, weight_averaging

OBJECTIVE = "val_accuracy"
"""What a trial maximises: the ``accuracy`` metric of ``tfbreath.train.compile_model`` on the
validation split, as Keras logs it."""

WIDTH, DROPOUT, MAPS = "model_width", "dropout", "maps"
"""Names of the architecture hyperparameters (read in ``build``)."""

LEARNING_RATE, WEIGHT_DECAY, P_CUTMIX, P_MIXUP, WARMUP_EPOCHS, BATCH_SIZE = (
    "learning_rate", "weight_decay", "p_cutmix", "p_mixup", "warmup_epochs", "batch_size")
"""Names of the training hyperparameters (read in ``fit``)."""

HYPERPARAMETERS = (WIDTH, DROPOUT, MAPS, LEARNING_RATE, WEIGHT_DECAY, P_CUTMIX, P_MIXUP, WARMUP_EPOCHS,
                   BATCH_SIZE)
"""Every tuned knob, in the order of the trial table."""

HYPERBAND_EPOCHS = "tuner/epochs"
"""The epoch budget KerasTuner's Hyperband gives a trial (absent for the other tuners)."""


def without_member_maps(pipeline: PipelineConfig) -> PipelineConfig:
    """``pipeline`` with no ``[train] member_maps``: a trial's maps are its ``[tune] map_sets`` choice."""
    return with_overrides(pipeline, "train", member_maps={})


def extraction_pipeline(pipeline: PipelineConfig) -> PipelineConfig:
    """The pipeline whose features every trial shares: all maps of all ``[tune] map_sets``."""
    return with_overrides(without_member_maps(pipeline), "features", maps=pipeline.tune.searched_maps)


def _span(hp: kt.HyperParameters, name: str, span: tuple, *, integer: bool = False, log: bool = False) -> Any:
    """A range hyperparameter; ``low == high`` fixes it (KerasTuner rejects an empty range)."""
    kind = int if integer else float
    low, high = kind(span[0]), kind(span[1])
    if low == high:
        return hp.Fixed(name, low)
    if integer:
        return hp.Int(name, low, high)
    return hp.Float(name, low, high, sampling="log" if log else "linear")


class BreathHyperModel(kt.HyperModel):
    """One gradient model (``"cnn8"``, ``"vgg"`` or ``"temporal"``) over the ``[tune]`` space of ``pipeline``.

    ``fit(hp, model, train_set, validation_data, ...)`` takes ``tfbreath.data.FeatureSet``s
    extracted with ``extraction_pipeline(pipeline)``.
    """

    def __init__(self, model_name: str, pipeline: PipelineConfig, **kwargs):
        if model_name not in CNN_MODELS:
            raise ConfigError(f"model must be one of {list(CNN_MODELS)}, got {model_name!r}")
        super().__init__(name=model_name, **kwargs)
        self.model_name = model_name
        self.pipeline = without_member_maps(pipeline)
        self.space = pipeline.tune

    def declare_hyperparameters(self, hp: kt.HyperParameters) -> None:
        """The whole space up front, so the oracle (and a chief) knows the training knobs too."""
        self.architecture(hp)
        self.training(hp)

    def architecture(self, hp: kt.HyperParameters) -> dict[str, Any]:
        space = self.space
        return {WIDTH: hp.Choice(WIDTH, list(space.model_widths)),
                DROPOUT: _span(hp, DROPOUT, space.dropout),
                MAPS: hp.Choice(MAPS, list(space.map_sets))}

    def training(self, hp: kt.HyperParameters) -> dict[str, Any]:
        space = self.space
        return {LEARNING_RATE: _span(hp, LEARNING_RATE, space.learning_rate, log=True),
                WEIGHT_DECAY: _span(hp, WEIGHT_DECAY, space.weight_decay, log=True),
                P_CUTMIX: _span(hp, P_CUTMIX, space.p_cutmix),
                P_MIXUP: _span(hp, P_MIXUP, space.p_mixup),
                WARMUP_EPOCHS: _span(hp, WARMUP_EPOCHS, space.warmup_epochs, integer=True),
                BATCH_SIZE: hp.Choice(BATCH_SIZE, list(space.batch_sizes))}

    def build(self, hp: kt.HyperParameters) -> keras.Model:
        """``{"spectral": all extracted maps, "scalars"}`` -> ``SelectMaps`` -> the model -> logit.

        Keras' random generators are first seeded with ``[data] seed``, as ``fit`` seeds them before
        its model: a trial starts from the weights ``fit`` gives its pipeline, and its result does
        not depend on how many trials this process ran before (a resumed search repeats it).
        Under a strategy of several replicas (KerasTuner builds in its scope) the BatchNormalization
        layers use the global batch's statistics, as in ``tfbreath.train.train_model``.
        """
        keras.utils.set_random_seed(self.pipeline.data.seed)
        values = self.architecture(hp)
        maps = self.space.map_sets[values[MAPS]]
        searched = self.space.searched_maps
        net = build_model_for_pipeline(self.model_name, with_overrides(self.pipeline, "features", maps=maps),
                                       width=values[WIDTH], dropout=values[DROPOUT])
        if tf.distribute.get_strategy().num_replicas_in_sync > 1:
            synchronise_batch_norm(net)
        features = self.pipeline.features
        spectral = keras.Input((features.n_mels, self.pipeline.num_frames, len(searched)), name=SPECTRAL)
        inputs = {SPECTRAL: spectral}
        fed = {SPECTRAL: SelectMaps([searched.index(m) for m in maps], name=SELECT_MAPS)(spectral)}
        if features.n_scalars:
            inputs[SCALARS] = fed[SCALARS] = keras.Input((features.n_scalars,), name=SCALARS)
        return keras.Model(inputs, net(fed), name=f"{self.model_name}_trial")  # [B, 1] logit

    def fit(self, hp: kt.HyperParameters, model: keras.Model, train_set: FeatureSet, validation_data: FeatureSet,
            epochs: int, initial_epoch: int = 0, callbacks: Sequence[keras.callbacks.Callback] = (),
            **kwargs) -> keras.callbacks.History:
        """Train one trial from ``initial_epoch`` to ``epochs`` (Hyperband continues earlier trials).

        The learning-rate schedule (warm-up + cosine) spans this call's epochs. The batch size is
        per replica of the strategy the tuner built the model under.
        """
        self.training(hp)
        pipeline = self.trial_pipeline(hp.values, epochs)
        strategy = model.distribute_strategy
        batch_size = global_batch_size(pipeline.data.batch_size, strategy)
        steps = math.ceil(len(train_set.kept_examples) / batch_size)
        with strategy.scope():
            prepare(model, self.model_name, pipeline, train_set, steps * (epochs - initial_epoch),
                    member=model.get_layer(self.model_name))
        batches, schedule = augmented_batches(pipeline, train_set, batch_size)
        callbacks = [*weight_averaging(pipeline.train), *callbacks, schedule,
                     keras.callbacks.EarlyStopping(monitor=OBJECTIVE, mode="max",
                                                   patience=pipeline.train.patience(self.model_name))]
        return model.fit(batches, validation_data=shard_by_data(validation_data.batches(batch_size)),
                         epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks,
                         shuffle=False, **kwargs)  # the tf.data pipeline shuffles

    def trial_pipeline(self, values: dict[str, Any], epochs: int | None = None) -> PipelineConfig:
        """The pipeline that trains this model with a trial's values (``fit --pipeline`` reads it).

        ``epochs`` defaults to the trial's budget: Hyperband's ``tuner/epochs``, else
        ``[tune] max_epochs``.
        """
        name, train = self.model_name, self.pipeline.train
        if epochs is None:
            epochs = int(values.get(HYPERBAND_EPOCHS, self.space.max_epochs))
        pipeline = with_overrides(self.pipeline, "features", maps=self.space.map_sets[values[MAPS]])
        pipeline = with_overrides(pipeline, "train", models=(name,), epochs=epochs, model_width=values[WIDTH],
                                  learning_rates={**train.learning_rates, name: values[LEARNING_RATE]},
                                  weight_decay=values[WEIGHT_DECAY], dropouts={**train.dropouts, name: values[DROPOUT]})
        pipeline = with_overrides(pipeline, "augment", p_cutmix=values[P_CUTMIX], p_mixup=values[P_MIXUP],
                                  warmup_epochs=int(values[WARMUP_EPOCHS]))
        return with_overrides(pipeline, "data", batch_size=int(values[BATCH_SIZE]))
