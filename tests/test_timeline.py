"""Phase decoding and breathing summaries on probability sequences with known answers."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.stats

from tfbreath import timeline
from tfbreath.config import ConfigError

HOP_S = 0.5
INHALE_WINDOWS, EXHALE_WINDOWS = 3, 4
"""A 1.5-s inhale and a 2-s exhale: a 3.5-s breath, inside the default typical ranges."""
BREATHS = 8
SURE, UNSURE = 0.1, 0.4
"""P(exhale) of a clear inhale window; an inhale window that is only mildly sure."""


def _breathing(breaths: int = BREATHS, inhale: int = INHALE_WINDOWS, exhale: int = EXHALE_WINDOWS) -> np.ndarray:
    """Phases (``True`` exhale) of ``breaths`` whole breaths, inhale first. ``-> [breaths * (inhale + exhale)]``"""
    return np.tile(np.r_[np.zeros(inhale, bool), np.ones(exhale, bool)], breaths)


def _probabilities(phases: np.ndarray, sure: float = SURE) -> np.ndarray:
    return np.where(phases, 1.0 - sure, sure)


def _centres(count: int) -> np.ndarray:
    """Window centres of 1-s windows every ``HOP_S``."""
    return 0.5 + HOP_S * np.arange(count)


def test_a_clean_alternating_sequence_decodes_exactly():
    phases = _breathing()
    np.testing.assert_array_equal(timeline.decode_phases(_probabilities(phases), HOP_S), phases)
    np.testing.assert_array_equal(timeline.decode_phases(_probabilities(~phases), HOP_S), ~phases)
    unsure = np.where(phases, 1.0 - UNSURE, UNSURE)
    np.testing.assert_array_equal(timeline.decode_phases(unsure, HOP_S), phases)


SYMMETRIC = timeline.TimelineConfig(exhale_low_s=timeline.TYPICAL_INHALE_S[0],
                                    exhale_high_s=timeline.TYPICAL_INHALE_S[1])
"""Both phases with the inhale's typical durations: a window at P = 0.5 between two runs is an exact tie."""
TIED_RUN = 3


def test_ties_go_to_the_shorter_segment_then_to_inhale():
    """``decode_phases``' documented tie-breaks keep a decoding reproducible: an undecided window
    between an exhale and an inhale, equally likely in either, ends the exhale (the segment after it
    is the shorter), and a recording whose windows say nothing ends in inhale."""
    phases = _breathing(breaths=2, inhale=TIED_RUN, exhale=TIED_RUN)
    undecided = np.insert(_probabilities(phases), 2 * TIED_RUN, timeline.EVEN)  # after the first exhale
    np.testing.assert_array_equal(timeline.decode_phases(undecided, HOP_S, SYMMETRIC),
                                  np.insert(phases, 2 * TIED_RUN, True))
    assert timeline.decode_phases([timeline.EVEN], HOP_S, SYMMETRIC).tolist() == [False]


def test_isolated_flicker_windows_are_removed():
    phases = _breathing()
    period = INHALE_WINDOWS + EXHALE_WINDOWS
    # inside runs, not next to their ends: a flipped window next to a phase change is a shifted change
    flicker = [period + 1, 3 * period + INHALE_WINDOWS + 1, 5 * period + INHALE_WINDOWS + 2]
    noisy = _probabilities(phases)
    noisy[flicker] = 1.0 - noisy[flicker]
    assert ((noisy >= 0.5) != phases).sum() == len(flicker)
    np.testing.assert_array_equal(timeline.decode_phases(noisy, HOP_S), phases)


SLOW_INHALE, SLOW_EXHALE = 4, 6
"""A 2-s inhale and a 3-s exhale: 12 breaths/min, the bottom of the typical rate range, whereas the
default phase ranges' nominal breath is 3 s (20/min)."""
DOUBTFUL, FLICKER = 0.35, 0.2
"""P(exhale) of a doubtful inhale window (1 - of an exhale one); of a wrong window inside an exhale."""
VERY_SLOW_INHALE, VERY_SLOW_EXHALE = 5, 8
FAST_INHALE, FAST_EXHALE = 2, 3
"""9.2 and 24 breaths/min, outside the typical 12-20 but inside the candidate tempi's +-3 sd (8.5-28/min)."""
TEMPO_TOLERANCE = 0.15
FIXED_20_PER_MIN = timeline.TimelineConfig(rate_low_bpm=19.5, rate_high_bpm=20.5)
"""A rate prior so narrow that the tempo is fixed at the nominal 20 breaths/min."""


