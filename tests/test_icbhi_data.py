"""ICBHI data side: preprocessing, smart padding, augmentations, spectrograms and the cycle datasets."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile as sf
import tensorflow as tf

from conftest import ICBHI_DIR, needs_icbhi, sine
from tfbreath.config import with_overrides
from tfbreath.icbhi import augment, preprocess
from tfbreath.icbhi.config import AudioConfig, AugmentConfig, IcbhiConfig, SplitConfig
from tfbreath.icbhi.dataset import CLASS_NAMES, CycleSet, build_cycle_set, load_cycle_sets
from tfbreath.icbhi.padding import repeat_to_length, smart_pad
from tfbreath.icbhi.reader import Cycle, read_database
from tfbreath.icbhi.spectrogram import (blank_rows, clip_blank_rows, cycle_spectrogram, mel_db, scaled_image,
                                        spectrogram_shape)
from tfbreath.icbhi.synthetic import DEVICE_FORMATS, write_recording, write_synthetic_icbhi
from tfbreath.icbhi.trainer import hold_out_validation

CONFIG = IcbhiConfig()
SHORT = dataclasses.replace(CONFIG, audio=dataclasses.replace(CONFIG.audio, cycle_s=2.0))
"""2-s cycles keep the dataset tests fast."""


def _wav_bytes(audio: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, subtype=subtype, format="WAV")
    return buffer.getvalue()


def _amplitude(signal: np.ndarray, freq: float, rate: int) -> float:
    """Amplitude of one sinusoid in a signal (least-squares projection on sin and cos)."""
    t = np.arange(len(signal)) / rate
    basis = np.stack([np.sin(2 * np.pi * freq * t), np.cos(2 * np.pi * freq * t)], axis=1)
    coefficients, *_ = np.linalg.lstsq(basis, signal, rcond=None)
    return float(np.hypot(*coefficients))


# ----------------------------------------------------------------------------- preprocessing

@pytest.mark.parametrize("rate", [8000, 4000])
def test_band_attenuates_20_hz_and_2500_hz_and_passes_500_hz(rate):
    source_rate = 44100
    mix = (sine(20.0, 3.0, source_rate, 0.25) + sine(500.0, 3.0, source_rate, 0.25)
           + sine(2500.0, 3.0, source_rate, 0.25))
    config = AudioConfig(sample_rate=rate)
    out, status = preprocess.preprocess_wav(tf.constant(_wav_bytes(mix, source_rate)), config)
    out = out.numpy()[rate // 2:-rate // 2]  # away from the ends
    assert int(status) == 0 and np.abs(out).max() <= 1.0
    passed = _amplitude(out, 500.0, rate)
    assert passed > 0.7  # the peak normalisation also sees the filter's settling at the ends
    assert _amplitude(out, 20.0, rate) < 0.01 * passed
    if rate > 5000:
        assert _amplitude(out, 2500.0, rate) < 0.05 * passed
    else:  # 2.5 kHz cannot exist at 4 kHz: it must not come back as a 1.5 kHz alias either
        assert _amplitude(out, 1500.0, rate) < 0.01 * passed


def test_filter_design_switches_to_high_pass_at_nyquist():
    high = preprocess.filter_sos(AudioConfig())  # 50-2000 Hz at 4 kHz: the top is Nyquist
    band = preprocess.filter_sos(AudioConfig(sample_rate=8000))
    freqs = [10.0, 500.0, 1990.0]
    _, response = scipy.signal.sosfreqz(high, worN=freqs, fs=4000)
    assert abs(response[0]) < 1e-3 and abs(response[1]) > 0.99 and abs(response[2]) > 0.99
    _, response = scipy.signal.sosfreqz(band, worN=[500.0, 3500.0], fs=8000)
    assert abs(response[0]) > 0.99 and abs(response[1]) < 0.01


def test_in_graph_filter_matches_scipy_sosfiltfilt():
    rng = np.random.default_rng(0)
    signal = rng.standard_normal(8000 * 3).astype(np.float32)
    for config in (AudioConfig(), AudioConfig(sample_rate=8000)):
        sos = preprocess.filter_sos(config)
        pad = int(preprocess.EDGE_PAD_S * config.sample_rate)
        ours = preprocess.zero_phase_filter(signal, sos, pad).numpy()
        reference = scipy.signal.sosfiltfilt(sos, signal, padtype="even", padlen=pad)
        assert np.abs(ours - reference).max() < 1e-4 * np.abs(reference).max()


def test_preprocess_wav_is_peak_normalised_sosfiltfilt_with_the_edge_padding():
    """The whole recording, ends included: ``preprocess_wav`` pads by ``EDGE_PAD_S`` of mirror image
    (without it the FFT product wraps the end into the start)."""
    config = AudioConfig()
    rate = config.sample_rate
    signal = np.random.default_rng(4).uniform(-0.5, 0.5, 2 * rate).astype(np.float32)
    out, status = preprocess.preprocess_wav(tf.constant(_wav_bytes(signal, rate, "FLOAT")), config)
    reference = scipy.signal.sosfiltfilt(preprocess.filter_sos(config), signal, padtype="even",
                                         padlen=int(preprocess.EDGE_PAD_S * rate))
    filter_atol = 1e-4  # float32 FFT product against scipy's float64 recursion, as in the test above
    assert int(status) == 0
    np.testing.assert_allclose(out.numpy(), reference / np.abs(reference).max(), atol=filter_atol)


def test_peak_normalisation_divides_by_the_largest_magnitude_of_either_sign():
    """A recording whose peak is negative still ends up in [-1, 1]; silence stays zero."""
    negative_peak = np.array([0.5, -2.0, 1.0], np.float32)
    np.testing.assert_allclose(preprocess.normalize_peak(negative_peak), negative_peak / 2.0)
    np.testing.assert_array_equal(preprocess.normalize_peak(np.zeros(3, np.float32)), np.zeros(3))


def test_cycles_are_cut_at_the_target_rate():
    recording = np.arange(4000 * 3, dtype=np.float32)
    cycle = preprocess.cut_cycle(recording, Cycle(0.5, 1.25, False, False), 4000)
    assert cycle[0] == 2000 and len(cycle) == 3000
    assert len(preprocess.cut_cycle(recording, Cycle(2.5, 3.5, False, False), 4000)) == 2000
    # The bounds themselves are clipped to the recording (cycle_bounds is public, not only a slice).
    assert preprocess.cycle_bounds(Cycle(2.5, 3.5, False, False), 4000, len(recording)) == (10000, 12000)


# ----------------------------------------------------------------------------- smart padding

def _tagged(lengths):
    """Cycles whose samples are their own index, so a padded waveform shows where each piece came from."""
    return [np.full(n, i, np.float32) for i, n in enumerate(lengths)]


def test_smart_padding_takes_eligible_neighbours_after_then_before():
    cycles = _tagged([3, 2, 2, 2, 3, 4])
    labels = [0, 1, 1, 2, 0, 1]
    # Cycle 2 (crackle): next is 3 (wheeze: stop after), previous 1 (crackle) then 0 (normal).
    padded = smart_pad(cycles, labels, 2, 8)
    assert (padded.before, padded.after) == ((1, 0), ())
    assert padded.waveform.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]  # then copies of itself fill the rest
    assert (padded.offset, padded.cycle_length) == (5, 2)
    # Cycle 4 (normal): next 5 is a crackle (stop), previous 3 is a wheeze (stop): repeat itself.
    padded = smart_pad(cycles, labels, 4, 8)
    assert (padded.before, padded.after) == ((), ())
    assert padded.waveform.tolist() == [4] * 8
    # Cycle 1 (crackle): after 2 (crackle), before 0 (normal), after 3 is a wheeze: stop; the
    # length is reached inside cycle 0, which is cut at its outer (earlier) end.
    padded = smart_pad(cycles, labels, 1, 6)
    assert (padded.before, padded.after) == ((0,), (2,))
    assert padded.waveform.tolist() == [0, 0, 1, 1, 2, 2]
    assert (padded.offset, padded.cycle_length) == (2, 2)


def test_smart_padding_cuts_the_last_neighbour_after_and_keeps_long_cycles_whole():
    cycles = _tagged([2, 5, 1])
    padded = smart_pad(cycles, [1, 1, 0], 0, 4)  # next (1, same class) is cut
    assert padded.waveform.tolist() == [0, 0, 1, 1] and padded.after == (1,)
    padded = smart_pad(cycles, [1, 1, 0], 1, 4)  # longer than the target: its first 4 samples
    assert padded.waveform.tolist() == [1, 1, 1, 1] and padded.cycle_length == 4


def test_smart_padding_stops_at_an_exact_fit_and_at_an_empty_neighbour():
    """A neighbour that reaches the length exactly ends the padding: the other side joins nothing
    more (``before``/``after`` list only cycles whose audio is in the waveform). An empty neighbour (a
    cycle shorter than one sample) stops its side like an ineligible one."""
    exact = smart_pad(_tagged([3, 2, 2]), [1, 1, 1], 1, 4)
    assert (exact.before, exact.after) == ((), (2,)) and exact.waveform.tolist() == [1, 1, 2, 2]
    gap = smart_pad(_tagged([2, 0, 2]), [0, 0, 0], 0, 6)
    assert (gap.before, gap.after) == ((), ()) and gap.waveform.tolist() == [0] * 6


def test_plain_padding_repeats_the_cycle():
    cycles = [np.array([1, 2, 3], np.float32), np.array([9, 9], np.float32)]
    padded = smart_pad(cycles, [0, 0], 0, 8, smart=False)
    assert padded.waveform.tolist() == [1, 2, 3, 1, 2, 3, 1, 2] and padded.offset == 0


# ----------------------------------------------------------------------------- augmentation

def test_concat_joins_two_cycles_of_the_same_class():
    waveforms = tf.constant([[0.0] * 6, [1, 1, 1, 7, 7, 7], [-2, 2, -2, 2, 8, 8], [3.0] * 6])
    labels = tf.constant([0, 1, 1, 2])
    offsets, lengths = tf.constant([0, 0, 1, 0]), tf.constant([6, 3, 2, 6])
    out = augment.concat_same_class(waveforms, labels, offsets, lengths, probability=1.0, seed=0).numpy()
    assert out[1].tolist() == [1, 1, 1, 2, -2, 1]  # own 3 samples + partner's own 2, repeated
    assert out[2].tolist() == [2, -2, 1, 1, 1, 2]
    assert out[0].tolist() == [0] * 6 and out[3].tolist() == [3] * 6  # no same-class partner
    unchanged = augment.concat_same_class(waveforms, labels, offsets, lengths, probability=0.0, seed=0)
    np.testing.assert_array_equal(unchanged, waveforms)
    # Rows 1 and 2 as two draws of one cycle (the balanced sampler draws with replacement): no partner.
    one_cycle = augment.concat_same_class(waveforms, labels, offsets, lengths, probability=1.0, seed=0,
                                          cycle_ids=tf.constant([0, 5, 5, 7]))
    np.testing.assert_array_equal(one_cycle, waveforms)
    augmented = augment.CycleAugmenter(AugmentConfig(concat_probability=1.0, speed_probability=0.0,
                                                     shift_probability=0.0, noise_probability=0.0), seed=0)
    np.testing.assert_array_equal(augmented(waveforms, labels, offsets, lengths, tf.constant([0, 5, 5, 7]))[0],
                                  waveforms)
    assert augmented(waveforms, labels, offsets, lengths)[0].numpy()[1].tolist() == [1, 1, 1, 2, -2, 1]


def test_shift_speed_and_noise():
    x = tf.constant(np.arange(2 * 50, dtype=np.float32).reshape(2, 50) / 100.0)
    rolled = augment.shift(x, 1.0, seed=1).numpy()
    amounts = []
    for row, original in zip(rolled, x.numpy()):
        amounts.append(int(np.argmax(row == original[0])))
        np.testing.assert_array_equal(row, np.roll(original, amounts[-1]))
    assert any(amounts)  # a shift moved something
    np.testing.assert_allclose(augment.change_speed(x, 1.0, 1.0, 1.0, seed=0), x, atol=1e-6)
    doubled = augment.change_speed(x, 1.0, 2.0, 2.0, seed=0).numpy()
    np.testing.assert_allclose(doubled[0], x.numpy()[0][(2 * np.arange(50)) % 50], atol=1e-6)
    faster = augment.change_speed(x, 1.0, 1.5, 1.5, seed=0).numpy()  # between samples: interpolated
    position = (1.5 * np.arange(50)) % 50  # read circularly
    circular = np.append(x.numpy()[0], x.numpy()[0, 0])  # [51]: the first sample again after the last
    np.testing.assert_allclose(faster[0], np.interp(position, np.arange(51), circular), atol=1e-6)
    signal = tf.constant(sine(300.0, 1.0, 4000, 0.5)[np.newaxis].repeat(4, 0))
    noisy = augment.add_noise(signal, 1.0, 20.0, 20.0, seed=2).numpy()
    snr = 10 * np.log10(np.mean(signal.numpy() ** 2) / np.mean((noisy - signal.numpy()) ** 2))
    assert 19.0 < snr < 21.0 and np.abs(noisy).max() <= 1.0
    spread = augment.add_noise(signal, 1.0, 10.0, 30.0, seed=2).numpy()  # one SNR per cycle, drawn in the range
    snrs = 10 * np.log10(np.mean(signal.numpy() ** 2) / np.mean((spread - signal.numpy()) ** 2, axis=1))
    assert np.all((snrs > 9.5) & (snrs < 30.5)) and np.ptp(snrs) > 3.0


def test_noise_is_scaled_per_cycle_and_clipped_and_speed_is_drawn_per_cycle():
    """The SNR is each cycle's own (a quiet cycle beside a loud one gets quiet noise); a full-scale
    cycle's noisy samples are clipped to [-1, 1]; each cycle gets its own speed factor in range."""
    snr_db, quiet_gain, snr_atol_db = 20.0, 0.01, 1.0  # one random draw of noise: within 1 dB of the SNR
    loud = sine(300.0, 1.0, 4000, 0.5)
    signal = np.stack([loud, quiet_gain * loud])
    noisy = augment.add_noise(tf.constant(signal), 1.0, snr_db, snr_db, seed=2).numpy()
    snrs = 10 * np.log10(np.mean(signal ** 2, axis=1) / np.mean((noisy - signal) ** 2, axis=1))
    np.testing.assert_allclose(snrs, snr_db, atol=snr_atol_db)
    full_scale = np.sign(loud)[np.newaxis]  # a square wave at +-1: the noise pushes about half its samples out
    clipped = augment.add_noise(tf.constant(full_scale), 1.0, snr_db, snr_db, seed=2).numpy()
    at_full_scale = np.mean(np.abs(clipped) == 1.0)
    assert np.abs(clipped).max() == 1.0 and at_full_scale > 0.5 / 2

    config, batch, length = AugmentConfig(), 16, 100
    ramp = tf.constant(np.tile(np.arange(length, dtype=np.float32) / length, (batch, 1)))
    faster = augment.change_speed(ramp, 1.0, config.speed_min, config.speed_max, seed=3).numpy()
    factors = (faster[:, 1] - faster[:, 0]) * length  # the ramp's slope is the speed factor
    slope_atol = 1e-4  # float32 round-off of one ramp step, times the length
    assert np.all((factors >= config.speed_min - slope_atol) & (factors <= config.speed_max + slope_atol))
    assert np.ptp(factors) > (config.speed_max - config.speed_min) / 2


