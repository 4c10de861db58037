"""Screen a MiniRocket-style learner as one more ensemble member, out of fold (issue 19).

    python benchmarks/rocket_screen.py --run 42=saved_models/breath_phase --run 43=RUN43 --run 44=RUN44
        [--data ../shared/data/breath] [--pipeline pipelines/breath_phase_cpu.toml]
        [--c-grid 1e-3 1e-2 1e-1 1] [--cache-dir /tmp]

Each ``--run SEED=FOLDER`` is a ``python -m tfbreath.fit --folds 5 --seed SEED`` run folder; its
``oof_predictions.csv`` gives the members the learner is added to. Results and the decision rule
they were judged by: ``benchmarks/RESULTS.md``.

What it does
------------
1. Features: the pipeline's in-graph maps of the labelled clips (``data.extract``), cached in
   ``<cache-dir>/rocket_screen_<key>.npz``. The time-bearing maps of CNN8's input (``SERIES_MAPS``)
   are averaged into the pooled member's band groups (``models.pooled.group_average``): a
   multivariate series of 138 channels over the 63 frames.
2. Kernels, fixed before any data is seen (``KERNEL_SEED``): MiniRocket's 84 length-9 kernels
   (-1 at every tap, +2 at three), each at the dilations ``DILATIONS``, each of those 420 applied
   to the sum of a random subset of 1-8 channels; every other one zero-padded ("same"), the
   rest read only where the kernel fits.
3. Per training fold: ``BIASES`` biases per kernel at evenly spread quantiles of the training
   clips' responses; features are the proportions of positive values (PPV) of response minus
   bias (3,360 of them); standardised, then an L2 logistic regression with C from ``--c-grid``
   by the lowest log-loss on the inner session-grouped split (``classical_cv.tuned``), refit on
   the whole training fold.
4. The learner's out-of-fold P is added to each run's members with
   ``crossval.cross_fitted_ensemble``; printed: the learner alone, the run's members re-cross-fitted,
   the five-member ensemble and its paired session-bootstrap accuracy gain.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import classical_cv as ccv  # noqa: E402  (a sibling benchmark script; it puts the repo on the path)

from tfbreath import crossval  # noqa: E402
from tfbreath.config import ENSEMBLE  # noqa: E402
from tfbreath.evaluation import accuracy  # noqa: E402

OOF_FILE = "oof_predictions.csv"
SERIES_MAPS = ("mel", "mel_delta", "mfcc", "gammatone", "lpc")
"""CNN8's maps that have a time axis (the modulation map has none)."""
KERNEL_LENGTH = 9
KERNEL_TAPS = tuple(itertools.combinations(range(KERNEL_LENGTH), 3))
"""MiniRocket's 84 kernels: the taps that weigh +2 (every other tap weighs -1)."""
DILATIONS = (1, 2, 3, 5, 7)
"""Up to the largest dilation whose kernel spans the 63 frames."""
MAX_CHANNELS = 8
"""A kernel sums 1 to this many channels, drawn log-uniformly."""
BIASES = 8
QUANTILES = 0.1 + 0.8 * (np.arange(BIASES) + 0.5) / BIASES
"""Bias quantiles of the training responses, 0.15 to 0.85."""
KERNEL_SEED = 0


def series(spectral: np.ndarray, names: list[str], rows: list[int]) -> np.ndarray:
    """Band-group series of ``SERIES_MAPS``. ``[N, M, T, C]`` -> ``[N, D, T]``"""
    from tfbreath.models.pooled import group_average

    parts = [np.einsum("gm,nmt->ngt", group_average(rows[names.index(name)], spectral.shape[1]),
                       spectral[..., names.index(name)]) for name in SERIES_MAPS]
    return np.concatenate(parts, axis=1).astype(np.float32)


def kernels(channels: int) -> list[tuple[np.ndarray, int, np.ndarray, bool]]:
    """``(weights [9], dilation, channel indices, padded)`` per kernel."""
    rng = np.random.default_rng(KERNEL_SEED)
    chosen = []
    for number, (taps, dilation) in enumerate(itertools.product(KERNEL_TAPS, DILATIONS)):
        weights = -np.ones(KERNEL_LENGTH, np.float32)
        weights[list(taps)] = 2.0
        size = int(min(channels, MAX_CHANNELS, 2 ** rng.uniform(0, np.log2(MAX_CHANNELS + 1))))
        chosen.append((weights, dilation, rng.choice(channels, size=size, replace=False), number % 2 == 0))
    return chosen


def responses(x: np.ndarray) -> np.ndarray:
    """Every kernel's response; NaN where an unpadded kernel does not fit. ``[N, D, T]`` -> ``[N, K, T]``"""
    frames = x.shape[2]
    bank = kernels(x.shape[1])
    out = np.empty((x.shape[0], len(bank), frames), np.float32)
    for k, (weights, dilation, channels, padded) in enumerate(bank):
        half = KERNEL_LENGTH // 2 * dilation
        summed = np.pad(x[:, channels, :].sum(axis=1), ((0, 0), (half, half)))  # [N, T + 2 half]
        out[:, k] = sum(w * summed[:, j * dilation:j * dilation + frames] for j, w in enumerate(weights))
        if not padded:
            out[:, k, :half] = np.nan
            out[:, k, frames - half:] = np.nan
    return out


