"""Weighted ensemble of trained models, as one Keras model with the same inputs.

P = sum_i alpha_i * sigmoid(logit_i), with alpha = softmax(validation accuracies) (the
breathing-phase paper's rule). Being one Keras model, it saves as one ``.keras`` file and
exports as one TFLite graph.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import keras
import numpy as np

from tfbreath.config import ENSEMBLE


def softmax_weights(accuracies: Sequence[float]) -> np.ndarray:
    """alpha_i = exp(acc_i) / sum_j exp(acc_j). ``[M]``"""
    scores = np.asarray(accuracies, np.float64)
    exp = np.exp(scores - scores.max())
    return exp / exp.sum()


def weighted_average(probabilities: Mapping[str, np.ndarray], alphas: Sequence[float]) -> np.ndarray:
    """The ensemble's P(exhale) from its members' (``WeightedSigmoidAverage`` in NumPy): sum_i alpha_i * P_i,
    the members in ``probabilities``' order. ``{M: [N]}, [M] -> [N]``"""
    stacked = np.stack([np.asarray(p, np.float64) for p in probabilities.values()])  # [M, N]
    return np.asarray(alphas, np.float64) @ stacked


@keras.saving.register_keras_serializable(package="tfbreath")
class WeightedSigmoidAverage(keras.layers.Layer):
    """sum_i alpha_i * sigmoid(logit_i) over a list of ``[B, 1]`` logits, in float32."""

    def __init__(self, alphas: Sequence[float], **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.alphas = [float(a) for a in alphas]

    def call(self, logits):
        probabilities = [keras.ops.sigmoid(keras.ops.cast(logit, "float32")) for logit in logits]  # M x [B, 1]
        return keras.ops.sum(keras.ops.stack(probabilities, axis=0)
                             * keras.ops.reshape(keras.ops.convert_to_tensor(self.alphas), (-1, 1, 1)),
                             axis=0)  # [B, 1]

    def get_config(self):
        return {**super().get_config(), "alphas": self.alphas}


def build_ensemble(models: dict[str, keras.Model], alphas: Sequence[float]) -> keras.Model:
    """One model: the members' shared inputs -> weighted P(exhale) ``[B, 1]``."""
    if len(models) != len(alphas):
        raise ValueError(f"need one weight per model: {len(models)} models, {len(alphas)} weights")
    first = next(iter(models.values()))
    inputs = {name: keras.Input(shape=tensor.shape[1:], name=name) for name, tensor in first.input.items()}
    logits = [model(inputs) for model in models.values()]
    probability = WeightedSigmoidAverage(alphas, name="weighted_sigmoid_average")(logits)
    return keras.Model(inputs, probability, name=ENSEMBLE)