def test_augmenter_is_reproducible_and_keeps_shapes():
    batch = (tf.random.stateless_uniform([8, 400], seed=[1, 2], minval=-1, maxval=1),
             tf.constant([0, 1, 1, 2, 2, 3, 3, 0]), tf.zeros(8, tf.int32), tf.fill([8], 400))
    first = augment.CycleAugmenter(AugmentConfig(), seed=5)(*batch)[0]
    second = augment.CycleAugmenter(AugmentConfig(), seed=5)(*batch)[0]
    np.testing.assert_array_equal(first, second)
    assert first.shape == (8, 400) and not np.array_equal(first, batch[0])


def test_balanced_sampler_draws_classes_equally():
    labels = np.array([0] * 90 + [1] * 8 + [3] * 2)
    drawn = np.array(list(augment.balanced_indices(labels, seed=0).take(1500).as_numpy_iterator()))
    shares = np.bincount(labels[drawn], minlength=4) / len(drawn)
    np.testing.assert_allclose(shares, [1 / 3, 1 / 3, 0, 1 / 3], atol=0.05)


# ----------------------------------------------------------------------------- spectrogram

def test_mel_matches_librosa():
    rng = np.random.default_rng(1)
    y = (0.3 * rng.standard_normal(CONFIG.audio.num_samples)).astype(np.float32)
    spec = CONFIG.spectrogram
    reference = librosa.power_to_db(librosa.feature.melspectrogram(
        y=y, sr=CONFIG.audio.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length, n_mels=spec.n_mels,
        fmin=spec.fmin, fmax=spec.fmax), ref=np.max, top_db=spec.top_db)  # [n_mels, T]
    np.testing.assert_allclose(mel_db(y, CONFIG).numpy().T, reference, atol=0.01)
    image = scaled_image(y, CONFIG).numpy()  # row 0 = highest band
    scaled = (reference - reference.min()) / (reference.max() - reference.min())
    np.testing.assert_allclose(image, scaled[::-1], atol=1e-3)


