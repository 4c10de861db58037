"""In-graph CutMix, MixUp and map masking for the two-input batches of the training pipeline.

Batches are ``(inputs, labels)`` with ``inputs = {"spectral": [B, H, W, C], "scalars": [B, S]}``
("scalars" optional) and ``labels`` ``[B]`` (or ``[B, 1]``) float in [0, 1] = P(exhale). Use on
BATCHES, after ``.batch``::

    augmenter = Augmenter(AugmentConfig(), seed=0)
    train = augmenter.apply(feature_set.batches(32, shuffle_buffer=1024))
    model.fit(train, callbacks=[AugmentationSchedule(augmenter)], ...)

Recipe (breathing-phase paper): after ``warmup_epochs`` epochs, each batch draws u ~ U(0, 1):
u < p_cutmix -> CutMix; else u < p_cutmix + p_mixup -> MixUp; else unchanged.

* MixUp: ONE lambda per batch, lambda ~ Beta(alpha, alpha) (ratio of two Gamma draws); the
  partner of sample i is ``perm[i]`` for a random permutation of the batch; spectral maps, scalars
  and labels are all mixed with that same lambda: ``x = lam * x + (1 - lam) * x[perm]``.
* CutMix: ONE lambda and ONE box per batch, lambda ~ Beta(alpha, alpha); box sides
  ``round(H * sqrt(1 - lam))`` x ``round(W * sqrt(1 - lam))``, centre uniform over the map, clipped
  to the map; the box region of every channel of "spectral" is taken from the partner; labels are
  mixed by the ACTUAL (clipped) box area: ``y = (1 - a) y + a y[perm]`` with ``a = area / (H * W)``;
  scalars are left unchanged (a box has no meaning for them).

Masking (SpecAugment-style, off by default: ``freq_masks = time_masks = 0``): after the branch,
every clip of the batch gets its own ``freq_masks`` runs of 0 to ``freq_mask_width`` bands and
``time_masks`` runs of 0 to ``time_mask_width`` frames set to 0 in every map (the z-scored maps'
mean); labels and scalars are unchanged. Its draws come from a stream of their own
(``MASK_STREAM`` folded into the batch's seed), so turning it on leaves the branch draws as they
were.

Labels are clipped to [0, 1] after mixing (guards float round-off only). Dtypes and shapes are
preserved; the batch size may vary (the last, partial batch is fine). Keys other than "spectral"
and "scalars" are rejected rather than silently left unmixed.

Why not ``keras.layers.CutMix`` / ``keras.layers.MixUp`` (checked with Keras 3.15.1): they expect a
dict keyed ``"images"`` / ``"labels"`` (our ``"spectral"`` dict raises ``KeyError: 'images'``);
extra keys such as ``"scalars"`` pass through UNMIXED, and the per-sample lambda they draw is not
exposed, so MixUp cannot mix scalars with the same lambda; with 1-D binary labels ``[B]`` they
broadcast the mixed labels to a ``[B, B]`` matrix; and neither chooses per batch between the two
nor has an on/off switch for a warm-up. The ops below are a few lines of plain TF instead.

Randomness: every draw is a stateless op (``tf.random.stateless_*``) driven by a seed pair.
``cutmix``/``mixup`` take ``seed`` = an int, a shape-[2] integer tensor, or None (a fresh seed pair
from the stateful global RNG, not reproducible). ``Augmenter`` keeps no random state: batch
``step`` (0-based within the epoch) of epoch ``epoch`` is augmented with the seed pair
``fold_in(fold_in([seed, 0], epoch), step)`` (``tf.random.experimental.stateless_fold_in``), so
its augmentation is a pure function of (run seed, epoch, step). ``Augmenter.apply`` numbers the
batches with ``enumerate`` and maps in parallel, so the output does not depend on thread
scheduling; ``epoch`` is an int64 ``tf.Variable`` that ``AugmentationSchedule`` sets, so a run
resumed at epoch e (``fit(initial_epoch=e)``) gives batch k of epoch e the same draws (branch,
lambda, partners, box) as an uninterrupted run does, and each epoch is augmented differently.
``seed=None`` picks a random base seed (``Augmenter.seed`` records it). ``step`` restarts at 0
with every new iterator (``fit`` makes one per epoch); one iterator spanning epochs
(``steps_per_epoch`` on a repeated dataset) keeps counting, so its batches still get distinct
seeds but a resume is not replayed exactly.

Warm-up: ``Augmenter.enabled`` is a boolean ``tf.Variable`` read inside the ``map`` graph (as is
``epoch``), so values set between epochs (by ``AugmentationSchedule.on_epoch_begin``) are seen by
the next iterator (``fit`` makes a new one each epoch). Batches already prefetched before a change
keep the old values, which matters only when one iterator spans epochs.
"""

