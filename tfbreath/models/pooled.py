"""A linear ensemble member: logistic regression on pooled statistics of the maps and the scalars.

The CNNs read the maps cell by cell; this member reads a few hundred summaries of them. Each
map's own bands (``maps.map_rows``) are averaged into at most ``MAX_GROUPS`` contiguous groups,
and each group's series over the frames gives its mean, its standard deviation and its linear
and quadratic Legendre coefficients (slope and curvature over the clip); the modulation map,
a 2-D DCT with no time axis, gives its low-order ``MODULATION_BLOCK`` x ``MODULATION_BLOCK``
block as it is. The scalars follow unchanged. On the breath clips such statistics score as
well as either CNN out of fold and, averaged with them, add 1.6 points to the ensemble
(``benchmarks/classical_cv.py``), because they err on different clips.

    model = build_pooled((128, 63, 9), 39, maps=MAP_NAMES, map_rows=(128, 128, ...))
    train.fit_closed_form("pooled", ...)  # closed form (scikit-learn), not gradient steps

Inputs and output are those of every member (``tfbreath.models``): ``{"spectral", "scalars"}``
-> one float32 logit ``[B, 1]``. Everything runs in float32 under any dtype policy.
"""

from __future__ import annotations

import math
from typing import Sequence

import keras
import numpy as np

from tfbreath.config import SCALARS, SPECTRAL
from tfbreath.models.blocks import LOGIT, LOGIT_DTYPE

MAX_GROUPS = 32
"""Band groups per map at most: contiguous bands averaged together."""

MODULATION_BLOCK = 8
"""Low-order quefrency x modulation-frequency block kept of the modulation map."""

UNPOOLED_MAPS = frozenset({"modulation"})
"""Maps whose columns are not frames (kept as a block, not pooled over time)."""

STATISTICS = ("mean", "std", "slope", "curve")
"""What each band group's series over the frames gives, in this order."""

POOLED_STATS = "pooled_statistics"
"""Name of the ``PooledStatistics`` layer."""
POOLED_NORM = "pooled_norm"
"""Name of the ``Normalization`` of the statistics, adapted by ``train.fit_closed_form``."""