def test_blank_rows_counts_only_the_blank_rows_at_the_top():
    spec = CONFIG.spectrogram
    image = np.full((8, 20), 0.5, np.float32)
    image[:3] = 0.0  # blank
    image[3, :17] = 0.01  # 85 % below 10/255: blank
    image[4, :14] = 0.01  # 70 %: not blank, the clipping stops here
    image[5] = 0.0  # blank but below a kept row: kept
    assert int(blank_rows(image, spec)) == 4
    assert int(blank_rows(np.zeros((8, 20), np.float32), spec)) == 0  # silence: nothing clipped
    assert int(blank_rows(np.full((8, 20), 0.5, np.float32), spec)) == 0
    clipped = clip_blank_rows(tf.constant(image[np.newaxis]), spec).numpy()[0]
    assert clipped.shape == (8, 20)
    np.testing.assert_allclose(clipped[0], image[4])  # first kept row at the top
    np.testing.assert_allclose(clipped[-1], image[-1])  # the bottom row stays
    np.testing.assert_allclose(clipped[1], image[4] + (image[5] - image[4]) * (3 / 7), atol=1e-6)
    untouched = np.random.default_rng(0).uniform(0.2, 1.0, (1, 8, 20)).astype(np.float32)
    np.testing.assert_allclose(clip_blank_rows(tf.constant(untouched), spec), untouched, atol=1e-6)


