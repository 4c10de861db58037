"""Building blocks shared by the CNN8 and VGG models: inputs, conv/dense units, fusion, logit."""

from __future__ import annotations

from typing import Sequence

import keras

from tfbreath.config import SCALARS, SPECTRAL
from tfbreath.models.select_maps import SELECT_MAPS, SelectMaps

SCALAR_NORM = "scalar_norm"
"""Name of the scalar branch's ``Normalization`` layer, adapted by the trainer."""
LOGIT = "logit"
"""Name of the output layer (one float32 logit)."""

# PyTorch BatchNorm defaults (the paper's models were trained in PyTorch):
# running = 0.9 * running + 0.1 * batch, eps 1e-5.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5
CONV_KERNEL = 3
CONV_INITIALIZER = "he_normal"  # Kaiming normal, as in the authors' code
LOGIT_DTYPE = "float32"
MIN_FILTERS = 1


def scaled(units: int, width: float) -> int:
    """``units * width`` rounded, at least 1: how a ``width`` multiplier thins a layer."""
    if width <= 0:
        raise ValueError(f"width must be > 0, got {width!r}")
    return max(MIN_FILTERS, int(round(units * width)))


def batch_norm(name: str) -> keras.layers.BatchNormalization:
    """BatchNorm with the PyTorch momentum/epsilon of the reference models."""
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def conv_unit(x, filters: int, activation: str, *, norm_first: bool, name: str,
              strides: int = 1, kernel_size: int = CONV_KERNEL):
    """One conv layer with BN and activation, ``"same"`` padding. ``[B,H,W,*] -> [B,H/s,W/s,F]``

    ``norm_first=True``: bias-free conv -> BN -> activation (VGG).
    ``norm_first=False``: conv with bias -> activation -> BN (CNN8, as in the authors' code).
    """
    x = keras.layers.Conv2D(filters, kernel_size, strides=strides, padding="same",
                            use_bias=not norm_first, kernel_initializer=CONV_INITIALIZER,
                            name=f"{name}_conv")(x)
    if norm_first:
        x = batch_norm(f"{name}_bn")(x)
        return keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
    x = keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
    return batch_norm(f"{name}_bn")(x)


def dense_unit(x, units: int, activation: str, *, norm_first: bool, name: str):
    """Dense + BN + activation, ordered like :func:`conv_unit`. ``[B, *] -> [B, units]``"""
    x = keras.layers.Dense(units, use_bias=not norm_first, name=f"{name}_dense")(x)
    if norm_first:
        x = batch_norm(f"{name}_bn")(x)
        return keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
    x = keras.layers.Activation(activation, name=f"{name}_{activation}")(x)
    return batch_norm(f"{name}_bn")(x)


def dense_stack(x, units: Sequence[int], dropouts: Sequence[float], activation: str, *,
                norm_first: bool, name: str):
    """``dense_unit`` per entry of ``units``, each followed by its dropout (0 = none)."""
    for i, (n, rate) in enumerate(zip(units, dropouts, strict=True), start=1):
        x = dense_unit(x, n, activation, norm_first=norm_first, name=f"{name}{i}")
        if rate > 0:
            x = keras.layers.Dropout(rate, name=f"{name}{i}_dropout")(x)
    return x


def model_inputs(spectral_shape: tuple[int, int, int], n_scalars: int, channels: Sequence[int] | None = None):
    """Keras inputs, the maps the model reads and the standardised scalars.

    Returns ``(inputs, spectral, scalars)``: ``inputs`` is the dict for ``keras.Model``,
    ``spectral`` the ``[B, H, W, C]`` input tensor, or with ``channels`` its ``[B, H, W, k]``
    selection (``SelectMaps``), and ``scalars`` the ``[B, S]`` output of the float32
    ``"scalar_norm"`` layer, or ``None`` when ``n_scalars == 0``.
    """
    if len(spectral_shape) != 3 or min(spectral_shape) <= 0:
        raise ValueError(
            f"spectral_shape must be (H, W, C) with positive sizes, got {spectral_shape!r}")
    if n_scalars < 0:
        raise ValueError(f"n_scalars must be >= 0, got {n_scalars!r}")
    spectral = keras.Input(shape=tuple(spectral_shape), dtype="float32", name=SPECTRAL)
    inputs = {SPECTRAL: spectral}
    if channels is not None:
        spectral = SelectMaps(channels, name=SELECT_MAPS)(spectral)  # [B, H, W, k]
    if n_scalars == 0:
        return inputs, spectral, None
    raw = keras.Input(shape=(n_scalars,), dtype="float32", name=SCALARS)
    inputs[SCALARS] = raw
    # Un-adapted, the layer's mean/variance weights start at 0 / 1 (identity).
    norm = keras.layers.Normalization(axis=-1, dtype="float32", name=SCALAR_NORM)
    return inputs, spectral, norm(raw)  # [B, S]


def fuse_and_classify(image, scalars, head_units: Sequence[int], head_dropouts: Sequence[float],
                      activation: str, *, norm_first: bool):
    """``concat(image [B, F], scalars [B, 64] or None)`` -> head MLP -> float32 logit ``[B, 1]``."""
    x = image if scalars is None else keras.layers.Concatenate(name="fusion")([image, scalars])
    x = dense_stack(x, head_units, head_dropouts, activation, norm_first=norm_first, name="head")
    return keras.layers.Dense(1, dtype=LOGIT_DTYPE, name=LOGIT)(x)  # [B, 1] float32
