"""A run folder: the one place that knows its layout, claims it, and tells whether a run may resume there.

``python -m tfbreath.fit`` and the ICBHI trainer write runs; ``tune``, ``export``, ``predict``
and the benchmarks read them, all through ``RunFolder``. Layout, relative to the folder:

==============================  ==========================================================
``pipeline.toml``               the resolved pipeline; writing it *claims* the folder
``clips.csv``                   the clips the run reads (file, session, label), claimed with it
``metrics.json``                the run's summary, written last (its presence = finished)
``<model>.keras``               each trained model (members, ``ensemble``, ICBHI stages)
``history_<model>.csv``         per-epoch (or per-C) training history of a model
``backup/<model>/``             an unfinished model's epoch checkpoints (``tfbreath.checkpoint``)
``logs/<model>/``               TensorBoard logs
``validation_predictions.csv``  one validation split's P(exhale) per clip
``oof_predictions.csv``         a K-fold run's out-of-fold P(exhale) per clip
``fold_<k>/``                   fold k's models: a run folder of its own
``<model>[_<quantize>].tflite`` a model exported for TFLite (waveform in, P(exhale) out)
``<model>_waveform.keras``      the same exported graph as a Keras model
``<model>_savedmodel/``         and as a SavedModel
==============================  ==========================================================

A search folder of ``python -m tfbreath.tune`` (``SearchFolder``) holds ``search_pipeline.toml``
and ``clips.csv`` (its claim), KerasTuner's ``search/`` project, ``trials.csv``, ``objective.png``,
``best_pipeline.toml`` and ``best_hyperparameters.json``.

``resolve`` turns what a command line gives (a pipeline file or none, a data folder or none, a
run folder or none) into the pipeline, the data folder and this process's run folder: without
data (``--data`` or ``$TFBREATH_DATA``) a small demo recipe trains on synthetic audio written
into the run folder.

A folder is claimed only once the data has been read, so a run that fails on its data leaves
nothing that blocks a corrected rerun; a claimed folder takes only a run of the same pipeline
(compared parsed, so formatting, comments and key order do not matter) on the same clips in
the same order (so the same folds and splits: no resumed model has seen a clip it is scored on),
which then resumes.
All writes are atomic (``tfbreath.artifacts``).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import tensorflow as tf

from tfbreath import artifacts, distribute, synthetic
from tfbreath.checkpoint import BACKUP_DIR
from tfbreath.config import ConfigError, PipelineConfig, dump_config, load_config, with_overrides
from tfbreath.data import DataError, Examples

PIPELINE_FILE = "pipeline.toml"
CLIPS_FILE = "clips.csv"
CLIPS_HEADER = ("file", "session", "label")
METRICS_FILE = "metrics.json"
VALIDATION_PREDICTIONS = "validation_predictions.csv"
OOF_PREDICTIONS = "oof_predictions.csv"
MODEL_SUFFIX = ".keras"
WAVEFORM_SUFFIX = "_waveform"
"""Ends the stem of a model exported waveform in (``<model>_waveform.keras``), not one trained."""
TFLITE_SUFFIX = ".tflite"
NO_QUANTIZATION = "none"
HISTORY_PREFIX = "history_"
LOGS_DIR = "logs"
FOLD_DIR_PREFIX = "fold_"
SEARCH_PIPELINE, BEST_PIPELINE, BEST_HYPERPARAMETERS = ("search_pipeline.toml", "best_pipeline.toml",
                                                       "best_hyperparameters.json")
TRIALS_CSV, OBJECTIVE_PLOT = "trials.csv", "objective.png"
SEARCH_PROJECT = "search"
"""KerasTuner's project folder inside a search folder."""
FIRST_FOLD = "0"
"""The ``fold`` value of a K-fold run's first fold in ``oof_predictions.csv``."""
SYNTHETIC_DATA_DIR = "synthetic_data"