def test_a_row_at_exactly_the_blank_share_is_blank_and_a_pixel_at_the_level_is_not():
    """A pixel is blank strictly below ``blank_level`` (10/255); a row is blank when at least
    ``blank_row_fraction`` (80 %) of its pixels are, so exactly that share counts."""
    spec, width = CONFIG.spectrogram, 20
    image = np.full((4, width), 0.5, np.float32)
    image[0, :round(spec.blank_row_fraction * width)] = 0.0  # exactly the share: blank
    image[1] = spec.blank_level  # every pixel at the level, none below it: not blank
    assert int(blank_rows(image, spec)) == 1


def test_a_silent_cycle_is_a_black_image_not_nan():
    """Min-max scaling of a flat spectrogram divides 0 by 0: the grey input must be 0, not NaN."""
    silent = cycle_spectrogram(np.zeros(SHORT.audio.num_samples, np.float32), SHORT).numpy()
    np.testing.assert_array_equal(silent, np.zeros(spectrogram_shape(SHORT), np.float32))


def test_mel_db_is_floored_top_db_below_its_peak():
    """A pure tone leaves the far bands near -inf dB; ``power_to_db``'s ``top_db`` floors them."""
    db = mel_db(sine(300.0, CONFIG.audio.cycle_s, CONFIG.audio.sample_rate, 0.5), CONFIG).numpy()
    assert db.max() == 0.0 and db.min() == pytest.approx(-CONFIG.spectrogram.top_db)


