"""The nine spectral maps of the breathing-phase paper, computed in-graph.

``spectral_maps(y, sample_rate, features)`` turns waveforms ``[..., samples]`` into the CNN input
``[..., n_mels, frames, len(features.maps)]`` (128 x 63 x 9 for 1-s 16 kHz clips). Each map is
built time-major ``[..., frames, bands]``, z-scored on its own (per band for MFCC and chroma,
as a whole otherwise), then padded up to ``n_mels`` bands with the map's minimum (or cut to
``n_mels``) and turned freq-major.

Recipe (16 kHz, n_fft 512, hop 256, centred frames; librosa defaults otherwise):

- ``mel``: 128-band mel power (fmax 4500 Hz) in dB, ref = max, top_db 80.
- ``mel_delta``, ``mel_delta2``: its first and second Savitzky-Golay deltas (width 9).
- ``mfcc``: 40 MFCCs (full-band 128 mel, dB re 1) with their deltas: 120 bands.
- ``chroma``: 12-bin STFT chroma (inf-norm per frame, A440 tuning) and its CENS: 24 bands.
- ``gammatone``: gammatone-style 64-band (mel-spaced) filterbank on |STFT|, log1p.
- ``modulation``: orthonormal 2-D DCT of the dB mel (first 40 quefrency rows).
- ``tempogram``: autocorrelation tempogram (384 lags) of the onset envelope, cut to n_mels lags.
- ``lpc``: 12 Burg LPC coefficients per 25 ms Hamming frame of the pre-emphasised signal (with
  ``band_limit_hz`` set, of the signal decimated to the band's rate: ``lpc_decimation``).

Two documented choices where librosa's own path cannot run in-graph or is data-dependent:
chroma uses A440 tuning instead of a per-clip tuning estimate, and CENS is computed from the
STFT chroma instead of a CQT chroma. LPC frames are centred on the STFT frames (hop 256) so
the map spans the whole clip. The librosa reference of the parity tests makes the same
choices with librosa calls.
"""

from __future__ import annotations

import functools

import numpy as np
import tensorflow as tf

from tfbreath import filters, spectral
from tfbreath.config import NO_BAND_LIMIT, FeatureConfig

PER_BAND_ZSCORE = frozenset({"mfcc", "chroma"})
"""Maps z-scored per band over time; the others are z-scored as a whole."""

N_MODULATION = 40
"""Quefrency rows kept by the modulation spectrum."""

PRE_EMPHASIS = 0.97
"""First-order pre-emphasis coefficient before LPC."""

ONSET_N_FFT = 2048
"""librosa.onset.onset_strength's STFT size (its default)."""

ONSET_N_MELS = 128
"""librosa.onset.onset_strength's mel bands (melspectrogram's default)."""

TEMPOGRAM_WINDOW = 384
"""librosa.feature.tempogram's autocorrelation window (frames)."""

TEMPOGRAM_FFT_LENGTH = 2 * TEMPOGRAM_WINDOW
"""DFT length of the tempogram's windows (``spectral.hann_window_power`` pads them to 2W): >= 2W - 1,
so that no lag wraps around and the z-score's sums over all lags follow from the spectrum
(``zscored_tempogram``)."""

CHROMA_CENS_THRESHOLDS = (0.4, 0.2, 0.1, 0.05)
"""CENS quantisation steps; each step crossed adds ``CHROMA_CENS_STEP``."""

CHROMA_CENS_STEP = 0.25

ZSCORE_RESOLUTION = 1e-5
"""Relative spread below which a map is constant: real clips stay above 4e-4, silence is ~3e-7.

Relative to the whole map's largest magnitude, because silence's round-off spreads from its largest
value (MFCC's c0) into every band. So a band whose real variation is that small beside a large c0
is zeroed too, where librosa z-scores it: a lone click in digital silence leaves some high MFCC
bands at 0 (up to 5.3 from librosa's z-scores on such a clip); no recorded clip comes near."""

LOG1P_SERIES_MIN, LOG1P_SERIES_MAX = -0.5, 1.0
"""Where log1p sums its artanh series: |x / (2 + x)| <= 1/3."""

LOG1P_SERIES_TERMS = 7
"""Terms of that series: the first one left out is below float32 resolution for |s| <= 1/3."""

TINY = float(np.finfo(np.float32).tiny)
"""librosa.util.normalize's threshold: frames with a smaller norm are left unscaled."""

