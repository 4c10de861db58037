"""A run folder: the one place that knows its layout, claims it, and tells whether a run may resume there.

``python -m tfbreath.fit`` and the ICBHI trainer write runs; ``tune``, ``export``, ``predict``
and the benchmarks read them, all through ``RunFolder``. Layout, relative to the folder:

==============================  ==========================================================
``pipeline.toml``               the resolved pipeline; writing it *claims* the folder
``metrics.json``                the run's summary, written last (its presence = finished)
``<model>.keras``               each trained model (members, ``ensemble``, ICBHI stages)
``history_<model>.csv``         per-epoch (or per-C) training history of a model
``backup/<model>/``             an unfinished model's epoch checkpoints (``tfbreath.checkpoint``)
``logs/<model>/``               TensorBoard logs
``validation_predictions.csv``  one validation split's P(exhale) per clip
``oof_predictions.csv``         a K-fold run's out-of-fold P(exhale) per clip
``fold_<k>/``                   fold k's models: a run folder of its own
==============================  ==========================================================

A folder is claimed only once the data has been read, so a run that fails on its data leaves
nothing that blocks a corrected rerun; a claimed folder takes only a run of the same pipeline
(compared parsed, so formatting, comments and key order do not matter), which then resumes.
All writes are atomic (``tfbreath.artifacts``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any, Callable

from tfbreath import artifacts
from tfbreath.checkpoint import BACKUP_DIR
from tfbreath.config import ConfigError

PIPELINE_FILE = "pipeline.toml"
METRICS_FILE = "metrics.json"
VALIDATION_PREDICTIONS = "validation_predictions.csv"
OOF_PREDICTIONS = "oof_predictions.csv"
MODEL_SUFFIX = ".keras"
HISTORY_PREFIX = "history_"
LOGS_DIR = "logs"
FOLD_DIR_PREFIX = "fold_"


@dataclasses.dataclass(frozen=True)
class RunFolder:
    """The files of one run folder (nothing is read or created until asked)."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def pipeline_file(self) -> Path:
        return self.path / PIPELINE_FILE

    @property
    def metrics_file(self) -> Path:
        return self.path / METRICS_FILE

    @property
    def validation_predictions(self) -> Path:
        return self.path / VALIDATION_PREDICTIONS

    @property
    def oof_predictions(self) -> Path:
        return self.path / OOF_PREDICTIONS

    def model_file(self, name: str) -> Path:
        return self.path / f"{name}{MODEL_SUFFIX}"

    def history_file(self, name: str) -> Path:
        return self.path / f"{HISTORY_PREFIX}{name}.csv"

    def backup_dir(self, name: str) -> Path:
        return self.path / BACKUP_DIR / name

    def logs_dir(self, name: str) -> Path:
        return self.path / LOGS_DIR / name

    def fold(self, k: int) -> "RunFolder":
        return RunFolder(self.path / f"{FOLD_DIR_PREFIX}{k}")

    def model_names(self) -> list[str]:
        """Stems of the ``.keras`` files here, sorted."""
        return sorted(p.stem for p in self.path.glob(f"*{MODEL_SUFFIX}"))

    def refuse_other_run(self, config: Any, parse: Callable[[Path], Any]) -> None:
        """Raise ``ConfigError`` if the folder is claimed by a pipeline other than ``config``
        (``parse`` reads a ``pipeline.toml``; one it cannot parse counts as another)."""
        saved = self.pipeline_file
        if not saved.exists():
            return
        try:
            same = parse(saved) == config
        except (ConfigError, OSError, UnicodeDecodeError):
            same = False
        if not same:
            raise ConfigError(f"{self.path}: holds a run of a different pipeline ({saved}); "
                              f"pass another --out or delete the folder")

    def claim(self, pipeline_toml: str) -> None:
        """Write the resolved pipeline: from now on only a run of it may use the folder."""
        artifacts.write_text(self.pipeline_file, pipeline_toml)

    def read_metrics(self) -> dict | None:
        """``metrics.json`` of a finished run, ``None`` before it is written."""
        if not self.metrics_file.is_file():
            return None
        return json.loads(self.metrics_file.read_text(encoding="utf-8"))

    def write_metrics(self, summary: dict) -> Path:
        return artifacts.write_json(self.metrics_file, summary)

    def drop_empty_backups(self) -> None:
        """Remove ``backup/`` once every model has emptied its own part of it (saved)."""
        with contextlib.suppress(OSError):
            (self.path / BACKUP_DIR).rmdir()