def test_clipping_drops_the_empty_high_bands_of_a_low_passed_cycle():
    rng = np.random.default_rng(2)
    sos = scipy.signal.butter(8, 700.0, fs=4000, output="sos")
    y = scipy.signal.sosfilt(sos, rng.standard_normal(CONFIG.audio.num_samples)).astype(np.float32)
    y /= np.abs(y).max()
    image = scaled_image(y, CONFIG)
    dropped = int(blank_rows(image, CONFIG.spectrogram))
    band_tops = librosa.mel_frequencies(CONFIG.spectrogram.n_mels + 2, fmin=50.0, fmax=2000.0)[2:][::-1]
    assert dropped > 0 and band_tops[dropped - 1] > 1000.0  # only bands well above the 700 Hz edge
    clipped = cycle_spectrogram(y, CONFIG).numpy()[..., 0]
    unclipped = cycle_spectrogram(y, dataclasses.replace(
        CONFIG, spectrogram=dataclasses.replace(CONFIG.spectrogram, clip_blank=False))).numpy()[..., 0]
    assert int(blank_rows(clipped, CONFIG.spectrogram)) == 0 < int(blank_rows(unclipped, CONFIG.spectrogram))


def test_spectrogram_direct_call_equals_inside_dataset_map():
    rng = np.random.default_rng(3)
    waveforms = (0.5 * rng.standard_normal((3, SHORT.audio.num_samples))).astype(np.float32)
    waveforms[1, :] *= np.linspace(0, 1, waveforms.shape[1]) ** 4  # a quieter, growing one
    direct = cycle_spectrogram(waveforms, SHORT).numpy()
    assert direct.shape == (3, *spectrogram_shape(SHORT))
    single = tf.data.Dataset.from_tensor_slices(waveforms).map(lambda w: cycle_spectrogram(w, SHORT))
    np.testing.assert_allclose(np.stack(list(single.as_numpy_iterator())), direct, atol=1e-5)
    batched = tf.data.Dataset.from_tensor_slices(waveforms).batch(2).map(lambda w: cycle_spectrogram(w, SHORT))
    np.testing.assert_allclose(np.concatenate(list(batched.as_numpy_iterator())), direct, atol=1e-5)
    assert direct.min() >= 0.0 and direct.max() <= 1.0