RUNS_DIR = Path("saved_models")
"""Where runs go by default: ``saved_models/<pipeline name>``."""
DATA_ENV = "TFBREATH_DATA"
"""Environment variable naming the data folder when none is given."""
SYNTHETIC_SUFFIX = "_synthetic"
"""Appended to the pipeline's name (and so to its default run folder) for the no-data demo."""
SYNTHETIC_RECIPE = {
    "train": {"epochs": 8, "model_width": 0.25, "early_stopping_patience": 8},
    "augment": {"warmup_epochs": 2},
    "data": {"batch_size": 32, "cache": "memory"},
}
"""Overrides for the no-data demo: small models, few epochs, so it finishes in minutes on a CPU."""


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

    def tflite_file(self, name: str, quantize: str = NO_QUANTIZATION) -> Path:
        """``<name>.tflite``, or ``<name>_<quantize>.tflite`` for a quantized export."""
        suffix = "" if quantize == NO_QUANTIZATION else f"_{quantize}"
        return self.path / f"{name}{suffix}{TFLITE_SUFFIX}"

    def waveform_model_file(self, name: str) -> Path:
        return self.path / f"{name}{WAVEFORM_SUFFIX}{MODEL_SUFFIX}"

    def savedmodel_dir(self, name: str) -> Path:
        return self.path / f"{name}_savedmodel"

    def history_file(self, name: str) -> Path:
        return self.path / f"{HISTORY_PREFIX}{name}.csv"

    def backup_dir(self, name: str) -> Path:
        return self.path / BACKUP_DIR / name

    def logs_dir(self, name: str) -> Path:
        return self.path / LOGS_DIR / name

    def fold(self, k: int) -> "RunFolder":
        return RunFolder(self.path / f"{FOLD_DIR_PREFIX}{k}")

    def model_names(self) -> list[str]:
        """Stems of the trained models' ``.keras`` files here (not the exported waveform ones), sorted."""
        return sorted(p.stem for p in self.path.glob(f"*{MODEL_SUFFIX}") if not p.stem.endswith(WAVEFORM_SUFFIX))

    def refuse_other_run(self, config: Any, parse: Callable[[Path], Any]) -> None:
        """Raise ``ConfigError`` if the folder is claimed by a pipeline other than ``config``
        (``parse`` reads a ``pipeline.toml``; one it cannot parse counts as another)."""
        _refuse_other(self.path, self.pipeline_file, config, parse, "run")

    @property
    def clips_file(self) -> Path:
        return self.path / CLIPS_FILE

    def claim(self, pipeline_toml: str, clips: Sequence[tuple[str, str, float]] = ()) -> None:
        """Write the resolved pipeline and the ``clips`` the run reads (``(file relative to the data
        folder, session, label)``, in the order the folds and splits are drawn from): from now on
        only a run of that pipeline on those clips may use the folder.

        Raises ``ConfigError`` if the folder holds a run on other clips or another order of them:
        its models may have trained on clips this run would score them on.
        """
        _claim(self.path, self.pipeline_file, pipeline_toml, self.clips_file, clips, "models trained")

    def read_metrics(self) -> dict | None:
        """``metrics.json`` of a finished run, ``None`` before it is written."""
        if not self.metrics_file.is_file():
            return None
        return json.loads(self.metrics_file.read_text(encoding="utf-8"))

    def write_metrics(self, summary: dict) -> Path:
        return artifacts.write_json(self.metrics_file, summary)

    def held_out_files(self) -> list[str] | None:
        """Names of the clips ``fit`` kept out of training, as it recorded them: the validation
        split (``validation_predictions.csv``) or, for a K-fold run, the first fold
        (``oof_predictions.csv``; the refit on every clip saw them too). ``None`` if neither file is here."""
        for path, wanted in ((self.validation_predictions, None), (self.oof_predictions, FIRST_FOLD)):
            if path.is_file():
                with open(path, newline="", encoding="utf-8") as handle:
                    return [row["file"] for row in csv.DictReader(handle)
                            if wanted is None or row["fold"] == wanted]
        return None

    def drop_empty_backups(self) -> None:
        """Remove ``backup/`` once every model has emptied its own part of it (saved)."""
        with contextlib.suppress(OSError):
            (self.path / BACKUP_DIR).rmdir()


