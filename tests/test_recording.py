"""Recordings cut into clip-long windows: where the windows start and what each sample's P(exhale) is."""

from __future__ import annotations

import numpy as np
import pytest

from tfbreath import classifier, recording
from tfbreath.config import PipelineConfig

CLIP = PipelineConfig().audio.num_samples


def test_window_starts_end_with_the_recording():
    assert recording.window_starts(CLIP // 2, CLIP, CLIP // 2).tolist() == [0]
    assert recording.window_starts(CLIP, CLIP, CLIP // 2).tolist() == [0]
    assert recording.window_starts(3 * CLIP, CLIP, CLIP // 2).tolist() == [0, 8000, 16000, 24000, 32000]
    assert recording.window_starts(51200, CLIP, 12800).tolist() == [0, 11733, 23467, 35200]


@pytest.mark.parametrize("length, clip, hop, starts", [
    (10, 4, 3, [0, 3, 6]),  # the grid ends exactly at the end
    (11, 4, 3, [0, 2, 5, 7]),  # one more step: the four windows spread over the 7 samples
    (4, 4, 3, [0]),
    (3, 4, 3, [0]),  # shorter than a window: repeated to fill it
    (20, 4, 8, [0, 8, 16]),  # a hop longer than the window skips samples, as asked
])
def test_window_starts_known_answers(length, clip, hop, starts):
    assert recording.window_starts(length, clip, hop).tolist() == starts


@pytest.mark.parametrize("extra", [1, 3, 4000, 7999])
def test_windows_a_few_samples_past_the_hop_grid_stay_one_step_apart(extra):
    hop = CLIP // 2
    starts = recording.window_starts(CLIP + 10 * hop + extra, CLIP, hop)
    steps = np.diff(starts)
    assert starts[0] == 0 and starts[-1] == 10 * hop + extra and len(starts) == 12  # the fewest steps <= hop
    assert steps.max() <= hop and steps.max() - steps.min() <= 1  # no last window a few samples after another
    assert recording.window_step(starts, hop) == pytest.approx((10 * hop + extra) / 11)


def test_smooth_decodes_at_the_windows_own_spacing(monkeypatch):
    spacings = []
    monkeypatch.setattr(recording.timeline, "decode_phases",
                        lambda probabilities, hop_s, config: spacings.append(hop_s) or probabilities >= 0.5)
    hop, rate = CLIP // 2, PipelineConfig().audio.sample_rate
    long = recording.window_starts(CLIP + 10 * hop + 3, CLIP, hop)
    recordings = [_recording(CLIP + 10 * hop + 3, long, np.full(len(long), 0.7)), _recording(CLIP, [0], [0.2])]
    smoothed = recording.smooth(recordings, hop, rate, recording.timeline.TimelineConfig())
    assert spacings == [pytest.approx((10 * hop + 3) / 11 / rate), hop / rate]  # one window: the hop asked for
    assert smoothed[0].smoothed.all() and not smoothed[1].smoothed.any()


def test_a_recording_one_sample_past_a_clip_is_decoded_at_its_windows_spacing():
    """Its two windows are a sample apart, so the duration prior spans ~1e5 window counts (its
    erfc is vectorised); both segments are cut by an edge, so each window keeps its own phase."""
    rate = PipelineConfig().audio.sample_rate
    starts = recording.window_starts(CLIP + 1, CLIP, CLIP // 2)
    assert starts.tolist() == [0, 1] and recording.window_step(starts, CLIP // 2) == 1.0
    smoothed = recording.smooth([_recording(CLIP + 1, starts, [0.3, 0.8])], CLIP // 2, rate,
                                recording.timeline.TimelineConfig())
    assert smoothed[0].smoothed.tolist() == [False, True]


def test_a_window_past_the_audio_repeats_it_and_an_empty_one_is_silence():
    audio = np.arange(1, 4, dtype=np.float32)
    assert classifier.window(audio, 0, 8).tolist() == [1, 2, 3, 1, 2, 3, 1, 2]
    assert classifier.window(np.arange(10, dtype=np.float32), 2, 4).tolist() == [2, 3, 4, 5]  # a full window
    assert classifier.window(audio, 3, 4).tolist() == [0, 0, 0, 0]


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
