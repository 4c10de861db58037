"""RespireNet's training augmentations, in-graph on batches of padded cycles, and its balanced sampler.

Batches are ``waveforms [B, L]`` (padded cycles, see ``tfbreath.icbhi.padding``) with
``labels [B]`` and, per cycle, where its own audio sits in its padded waveform
(``offsets [B]``, ``lengths [B]``). ``CycleAugmenter`` applies, each with its own switch and
per-cycle probability (``tfbreath.icbhi.config.AugmentConfig``), in this order:

1. ``concat_same_class`` (paper, Fig. 2): "we generate a new sample of a class by randomly
   sampling two samples of the same class and concatenating them". The partner of cycle i is a
   random OTHER cycle of the same label in the batch (with the class-balanced sampler a batch of
   64 holds ~16 per class; the sampler draws with replacement, so rows of the same annotated
   cycle, told by ``cycle_ids``, are not partners: a rare class would be joined to itself about
   a third of the time); the result is cycle i's own audio, then the partner's, repeated to
   length L. A cycle with no same-class partner in its batch is left as it is. This replaces
   the cycle in the batch rather than growing the data set offline as the public code does, so
   an epoch keeps its length and every epoch sees fresh pairs.
2. ``change_speed``: resample by a factor U(speed_min, speed_max) (tempo and pitch move together,
   linear interpolation; the padded waveform is read circularly).
3. ``vtlp`` (only when ``vtlp_probability > 0``): vocal-tract-length perturbation (Jaitly &
   Hinton 2013; RespireNet's authors use nlpaug's ``VtlpAug``): the frequency axis is warped by a
   factor U(vtlp_alpha_min, vtlp_alpha_max), piecewise linearly with 0 and Nyquist fixed, in the
   STFT domain, so pitch moves and duration stays.
4. ``shift``: circular shift by a random number of samples (the public code's ``rollAudio``).
5. ``add_noise``: white noise at a random SNR U(noise_snr_db_min, noise_snr_db_max) dB relative
   to the cycle's RMS, clipped back to [-1, 1].

Randomness is stateless (``tf.random.stateless_*``) from seed pairs that a seeded
``tf.random.Generator`` hands out per batch: a seeded run is reproducible when batches reach
``map`` in order (no ``num_parallel_calls``), but a resumed run restarts the generator
(``tfbreath.augment.Augmenter`` derives its seeds from the epoch and batch index instead).

``balanced_indices``: the paper's "weighted random sampler to sample mini-batches uniformly from
each class", as ``tf.data.Dataset.sample_from_datasets`` over one shuffled, repeated index
stream per class.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tfbreath.icbhi.config import AugmentConfig

_DB_PER_AMPLITUDE_DECADE = 20.0
"""SNR in dB = 20 log10(signal RMS / noise RMS)."""

VTLP_FRAME_LENGTH = 256
"""STFT frame (= FFT) length of ``vtlp``: 129 bins, 15.6 Hz apart at ICBHI's 4 kHz (64-ms frames)."""
VTLP_HOP = VTLP_FRAME_LENGTH // 4
"""A quarter frame: periodic Hann windows at 75 % overlap, so ``inverse_stft`` round-trips and the
per-hop phase advance tells a bin's frequency within +-2 bins (the Hann main lobe)."""
VTLP_HIGH_FRACTION = 0.6
"""``F_HI`` of the warp as a fraction of Nyquist: nlpaug's ``fhi = 4800`` Hz at 16 kHz (Nyquist
8 kHz). Stated against Nyquist, the warp needs no sample rate (1200 Hz at ICBHI's 4 kHz)."""


def _seed_pair(seed: int | tf.Tensor) -> tf.Tensor:
    """A shape-[2] int64 seed for the stateless ops."""
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    return tf.cast(tf.reshape(seed, [2]), tf.int64)


def _chosen(batch: tf.Tensor, probability: float, seed: tf.Tensor) -> tf.Tensor:
    """Which cycles of the batch get an augmentation. ``[] -> [B] bool``"""
    return tf.random.stateless_uniform([batch], seed=seed) < probability