def clips_of(examples: Examples, data_dir: Path) -> list[tuple[str, str, float]]:
    """``(file relative to data_dir, session, label)`` of each clip, as a claim records them."""
    return [(Path(os.path.relpath(file, data_dir)).as_posix(), session, float(label))
            for file, session, label in zip(examples.files, examples.groups, examples.labels)]


def _claim(folder: Path, saved: Path, pipeline_toml: str, clips_file: Path,
           clips: Sequence[tuple[str, str, float]], what: str) -> None:
    """Write a folder's claim: ``pipeline_toml`` to ``saved`` and, if any, the ``clips`` to
    ``clips_file``, after refusing (``ConfigError``) other clips or another order of them than
    those already recorded there (``what`` the folder holds: ``"models trained"``, ...)."""
    rows = [list(CLIPS_HEADER)] + [[str(file), str(session), f"{float(label):g}"] for file, session, label in clips]
    if clips:
        _refuse_other_clips(folder, clips_file, rows, what)
    artifacts.write_text(saved, pipeline_toml)
    if clips:
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows(rows)
        artifacts.write_text(clips_file, text.getvalue())


def _refuse_other_clips(folder: Path, clips_file: Path, rows: list[list[str]], what: str) -> None:
    if not clips_file.is_file():
        return
    with open(clips_file, newline="", encoding="utf-8") as handle:
        stored = list(csv.reader(handle))
    if stored == rows:
        return
    before, now = {tuple(r) for r in stored[1:]}, {tuple(r) for r in rows[1:]}
    gone, new = before - now, now - before
    example = min(gone or new, default=None)
    details = (f"{len(gone)} of its clips are not among these and {len(new)} of these are new, e.g. "
               f"{','.join(example)} ({'gone' if gone else 'new'})" if example else "the same clips in another order")
    raise ConfigError(f"{folder}: holds {what} on other clips ({details}; {clips_file}); "
                      f"pass another --out or delete the folder")


def _refuse_other(folder: Path, saved: Path, config: Any, parse: Callable[[Path], Any], what: str,
                  note: str = "") -> None:
    """Raise ``ConfigError`` if ``saved`` (a folder's claim) holds a pipeline that ``parse`` does
    not read as ``config``; a missing claim is no objection, an unreadable one counts as another."""
    if not saved.exists():
        return
    try:
        same = parse(saved) == config
    except (ConfigError, OSError, UnicodeDecodeError):
        same = False
    if not same:
        raise ConfigError(f"{folder}: holds a {what} of a different pipeline ({saved}); {note}"
                          f"pass another --out or delete the folder")