from __future__ import annotations

import secrets
from typing import Any

import keras
import tensorflow as tf

from tfbreath.config import SCALARS, SPECTRAL, AugmentConfig

_KNOWN_KEYS = (SPECTRAL, SCALARS)

_RANDOM_SEED_BITS = 63
"""Bits of the base seed drawn when ``Augmenter(seed=None)`` (fits a non-negative int64)."""

CUTMIX, MIXUP, NONE = 0, 1, 2
"""Branch indices returned by ``Augmenter.choose`` (for logging and tests)."""

MASK_STREAM = 1
"""Folded into a batch's seed pair for the masks' draws (``tf.random.experimental.stateless_fold_in``)."""


# ----------------------------------------------------------------------------- random helpers

def _seed_pair(seed: Any) -> tf.Tensor:
    """A shape-[2] int64 seed for the stateless ops (see the module docstring)."""
    if seed is None:
        return tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64)
    if isinstance(seed, int):
        return tf.constant([seed, 0], tf.int64)
    return tf.cast(tf.reshape(seed, [2]), tf.int64)


def _beta(alpha: float, seed: tf.Tensor) -> tf.Tensor:
    """One Beta(alpha, alpha) draw as g1 / (g1 + g2) with g1, g2 ~ Gamma(alpha); float32 scalar."""
    g = tf.random.stateless_gamma([2], seed=seed, alpha=tf.constant(alpha, tf.float32))
    return tf.clip_by_value(tf.math.divide_no_nan(g[0], g[0] + g[1]), 0.0, 1.0)


