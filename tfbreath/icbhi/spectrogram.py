"""In-graph mel spectrogram of padded cycles, with RespireNet's blank-region clipping.

``cycle_spectrogram(waveforms, config)``: ``[..., samples] -> [..., H, W, 1]`` float32 in [0, 1]
with ``H = n_mels`` rows and ``W = 1 + samples // hop_length`` frames (64 x 219 for 7 s at
4 kHz). As RespireNet's public code draws it (``create_mel_raw``):

1. Mel power spectrogram (periodic Hann, centred zero-padded frames, Slaney mel filterbank from
   ``librosa.filters.mel`` with ``fmin``/``fmax``, built once) -> dB relative to the
   spectrogram's own peak, floored ``top_db`` below it: ``librosa.power_to_db(S, ref=np.max)``.
2. Min-max scaled to [0, 1] per spectrogram, and laid out as an image: row 0 is the HIGHEST mel
   band (the code flips the spectrogram upside down), columns are frames.
3. Blank-region clipping (paper, section II-A; ``config.spectrogram.clip_blank``): a pixel is
   blank when below ``blank_level`` (10/255), a row is blank when at least
   ``blank_row_fraction`` (80 %) of its pixels are. The blank rows AT THE TOP - rows 0..k-1,
   where row k is the first (highest-frequency) row that is not blank - are dropped, and the
   remaining rows k..H-1 are stretched back to H rows by linear interpolation between rows
   (the code uses ``cv2.resize``), so every spectrogram keeps one
   shape. Blank rows below the first non-blank one are kept; a spectrogram without a blank
   top row, or with every row blank (silence), is left as it is. Unlike the public code, which
   also drops the first non-blank row (``[(row+1)*3:]``), only blank rows are dropped, as the
   paper says ("no useful information gets pruned").

With ``[spectrogram] input = "image"`` the clipped [0, 1] image is then rendered as the authors'
code draws its model input (``tfbreath.icbhi.image``: 256 grey levels, magma colour map, bilinear
resize by ``image_scale``): ``[..., samples] -> [..., H s, W s, 3]`` float32 RGB in [0, 1], not
yet normalised (the model's first layer does that, with the training set's channel statistics).
"""

from __future__ import annotations

import tensorflow as tf

from tfbreath import spectral
from tfbreath.filters import mel_filterbank
from tfbreath.icbhi import image as rendering
from tfbreath.icbhi.config import IcbhiConfig, SpectrogramConfig


def num_frames(config: IcbhiConfig) -> int:
    """Frames of one padded cycle (centred STFT)."""
    return 1 + config.audio.num_samples // config.spectrogram.hop_length


def spectrogram_shape(config: IcbhiConfig) -> tuple[int, int, int]:
    """``(H, W, 1)`` of every cycle's spectrogram, or ``(H s, W s, 3)`` of its image with ``input = "image"``
    (``s = image_scale``); blank-region clipping keeps the shape."""
    spec = config.spectrogram
    if spec.input == rendering.INPUT:
        return spec.n_mels * spec.image_scale, num_frames(config) * spec.image_scale, rendering.CHANNELS
    return spec.n_mels, num_frames(config), 1


def mel_db(waveforms: tf.Tensor, config: IcbhiConfig) -> tf.Tensor:
    """``librosa.power_to_db(melspectrogram(...), ref=np.max)``, time-major. ``[..., n] -> [..., T, n_mels]``"""
    spec = config.spectrogram
    with tf.name_scope("mel_db"):
        power = spectral.stft_power(waveforms, spec.n_fft, spec.hop_length)  # [..., T, F]
        bank = mel_filterbank(config.audio.sample_rate, spec.n_fft, spec.n_mels, spec.fmax, fmin=spec.fmin)
        mel = spectral.apply_filterbank(power, bank)  # [..., T, n_mels]
        return spectral.power_to_db(mel, ref_max=True, top_db=spec.top_db)  # [..., T, n_mels]


def scaled_image(waveforms: tf.Tensor, config: IcbhiConfig) -> tf.Tensor:
    """Min-max scaled dB mel image, highest band in row 0. ``[..., n] -> [..., n_mels, T]`` in [0, 1]"""
    with tf.name_scope("scaled_image"):
        db = mel_db(waveforms, config)  # [..., T, M]
        low = tf.reduce_min(db, axis=[-2, -1], keepdims=True)  # [..., 1, 1]
        high = tf.reduce_max(db, axis=[-2, -1], keepdims=True)  # [..., 1, 1]
        scaled = tf.math.divide_no_nan(db - low, high - low)  # [..., T, M]
        return tf.reverse(tf.linalg.matrix_transpose(scaled), [-2])  # [..., M, T], row 0 = top band


def blank_rows(image: tf.Tensor, spec: SpectrogramConfig) -> tf.Tensor:
    """How many rows at the top of each image are blank (see the module docstring). ``[..., H, W] -> [...]``

    All-blank images count 0: there is nothing to keep, so nothing is clipped.
    """
    with tf.name_scope("blank_rows"):
        blank_share = tf.reduce_mean(tf.cast(image < spec.blank_level, tf.float32), axis=-1)  # [..., H]
        blank = tf.cast(blank_share >= spec.blank_row_fraction, tf.int32)  # [..., H]
        leading = tf.reduce_sum(tf.math.cumprod(blank, axis=-1), axis=-1)  # [...]
        return tf.where(tf.equal(leading, tf.shape(image)[-2]), 0, leading)


def clip_blank_rows(image: tf.Tensor, spec: SpectrogramConfig) -> tf.Tensor:
    """Drop each image's blank top rows and stretch the rest back to H rows. ``[B, H, W] -> [B, H, W]``

    Output row i is read at row ``k + i (H - 1 - k) / (H - 1)`` of the input (k = blank rows),
    interpolating linearly between the two nearest rows: row 0 is row k, the last row stays last.
    """
    with tf.name_scope("clip_blank_rows"):
        height = image.shape[-2]
        first_kept = tf.cast(blank_rows(image, spec), tf.float32)[:, None]  # [B, 1]
        steps = tf.range(height, dtype=tf.float32)[None, :] / max(height - 1, 1)  # [1, H]
        position = first_kept + steps * (height - 1 - first_kept)  # [B, H] source row of each output row
        below = tf.floor(position)
        weight = (position - below)[..., tf.newaxis]  # [B, H, 1]
        lower = tf.cast(below, tf.int32)  # [B, H]
        upper = tf.minimum(lower + 1, height - 1)  # [B, H]
        return ((1.0 - weight) * tf.gather(image, lower, batch_dims=1)
                + weight * tf.gather(image, upper, batch_dims=1))  # [B, H, W]


@tf.autograph.experimental.do_not_convert
def cycle_spectrogram(waveforms: tf.Tensor, config: IcbhiConfig) -> tf.Tensor:
    """Model input of padded cycles, in-graph, batched or not: ``[..., samples] -> [..., H, W, 1]``, or
    with ``input = "image"`` the rendered image ``[..., H s, W s, 3]`` (see ``spectrogram_shape``)."""
    spec = config.spectrogram
    with tf.name_scope("cycle_spectrogram"):
        flat, restore = spectral.flatten_batch(waveforms)  # [B, n]
        image = scaled_image(flat, config)  # [B, H, W]
        if spec.clip_blank:
            image = clip_blank_rows(image, spec)  # [B, H, W]
        if spec.input == rendering.INPUT:
            return restore(rendering.render(image, spec.image_scale))  # [..., H s, W s, 3]
        return restore(image[..., tf.newaxis])  # [..., H, W, 1]
