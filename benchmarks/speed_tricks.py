"""Whole-pipeline throughput of the in-graph features with each speed trick vs written plainly.

    python benchmarks/speed_tricks.py [--data ../shared/data/breath] [--rounds 5] [--clips 512]
        [--tricks percentiles contrast rolloff fft_threads filterbank tempogram all before] [--json out.json]

Each trick is one library function (or one dict) with two implementations defined here: the
trick and the plain version (``tf.sort``, ``tf.math.top_k``, ``tf.cumsum``, one dense product,
one ``tf.signal.rfft``, the z-score of the whole map). For every trick, two copies of the exact
tf.data graph training reads (``data.feature_dataset``: read -> decode -> nine maps + 39 scalars,
``data.FEATURE_BATCH`` clips per feature call, batched as training reads it) are traced, one
with each implementation patched into the library; everything else is the library's own. ``all``
patches every trick at once against every plain version; ``before`` every trick against the
library as it is: the features before vs after the simplification. Timing: in every round each
copy reads the same ``--clips`` clips once, uncached, after ``feature_speed.WARM_UP_BATCHES``
untimed batches (tracing happens before the rounds, when the datasets are built). The two copies
of a trick run back to back, in alternating order from round to round (A B, B A, ...), so drift
in the shared machine's speed hits both alike. Prints, per trick, the median clips/s of each, the
ratio of the medians (trick / plain: > 1 means the trick is faster), the range of the per-round
ratios, and the largest difference between the two copies' features on the first batch (a check
that the plain version computes the same thing).

``fft_threads`` and the FFT part of ``all`` and ``before`` time a trick no longer in the library
(the one-thread FFT split, removed as not paying): its code here is that "before" variant.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import tensorflow as tf

from tfbreath import data, filters, maps, scalars, spectral
from tfbreath.config import PipelineConfig
from tfbreath.features import extract_features

sys.path.insert(0, str(Path(__file__).resolve().parent))
from feature_speed import clips_per_second  # noqa: E402  (a sibling benchmark script)

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "breath"

KEEP_RATIO = 1.10
"""A trick stays in the library only if the whole pipeline is at least 10 % faster with it."""


# ----------------------------------------------------------------------------- percentiles of |y|

PRESELECT_STEP = 8
PRESELECT_BRACKET = 32


def _largest_pair(x, k):
    """The k-th and (k-1)-th largest value of each row, exactly, by a bracket from a strided
    subsample and one shallow top-k over the values inside it. ``[B, n]`` -> 2 x ``[B]``"""
    with tf.name_scope("largest_pair"):
        sample = x[:, ::PRESELECT_STEP]  # [B, ceil(n / step)]
        wanted = k / PRESELECT_STEP
        high_rank = max(int(wanted) - PRESELECT_BRACKET, 1)
        low_rank = min(int(np.ceil(wanted)) + PRESELECT_BRACKET, sample.shape[-1])
        ranked = tf.math.top_k(sample, low_rank).values  # [B, low_rank] descending
        low = ranked[:, low_rank - 1:]  # [B, 1]
        high = ranked[:, high_rank - 1:high_rank]  # [B, 1]
        reached = tf.reduce_sum(tf.cast(x >= low, tf.int32), -1, keepdims=True)  # [B, 1]
        low = tf.where(reached >= k, low, -np.inf)  # [B, 1]
        above = tf.reduce_sum(tf.cast(x > high, tf.int32), -1, keepdims=True)  # [B, 1]
        fits = above <= k - 2  # [B, 1]
        high = tf.where(fits, high, np.inf)  # [B, 1]
        above = tf.where(fits, above, 0)  # [B, 1]
        inside = tf.where(tf.logical_and(x >= low, x <= high), x, -np.inf)  # [B, n]
        depth = k - tf.reduce_min(above)  # []
        bracketed = tf.math.top_k(inside, depth).values  # [B, depth] descending
        kth = k - 1 - above  # [B, 1]
        pair = tf.gather(bracketed, tf.concat([kth, kth - 1], -1), batch_dims=1)  # [B, 2]
        return pair[:, 0], pair[:, 1]


def _interpolated(n, quantiles, neighbours):
    """np.percentile's linear interpolation over rows of n values: ``neighbours(q, below)`` gives
    each row's values of ascending rank ``below`` and ``below + 1`` (2 x ``[B]``). -> ``[B]`` per q"""
    results = []
    for q in quantiles:
        position = (n - 1) * q
        below = int(np.floor(position))
        fraction = np.float32(position - below)
        lower, upper = neighbours(q, below)  # 2 x [B]
        results.append(lower + (upper - lower) * fraction)  # [B]
    return results


