"""``python -m tfbreath.tune``: hyperparameter search over a pipeline's ``[tune]`` space (KerasTuner).

    python -m tfbreath.tune [--pipeline pipelines/breath_phase_cpu.toml] [--data DIR] [--out DIR]
                            [--model cnn8|vgg|temporal] [--tuner hyperband|bayesian|random]
                            [--max-trials N] [--max-epochs N] [--precision P] [--seed N]
                            [--strategy default|mirrored|multiworker] [--cpu-devices N]

Flags override the pipeline file's ``[tune]`` (and ``[data] seed``, ``[train] precision``).
Data are resolved as in ``python -m tfbreath.fit`` (``--data``, else ``$TFBREATH_DATA``, else
synthetic clips). Each trial builds a model with ``tfbreath.hypermodel.BreathHyperModel`` and
is scored by its best ``val_accuracy`` on the session-grouped validation split. The search
folder (default ``saved_models/<pipeline name>_tune``) receives:

- ``search_pipeline.toml`` and ``clips.csv``: the resolved pipeline of the search and the clips
  of its split (its claim, written once the data has been read);
- ``search/``: KerasTuner's project (``oracle.json``, one ``trial_*`` folder per trial);
- ``trials.csv``: one row per trial (status, objective, epochs, every hyperparameter), also
  printed, and ``objective.png``: the objective over the trials with the running best;
- ``best_pipeline.toml``: the best trial as a pipeline for ``python -m tfbreath.fit --pipeline``,
  and ``best_hyperparameters.json``.

Running the same command again resumes: finished trials are kept, an interrupted one is rerun.
Only ``--max-trials`` may change between the runs of one search (to extend it); the data folder
must hold the same clips.

**Distributed search** uses KerasTuner's chief/worker mode. Every process runs the same
command with the same ``--out`` (a shared folder) and ``--data``, and these variables:
``KERASTUNER_ORACLE_IP`` / ``KERASTUNER_ORACLE_PORT`` (where the chief listens) and
``KERASTUNER_TUNER_ID`` (``chief`` for the chief, a distinct id such as ``tuner0`` for each
worker). The chief serves the oracle and runs no trial; each worker asks it for trials until
the search is done; the chief then writes the summary and the best pipeline.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import os
import sys
from pathlib import Path
from typing import Any, Iterable

import keras
import keras_tuner as kt
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfbreath import artifacts, data, distribute, run_folder  # noqa: E402
from tfbreath.config import (CNN_MODELS, TUNERS, PipelineConfig, TuneConfig,  # noqa: E402
                             dump_config, with_overrides)
from tfbreath.console import add_verbose_argument  # noqa: E402
from tfbreath.errors import TfbreathError, print_error  # noqa: E402
from tfbreath.hypermodel import (HYPERBAND_EPOCHS, HYPERPARAMETERS, OBJECTIVE, BreathHyperModel,  # noqa: E402
                                 extraction_pipeline)
from tfbreath.precision import choose_precision, global_policy  # noqa: E402
from tfbreath.run_folder import SearchFolder  # noqa: E402

TUNE_SUFFIX = "_tune"
"""Default search folder: ``saved_models/<pipeline name>_tune`` (the no-data demo's pipeline name
ends in ``_synthetic``, as ``fit``'s does)."""

DEMO_RECIPE = {"train": {"early_stopping_patience": run_folder.SYNTHETIC_RECIPE["train"]["early_stopping_patience"]},
               "data": {"cache": run_folder.SYNTHETIC_RECIPE["data"]["cache"]}}
"""What a search without data keeps of ``fit``'s demo recipe: a trial's ``[tune]`` values set its
epochs, width, batch size and warm-up."""

TUNED_SUFFIX = "_tuned"
"""The best pipeline's name: ``<pipeline name>_tuned``."""


TUNER_ID_ENV, ORACLE_IP_ENV, ORACLE_PORT_ENV = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"
"""KerasTuner's variables for a distributed search (a chief oracle and workers)."""

CHIEF_TOKEN = "chief"
"""A tuner id containing this serves the oracle (KerasTuner's own rule)."""

SINGLE, CHIEF, WORKER = "single", "chief", "worker"
"""Roles of this process in a search."""

CONSECUTIVE_FAILURES = "Number of consecutive failures"
"""How KerasTuner's ``RuntimeError`` begins when it stops a search after too many failed trials in a row."""


class TuneError(TfbreathError, RuntimeError):
    """The search cannot run or produced nothing; the message says why in one line."""


def search_role() -> str:
    """``single``, or, in KerasTuner's distributed mode, ``chief`` (serves the oracle) or ``worker``."""
    if ORACLE_IP_ENV not in os.environ:
        return SINGLE
    missing = [name for name in (ORACLE_PORT_ENV, TUNER_ID_ENV) if not os.environ.get(name)]
    if missing:
        raise TuneError(f"distributed tuning: ${ORACLE_IP_ENV} is set ({os.environ[ORACLE_IP_ENV]!r}) but "
                        f"{', '.join('$' + m for m in missing)} not; every process needs all three")
    return CHIEF if CHIEF_TOKEN in os.environ[TUNER_ID_ENV] else WORKER


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tfbreath.tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", type=Path, help="pipeline TOML with a [tune] space (default: the embedded one)")
    parser.add_argument("--data", type=Path,
                        help=f"Kaggle-layout data folder (default: ${run_folder.DATA_ENV}, else synthetic)")
    parser.add_argument("--out", type=Path, help=f"search folder (default: saved_models/<pipeline name>{TUNE_SUFFIX})")
    parser.add_argument("--model", help=f"override [tune] model: {', '.join(CNN_MODELS)}")
    parser.add_argument("--tuner", help=f"override [tune] tuner: {', '.join(TUNERS)}")
    parser.add_argument("--max-trials", type=int, help="override [tune] max_trials")
    parser.add_argument("--max-epochs", type=int, help="override [tune] max_epochs")
    parser.add_argument("--precision", help="auto, float32, mixed_bfloat16 or mixed_float16")
    parser.add_argument("--seed", type=int, help="override [data] seed (split, shuffling, the tuner's sampling)")
    distribute.add_strategy_arguments(parser, "every trial")
    add_verbose_argument(parser)
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace,
            strategy: tf.distribute.Strategy | None = None) -> tuple[PipelineConfig, Path, Path]:
    """The search's pipeline with flags applied, its data folder and its search folder."""
    return run_folder.resolve(args.pipeline, args.data, args.out,
                              {"train": {"precision": args.precision}, "data": {"seed": args.seed},
                               "tune": {"model": args.model, "tuner": args.tuner, "max_trials": args.max_trials,
                                        "max_epochs": args.max_epochs}}, strategy,
                              lambda pipeline, out: SearchFolder(out).refuse_other_search(pipeline, _uncapped),
                              DEMO_RECIPE, TUNE_SUFFIX)


