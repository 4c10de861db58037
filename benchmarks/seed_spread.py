"""How much the out-of-fold estimate moves with the seed: K-fold runs of one recipe under several seeds.

    python benchmarks/seed_spread.py --data ../shared/data/breath
        [--pipeline pipelines/breath_phase_cpu.toml] [--folds 5] [--seeds 1 2 3]
        [--runs-dir saved_models/seed_spread] [--json OUT.json]

Each seed is a complete ``python -m tfbreath.fit --folds K --seed S`` run in
``<runs-dir>/seed_<S>/``: the seed changes the folds, the early-stopping splits, the
initialisation, the shuffling and the augmentation. Runs resume where they stopped, so the
script can be killed and restarted; a finished run (e.g. the shipped model's, linked in as
``seed_<S>``) is read, not retrained. It prints, per model and for the ensemble, each seed's
pooled out-of-fold accuracy and ROC AUC, and their mean, standard deviation and range: the
spread a reader should allow for when two recipes' estimates are compared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tfbreath import fit
from tfbreath.config import PipelineConfig, load_config, with_overrides
from tfbreath.precision import choose_precision
from tfbreath.run_folder import RunFolder

SCORES = ("accuracy", "roc_auc")


def run_seed(pipeline: PipelineConfig, data_dir: Path, run_dir: Path) -> dict:
    """The ``cross_validation`` entry of one seed's K-fold run: read from a finished run of the
    same pipeline, else trained (or resumed) without the refit, which the spread does not need."""
    folder = RunFolder(run_dir)
    metrics = folder.read_metrics()
    if metrics is not None and load_config(folder.pipeline_file) == pipeline:
        return metrics["cross_validation"]
    return fit.run(pipeline, data_dir, run_dir, refit=False)["cross_validation"]


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
            "min": float(np.min(values)), "max": float(np.max(values))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="Kaggle-layout data folder")
    parser.add_argument("--pipeline", type=Path, default=Path("pipelines/breath_phase_cpu.toml"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--runs-dir", type=Path, default=Path("saved_models/seed_spread"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    recipe = with_overrides(load_config(args.pipeline), "train", folds=args.folds)
    estimates = {seed: run_seed(with_overrides(recipe, "data", seed=seed), args.data,
                                args.runs_dir / f"seed_{seed}") for seed in args.seeds}
    names = [name for name in next(iter(estimates.values())) if name != "protocol"]
    print(f"{recipe.name}, {args.folds}-fold out-of-fold scores, {choose_precision(recipe.train.precision)}")
    print("| model | score | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean ± std | range |")
    print("|---|---|" + "---|" * len(args.seeds) + "---|---|")
    table = {}
    for name in names:
        for score in SCORES:
            values = [estimates[seed][name][score]["pooled"] for seed in args.seeds]
            table[f"{name}/{score}"] = {"seeds": dict(zip(args.seeds, values)), **spread(values)}
            s = table[f"{name}/{score}"]
            print(f"| {name} | {score} | " + " | ".join(f"{v:.3f}" for v in values)
                  + f" | {s['mean']:.3f} ± {s['std']:.3f} | {s['min']:.3f}-{s['max']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps({"pipeline": recipe.name, "folds": args.folds, "scores": table}, indent=1))


if __name__ == "__main__":
    main()