def percentiles_trick(y, quantiles):
    """np.percentile(|y|, 100 q) from ``_largest_pair`` counted from the nearer end."""
    with tf.name_scope("abs_percentiles"):
        magnitude = tf.abs(y)  # [B, n]
        n = y.shape[-1]

        def neighbours(q, below):
            if q >= 0.5:
                return _largest_pair(magnitude, n - below)  # 2 x [B]
            upper, lower = (-v for v in _largest_pair(-magnitude, below + 2))  # 2 x [B]
            return lower, upper

        return _interpolated(n, quantiles, neighbours)


def percentiles_plain(y, quantiles):
    """np.percentile(|y|, 100 q) read from the sorted row."""
    with tf.name_scope("abs_percentiles"):
        ascending = tf.sort(tf.abs(y), axis=-1)  # [B, n]
        n = y.shape[-1]
        return _interpolated(n, quantiles,
                             lambda q, below: (ascending[:, below], ascending[:, min(below + 1, n - 1)]))


# ----------------------------------------------------------------------------- spectral contrast

extremes_trick = scalars._mean_of_extremes
"""The library keeps this trick (block-pruned top-k); taken before any patch replaces it."""


def extremes_plain(band, k, largest):
    """Mean of the k largest (smallest) values by one top-k."""
    sign = 1.0 if largest else -1.0
    return sign * tf.reduce_mean(tf.math.top_k(sign * band, k).values, -1)  # [B, T]


# ----------------------------------------------------------------------------- spectral rolloff

ROLLOFF_BLOCK = 32


