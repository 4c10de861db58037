"""Session-grouped folds, cross-fitted ensemble weights and the session bootstrap, on known cases."""

from __future__ import annotations

import numpy as np
import pytest

from tfbreath import crossval
from tfbreath.ensemble import softmax_weights


def _sessions(n_sessions: int, clips: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Labels and session names: ``clips`` clips per session, labels mixed within sessions."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n_sessions * clips).astype(np.float32)
    return labels, [f"steth_{i // clips:04d}" for i in range(n_sessions * clips)]


def test_every_clip_is_held_out_once_and_no_session_is_on_two_sides():
    labels, groups = _sessions(60, 3)
    folds = crossval.session_folds(labels, groups, 5, seed=1)
    assert folds.shape == labels.shape and set(folds) == set(range(5))  # every clip in exactly one fold
    for session in set(groups):
        assert len({folds[i] for i, g in enumerate(groups) if g == session}) == 1, session
    for fold in range(5):
        assert set(labels[folds == fold]) == {0.0, 1.0}
        assert 0.15 < np.mean(folds == fold) < 0.25
    np.testing.assert_array_equal(folds, crossval.session_folds(labels, groups, 5, seed=1))
    assert not np.array_equal(folds, crossval.session_folds(labels, groups, 5, seed=2))


@pytest.mark.parametrize("n_folds, sessions, message", [
    (1, 10, "folds must be >= 2 for cross-validation, got 1"),
    (5, 4, "5-fold cross-validation needs at least 5 recording sessions, got 4"),
])
def test_impossible_folds_are_refused(n_folds, sessions, message):
    labels, groups = _sessions(sessions, 2)
    with pytest.raises(crossval.CrossValidationError, match=message):
        crossval.session_folds(labels, groups, n_folds, seed=0)


def test_a_class_too_rare_for_the_folds_is_refused():
    labels = np.zeros(20, np.float32)
    labels[0] = 1.0  # one exhale: at most one fold can hold it
    with pytest.raises(crossval.CrossValidationError, match=r"has no clip of class\(es\) \[1\]"):
        crossval.session_folds(labels, [f"s{i}" for i in range(20)], 4, seed=0)


def test_a_folds_ensemble_weights_never_see_its_own_clips():
    labels, groups = _sessions(40, 2)
    folds = crossval.session_folds(labels, groups, 4, seed=0)
    rng = np.random.default_rng(1)
    probabilities = {"a": rng.random(len(labels)), "b": rng.random(len(labels))}
    ensemble, weights = crossval.cross_fitted_ensemble(probabilities, labels, folds)
    others = folds != 0
    expected = softmax_weights([crossval.accuracy(labels[others], p[others]) for p in probabilities.values()])
    np.testing.assert_allclose(weights[0], expected)
    np.testing.assert_allclose(ensemble[folds == 0],
                               expected[0] * probabilities["a"][folds == 0] + expected[1] * probabilities["b"][folds == 0])
    # Making model "a" perfect on fold 0 only changes the weights of the OTHER folds.
    perfect = dict(probabilities, a=np.where(folds == 0, labels, probabilities["a"]))
    _, changed = crossval.cross_fitted_ensemble(perfect, labels, folds)
    np.testing.assert_allclose(changed[0], weights[0])
    assert all(changed[k][0] > weights[k][0] for k in (1, 2, 3))


def _hits(labels: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Probabilities that are right where ``hit`` and wrong elsewhere."""
    return np.where(hit, labels, 1 - labels).astype(np.float64)


def test_bootstrap_of_independent_clips_matches_the_binomial_interval():
    labels, groups = _sessions(1000, 1)
    hit = np.arange(1000) < 750  # accuracy 0.75 exactly
    low, high = crossval.session_bootstrap(labels, _hits(labels, hit), groups, crossval.accuracy)
    half = 1.96 * np.sqrt(0.75 * 0.25 / 1000)  # normal approximation, +-2.7 points
    assert low == pytest.approx(0.75 - half, abs=0.005) and high == pytest.approx(0.75 + half, abs=0.005)


def test_bootstrap_resamples_sessions_not_clips():
    """40 sessions of 10 clips that are all right or all wrong carry the information of 40
    clips, not 400: the interval must be as wide as for 40 single-clip sessions."""
    labels, groups = _sessions(40, 10)
    session_hit = np.arange(40) < 30
    clustered = crossval.session_bootstrap(labels, _hits(labels, np.repeat(session_hit, 10)), groups,
                                           crossval.accuracy)
    single_labels, single_groups = _sessions(40, 1)
    single = crossval.session_bootstrap(single_labels, _hits(single_labels, session_hit), single_groups,
                                        crossval.accuracy)
    np.testing.assert_allclose(clustered, single, atol=0.02)
    assert clustered[1] - clustered[0] > 0.2  # a clip-level bootstrap would give about 0.085


def test_paired_gain_counts_only_the_sessions_where_two_predictions_differ():
    """Two predictions that differ on 10 of 200 sessions (always in the first's favour): the
    paired interval stays above 0 and is narrower than either accuracy's own interval."""
    labels, groups = _sessions(200, 2)
    reference_hit = np.arange(400) < 300
    better_hit = reference_hit | ((np.arange(400) >= 300) & (np.arange(400) < 320))  # sessions 150-159 right too
    reference, better = _hits(labels, reference_hit), _hits(labels, better_hit)
    gain = crossval.paired_accuracy_gain(labels, better, reference, groups)
    assert gain["pooled"] == pytest.approx(0.05)
    low, high = gain["ci95"]
    assert 0 < low < 0.05 < high
    alone = crossval.session_bootstrap(labels, reference, groups, crossval.accuracy)
    assert high - low < 0.6 * (alone[1] - alone[0])  # about 0.06 vs 0.115
    assert crossval.paired_accuracy_gain(labels, reference, reference, groups) == {"pooled": 0.0, "ci95": [0.0, 0.0]}


def test_bootstrap_of_a_perfect_model_is_a_point_and_auc_is_weighted():
    labels, groups = _sessions(50, 2)
    assert crossval.session_bootstrap(labels, labels.astype(float), groups, crossval.accuracy) == (1.0, 1.0)
    assert crossval.session_bootstrap(labels, labels.astype(float), groups, crossval.roc_auc) == (1.0, 1.0)
    weights = np.zeros(len(labels))
    weights[labels == 1] = 1.0
    assert np.isnan(crossval.roc_auc(labels, labels.astype(float), weights))  # one class left: undefined


def test_bootstrap_draws_do_not_depend_on_how_many_resamples_are_scored_per_call(monkeypatch):
    labels, groups = _sessions(30, 3)
    probabilities = np.random.default_rng(1).random(len(labels))
    whole = crossval.session_bootstrap(labels, probabilities, groups, crossval.roc_auc, resamples=200)
    monkeypatch.setattr(crossval, "RESAMPLES_PER_CALL", 7)  # 29 calls of 6 or 7 resamples
    assert crossval.session_bootstrap(labels, probabilities, groups, crossval.roc_auc, resamples=200) == whole
    one_at_a_time = [crossval.roc_auc(labels, probabilities, row)
                     for row in _resample_weights(groups, resamples=200)]
    tail = 100 * (1 - crossval.CONFIDENCE) / 2
    np.testing.assert_allclose(whole, np.percentile(one_at_a_time, [tail, 100 - tail]), atol=1e-12)


def _resample_weights(groups: list[str], resamples: int, seed: int = 0) -> np.ndarray:
    """The clip weights of ``session_bootstrap``'s resamples, drawn one resample at a time. ``-> [resamples, N]``"""
    _, session_index = np.unique(groups, return_inverse=True)
    n = session_index.max() + 1
    draws = np.random.default_rng(seed).integers(0, n, (resamples, n))
    return np.stack([np.bincount(row, minlength=n)[session_index] for row in draws])


def test_summary_reports_mean_folds_pooled_and_interval():
    labels, groups = _sessions(60, 2)
    folds = crossval.session_folds(labels, groups, 3, seed=0)
    hit = np.random.default_rng(0).random(len(labels)) < 0.8
    summary = crossval.cross_validation_summary(labels, {"m": _hits(labels, hit)}, folds, groups)
    accuracy = summary["m"]["accuracy"]
    per_fold = [np.mean(hit[folds == k]) for k in range(3)]
    np.testing.assert_allclose(accuracy["folds"], per_fold, atol=1e-4)
    assert accuracy["mean"] == pytest.approx(np.mean(per_fold), abs=1e-4)
    assert accuracy["pooled"] == pytest.approx(np.mean(hit), abs=1e-4)
    assert accuracy["ci95"][0] < accuracy["pooled"] < accuracy["ci95"][1]
    assert set(summary["m"]) == set(crossval.SCORES)
    # The interval resamples sessions, not clips (two clips of a session share their fate here).
    by_session = crossval.session_bootstrap(labels, _hits(labels, hit), groups, crossval.accuracy)
    by_clip = crossval.session_bootstrap(labels, _hits(labels, hit), np.arange(len(labels)), crossval.accuracy)
    assert accuracy["ci95"] == [round(v, crossval.DIGITS) for v in by_session]
    assert accuracy["ci95"] != [round(v, crossval.DIGITS) for v in by_clip]


def test_leave_one_session_out_is_allowed():
    labels = np.array([0, 1] * 5, np.float32)                  # every session holds both classes
    groups = [f"s{i // 2}" for i in range(10)]                 # 5 sessions of 2 clips
    folds = crossval.session_folds(labels, groups, 5, seed=0)
    assert sorted(set(folds)) == list(range(5))
    for k in range(5):
        assert len({g for g, f in zip(groups, folds) if f == k}) == 1


def test_resamples_with_an_undefined_score_are_dropped_not_propagated():
    # session a: two inhales, b: two exhales, c: one of each -> 2/27 of resamples hold one class only (AUC NaN)
    labels = np.array([0, 0, 1, 1, 0, 1], np.float32)
    groups = ["a", "a", "b", "b", "c", "c"]
    probabilities = np.array([0.1, 0.6, 0.4, 0.9, 0.3, 0.7])
    low, high = crossval.session_bootstrap(labels, probabilities, groups, crossval.roc_auc)
    assert np.isfinite(low) and np.isfinite(high) and low <= high


def test_the_bootstrap_seed_changes_the_draws():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60).astype(np.float32)
    groups = [f"s{i // 2}" for i in range(60)]
    probabilities = rng.random(60)
    intervals = {crossval.session_bootstrap(labels, probabilities, groups, crossval.roc_auc, resamples=200, seed=s)
                 for s in range(3)}
    assert len(intervals) > 1


def test_every_fold_lacking_a_class_is_refused_whichever_fold_it_is():
    labels = np.zeros(20, np.float32)
    labels[:3] = 1.0                                          # 3 exhale sessions for 4 folds: one fold has none
    groups = [f"s{i:02d}" for i in range(20)]               # seeds 0 and 3 leave the LAST fold empty
    for seed in range(12):                                    # the empty fold is the last one for some seeds
        with pytest.raises(crossval.CrossValidationError, match="has no clip of class"):
            crossval.session_folds(labels, groups, 4, seed=seed)


def test_folds_are_stratified_by_label_across_sessions():
    labels = np.repeat(np.arange(40) % 2, 5).astype(np.float32)   # 40 one-class sessions, half of each class
    groups = [f"s{i // 5}" for i in range(200)]
    for seed in range(5):
        folds = crossval.session_folds(labels, groups, 4, seed=seed)
        shares = [labels[folds == k].mean() for k in range(4)]
        assert max(abs(s - 0.5) for s in shares) <= 0.1, (seed, shares)


def test_the_paired_gain_interval_follows_its_seed():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 60).astype(np.float32)
    groups = [f"s{i // 2}" for i in range(60)]
    a, b = rng.random(60), rng.random(60)
    intervals = {tuple(crossval.paired_accuracy_gain(labels, a, b, groups, seed=s)["ci95"]) for s in range(3)}
    assert len(intervals) > 1
