"""Breathing-phase timelines: window P(exhale) decoded into phases, and the breathing they show.

``predict --hop`` classifies each clip-long window of a long recording on its own, so its
phase timeline flickers: one doubtful window flips the phase for half a second. Breathing
does not flicker; an inhale lasts about a second or two, an exhale a little longer.
``decode_phases`` finds the most probable phase sequence under a two-state explicit-duration
hidden semi-Markov model (HSMM; Yu, "Hidden semi-Markov models", Artificial Intelligence 174,
2010, section 3.1; Viterbi over segments as in Rabiner, Proc. IEEE 77, 1989, section IV-D):

- states inhale and exhale strictly alternate (a segment of one is followed by the other);
- a phase lasting ``n`` windows has prior probability ``P_phase(n | k)``: a log-normal duration
  whose central 80 % lies in the phase's typical range (``TimelineConfig``) times the
  recording's tempo ``k``, discretised to the hop, cut at ``longest_phase_s``; the first and
  last segments are cut by the recording's edges, so their prior is the survival ``P(D >= n)``
  (the phase may have begun before, or go on after);
- each window contributes ``log p`` to exhale and ``log (1 - p)`` to inhale, ``p`` its P(exhale)
  clipped to ``[probability_floor, 1 - probability_floor]`` (the classifier was trained on
  balanced classes, so its posterior divided by the flat class prior is a likelihood).

The tempo is the recording's own: people breathe at 12 breaths/min or at 20, and a prior fixed
at one tempo pulls every recording's phases towards it (a doubtful window inside a long exhale
becomes a short inhale, and the rate comes out high). So ``k`` is a latent of the recording,
chosen before decoding by its posterior (empirical Bayes, type-II maximum likelihood; MacKay,
"Bayesian interpolation", Neural Computation 4, 1992): the windows' likelihood summed over
every segmentation (the HSMM forward recursion, Yu 2010, section 3.1, the same recursion as
Viterbi with a sum for the max) at each candidate tempo, times a log-normal prior over the
breathing rate whose central 80 % is the typical resting range (``rate_low_bpm`` to
``rate_high_bpm``). The phases' typical ranges thus set the shape of a breath (I:E, spread),
the rate prior where its tempo may lie.

``summarize`` turns the decoded sequence into what a reader takes from a recording: the
breathing rate (one breath = an inhale followed by an exhale, counted between the first and
the last inhale onset) and the inhale:exhale time ratio over the phases seen whole. When the
classifier does not see one of the phases (most of that phase's decoded spans run against the
windows' own P(exhale)), the decoder placed them for its duration prior alone, a phase being at
most ``longest_phase_s`` long: the summary then says so (``unsupported``) and gives no rate.

Pure NumPy: sequences are ``[T]`` arrays, one entry per window, in time order.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.special

from tfbreath.config import ConfigError, in_range, positive, require

TYPICAL_INHALE_S = (0.8, 2.0)
"""Typical inhale duration, seconds: the range of issue 22, which matches adult resting breathing
(12-20 breaths/min, a 3-5 s cycle, about a third of it inhaling)."""

TYPICAL_EXHALE_S = (1.0, 3.0)
"""Typical exhale duration, seconds (issue 22; an exhale is usually as long as or longer than the
inhale before it, I:E about 1:1 to 1:2)."""

TYPICAL_RATE_BPM = (12.0, 20.0)
"""Typical breathing rate at rest, breaths per minute: the normal adult range of clinical
references (e.g. 12-20/min in the NEWS2 early warning score's zero-point band). The default phase
ranges' nominal breath (median inhale + median exhale, ``nominal_breath_s``) lasts 3.0 s, i.e.
20/min, the top of this range: the tempo prior lets a recording's phases stretch to its own rate."""

TYPICAL_MASS_Z = 1.2815515655446004
"""The standard normal's 90th percentile: a typical range holds the central 80 % of its
log-normal prior (10 % below, 10 % above); for the phase durations and the breathing rate."""

TEMPO_SPAN_Z = 3.0
"""The candidate tempi cover the breathing-rate prior's central +-3 sd (99.7 %; 8.5-28/min by
default); further out the prior is below 1 % of its peak."""

TEMPO_CANDIDATES = 25
"""Candidate tempi, evenly spaced in log rate: 5 % apart by default, finer than a hop changes a
2-s phase (25 %)."""

LONGEST_PHASE_S = 8.0
"""A phase longer than this is not breathing at rest (even a slow 4 breaths/min exhale lasts
under 8 s); the cap also bounds the decoder's work, ``O(T * longest / hop)``."""

PROBABILITY_FLOOR = 0.05
"""Window probabilities are clipped to [0.05, 0.95]: one window, however sure, weighs at most
``log(19) ~ 3`` nats, so a run of the other phase can outvote an isolated confident error."""

SECONDS_PER_MINUTE = 60.0

EVEN = 0.5
"""The P(exhale) that favours neither phase: a decoded span is supported by the classifier when its
windows' mean P(exhale) is on its phase's side of it."""

MAX_UNSUPPORTED_FRACTION = 0.5
"""Rate and ratio are withheld when more than half of one phase's spans are unsupported: the
classifier then does not see that phase (e.g. every window exhale), so its spans, and the breaths
they make, come from the duration prior (the ``longest_phase_s`` limit forces a change)."""


@dataclasses.dataclass(frozen=True)
class TimelineConfig:
    """The decoder's duration prior and evidence clipping (``decode_phases``).

    ``inhale_low_s``-``inhale_high_s`` and ``exhale_low_s``-``exhale_high_s`` are each phase's
    typical duration range at the nominal tempo: the central 80 % of its log-normal prior
    (``TYPICAL_MASS_Z``), not hard limits; each recording scales both by its tempo.
    ``rate_low_bpm``-``rate_high_bpm`` is the central 80 % of the log-normal prior over a
    recording's breathing rate, which chooses that tempo. ``longest_phase_s`` is a hard limit.
    """

    inhale_low_s: float = TYPICAL_INHALE_S[0]
    inhale_high_s: float = TYPICAL_INHALE_S[1]
    exhale_low_s: float = TYPICAL_EXHALE_S[0]
    exhale_high_s: float = TYPICAL_EXHALE_S[1]
    longest_phase_s: float = LONGEST_PHASE_S
    probability_floor: float = PROBABILITY_FLOOR
    rate_low_bpm: float = TYPICAL_RATE_BPM[0]
    rate_high_bpm: float = TYPICAL_RATE_BPM[1]

    def __post_init__(self) -> None:
        positive("longest_phase_s", self.longest_phase_s)
        positive("rate_low_bpm", self.rate_low_bpm)
        positive("rate_high_bpm", self.rate_high_bpm)
        require(self.rate_high_bpm > self.rate_low_bpm,
                f"rate_high_bpm must be > rate_low_bpm = {self.rate_low_bpm!r}, got {self.rate_high_bpm!r}")
        for phase in ("inhale", "exhale"):
            low, high = getattr(self, f"{phase}_low_s"), getattr(self, f"{phase}_high_s")
            positive(f"{phase}_low_s", low)
            positive(f"{phase}_high_s", high)
            require(high > low, f"{phase}_high_s must be > {phase}_low_s = {low!r}, got {high!r}")
            require(self.longest_phase_s >= high,
                    f"longest_phase_s must be >= {phase}_high_s = {high!r}, got {self.longest_phase_s!r}")
        in_range("probability_floor", self.probability_floor, 0, 0.5, low_open=True, high_open=True)

    def typical_s(self, exhale: bool, tempo: float = 1.0) -> tuple[float, float]:
        """The typical duration range of exhale (``True``) or inhale, at ``tempo`` times the nominal."""
        low, high = (self.exhale_low_s, self.exhale_high_s) if exhale else (self.inhale_low_s, self.inhale_high_s)
        return tempo * low, tempo * high

    def nominal_breath_s(self) -> float:
        """The median inhale plus the median exhale at the nominal tempo (3.0 s by default)."""
        return sum(math.sqrt(low * high) for low, high in map(self.typical_s, (False, True)))


@dataclasses.dataclass(frozen=True)
class BreathingSummary:
    """What a recording's decoded phases say about its breathing (``summarize``).

    ``breaths_per_min`` is ``None`` with fewer than two inhale onsets (no whole breath seen),
    ``ie_ratio`` (inhale time / exhale time) with no whole inhale or no whole exhale; both are
    ``None`` when ``unsupported`` (the classifier does not see one phase: ``MAX_UNSUPPORTED_FRACTION``).
    """

    duration_s: float
    breaths_per_min: float | None
    ie_ratio: float | None
    n_inhale: int
    n_exhale: int
    unsupported: bool = False


def _normal_bin_mass(edges_z: np.ndarray) -> np.ndarray:
    """P(z_i < Z <= z_i+1) of a standard normal Z, in both tails: the CDF's differences (which
    round to 0 where the CDF is 1) or the survival's (0 where that is 1), whichever is larger.
    ``[n + 1] -> [n]``"""
    cdf, survival = scipy.special.ndtr(edges_z), scipy.special.ndtr(-edges_z)  # [n + 1] each; n ~ 1e5 at times
    return np.maximum(np.diff(cdf), -np.diff(survival))


def duration_log_prior(typical_s: tuple[float, float], hop_s: float, longest: int) -> tuple[np.ndarray, np.ndarray]:
    """Log prior of a phase lasting ``n = 1 .. longest`` windows, and of lasting at least ``n``.

    The log-normal with median ``sqrt(low * high)`` and ``[low, high]`` as its central 80 %,
    integrated over ``((n - 1/2) hop, (n + 1/2) hop]`` and renormalised over ``1 .. longest``.
    ``-> [longest], [longest]`` (entry ``n - 1`` is ``log P(D = n)``, ``log P(D >= n)``)
    """
    low, high = typical_s
    mu, sigma = (math.log(low) + math.log(high)) / 2.0, (math.log(high) - math.log(low)) / (2.0 * TYPICAL_MASS_Z)
    edges = (np.arange(longest + 1) + 0.5) * hop_s                     # [longest + 1] seconds
    edges[0] = np.finfo(np.float64).tiny                                # the first bin starts at 0 s
    pmf = _normal_bin_mass((np.log(edges) - mu) / sigma)               # [longest]
    if pmf.sum() == 0:  # typical durations dozens of sd from every bin: impossible here
        return np.full(longest, -np.inf), np.full(longest, -np.inf)
    pmf /= pmf.sum()
    survival = np.cumsum(pmf[::-1])[::-1]                               # [longest]: P(D >= n)
    with np.errstate(divide="ignore"):
        return np.log(pmf), np.log(survival)


def tempo_candidates(config: TimelineConfig) -> tuple[np.ndarray, np.ndarray]:
    """The candidate tempi (factors on the typical phase durations) and their log prior.

    Breathing rates evenly spaced in log over the rate prior's central ``+-TEMPO_SPAN_Z`` sd, as
    tempi ``k = 60 / (rate * nominal_breath_s)``; the log prior is the log-normal's, up to a
    constant. ``-> [K], [K]``
    """
    mu = (math.log(config.rate_low_bpm) + math.log(config.rate_high_bpm)) / 2.0
    sigma = (math.log(config.rate_high_bpm) - math.log(config.rate_low_bpm)) / (2.0 * TYPICAL_MASS_Z)
    z = np.linspace(-TEMPO_SPAN_Z, TEMPO_SPAN_Z, TEMPO_CANDIDATES)       # [K]
    rates = np.exp(mu + sigma * z)                                      # [K] breaths per minute
    return SECONDS_PER_MINUTE / (rates * config.nominal_breath_s()), -0.5 * z ** 2


def decode_phases(probabilities: np.ndarray, hop_s: float, config: TimelineConfig = TimelineConfig()) -> np.ndarray:
    """The most probable phase of every window under the HSMM at the recording's most probable
    tempo (``most_probable_tempo``). ``[T] -> [T]`` bool

    ``probabilities`` are the windows' P(exhale), ``hop_s`` the seconds between window starts;
    ``True`` is exhale. Both phases are equally likely to come first. Ties go to the shorter
    segment, then to inhale.
    """
    cumulative, longest = _cumulative_evidence(probabilities, hop_s, config)
    _, log_pmf, log_survival = _best_tempo(cumulative, longest, hop_s, config)
    return _viterbi(cumulative, log_pmf, log_survival, longest)


def most_probable_tempo(probabilities: np.ndarray, hop_s: float, config: TimelineConfig = TimelineConfig()) -> float:
    """The recording's tempo (factor on the typical phase durations, ``tempo_candidates``) of
    highest posterior: the windows' likelihood summed over all segmentations times the rate
    prior (module docstring). ``[T] -> float``; breaths per minute are ``60 / (tempo *
    config.nominal_breath_s())``."""
    tempo, _, _ = _best_tempo(*_cumulative_evidence(probabilities, hop_s, config), hop_s, config)
    return tempo


def _best_tempo(cumulative: np.ndarray, longest: int, hop_s: float,
                config: TimelineConfig) -> tuple[float, np.ndarray, np.ndarray]:
    """``most_probable_tempo`` from the running evidence, with its duration priors.
    ``[2, T + 1] -> float, [2, longest] x 2``"""
    tempi, log_tempo_prior = tempo_candidates(config)                   # [K], [K]
    log_pmf, log_survival = _duration_priors(tempi, hop_s, longest, config)   # [K, 2, longest] each
    marginal = _log_marginal(cumulative, log_pmf, log_survival, longest)      # [K]
    if not np.isfinite(marginal).any():
        raise ConfigError(f"no breathing rate in the prior ({config.rate_low_bpm:g}-{config.rate_high_bpm:g}/min) "
                          f"gives phases that windows {hop_s:g} s apart can show")
    pick = int(np.argmax(marginal + log_tempo_prior))
    return float(tempi[pick]), log_pmf[pick], log_survival[pick]


def _cumulative_evidence(probabilities: np.ndarray, hop_s: float, config: TimelineConfig) -> tuple[np.ndarray, int]:
    """Checked window probabilities as running sums of their log evidence per state (inhale,
    exhale), and the longest phase in windows. ``[T] -> [2, T + 1], int``"""
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 1 or len(p) == 0:
        raise ConfigError(f"probabilities must be a non-empty [T] sequence, got shape {p.shape}")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ConfigError(f"probabilities must be in [0, 1], got {p[~((p >= 0.0) & (p <= 1.0))][0]!r}")
    positive("hop_s", hop_s)
    p = np.clip(p, config.probability_floor, 1.0 - config.probability_floor)
    evidence = np.stack([np.log1p(-p), np.log(p)])                      # [2, T]: inhale, exhale
    cumulative = np.concatenate([np.zeros((2, 1)), np.cumsum(evidence, axis=1)], axis=1)  # [2, T + 1]
    return cumulative, max(1, int(config.longest_phase_s / hop_s))


def _duration_priors(tempi: np.ndarray, hop_s: float, longest: int,
                     config: TimelineConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per tempo and state (inhale, exhale): ``duration_log_prior``. ``[K] -> [K, 2, longest] x 2``"""
    priors = [[duration_log_prior(config.typical_s(bool(state), tempo), hop_s, longest) for state in (0, 1)]
              for tempo in tempi]
    stacked = np.asarray(priors)                                        # [K, 2, 2 (pmf, survival), longest]
    return stacked[:, :, 0], stacked[:, :, 1]


def _segment_scores(end: int, longest: int, table: np.ndarray, cumulative: np.ndarray, log_pmf: np.ndarray,
                    log_survival: np.ndarray, final: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per state, the score of windows ``[0, end)`` whose last segment has that state and lasts
    ``d = 1 .. min(longest, end)`` windows: ``table`` at the segment's start for the other state
    (the best or the total score of what came before), plus the segment's duration prior and
    evidence. A segment starting at 0 or ending at the last window (``final``) is cut by an edge:
    its prior is the survival. Leading dimensions ``...`` (tempi) broadcast.
    ``table [..., 2, T + 1], cumulative [2, T + 1], priors [..., 2, longest] -> [..., 2, d], [d]``
    """
    durations = np.arange(1, min(longest, end) + 1)                     # [d]
    starts = end - durations                                            # [d]
    edge = starts == 0                                                  # [d]
    prior = np.where(edge, log_survival[..., durations - 1],
                     (log_survival if final else log_pmf)[..., durations - 1])       # [..., 2, d]
    before = np.where(edge, 0.0, table[..., ::-1, :][..., starts])                    # [..., 2, d]: other state
    segment = cumulative[:, end, None] - cumulative[:, starts]                        # [2, d]
    return before + prior + segment, durations


def _log_marginal(cumulative: np.ndarray, log_pmf: np.ndarray, log_survival: np.ndarray, longest: int) -> np.ndarray:
    """The log likelihood of all windows summed over every segmentation (forward recursion), per
    tempo, up to a constant. ``[2, T + 1], [K, 2, longest] x 2 -> [K]``"""
    total = cumulative.shape[1] - 1
    forward = np.full(log_pmf.shape[:-1] + (total + 1,), -np.inf)       # [K, 2, T + 1]
    for end in range(1, total + 1):
        scores, _ = _segment_scores(end, longest, forward, cumulative, log_pmf, log_survival, final=False)
        forward[..., end] = _logsumexp(scores, axis=-1)
    scores, _ = _segment_scores(total, longest, forward, cumulative, log_pmf, log_survival, final=True)
    return _logsumexp(_logsumexp(scores, axis=-1), axis=-1)


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    """``log(sum(exp(x)))`` along ``axis``, stable; ``-inf`` where every term is."""
    peak = np.max(x, axis=axis, keepdims=True)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    with np.errstate(divide="ignore"):
        return np.squeeze(peak, axis) + np.log(np.sum(np.exp(x - peak), axis=axis))


def _viterbi(cumulative: np.ndarray, log_pmf: np.ndarray, log_survival: np.ndarray, longest: int) -> np.ndarray:
    """The best segmentation at one tempo. ``[2, T + 1], [2, longest] x 2 -> [T]`` bool"""
    total = cumulative.shape[1] - 1
    # best[s, t]: best log score of windows [0, t) cut into whole segments, the last of state s
    best = np.full((2, total + 1), -np.inf)
    length = np.zeros((2, total + 1), np.int64)                          # that last segment's windows
    for end in range(1, total + 1):
        scores, durations = _segment_scores(end, longest, best, cumulative, log_pmf, log_survival, final=False)
        pick = np.argmax(scores, axis=-1)                               # [2]: ties to the shorter
        best[:, end], length[:, end] = scores[(0, 1), pick], durations[pick]
    scores, durations = _segment_scores(total, longest, best, cumulative, log_pmf, log_survival, final=True)
    pick = np.argmax(scores, axis=-1)
    final = scores[(0, 1), pick]
    return _backtrack(int(np.argmax(final)), durations[pick], length, total)


def _backtrack(state: int, last: np.ndarray, length: np.ndarray, total: int) -> np.ndarray:
    """The phases from the final state and segment lengths, walking back. ``-> [T]`` bool"""
    phases = np.zeros(total, bool)
    end, run = total, int(last[state])
    while end > 0:
        phases[end - run:end] = bool(state)
        end, state = end - run, 1 - state
        run = int(length[state, end]) if end > 0 else 0
    return phases


def phase_runs(phases: np.ndarray) -> list[tuple[int, int, bool]]:
    """Maximal runs of equal values: ``(start, end, value)`` as indices. ``[T] -> R x 3``"""
    phases = np.asarray(phases)
    edges = np.flatnonzero(np.diff(phases)) + 1
    starts, ends = np.append(0, edges), np.append(edges, len(phases))
    return [(int(s), int(e), bool(phases[s])) for s, e in zip(starts, ends)]


def phase_spans_s(phases: np.ndarray, centres_s: np.ndarray, duration_s: float) -> list[tuple[float, float, bool]]:
    """The runs in seconds: a phase changes halfway between the centres of the two windows that
    differ; the first run starts at 0 and the last ends at ``duration_s``. ``[T], [T] -> R x 3``"""
    centres_s = np.asarray(centres_s, np.float64)
    spans = []
    for start, end, exhale in phase_runs(phases):
        begin = 0.0 if start == 0 else (centres_s[start - 1] + centres_s[start]) / 2.0
        finish = duration_s if end == len(centres_s) else (centres_s[end - 1] + centres_s[end]) / 2.0
        spans.append((float(begin), float(finish), exhale))
    return spans


def inhale_onsets_s(spans: list[tuple[float, float, bool]]) -> list[float]:
    """Where an inhale follows an exhale, in seconds (``phase_spans_s``'s spans; the first span's
    start is the recording's, not an onset). ``R x 3 -> [K]``"""
    return [begin for (begin, _, exhale), (_, _, before) in zip(spans[1:], spans) if before and not exhale]


def unsupported_phase(phases: np.ndarray, probabilities: np.ndarray) -> bool:
    """Whether more than ``MAX_UNSUPPORTED_FRACTION`` of one phase's runs have a mean P(exhale) on
    the other phase's side of ``EVEN``. ``[T] bool, [T] -> bool``"""
    probabilities = np.asarray(probabilities, np.float64)
    against = {False: [], True: []}
    for start, end, exhale in phase_runs(phases):
        against[exhale].append((probabilities[start:end].mean() >= EVEN) != exhale)
    return any(runs and np.mean(runs) > MAX_UNSUPPORTED_FRACTION for runs in against.values())


def summarize(phases: np.ndarray, centres_s: np.ndarray, duration_s: float,
              probabilities: np.ndarray) -> BreathingSummary:
    """Rate, I:E ratio and phase counts of a decoded recording.
    ``[T] bool, [T] seconds, [T] P(exhale) -> summary``

    The rate is ``(k - 1)`` breaths over the time from the first to the ``k``-th (last) inhale
    onset (an exhale -> inhale change), so phases cut by the recording's edges do not bias it. The
    I:E ratio is the total time of the inhales over that of the exhales over the same whole
    breaths (from the first to the last inhale onset), so a recording that starts and ends in
    different phases counts as many of each. ``n_inhale`` and ``n_exhale`` count every span.
    Both rate and ratio are ``None`` when the windows' ``probabilities`` leave one phase
    unsupported (``unsupported_phase``).
    """
    if len(phases) == 0:
        raise ConfigError("phases must be a non-empty [T] sequence, got none")
    spans = phase_spans_s(phases, centres_s, duration_s)
    onsets = inhale_onsets_s(spans)
    rate = None if len(onsets) < 2 else SECONDS_PER_MINUTE * (len(onsets) - 1) / (onsets[-1] - onsets[0])
    whole = [span for span in spans if len(onsets) >= 2 and onsets[0] <= span[0] and span[1] <= onsets[-1]]
    inhale = sum(end - begin for begin, end, exhale in whole if not exhale)
    exhale = sum(end - begin for begin, end, exhale in whole if exhale)
    ratio = inhale / exhale if inhale > 0 and exhale > 0 else None
    unsupported = unsupported_phase(phases, probabilities)
    return BreathingSummary(float(duration_s), None if unsupported else rate, None if unsupported else ratio,
                            sum(not e for *_, e in spans), sum(e for *_, e in spans), unsupported)
