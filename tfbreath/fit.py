"""``python -m tfbreath.fit``: train the pipeline's models, ensemble them, write a complete run.

    python -m tfbreath.fit [--pipeline pipelines/breath_phase.toml] [--data DIR] [--out DIR]
                           [--epochs N] [--models cnn8,vgg] [--precision P] [--seed N]
                           [--strategy default|mirrored|multiworker] [--cpu-devices N]

Flags override the pipeline file. A pipeline with ``task = "icbhi"`` (e.g.
``pipelines/icbhi_respirenet.toml``) runs the ICBHI crackle/wheeze recipe instead, with its own
flags (``tfbreath.icbhi.fit``). ``--data`` is a Kaggle-layout folder (``train.csv`` + ``train/``);
without it, ``$TFBREATH_DATA`` is used, and without that a small, fast version trains on
synthetic inhale/exhale-like audio generated into the run folder (said clearly). The run folder (default ``saved_models/<pipeline name>``) receives the resolved
``pipeline.toml``, every model and the ensemble (``.keras``), ``metrics.json``, training
curves, confusion matrix and ROC plots, and the validation predictions CSV. Running the same
command again resumes an interrupted run.

``--strategy`` trains under a ``tf.distribute`` strategy (see ``tfbreath.distribute``):
``mirrored`` over this machine's GPUs (or ``--cpu-devices`` logical CPUs), ``multiworker``
over the machines of ``$TF_CONFIG``, each running this same command; ``[data] batch_size`` is
per replica. Workers other than the chief write to ``<run folder>/worker_<i>``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path

import keras
import tensorflow as tf

from tfbreath import artifacts, data, distribute, evaluation, synthetic, train
from tfbreath.augment import Augmenter
from tfbreath.checkpoint import BACKUP_DIR
from tfbreath.config import ConfigError, PipelineConfig, dump_config, load_config, with_overrides
from tfbreath.console import add_verbose_argument
from tfbreath.ensemble import build_ensemble, softmax_weights
from tfbreath.icbhi import fit as icbhi_fit
from tfbreath.icbhi.config import is_icbhi_pipeline
from tfbreath.precision import choose_precision, global_policy, policy_of

DATA_ENV = "TFBREATH_DATA"
RUNS_DIR = Path("saved_models")
SYNTHETIC_SUFFIX = "_synthetic"
PIPELINE_FILE = "pipeline.toml"

SYNTHETIC_RECIPE = {
    "train": {"epochs": 8, "model_width": 0.25, "early_stopping_patience": 8},
    "augment": {"warmup_epochs": 2},
    "data": {"batch_size": 32},
}
"""Overrides for the no-data demo: small models, few epochs, so it finishes in minutes on a CPU."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tfbreath.fit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", type=Path, help="pipeline TOML (default: the embedded breath-phase recipe)")
    parser.add_argument("--data", type=Path, help=f"Kaggle-layout data folder (default: ${DATA_ENV}, else synthetic)")
    parser.add_argument("--out", type=Path, help="run folder (default: saved_models/<pipeline name>)")
    parser.add_argument("--epochs", type=int, help="override [train] epochs")
    parser.add_argument("--models", help="comma-separated, e.g. cnn8,vgg (override [train] models)")
    parser.add_argument("--precision", help="auto, float32, mixed_bfloat16 or mixed_float16")
    parser.add_argument("--seed", type=int, help="override [data] seed (split, shuffling, initialisation)")
    distribute.add_strategy_arguments(parser)
    add_verbose_argument(parser)
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace,
            strategy: tf.distribute.Strategy | None = None) -> tuple[PipelineConfig, Path, Path]:
    """The pipeline with flags applied, the data folder (made if synthetic) and this process's run folder."""
    pipeline = load_config(args.pipeline) if args.pipeline else PipelineConfig()
    data_dir = args.data or (Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else None)
    if data_dir is None:
        for section, values in SYNTHETIC_RECIPE.items():
            pipeline = with_overrides(pipeline, section, **values)
        pipeline = with_overrides(pipeline, "data", cache="memory")
        pipeline = dataclasses.replace(pipeline, name=pipeline.name + SYNTHETIC_SUFFIX)
    models = tuple(m.strip() for m in args.models.split(",")) if args.models else None
    pipeline = with_overrides(pipeline, "train", epochs=args.epochs, models=models, precision=args.precision)
    pipeline = with_overrides(pipeline, "data", seed=args.seed)
    run_dir = distribute.worker_run_dir(args.out or RUNS_DIR / pipeline.name,
                                        strategy or tf.distribute.get_strategy())
    if data_dir is None:
        print(f"No data folder given (--data) or set (${DATA_ENV}): training a small, fast demo on "
              f"synthetic inhale/exhale-like audio written to {run_dir / 'synthetic_data'}. "
              f"Pass --data DIR (Kaggle layout) to train on real clips.")
        data_dir = synthetic.write_synthetic_breath(run_dir / "synthetic_data", seed=pipeline.data.seed,
                                                    sample_rate=pipeline.audio.sample_rate,
                                                    duration_s=pipeline.audio.duration_s)
    elif not data_dir.is_dir():
        raise data.DataError(f"{data_dir}: data folder not found")
    return pipeline, data_dir, run_dir


