"""ICBHI vocal-tract-length perturbation (``tfbreath.icbhi.augment.vtlp``) on synthetic cycles."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from conftest import sine
from tfbreath.icbhi import augment
from tfbreath.icbhi.config import AugmentConfig
from tfbreath.precision import global_policy

RATE = 4000
"""ICBHI's sample rate; ``vtlp`` itself needs none (its warp is stated against Nyquist)."""
LENGTH = 2 * RATE
"""2-s cycles keep the tests fast."""
BIN_HZ = RATE / augment.VTLP_FRAME_LENGTH
"""One STFT bin of ``vtlp``."""
ROUND_TRIP_ATOL = 1e-5
"""STFT -> inverse STFT in float32 (measured ~2e-7 on unit-scale noise)."""
TONE_LEVEL_DB = 1.5
"""``vtlp``'s documented bound on a tone's RMS change (measured: +0.1 dB at alpha 0.9, -0.5 dB at 1.1)."""
NLPAUG_RATE = 16000
"""The sample rate of nlpaug's ``VtlpAug`` defaults, which RespireNet's authors used."""
NLPAUG_FHI_HZ = 4800.0
"""nlpaug's ``fhi``: the warp's upper corner, in Hz at ``NLPAUG_RATE``."""
WARP_ATOL_HZ = 0.01
"""float32 round-off of a warped fraction of Nyquist, in Hz at 8 kHz Nyquist (~1e-3 Hz)."""
NOISE_LOSS_DB = 5.0
"""White noise comes out ~4 dB quieter (documented; measured 4.0 dB); without the frame-centre phase
reference the Hann lobe's bins merge out of phase and it loses over 7 dB."""


def _noise(batch: int = 4, seed: int = 0) -> tf.Tensor:
    return tf.random.stateless_uniform([batch, LENGTH], seed=[seed, 1], minval=-0.5, maxval=0.5)


def _peak_hz(signal: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    return float(np.argmax(spectrum)) * RATE / len(signal)


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_a_tone_below_the_boundary_moves_to_alpha_times_its_frequency(alpha):
    tone_hz = 300.0  # the boundary is 0.6 * 2000 * min(alpha, 1) / alpha >= 1091 Hz
    tone = sine(tone_hz, LENGTH / RATE, RATE, 0.5)
    out = augment.vtlp(tone[np.newaxis], 1.0, alpha, alpha, seed=0).numpy()
    assert out.shape == (1, LENGTH)
    assert abs(_peak_hz(out[0]) - alpha * tone_hz) <= BIN_HZ
    assert abs(_peak_hz(out[0]) - tone_hz) > BIN_HZ


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_levels_of_a_tone_and_of_noise_stay_as_documented(alpha):
    """The warp moves energy, it does not lose it: a tone's RMS within ``TONE_LEVEL_DB``, noise's
    loss under ``NOISE_LOSS_DB`` (away from the circular ends)."""
    tone = sine(300.0, LENGTH / RATE, RATE, 0.5)[np.newaxis]
    noise = _noise(batch=1).numpy()
    edge = augment.VTLP_FRAME_LENGTH

    def change_db(x: np.ndarray) -> float:
        out = augment.vtlp(x, 1.0, alpha, alpha, seed=0).numpy()
        return 10 * np.log10(np.mean(out[:, edge:-edge] ** 2) / np.mean(x[:, edge:-edge] ** 2))

    assert abs(change_db(tone)) <= TONE_LEVEL_DB
    assert -NOISE_LOSS_DB < change_db(noise) < 0.0


def test_alpha_one_returns_the_input():
    x = _noise()
    np.testing.assert_allclose(augment.vtlp(x, 1.0, 1.0, 1.0, seed=3), x, atol=ROUND_TRIP_ATOL)


def test_probability_zero_one_and_silence():
    x = _noise()
    np.testing.assert_array_equal(augment.vtlp(x, 0.0, 0.9, 1.1, seed=1), x)
    changed = np.abs(augment.vtlp(x, 1.0, 0.9, 1.1, seed=1).numpy() - x.numpy()).max(axis=1)
    assert (changed > 0.01).all(), changed
    silence = tf.zeros([2, LENGTH])
    np.testing.assert_array_equal(augment.vtlp(silence, 1.0, 0.9, 1.1, seed=1), silence)


@pytest.mark.parametrize("alpha", [0.5, 0.9, 1.0, 1.1, 2.0])
def test_warp_keeps_zero_and_nyquist_and_increases(alpha):
    frequency = np.linspace(0.0, 1.0, 1001, dtype=np.float32)
    warped = augment.vtlp_warp(frequency, alpha).numpy()
    assert warped[0] == 0.0 and warped[-1] == pytest.approx(1.0, abs=1e-6)
    assert (np.diff(warped) > 0).all()
    low = frequency <= augment.VTLP_HIGH_FRACTION * min(alpha, 1.0) / alpha
    np.testing.assert_allclose(warped[low], alpha * frequency[low], rtol=1e-6)
    if alpha == 1.0:
        np.testing.assert_allclose(warped, frequency, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.8, 0.9, 1.1, 1.2])
