"""``SelectMaps``: the channels of the stacked spectral maps that one model reads.

The pipeline extracts every map of ``[features] maps`` once; a member that reads only some of
them (``[train] member_maps``, or a tuning trial's ``[tune] map_sets``) starts with this layer,
so one feature set feeds every member and no map is computed twice::

    x = SelectMaps([0, 1, 3], name="select_maps")(spectral)  # [B, H, W, 9] -> [B, H, W, 3]

The channels come out in the order given, in the layer's compute dtype (Keras casts a float
input to it, as it does for the conv that follows).
"""

from __future__ import annotations

from typing import Sequence

import keras

SELECT_MAPS = "select_maps"
"""Name of the layer in a member's graph."""


@keras.saving.register_keras_serializable(package="tfbreath")
class SelectMaps(keras.layers.Layer):
    """``[B, H, W, C]`` -> ``[B, H, W, k]``: the ``k`` channels listed in ``channels``, in that order.

    Parameters
    ----------
    channels : sequence of int
        Indices into the last axis, each ``>= 0`` and below its size (checked when built); non-empty.
    """

    def __init__(self, channels: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.channels = [int(c) for c in channels]
        if not self.channels or min(self.channels) < 0:
            raise ValueError(f"channels must be a non-empty list of indices >= 0, got {list(channels)!r}")

    def build(self, input_shape):
        if max(self.channels) >= input_shape[-1]:
            raise ValueError(f"channels must index the {input_shape[-1]} map channels, got {self.channels!r}")
        super().build(input_shape)

    def call(self, spectral):
        return keras.ops.take(spectral, self.channels, axis=-1)  # [B, H, W, k]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], len(self.channels))

    def get_config(self):
        return {**super().get_config(), "channels": list(self.channels)}