@dataclasses.dataclass(frozen=True)
class SearchFolder:
    """The files of one ``tune`` search folder."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def pipeline_file(self) -> Path:
        return self.path / SEARCH_PIPELINE

    @property
    def clips_file(self) -> Path:
        return self.path / CLIPS_FILE

    @property
    def best_pipeline_file(self) -> Path:
        return self.path / BEST_PIPELINE

    @property
    def best_hyperparameters_file(self) -> Path:
        return self.path / BEST_HYPERPARAMETERS

    @property
    def trials_file(self) -> Path:
        return self.path / TRIALS_CSV

    @property
    def objective_plot(self) -> Path:
        return self.path / OBJECTIVE_PLOT

    def refuse_other_search(self, pipeline: PipelineConfig,
                            comparable: Callable[[PipelineConfig], PipelineConfig]) -> None:
        """Raise ``ConfigError`` if a search already here used another pipeline, up to what
        ``comparable`` neutralises (settings a resumed search may change)."""
        _refuse_other(self.path, self.pipeline_file, comparable(pipeline), lambda path: comparable(load_config(path)),
                      "search", "only --max-trials may change when resuming; ")

    def claim(self, pipeline: PipelineConfig, comparable: Callable[[PipelineConfig], PipelineConfig],
              clips: Sequence[tuple[str, str, float]]) -> None:
        """Write the search's pipeline and the ``clips`` it reads (as ``RunFolder.claim``), after
        ``refuse_other_search``; raises ``ConfigError`` if the search already here read other clips
        (or another order of them: another split), whose trials this one would mix with its own."""
        self.refuse_other_search(pipeline, comparable)
        _claim(self.path, self.pipeline_file, dump_config(pipeline), self.clips_file, clips, "trials run")


def resolve(pipeline_file: Path | None, data_dir: Path | None, out: Path | None,
            overrides: dict[str, dict[str, Any]], strategy: tf.distribute.Strategy | None = None,
            refuse_other: Callable[[PipelineConfig, Path], None] | None = None,
            demo: dict[str, dict[str, Any]] = SYNTHETIC_RECIPE, suffix: str = ""
            ) -> tuple[PipelineConfig, Path, Path]:
    """The pipeline (``pipeline_file``, else the default) with ``overrides`` (``{section: {key:
    value}}``, ``None`` values ignored) applied, the data folder and this process's run folder
    (``out``, else ``saved_models/<pipeline name><suffix>``; a worker of a multi-worker strategy
    gets its own subfolder).

    Without ``data_dir`` the one ``$TFBREATH_DATA`` names is used; without that the demo recipe
    (``demo``, under the overrides) trains on synthetic inhale/exhale-like audio,
    written into the run folder and said clearly. Raises ``DataError`` for a data folder that
    does not exist, ``OutputPathError`` for a run folder that cannot be written, and
    ``refuse_other(pipeline, run_dir)``'s error (default: ``RunFolder.refuse_other_run``) for a
    folder that holds another run, before any synthetic audio is written into it.
    """
    pipeline = load_config(pipeline_file) if pipeline_file else PipelineConfig()
    data_dir = data_dir or (Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else None)
    if data_dir is None:
        for section, values in demo.items():
            pipeline = with_overrides(pipeline, section, **values)
        pipeline = dataclasses.replace(pipeline, name=pipeline.name + SYNTHETIC_SUFFIX)
    for section, values in overrides.items():
        pipeline = with_overrides(pipeline, section, **values)
    run_dir = distribute.worker_run_dir(out or RUNS_DIR / f"{pipeline.name}{suffix}",
                                        strategy or tf.distribute.get_strategy())
    artifacts.check_writable(run_dir, folder=True)
    if data_dir is None:
        refuse = refuse_other or (lambda chosen, folder: RunFolder(folder).refuse_other_run(chosen, load_config))
        refuse(pipeline, run_dir)  # before its data is written over
        settings = ", ".join(f"{key} = {value}" for values in demo.values() for key, value in values.items())
        print(f"No data folder given (--data) or set (${DATA_ENV}): training a small, fast demo on "
              f"synthetic inhale/exhale-like audio written to {run_dir / SYNTHETIC_DATA_DIR}, with the demo's "
              f"{settings} in place of the pipeline's (command-line flags still apply). "
              f"Pass --data DIR (Kaggle layout) to train on real clips.")
        data_dir = synthetic.write_synthetic_breath(run_dir / SYNTHETIC_DATA_DIR, seed=pipeline.data.seed,
                                                    sample_rate=pipeline.audio.sample_rate,
                                                    duration_s=pipeline.audio.duration_s)
    elif not data_dir.is_dir():
        raise DataError(f"{data_dir}: data folder not found")
    return pipeline, data_dir, run_dir