def test_warp_is_nlpaugs_in_hz_at_its_default_rate(alpha):
    """The warp stated against Nyquist is nlpaug's, written in Hz with its ``fhi`` at 16 kHz."""
    nyquist = NLPAUG_RATE / 2
    hz = np.linspace(0.0, nyquist, 101)
    corner = NLPAUG_FHI_HZ * min(alpha, 1.0)
    boundary = corner / alpha
    expected = np.where(hz <= boundary, alpha * hz,
                        nyquist - (nyquist - corner) / (nyquist - boundary) * (nyquist - hz))
    warped = augment.vtlp_warp((hz / nyquist).astype(np.float32), alpha).numpy() * nyquist
    np.testing.assert_allclose(warped, expected, atol=WARP_ATOL_HZ)


def test_batched_alphas_warp_row_by_row():
    frequency = np.linspace(0.0, 1.0, 11, dtype=np.float32)
    alphas = np.array([[0.9], [1.1]], np.float32)
    rows = augment.vtlp_warp(frequency, alphas).numpy()
    for row, alpha in zip(rows, alphas[:, 0]):
        np.testing.assert_array_equal(row, augment.vtlp_warp(frequency, alpha).numpy())


def test_same_inside_tf_data_and_under_mixed_bfloat16():
    x = _noise(batch=3, seed=2)
    seed = tf.constant([7, 8], tf.int64)
    direct = augment.vtlp(x, 0.7, 0.9, 1.1, seed).numpy()
    mapped = next(iter(tf.data.Dataset.from_tensors(x).map(lambda w: augment.vtlp(w, 0.7, 0.9, 1.1, seed))))
    np.testing.assert_allclose(mapped, direct, atol=1e-6)
    with global_policy("mixed_bfloat16"):
        under_policy = augment.vtlp(x, 0.7, 0.9, 1.1, seed)
        half = augment.vtlp(tf.cast(x, tf.bfloat16), 0.7, 0.9, 1.1, seed)
    assert under_policy.dtype == tf.float32 and half.dtype == tf.bfloat16
    np.testing.assert_allclose(under_policy, direct, atol=1e-6)


def test_cycle_augmenter_applies_vtlp_and_keeps_the_other_draws():
    batch = (_noise(batch=8, seed=4), tf.constant([0, 1, 1, 2, 2, 3, 3, 0]), tf.zeros(8, tf.int32),
             tf.fill([8], LENGTH))
    default = augment.CycleAugmenter(AugmentConfig(), seed=5)(*batch)[0]
    identity = dataclasses.replace(AugmentConfig(), vtlp_probability=1.0, vtlp_alpha_min=1.0, vtlp_alpha_max=1.0)
    with_identity = augment.CycleAugmenter(identity, seed=5)(*batch)[0]
    np.testing.assert_allclose(with_identity, default, atol=ROUND_TRIP_ATOL)  # vtlp's seed is a new one

    only_vtlp = AugmentConfig(concat=False, noise_probability=0.0, speed_probability=0.0, shift_probability=0.0,
                              vtlp_probability=1.0)
    out = augment.CycleAugmenter(only_vtlp, seed=5)(*batch)
    assert out[0].shape == batch[0].shape and out[0].dtype == batch[0].dtype
    assert not np.allclose(out[0], batch[0], atol=0.01)
    for got, want in zip(out[1:], batch[1:]):
        np.testing.assert_array_equal(got, want)
