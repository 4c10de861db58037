"""Validation metrics (scikit-learn) and the run's plots (matplotlib, no display needed)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn import metrics  # noqa: E402

from tfbreath import artifacts  # noqa: E402
from tfbreath.data import LABEL_NAMES  # noqa: E402

THRESHOLD = 0.5
"""P(exhale) at or above which a clip is called exhale."""

MISSING = "NA"
"""What Keras' ``CSVLogger`` writes for a value an epoch did not log (validation, in a refit)."""


def accuracy(labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray | None = None) -> float | np.ndarray:
    """(Weighted) share of clips whose ``P >= THRESHOLD`` matches the label. ``[N], [N], [N] -> []``

    ``weights`` of shape ``[R, N]`` score R weightings at once (a bootstrap's resamples): ``-> [R]``.
    """
    hits = (np.asarray(probabilities) >= THRESHOLD) == (np.asarray(labels) >= THRESHOLD)  # [N]
    if weights is None or np.ndim(weights) == 1:
        return float(np.average(hits, weights=weights))
    weights = np.asarray(weights, np.float64)  # [R, N]
    return weights @ hits / weights.sum(axis=1)  # [R]


def roc_auc(labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray | None = None) -> float | np.ndarray:
    """(Weighted) area under the ROC curve; NaN unless both classes have weight. ``[N], [N], [N] -> []``

    ``weights`` of shape ``[R, N]`` score R weightings at once: ``-> [R]`` (``weighted_roc_aucs``).
    """
    if weights is not None and np.ndim(weights) == 2:
        return weighted_roc_aucs(labels, probabilities, weights)
    labels = np.asarray(labels).astype(int)
    present = labels if weights is None else labels[np.asarray(weights) > 0]
    if len(np.unique(present)) < 2:
        return float("nan")
    return float(metrics.roc_auc_score(labels, probabilities, sample_weight=weights))


def weighted_roc_aucs(labels: np.ndarray, probabilities: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC under each row of ``weights``, all rows at once. ``[N], [N], [R, N] -> [R]``

    The AUC is the chance that a positive outscores a negative, ties counting one half
    (Mann-Whitney), which is what scikit-learn's trapezoidal ``roc_auc_score`` gives with
    ``sample_weight``. Sorting once and summing each row's weights per distinct score
    makes R rows cost one pass over ``[R, N]``, where R calls of ``roc_auc_score`` sort R times.
    NaN for a row without weight on both classes.
    """
    labels = np.asarray(labels) >= THRESHOLD  # [N]
    order = np.argsort(np.asarray(probabilities), kind="stable")  # [N]
    scores = np.asarray(probabilities)[order]
    starts = np.flatnonzero(np.r_[True, scores[1:] != scores[:-1]])  # [U] first clip of each distinct score
    weights = np.asarray(weights, np.float64)[:, order]  # [R, N]
    positive = np.add.reduceat(weights * labels[order], starts, axis=1)  # [R, U]
    negative = np.add.reduceat(weights * ~labels[order], starts, axis=1)  # [R, U]
    below = np.cumsum(negative, axis=1) - negative  # [R, U] negative weight strictly below each score
    pairs = positive.sum(axis=1) * negative.sum(axis=1)  # [R]
    wins = np.sum(positive * (below + 0.5 * negative), axis=1)  # [R]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(pairs > 0, wins / pairs, np.nan)  # [R]


def log_loss(labels: np.ndarray, probabilities: np.ndarray) -> float:
    """Mean binary cross-entropy of P(exhale) (clipped away from 0 and 1 as scikit-learn does). ``[N], [N] -> []``"""
    return float(metrics.log_loss(np.asarray(labels).astype(int), np.asarray(probabilities), labels=[0, 1]))


def binary_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, ROC AUC, precision, recall and F1 (exhale = positive class)."""
    labels = np.asarray(labels).astype(int)
    predicted = (np.asarray(probabilities) >= THRESHOLD).astype(int)
    return {
        "accuracy": accuracy(labels, probabilities),
        "roc_auc": roc_auc(labels, probabilities),
        "precision": float(metrics.precision_score(labels, predicted, zero_division=0)),
        "recall": float(metrics.recall_score(labels, predicted, zero_division=0)),
        "f1": float(metrics.f1_score(labels, predicted, zero_division=0)),
    }


def plot_training_curves(history_csvs: dict[str, Path], path: Path) -> None:
    """Loss and accuracy per epoch, train and validation, one colour per model."""
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(11, 4))
    for name, csv_path in history_csvs.items():
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        epochs = [int(r["epoch"]) + 1 for r in rows]
        for ax, key in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            line, = ax.plot(epochs, [float(r[key]) for r in rows], label=f"{name} train")
            if rows[0].get(f"val_{key}", MISSING) != MISSING:  # a refit on every clip has no validation
                ax.plot(epochs, [float(r[f"val_{key}"]) for r in rows], "--", color=line.get_color(),
                        label=f"{name} validation")
    for ax, title in ((loss_ax, "loss"), (acc_ax, "accuracy")):
        ax.set(xlabel="epoch", title=title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    artifacts.save_figure(figure, path)


def plot_confusion_matrix(labels: np.ndarray, probabilities: np.ndarray, path: Path, title: str) -> None:
    matrix = metrics.confusion_matrix(np.asarray(labels).astype(int),
                                      (np.asarray(probabilities) >= THRESHOLD).astype(int), labels=[0, 1])
    figure, ax = plt.subplots(figsize=(4, 4))
    metrics.ConfusionMatrixDisplay(matrix, display_labels=list(LABEL_NAMES)).plot(ax=ax, colorbar=False)
    ax.set_title(title)
    artifacts.save_figure(figure, path)


def plot_roc(labels: np.ndarray, probabilities: dict[str, np.ndarray], path: Path, clips: str) -> None:
    """ROC curve of each model on ``clips`` (e.g. "validation split")."""
    figure, ax = plt.subplots(figsize=(5, 5))
    for name, probs in probabilities.items():
        metrics.RocCurveDisplay.from_predictions(np.asarray(labels).astype(int), probs, name=name, ax=ax)
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set_title(f"ROC, {clips}")
    artifacts.save_figure(figure, path)


def write_predictions(path: Path, files, labels: np.ndarray, probabilities: dict[str, np.ndarray],
                      columns: dict[str, Sequence] | None = None) -> None:
    """One row per clip: file, ``columns`` (e.g. session, fold), true label (I/E), then P(exhale)
    per model and the ensemble."""
    columns = columns or {}
    lines = [",".join(["file", *columns, "Target", *probabilities])]
    for i, file in enumerate(files):
        values = [f"{probabilities[name][i]:.6f}" for name in probabilities]
        lines.append(",".join([Path(file).name, *(str(column[i]) for column in columns.values()),
                               LABEL_NAMES[int(labels[i])], *values]))
    artifacts.write_text(path, "\n".join(lines) + "\n")