def rolloff_trick(magnitude, sample_rate, live_bins):
    """Rolloff bin by a two-level running sum: per block of bins, then inside the crossing block."""
    with tf.name_scope("rolloff"):
        magnitude = magnitude[..., :live_bins]  # [B, T, F'] the bins that can be nonzero
        freq = tf.constant(filters.fft_frequencies(sample_rate, scalars.LIBROSA_N_FFT))  # [F]
        n_bins = magnitude.shape[-1]
        n_blocks = -(-n_bins // ROLLOFF_BLOCK)
        membership = (np.arange(n_bins)[:, np.newaxis] // ROLLOFF_BLOCK == np.arange(n_blocks)).astype(np.float32)
        block_ends = tf.cumsum(spectral.apply_filterbank(magnitude, membership), axis=-1)  # [B, T, K]
        threshold = scalars.ROLL_PERCENT * block_ends[..., -1:]  # [B, T, 1]
        full = tf.reduce_sum(tf.cast(block_ends < threshold, tf.int32), -1)  # [B, T]
        full = tf.minimum(full, n_blocks - 1)  # [B, T]
        before = tf.concat([tf.zeros_like(block_ends[..., :1]), block_ends[..., :-1]], -1)  # [B, T, K]
        offset = tf.gather(before, full, batch_dims=2)  # [B, T]
        bins = tf.expand_dims(full * ROLLOFF_BLOCK, -1) + tf.range(ROLLOFF_BLOCK)  # [B, T, W]
        in_range = tf.cast(bins < n_bins, tf.float32)  # [B, T, W]
        within = tf.cumsum(tf.gather(magnitude, tf.minimum(bins, n_bins - 1), batch_dims=2) * in_range, axis=-1)
        inner = tf.expand_dims(offset, -1) + within  # [B, T, W]
        below = full * ROLLOFF_BLOCK + tf.reduce_sum(tf.cast(inner < threshold, tf.int32), -1)  # [B, T]
        return tf.gather(freq, tf.minimum(below, n_bins - 1))  # [B, T]


def rolloff_plain(magnitude, sample_rate, live_bins):
    """Rolloff bin: how many bins of the running sum stay below the threshold."""
    with tf.name_scope("rolloff"):
        magnitude = magnitude[..., :live_bins]  # [B, T, F'] the bins that can be nonzero
        freq = tf.constant(filters.fft_frequencies(sample_rate, scalars.LIBROSA_N_FFT))  # [F]
        n_bins = magnitude.shape[-1]
        running = tf.cumsum(magnitude, axis=-1)  # [B, T, F]
        threshold = scalars.ROLL_PERCENT * running[..., -1:]  # [B, T, 1]
        below = tf.reduce_sum(tf.cast(running < threshold, tf.int32), -1)  # [B, T]
        return tf.gather(freq, tf.minimum(below, n_bins - 1))  # [B, T]


# ----------------------------------------------------------------------------- FFT threading
# The "before" variant only: the library had this split (``FftMode(one_thread=True)``, passed by
# the tf.data feature map, which padded a short last batch to a static row count for it) until it
# was measured not to pay (benchmarks/RESULTS.md, "speed tricks") and removed. This local copy
# keeps that measurement reproducible.

FFT_LANES = 8
"""float32 transforms TF's CPU FFT (DUCC) computes side by side: one AVX vector's worth."""

FFT_LONG = 1000
"""DUCC counts a vector of transforms of at least this length as a thread's worth of work, a
vector of shorter ones as a quarter."""

MIN_SPLIT_SAMPLES = 16384
"""Samples (transforms x length) a one-thread call must hold to be worth its own call."""


def _single_thread_rows(fft_length):
    """Transforms of this length per call that DUCC keeps on the calling thread, in whole vectors."""
    vectors_per_thread = 1 if fft_length >= FFT_LONG else 4
    return (2 * vectors_per_thread - 1) * FFT_LANES


def _parts(spectrum):
    return tf.math.real(spectrum), tf.math.imag(spectrum)


def rfft_trick(x, fft_length, fft_mode=spectral.FftMode(), reduce=_parts):
    """Static rows split into calls small enough for TF's CPU FFT to keep on the calling thread,
    each reduced while in cache. (The graph timed here is the tf.data map's, where each core runs
    a feature call of its own; TFLite graphs are not timed.)"""
    leading = x.shape[:-1]
    per_call = _single_thread_rows(fft_length)
    if not (leading.is_fully_defined() and leading.num_elements() > per_call
            and per_call * fft_length >= MIN_SPLIT_SAMPLES):
        return reduce(tf.signal.rfft(x, [fft_length]))
    rows = leading.num_elements()
    flat = tf.reshape(x, [rows, x.shape[-1]])  # [R, L]
    sizes = [per_call] * (rows // per_call) + [rows % per_call] * (rows % per_call > 0)
    parts = [reduce(tf.signal.rfft(part, [fft_length])) for part in tf.split(flat, sizes)]
    return tf.nest.map_structure(
        lambda *pieces: tf.reshape(tf.concat(pieces, 0), [*leading, pieces[0].shape[-1]]), *parts)


def rfft_plain(x, fft_length, fft_mode=spectral.FftMode(), reduce=_parts):
    """One rFFT call for all rows."""
    return reduce(tf.signal.rfft(x, [fft_length]))


def padded_features(y, pipeline):
    """``extract_features`` of the map's batch padded to ``data.FEATURE_BATCH`` clips, cut back:
    the static row count the split needs, as the feature map had it when the split was measured
    (both sides of ``fft_threads``, so only the split differs)."""
    count = tf.shape(y)[0]
    full = tf.pad(y, [[0, data.FEATURE_BATCH - count], [0, 0]])  # [FEATURE_BATCH, n]
    full.set_shape([data.FEATURE_BATCH, y.shape[-1]])
    features = extract_features(full, pipeline)  # [FEATURE_BATCH, ...] each
    return {key: value[:count] for key, value in features.items()}  # [B, ...] each


# ----------------------------------------------------------------------------- filterbanks

BAND_GROUP = 16
MAX_BLOCK_FILL = 0.5


def _filterbank_blocks(matrix):
    n_bins, n_bands = matrix.shape
    blocks = []
    for first_band in range(0, n_bands, BAND_GROUP):
        end_band = min(first_band + BAND_GROUP, n_bands)
        used = np.flatnonzero(np.any(matrix[:, first_band:end_band] != 0, axis=1))
        first_bin, end_bin = (used[0], used[-1] + 1) if len(used) else (0, 1)
        blocks.append((int(first_bin), int(end_bin), first_band, end_band))
    filled = sum((e - f) * (b - a) for f, e, a, b in blocks)
    return tuple(blocks) if filled <= MAX_BLOCK_FILL * n_bins * n_bands else None


def filterbank_trick(spectrogram, matrix):
    """Each group of bands multiplies only the bins its filters cover."""
    with tf.name_scope("apply_filterbank"):
        matrix = np.asarray(matrix, np.float32)
        blocks = _filterbank_blocks(matrix)
        if blocks is None:
            return tf.tensordot(spectrogram, tf.constant(matrix), axes=[[-1], [0]])
        parts = [tf.tensordot(spectrogram[..., f:e], tf.constant(matrix[f:e, a:b]), axes=[[-1], [0]])
                 for f, e, a, b in blocks]
        return tf.concat(parts, axis=-1)


def filterbank_plain(spectrogram, matrix):
    """One dense product."""
    with tf.name_scope("apply_filterbank"):
        return tf.tensordot(spectrogram, tf.constant(np.asarray(matrix, np.float32)), axes=[[-1], [0]])


# ----------------------------------------------------------------------------- tempogram

def zscored_map_trick(shared, name):
    """The tempogram's z-scored first n_mels lags without its other lags (the library's own
    ``maps.zscored_tempogram``, kept for the TFLite graph's size); the other maps the plain way."""
    if name == "tempogram":
        return maps.zscored_tempogram(shared, min(shared.features.n_mels, maps.TEMPOGRAM_WINDOW))
    return zscored_map_plain(shared, name)


def zscored_map_plain(shared, name):
    """Every map z-scored whole."""
    return maps.zscore(maps.MAP_BUILDERS[name](shared), per_band=name in maps.PER_BAND_ZSCORE)


# ----------------------------------------------------------------------------- the table

TRICKS = {
    "percentiles": [(scalars, "_abs_percentiles", percentiles_trick, percentiles_plain)],
    "contrast": [(scalars, "_mean_of_extremes", extremes_trick, extremes_plain)],
    "rolloff": [(scalars, "_rolloff", rolloff_trick, rolloff_plain)],
    "fft_threads": [(spectral, "real_fft", rfft_trick, rfft_plain),
                    (data, "extract_features", padded_features, padded_features)],
    "filterbank": [(spectral, "apply_filterbank", filterbank_trick, filterbank_plain)],
    "tempogram": [(maps, "_zscored_map", zscored_map_trick, zscored_map_plain)],
}
"""trick -> (module, attribute, trick implementation, plain implementation) to patch."""
TRICKS["all"] = [patch for patches in TRICKS.values() for patch in patches]
TRICKS["before"] = [(module, name, trick, None) for module, name, trick, _ in TRICKS["all"]]
"""Every trick (the features before issue 20, item 6) vs the library as it is (``None``: not patched)."""


def _build(files, patches, with_trick: bool) -> tf.data.Dataset:
    """The training feature dataset, traced with each patch's trick (or plain) implementation."""
    with contextlib.ExitStack() as stack:
        for module, name, trick, plain in patches:
            implementation = trick if with_trick else plain
            if implementation is not None:
                stack.enter_context(mock.patch.object(module, name, implementation))
        return data.feature_dataset(data.unlabelled(files), PipelineConfig()).batch(data.FEATURE_BATCH)


def _first_batch(ds):
    batch = next(iter(ds))
    return {key: batch[key].numpy() for key in ("spectral", "scalars")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Kaggle-layout folder with train/")
    parser.add_argument("--clips", type=int, default=512, help="clips per timed pass")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (medians reported)")
    parser.add_argument("--tricks", nargs="+", default=list(TRICKS), choices=list(TRICKS))
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    files = sorted((args.data / "train").glob("*.wav"))[:args.clips]
    if not files:
        raise SystemExit(f"error: no WAV files in {args.data / 'train'}")

    pairs = {name: (_build(files, TRICKS[name], True), _build(files, TRICKS[name], False)) for name in args.tricks}
    differences = {}
    for name, (with_trick, plain) in pairs.items():
        a, b = _first_batch(with_trick), _first_batch(plain)
        differences[name] = {key: float(np.max(np.abs(a[key] - b[key]))) for key in a}
    rates = {name: ([], []) for name in pairs}
    for round_index in range(args.rounds):
        for name, datasets in pairs.items():
            order = (0, 1) if round_index % 2 == 0 else (1, 0)
            for side in order:
                rates[name][side].append(clips_per_second(datasets[side]))
        print(f"round {round_index + 1}: " + ", ".join(
            f"{name} {rates[name][0][-1]:.0f}/{rates[name][1][-1]:.0f}" for name in pairs), flush=True)

    result = {"clips": len(files), "rounds": args.rounds, "feature_batch": data.FEATURE_BATCH, "tricks": {}}
    print(f"\nmedians of {args.rounds} interleaved rounds of {len(files)} clips (clips/s)")
    print(f"{'trick':12s} {'with':>7s} {'plain':>7s} {'ratio':>6s}  {'per-round':>11s}  kept?  max |diff| spectral, scalars")
    for name, (with_rounds, plain_rounds) in rates.items():
        with_rate, plain_rate = float(np.median(with_rounds)), float(np.median(plain_rounds))
        per_round = np.array(with_rounds) / np.array(plain_rounds)
        ratio = with_rate / plain_rate
        keep = ratio >= KEEP_RATIO
        diff = differences[name]
        print(f"{name:12s} {with_rate:7.1f} {plain_rate:7.1f} {ratio:6.3f}  {per_round.min():.3f}-{per_round.max():.3f}"
              f"  {'yes' if keep else 'no ':5s}  {diff['spectral']:.2g}, {diff['scalars']:.2g}")
        result["tricks"][name] = {
            "with_clips_per_s": round(with_rate, 1), "plain_clips_per_s": round(plain_rate, 1),
            "ratio": round(ratio, 3), "per_round_ratio": [round(float(r), 3) for r in per_round],
            "with_rounds": [round(r, 1) for r in with_rounds], "plain_rounds": [round(r, 1) for r in plain_rounds],
            "max_abs_difference": diff}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