# ----------------------------------------------------------------------------- cycle sets

@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    return write_synthetic_icbhi(tmp_path_factory.mktemp("icbhi"), n_patients=5, recordings_per_patient=1,
                                 cycles_per_recording=5)


@pytest.fixture(scope="module")
def cycle_sets(synthetic_root):
    return load_cycle_sets(SHORT, synthetic_root, progress=False)


def test_load_cycle_sets_shapes_lengths_and_sides(cycle_sets, synthetic_root):
    train, test, report = cycle_sets
    recordings, _ = read_database(synthetic_root)
    assert len(train) + len(test) == report.cycles == 25
    for cycles in (train, test):
        assert cycles.waveforms.shape == (len(cycles), SHORT.audio.num_samples)
        assert cycles.waveforms.dtype == np.float32 and np.abs(cycles.waveforms).max() <= 1.0
        assert set(cycles.devices) <= set(DEVICE_FORMATS)
        assert ((cycles.offsets >= 0) & (cycles.offsets + cycles.lengths <= SHORT.audio.num_samples)).all()
    train_patients = {stem.split("_")[0] for stem in train.recordings}
    assert not train_patients & {stem.split("_")[0] for stem in test.recordings}
    by_stem = {r.stem: r for r in recordings}
    expected = [c.label4 for stem in dict.fromkeys(test.recordings) for c in by_stem[stem].cycles]
    assert test.labels.tolist() == expected
    # Each cycle's own audio sits where the offsets say; it is the preprocessed recording's.
    first = by_stem[test.recordings[0]]
    signal = next(preprocess.recording_dataset([str(first.wav)], SHORT.audio).as_numpy_iterator())[0]
    own = preprocess.cut_cycle(signal, first.cycles[0], SHORT.audio.sample_rate)[:SHORT.audio.num_samples]
    np.testing.assert_allclose(test.waveforms[0, test.offsets[0]:test.offsets[0] + len(own)], own, atol=1e-6)


def _repeats_itself(cycles: CycleSet) -> np.ndarray:
    """Per row: whether its waveform is its own cycle followed by copies of it (no neighbour). ``[N]``"""
    return np.array([offset == 0 and np.array_equal(waveform, repeat_to_length(waveform[:own], len(waveform)))
                     for waveform, offset, own in zip(cycles.waveforms, cycles.offsets, cycles.lengths)])


def test_held_out_cycles_are_padded_without_their_neighbours_labels(cycle_sets, synthetic_root):
    """Smart padding picks neighbours by their annotated labels: the test cycles, and the
    validation cycles that choose the epoch, are padded by repeating themselves unless ``smart_test``."""
    train, test, _ = cycle_sets
    assert _repeats_itself(test).all()
    assert not _repeats_itself(train).all()  # training cycles do join their neighbours
    _, smart_test, _ = load_cycle_sets(with_overrides(SHORT, "padding", smart_test=True), synthetic_root,
                                       progress=False)
    assert not _repeats_itself(smart_test).all()
    kept, validation = hold_out_validation(train, with_overrides(SHORT, "train", select="best"))
    assert len(validation) and _repeats_itself(validation).all() and not _repeats_itself(kept).all()