def _permutation(batch: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    return tf.argsort(tf.random.stateless_uniform([batch], seed=seed))


def _as_tensors(inputs: dict[str, Any], labels: Any) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """Checks the keys (at trace time) and converts arrays to tensors."""
    if not isinstance(inputs, dict) or SPECTRAL not in inputs:
        raise ValueError(f"inputs must be a dict with a {SPECTRAL!r} entry, got {inputs!r}")
    extra = sorted(set(inputs) - set(_KNOWN_KEYS))
    if extra:
        raise ValueError(f"inputs may only hold {list(_KNOWN_KEYS)}, got extra keys {extra!r}")
    tensors = {key: tf.convert_to_tensor(value) for key, value in inputs.items()}
    return tensors, tf.convert_to_tensor(labels)


def _mix(x: tf.Tensor, partner: tf.Tensor, lam: tf.Tensor) -> tf.Tensor:
    lam = tf.cast(lam, x.dtype)
    return lam * x + (1 - lam) * partner


def _mix_labels(labels: tf.Tensor, perm: tf.Tensor, keep: tf.Tensor) -> tf.Tensor:
    """``keep * y + (1 - keep) * y[perm]``, clipped to [0, 1], in the labels' dtype."""
    mixed = _mix(labels, tf.gather(labels, perm), keep)
    return tf.clip_by_value(mixed, tf.cast(0, labels.dtype), tf.cast(1, labels.dtype))


# ----------------------------------------------------------------------------- the two mixes

def mixup(inputs: dict[str, tf.Tensor], labels: tf.Tensor, alpha: float = 0.2,
          seed: Any = None) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """MixUp with one lambda ~ Beta(alpha, alpha) per batch for maps, scalars and labels."""
    inputs, labels = _as_tensors(inputs, labels)
    seeds = tf.random.experimental.stateless_split(_seed_pair(seed), num=2)
    lam = _beta(alpha, seeds[0])
    perm = _permutation(tf.shape(labels)[0], seeds[1])
    mixed = {key: _mix(value, tf.gather(value, perm), lam) for key, value in inputs.items()}
    return mixed, _mix_labels(labels, perm, lam)


def cutmix_box(height: tf.Tensor, width: tf.Tensor, lam: tf.Tensor,
               seed: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """``(y1, y2, x1, x2)`` int32, half-open, of a box of area ~(1 - lam) H W clipped to the map."""
    side = tf.sqrt(1.0 - lam)
    cut_h = tf.cast(tf.round(side * tf.cast(height, tf.float32)), tf.int32)
    cut_w = tf.cast(tf.round(side * tf.cast(width, tf.float32)), tf.int32)
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    cy = tf.random.stateless_uniform([], seeds[0], minval=0, maxval=height, dtype=tf.int32)
    cx = tf.random.stateless_uniform([], seeds[1], minval=0, maxval=width, dtype=tf.int32)
    y1, x1 = cy - cut_h // 2, cx - cut_w // 2
    y2, x2 = y1 + cut_h, x1 + cut_w
    return (tf.clip_by_value(y1, 0, height), tf.clip_by_value(y2, 0, height),
            tf.clip_by_value(x1, 0, width), tf.clip_by_value(x2, 0, width))


def cutmix(inputs: dict[str, tf.Tensor], labels: tf.Tensor, alpha: float = 1.0,
           seed: Any = None) -> tuple[dict[str, tf.Tensor], tf.Tensor]:
    """CutMix of "spectral" (one box per batch, all channels); labels mixed by the clipped area."""
    inputs, labels = _as_tensors(inputs, labels)
    seeds = tf.random.experimental.stateless_split(_seed_pair(seed), num=3)
    lam = _beta(alpha, seeds[0])
    perm = _permutation(tf.shape(labels)[0], seeds[1])
    spectral = inputs[SPECTRAL]
    height, width = tf.shape(spectral)[1], tf.shape(spectral)[2]
    y1, y2, x1, x2 = cutmix_box(height, width, lam, seeds[2])
    rows = tf.logical_and(tf.range(height) >= y1, tf.range(height) < y2)
    cols = tf.logical_and(tf.range(width) >= x1, tf.range(width) < x2)
    box = tf.logical_and(rows[:, None], cols[None, :])                      # [H, W]
    out = dict(inputs)
    out[SPECTRAL] = tf.where(box[None, :, :, None], tf.gather(spectral, perm), spectral)
    area = tf.cast((y2 - y1) * (x2 - x1), tf.float32) / tf.cast(height * width, tf.float32)
    return out, _mix_labels(labels, perm, 1.0 - area)


# ----------------------------------------------------------------------------- masking

def run_masks(batch: tf.Tensor, length: int | tf.Tensor, count: int, max_width: int,
              seed: tf.Tensor) -> tf.Tensor:
    """Per clip, the union of ``count`` runs of 0 to ``max_width`` positions out of ``length``.

    Each run's width is uniform over {0, ..., min(max_width, length)} and its start uniform over
    the positions where it fits. ``seed`` is a shape-[2] seed pair.

    Returns
    -------
    tf.Tensor
        ``[batch, length]`` bool, True where masked.
    """
    with tf.name_scope("run_masks"):
        seeds = tf.random.experimental.stateless_split(seed, num=2)
        length = tf.convert_to_tensor(length, tf.int32)
        widest = tf.minimum(max_width, length)
        width = tf.random.stateless_uniform([batch, count], seeds[0], minval=0, maxval=widest + 1,
                                            dtype=tf.int32)  # [B, n]
        room = tf.cast(length - width + 1, tf.float32)  # [B, n]  starts where the run fits
        start = tf.cast(tf.random.stateless_uniform([batch, count], seeds[1]) * room, tf.int32)  # [B, n]
        position = tf.range(length)  # [L]
        inside = tf.logical_and(position >= start[..., None],
                                position < (start + width)[..., None])  # [B, n, L]
        return tf.reduce_any(inside, axis=1)  # [B, L]


def mask_maps(spectral: tf.Tensor, config: AugmentConfig, seed: Any = None) -> tf.Tensor:
    """``spectral`` ``[B, H, W, C]`` with each clip's band and frame runs set to 0 in every map.

    Runs as ``config`` says (``freq_masks`` of up to ``freq_mask_width`` bands, ``time_masks`` of
    up to ``time_mask_width`` frames); ``seed`` as for ``mixup``. Shape and dtype are kept.
    """
    with tf.name_scope("mask_maps"):
        spectral = tf.convert_to_tensor(spectral)
        seeds = tf.random.experimental.stateless_split(_seed_pair(seed), num=2)
        batch, height, width = tf.shape(spectral)[0], tf.shape(spectral)[1], tf.shape(spectral)[2]
        bands = run_masks(batch, height, config.freq_masks, config.freq_mask_width, seeds[0])  # [B, H]
        frames = run_masks(batch, width, config.time_masks, config.time_mask_width, seeds[1])  # [B, W]
        masked = tf.logical_or(bands[:, :, None], frames[:, None, :])  # [B, H, W]
        return tf.where(masked[..., None], tf.zeros_like(spectral), spectral)  # [B, H, W, C]


# ----------------------------------------------------------------------------- pipeline wiring

class Augmenter:
    """CutMix / MixUp / nothing per batch, then the masks, seeded by (``seed``, ``epoch``, step); off = identity.

    Use ``augmenter.apply(batches)``; calling it directly needs the batch's step within the epoch.
    ``enabled`` starts True only when ``config.warmup_epochs == 0`` and ``epoch`` starts at 0;
    ``AugmentationSchedule`` sets both at the start of every epoch.

    Parameters
    ----------
    config : AugmentConfig
        Branch probabilities, Beta alphas and masks.
    seed : int or None
        The run's base seed; None draws a random one (kept in ``self.seed``, not reproducible).
    """

    def __init__(self, config: AugmentConfig = AugmentConfig(), seed: int | None = None) -> None:
        self.config = config
        self.seed = secrets.randbits(_RANDOM_SEED_BITS) if seed is None else seed
        self.enabled = tf.Variable(config.warmup_epochs == 0, trainable=False, dtype=tf.bool,
                                   name="augment_enabled")
        self.epoch = tf.Variable(0, trainable=False, dtype=tf.int64, name="augment_epoch")

    def choose(self, u: tf.Tensor) -> tf.Tensor:
        """Branch index (CUTMIX, MIXUP or NONE) for a uniform draw ``u`` in [0, 1)."""
        p_cut, p_mix = self.config.p_cutmix, self.config.p_mixup
        return tf.where(u < p_cut, CUTMIX, tf.where(u < p_cut + p_mix, MIXUP, NONE))

    def step_seed(self, step: int | tf.Tensor) -> tf.Tensor:
        """Shape-[2] int64 seed pair of batch ``step`` (0-based scalar) of the current epoch."""
        fold_in = tf.random.experimental.stateless_fold_in
        epoch_seed = fold_in(_seed_pair(self.seed), self.epoch.read_value())
        return fold_in(epoch_seed, tf.cast(step, tf.int64))

    def augment(self, inputs, labels, seed: tf.Tensor):
        """One augmentation draw from the shape-[2] ``seed``, regardless of ``enabled``."""
        seeds = tf.random.experimental.stateless_split(seed, num=2)
        branch = self.choose(tf.random.stateless_uniform([], seeds[0]))
        cfg = self.config
        inputs, labels = tf.switch_case(branch, [
            lambda: cutmix(inputs, labels, cfg.cutmix_alpha, seeds[1]),
            lambda: mixup(inputs, labels, cfg.mixup_alpha, seeds[1]),
            lambda: (dict(inputs), tf.identity(labels)),
        ])
        if cfg.freq_masks or cfg.time_masks:
            mask_seed = tf.random.experimental.stateless_fold_in(seed, MASK_STREAM)
            inputs = {**inputs, SPECTRAL: mask_maps(inputs[SPECTRAL], cfg, mask_seed)}
        return inputs, labels

    @tf.autograph.experimental.do_not_convert
    def __call__(self, inputs, labels, step: int | tf.Tensor):
        """Batch ``step`` (0-based within the current epoch) augmented; unchanged when disabled."""
        inputs, labels = _as_tensors(inputs, labels)
        return tf.cond(self.enabled, lambda: self.augment(inputs, labels, self.step_seed(step)),
                       lambda: (dict(inputs), tf.identity(labels)))

    def apply(self, batches: tf.data.Dataset) -> tf.data.Dataset:
        """``batches`` of ``(inputs, labels)`` augmented in parallel, in order, each by its step.

        Parameters
        ----------
        batches : tf.data.Dataset
            Elements ``(inputs, labels)``: ``inputs = {"spectral": [B, H, W, C],
            "scalars": [B, S]}`` ("scalars" optional), ``labels`` ``[B]`` or ``[B, 1]``.

        Returns
        -------
        tf.data.Dataset
            The same structure, shapes and dtypes; batch k of every iterator is augmented with
            ``step_seed(k)``. Not prefetched.
        """
        spec = batches.element_spec
        if not (isinstance(spec, tuple) and len(spec) == 2):
            raise ValueError(f"apply needs (inputs, labels) batches, got element_spec {spec!r}")
        return batches.enumerate().map(lambda step, batch: self(*batch, step),
                                       num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


class AugmentationSchedule(keras.callbacks.Callback):
    """Sets ``augmenter.epoch`` and turns it on from epoch ``warmup_epochs`` (0-based).

    At the start of epoch e: ``epoch = e`` and ``enabled = e >= warmup_epochs``.
    """

    def __init__(self, augmenter: Augmenter, warmup_epochs: int | None = None) -> None:
        super().__init__()
        self.augmenter = augmenter
        self.warmup_epochs = (augmenter.config.warmup_epochs if warmup_epochs is None
                              else warmup_epochs)

    def on_epoch_begin(self, epoch: int, logs=None) -> None:
        self.augmenter.epoch.assign(epoch)
        self.augmenter.enabled.assign(epoch >= self.warmup_epochs)