def _uncapped(pipeline: PipelineConfig) -> PipelineConfig:
    """The pipeline with its trial cap neutralised: what must match to resume (the cap may grow)."""
    return with_overrides(pipeline, "tune", max_trials=TuneConfig.max_trials)


def make_tuner(hypermodel: BreathHyperModel, pipeline: PipelineConfig, out: Path,
               strategy: tf.distribute.Strategy | None = None) -> kt.Tuner:
    """The ``[tune] tuner`` over ``hypermodel``, reloading a search already in ``out``."""
    space = pipeline.tune
    common = {"objective": kt.Objective(OBJECTIVE, direction="max"), "seed": pipeline.data.seed,
              "directory": str(out), "project_name": run_folder.SEARCH_PROJECT, "distribution_strategy": strategy,
              "overwrite": False}
    if space.tuner == "hyperband":
        tuner = kt.Hyperband(hypermodel, max_epochs=space.max_epochs, factor=space.hyperband_factor, **common)
        if search_role() != WORKER:  # a worker's oracle is a client of the chief's
            tuner.oracle.max_trials = space.max_trials  # Hyperband takes no cap of its own
        return tuner
    if space.tuner == "bayesian":
        return kt.BayesianOptimization(hypermodel, max_trials=space.max_trials, **common)
    return kt.RandomSearch(hypermodel, max_trials=space.max_trials, **common)


def _search_finished(tuner: kt.Tuner) -> bool:
    """Whether a reloaded search has used its whole trial cap, with no interrupted trial to rerun."""
    return tuner.remaining_trials <= 0 and all(trial.status != kt.engine.trial.TrialStatus.RUNNING
                                               for trial in tuner.oracle.trials.values())


def _split(pipeline: PipelineConfig, data_dir: Path) -> tuple[data.Examples, data.Examples]:
    """The data folder's clips, split into training and validation sides by session."""
    return data.split_by_session(data.read_kaggle_train(data_dir), pipeline.data.validation_fraction,
                                 pipeline.data.seed)