def _rate_of_tempo(tempo: float, config: timeline.TimelineConfig = timeline.TimelineConfig()) -> float:
    return 60.0 / (tempo * config.nominal_breath_s())


@pytest.mark.parametrize("inhale, exhale", [(SLOW_INHALE, SLOW_EXHALE), (INHALE_WINDOWS, EXHALE_WINDOWS), (3, 3),
                                            (VERY_SLOW_INHALE, VERY_SLOW_EXHALE), (FAST_INHALE, FAST_EXHALE)])
def test_the_tempo_follows_the_recordings_rate(inhale, exhale):
    phases = _breathing(inhale=inhale, exhale=exhale)
    true_rate = 60.0 / ((inhale + exhale) * HOP_S)
    rate = _rate_of_tempo(timeline.most_probable_tempo(_probabilities(phases), HOP_S))
    # within 15 %: the rate prior pulls towards the middle of its range (15.5/min), and a 1:1 breath
    # has another shape than the nominal one (I:E 1.26 : 1.73 s)
    assert abs(rate / true_rate - 1.0) < TEMPO_TOLERANCE


def test_slow_breathing_with_doubtful_windows_keeps_its_long_exhales():
    """A wrong window inside an exhale looks like a short inhale to a prior fixed at 20/min; at the
    recording's own tempo the exhale stays whole."""
    phases = _breathing(inhale=SLOW_INHALE, exhale=SLOW_EXHALE)
    noisy = np.where(phases, 1.0 - DOUBTFUL, DOUBTFUL)
    period = SLOW_INHALE + SLOW_EXHALE
    noisy[[k * period + SLOW_INHALE + SLOW_EXHALE // 2 for k in range(0, BREATHS, 2)]] = FLICKER
    np.testing.assert_array_equal(timeline.decode_phases(noisy, HOP_S), phases)
    fixed = timeline.decode_phases(noisy, HOP_S, FIXED_20_PER_MIN)
    assert (fixed != phases).sum() > 0
    count = len(phases)
    rate = timeline.summarize(timeline.decode_phases(noisy, HOP_S), _centres(count), count * HOP_S + HOP_S,
                              noisy).breaths_per_min
    assert rate == pytest.approx(60.0 / (period * HOP_S))


def _brute_force_scores(probabilities: np.ndarray, config: timeline.TimelineConfig, tempo: float,
                        longest: int) -> tuple[float, float, np.ndarray]:
    """Log marginal and best score over every phase sequence, by enumeration, and the best sequence."""
    p = np.clip(probabilities, config.probability_floor, 1.0 - config.probability_floor)
    priors = [timeline.duration_log_prior(config.typical_s(bool(s), tempo), HOP_S, longest) for s in (0, 1)]
    scores, sequences = [], []
    for sequence in itertools.product((False, True), repeat=len(p)):
        runs = timeline.phase_runs(np.array(sequence))
        if max(end - start for start, end, _ in runs) > longest:
            continue
        score = sum(np.where(sequence, np.log(p), np.log1p(-p)))
        for index, (start, end, exhale) in enumerate(runs):
            log_pmf, log_survival = priors[exhale]
            edge = index == 0 or index == len(runs) - 1
            score += (log_survival if edge else log_pmf)[end - start - 1]
        scores.append(score)
        sequences.append(sequence)
    scores = np.array(scores)
    return float(np.log(np.sum(np.exp(scores)))), float(scores.max()), np.array(sequences[int(np.argmax(scores))])


def test_forward_and_viterbi_agree_with_enumerating_every_phase_sequence():
    rng = np.random.default_rng(0)
    probabilities = rng.uniform(0.05, 0.95, 9)
    config = timeline.TimelineConfig(longest_phase_s=3.0)
    longest = int(config.longest_phase_s / HOP_S)
    cumulative, _ = timeline._cumulative_evidence(probabilities, HOP_S, config)
    for tempo in timeline.tempo_candidates(config)[0][::8]:
        marginal, best, best_sequence = _brute_force_scores(probabilities, config, tempo, longest)
        log_pmf, log_survival = timeline._duration_priors(np.array([tempo]), HOP_S, longest, config)
        assert timeline._log_marginal(cumulative, log_pmf, log_survival, longest)[0] == pytest.approx(marginal)
        np.testing.assert_array_equal(timeline._viterbi(cumulative, log_pmf[0], log_survival[0], longest),
                                      best_sequence)
        assert np.isfinite(best)


def test_probabilities_of_exactly_zero_and_one_are_evidence():
    """A sigmoid in float32 or a quantised model gives P(exhale) of exactly 0 or 1: the floor clips
    them like any other window; only values outside [0, 1] are refused."""
    phases = _breathing()
    certain = phases.astype(np.float64)  # 0.0 inhale, 1.0 exhale
    np.testing.assert_array_equal(timeline.decode_phases(certain, HOP_S), phases)
    assert timeline.most_probable_tempo(certain, HOP_S) == timeline.most_probable_tempo(
        _probabilities(phases, timeline.PROBABILITY_FLOOR), HOP_S)


def test_a_run_longer_than_the_longest_phase_is_cut():
    config = timeline.TimelineConfig(longest_phase_s=4.0)
    decoded = timeline.decode_phases(np.full(20, 0.9), HOP_S, config)  # 10 s of sure exhale
    longest = max(end - start for start, end, _ in timeline.phase_runs(decoded))
    assert longest <= config.longest_phase_s / HOP_S and not decoded.all()


def test_the_rate_and_ratio_of_a_known_period_are_right():
    phases = _breathing()
    count = len(phases)
    summary = timeline.summarize(phases, _centres(count), count * HOP_S + HOP_S, _probabilities(phases))
    breath_s = (INHALE_WINDOWS + EXHALE_WINDOWS) * HOP_S
    assert summary.breaths_per_min == pytest.approx(60.0 / breath_s)
    assert summary.ie_ratio == pytest.approx(INHALE_WINDOWS / EXHALE_WINDOWS)
    assert (summary.n_inhale, summary.n_exhale) == (BREATHS, BREATHS)
    shifted = np.roll(phases, 2)  # starts mid-exhale: the edges are cut phases, rate and ratio are the same
    cut = timeline.summarize(shifted, _centres(count), count * HOP_S, _probabilities(shifted))
    assert cut.breaths_per_min == pytest.approx(60.0 / breath_s)
    assert cut.ie_ratio == pytest.approx(INHALE_WINDOWS / EXHALE_WINDOWS)  # whole breaths: as many I as E


IRREGULAR_RUNS = (INHALE_WINDOWS, EXHALE_WINDOWS, INHALE_WINDOWS, EXHALE_WINDOWS, INHALE_WINDOWS, 2 * EXHALE_WINDOWS,
                  INHALE_WINDOWS)
"""Window counts of alternating phases, inhale first, the last exhale twice as long: breaths of unequal length."""


def test_breaths_run_from_inhale_onset_to_inhale_onset():
    """One breath is an inhale and the exhale after it: rate and I:E are over the whole breaths between
    the first and the last exhale -> inhale change (the last two here, the long one included), not
    between the first and the last exhale onset (the first two: another rate and ratio)."""
    phases = np.concatenate([np.full(count, bool(index % 2)) for index, count in enumerate(IRREGULAR_RUNS)])
    count = len(phases)
    summary = timeline.summarize(phases, _centres(count), count * HOP_S + HOP_S, _probabilities(phases))
    whole = IRREGULAR_RUNS[2:-1]  # inhale, exhale, inhale, exhale
    assert summary.breaths_per_min == pytest.approx(60.0 * (len(whole) // 2) / (sum(whole) * HOP_S))
    assert summary.ie_ratio == pytest.approx(sum(whole[::2]) / sum(whole[1::2]))


def test_phases_the_windows_never_show_give_no_rate():
    steady = np.full(60, 0.9)  # 30 s of sure exhale: the longest phase forces inhales in
    phases = timeline.decode_phases(steady, HOP_S)
    assert 0 < (~phases).sum() < len(phases)
    summary = timeline.summarize(phases, _centres(len(phases)), 30.5, steady)
    assert summary.unsupported and summary.breaths_per_min is None and summary.ie_ratio is None
    breathing = _breathing()
    one_against = _probabilities(breathing)
    one_against[:INHALE_WINDOWS] = 1.0 - SURE  # one inhale of eight the windows call exhale: still a rate
    kept = timeline.summarize(breathing, _centres(len(breathing)), len(breathing) * HOP_S, one_against)
    assert not kept.unsupported and kept.breaths_per_min is not None
    # MAX_UNSUPPORTED_FRACTION: half of the inhales against keeps the rate, one more withholds it
    period = INHALE_WINDOWS + EXHALE_WINDOWS
    against = _probabilities(breathing)
    for breath in range(BREATHS // 2):
        against[breath * period:breath * period + INHALE_WINDOWS] = 1.0 - SURE
    half = timeline.summarize(breathing, _centres(len(breathing)), len(breathing) * HOP_S, against)
    assert not half.unsupported and half.breaths_per_min is not None
    against[BREATHS // 2 * period:BREATHS // 2 * period + INHALE_WINDOWS] = 1.0 - SURE
    assert timeline.summarize(breathing, _centres(len(breathing)), len(breathing) * HOP_S, against).unsupported


def test_a_span_whose_windows_average_even_is_on_the_exhale_side():
    """``EVEN`` splits the phases as ``evaluation.THRESHOLD`` does: a mean P(exhale) of exactly 0.5 is
    on the exhale side, so inhales whose windows sit at 0.5 are unsupported, exhales there are not."""
    even = np.full(INHALE_WINDOWS, timeline.EVEN)
    count = BREATHS * (INHALE_WINDOWS + EXHALE_WINDOWS)
    even_inhales = np.tile(np.r_[even, np.full(EXHALE_WINDOWS, 1.0 - SURE)], BREATHS)
    assert timeline.summarize(_breathing(), _centres(count), count * HOP_S, even_inhales).unsupported
    even_exhales = np.tile(np.r_[even, np.full(EXHALE_WINDOWS, SURE)], BREATHS)
    assert not timeline.summarize(~_breathing(), _centres(count), count * HOP_S, even_exhales).unsupported


def test_the_spans_change_halfway_between_window_centres_and_cover_the_recording():
    spans = timeline.phase_spans_s(np.array([False, False, True, True, False]), _centres(5), duration_s=3.0)
    assert spans == [(0.0, 1.25, False), (1.25, 2.25, True), (2.25, 3.0, False)]


def test_too_short_for_a_breath_leaves_rate_and_ratio_empty():
    one_window = timeline.summarize(timeline.decode_phases([0.3], HOP_S), _centres(1), 1.0, [0.3])
    assert (one_window.breaths_per_min, one_window.ie_ratio, one_window.n_inhale, one_window.n_exhale) == (
        None, None, 1, 0)
    one_breath = np.array([True] * 4 + [False] * 3 + [True] * 4)
    one_onset = timeline.summarize(one_breath, _centres(11), 6.0, _probabilities(one_breath))
    assert one_onset.breaths_per_min is None and one_onset.ie_ratio is None  # one onset: no whole breath
    with pytest.raises(ConfigError, match="non-empty"):
        timeline.decode_phases([], HOP_S)
    with pytest.raises(ConfigError, match=r"probabilities must be in \[0, 1\], got nan"):
        timeline.decode_phases([0.2, float("nan")], HOP_S)
    with pytest.raises(ConfigError, match="hop_s must be > 0, got 0"):
        timeline.decode_phases([0.2], 0)
    with pytest.raises(ConfigError, match="non-empty"):
        timeline.summarize(np.zeros(0, bool), np.zeros(0), 0.0, np.zeros(0))


def test_the_duration_prior_is_normalised_and_centred_on_the_typical_range():
    log_pmf, log_survival = timeline.duration_log_prior((0.8, 2.0), HOP_S, longest=16)
    pmf = np.exp(log_pmf)
    assert pmf.sum() == pytest.approx(1.0) and np.exp(log_survival[0]) == pytest.approx(1.0)
    inside = pmf[1:4].sum()  # 1.0, 1.5 and 2.0 s: bins (0.75, 2.25] s, a little more than 80 %
    assert 0.8 < inside < 0.9
    assert int(np.argmax(pmf)) + 1 == 2  # the mode near the median sqrt(0.8 * 2.0) = 1.26 s


LARGE_HOP_S = 2.0
"""Windows 2 s apart: a quarter of the typical inhale prior's mass lies below half a hop (1 s)."""
PRIOR_RTOL, PRIOR_ATOL = 1e-9, 1e-12


def test_the_duration_prior_is_the_log_normal_integrated_over_each_windows_bin():
    """Bin ``n`` is ``((n - 1/2) hop, (n + 1/2) hop]`` with the first from 0 s: at a 2-s hop one window
    holds every inhale under 3 s, the quarter under 1 s included, not only those from 1 to 3 s."""
    low, high = timeline.TYPICAL_INHALE_S
    longest = 4
    sigma = np.log(high / low) / (2.0 * timeline.TYPICAL_MASS_Z)
    edges_s = np.r_[0.0, (np.arange(1, longest + 1) + 0.5) * LARGE_HOP_S]
    cdf = scipy.stats.lognorm(sigma, scale=np.sqrt(low * high)).cdf(edges_s)
    log_pmf, log_survival = timeline.duration_log_prior((low, high), LARGE_HOP_S, longest)
    np.testing.assert_allclose(np.exp(log_pmf), np.diff(cdf) / cdf[-1], rtol=PRIOR_RTOL, atol=PRIOR_ATOL)
    np.testing.assert_allclose(np.exp(log_survival), (cdf[-1] - cdf[:-1]) / cdf[-1], rtol=PRIOR_RTOL,
                               atol=PRIOR_ATOL)


@pytest.mark.parametrize("field, value, message", [
    ("inhale_low_s", 0, "inhale_low_s must be > 0, got 0"),
    ("exhale_high_s", 0.5, "exhale_high_s must be > exhale_low_s = 1.0, got 0.5"),
    ("longest_phase_s", 2.5, "longest_phase_s must be >= exhale_high_s = 3.0, got 2.5"),
    ("probability_floor", 0.5, "probability_floor must be in (0, 0.5), got 0.5"),
    ("inhale_high_s", float("nan"), "inhale_high_s must be a number > 0, got nan"),
    ("rate_low_bpm", -1.0, "rate_low_bpm must be > 0, got -1.0"),
    ("rate_high_bpm", 10.0, "rate_high_bpm must be > rate_low_bpm = 12.0, got 10.0"),
])
def test_invalid_config_values_raise_with_the_value(field, value, message):
    with pytest.raises(ConfigError) as raised:
        timeline.TimelineConfig(**{field: value})
    assert str(raised.value) == message


def test_a_wide_rate_prior_keeps_every_tempo_finite():
    """The slowest tempi of a 1-20/min prior put the durations' log-normal many sd past every bin:
    its CDF's differences rounded to 0 there (a NaN prior that won the tempo and made I E I E...)."""
    pattern = np.resize([0.1] * 3 + [0.9] * 5, 60)
    config = timeline.TimelineConfig(rate_low_bpm=1.0, rate_high_bpm=20.0)
    with np.errstate(divide="raise", invalid="raise"):
        decoded = timeline.decode_phases(pattern, HOP_S, config)
    np.testing.assert_array_equal(decoded, pattern >= 0.5)
    log_pmf, log_survival = timeline.duration_log_prior((60.0, 200.0), HOP_S, 16)  # 30+ sd beyond 8 s
    assert np.isfinite(log_pmf).all() and np.exp(log_pmf).sum() == pytest.approx(1.0)
    # and the other tail, where the CDF rounds to 1: a phase typically 0.01-0.02 s long, 15+ sd below 0.75 s
    assert np.isfinite(timeline.duration_log_prior((0.01, 0.02), HOP_S, 16)[0]).all()
    # Durations beyond float64's tails (1e20 s) are impossible, and a prior of only such rates is refused.
    assert np.isneginf(timeline.duration_log_prior((1e20, 2e20), HOP_S, 16)).all()
    absurd = timeline.TimelineConfig(rate_low_bpm=1e-20, rate_high_bpm=2e-20)
    with pytest.raises(ConfigError, match=r"no breathing rate in the prior \(1e-20-2e-20/min\) gives phases"):
        timeline.decode_phases(pattern, HOP_S, absurd)


def test_one_window_sure_of_the_wrong_phase_is_outvoted():
    """``probability_floor``: a window at P = 1e-12 inside an exhale costs log(0.05), not log(1e-12),
    so its neighbours outvote it (without the floor it flips: I E E I E E)."""
    pattern = np.resize([0.1] * 3 + [0.9] * 5, 64)
    glitch = pattern.copy()
    glitch[13] = 1e-12  # the second breath's exhale is windows 11-15
    np.testing.assert_array_equal(timeline.decode_phases(glitch, HOP_S), pattern >= 0.5)
    loose = timeline.TimelineConfig(probability_floor=1e-15)
    assert not timeline.decode_phases(glitch, HOP_S, loose)[13]


@pytest.mark.parametrize("low, high", [(6.0, 10.0), (12.0, 20.0), (20.0, 40.0)])
def test_without_evidence_the_rate_prior_chooses_the_tempo(low, high):
    """Windows at P = 0.5 tell nothing: the tempo lands near the prior's median rate (within
    10 %; the segmentations' count tilts it a little), not at the slowest candidate (about half)."""
    config = timeline.TimelineConfig(rate_low_bpm=low, rate_high_bpm=high)
    tempo = timeline.most_probable_tempo(np.full(40, 0.5), HOP_S, config)
    rate = 60.0 / (tempo * config.nominal_breath_s())
    assert rate == pytest.approx(np.sqrt(low * high), rel=0.1)