def concat_same_class(waveforms: tf.Tensor, labels: tf.Tensor, offsets: tf.Tensor, lengths: tf.Tensor,
                      probability: float, seed: int | tf.Tensor, cycle_ids: tf.Tensor | None = None) -> tf.Tensor:
    """Cycle i's own audio + a random same-class partner's, repeated to L. ``[B, L] -> [B, L]``

    ``cycle_ids [B]`` names each row's annotated cycle (default: every row its own): a row is
    never joined to a row of the same cycle.
    """
    with tf.name_scope("concat_same_class"):
        seeds = tf.random.experimental.stateless_split(_seed_pair(seed), num=2)
        batch, length = tf.shape(waveforms)[0], tf.shape(waveforms)[1]
        labels = tf.cast(labels, tf.int32)
        offsets, lengths = tf.cast(offsets, tf.int32), tf.cast(lengths, tf.int32)
        ids = tf.range(batch, dtype=tf.int64) if cycle_ids is None else tf.cast(cycle_ids, tf.int64)  # [B]
        same = tf.logical_and(tf.equal(labels[:, None], labels[None, :]),
                              tf.not_equal(ids[:, None], ids[None, :]))  # [B, B] another cycle, same class
        scores = tf.where(same, tf.random.stateless_uniform([batch, batch], seed=seeds[0]), -1.0)  # [B, B]
        partner = tf.argmax(scores, axis=1, output_type=tf.int32)  # [B]
        apply = tf.logical_and(_chosen(batch, probability, seeds[1]), tf.reduce_any(same, axis=1))  # [B]

        own_length = lengths[:, None]  # [B, 1]
        joined = own_length + tf.gather(lengths, partner)[:, None]  # [B, 1]
        position = tf.range(length)[None, :] % joined  # [B, L] position in the repeated pair
        from_own = position < own_length  # [B, L]
        rows = tf.where(from_own, tf.range(batch)[:, None], partner[:, None])  # [B, L]
        columns = tf.where(from_own, offsets[:, None] + position,
                           tf.gather(offsets, partner)[:, None] + position - own_length)  # [B, L]
        pairs = tf.gather_nd(waveforms, tf.stack([rows, columns], axis=-1))  # [B, L]
        return tf.where(apply[:, None], pairs, waveforms)


def change_speed(waveforms: tf.Tensor, probability: float, low: float, high: float,
                 seed: int | tf.Tensor) -> tf.Tensor:
    """Play each chosen cycle ``U(low, high)`` times faster (circular, linear interpolation). ``[B, L] -> [B, L]``"""
    with tf.name_scope("change_speed"):
        seeds = tf.random.experimental.stateless_split(_seed_pair(seed), num=2)
        batch, length = tf.shape(waveforms)[0], tf.shape(waveforms)[1]
        factor = tf.random.stateless_uniform([batch, 1], seed=seeds[0], minval=low, maxval=high)  # [B, 1]
        position = tf.cast(tf.range(length), tf.float32)[None, :] * factor  # [B, L]
        below = tf.floor(position)
        weight = position - below  # [B, L]
        index = tf.cast(below, tf.int32) % length  # [B, L]
        left = tf.gather(waveforms, index, batch_dims=1)  # [B, L]
        right = tf.gather(waveforms, (index + 1) % length, batch_dims=1)  # [B, L]
        resampled = (1.0 - weight) * left + weight * right
        return tf.where(_chosen(batch, probability, seeds[1])[:, None], resampled, waveforms)


def vtlp_warp(frequency: tf.Tensor, alpha: tf.Tensor) -> tf.Tensor:
    """VTLP's piecewise-linear frequency warp, frequencies as fractions of Nyquist. ``[..., F] -> [..., F]``

    ``f' = alpha f`` up to ``f_boundary = F_HI min(alpha, 1) / alpha`` (``F_HI =
    VTLP_HIGH_FRACTION``), then the straight line from ``(f_boundary, alpha f_boundary)`` to
    ``(1, 1)``: 0 and Nyquist stay, and the warp is increasing for every ``alpha > 0``.
    ``alpha`` broadcasts against ``frequency`` (e.g. ``[B, 1]``); the lines extend beyond [0, 1].
    """
    with tf.name_scope("vtlp_warp"):
        frequency = tf.cast(frequency, tf.float32)
        alpha = tf.cast(alpha, tf.float32)
        corner = VTLP_HIGH_FRACTION * tf.minimum(alpha, 1.0)  # alpha f_boundary
        boundary = corner / alpha
        slope = (1.0 - corner) / (1.0 - boundary)  # of the upper line
        return tf.where(frequency <= boundary, alpha * frequency, 1.0 - slope * (1.0 - frequency))