def _feature_sets(pipeline: PipelineConfig, split: tuple[data.Examples, data.Examples], data_dir: Path
                  ) -> tuple[data.FeatureSet, data.FeatureSet]:
    """Train and validation features of every searched map, extracted once for all trials; a
    ``DataError`` if a side has no decodable clip of a class."""
    features = extraction_pipeline(pipeline)
    sets = [data.extract(examples, None, features, description=f"{name} features",
                         cache=data.cache_for(features, name, examples))
            for name, examples in zip(("train", "validation"), split)]
    for feature_set in sets:
        print(feature_set.report)
    for feature_set, side in zip(sets, ("training", "validation")):
        data.require_both_classes(feature_set, side, data_dir)
    return sets[0], sets[1]


def trial_rows(tuner: kt.Tuner) -> list[dict[str, Any]]:
    """One row per trial, in start order: id, status, objective, epochs and every hyperparameter."""
    oracle = tuner.oracle
    rows = []
    for trial_id in sorted(oracle.trials, key=int):
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        rows.append({"trial": trial_id, "status": trial.status,
                     OBJECTIVE: "" if trial.score is None else round(float(trial.score), 4),
                     "best_epoch": "" if trial.score is None else int(trial.best_step) + 1,
                     "epochs": values.get(HYPERBAND_EPOCHS, tuner.hypermodel.space.max_epochs),
                     **{name: values.get(name, "") for name in HYPERPARAMETERS}})
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows as aligned text columns (floats to 4 significant digits)."""
    if not rows:
        return "(no trials)"
    cells = [[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()] for row in rows]
    header = list(rows[0])
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)) for line in [header, *cells])


def plot_objective(rows: list[dict[str, Any]], path: Path) -> None:
    """The objective of every finished trial, in trial order, with the best so far."""
    done = [(int(row["trial"]), row[OBJECTIVE]) for row in rows if row[OBJECTIVE] != ""]
    figure, ax = plt.subplots(figsize=(7, 4))
    if done:
        order, score = np.array(done, dtype=float).T
        ax.plot(order, score, "o", label="trial")
        ax.step(order, np.maximum.accumulate(score), where="post", label="best so far")
        ax.legend()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial ids
    ax.set(xlabel="trial", ylabel=f"{OBJECTIVE} (session-grouped split)", title="hyperparameter search")
    ax.grid(alpha=0.3)
    artifacts.save_figure(figure, path)


def best_trial(trials: Iterable[kt.engine.trial.Trial]) -> kt.engine.trial.Trial | None:
    """The finished trial of highest ``val_accuracy``, ties going to the lowest trial id (numerically
    for numeric ids); ``None`` if none finished.

    KerasTuner's own choice among ties follows the order its trials were reloaded in (file system
    order), so it could change from one run of a search to the next.
    """
    done = [t for t in trials if t.status == kt.engine.trial.TrialStatus.COMPLETED and t.score is not None]
    return min(done, default=None, key=lambda t: (-t.score, *_id_order(t.trial_id)))


def _id_order(trial_id: str) -> tuple[int, int, str]:
    """Sorts numeric trial ids by number, before any others (by text)."""
    return (0, int(trial_id), "") if trial_id.isdigit() else (1, 0, trial_id)


def write_summary(tuner: kt.Tuner, out: Path) -> dict[str, Any]:
    """Trial table + plot, and the best trial as a pipeline file; returns the best trial's record."""
    rows = trial_rows(tuner)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["trial"])
    writer.writeheader()
    writer.writerows(rows)
    artifacts.write_text(SearchFolder(out).trials_file, buffer.getvalue())
    plot_objective(rows, SearchFolder(out).objective_plot)
    print(format_table(rows))
    best = best_trial(tuner.oracle.trials.values())
    if best is None:
        raise TuneError(f"{out}: no trial finished (see {SearchFolder(out).trials_file} and the trial messages above)")
    hypermodel = tuner.hypermodel
    best_pipeline = hypermodel.trial_pipeline(best.hyperparameters.values)
    best_pipeline = dataclasses.replace(best_pipeline, name=hypermodel.pipeline.name + TUNED_SUFFIX)
    artifacts.write_text(SearchFolder(out).best_pipeline_file, dump_config(best_pipeline))
    record = {"trial": best.trial_id, OBJECTIVE: float(best.score), "best_epoch": int(best.best_step) + 1,
              "model": hypermodel.model_name, "epochs": best_pipeline.train.epochs,
              "hyperparameters": {name: best.hyperparameters.values[name] for name in HYPERPARAMETERS}}
    artifacts.write_json(SearchFolder(out).best_hyperparameters_file, record)
    return record


