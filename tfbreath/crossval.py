"""Session-grouped K-fold cross-validation: fold assignment, out-of-fold scores, bootstrap intervals.

A model chosen, stopped or weighted on some clips scores optimistically on them, so the
honest estimate of accuracy on unseen recording sessions is an out-of-fold one: every labelled
clip is predicted by models that never saw its session, neither to train nor to choose.

- ``session_folds`` deals the clips into K stratified folds that keep each recording session
  on one side (scikit-learn's ``StratifiedGroupKFold``).
- ``cross_fitted_ensemble`` weights the ensemble members (the paper's softmax of accuracies)
  for each fold using the out-of-fold predictions of the *other* folds only, so the ensemble's
  reported score never uses weights chosen on the clips it is scored on.
- ``session_bootstrap`` gives a percentile interval of a score by resampling whole sessions
  with replacement (clips of one session are correlated: resampling clips would be too narrow).
- ``paired_accuracy_gain`` compares two predictions of the same clips (two recipes' out-of-fold
  predictions) with a paired session-bootstrap interval: much narrower than the two separate
  intervals, since both share each resample's clips.
- ``cross_validation_summary`` is what ``metrics.json`` records under ``"cross_validation"``:
  per model and for the ensemble, each score's mean over folds, the per-fold values, the
  pooled out-of-fold value and its 95 % interval.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from tfbreath.ensemble import softmax_weights, weighted_average
from tfbreath.errors import TfbreathError
from tfbreath.evaluation import accuracy, roc_auc

BOOTSTRAP_RESAMPLES = 2000
"""Session resamples per interval: the percentile's Monte-Carlo error is then ~0.1 point."""

RESAMPLES_PER_CALL = 250
"""Resamples scored per call: their weights, ``[250, N]`` float64, take 6 MB for the 3,200 clips."""

CONFIDENCE = 0.95

DIGITS = 4
"""Decimals kept in the summary: finer than any interval it reports."""


class CrossValidationError(TfbreathError, ValueError):
    """The data cannot be split into the requested folds; the message says why."""


SCORES: dict[str, Callable[..., float]] = {"accuracy": accuracy, "roc_auc": roc_auc}
"""The scores cross-validation reports, by their ``metrics.json`` name; each also scores ``[R, N]`` weights."""


def session_folds(labels: np.ndarray, groups: Sequence[str], n_folds: int, seed: int) -> np.ndarray:
    """The held-out fold (0 .. K-1) of every clip: stratified by label, one session per fold. ``[N] -> [N]``

    Every fold holds clips of both classes; the same seed gives the same folds.
    """
    sessions = len(set(groups))
    if n_folds < 2:
        raise CrossValidationError(f"folds must be >= 2 for cross-validation, got {n_folds}")
    if sessions < n_folds:
        raise CrossValidationError(f"{n_folds}-fold cross-validation needs at least {n_folds} recording "
                                   f"sessions, got {sessions}")
    labels = np.asarray(labels).astype(int)
    folds = np.full(len(labels), -1, np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, list(groups))):
        folds[held_out] = fold
    for fold in range(n_folds):
        missing = set(np.unique(labels)) - set(labels[folds == fold])
        if missing:
            raise CrossValidationError(f"fold {fold} of {n_folds} has no clip of class(es) {sorted(missing)}: "
                                       f"too few sessions of that class for {n_folds} folds")
    return folds