def vtlp(waveforms: tf.Tensor, probability: float, alpha_min: float, alpha_max: float,
         seed: int | tf.Tensor) -> tf.Tensor:
    """Vocal-tract-length perturbation, warp factor ``U(alpha_min, alpha_max)`` per chosen cycle. ``[B, L] -> [B, L]``

    In the STFT (``VTLP_FRAME_LENGTH``, ``VTLP_HOP``, periodic Hann) the content of bin k moves to
    the fractional bin ``vtlp_warp(k)``, split linearly between its two neighbours (nlpaug's
    ``VtlpAug``); DC and Nyquist stay. Two corrections make it a pitch shift, which moving bins
    alone is not (measured: a 300 Hz tone with alpha 1.1 came out at 362 Hz, not 330 Hz):

    * phase is referred to each frame's centre, not its first sample, so a warp scales each
      windowed grain about its centre and the Hann lobe's bins stay in phase when they merge;
    * as in a phase vocoder, each bin's frequency is read from its phase advance between frames
      and the phase advanced by the extra ``warp(frequency) - frequency`` from frame to frame,
      else overlap-add brings the original pitch back.

    The padded waveform is read circularly (as ``change_speed`` and ``shift`` do) around the
    STFT, and the inverse STFT is cut back to the L samples. float32 inside; returns the input's
    dtype. ``alpha = 1`` returns the input up to float32 round-off. Levels (measured, alpha 0.9 and
    1.1): a tone keeps its RMS within 1.5 dB; white noise comes out ~4 dB quieter (bins split
    between neighbours and re-phased frames add partly incoherently).
    """
    with tf.name_scope("vtlp"):
        seeds = tf.random.experimental.stateless_split(_seed_pair(seed), num=2)
        x = tf.cast(waveforms, tf.float32)
        batch, length = tf.shape(x)[0], tf.shape(x)[1]
        alpha = tf.random.stateless_uniform([batch, 1, 1], seed=seeds[0], minval=alpha_min,
                                            maxval=alpha_max)  # [B, 1, 1]
        margin = VTLP_FRAME_LENGTH - VTLP_HOP  # the first samples lack full frame overlap: pad each side
        around = tf.range(-margin, length + margin) % length  # [L + 2 margin]
        stft = tf.signal.stft(tf.gather(x, around, axis=1), VTLP_FRAME_LENGTH, VTLP_HOP,
                              pad_end=True)  # [B, T, F], Hann window
        bins = stft.shape[-1]
        top = float(bins - 1)  # Nyquist, in bins
        k = tf.range(bins, dtype=tf.float32)  # [F]
        centre = tf.complex(1.0 - 2.0 * (k % 2.0), 0.0)  # [F]: (-1)^k moves phase 0 to the frame centre
        stft = stft * centre  # [B, T, F]

        cycles_per_bin_hop = VTLP_HOP / VTLP_FRAME_LENGTH  # phase advance, in cycles, per bin per hop
        phase = tf.math.angle(stft) / (2.0 * np.pi)  # [B, T, F] cycles
        deviation = phase[:, 1:] - phase[:, :-1] - k * cycles_per_bin_hop  # [B, T-1, F]
        deviation -= tf.round(deviation)  # wrapped to [-1/2, 1/2]
        frequency = k + deviation / cycles_per_bin_hop  # [B, T-1, F] instantaneous, in bins
        extra = (vtlp_warp(frequency / top, alpha) * top - frequency) * cycles_per_bin_hop  # [B, T-1, F]
        interior = tf.cast((k > 0.0) & (k < top), tf.float32)  # [F]: DC and Nyquist stay real
        extra = tf.math.floormod(extra, 1.0) * interior
        advance = tf.concat([tf.zeros_like(extra[:, :1]), tf.cumsum(extra, axis=1)], axis=1)  # [B, T, F]
        stft = stft * tf.exp(tf.complex(0.0, 2.0 * np.pi * tf.math.floormod(advance, 1.0)))  # [B, T, F]

        target = vtlp_warp(k / top, alpha[:, 0]) * top  # [B, F] fractional target bins
        below = tf.floor(target)
        upper = target - below  # [B, F] share of the upper neighbour
        below = tf.cast(below, tf.int32)
        moves = (tf.one_hot(below, bins) * (1.0 - upper)[..., None]
                 + tf.one_hot(below + 1, bins) * upper[..., None])  # [B, F, F] source -> target
        warped = tf.matmul(stft, tf.complex(moves, 0.0)) * centre  # [B, T, F]
        restored = tf.signal.inverse_stft(warped, VTLP_FRAME_LENGTH, VTLP_HOP,
                                          window_fn=tf.signal.inverse_stft_window_fn(VTLP_HOP))
        restored = restored[:, margin:margin + length]  # [B, L]
        out = tf.where(_chosen(batch, probability, seeds[1])[:, None], restored, x)
        return tf.cast(out, waveforms.dtype)