def test_evaluation_dataset_is_in_order(cycle_sets):
    _, test, _ = cycle_sets
    batches = list(test.dataset(SHORT, 4, training=False).as_numpy_iterator())
    spectrograms = np.concatenate([x for x, _ in batches])
    one_hot = np.concatenate([y for _, y in batches])
    assert spectrograms.shape == (len(test), *spectrogram_shape(SHORT)) and spectrograms.dtype == np.float32
    assert one_hot.shape == (len(test), 4) and (one_hot.argmax(1) == test.labels).all()
    np.testing.assert_allclose(spectrograms[:2], cycle_spectrogram(test.waveforms[:2], SHORT), atol=1e-5)


def test_training_dataset_is_one_augmented_epoch(cycle_sets):
    train, _, _ = cycle_sets
    ds = train.dataset(SHORT, 8, training=True, seed=0)
    batches = list(ds.as_numpy_iterator())
    assert sum(len(y) for _, y in batches) == len(train)
    assert batches[0][0].shape[1:] == spectrogram_shape(SHORT)
    again = list(train.dataset(SHORT, 8, training=True, seed=0).as_numpy_iterator())
    np.testing.assert_allclose(again[0][0], batches[0][0], atol=1e-5)


@pytest.mark.filterwarnings("ignore:The least populated class")  # 5 tiny patients, 5 folds
def test_two_class_labels_and_subset(cycle_sets, synthetic_root):
    two = dataclasses.replace(SHORT, train=dataclasses.replace(SHORT.train, classes=2),
                              split=SplitConfig("80_20", seed=1))
    train, test, _ = load_cycle_sets(two, synthetic_root, progress=False)
    assert set(train.labels) | set(test.labels) <= {0, 1} and len(CLASS_NAMES[2]) == 2
    _, y = next(iter(test.dataset(two, 64, training=False)))
    assert y.shape[1] == 2
    part = train.subset([0, 2])
    assert len(part) == 2 and part.recordings[1] == train.recordings[2]


def test_a_silent_recording_is_a_reported_skip(tmp_path):
    write_recording(tmp_path, "105_1b1_Al_sc_Meditron", sine(300.0, 3.0, 4000), 4000,
                    (Cycle(0.1, 1.0, False, False), Cycle(1.0, 2.5, True, False)))
    write_recording(tmp_path, "106_1b1_Al_sc_Meditron", np.zeros(4000 * 3), 4000, (Cycle(0.1, 1.0, False, False),))
    recordings, report = read_database(tmp_path)
    cycles = build_cycle_set(recordings, SHORT, True, report, progress=False)
    assert len(cycles) == 2 and report.recordings == 1 and report.cycles == 2
    assert [s.kind for s in report.skipped_files] == ["undecodable WAV"]
    assert "silent" in report.skipped_files[0].message


def test_cycle_set_validates_its_arrays():
    with pytest.raises(ValueError, match="labels must have 2 entries"):
        CycleSet(np.zeros((2, 10)), [0], ["a", "b"], ["x", "y"])
    cycles = CycleSet(np.zeros((2, 10)), [0, 5], ["a", "b"], ["x", "y"])
    assert cycles.lengths.tolist() == [10, 10]
    with pytest.raises(ValueError, match=r"labels must be in \[0, 4\), got \[0, 5\]"):
        cycles.dataset(SHORT, 2, training=False)


@needs_icbhi
def test_real_recordings_become_padded_cycles():
    recordings, report = read_database(ICBHI_DIR)
    chosen = [r for r in recordings if r.stem in ("101_1b1_Al_sc_Meditron", "104_1b1_Lr_sc_Litt3200")]
    cycles = build_cycle_set(chosen, CONFIG, True, report, progress=False)  # 32-bit 44.1 kHz + 16-bit 4 kHz
    assert cycles.waveforms.shape == (12 + 5, CONFIG.audio.num_samples)
    assert set(cycles.devices) == {"Meditron", "Litt3200"}
    assert np.abs(cycles.waveforms).max() <= 1.0 and np.isfinite(cycles.waveforms).all()
    assert (cycles.lengths == np.minimum(
        [round(c.end_s * 4000) - round(c.start_s * 4000) for r in chosen for c in r.cycles], 28000)).all()
