"""``python -m tfbreath.fit``: train the pipeline's models, ensemble them, write a complete run.

    python -m tfbreath.fit [--pipeline pipelines/breath_phase.toml] [--data DIR] [--out DIR]
                           [--epochs N] [--models cnn8,vgg] [--precision P] [--seed N] [--folds K]
                           [--pseudo-labels none|soft] [--no-refit]
                           [--strategy default|mirrored|multiworker] [--cpu-devices N]

Flags override the pipeline file. A pipeline with ``task = "icbhi"`` (e.g.
``pipelines/icbhi_respirenet.toml``) runs the ICBHI crackle/wheeze recipe instead, with its own
flags (``--pipeline P --data DIR [--out DIR] [--epochs N] [--finetune-epochs N] [--seed N]``;
``tfbreath.icbhi.trainer``). ``--data`` is a Kaggle-layout folder (``train.csv`` + ``train/``);
without it, ``$TFBREATH_DATA`` is used, and without that a small, fast version trains on
synthetic inhale/exhale-like audio generated into the run folder (said clearly).

The run folder (default ``saved_models/<pipeline name>``) receives the resolved
``pipeline.toml``, every model and the ensemble (``.keras``), ``metrics.json``, training
curves, confusion matrix and ROC plots. With ``[train] folds = 1`` (the default) one
session-grouped validation split stops, weights and scores the models
(``validation_predictions.csv``). With ``--folds K`` (K >= 2) session-grouped K-fold
cross-validation trains every model once per fold in ``fold_<k>/`` and writes each clip's
out-of-fold P(exhale) to ``oof_predictions.csv`` and the estimate (mean, per fold, 95 %
session-bootstrap interval) to ``metrics.json["cross_validation"]``; then each model is refit
on every clip (``tfbreath.crossval``), unless ``--no-refit`` asks for the estimate alone.
``--pseudo-labels soft`` (with ``--folds K``) trains the CNNs a second time, also on the data
folder's unlabelled clips (``test.csv``), each targeted at its fold's ensemble's P(exhale)
(``tfbreath.pseudo_labels``). Running the same command again resumes an interrupted run (fold
by fold, model by model, epoch by epoch); ``--seed`` repeats a run exactly on one machine.

``--strategy`` trains under a ``tf.distribute`` strategy (see ``tfbreath.distribute``):
``mirrored`` over this machine's GPUs (or ``--cpu-devices`` logical CPUs), ``multiworker``
over the machines of ``$TF_CONFIG``, each running this same command; ``[data] batch_size`` is
per replica. Workers other than the chief write to ``<run folder>/worker_<i>``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfbreath import artifacts, crossval, data, distribute, evaluation, pseudo_labels, run_folder, train
from tfbreath.config import (CLOSED_FORM_MODELS, ENSEMBLE, NO_PSEUDO_LABELS, PSEUDO_LABELS, ConfigError, PipelineConfig,
                             dump_config, load_config)
from tfbreath.console import add_verbose_argument
from tfbreath.ensemble import build_ensemble, softmax_weights, weighted_average
from tfbreath.errors import TfbreathError, print_error
from tfbreath.icbhi import trainer as icbhi_trainer
from tfbreath.icbhi.config import is_icbhi_pipeline
from tfbreath.precision import choose_precision, global_policy, policy_of
from tfbreath.run_folder import RunFolder

def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tfbreath.fit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", type=Path, help="pipeline TOML (default: the embedded breath-phase recipe)")
    parser.add_argument("--data", type=Path,
                        help=f"Kaggle-layout data folder (default: ${run_folder.DATA_ENV}, else synthetic)")
    parser.add_argument("--out", type=Path, help="run folder (default: saved_models/<pipeline name>)")
    parser.add_argument("--epochs", type=int, help="override [train] epochs")
    parser.add_argument("--models", help="comma-separated, e.g. cnn8,vgg (override [train] models)")
    parser.add_argument("--precision", help="auto, float32, mixed_bfloat16 or mixed_float16")
    parser.add_argument("--seed", type=int, help="override [data] seed (split, folds, shuffling, augmentation, "
                                                  "initialisation): the same seed repeats a run on one machine")
    parser.add_argument("--folds", type=int, help="override [train] folds: K >= 2 estimates accuracy by "
                                                  "session-grouped K-fold cross-validation, then refits on all clips")
    parser.add_argument("--pseudo-labels", choices=PSEUDO_LABELS,
                        help="override [train] pseudo_labels: 'soft' also trains the CNNs on the data folder's "
                             "unlabelled clips (test.csv), labelled by the folds' ensembles (needs --folds K)")
    parser.add_argument("--no-refit", dest="refit", action="store_false",
                        help="with --folds K: stop after the out-of-fold estimate (no models on all clips)")
    distribute.add_strategy_arguments(parser)
    add_verbose_argument(parser)
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace,
            strategy: tf.distribute.Strategy | None = None) -> tuple[PipelineConfig, Path, Path]:
    """The pipeline with flags applied, the data folder (made if synthetic) and this process's run
    folder (``run_folder.resolve``)."""
    models = tuple(m.strip() for m in args.models.split(",")) if args.models else None
    return run_folder.resolve(args.pipeline, args.data, args.out,
                              {"train": {"epochs": args.epochs, "models": models, "precision": args.precision,
                                         "folds": args.folds, "pseudo_labels": args.pseudo_labels},
                               "data": {"seed": args.seed}}, strategy)


def run(pipeline: PipelineConfig, data_dir: Path, run_dir: Path,
        strategy: tf.distribute.Strategy | None = None, refit: bool = True) -> dict:
    """Train, ensemble and evaluate under ``strategy`` (default: the current one); write every
    artifact; return the metrics.

    ``refit=False`` ends a K-fold run after its estimate: ``metrics.json`` then has no
    ``"models"``, and the run folder no models on all clips (a later run with ``refit=True``
    adds them).

    The models train under ``[train] precision`` (``tfbreath.precision``); Keras' global policy
    is restored afterwards. The run folder is claimed (its ``pipeline.toml`` written) only once
    the data has been read and both classes decoded on both sides of the split, so a run that
    fails on its data leaves nothing that blocks a corrected rerun.
    """
    strategy = strategy or tf.distribute.get_strategy()
    RunFolder(run_dir).refuse_other_run(pipeline, load_config)  # new keys keep their defaults
    keras.utils.set_random_seed(pipeline.data.seed)
    with global_policy(choose_precision(pipeline.train.precision)) as policy:
        return _train_and_report(pipeline, data_dir, run_dir, strategy, policy, refit)


def _train_and_report(pipeline: PipelineConfig, data_dir: Path, run_dir: Path, strategy: tf.distribute.Strategy,
                      policy: str, refit: bool) -> dict:
    started = time.monotonic()
    print(f"precision policy: {policy}; strategy: {distribute.strategy_name(strategy)}, "
          f"{strategy.num_replicas_in_sync} replica(s)")
    examples = data.read_kaggle_train(data_dir)
    if pipeline.train.folds > 1:
        summary = _cross_validate(pipeline, examples, data_dir, run_dir, strategy, refit)
    else:
        summary = _validate_on_split(pipeline, examples, data_dir, run_dir, strategy)
    summary = {"pipeline": pipeline.name, "data": str(data_dir), "dtype_policy": policy,
               "strategy": {"name": distribute.strategy_name(strategy), "replicas": strategy.num_replicas_in_sync,
                            "global_batch_size": distribute.global_batch_size(pipeline.data.batch_size, strategy)},
               **summary, "wall_seconds": round(time.monotonic() - started, 1)}
    RunFolder(run_dir).write_metrics(summary)
    return summary


def _train_members(pipeline: PipelineConfig, train_set: data.FeatureSet, val_set: data.FeatureSet | None,
                   folder: Path, strategy: tf.distribute.Strategy,
                   settings: dict[str, float] | None = None,
                   names: list[str] | None = None,
                   pooled_set: data.FeatureSet | None = None) -> tuple[dict[str, keras.Model], dict[str, dict]]:
    """Every ``[train] models`` member (or those ``names``) trained (or reloaded) into ``folder``,
    with what to record of each; ``settings`` are a refit's (``train.refit_setting``). The closed-form
    members train on ``pooled_set`` if given: they fit hard labels only, not pseudo-labels."""
    models, records = {}, {}
    for name in pipeline.train.models if names is None else names:
        started = time.monotonic()
        own_set = pooled_set if name in CLOSED_FORM_MODELS and pooled_set is not None else train_set
        models[name] = train.train_member(name, pipeline, own_set, val_set, folder, strategy,
                                          None if settings is None else settings[name])
        records[name] = {"parameters": int(models[name].count_params()),
                         "dtype_policy": policy_of(models[name]),  # a resumed run may mix machines
                         "train_seconds": round(time.monotonic() - started, 1)}
    RunFolder(folder).drop_empty_backups()
    return models, records


def _plot_training_curves(models: dict[str, keras.Model], run_dir: Path) -> None:
    """Loss and accuracy per epoch of the members trained by epochs (the closed-form ones have none)."""
    epochs_of = {n: RunFolder(run_dir).history_file(n) for n in models if n not in CLOSED_FORM_MODELS}
    if epochs_of:
        evaluation.plot_training_curves(epochs_of, run_dir / "training_curves.png")


def _save_ensemble(models: dict[str, keras.Model], alphas, pipeline: PipelineConfig, run_dir: Path,
                   strategy: tf.distribute.Strategy) -> keras.Model:
    with strategy.scope():  # the members' variables belong to the strategy
        ensemble = build_ensemble(models, alphas)
    artifacts.save_model(ensemble, RunFolder(run_dir).model_file(ENSEMBLE),
                         pipeline_toml=dump_config(pipeline))
    return ensemble


def _validate_on_split(pipeline: PipelineConfig, examples: data.Examples, data_dir: Path, run_dir: Path,
                       strategy: tf.distribute.Strategy) -> dict:
    """One session-grouped split: train with early stopping, weight and score on the validation side."""
    batch_size = distribute.global_batch_size(pipeline.data.batch_size, strategy)
    train_examples, val_examples = data.split_by_session(examples, pipeline.data.validation_fraction,
                                                         pipeline.data.seed)
    train_set = data.extract(train_examples, None, pipeline, description="train features",
                             cache=data.cache_for(pipeline, "train", train_examples))
    val_set = data.extract(val_examples, None, pipeline, description="validation features",
                           cache=data.cache_for(pipeline, "validation", val_examples))
    print(train_set.report)
    print(val_set.report)
    data.require_both_classes(train_set, "training", data_dir)
    data.require_both_classes(val_set, "validation", data_dir)
    RunFolder(run_dir).claim(dump_config(pipeline), run_folder.clips_of(train_set.kept_examples, data_dir)
                             + run_folder.clips_of(val_set.kept_examples, data_dir))
    labels = val_set.kept_examples.labels

    models, results = _train_members(pipeline, train_set, val_set, run_dir, strategy)
    probabilities = {}
    for name, model in models.items():
        probabilities[name] = train.predict_probabilities(model, val_set, batch_size)
        results[name] = {**evaluation.binary_metrics(labels, probabilities[name]), **results[name]}
        print(f"{name}: validation {results[name]}")

    alphas = softmax_weights([results[name]["accuracy"] for name in models])
    ensemble = _save_ensemble(models, alphas, pipeline, run_dir, strategy)
    probabilities[ENSEMBLE] = train.predict_probabilities(ensemble, val_set, batch_size, from_logits=False)
    results[ENSEMBLE] = {**evaluation.binary_metrics(labels, probabilities[ENSEMBLE]),
                           "weights": {name: float(a) for name, a in zip(models, alphas)}}

    _plot_training_curves(models, run_dir)
    evaluation.plot_confusion_matrix(labels, probabilities[ENSEMBLE], run_dir / "confusion_matrix.png",
                                     "ensemble, validation split")
    evaluation.plot_roc(labels, probabilities, run_dir / "roc.png", "validation split")
    evaluation.write_predictions(RunFolder(run_dir).validation_predictions, val_set.kept_examples.files, labels,
                                 probabilities)
    return {"split": {"train_clips": len(train_examples), "validation_clips": len(val_examples),
                      "train_sessions": len(set(train_examples.groups)),
                      "validation_sessions": len(set(val_examples.groups)),
                      "skipped": len(train_set.report.skipped) + len(val_set.report.skipped)},
            "models": results}


def _cross_validate(pipeline: PipelineConfig, examples: data.Examples, data_dir: Path, run_dir: Path,
                    strategy: tf.distribute.Strategy, refit_all: bool) -> dict:
    """K-fold estimate, then the refit: see ``[train] folds`` and ``tfbreath.crossval``.

    Fold k's models train on the other folds' clips, stopped early on a session-grouped
    validation split drawn from those clips, and predict fold k: its out-of-fold predictions.
    Each model is then refit on every clip for the median of its folds' best epoch counts; the
    ensemble weights come from out-of-fold accuracies. Each fold trains in ``fold_<k>/``, so an
    interrupted run resumes fold by fold (and, inside a fold, epoch by epoch). With
    ``[train] pseudo_labels`` the gradient members train again as students
    (``tfbreath.pseudo_labels``), and the estimate and refit are theirs.
    """
    n_folds, seed = pipeline.train.folds, pipeline.data.seed
    batch_size = distribute.global_batch_size(pipeline.data.batch_size, strategy)
    pseudo = pipeline.train.pseudo_labels != NO_PSEUDO_LABELS
    to_read = examples
    if pseudo:
        unlabelled = pseudo_labels.read_unlabelled(data_dir)
        to_read = data.Examples(examples.files + unlabelled.files, np.concatenate([examples.labels, unlabelled.labels]),
                                examples.groups + unlabelled.groups)
    extracted = data.extract(to_read, None, pipeline, description="features",
                             cache=data.cache_for(pipeline, "all_and_unlabelled" if pseudo else "all", to_read))
    print(extracted.report)
    labelled_at = np.flatnonzero(extracted.kept_examples.labels != data.UNLABELLED)  # [N] of the kept files
    unlabelled_at = np.flatnonzero(extracted.kept_examples.labels == data.UNLABELLED)  # [U]
    everything = extracted.subset(labelled_at) if pseudo else extracted
    unlabelled_set = extracted.subset(unlabelled_at) if pseudo else None
    data.require_both_classes(everything, "labelled", data_dir)
    kept = everything.kept_examples
    try:
        folds = crossval.session_folds(kept.labels, kept.groups, n_folds, seed)  # [N]
    except crossval.CrossValidationError as err:
        raise data.DataError(f"{data_dir}: {err}") from None
    position = {file: i for i, file in enumerate(kept.files)}
    early_stopping_splits = [  # (training, validation) positions in kept, per fold: checked before claiming
        tuple([position[f] for f in side.files] for side in data.split_by_session(
            kept.subset(np.flatnonzero(folds != fold)), pipeline.data.validation_fraction, seed))
        for fold in range(n_folds)]
    RunFolder(run_dir).claim(dump_config(pipeline), run_folder.clips_of(extracted.kept_examples, data_dir))

    out_of_fold = {name: np.zeros(len(kept), np.float64) for name in pipeline.train.models}  # [N] each
    on_unlabelled = {name: [] for name in pipeline.train.models}  # per fold: [U] each, the teachers' P
    chosen = {name: [] for name in pipeline.train.models}  # per fold: best epoch count, or a closed-form member's C
    for fold, (inner_train, inner_val) in enumerate(early_stopping_splits):
        fold_dir = RunFolder(run_dir).fold(fold).path
        held_out = np.flatnonzero(folds == fold)
        print(f"fold {fold + 1} of {n_folds}: train {len(inner_train)} clips, early-stopping validation "
              f"{len(inner_val)}, held out {len(held_out)} ({len(set(kept.subset(held_out).groups))} sessions)")
        models, _ = _train_members(pipeline, everything.subset(inner_train), everything.subset(inner_val),
                                   fold_dir, strategy)
        for name, model in models.items():
            out_of_fold[name][held_out] = train.predict_probabilities(model, everything.subset(held_out), batch_size)
            chosen[name].append(train.chosen_setting(name, fold_dir))
            if pseudo:
                on_unlabelled[name].append(train.predict_probabilities(model, unlabelled_set, batch_size))

    labels = kept.labels
    ensemble_oof, fold_weights = crossval.cross_fitted_ensemble(out_of_fold, labels, folds)
    teachers = None
    if pseudo:
        teachers = [weighted_average({n: p[fold] for n, p in on_unlabelled.items()}, weights)
                    for fold, weights in enumerate(fold_weights)]  # K x [U]: fold k's ensemble is its teacher
        teacher_score = crossval.cross_validation_summary(labels, {ENSEMBLE: ensemble_oof}, folds, kept.groups,
                                                          seed=seed)[ENSEMBLE]
        students, used = _train_students(pipeline, extracted, labelled_at, unlabelled_at, folds,
                                         early_stopping_splits, teachers, run_dir, strategy)
        for name, (student_oof, student_chosen) in students.items():
            out_of_fold[name], chosen[name] = student_oof, student_chosen
        ensemble_oof, fold_weights = crossval.cross_fitted_ensemble(out_of_fold, labels, folds)
    probabilities = {**out_of_fold, ENSEMBLE: ensemble_oof}
    estimate = crossval.cross_validation_summary(labels, probabilities, folds, kept.groups, seed=seed)
    names = list(pipeline.train.models)
    estimate["protocol"] = {
        "folds": n_folds, "seed": seed, "clips": len(kept), "sessions": len(set(kept.groups)),
        "grouping": "recording session", "interval": f"{crossval.CONFIDENCE:.0%} percentile, "
        f"{crossval.BOOTSTRAP_RESAMPLES} bootstrap resamples of sessions",
        "early_stopping": f"session-grouped {pipeline.data.validation_fraction:.0%} of each fold's training clips",
        "best_epochs": {name: values for name, values in chosen.items() if name not in CLOSED_FORM_MODELS},
        **{f"{name}_c": values for name, values in chosen.items() if name in CLOSED_FORM_MODELS},
        "clips_per_fold": [{"train": len(inner_train), "early_stopping": len(inner_val),
                            "held_out": int(np.sum(folds == fold))}
                           for fold, (inner_train, inner_val) in enumerate(early_stopping_splits)],
        "ensemble_weights_per_fold": [{n: round(float(w), 4) for n, w in zip(names, ws)} for ws in fold_weights],
        **({"pseudo_labels": {"mode": pipeline.train.pseudo_labels, "unlabelled_clips": len(unlabelled_at),
                              "used_per_fold": used, "teacher_ensemble": teacher_score}} if pseudo else {})}
    for name in probabilities:
        accuracy = estimate[name]["accuracy"]
        print(f"{name}: out-of-fold accuracy {accuracy['pooled']:.3f} (95 % interval {accuracy['ci95'][0]:.3f}-"
              f"{accuracy['ci95'][1]:.3f}; folds {accuracy['folds']})")
    evaluation.write_predictions(RunFolder(run_dir).oof_predictions, kept.files, labels, probabilities,
                                 {"session": kept.groups, "fold": folds})
    evaluation.plot_confusion_matrix(labels, ensemble_oof, run_dir / "confusion_matrix.png",
                                     f"ensemble, out of fold ({n_folds} folds)")
    evaluation.plot_roc(labels, probabilities, run_dir / "roc.png", f"out of fold ({n_folds} folds)")
    split = {"clips": len(examples), "sessions": len(set(examples.groups)), "skipped": len(extracted.report.skipped),
             **({"unlabelled_clips": len(unlabelled)} if pseudo else {})}
    if not refit_all:
        return {"split": split, "cross_validation": estimate}

    refit = {name: train.refit_setting(name, values) for name, values in chosen.items()}
    print(f"refit on all {len(kept)} clips with the epochs (and C) the folds chose: {refit}")
    # with pseudo-labels, the students' recipe: every unlabelled clip too, targeted at the mean of the folds' teachers
    refit_set = everything if not pseudo else pseudo_labels.training_set(
        extracted, labelled_at, unlabelled_at, np.mean(teachers, axis=0), np.ones(len(unlabelled_at), bool))
    models, results = _train_members(pipeline, refit_set, None, run_dir, strategy, refit, pooled_set=everything)
    for name in models:
        results[name]["c" if name in CLOSED_FORM_MODELS else "epochs"] = refit[name]
    alphas = softmax_weights([estimate[name]["accuracy"]["pooled"] for name in models])
    _save_ensemble(models, alphas, pipeline, run_dir, strategy)
    results[ENSEMBLE] = {"weights": {name: float(a) for name, a in zip(models, alphas)}}
    _plot_training_curves(models, run_dir)
    return {"split": split, "cross_validation": estimate, "models": results}


def _train_students(pipeline: PipelineConfig, extracted: data.FeatureSet, labelled_at: np.ndarray,
                    unlabelled_at: np.ndarray, folds: np.ndarray, early_stopping_splits: list,
                    teachers: list[np.ndarray], run_dir: Path, strategy: tf.distribute.Strategy):
    """Fold k's gradient members trained again on fold k's training clips plus the unlabelled
    clips of sessions fold k neither holds out nor stops on, targeted at fold k's teacher
    (``tfbreath.pseudo_labels``): ``({name: (out-of-fold P [N], best epochs per fold)}, clips used per fold)``."""
    batch_size = distribute.global_batch_size(pipeline.data.batch_size, strategy)
    kept = extracted.kept_examples
    labelled_groups = np.array(kept.groups)[labelled_at]  # [N]
    unlabelled_groups = [kept.groups[i] for i in unlabelled_at]  # [U]
    names = [name for name in pipeline.train.models if name not in CLOSED_FORM_MODELS]
    students = {name: (np.zeros(len(labelled_at), np.float64), []) for name in names}
    used_per_fold = []
    for fold, (inner_train, inner_val) in enumerate(early_stopping_splits):
        folder = RunFolder(run_dir).fold(fold).path / pseudo_labels.STUDENT_FOLDER
        held_out = np.flatnonzero(folds == fold)
        unheard = pseudo_labels.unheard(unlabelled_groups, set(labelled_groups[held_out])
                                        | set(labelled_groups[inner_val]))
        used_per_fold.append(int(unheard.sum()))
        print(f"fold {fold + 1} of {len(early_stopping_splits)}, students: {len(inner_train)} labelled clips + "
              f"{unheard.sum()} pseudo-labelled ({pipeline.train.pseudo_labels}) of sessions the fold does not "
              f"score or stop on")
        train_set = pseudo_labels.training_set(extracted, labelled_at, unlabelled_at, teachers[fold], unheard,
                                               np.asarray(inner_train))
        val_set, scored = (extracted.subset(labelled_at[np.asarray(p)]) for p in (inner_val, held_out))
        models, _ = _train_members(pipeline, train_set, val_set, folder, strategy, names=names)
        for name, model in models.items():
            students[name][0][held_out] = train.predict_probabilities(model, scored, batch_size)
            students[name][1].append(train.chosen_setting(name, folder))
    return students, used_per_fold


def _is_icbhi_run(argv: list[str]) -> bool:
    """Whether ``--pipeline`` names an ICBHI pipeline (whose flags differ from this parser's)."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--pipeline", type=Path)
    pipeline = first.parse_known_args(argv)[0].pipeline
    return pipeline is not None and is_icbhi_pipeline(pipeline)


def _parse_icbhi_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tfbreath.fit",
                                     description=icbhi_trainer.__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", type=Path, required=True, help="ICBHI pipeline TOML (task = \"icbhi\")")
    parser.add_argument("--data", type=Path, required=True, help="ICBHI database folder (wav + txt)")
    parser.add_argument("--out", type=Path, help="run folder (default: saved_models/<pipeline name>)")
    parser.add_argument("--epochs", type=int, help="override [train] epochs (stage 1)")
    parser.add_argument("--finetune-epochs", type=int, help="override [train] finetune_epochs (stage 2)")
    parser.add_argument("--seed", type=int, help="override [split] seed (split, shuffling, initialisation)")
    add_verbose_argument(parser)
    return parser.parse_args(argv)


def _main_icbhi(argv: list[str]) -> int:
    args = _parse_icbhi_args(argv)
    try:
        config, data_dir, run_dir = icbhi_trainer.resolve(args.pipeline, args.data, args.out, args.epochs,
                                                          args.finetune_epochs, args.seed)
        summary = icbhi_trainer.run(config, data_dir, run_dir)
    except TfbreathError as err:
        return print_error(err)
    print(f"done: {icbhi_trainer.describe(summary)}; run written to {run_dir}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if _is_icbhi_run(argv):  # the crackle/wheeze task has its own recipe and flags
        return _main_icbhi(argv)
    args = _parse_args(argv)
    try:
        strategy = distribute.strategy_from_arguments(args)  # before anything fixes TensorFlow's devices
        pipeline, data_dir, run_dir = resolve(args, strategy)
        if not args.refit and pipeline.train.folds < 2:
            raise ConfigError(f"--no-refit needs K-fold cross-validation (--folds K >= 2), got folds = "
                              f"{pipeline.train.folds}")
        summary = run(pipeline, data_dir, run_dir, strategy, args.refit)
    except TfbreathError as err:
        return print_error(err)
    if "cross_validation" in summary:
        ensemble, kind = summary["cross_validation"][ENSEMBLE], "out-of-fold"
        accuracy, auc = ensemble["accuracy"]["pooled"], ensemble["roc_auc"]["pooled"]
    else:
        ensemble, kind = summary["models"][ENSEMBLE], "validation"
        accuracy, auc = ensemble["accuracy"], ensemble["roc_auc"]
    print(f"done: ensemble {kind} accuracy {accuracy:.3f}, ROC AUC {auc:.3f}; run written to {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