MFCC_ORDERS = 3
"""The MFCC map stacks the coefficients, their deltas and their second deltas."""

CHROMA_ROWS = 24
"""12 chroma bins and their 12 CENS bins."""


def map_rows(features: FeatureConfig) -> dict[str, int]:
    """Bands of each chosen map that are its own; ``fit_bands`` pads the rest of its ``n_mels``
    rows with the map's minimum (or cuts the map there). name -> rows, in channel order"""
    own = {"mel": features.n_mels, "mel_delta": features.n_mels, "mel_delta2": features.n_mels,
           "mfcc": MFCC_ORDERS * features.n_mfcc, "chroma": CHROMA_ROWS, "gammatone": features.n_gammatone,
           "modulation": N_MODULATION, "tempogram": TEMPOGRAM_WINDOW, "lpc": features.lpc_order}
    return {name: min(own[name], features.n_mels) for name in features.maps}


def _safe_norm(norm: tf.Tensor) -> tf.Tensor:
    return tf.where(norm < TINY, tf.ones_like(norm), norm)


def normalize_bands(x: tf.Tensor, order: str) -> tf.Tensor:
    """Scale every frame to unit ``"max"``, ``"l1"`` or ``"l2"`` norm over bands. ``[..., T, F]``"""
    with tf.name_scope(f"normalize_{order}"):
        if order == "max":
            norm = tf.reduce_max(tf.abs(x), axis=-1, keepdims=True)  # [..., T, 1]
        elif order == "l1":
            norm = tf.reduce_sum(tf.abs(x), axis=-1, keepdims=True)  # [..., T, 1]
        else:
            norm = tf.norm(x, axis=-1, keepdims=True)  # [..., T, 1]
        return x / _safe_norm(norm)  # [..., T, F]


def zscore(x: tf.Tensor, per_band: bool) -> tf.Tensor:
    """Zero mean, unit std over the whole map or per band over time. ``[..., T, F]``"""
    with tf.name_scope("zscore"):
        axes = [-2] if per_band else [-2, -1]
        mean = tf.reduce_mean(x, axis=axes, keepdims=True)  # [..., 1, F] or [..., 1, 1]
        std = tf.math.reduce_std(x, axis=axes, keepdims=True)  # same as mean
        return standardise(x, mean, std)  # [..., T, F]


def standardise(x: tf.Tensor, mean: tf.Tensor, std: tf.Tensor) -> tf.Tensor:
    """(x - mean) / std with a given mean and std (broadcast against ``x``). ``[..., T, F]``

    A map (or band) whose spread is below ``ZSCORE_RESOLUTION`` of the map's largest magnitude
    is float32 round-off on a constant, as for silence, and becomes 0 instead of amplified noise.
    """
    with tf.name_scope("standardise"):
        scale = tf.reduce_max(tf.abs(x), axis=[-2, -1], keepdims=True)  # [..., 1, 1]
        varies = spectral.broadcast_like(std > ZSCORE_RESOLUTION * scale, x)  # [..., T, F]
        return tf.where(varies, (x - mean) / (std + spectral.EPS), tf.zeros_like(x))  # [..., T, F]


def log1p(x: tf.Tensor) -> tf.Tensor:
    """log(1 + x) to float32 precision with kernels TFLite has. ``[...]`` -> ``[...]``

    TFLite has no LOG1P kernel: its converter writes log(1 + x), which drops the digits of x
    below float32 resolution (the gammatone bands of a quiet clip), and the textbook repair
    through (1 + x) - 1 is folded away by Grappler. Instead log1p(x) = 2 artanh(s) with
    s = x / (2 + x), summed as its odd series where |s| <= 1/3 (-1/2 <= x <= 1); elsewhere
    rounding 1 + x costs log(1 + x) at most an ulp or two.
    """
    with tf.name_scope("log1p"):
        s = x / (2.0 + x)  # [...]
        s2 = tf.square(s)  # [...]
        series = tf.ones_like(s2) / (2 * LOG1P_SERIES_TERMS - 1)  # [...]
        for k in reversed(range(LOG1P_SERIES_TERMS - 1)):
            series = series * s2 + 1.0 / (2 * k + 1)  # [...]  1 + s^2/3 + s^4/5 + ...
        near_zero = tf.logical_and(x >= LOG1P_SERIES_MIN, x <= LOG1P_SERIES_MAX)  # [...]
        return tf.where(near_zero, 2.0 * s * series, tf.math.log(1.0 + x))  # [...]


