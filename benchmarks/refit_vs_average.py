"""Which model to ship after K-fold cross-validation: the refit on all clips, or the fold models averaged?

    python benchmarks/refit_vs_average.py --data ../shared/data/breath
        [--pipeline pipelines/breath_phase_cpu.toml] [--folds 5] [--outer 0 1 ...]
        [--runs-dir /tmp/refit_vs_average] [--json OUT.json]

Neither choice can be scored on clips that any of its models saw, so the comparison is nested:
the clips are dealt into ``--folds`` session-grouped folds (``crossval.session_folds``, the
assignment ``fit --folds`` makes with the same seed); for each outer fold named by ``--outer``
the remaining clips get a complete ``python -m tfbreath.fit --folds K-1`` run in
``<runs-dir>/outer_<o>/run`` (its data folder lists only them). That run's refit ensemble and
the mean of its K-1 fold ensembles (each fold's members combined with the refit's weights)
then predict the outer fold's clips, which neither saw. Runs resume.

It prints, per outer fold and pooled over them, each member's and the ensemble's accuracy
both ways and the paired change (average minus refit) with its session-bootstrap 95 % interval.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import keras
import numpy as np

from tfbreath import crossval, data, fit, train
from tfbreath.config import ENSEMBLE, load_config, with_overrides
from tfbreath.ensemble import weighted_average
from tfbreath.run_folder import RunFolder

DEFAULT_RUNS_DIR = Path("/tmp/refit_vs_average")
BATCH = 64
WAYS = ("refit", "fold_average")


def outer_data_dir(source: Path, keep: set[str], folder: Path) -> Path:
    """A Kaggle-layout folder whose ``train.csv`` lists the rows of ``source`` whose clip is in
    ``keep`` (file names); its ``train/`` links to the source's clips."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(source / "train.csv", newline="") as handle:
        reader = csv.DictReader(handle)
        rows, header = list(reader), reader.fieldnames
    files = data.read_kaggle_train(source).files  # one per row, in row order
    with open(folder / "train.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, header)
        writer.writeheader()
        writer.writerows(row for row, path in zip(rows, files) if path.name in keep)
    link = folder / "train"
    if not link.exists():
        link.symlink_to((source / "train").resolve(), target_is_directory=True)
    return folder


def member_probabilities(folder: RunFolder, names: list[str], feature_set: data.FeatureSet) -> dict[str, np.ndarray]:
    """P(exhale) of every kept clip by each member saved in ``folder``. ``{name: [N]}``"""
    return {name: train.predict_probabilities(keras.models.load_model(folder.model_file(name)), feature_set, BATCH)
            for name in names}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="Kaggle-layout data folder")
    parser.add_argument("--pipeline", type=Path, default=Path("pipelines/breath_phase_cpu.toml"))
    parser.add_argument("--folds", type=int, default=5, help="outer folds (each inner run uses one fewer)")
    parser.add_argument("--outer", type=int, nargs="+", default=[0], help="which outer folds to hold out")
    parser.add_argument("--runs-dir", type=Path, default=DEFAULT_RUNS_DIR)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    recipe = load_config(args.pipeline)
    inner_recipe = with_overrides(recipe, "train", folds=args.folds - 1)
    examples = data.read_kaggle_train(args.data)
    folds = crossval.session_folds(examples.labels, examples.groups, args.folds, recipe.data.seed)  # [N]
    labels, groups, outcomes = [], [], {way: {} for way in WAYS}
    for outer in args.outer:
        held_out = examples.subset(np.flatnonzero(folds == outer))
        keep = {path.name for path, fold in zip(examples.files, folds) if fold != outer}
        base = args.runs_dir / f"outer_{outer}"
        run = RunFolder(base / "run")
        metrics = fit.run(inner_recipe, outer_data_dir(args.data, keep, base / "data"), run.path)
        weights = metrics["models"][ENSEMBLE]["weights"]
        names = list(weights)
        scored = data.extract(held_out, None, recipe, description=f"outer fold {outer}")
        refit = member_probabilities(run, names, scored)
        per_fold = [member_probabilities(run.fold(k), names, scored)
                    for k in range(inner_recipe.train.folds)]
        average = {name: np.mean([p[name] for p in per_fold], axis=0) for name in names}
        for way, members in (("refit", refit), ("fold_average", average)):
            for name, p in {**members, ENSEMBLE: weighted_average(members, [weights[n] for n in members])}.items():
                outcomes[way].setdefault(name, []).append(p)
        labels.append(scored.kept_examples.labels)
        groups.extend(scored.kept_examples.groups)
    labels = np.concatenate(labels)
    table = {}
    print(f"{recipe.name}: outer folds {args.outer} of {args.folds}, {len(labels)} clips, "
          f"each scored by runs that never saw it")
    print("| model | refit | fold average | average − refit [95 % CI] |")
    print("|---|---|---|---|")
    for name in outcomes["refit"]:
        p = {way: np.concatenate(outcomes[way][name]) for way in WAYS}
        gain = crossval.paired_accuracy_gain(labels, p["fold_average"], p["refit"], groups, recipe.data.seed)
        table[name] = {**{way: round(crossval.accuracy(labels, p[way]), 4) for way in WAYS}, "gain": gain}
        print(f"| {name} | {table[name]['refit']:.3f} | {table[name]['fold_average']:.3f} | "
              f"{gain['pooled']:+.3f} [{gain['ci95'][0]:+.3f}, {gain['ci95'][1]:+.3f}] |")
    if args.json:
        args.json.write_text(json.dumps({"pipeline": recipe.name, "outer": args.outer, "clips": len(labels),
                                         "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