def run(pipeline: PipelineConfig, data_dir: Path, out: Path,
        strategy: tf.distribute.Strategy | None = None) -> dict[str, Any] | None:
    """Search (or resume, or serve as the chief); write the summary unless this is a worker.

    The search folder is claimed (its pipeline and clips recorded) only once the data has been
    read, so a search that fails on its data leaves nothing that blocks a corrected rerun.
    """
    role = search_role()
    strategy = strategy or tf.distribute.get_strategy()
    SearchFolder(out).refuse_other_search(pipeline, _uncapped)
    keras.utils.set_random_seed(pipeline.data.seed)
    with global_policy(choose_precision(pipeline.train.precision)) as precision:
        return _search(pipeline, data_dir, out, strategy, role, precision)


def _search(pipeline: PipelineConfig, data_dir: Path, out: Path, strategy: tf.distribute.Strategy, role: str,
            precision: str) -> dict[str, Any] | None:
    """``run``'s search under the chosen precision policy."""
    space = pipeline.tune
    print(f"tuning {space.model} with {space.tuner} (at most {space.max_trials} trials, {space.max_epochs} epochs); "
          f"precision {precision}; strategy {type(strategy).__name__}, {strategy.num_replicas_in_sync} replica(s); "
          f"role {role}" + (f" {os.environ[TUNER_ID_ENV]}" if role != SINGLE else ""))
    split = _split(pipeline, data_dir)
    tuner = make_tuner(BreathHyperModel(space.model, pipeline), pipeline, out, strategy)
    held = len(tuner.oracle.trials) if role != WORKER else 0  # a worker's oracle is the chief's
    if held > space.max_trials:  # the claim would record a cap the search has passed
        raise TuneError(f"{out}: holds {held} trials, more than max_trials {space.max_trials}; a search only "
                        f"grows (pass --max-trials {held} or more)")
    trains = role == WORKER or (role == SINGLE and not _search_finished(tuner))
    feature_sets = _feature_sets(pipeline, split, data_dir) if trains else None
    clips = [clip for side in split for clip in run_folder.clips_of(side, data_dir)]  # the split, in its order
    SearchFolder(out).claim(pipeline, _uncapped, clips)
    if role == CHIEF:
        print(f"chief: serving the oracle on {os.environ[ORACLE_IP_ENV]}:{os.environ[ORACLE_PORT_ENV]} "
              f"until the workers have finished")
        tuner.search()
    elif feature_sets is None:
        print(f"{out}: every trial has finished (raise --max-trials to extend the search); summarising it")
    else:
        _run_trials(tuner, *feature_sets, space.max_epochs, data_dir)
    if role == WORKER:
        print(f"worker {os.environ[TUNER_ID_ENV]}: no trials left; the chief writes the summary")
        return None
    return write_summary(tuner, out)


def _run_trials(tuner: kt.Tuner, train_set: data.FeatureSet, val_set: data.FeatureSet, epochs: int,
               data_dir: Path) -> None:
    """``tuner.search`` on the feature sets; KerasTuner's stop after too many failed trials in a
    row becomes a one-line ``TuneError`` (the trials' tracebacks are printed above it)."""
    try:
        tuner.search(train_set, validation_data=val_set, epochs=epochs,  # Hyperband sets its own
                     verbose=1 if sys.stdout.isatty() else 2)
    except RuntimeError as err:
        if not str(err).startswith(CONSECUTIVE_FAILURES):
            raise
        cause = str(err).strip().splitlines()[-1]  # the last trial's exception
        raise TuneError(f"{data_dir}: {tuner.oracle.max_consecutive_failed_trials} trials in a row failed, the "
                        f"last with {cause} (see the trial messages above)") from None


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        strategy = distribute.strategy_from_arguments(args)  # before anything fixes TensorFlow's devices
        pipeline, data_dir, out = resolve(args, strategy)
        best = run(pipeline, data_dir, out, strategy)
    except TfbreathError as err:
        return print_error(err)
    if best is not None:
        print(f"done: best trial {best['trial']}, {OBJECTIVE} {best[OBJECTIVE]:.3f} (the best of the trials on "
              f"the split that chose it: optimistic, and so is fit's score on that split); train it with: "
              f"python -m tfbreath.fit --pipeline {SearchFolder(out).best_pipeline_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