def fit_bands(x: tf.Tensor, n_bands: int) -> list[tf.Tensor]:
    """Pieces that, joined on the last axis, pad ``x`` up to ``n_bands`` bands with the map's
    minimum, or keep its first ``n_bands``. ``[..., T, F]`` -> pieces of ``[..., T, n_bands]``"""
    with tf.name_scope("fit_bands"):
        have = x.shape[-1]
        if have >= n_bands:
            return [x[..., :n_bands]]  # [..., T, n_bands]
        floor = tf.reduce_min(x, axis=[-2, -1], keepdims=True)  # [..., 1, 1]
        filler = tf.zeros_like(x[..., :1]) + floor  # [..., T, 1]
        return [x, tf.repeat(filler, n_bands - have, axis=-1)]  # [..., T, have], [..., T, n_bands - have]


def delta(x: tf.Tensor, order: int) -> tf.Tensor:
    """librosa.feature.delta along time (width 9, interpolated edges). ``[..., T, F]``"""
    with tf.name_scope(f"delta{order}"):
        return spectral.apply_time_operator(filters.delta_operator(x.shape[-2], order), x)


def chroma_cens(chroma: tf.Tensor) -> tf.Tensor:
    """librosa.feature.chroma_cens of a given chroma. ``[..., T, 12]`` -> ``[..., T, 12]``"""
    with tf.name_scope("chroma_cens"):
        distribution = normalize_bands(chroma, "l1")  # [..., T, 12]
        quantised = tf.add_n([
            CHROMA_CENS_STEP * tf.cast(distribution > step, tf.float32)
            for step in CHROMA_CENS_THRESHOLDS
        ])  # [..., T, 12]
        smooth = spectral.apply_time_operator(
            filters.cens_smoothing_operator(chroma.shape[-2]), quantised)  # [..., T, 12]
        return normalize_bands(smooth, "l2")  # [..., T, 12]


def burg_lpc(frames: tf.Tensor, order: int) -> tf.Tensor:
    """Burg's method per frame, as librosa.lpc; returns a[1..order]. ``[..., L]`` -> ``[..., order]``

    The coefficients are one tensor: step i adds k a[i + 1 - j] to every a[j], j <= i + 1 (a
    reversed head), three ops where a list of scalars per coefficient took 2 (i + 1).
    """
    with tf.name_scope("burg_lpc"):
        forward = frames[..., 1:]  # [..., L-1]
        backward = frames[..., :-1]  # [..., L-1]
        energy = tf.reduce_sum(forward ** 2 + backward ** 2, axis=-1)  # [...]
        ones = tf.expand_dims(tf.ones_like(energy), -1)  # [..., 1]
        coeffs = tf.concat([ones, tf.zeros_like(ones)], -1)  # [..., 2]  a[0] = 1, a[1] = 0
        for i in range(order):
            reflection = -2.0 * tf.reduce_sum(backward * forward, axis=-1) / (energy + TINY)  # [...]
            # expand_dims, not [..., tf.newaxis]: TFLite slices take no new axis after an ellipsis.
            k = tf.expand_dims(reflection, -1)  # [..., 1]
            coeffs = coeffs + k * tf.reverse(coeffs, [-1])  # [..., i + 2]  a[j] + k a[i + 1 - j]
            if i + 1 < order:
                coeffs = tf.concat([coeffs, tf.zeros_like(k)], -1)  # [..., i + 3]  a[i + 2] = 0
            forward, backward = forward + k * backward, backward + k * forward  # [..., L-1-i]
            forward, backward = forward[..., 1:], backward[..., :-1]  # [..., L-2-i]
            # Marple's DEN_M, summed afresh: his running update loses float32 precision on
            # nearly singular frames.
            energy = tf.reduce_sum(forward ** 2 + backward ** 2, axis=-1)  # [...]
        return coeffs[..., 1:]  # [..., order]


def linear_ramp_pad(x: tf.Tensor, pad: int) -> tf.Tensor:
    """np.pad(mode="linear_ramp", end_values=0) on the last axis. ``[..., n]`` -> ``[..., n + 2 pad]``"""
    with tf.name_scope("linear_ramp_pad"):
        ramp = tf.constant(np.arange(pad, dtype=np.float32) / pad)  # [pad]: 0 .. (pad-1)/pad
        left = x[..., :1] * ramp  # [..., pad]
        right = x[..., -1:] * ramp[::-1]  # [..., pad]
        return tf.concat([left, x, right], axis=-1)  # [..., n + 2 pad]


