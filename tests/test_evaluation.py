"""Scores (tfbreath.evaluation): the batched forms agree with one weighting at a time and with scikit-learn."""

from __future__ import annotations

import csv
import warnings

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tfbreath import evaluation, timeline
from tfbreath.data import LABEL_NAMES
from tfbreath.evaluation import MISSING, THRESHOLD

ROWS = 6
PREDICTION_DECIMALS = 6
"""Decimals of a P(exhale) in a run's predictions CSV (as ``classifier.PROBABILITY_DECIMALS`` in predict's)."""


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


def test_roc_auc_is_nan_unless_both_classes_have_weight():
    """One class only (a cross-validation fold of one label, a weighting that drops a class) has no AUC:
    NaN, said by no scikit-learn warning or error, for the unweighted and the one-weighting forms alike."""
    labels = np.array([0, 0, 1, 1], np.float32)
    probabilities = np.array([0.1, 0.6, 0.4, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.isnan(evaluation.roc_auc(labels[2:], probabilities[2:]))
        assert np.isnan(evaluation.roc_auc(labels, probabilities, np.array([0, 0, 1, 1])))
    assert evaluation.roc_auc(labels, probabilities, np.array([1, 1, 1, 1])) == 0.75


def test_a_label_at_the_threshold_is_exhale_and_the_threshold_is_the_decoders_even():
    """A mixed label of exactly ``THRESHOLD`` counts as exhale, as a probability there does; and the
    threshold is the P(exhale) that favours neither phase in the timeline decoder (``timeline.EVEN``)."""
    assert evaluation.accuracy(np.array([THRESHOLD]), np.array([1.0])) == 1.0
    assert THRESHOLD == timeline.EVEN


def test_binary_metrics_call_exhale_at_the_threshold_and_score_it_as_the_positive_class():
    """Exhale is the positive class and ``P >= THRESHOLD`` calls it: two of three exhale clips found
    (one exactly at the threshold) and one inhale called exhale give precision and recall 2/3; a run
    without false exhales tells precision (1) from recall (2/3)."""
    labels = np.array([1, 1, 1, 0, 0])
    probabilities = np.array([THRESHOLD, 0.9, 0.2, 0.7, 0.1])
    scores = evaluation.binary_metrics(labels, probabilities)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(3 / 5)
    exhale_only = evaluation.binary_metrics(np.array([1, 1, 1, 0]), np.array([0.9, 0.8, 0.2, 0.1]))
    assert exhale_only["precision"] == 1.0 and exhale_only["recall"] == pytest.approx(2 / 3)


def test_log_loss_of_one_class_is_its_cross_entropy():
    """A validation split of one label still has a loss (``train``'s candidate scores): the mean
    ``-log P`` of its clips, where scikit-learn would refuse labels of one class."""
    labels, probabilities = np.ones(2), np.array([0.9, 0.8])
    assert evaluation.log_loss(labels, probabilities) == pytest.approx(-np.log(probabilities).mean())


def test_predictions_csv_names_files_then_columns_label_and_probabilities(tmp_path):
    """``write_predictions``: the file's name (not its folder), the extra columns, the I/E label, then
    P(exhale) per model to ``PREDICTION_DECIMALS`` decimals."""
    probability = 1 / 3
    path = tmp_path / "predictions.csv"
    evaluation.write_predictions(path, [tmp_path / "sub" / "a.wav"], np.array([1]),
                                 {"cnn8": np.array([probability]), "ensemble": np.array([1 - probability])},
                                 {"session": ["s1"]})
    rows = list(csv.reader(path.read_text().splitlines()))
    decimals = f".{PREDICTION_DECIMALS}f"
    assert rows == [["file", "session", "Target", "cnn8", "ensemble"],
                    ["a.wav", "s1", LABEL_NAMES[1], format(probability, decimals), format(1 - probability, decimals)]]


def test_plots_take_a_refit_without_validation_and_a_split_of_one_class(tmp_path):
    """A refit's history logs ``MISSING`` for validation (no validation curve drawn); a split of exhale
    clips only still has its 2 x 2 confusion matrix."""
    history = tmp_path / "history.csv"
    history.write_text(f"epoch,loss,accuracy,val_loss,val_accuracy\n0,0.7,0.5,{MISSING},{MISSING}\n"
                       f"1,0.6,0.6,{MISSING},{MISSING}\n")
    evaluation.plot_training_curves({"cnn8": history}, tmp_path / "curves.png")
    evaluation.plot_confusion_matrix(np.ones(2), np.ones(2), tmp_path / "confusion.png", "exhale only")
    assert (tmp_path / "curves.png").is_file() and (tmp_path / "confusion.png").is_file()