class RocketLearner:
    """PPV features with biases from the training clips, then a standardised logistic regression."""

    def __init__(self, response: np.ndarray, c_grid: tuple[float, ...]):
        self.response, self.c_grid = response, c_grid

    def features(self, clips: np.ndarray) -> np.ndarray:
        """``[n]`` clip indices -> ``[n, K * BIASES]``"""
        r = self.response[clips][:, :, np.newaxis, :]  # [n, K, 1, T]
        valid = ~np.isnan(r)
        positive = valid & (np.nan_to_num(r) > self.bias[np.newaxis, :, :, np.newaxis])  # [n, K, B, T]
        return (positive.sum(-1) / valid.sum(-1)).reshape(len(clips), -1)

    def fit(self, train, y_train, inner, y_inner, seed: int) -> tuple[RocketLearner, dict]:
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        kernel_major = self.response[train].transpose(1, 0, 2).reshape(self.response.shape[1], -1)  # [K, n T]
        self.bias = np.nanquantile(kernel_major, QUANTILES, axis=1).T.astype(np.float32)  # [K, B]
        self.model, c = ccv.tuned(lambda c: make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000)),
                                  self.c_grid, self.features(train), y_train,
                                  (self.features(inner[0]), self.features(inner[1])), y_inner)
        return self, {"C": c}

    def predict_proba(self, clips: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(self.features(clips))


def labelled_maps(data_dir: Path, pipeline_path: Path, cache_dir: Path) -> dict[str, np.ndarray]:
    """``{"spectral" [N, M, T, C], "labels", "files", "groups", "names", "rows"}`` of the labelled clips."""
    from tfbreath import data, maps
    from tfbreath.config import load_config

    pipeline = load_config(pipeline_path)
    examples = data.read_kaggle_train(data_dir)
    path = cache_dir / f"rocket_screen_{ccv.cache_key(data_dir, examples.files, pipeline)}.npz"
    if not path.is_file():
        feature_set = data.extract(examples, None, pipeline, cache="memory", progress=False)
        arrays = feature_set.to_numpy()
        rows = maps.map_rows(pipeline.features)
        cache_dir.mkdir(parents=True, exist_ok=True)
        np.savez(path, spectral=arrays["spectral"].astype(np.float32), labels=arrays["labels"].astype(np.int64),
                 files=np.array([Path(f).name for f in arrays["files"]]),
                 groups=np.array(feature_set.kept_examples.groups), names=np.array(list(rows)),
                 rows=np.array(list(rows.values())))
    with np.load(path) as stored:
        return dict(stored.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", required=True, metavar="SEED=FOLDER",
                        help="a fit --folds 5 --seed SEED run folder (repeatable)")
    parser.add_argument("--data", type=Path, default=ccv.DEFAULT_DATA)
    parser.add_argument("--pipeline", type=Path, default=ccv.DEFAULT_PIPELINE)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--c-grid", type=float, nargs="+", default=list(ccv.LOGREG_C))
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp"))
    args = parser.parse_args(argv)
    runs = []
    for item in args.run:
        seed, _, folder = item.partition("=")
        if not seed.isdigit() or not (Path(folder) / OOF_FILE).is_file():
            parser.error(f"--run {item}: expected SEED=FOLDER with FOLDER/{OOF_FILE}")
        runs.append((int(seed), Path(folder)))

    stored = labelled_maps(args.data, args.pipeline, args.cache_dir)
    labels, files, groups = stored["labels"], stored["files"], stored["groups"]
    x = series(stored["spectral"], list(stored["names"]), [int(r) for r in stored["rows"]])  # [N, D, T]
    learner = RocketLearner(responses(x), tuple(args.c_grid))
    clips = np.arange(len(labels))
    print(f"{len(labels)} clips, series {x.shape}, {learner.response.shape[1]} kernels x {BIASES} biases")
    for seed, folder in runs:
        folds = crossval.session_folds(labels, groups, args.folds, seed)  # [N]
        p, chosen = ccv.out_of_fold(learner.fit, clips, labels, groups, folds, seed, model_seed=0)
        members = ccv.read_cnn_oof(folder / OOF_FILE, files, labels, folds)
        members.pop(ENSEMBLE, None)
        base, _ = crossval.cross_fitted_ensemble(members, labels, folds)
        more, _ = crossval.cross_fitted_ensemble({**members, "rocket": p}, labels, folds)
        gain = crossval.paired_accuracy_gain(labels, more, base, groups, seed)
        print(f"seed {seed}: rocket alone {accuracy(labels, p):.3f}; {folder} members "
              f"({', '.join(members)}) {accuracy(labels, base):.3f}; + rocket "
              f"{accuracy(labels, more):.3f}, gain {100 * gain['pooled']:+.1f} "
              f"[{100 * gain['ci95'][0]:+.1f}, {100 * gain['ci95'][1]:+.1f}]; C per fold "
              f"{[c['C'] for c in chosen]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