def cross_fitted_ensemble(probabilities: dict[str, np.ndarray], labels: np.ndarray,
                          folds: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Out-of-fold ensemble P(exhale) and, per fold, the member weights it used. ``{M: [N]} -> [N], K x [M]``

    Fold k's clips are combined with ``softmax_weights`` of the members' accuracies on the
    out-of-fold predictions of all other folds.
    """
    probabilities = {name: np.asarray(p, np.float64) for name, p in probabilities.items()}  # [N] each
    ensemble = np.zeros(len(labels), np.float64)
    weights = []
    for fold in range(int(folds.max()) + 1):
        others, own = folds != fold, folds == fold
        alphas = softmax_weights([accuracy(labels[others], p[others]) for p in probabilities.values()])  # [M]
        ensemble[own] = weighted_average({name: p[own] for name, p in probabilities.items()}, alphas)
        weights.append(alphas)
    return ensemble, weights


def session_bootstrap(labels: np.ndarray, probabilities: np.ndarray, groups: Sequence[str],
                      score: Callable[..., float], resamples: int = BOOTSTRAP_RESAMPLES,
                      confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of ``score`` over resamples of whole sessions with replacement. ``[N] x 3 -> (lo, hi)``

    Each resample draws as many sessions as there are, with replacement; a session drawn c
    times weighs its clips c times. ``score(labels, probabilities, weights)`` gets the weights of
    up to ``RESAMPLES_PER_CALL`` resamples at once, ``[R, N]``, and returns their ``[R]`` scores
    (as ``SCORES`` do). Resamples whose score is undefined (NaN, e.g. one class only) are dropped.
    """
    labels, probabilities = np.asarray(labels), np.asarray(probabilities)
    _, session_index = np.unique(np.asarray(groups), return_inverse=True)  # [N] in 0 .. S-1
    n_sessions = int(session_index.max()) + 1
    draws = np.random.default_rng(seed).integers(0, n_sessions, (resamples, n_sessions))  # [resamples, S]
    values = []
    for rows in np.array_split(draws, max(1, -(-resamples // RESAMPLES_PER_CALL))):
        offsets = np.arange(len(rows))[:, None] * n_sessions  # a row's sessions counted apart from the others'
        counts = np.bincount((rows + offsets).ravel(), minlength=rows.size).reshape(rows.shape)  # [R, S]
        values.append(np.asarray(score(labels, probabilities, counts[:, session_index])))  # [R]
    values = np.concatenate(values)  # [resamples]
    values = values[~np.isnan(values)]
    if not len(values):
        return float("nan"), float("nan")
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def _accuracy_gain(labels: np.ndarray, both: np.ndarray, weights: np.ndarray | None = None) -> float | np.ndarray:
    """Accuracy of column 0 minus that of column 1 on the same clips. ``[N], [N, 2] -> []`` (``[R]`` for ``[R, N]`` weights)"""
    return accuracy(labels, both[:, 0], weights) - accuracy(labels, both[:, 1], weights)


def paired_accuracy_gain(labels: np.ndarray, probabilities: np.ndarray, reference: np.ndarray,
                         groups: Sequence[str], seed: int = 0) -> dict[str, float | list[float]]:
    """``probabilities``' accuracy minus ``reference``'s, with its paired session-bootstrap interval.
    ``[N] x 3 -> {"pooled": gain, "ci95": [lo, hi]}``"""
    both = np.stack([np.asarray(probabilities), np.asarray(reference)], 1)  # [N, 2]
    interval = session_bootstrap(labels, both, groups, _accuracy_gain, seed=seed)
    return {"pooled": round(_accuracy_gain(np.asarray(labels), both), DIGITS),
            "ci95": [round(v, DIGITS) for v in interval]}


def cross_validation_summary(labels: np.ndarray, probabilities: dict[str, np.ndarray], folds: np.ndarray,
                             groups: Sequence[str], seed: int = 0) -> dict[str, dict[str, dict]]:
    """Per model (and ``"ensemble"`` if present): ``{score: {mean, folds, pooled, ci95}}``.

    ``mean`` and ``folds`` are the score on each fold's held-out clips; ``pooled`` the score on
    all out-of-fold predictions together and ``ci95`` its session-bootstrap interval.
    """
    summary = {}
    n_folds = int(folds.max()) + 1
    for name, probs in probabilities.items():
        entry = {}
        for score_name, score in SCORES.items():
            per_fold = [score(labels[folds == k], probs[folds == k]) for k in range(n_folds)]
            interval = session_bootstrap(labels, probs, groups, score, seed=seed)
            entry[score_name] = {"mean": round(float(np.mean(per_fold)), DIGITS),
                                 "folds": [round(v, DIGITS) for v in per_fold],
                                 "pooled": round(score(labels, probs), DIGITS),
                                 "ci95": [round(v, DIGITS) for v in interval]}
        summary[name] = entry
    return summary
