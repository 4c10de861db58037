"""RespireNet's image input (``[spectrogram] input = "image"``), in-graph: the authors' ``create_mel_raw``.

Their code takes the [0, 1] min-max scaled dB mel spectrogram (``spectrogram.scaled_image``, here
after blank-region clipping), then

1. quantises it to 256 grey levels, ``(x * 255).astype(uint8)`` (truncation),
2. colours it with ``cv2.applyColorMap(COLORMAP_MAGMA)``: one RGB colour per level,
3. resizes it ``image_scale`` times with ``cv2.INTER_LINEAR`` (bilinear, half-pixel centres),
4. flips it vertically (low frequencies at the bottom: ``scaled_image`` is already flipped, and
   flipping commutes with steps 1-3),

and its data loader divides by 255 (``ToTensor``) and normalises each channel by the training
set's mean and std. :func:`render` does steps 1-3 in float32 ``[..., H, W] -> [..., sH, sW, 3]``
in [0, 1]; the normalisation is a ``keras.layers.Normalization`` at the model's input
(``resnet.build_respirenet(..., channel_statistics=...)``) with the statistics of
:func:`channel_statistics`, so it is saved with the model.

cv2 works in uint8: its colour table is matplotlib's magma rounded to 8 bits and the resized
image is rounded again (half a level each); this float32 rendering differs from it by at most
one level (1/255).
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import matplotlib
import numpy as np
import tensorflow as tf

if TYPE_CHECKING:
    from tfbreath.icbhi.config import IcbhiConfig
    from tfbreath.icbhi.dataset import CycleSet

INPUT = "image"
"""The ``[spectrogram] input`` value that selects this rendering."""
COLOUR_MAP = "magma"
"""matplotlib's name of the colour map (``cv2.COLORMAP_MAGMA`` is its table rounded to 8 bits)."""
LEVELS = 256
"""Grey levels of the quantised spectrogram (uint8), one colour each."""
CHANNELS = 3
"""RGB."""


@functools.lru_cache(maxsize=None)
def magma_table() -> np.ndarray:
    """matplotlib's magma colour of each grey level, built once. ``[LEVELS, 3]`` float32 RGB in [0, 1]

    cv2's ``applyColorMap`` returns BGR (the authors' tensors were BGR); this keeps RGB, the
    channel order ImageNet weights expect.
    """
    colours = matplotlib.colormaps[COLOUR_MAP].resampled(LEVELS)(np.arange(LEVELS))  # [LEVELS, 4] RGBA
    return colours[:, :CHANNELS].astype(np.float32)


def colour_map(grey: tf.Tensor) -> tf.Tensor:
    """Magma colours of a [0, 1] grey image, quantised as ``uint8(grey * 255)``. ``[..., H, W] -> [..., H, W, 3]``"""
    with tf.name_scope("colour_map"):
        scaled = tf.convert_to_tensor(grey, tf.float32) * float(LEVELS - 1)  # [..., H, W] in [0, 255]
        levels = tf.clip_by_value(tf.cast(scaled, tf.int32), 0, LEVELS - 1)  # [..., H, W] truncated, as astype(uint8)
        return tf.gather(tf.constant(magma_table()), levels)  # [..., H, W, 3]


def upscale(image: tf.Tensor, scale: int) -> tf.Tensor:
    """Bilinear resize by an integer factor, as ``cv2.resize(INTER_LINEAR)`` upscales (half-pixel
    centres, edge rows and columns repeated outside). ``[..., H, W, C] -> [..., scale H, scale W, C]``"""
    with tf.name_scope("upscale"):
        image = tf.convert_to_tensor(image, tf.float32)
        height, width, channels = image.shape[-3:]
        size = [height * scale, width * scale, channels]
        flat = tf.reshape(image, [-1, height, width, channels])  # [B, H, W, C]
        resized = tf.image.resize(flat, size[:2], method="bilinear", antialias=False)  # [B, sH, sW, C]
        out = tf.reshape(resized, tf.concat([tf.shape(image)[:-3], size], 0))  # [..., sH, sW, C]
        out.set_shape(image.shape[:-3].concatenate(size))
        return out


def render(grey: tf.Tensor, scale: int) -> tf.Tensor:
    """The authors' image of a [0, 1] grey spectrogram (row 0 = highest band), before normalisation.
    ``[..., H, W] -> [..., scale H, scale W, 3]`` float32 RGB in [0, 1]"""
    with tf.name_scope("render"):
        return upscale(colour_map(grey), scale)  # [..., sH, sW, 3]


def channel_statistics(cycles: CycleSet, config: IcbhiConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(mean [3], std [3])`` of each channel over every pixel of the cycles' rendered images.

    The cycles are rendered unaugmented, in order (``cycles.dataset(training=False)``), and only
    each image's channel mean and variance about it are kept (no image set is held); they are
    combined across images in float64 by the law of total variance (every image has as many
    pixels). The std is the population one (``np.std``). Deterministic for given cycles and config.
    """
    def moments(images: tf.Tensor, one_hot: tf.Tensor) -> tf.Tensor:
        mean = tf.reduce_mean(images, axis=[1, 2])  # [B, 3]
        spread = tf.reduce_mean(tf.square(images - mean[:, tf.newaxis, tf.newaxis]), axis=[1, 2])  # [B, 3]
        return tf.stack([mean, tf.square(mean), spread], axis=1)  # [B, 3 moments, 3 channels]

    totals = np.zeros((3, CHANNELS))  # sums over images of: mean, mean^2, variance about the mean
    images = cycles.dataset(config, config.train.batch_size, training=False).map(moments)
    for batch in images.as_numpy_iterator():
        totals += batch.astype(np.float64).sum(axis=0)  # [3, 3]
    image_mean, image_square, spread = totals / len(cycles)
    variance = spread + np.maximum(image_square - image_mean ** 2, 0.0)  # within + between images
    return image_mean.astype(np.float32), np.sqrt(variance).astype(np.float32)
