"""``python -m tfbreath.fit``: train the pipeline's models, ensemble them, write a complete run.

    python -m tfbreath.fit [--pipeline pipelines/breath_phase.toml] [--data DIR] [--out DIR]
                           [--epochs N] [--models cnn8,vgg] [--precision P] [--seed N]

Flags override the pipeline file. ``--data`` is a Kaggle-layout folder (``train.csv`` +
``train/``); without it, ``$TFBREATH_DATA`` is used, and without that a small, fast version
trains on synthetic inhale/exhale-like audio generated into the run folder (said clearly).
The run folder (default ``saved_models/<pipeline name>``) receives the resolved
``pipeline.toml``, every model and the ensemble (``.keras``), ``metrics.json``, training
curves, confusion matrix and ROC plots, and the validation predictions CSV. Running the same
command again resumes an interrupted run.
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

from tfbreath import artifacts, data, evaluation, synthetic, train
from tfbreath.augment import Augmenter
from tfbreath.config import ConfigError, PipelineConfig, dump_config, load_config, with_overrides
from tfbreath.ensemble import build_ensemble, softmax_weights

DATA_ENV = "TFBREATH_DATA"
RUNS_DIR = Path("saved_models")
SYNTHETIC_SUFFIX = "_synthetic"

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
    return parser.parse_args(argv)


def resolve(args: argparse.Namespace) -> tuple[PipelineConfig, Path, Path]:
    """The pipeline with flags applied, the data folder (made if synthetic) and the run folder."""
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
    run_dir = args.out or RUNS_DIR / pipeline.name
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


def _claim_run_dir(run_dir: Path, pipeline: PipelineConfig) -> None:
    """Write the resolved config, or check that a resumed run used the same one."""
    saved = run_dir / "pipeline.toml"
    if saved.exists() and saved.read_text(encoding="utf-8") != dump_config(pipeline):
        raise ConfigError(f"{run_dir}: holds a run of a different pipeline ({saved}); "
                          f"pass another --out or delete the folder")
    artifacts.write_text(saved, dump_config(pipeline))


def run(pipeline: PipelineConfig, data_dir: Path, run_dir: Path) -> dict:
    """Train, ensemble and evaluate; write every artifact; return the metrics."""
    started = time.monotonic()
    _claim_run_dir(run_dir, pipeline)
    keras.utils.set_random_seed(pipeline.data.seed)
    precision = train.choose_precision(pipeline.train.precision)
    keras.mixed_precision.set_global_policy(precision)
    print(f"precision policy: {precision}")

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
    labels = val_set.kept_examples.labels

    models, probabilities, results = {}, {}, {}
    for name in pipeline.train.models:
        augmenter = Augmenter(pipeline.augment, seed=pipeline.data.seed)
        model_started = time.monotonic()
        models[name] = train.train_model(name, pipeline, train_set, val_set, run_dir, augmenter)
        probabilities[name] = train.predict_probabilities(models[name], val_set, pipeline.data.batch_size)
        results[name] = {**evaluation.binary_metrics(labels, probabilities[name]),
                         "parameters": int(models[name].count_params()),
                         "train_seconds": round(time.monotonic() - model_started, 1)}
        print(f"{name}: validation {results[name]}")

    with contextlib.suppress(OSError):  # BackupAndRestore empties it once every model has finished
        (run_dir / "backup").rmdir()
    alphas = softmax_weights([results[name]["accuracy"] for name in models])
    ensemble = build_ensemble(models, alphas)
    artifacts.save_model(ensemble, run_dir / "ensemble.keras")
    probabilities["ensemble"] = train.predict_probabilities(ensemble, val_set, pipeline.data.batch_size,
                                                            from_logits=False)
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
        "precision": precision,
        "split": {"train_clips": len(train_examples), "validation_clips": len(val_examples),
                  "train_sessions": len(set(train_examples.groups)),
                  "validation_sessions": len(set(val_examples.groups)),
                  "skipped": len(train_set.report.skipped) + len(val_set.report.skipped)},
        "models": results,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    artifacts.write_json(run_dir / "metrics.json", summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        pipeline, data_dir, run_dir = resolve(args)
        summary = run(pipeline, data_dir, run_dir)
    except (ConfigError, data.DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ensemble = summary["models"]["ensemble"]
    print(f"done: ensemble validation accuracy {ensemble['accuracy']:.3f}, ROC AUC {ensemble['roc_auc']:.3f}; "
          f"run written to {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