class _Intermediates:
    """What the maps share: the waveforms' spectrogram cache and the derived dB mel."""

    def __init__(self, cache: spectral.SpectrogramCache, sample_rate: int, features: FeatureConfig):
        self.cache = cache
        self.y = cache.y  # [..., n]
        self.sample_rate = sample_rate
        self.features = features

    @functools.cached_property
    def magnitude(self) -> tf.Tensor:
        return self.cache.magnitude(self.features.n_fft, self.features.hop_length)  # [..., T, n_fft/2+1]

    @functools.cached_property
    def power(self) -> tf.Tensor:
        return self.cache.power(self.features.n_fft, self.features.hop_length)  # [..., T, n_fft/2+1]

    @functools.cached_property
    def mel_db(self) -> tf.Tensor:
        f = self.features
        mel = self.cache.mel_power(self.sample_rate, f.n_fft, f.hop_length, f.n_mels, f.fmax)
        return spectral.power_to_db(mel)  # [..., T, n_mels]


def mel_map(s: _Intermediates) -> tf.Tensor:
    return s.mel_db  # [..., T, n_mels]


def mel_delta_map(s: _Intermediates) -> tf.Tensor:
    return delta(s.mel_db, 1)  # [..., T, n_mels]


def mel_delta2_map(s: _Intermediates) -> tf.Tensor:
    return delta(s.mel_db, 2)  # [..., T, n_mels]


def mfcc_map(s: _Intermediates) -> tf.Tensor:
    with tf.name_scope("mfcc"):
        f = s.features
        bank = filters.mel_filterbank(s.sample_rate, f.n_fft, f.n_mels)
        log_mel = spectral.power_to_db(spectral.apply_filterbank(s.power, bank), ref_max=False)  # [..., T, n_mels]
        mfcc = spectral.apply_filterbank(log_mel, filters.dct_matrix(f.n_mels, f.n_mfcc))  # [..., T, n_mfcc]
        return tf.concat([mfcc, delta(mfcc, 1), delta(mfcc, 2)], axis=-1)  # [..., T, 3 n_mfcc]


def chroma_map(s: _Intermediates) -> tf.Tensor:
    with tf.name_scope("chroma"):
        bank = filters.chroma_filterbank(s.sample_rate, s.features.n_fft)
        chroma = normalize_bands(spectral.apply_filterbank(s.magnitude, bank), "max")  # [..., T, 12]
        return tf.concat([chroma, chroma_cens(chroma)], axis=-1)  # [..., T, 24]


def gammatone_map(s: _Intermediates) -> tf.Tensor:
    with tf.name_scope("gammatone"):
        f = s.features
        bank = filters.mel_filterbank(s.sample_rate, f.n_fft, f.n_gammatone)
        return log1p(spectral.apply_filterbank(s.magnitude, bank))  # [..., T, n_gammatone]


def modulation_map(s: _Intermediates) -> tf.Tensor:
    with tf.name_scope("modulation"):
        n_frames, n_mels = s.mel_db.shape[-2], s.mel_db.shape[-1]
        cepstrum = spectral.apply_filterbank(s.mel_db, filters.dct_matrix(n_mels, N_MODULATION))  # [..., T, 40]
        time_dct = filters.dct_matrix(n_frames, n_frames).T  # [T_out, T_in]
        return spectral.apply_time_operator(time_dct, cepstrum)  # [..., T, 40]


def onset_envelope(s: _Intermediates) -> tf.Tensor:
    """librosa.onset.onset_strength (mean over 128 mel bands, lag 1, centred). ``[..., T]``"""
    with tf.name_scope("onset_envelope"):
        hop = s.features.hop_length
        db = s.cache.mel_db(s.sample_rate, ONSET_N_FFT, hop, ONSET_N_MELS)  # [..., T, 128]
        rise = tf.reduce_mean(tf.nn.relu(db[..., 1:, :] - db[..., :-1, :]), axis=-1)  # [..., T-1]
        lead = 1 + ONSET_N_FFT // (2 * hop)
        n_frames = db.shape[-2]
        padded = tf.pad(rise, [[0, 0]] * (rise.shape.rank - 1) + [[lead, 0]])  # [..., T-1+lead]
        return padded[..., :n_frames]  # [..., T]


