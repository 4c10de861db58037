"""Scores (tfbreath.evaluation): the batched forms agree with one weighting at a time and with scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tfbreath import evaluation
from tfbreath.evaluation import THRESHOLD

ROWS = 6


def _case(n: int, decimals: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, probabilities rounded to ``decimals`` (0-1 decimals: many ties) and ``[ROWS, n]`` integer weights."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n).astype(np.float32)
    probabilities = np.round(rng.random(n), decimals)
    return labels, probabilities, rng.integers(0, 4, (ROWS, n))


@pytest.mark.parametrize("decimals", [0, 1, 6])
@pytest.mark.parametrize("seed", range(5))
def test_batched_roc_auc_is_scikit_learns_weighted_auc_row_by_row(decimals, seed):
    labels, probabilities, weights = _case(40, decimals, seed)
    expected = [roc_auc_score(labels, probabilities, sample_weight=row)
                if len(set(labels[row > 0])) == 2 else np.nan for row in weights]
    np.testing.assert_allclose(evaluation.roc_auc(labels, probabilities, weights), expected, atol=1e-12)


def test_batched_roc_auc_is_nan_where_a_row_weighs_one_class_only():
    labels = np.array([0, 0, 1, 1], np.float32)
    probabilities = np.array([0.1, 0.6, 0.4, 0.9])
    weights = np.array([[1, 1, 0, 0], [0, 0, 2, 1], [1, 0, 0, 1], [1, 1, 1, 1]])
    np.testing.assert_allclose(evaluation.roc_auc(labels, probabilities, weights), [np.nan, np.nan, 1.0, 0.75])


def test_batched_accuracy_is_each_rows_weighted_accuracy():
    labels, probabilities, weights = _case(30, 2, 0)
    weights[0] = 1  # the unweighted row
    expected = [evaluation.accuracy(labels, probabilities, row) for row in weights]
    assert expected[0] == evaluation.accuracy(labels, probabilities)
    np.testing.assert_allclose(evaluation.accuracy(labels, probabilities, weights), expected, atol=1e-12)


def test_a_probability_at_the_threshold_is_exhale():
    """``THRESHOLD`` is P(exhale) at or above which a clip is E (label 1)."""
    assert evaluation.accuracy(np.array([1.0, 0.0]), np.array([THRESHOLD, np.nextafter(THRESHOLD, 0)])) == 1.0
