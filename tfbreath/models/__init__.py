"""Two-input breathing-phase classifiers: spectral maps + scalar vector -> one exhale logit.

Every model takes a dict ``{"spectral": [B, H, W, C], "scalars": [B, S]}`` (the keys of
``tfbreath.features.extract_features``; with ``S == 0`` there is no ``"scalars"`` input) and
returns ONE float32 logit ``[B, 1]`` (``P(exhale) = sigmoid(logit)``), also under a mixed
precision policy.

    model = build_model("cnn8", spectral_shape=(128, 63, 9), n_scalars=39)
    model = build_model_for_pipeline("vgg", PipelineConfig())

The scalar branch starts with a ``keras.layers.Normalization`` named ``"scalar_norm"``
(:data:`SCALAR_NORM`); before ``fit`` the trainer adapts it on the training scalars::

    model.get_layer(SCALAR_NORM).adapt(train_scalars)

Never adapted, it is the identity (mean 0, variance 1). It runs in float32 whatever the
global policy, so large raw scalars are not rounded to bfloat16 before being standardised.

The building blocks both CNNs share are in :mod:`tfbreath.models.blocks`. Two members are
fitted in closed form (``tfbreath.train.fit_closed_form``), not by gradient steps: ``"pooled"``
(:mod:`tfbreath.models.pooled`), a logistic regression on pooled statistics of the same inputs,
and ``"rbf"`` (:mod:`tfbreath.models.rbf`), one on those statistics' RBF similarities to
landmark clips.
"""

from __future__ import annotations

from typing import Callable

import keras

from tfbreath.config import CLOSED_FORM_MODELS, POOLED_MODEL, RBF_MODEL, SCALARS, SPECTRAL, TEMPORAL_MODEL
from tfbreath.maps import map_rows
from tfbreath.models.blocks import LOGIT, SCALAR_NORM
from tfbreath.models.cnn8 import build_cnn8
from tfbreath.models.pooled import build_pooled
from tfbreath.models.rbf import build_rbf
from tfbreath.models.temporal import build_temporal
from tfbreath.models.vgg import build_vgg

MODEL_BUILDERS: dict[str, Callable[..., keras.Model]] = {"cnn8": build_cnn8, "vgg": build_vgg,
                                                         TEMPORAL_MODEL: build_temporal,
                                                         POOLED_MODEL: build_pooled, RBF_MODEL: build_rbf}
"""Model name -> ``builder(spectral_shape, n_scalars, **kwargs) -> keras.Model``."""


def build_model(name: str, spectral_shape: tuple[int, int, int], n_scalars: int,
                **kwargs) -> keras.Model:
    """Build the named model for ``[H, W, C]`` maps and ``n_scalars`` scalars.

    ``kwargs`` go to the builder (e.g. ``width=0.125``, ``dropout=0.1``).
    """
    try:
        builder = MODEL_BUILDERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown model {name!r}; choose from {sorted(MODEL_BUILDERS)}") from None
    return builder(tuple(spectral_shape), n_scalars, **kwargs)


def build_model_for_pipeline(name: str, pipeline, **kwargs) -> keras.Model:
    """:func:`build_model` with the input sizes of a ``tfbreath.config.PipelineConfig`` (and, for
    the closed-form members, its maps' names and own band counts; for a gradient member named in
    ``[train] member_maps``, the channels of its maps)."""
    features = pipeline.features
    if name in CLOSED_FORM_MODELS:
        rows = map_rows(features)
        kwargs = {"maps": tuple(rows), "map_rows": tuple(rows.values()), **kwargs}
    elif name in pipeline.train.member_maps:
        kwargs = {"channels": [features.maps.index(m) for m in pipeline.train.member_maps[name]], **kwargs}
    return build_model(name, pipeline.spectral_shape, features.n_scalars, **kwargs)


__all__ = [
    "LOGIT", "MODEL_BUILDERS", "SCALARS", "SCALAR_NORM", "SPECTRAL",
    "build_cnn8", "build_model", "build_model_for_pipeline", "build_pooled", "build_rbf", "build_temporal",
    "build_vgg",
]