def _check_run_dir(run_dir: Path, pipeline: PipelineConfig) -> None:
    """Refuse a run folder that holds a run of another pipeline (a resumed run must use the same)."""
    saved = run_dir / PIPELINE_FILE
    if saved.exists() and load_config(saved) != pipeline:  # compared as configs: new keys keep their defaults
        raise ConfigError(f"{run_dir}: holds a run of a different pipeline ({saved}); "
                          f"pass another --out or delete the folder")


def _require_both_classes(feature_set: data.FeatureSet, split: str, data_dir: Path) -> None:
    """Refuse to train when a split has no decodable clip of some class (the skip report says why)."""
    kept = feature_set.kept_examples
    present = {data.LABEL_NAMES[int(label)] for label in kept.labels}
    missing = [name for name in data.LABEL_NAMES if name not in present]
    if missing:
        raise data.DataError(f"{data_dir}: {len(kept)} of the {len(feature_set.examples)} {split} clips decode, "
                             f"none of them {' or '.join(missing)}; nothing trained (skipped files listed above)")


def run(pipeline: PipelineConfig, data_dir: Path, run_dir: Path,
        strategy: tf.distribute.Strategy | None = None) -> dict:
    """Train, ensemble and evaluate under ``strategy`` (default: the current one); write every
    artifact; return the metrics.

    The models train under ``[train] precision`` (``tfbreath.precision``); Keras' global policy
    is restored afterwards. The run folder is claimed (its ``pipeline.toml`` written) only once
    the data has been read and both classes decoded on both sides of the split, so a run that
    fails on its data leaves nothing that blocks a corrected rerun.
    """
    strategy = strategy or tf.distribute.get_strategy()
    _check_run_dir(run_dir, pipeline)
    keras.utils.set_random_seed(pipeline.data.seed)
    with global_policy(choose_precision(pipeline.train.precision)) as policy:
        return _train_and_report(pipeline, data_dir, run_dir, strategy, policy)


