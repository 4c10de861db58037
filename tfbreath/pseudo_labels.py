"""Pseudo-labelling: unlabelled clips trained on, each targeted at what a teacher ensemble says of it.

With ``[train] pseudo_labels = "soft"`` and ``folds >= 2``, ``fit`` trains every fold twice.
First the recipe as it is, on the labelled clips: fold k's ensemble is fold k's *teacher*. It
labels the data folder's unlabelled clips (``test.csv`` + ``test/``) with its P(exhale), and
fold k's gradient members (CNN8, VGG) train again, as *students*, on fold k's training clips
plus those soft-labelled clips; the pooled member (a closed-form logistic regression) keeps the
labelled clips. The out-of-fold estimate is the students' ensemble's, scored as any other.

Honesty: an unlabelled clip from a recording session that fold k holds out, or stops early on,
is left out of fold k's students, so no student has heard the sessions it is scored or stopped
on. The refit on every clip trains on all unlabelled clips, targeted at the mean of the folds'
teachers (no teacher saw all labelled clips; their mean is the fold-average ensemble).

Measured on the 3,200 breath clips with their 1,000 unlabelled ones: no gain out of fold
(ensemble +0.3 points [-0.9, +1.5]; ``benchmarks/RESULTS.md``, "pseudo-labels"), so the shipped
recipe leaves it off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from tfbreath import data

STUDENT_FOLDER = "pseudo_labelled"
"""Sub-folder of ``fold_<k>/`` where fold k's students train."""


def read_unlabelled(data_dir: Path) -> data.Examples:
    """The data folder's unlabelled clips (``test.csv`` + ``test/``), which pseudo-labelling needs."""
    if not (Path(data_dir) / "test.csv").is_file():
        raise data.DataError(f"{data_dir}: pseudo_labels needs unlabelled clips (test.csv + test/), "
                             f"and there is no test.csv")
    return data.read_kaggle_test(data_dir)[1]


def unheard(groups: Sequence[str], sessions: set[str]) -> np.ndarray:
    """Which unlabelled clips come from none of ``sessions`` (those a fold scores or stops on). ``[U]``"""
    return np.array([group not in sessions for group in groups], bool)


def training_set(extracted: data.FeatureSet, labelled_at: np.ndarray, unlabelled_at: np.ndarray,
                 targets: np.ndarray, used: np.ndarray, labelled: np.ndarray | None = None) -> data.FeatureSet:
    """One training set of labelled and pseudo-labelled clips, from the features of both.

    ``labelled_at`` ``[N]`` and ``unlabelled_at`` ``[U]`` are the positions of the labelled and
    unlabelled clips among ``extracted``'s kept files; the set holds the labelled clips at
    ``labelled`` (positions among the N; default all) with their labels, and the unlabelled clips
    that ``used`` ``[U]`` picks, targeted at ``targets`` ``[U]``.
    """
    labels = extracted.kept_examples.labels.copy()  # [K]
    labels[unlabelled_at] = targets
    chosen = labelled_at if labelled is None else labelled_at[labelled]
    return extracted.relabelled(labels).subset(np.concatenate([chosen, unlabelled_at[used]]))
