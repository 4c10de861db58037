"""Recordings cut into clip-long windows: where the windows start and what each sample's P(exhale) is."""

from __future__ import annotations

import numpy as np

from tfbreath import recording
from tfbreath.config import PipelineConfig

CLIP = PipelineConfig().audio.num_samples


def test_window_starts_end_with_the_recording():
    assert recording.window_starts(CLIP // 2, CLIP, CLIP // 2).tolist() == [0]
    assert recording.window_starts(CLIP, CLIP, CLIP // 2).tolist() == [0]
    assert recording.window_starts(3 * CLIP, CLIP, CLIP // 2).tolist() == [0, 8000, 16000, 24000, 32000]
    assert recording.window_starts(51200, CLIP, 12800).tolist() == [0, 12800, 25600, 35200]


def _recording(length, starts, probabilities):
    return recording.Recording("x.wav", None, np.zeros(length), np.array(starts), np.array(probabilities))


def test_sample_probability_averages_the_covering_windows():
    probability = recording.sample_probability(_recording(30, [0, 10, 20], [0.2, 0.4, 0.9]), clip=10)
    np.testing.assert_allclose(probability, [0.2] * 10 + [0.4] * 10 + [0.9] * 10)
    overlapping = recording.sample_probability(_recording(15, [0, 5], [0.2, 0.6]), clip=10)
    np.testing.assert_allclose(overlapping, [0.2] * 5 + [0.4] * 5 + [0.6] * 5)


def test_a_recording_is_padded_below_half_a_clip_and_a_short_one_is_centred_on_its_audio():
    assert recording.is_padded(_recording(CLIP // 2 - 1, [0], [0.5]), CLIP)
    assert not recording.is_padded(_recording(CLIP // 2, [0], [0.5]), CLIP)  # exactly half a clip is enough
    rate = PipelineConfig().audio.sample_rate
    short = _recording(int(0.3 * rate), [0], [0.5])
    np.testing.assert_allclose(recording.window_centres_s(short, CLIP, rate), [0.15])
    long = _recording(3 * CLIP, [0, CLIP, 2 * CLIP], [0.5] * 3)
    np.testing.assert_allclose(recording.window_centres_s(long, CLIP, rate), [0.5, 1.5, 2.5])
