"""Breathing-phase timelines: window P(exhale) decoded into phases, and the breathing they show.

``predict --hop`` classifies each clip-long window of a long recording on its own, so its
phase timeline flickers: one doubtful window flips the phase for half a second. Breathing
does not flicker; an inhale lasts about a second or two, an exhale a little longer.
``decode_phases`` finds the most probable phase sequence under a two-state explicit-duration
hidden semi-Markov model (HSMM; Yu, "Hidden semi-Markov models", Artificial Intelligence 174,
2010, section 3.1; Viterbi over segments as in Rabiner, Proc. IEEE 77, 1989, section IV-D):

- states inhale and exhale strictly alternate (a segment of one is followed by the other);
- a phase lasting ``n`` windows has prior probability ``P_phase(n)``: a log-normal duration whose
  central 80 % lies in the phase's typical range (``TimelineConfig``), discretised to the hop,
  cut at ``longest_phase_s``; the first and last segments are cut by the recording's edges,
  so their prior is the survival ``P(D >= n)`` (the phase may have begun before, or go on after);
- each window contributes ``log p`` to exhale and ``log (1 - p)`` to inhale, ``p`` its P(exhale)
  clipped to ``[probability_floor, 1 - probability_floor]`` (the classifier was trained on
  balanced classes, so its posterior divided by the flat class prior is a likelihood).

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

from tfbreath.config import ConfigError, in_range, positive, require

TYPICAL_INHALE_S = (0.8, 2.0)
"""Typical inhale duration, seconds: the range of issue 22, which matches adult resting breathing
(12-20 breaths/min, a 3-5 s cycle, about a third of it inhaling)."""

TYPICAL_EXHALE_S = (1.0, 3.0)
"""Typical exhale duration, seconds (issue 22; an exhale is usually as long as or longer than the
inhale before it, I:E about 1:1 to 1:2)."""

TYPICAL_MASS_Z = 1.2815515655446004
"""The standard normal's 90th percentile: a typical range holds the central 80 % of its phase's
log-normal duration prior (10 % of phases shorter, 10 % longer)."""

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
    typical duration range: the central 80 % of its log-normal prior (``TYPICAL_MASS_Z``), not
    hard limits. ``longest_phase_s`` is a hard limit.
    """

    inhale_low_s: float = TYPICAL_INHALE_S[0]
    inhale_high_s: float = TYPICAL_INHALE_S[1]
    exhale_low_s: float = TYPICAL_EXHALE_S[0]
    exhale_high_s: float = TYPICAL_EXHALE_S[1]
    longest_phase_s: float = LONGEST_PHASE_S
    probability_floor: float = PROBABILITY_FLOOR

    def __post_init__(self) -> None:
        positive("longest_phase_s", self.longest_phase_s)
        for phase in ("inhale", "exhale"):
            low, high = getattr(self, f"{phase}_low_s"), getattr(self, f"{phase}_high_s")
            positive(f"{phase}_low_s", low)
            positive(f"{phase}_high_s", high)
            require(high > low, f"{phase}_high_s must be > {phase}_low_s = {low!r}, got {high!r}")
            require(self.longest_phase_s >= high,
                    f"longest_phase_s must be >= {phase}_high_s = {high!r}, got {self.longest_phase_s!r}")
        in_range("probability_floor", self.probability_floor, 0, 0.5, low_open=True, high_open=True)

    def typical_s(self, exhale: bool) -> tuple[float, float]:
        """The typical duration range of exhale (``True``) or inhale."""
        return (self.exhale_low_s, self.exhale_high_s) if exhale else (self.inhale_low_s, self.inhale_high_s)


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


def _normal_cdf(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))


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
    cdf = _normal_cdf((np.log(edges) - mu) / sigma)                     # [longest + 1]
    pmf = np.diff(cdf)                                                  # [longest]
    pmf /= pmf.sum()
    survival = np.cumsum(pmf[::-1])[::-1]                               # [longest]: P(D >= n)
    with np.errstate(divide="ignore"):
        return np.log(pmf), np.log(survival)


