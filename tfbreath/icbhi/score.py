"""The ICBHI 2017 challenge score of cycle predictions, with per-class and per-device breakdowns.

    Se    = abnormal cycles predicted as their exact class / all abnormal cycles
    Sp    = normal cycles predicted normal / all normal cycles
    score = (Se + Sp) / 2

Class 0 is normal. In the 4-class task an abnormal cycle (crackle, wheeze, both) counts as found
only when its own class is predicted: a crackle called "both" is a miss (the challenge's
definition, and what RespireNet reports). In the 2-class task that is simply "abnormal".
A ratio with nothing to count (e.g. no normal cycle of a device) is ``None``, which JSON writes
as ``null``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix  # noqa: E402

from tfbreath import artifacts  # noqa: E402
from tfbreath.icbhi.dataset import CLASS_NAMES  # noqa: E402

NORMAL = 0
"""Label of the normal class in both tasks; every other label is abnormal."""
PANEL_INCHES = 4.2
"""Width and height of one confusion-matrix panel."""


def _ratio(hits: int, total: int) -> float | None:
    return float(hits) / total if total else None


def to_two_class(labels: np.ndarray) -> np.ndarray:
    """4-class labels or predictions -> 0 normal / 1 abnormal (crackle, wheeze or both). ``[N] -> [N]``"""
    return (np.asarray(labels) != NORMAL).astype(np.int64)


def _scores(labels: np.ndarray, predicted: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    classes = len(class_names)
    normal = labels == NORMAL
    correct = labels == predicted
    se = _ratio(int(np.sum(correct & ~normal)), int(np.sum(~normal)))
    sp = _ratio(int(np.sum(correct & normal)), int(np.sum(normal)))
    per_class = {
        name: {"cycles": int(np.sum(labels == c)), "correct": int(np.sum(correct & (labels == c))),
               "recall": _ratio(int(np.sum(correct & (labels == c))), int(np.sum(labels == c)))}
        for c, name in enumerate(class_names)
    }
    return {
        "score": None if se is None or sp is None else (se + sp) / 2,
        "se": se,
        "sp": sp,
        "accuracy": _ratio(int(np.sum(correct)), len(labels)),
        "cycles": int(len(labels)),
        "per_class": per_class,
        "confusion_matrix": confusion_matrix(labels, predicted, labels=list(range(classes))).tolist(),
    }


def icbhi_scores(labels: Sequence[int], predicted: Sequence[int], classes: int,
                 devices: Sequence[str] | None = None) -> dict[str, Any]:
    """Se, Sp, score, accuracy, per-class recall and confusion matrix (rows = true class).

    ``classes`` is 4 or 2 (the task; class names from ``dataset.CLASS_NAMES``). With ``devices``
    (one per cycle) the same numbers are added per recording device under ``"per_device"``,
    sorted by device name.
    """
    if classes not in CLASS_NAMES:
        raise ValueError(f"classes must be one of {sorted(CLASS_NAMES)}, got {classes!r}")
    class_names = CLASS_NAMES[classes]
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    predicted = np.asarray(predicted, dtype=np.int64).reshape(-1)
    if labels.shape != predicted.shape:
        raise ValueError(f"labels and predictions differ in length: {labels.shape[0]} vs {predicted.shape[0]}")
    for what, values in (("labels", labels), ("predictions", predicted)):
        if values.size and (values.min() < 0 or values.max() >= len(class_names)):
            raise ValueError(f"{what} must be in [0, {len(class_names) - 1}], got {sorted(set(values.tolist()))}")
    result = _scores(labels, predicted, class_names)
    if devices is not None:
        devices = np.asarray(devices).reshape(-1)
        if devices.shape != labels.shape:
            raise ValueError(f"devices and labels differ in length: {devices.shape[0]} vs {labels.shape[0]}")
        result["per_device"] = {str(d): _scores(labels[devices == d], predicted[devices == d], class_names)
                                for d in sorted(set(devices.tolist()))}
    return result


def plot_confusion(matrices: dict[str, Sequence[Sequence[int]]], classes: int, path: str | Path) -> Path:
    """One confusion-matrix panel per entry (title -> matrix, rows = true class), saved as a PNG."""
    class_names = CLASS_NAMES[classes]
    figure, axes = plt.subplots(1, len(matrices), figsize=(PANEL_INCHES * len(matrices), PANEL_INCHES),
                                squeeze=False, layout="constrained")
    for ax, (title, matrix) in zip(axes[0], matrices.items()):
        ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(class_names)).plot(ax=ax, colorbar=False)
        ax.set_title(title)
    return artifacts.save_figure(figure, path)