def shift(waveforms: tf.Tensor, probability: float, seed: int | tf.Tensor) -> tf.Tensor:
    """Roll each chosen cycle by a random number of samples. ``[B, L] -> [B, L]``"""
    with tf.name_scope("shift"):
        seeds = tf.random.experimental.stateless_split(_seed_pair(seed), num=2)
        batch, length = tf.shape(waveforms)[0], tf.shape(waveforms)[1]
        amount = tf.random.stateless_uniform([batch, 1], seed=seeds[0], maxval=length, dtype=tf.int32)  # [B, 1]
        index = (tf.range(length)[None, :] - amount) % length  # [B, L]: out[t] = x[t - amount], as np.roll
        rolled = tf.gather(waveforms, index, batch_dims=1)
        return tf.where(_chosen(batch, probability, seeds[1])[:, None], rolled, waveforms)


def add_noise(waveforms: tf.Tensor, probability: float, snr_db_min: float, snr_db_max: float,
              seed: int | tf.Tensor) -> tf.Tensor:
    """White noise at a random SNR per chosen cycle, clipped to [-1, 1]. ``[B, L] -> [B, L]``"""
    with tf.name_scope("add_noise"):
        seeds = tf.random.experimental.stateless_split(_seed_pair(seed), num=3)
        batch = tf.shape(waveforms)[0]
        snr_db = tf.random.stateless_uniform([batch, 1], seed=seeds[0], minval=snr_db_min, maxval=snr_db_max)
        rms = tf.sqrt(tf.reduce_mean(tf.square(waveforms), axis=1, keepdims=True))  # [B, 1]
        scale = rms / tf.pow(10.0, snr_db / _DB_PER_AMPLITUDE_DECADE)  # [B, 1]
        noisy = waveforms + scale * tf.random.stateless_normal(tf.shape(waveforms), seed=seeds[1])
        noisy = tf.clip_by_value(noisy, -1.0, 1.0)
        return tf.where(_chosen(batch, probability, seeds[2])[:, None], noisy, waveforms)


class CycleAugmenter:
    """``ds.map(augmenter)`` on ``(waveforms, labels, offsets, lengths[, cycle_ids])`` batches ->
    ``(waveforms, labels, offsets, lengths)``, augmented (``cycle_ids``: see ``concat_same_class``)."""

    def __init__(self, config: AugmentConfig, seed: int | None = None) -> None:
        self.config = config
        self.rng = (tf.random.Generator.from_non_deterministic_state() if seed is None
                    else tf.random.Generator.from_seed(seed))

    @tf.autograph.experimental.do_not_convert
    def __call__(self, waveforms: tf.Tensor, labels: tf.Tensor, offsets: tf.Tensor, lengths: tf.Tensor,
                 cycle_ids: tf.Tensor | None = None) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
        cfg = self.config
        # seeds[4] (vtlp) comes last: splitting into 5 keeps the first 4, so runs without vtlp draw as before
        seeds = tf.random.experimental.stateless_split(self.rng.make_seeds(1)[:, 0], num=5)
        if cfg.concat:
            waveforms = concat_same_class(waveforms, labels, offsets, lengths, cfg.concat_probability, seeds[0],
                                          cycle_ids)
        waveforms = change_speed(waveforms, cfg.speed_probability, cfg.speed_min, cfg.speed_max, seeds[1])
        if cfg.vtlp_probability > 0:
            waveforms = vtlp(waveforms, cfg.vtlp_probability, cfg.vtlp_alpha_min, cfg.vtlp_alpha_max, seeds[4])
        waveforms = shift(waveforms, cfg.shift_probability, seeds[2])
        waveforms = add_noise(waveforms, cfg.noise_probability, cfg.noise_snr_db_min, cfg.noise_snr_db_max, seeds[3])
        return waveforms, labels, offsets, lengths


def balanced_indices(labels: np.ndarray, seed: int | None = None) -> tf.data.Dataset:
    """Endless int64 indices into ``labels``, every present class drawn equally often.

    One index stream per class (shuffled, reshuffled on every pass, repeated), mixed by
    ``tf.data.Dataset.sample_from_datasets`` with equal weights; classes absent from ``labels``
    are left out. Take as many as an epoch needs.
    """
    labels = np.asarray(labels)
    streams = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label).astype(np.int64)
        stream = tf.data.Dataset.from_tensor_slices(members)
        streams.append(stream.shuffle(len(members), seed=seed, reshuffle_each_iteration=True).repeat())
    if not streams:
        raise ValueError("balanced_indices needs at least one label, got none")
    weights = [1.0 / len(streams)] * len(streams)
    return tf.data.Dataset.sample_from_datasets(streams, weights, seed=seed, rerandomize_each_iteration=True)