def _train_and_report(pipeline: PipelineConfig, data_dir: Path, run_dir: Path, strategy: tf.distribute.Strategy,
                      policy: str) -> dict:
    started = time.monotonic()
    print(f"precision policy: {policy}; strategy: {distribute.strategy_name(strategy)}, "
          f"{strategy.num_replicas_in_sync} replica(s)")
    batch_size = distribute.global_batch_size(pipeline.data.batch_size, strategy)

    examples = data.read_kaggle_train(data_dir)
    train_examples, val_examples = data.split_by_session(examples, pipeline.data.validation_fraction,
                                                         pipeline.data.seed)
    cache = pipeline.data.cache
    train_set = data.extract(train_examples, None, pipeline, description="train features",
                             cache=cache if cache in ("memory", "none") else f"{cache}_train")
    val_set = data.extract(val_examples, None, pipeline, description="validation features",
                           cache=cache if cache in ("memory", "none") else f"{cache}_validation")
    print(train_set.report)
    print(val_set.report)
    _require_both_classes(train_set, "training", data_dir)
    _require_both_classes(val_set, "validation", data_dir)
    artifacts.write_text(run_dir / PIPELINE_FILE, dump_config(pipeline))  # claims the folder
    labels = val_set.kept_examples.labels

    models, probabilities, results = {}, {}, {}
    for name in pipeline.train.models:
        augmenter = Augmenter(pipeline.augment, seed=pipeline.data.seed)
        model_started = time.monotonic()
        models[name] = train.train_model(name, pipeline, train_set, val_set, run_dir, augmenter, strategy=strategy)
        probabilities[name] = train.predict_probabilities(models[name], val_set, batch_size)
        results[name] = {**evaluation.binary_metrics(labels, probabilities[name]),
                         "parameters": int(models[name].count_params()),
                         "dtype_policy": policy_of(models[name]),  # a resumed run may mix machines
                         "train_seconds": round(time.monotonic() - model_started, 1)}
        print(f"{name}: validation {results[name]}")

    with contextlib.suppress(OSError):  # each model empties its own folder once saved
        (run_dir / BACKUP_DIR).rmdir()

    alphas = softmax_weights([results[name]["accuracy"] for name in models])
    with strategy.scope():  # the members' variables belong to the strategy
        ensemble = build_ensemble(models, alphas)
    artifacts.save_model(ensemble, run_dir / "ensemble.keras", pipeline_toml=dump_config(pipeline))
    probabilities["ensemble"] = train.predict_probabilities(ensemble, val_set, batch_size, from_logits=False)
    results["ensemble"] = {**evaluation.binary_metrics(labels, probabilities["ensemble"]),
                           "weights": {name: float(a) for name, a in zip(models, alphas)}}

    evaluation.plot_training_curves({n: run_dir / f"history_{n}.csv" for n in models}, run_dir / "training_curves.png")
    evaluation.plot_confusion_matrix(labels, probabilities["ensemble"], run_dir / "confusion_matrix.png",
                                     "ensemble, validation split")
    evaluation.plot_roc(labels, probabilities, run_dir / "roc.png")
    evaluation.write_predictions(run_dir / "validation_predictions.csv", val_set.kept_examples.files, labels,
                                 probabilities)
    summary = {
        "pipeline": pipeline.name,
        "data": str(data_dir),
        "dtype_policy": policy,
        "strategy": {"name": distribute.strategy_name(strategy), "replicas": strategy.num_replicas_in_sync,
                     "global_batch_size": batch_size},
        "split": {"train_clips": len(train_examples), "validation_clips": len(val_examples),
                  "train_sessions": len(set(train_examples.groups)),
                  "validation_sessions": len(set(val_examples.groups)),
                  "skipped": len(train_set.report.skipped) + len(val_set.report.skipped)},
        "models": results,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    artifacts.write_json(run_dir / "metrics.json", summary)
    return summary


def _is_icbhi_run(argv: list[str]) -> bool:
    """Whether ``--pipeline`` names an ICBHI pipeline (whose flags differ from this parser's)."""
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--pipeline", type=Path)
    pipeline = first.parse_known_args(argv)[0].pipeline
    return pipeline is not None and is_icbhi_pipeline(pipeline)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if _is_icbhi_run(argv):  # the crackle/wheeze task has its own recipe and flags
        return icbhi_fit.main(argv)
    args = _parse_args(argv)
    try:
        strategy = distribute.strategy_from_arguments(args)  # before anything fixes TensorFlow's devices
        pipeline, data_dir, run_dir = resolve(args, strategy)
        summary = run(pipeline, data_dir, run_dir, strategy)
    except (ConfigError, data.DataError, distribute.StrategyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ensemble = summary["models"]["ensemble"]
    print(f"done: ensemble validation accuracy {ensemble['accuracy']:.3f}, ROC AUC {ensemble['roc_auc']:.3f}; "
          f"run written to {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