def tempogram_power(s: _Intermediates) -> tf.Tensor:
    """|DFT|^2 (length ``TEMPOGRAM_FFT_LENGTH``) of the Hann-weighted onset windows of
    librosa.feature.tempogram, as the cache's FFT mode builds it. ``[..., T, M/2 + 1]``"""
    with tf.name_scope("tempogram_power"):
        envelope = onset_envelope(s)  # [..., T]
        padded = linear_ramp_pad(envelope, TEMPOGRAM_WINDOW // 2)  # [..., T + W]
        return spectral.hann_window_power(padded, TEMPOGRAM_WINDOW, envelope.shape[-1],
                                          s.cache.fft_mode)  # [..., T, M/2 + 1]


def tempogram_map(s: _Intermediates) -> tf.Tensor:
    """librosa.feature.tempogram: autocorrelation of the Hann-weighted onset windows, lag 0 = 1.

    The lags are the inverse DFT of ``tempogram_power`` (no wrap-around). ``[..., T, W]``
    """
    with tf.name_scope("tempogram"):
        power = tempogram_power(s)  # [..., T, M/2 + 1]
        lags = spectral.lags_of_power(power, TEMPOGRAM_FFT_LENGTH, TEMPOGRAM_WINDOW,
                                      s.cache.fft_mode)  # [..., T, W]
        return lags / _safe_norm(lags[..., :1])  # [..., T, W]: lag 0 is the max |r|


def zscored_tempogram(s: _Intermediates, n_lags: int) -> tf.Tensor:
    """``zscore(tempogram_map(s), per_band=False)[..., :n_lags]`` without the other lags. ``[..., T, n_lags]``

    The z-score's mean and std over all W lags of every frame come from the power spectrum P of
    the frame's window (length M >= 2W - 1, so its circular lags are the lags -(W-1) .. W-1 and
    zeros): the sum of r over them is P[0] and the sum of r^2 is sum_f P_f^2 / M over all M bins
    (Parseval); r is even, so lags 0 .. W-1 hold half of each plus half of r[0] (resp. r[0]^2).
    The map's largest |value|, which ``standardise`` compares the std with, is lag 0's.
    """
    with tf.name_scope("zscored_tempogram"):
        power = tempogram_power(s)  # [..., T, M/2 + 1]
        lags = spectral.lags_of_power(power, TEMPOGRAM_FFT_LENGTH, n_lags, s.cache.fft_mode)  # [..., T, n_lags]
        lag0 = lags[..., 0]  # [..., T]
        norm = _safe_norm(lag0)  # [..., T]
        dc, nyquist = power[..., 0], power[..., -1]  # 2 x [..., T]
        all_squares = ((2.0 * tf.reduce_sum(tf.square(power), -1) - tf.square(dc) - tf.square(nyquist))
                       / TEMPOGRAM_FFT_LENGTH)  # [..., T]  sum of r^2 over the lags -(W-1) .. W-1
        lag_sums = (dc + lag0) / (2.0 * norm)  # [..., T]  sum of the normalised lags 0 .. W-1
        square_sums = (all_squares + tf.square(lag0)) / (2.0 * tf.square(norm))  # [..., T]  of their squares
        count = float(lags.shape[-2] * TEMPOGRAM_WINDOW)
        mean = tf.reduce_sum(lag_sums, -1)[..., tf.newaxis, tf.newaxis] / count  # [..., 1, 1]
        mean_square = tf.reduce_sum(square_sums, -1)[..., tf.newaxis, tf.newaxis] / count  # [..., 1, 1]
        std = tf.sqrt(tf.maximum(mean_square - tf.square(mean), 0.0))  # [..., 1, 1]
        return standardise(lags / norm[..., tf.newaxis], mean, std)  # [..., T, n_lags]


def lpc_decimation(sample_rate: int, features: FeatureConfig) -> int:
    """Keep every D-th sample of a band-limited waveform before its LPC (1 without a band limit).

    A signal band-limited far below Nyquist has an empty upper band that an all-pole fit would
    spend its poles on: Burg's recursion then turns float32 round-off into O(1) coefficient
    changes (batched vs one clip: 1.4 on the z-scored map at 2 kHz of 16 kHz). The LPC runs at
    ``sample_rate / D`` instead, the largest rate that still holds the band, with D dividing
    ``hop_length`` so its frames stay those of the other maps.
    """
    if features.band_limit_hz == NO_BAND_LIMIT:
        return 1
    most = max(1, int(sample_rate // (2.0 * features.band_limit_hz)))
    return max(d for d in range(1, most + 1) if features.hop_length % d == 0)


def lpc_map(s: _Intermediates) -> tf.Tensor:
    with tf.name_scope("lpc"):
        f = s.features
        step = lpc_decimation(s.sample_rate, f)
        y = s.y[..., ::step]  # [..., n / step]: the band limit already removed what would alias
        emphasised = tf.concat([y[..., :1], y[..., 1:] - PRE_EMPHASIS * y[..., :-1]], axis=-1)  # [..., n / step]
        frame_length = int(round(f.lpc_frame_s * s.sample_rate / step))
        frames = spectral.frame(emphasised, frame_length, f.hop_length // step)  # [..., T', L]
        n = s.y.shape[-1] if s.y.shape[-1] is not None else tf.shape(s.y)[-1]
        # ceil(n / step) samples can hold a frame more than the other maps' 1 + n // hop
        frames = frames[..., :1 + n // f.hop_length, :] * np.hamming(frame_length).astype(np.float32)  # [..., T, L]
        return burg_lpc(frames, f.lpc_order)  # [..., T, order]


MAP_BUILDERS = {
    "mel": mel_map,
    "mel_delta": mel_delta_map,
    "mel_delta2": mel_delta2_map,
    "mfcc": mfcc_map,
    "chroma": chroma_map,
    "gammatone": gammatone_map,
    "modulation": modulation_map,
    "tempogram": tempogram_map,
    "lpc": lpc_map,
}


def raw_maps(y: tf.Tensor, sample_rate: int, features: FeatureConfig,
             fft_mode: spectral.FftMode = spectral.FftMode()) -> dict[str, tf.Tensor]:
    """Each requested map of waveforms ``[..., n]`` before normalisation, time-major. name -> ``[..., T, bands]``"""
    with tf.name_scope("raw_maps"):
        shared = _Intermediates(spectral.SpectrogramCache(y, fft_mode=fft_mode), sample_rate, features)
        return {name: MAP_BUILDERS[name](shared) for name in features.maps}


def _zscored_map(shared: _Intermediates, name: str) -> tf.Tensor:
    """One z-scored map, time-major; the tempogram only as far as ``fit_bands`` keeps it
    (``zscored_tempogram``: its lags cost most of the map). ``[..., T, bands]``"""
    if name == "tempogram":
        return zscored_tempogram(shared, min(shared.features.n_mels, TEMPOGRAM_WINDOW))  # [..., T, <= n_mels]
    return zscore(MAP_BUILDERS[name](shared), per_band=name in PER_BAND_ZSCORE)


def maps_from_cache(cache: spectral.SpectrogramCache, sample_rate: int, features: FeatureConfig) -> tf.Tensor:
    """The stacked, normalised maps of the cache's waveforms, FFTs as ``cache.fft_mode`` says.
    ``[..., n_mels, T, len(maps)]``"""
    with tf.name_scope("spectral_maps"):
        shared = _Intermediates(cache, sample_rate, features)
        n_bands, n_maps = features.n_mels, len(features.maps)
        pieces = [piece for name in features.maps
                  for piece in fit_bands(_zscored_map(shared, name), n_bands)]
        joined = tf.concat(pieces, -1)  # [..., T, C * n_mels], map after map
        n_frames = joined.shape[-2]
        # Row t C + c of [N, T C, n_mels] is map c at frame t, so turning the maps freq-major
        # with the channel innermost is one batched 2-D transpose: about a third cheaper than
        # stacking the maps and moving the channel axis to the end.
        rows = tf.reshape(joined, [-1, n_frames * n_maps, n_bands])  # [N, T C, n_mels]
        flipped = tf.transpose(rows, [0, 2, 1])  # [N, n_mels, T C]
        leading = joined.shape[:-2]
        tail = [n_bands, n_frames, n_maps]
        shape = [*leading, *tail] if leading.is_fully_defined() else tf.concat([tf.shape(joined)[:-2], tail], 0)
        out = tf.reshape(flipped, shape)  # [..., n_mels, T, C]
        out.set_shape(leading.concatenate(tail))
        return out


def spectral_maps(y: tf.Tensor, sample_rate: int, features: FeatureConfig,
                  fft_mode: spectral.FftMode = spectral.FftMode()) -> tf.Tensor:
    """Waveforms to the stacked, normalised maps. ``[..., n]`` -> ``[..., n_mels, T, len(maps)]``"""
    return maps_from_cache(spectral.SpectrogramCache(y, fft_mode=fft_mode), sample_rate, features)
