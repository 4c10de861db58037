"""An RBF-kernel ensemble member: logistic regression on RBF similarities to landmark clips.

It reads the ``pooled`` member's statistics (``PooledStatistics``, standardised), but where
that member weighs them linearly, this one compares the clip with ``n_landmarks`` training clips
(the landmarks) by the Gaussian (RBF) kernel ``exp(-gamma ||z - l||^2)`` and weighs those
similarities: a Nyström approximation of kernel logistic regression (Williams & Seeger, 2001),
fitted in closed form by ``train.fit_closed_form``. On the breath clips it is the best single
member out of fold (0.746) and, added to CNN8 + pooled, raised the ensemble by 0.5 to 0.8 points
in every comparison (``benchmarks/RESULTS.md``, "rbf member").

    stats  = PooledStatistics(...)(inputs)         [B, D]
    z      = Normalization("pooled_norm")(stats)    [B, D]
    k      = RBFKernel(n_landmarks, gamma)(z)      [B, L]
    logit  = Dense(1)(k)                           [B, 1] float32

Nyström maps ``z`` to ``k(z) K_LL^{-1/2}`` before its linear model ``w``; the model folds
``K_LL^{-1/2} w`` into the dense kernel, so no matrix square root is stored. Everything runs in
float32 under any dtype policy.
"""

from __future__ import annotations

from typing import Sequence

import keras

from tfbreath.models.blocks import LOGIT, LOGIT_DTYPE
from tfbreath.models.pooled import standardised_statistics

RBF_KERNEL = "rbf_kernel"
"""Name of the ``RBFKernel`` layer, whose landmarks ``train.fit_closed_form`` sets."""


@keras.saving.register_keras_serializable(package="tfbreath")
class RBFKernel(keras.layers.Layer):
    """``[B, D]`` -> ``[B, L]``: ``exp(-gamma ||z - l||^2)`` for each of the ``L`` landmarks ``l``, float32.

    The landmarks are a non-trainable ``[L, D]`` weight (zeros until set). The squared distance is
    expanded as ``|z|^2 - 2 z.l + |l|^2`` (one matrix product) and floored at 0 against round-off.
    """

    def __init__(self, n_landmarks: int, gamma: float, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if int(n_landmarks) <= 0:
            raise ValueError(f"n_landmarks must be > 0, got {n_landmarks!r}")
        if not float(gamma) > 0:
            raise ValueError(f"gamma must be > 0, got {gamma!r}")
        self.n_landmarks = int(n_landmarks)
        self.gamma = float(gamma)

    def build(self, input_shape):
        self.landmarks = self.add_weight(shape=(self.n_landmarks, int(input_shape[-1])), initializer="zeros",
                                         trainable=False, name="landmarks")  # [L, D]

    def call(self, z):
        z = keras.ops.cast(z, "float32")  # [B, D]
        landmarks = keras.ops.convert_to_tensor(self.landmarks)  # [L, D]
        cross = keras.ops.matmul(z, keras.ops.transpose(landmarks))  # [B, L]
        z_norm = keras.ops.sum(keras.ops.square(z), axis=-1, keepdims=True)  # [B, 1]
        l_norm = keras.ops.sum(keras.ops.square(landmarks), axis=-1)  # [L]
        distance = keras.ops.maximum(z_norm - 2.0 * cross + l_norm, 0.0)  # [B, L]
        return keras.ops.exp(-self.gamma * distance)  # [B, L]

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        return {**config, "n_landmarks": self.n_landmarks, "gamma": self.gamma}


def build_rbf(spectral_shape: tuple[int, int, int], n_scalars: int, *, maps: Sequence[str],
              map_rows: Sequence[int], n_landmarks: int, gamma: float = 1.0, name: str = "rbf") -> keras.Model:
    """Pooled statistics -> standardised -> RBF similarity to ``n_landmarks`` landmarks -> one logit.

    Untrained, the logit is 0 (P = 0.5). ``train.fit_closed_form`` builds it with the landmark
    count and ``gamma`` it fitted, then sets the normalisation, the landmarks and the weights.
    """
    inputs, normalised = standardised_statistics(spectral_shape, n_scalars, maps, map_rows)  # [B, D]
    similarity = RBFKernel(n_landmarks, gamma, name=RBF_KERNEL)(normalised)  # [B, L]
    logit = keras.layers.Dense(1, kernel_initializer="zeros", dtype=LOGIT_DTYPE, name=LOGIT)(similarity)  # [B, 1]
    return keras.Model(inputs, logit, name=name)