def decode_phases(probabilities: np.ndarray, hop_s: float, config: TimelineConfig = TimelineConfig()) -> np.ndarray:
    """The most probable phase of every window under the HSMM (module docstring). ``[T] -> [T]`` bool

    ``probabilities`` are the windows' P(exhale), ``hop_s`` the seconds between window starts;
    ``True`` is exhale. Both phases are equally likely to come first. Ties go to the shorter
    segment, then to inhale.
    """
    p = np.asarray(probabilities, np.float64)
    if p.ndim != 1 or len(p) == 0:
        raise ConfigError(f"probabilities must be a non-empty [T] sequence, got shape {p.shape}")
    if not np.all((p >= 0.0) & (p <= 1.0)):
        raise ConfigError(f"probabilities must be in [0, 1], got {p[~((p >= 0.0) & (p <= 1.0))][0]!r}")
    p = np.clip(p, config.probability_floor, 1.0 - config.probability_floor)
    positive("hop_s", hop_s)
    total = len(p)
    longest = max(1, int(config.longest_phase_s / hop_s))
    evidence = np.stack([np.log1p(-p), np.log(p)])                      # [2, T]: inhale, exhale
    cumulative = np.concatenate([np.zeros((2, 1)), np.cumsum(evidence, axis=1)], axis=1)  # [2, T + 1]
    priors = [duration_log_prior(config.typical_s(bool(s)), hop_s, longest) for s in (0, 1)]
    # best[s, t]: best log score of windows [0, t) cut into whole segments, the last of state s
    best = np.full((2, total + 1), -np.inf)
    length = np.zeros((2, total + 1), np.int64)                          # that last segment's windows
    for end in range(1, total + 1):
        best[:, end], length[:, end] = _best_segment(end, longest, best, cumulative, priors, final=False)
    score, last = _best_segment(total, longest, best, cumulative, priors, final=True)
    return _backtrack(int(np.argmax(score)), last, length, total)


def _best_segment(end: int, longest: int, best: np.ndarray, cumulative: np.ndarray,
                  priors: list[tuple[np.ndarray, np.ndarray]], final: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per state, the best score of windows ``[0, end)`` whose last segment has that state, and
    that segment's length. A segment starting at 0 or ending at the last window (``final``) is
    cut by an edge: its prior is the survival. ``-> [2], [2]``"""
    durations = np.arange(1, min(longest, end) + 1)                     # [d]
    starts = end - durations                                            # [d]
    scores, lengths = np.empty(2), np.empty(2, np.int64)
    for state in (0, 1):
        log_pmf, log_survival = priors[state]
        prior = np.where(starts == 0, log_survival[durations - 1],
                         (log_survival if final else log_pmf)[durations - 1])       # [d]
        before = np.where(starts == 0, 0.0, best[1 - state, starts])                 # [d]: the other state
        candidates = before + prior + cumulative[state, end] - cumulative[state, starts]  # [d]
        pick = int(np.argmax(candidates))
        scores[state], lengths[state] = candidates[pick], durations[pick]
    return scores, lengths


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
    I:E ratio is the total time of the inhales over that of the exhales, both counted only when
    whole (neither the first nor the last span). ``n_inhale`` and ``n_exhale`` count every span.
    Both rate and ratio are ``None`` when the windows' ``probabilities`` leave one phase
    unsupported (``unsupported_phase``).
    """
    if len(phases) == 0:
        raise ConfigError("phases must be a non-empty [T] sequence, got none")
    spans = phase_spans_s(phases, centres_s, duration_s)
    onsets = inhale_onsets_s(spans)
    rate = None if len(onsets) < 2 else SECONDS_PER_MINUTE * (len(onsets) - 1) / (onsets[-1] - onsets[0])
    whole = spans[1:-1]
    inhale = sum(end - begin for begin, end, exhale in whole if not exhale)
    exhale = sum(end - begin for begin, end, exhale in whole if exhale)
    ratio = inhale / exhale if inhale > 0 and exhale > 0 else None
    unsupported = unsupported_phase(phases, probabilities)
    return BreathingSummary(float(duration_s), None if unsupported else rate, None if unsupported else ratio,
                            sum(not e for *_, e in spans), sum(e for *_, e in spans), unsupported)
