"""VGG-inspired classifier of the breathing-phase paper (8,146,177 trainable parameters).

Twelve bias-free 3x3 convs (each followed by BatchNorm and GELU) in four blocks of three, with a
residual 1x1 projection from block 3 into block 4. Shapes for the defaults (9 maps, 39 scalars)::

    spectral [B, 128, 63, 9]
      block 1   conv  64 x3, one with stride 2, spatial dropout (dropout / 2)   [B, 64, 32,  64]
      block 2   conv 128 x3, max-pool 2 ("same"), spatial dropout              [B, 32, 16, 128]
      block 3   conv 256 x3, max-pool 2 ("same"), spatial dropout              [B, 16,  8, 256]
      block 4   conv 512 x3, spatial dropout                                   [B, 16,  8, 512]
                + 1x1 conv 256->512 (bias-free) + BatchNorm of block 3's output
      global average pool                                                      [B, 512]
    scalars [B, 39] -> scalar_norm -> dense 64 (dropout) -> dense 64           [B, 64]
    concat [B, 576] -> dense 256 (dropout) -> dense 128 (dropout) -> dense 1   [B, 1] float32

Hidden dense layers are bias-free, then BatchNorm, then GELU. Dropout is 0.2.

Details taken from the authors' public PyTorch code (``dohyeoplim/breathing-phase-classifier``,
class ``VGG``). They do not change the parameter count, but they differ from a plain reading of
"the first block's first conv has stride 2":

- the stride-2 conv is the *third* conv of block 1 (``downsample_conv=2``, 0-based). The first
  two 64-filter convs therefore run at full resolution. ``downsample_conv=0`` strides the first
  conv instead, which is about 4x cheaper in block 1 and has the same parameters;
- max-pools round up (PyTorch ``ceil_mode=True``, i.e. Keras ``padding="same"``);
- the scalar branch uses GELU like the rest of this model (the CNN8 uses ReLU).
"""

from __future__ import annotations

from typing import Sequence

import keras

from tfbreath.models.blocks import (CONV_INITIALIZER, batch_norm, conv_unit, dense_stack,
                             fuse_and_classify, model_inputs, scaled)

ACTIVATION = "gelu"
DROPOUT = 0.2
BLOCKS: tuple[tuple[int, ...], ...] = ((64,) * 3, (128,) * 3, (256,) * 3, (512,) * 3)
"""Filters of each conv layer, grouped in the four blocks."""
DOWNSAMPLE_CONV = 2
"""Index, within block 1, of the conv with stride 2 (as in the authors' code)."""
DOWNSAMPLE_STRIDE = 2
POOL_SIZE = 2
FIRST_BLOCK_DROPOUT_SCALE = 0.5
SCALAR_UNITS = (64, 64)
HEAD_UNITS = (256, 128)


def build_vgg(spectral_shape: tuple[int, int, int], n_scalars: int, *, width: float = 1.0,
              dropout: float = DROPOUT, downsample_conv: int = DOWNSAMPLE_CONV,
              blocks: Sequence[Sequence[int]] = BLOCKS, channels: Sequence[int] | None = None,
              name: str = "vgg") -> keras.Model:
    """The VGG-inspired functional model for ``[H, W, C]`` maps and ``n_scalars`` scalars.

    ``width`` scales every conv's filters (``width=0.0625`` builds a tiny test model); the
    scalar MLP and the head keep their sizes. ``downsample_conv`` picks which conv of block 1
    has stride 2. The residual projection runs from the second-to-last block into the last.
    ``channels``: read only these map channels (``SelectMaps``); default all ``C``.
    """
    if len(blocks) < 2:
        raise ValueError(f"blocks needs at least two blocks for the residual, got {blocks!r}")
    if not 0 <= downsample_conv < len(blocks[0]):
        raise ValueError(f"downsample_conv must index a conv of block 1 "
                         f"(0..{len(blocks[0]) - 1}), got {downsample_conv!r}")
    inputs, x, scalars = model_inputs(spectral_shape, n_scalars, channels)
    last = len(blocks) - 1
    for b, filters in enumerate(blocks):
        block_input = x  # after the loop: the last block's input = the previous block's output
        for c, f in enumerate(filters):
            strides = DOWNSAMPLE_STRIDE if (b == 0 and c == downsample_conv) else 1
            x = conv_unit(x, scaled(f, width), ACTIVATION, norm_first=True, strides=strides,
                          name=f"block{b + 1}_{c + 1}")  # [B, h/strides, w/strides, f]
        if 0 < b < last:  # block 1 downsamples by stride, the last is pooled globally
            # "same" rounds up like ceil_mode: [B, h, w, f] -> [B, ceil(h/2), ceil(w/2), f]
            x = keras.layers.MaxPooling2D(POOL_SIZE, padding="same", name=f"block{b + 1}_pool")(x)
        rate = dropout * FIRST_BLOCK_DROPOUT_SCALE if b == 0 else dropout
        if rate > 0:
            x = keras.layers.SpatialDropout2D(rate, name=f"block{b + 1}_dropout")(x)
    # Residual: block 3's output, projected to block 4's width, added to block 4's output.
    shortcut = keras.layers.Conv2D(scaled(blocks[last][-1], width), 1, use_bias=False,
                                   kernel_initializer=CONV_INITIALIZER,
                                   name=f"block{last + 1}_residual_conv")(block_input)
    shortcut = batch_norm(f"block{last + 1}_residual_bn")(shortcut)  # [B, h, w, 512]
    x = keras.layers.Add(name=f"block{last + 1}_add")([x, shortcut])  # [B, h, w, 512]
    image = keras.layers.GlobalAveragePooling2D(name="global_pool")(x)  # [B, 512]
    if scalars is not None:
        scalars = dense_stack(scalars, SCALAR_UNITS, (dropout, 0.0), ACTIVATION,
                              norm_first=True, name="scalar")  # [B, 64]
    logit = fuse_and_classify(image, scalars, HEAD_UNITS, (dropout, dropout), ACTIVATION,
                              norm_first=True)  # [B, 1]
    return keras.Model(inputs=inputs, outputs=logit, name=name)
