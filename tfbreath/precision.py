"""Precision policies: which one a run trains under, and float32 copies for inference and export.

Training picks its Keras dtype policy with :func:`choose_precision`: ``auto`` means
``mixed_float16`` on a GPU, ``mixed_bfloat16`` on a CPU with native bfloat16 matrix math
(``avx512_bf16`` or ``amx_bf16`` in ``/proc/cpuinfo``), else ``float32``. The environment
variable ``TFBREATH_PRECISION`` (:data:`PRECISION_ENV`) overrides what ``auto`` resolves to, so
the behaviour of another kind of CPU can be had on this one (``TFBREATH_PRECISION=mixed_bfloat16
python -m pytest`` runs the suite as a bf16 CPU would; bf16 is emulated, slowly, elsewhere).

A model saved under a mixed policy keeps that policy in its layers' configs. Export and predict
therefore never run it as loaded: :func:`float32_copy` rebuilds it with every layer float32 and
the trained weights (stored in float32 under every mixed policy), so the same ``.keras`` file
gives the same float32 graph on any CPU, and TFLite conversion sees no bfloat16 or float16 op.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

import keras
import tensorflow as tf

from tfbreath.config import PRECISIONS, ConfigError

AUTO = "auto"
FLOAT32 = "float32"
POLICIES = tuple(p for p in PRECISIONS if p != AUTO)
"""Keras policy names a precision resolves to."""

PRECISION_ENV = "TFBREATH_PRECISION"
"""Environment variable that, when set, is what ``auto`` resolves to (one of the policies)."""

CPU_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
"""/proc/cpuinfo flags of CPUs with native bfloat16 matrix math."""


def cpu_supports_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    try:
        flags = set(cpuinfo.read_text().split())
    except OSError:
        return False
    return any(flag in flags for flag in CPU_BF16_FLAGS)


def choose_precision(requested: str) -> str:
    """The Keras policy name for ``requested``: itself, or what ``auto`` means on this machine."""
    if requested != AUTO:
        return requested
    forced = os.environ.get(PRECISION_ENV)
    if forced:
        if forced not in POLICIES:
            raise ConfigError(f"${PRECISION_ENV} must be one of {list(POLICIES)}, got {forced!r}")
        return forced
    if tf.config.list_physical_devices("GPU"):
        return "mixed_float16"
    return "mixed_bfloat16" if cpu_supports_bf16() else FLOAT32


@contextlib.contextmanager
def global_policy(name: str) -> Iterator[str]:
    """Keras' global dtype policy set to ``name`` inside the block, restored after it."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield name
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of ``model``, nested models' layers included."""
    return list(model._flatten_layers(include_self=False, recursive=True))


def is_float32(model: keras.Model) -> bool:
    """Whether every layer of ``model`` (nested ones included) computes in float32."""
    return all(layer.dtype_policy.name == FLOAT32 for layer in _layers(model))


def policy_of(model: keras.Model) -> str:
    """The dtype policy most of ``model``'s layers with weights use: what it was trained under."""
    names = [layer.dtype_policy.name for layer in _layers(model) if layer.weights]
    return max(set(names), key=names.count) if names else FLOAT32


def float32_copy(model: keras.Model) -> keras.Model:
    """``model`` with every layer (nested models' too) computing in float32 and the same weights.

    Returns ``model`` itself when it is float32 already. The copy's layers are rebuilt from
    their configs with ``dtype="float32"``; the weights are copied in layer order, and layers
    that cache a view of their weights (``Normalization``'s mean and variance) refresh it.
    """
    if is_float32(model):
        return model

    def rebuild(layer: keras.layers.Layer) -> keras.layers.Layer:
        return layer.__class__.from_config({**layer.get_config(), "dtype": FLOAT32})

    with global_policy(FLOAT32):  # the copy's inputs and any layer built without a config dtype
        copy = keras.models.clone_model(model, clone_function=rebuild, recursive=True)
    copy.set_weights(model.get_weights())
    for layer in _layers(copy):
        if hasattr(layer, "finalize_state"):
            layer.finalize_state()
    return copy