def band_groups(rows: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each group of contiguous bands, at most ``MAX_GROUPS`` of them."""
    size = math.ceil(rows / MAX_GROUPS)
    return [(start, min(start + size, rows)) for start in range(0, rows, size)]


def group_average(rows: int, n_bands: int) -> np.ndarray:
    """Averages the bands of each group. ``[G, n_bands]``"""
    groups = band_groups(rows)
    matrix = np.zeros((len(groups), n_bands), np.float32)
    for g, (start, stop) in enumerate(groups):
        matrix[g, start:stop] = 1.0 / (stop - start)
    return matrix


def legendre_basis(n_frames: int) -> np.ndarray:
    """Unit-norm P1 and P2 (mean removed) over t in [-1, 1] sampled at the frames. ``[2, T]``"""
    t = np.linspace(-1.0, 1.0, n_frames)
    p1, p2 = t, 1.5 * t ** 2 - 0.5
    p2 = p2 - p2.mean()
    return np.stack([p1 / np.linalg.norm(p1), p2 / np.linalg.norm(p2)]).astype(np.float32)


def statistic_names(maps: Sequence[str], map_rows: Sequence[int], scalar_names: Sequence[str]) -> list[str]:
    """One name per output column of ``PooledStatistics``, e.g. ``mel_b0-4_slope``."""
    names = []
    for name, rows in zip(maps, map_rows):
        if name in UNPOOLED_MAPS:
            names += [f"{name}_q{q}_m{m}" for q in range(MODULATION_BLOCK) for m in range(MODULATION_BLOCK)]
        else:
            names += [f"{name}_b{start}-{stop}_{stat}" for start, stop in band_groups(rows) for stat in STATISTICS]
    return names + list(scalar_names)


def gradient_safe_sqrt(x):
    """sqrt(x) for x >= 0, with gradient 0 instead of NaN at x = 0 (same values).

    A band constant over the clip (a mel band above the band limit) has variance 0; the plain
    square root's derivative there is inf, which backpropagates as inf * 0 = NaN into every cell
    of the map (through the group average's zero weights), so no gradient of the map survives
    (``tfbreath.explain``). 0 is a subgradient of the standard deviation at a constant series.
    """
    positive = x > 0
    return keras.ops.where(positive, keras.ops.sqrt(keras.ops.where(positive, x, keras.ops.ones_like(x))),
                           keras.ops.zeros_like(x))


@keras.saving.register_keras_serializable(package="tfbreath")
class PooledStatistics(keras.layers.Layer):
    """``{"spectral": [B, M, T, C], "scalars": [B, S]}`` -> ``[B, D]`` pooled statistics, float32.

    ``maps`` names the C channels in order, ``map_rows`` how many of each channel's M rows are
    the map's own bands (``maps.map_rows``); padding rows are never read.
    """

    def __init__(self, maps: Sequence[str], map_rows: Sequence[int], **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        if len(maps) != len(map_rows):
            raise ValueError(f"need one row count per map: {len(maps)} maps, {len(map_rows)} row counts")
        self.maps = [str(m) for m in maps]
        self.map_rows = [int(r) for r in map_rows]
        short = [(m, r) for m, r in zip(self.maps, self.map_rows) if m in UNPOOLED_MAPS and r < MODULATION_BLOCK]
        if short:
            raise ValueError(f"the pooled statistics read the first {MODULATION_BLOCK} rows of {short[0][0]}, "
                             f"which has {short[0][1]}")

    def _pool_map(self, x, channel: int):
        """One map's statistics. ``[B, M, T]`` -> ``[B, D_c]``"""
        name, rows = self.maps[channel], self.map_rows[channel]
        if name in UNPOOLED_MAPS:
            block = x[:, :MODULATION_BLOCK, :MODULATION_BLOCK]  # [B, 8, 8]
            return keras.ops.reshape(block, (-1, MODULATION_BLOCK * MODULATION_BLOCK))  # [B, 64]
        average = group_average(rows, x.shape[1])  # [G, M]
        grouped = keras.ops.einsum("gm,bmt->bgt", average, x)  # [B, G, T]
        mean = keras.ops.mean(grouped, axis=-1, keepdims=True)  # [B, G, 1]
        variance = keras.ops.mean(keras.ops.square(grouped - mean), axis=-1, keepdims=True)  # [B, G, 1]
        std = gradient_safe_sqrt(variance)  # [B, G, 1]
        trend = keras.ops.einsum("bgt,kt->bgk", grouped, legendre_basis(x.shape[2]))  # [B, G, 2]
        stats = keras.ops.concatenate([mean, std, trend], axis=-1)  # [B, G, 4]
        return keras.ops.reshape(stats, (-1, average.shape[0] * len(STATISTICS)))  # [B, 4 G]

    def call(self, inputs):
        spectral = keras.ops.cast(inputs[SPECTRAL], "float32")  # [B, M, T, C]
        pieces = [self._pool_map(spectral[..., c], c) for c in range(len(self.maps))]  # C x [B, D_c]
        if SCALARS in inputs:
            pieces.append(keras.ops.cast(inputs[SCALARS], "float32"))  # [B, S]
        return keras.ops.concatenate(pieces, axis=-1)  # [B, D]

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        return {**config, "maps": self.maps, "map_rows": self.map_rows}


def standardised_statistics(spectral_shape: tuple[int, int, int], n_scalars: int, maps: Sequence[str],
                            map_rows: Sequence[int]) -> tuple[dict, keras.KerasTensor]:
    """The closed-form members' shared front: the member's inputs and their pooled statistics
    standardised by ``POOLED_NORM`` (the identity until fitted). ``-> (inputs, [B, D])``"""
    if len(maps) != spectral_shape[-1]:
        raise ValueError(f"need one name per map channel: {spectral_shape[-1]} channels, {len(maps)} names")
    inputs = {SPECTRAL: keras.Input(shape=spectral_shape, name=SPECTRAL)}
    if n_scalars:
        inputs[SCALARS] = keras.Input(shape=(n_scalars,), name=SCALARS)
    stats = PooledStatistics(maps, map_rows, name=POOLED_STATS)(inputs)  # [B, D]
    return inputs, keras.layers.Normalization(axis=-1, dtype="float32", name=POOLED_NORM)(stats)  # [B, D]


def build_pooled(spectral_shape: tuple[int, int, int], n_scalars: int, *, maps: Sequence[str],
                 map_rows: Sequence[int], name: str = "pooled") -> keras.Model:
    """Pooled statistics -> standardised (``POOLED_NORM``, adapted when fitted) -> one logit.

    Untrained, the logit is 0 (P = 0.5) and the normalisation the identity.
    """
    inputs, normalised = standardised_statistics(spectral_shape, n_scalars, maps, map_rows)  # [B, D]
    logit = keras.layers.Dense(1, kernel_initializer="zeros", dtype=LOGIT_DTYPE, name=LOGIT)(normalised)  # [B, 1]
    return keras.Model(inputs, logit, name=name)
