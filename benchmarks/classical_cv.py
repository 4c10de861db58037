"""Pooled-feature learners scored by the CNN's session-grouped K-fold protocol (issue 19).

    python benchmarks/classical_cv.py [--data ../shared/data/breath] [--folds 5] [--seed 42]
        [--pipeline pipelines/breath_phase_cpu.toml] [--json OUT.json] [--cnn-oof PATH]
        [--cache-dir /tmp] [--no-ablation] [--learners hgb logreg ...] [--pair-with logreg]

Results (tables, readings, the command lines used): ``benchmarks/RESULTS.md``.

What it does
------------
1. Features: the pipeline's own in-graph features (``data.extract`` on
   ``data.read_kaggle_train``, ``FeatureSet.to_numpy()``), computed once per front end (the
   shipped one, fmax 4500, and ``with_overrides(pipeline, "features", fmax=2000.0)``). Only the
   mel map, its two deltas and the modulation map depend on fmax; the other five maps and the
   39 scalars are the same in both. Each map is pooled over time and the pooled arrays are
   cached in ``<cache-dir>/classical_cv_<key>.npz`` (key: data folder, file list, audio and
   feature config, pooling version), so a second run skips extraction; each learner's
   out-of-fold predictions are cached there too (``classical_cv_oof_<key>.json``, keyed by
   features, columns, learner settings, folds and seed), so a rerun with ``--cnn-oof`` once the
   CNN's file exists takes seconds.
2. Pooling, per map, by the pooled ensemble member's own layer (``tfbreath.models.pooled``;
   padding rows that ``maps.fit_bands`` adds are never read): contiguous
   rows are averaged into at most 32 band groups (mel and deltas 128 -> 32 groups of 4,
   MFCC+deltas 120 -> 30 of 4 (no group straddles static/delta), gammatone 64 -> 32, tempogram
   128 lags -> 32, chroma+CENS 24 and LPC 12 kept as rows); each group's series over the 63
   frames gives its mean, std, and its linear (slope) and quadratic (curvature) Legendre
   coefficients over t in [-1, 1]. The modulation map is a 2-D DCT with no time axis: its
   low-order 8 x 8 block (quefrency x modulation frequency) is taken as is. The maps are
   z-scored per clip in the pipeline (MFCC and chroma per band), so pooled means carry only
   spectral *shape*, never level; columns constant over all clips (e.g. chroma row means and
   stds, which per-band z-scoring fixes at 0 and 1) are dropped, which uses no label. The 39
   scalars are appended as they are.
3. Folds: exactly ``crossval.session_folds(labels, groups, K, seed)`` on the clips that
   decoded, in ``train.csv`` order -- the folds of ``python -m tfbreath.fit --folds K`` with the
   same seed. Each learner is fitted on K-1 folds and predicts the held-out one; scores come
   from ``crossval.cross_validation_summary`` (mean and per-fold, pooled out-of-fold, 95 %
   session-bootstrap interval).
4. Learners (hyper-parameters fixed before any run; the only tuning is inside each training
   fold, on a session-grouped 20 % split of the training clips (fold 0 of
   ``session_folds(train, 5, seed)``), never on the held-out fold):

   - ``hgb``: ``HistGradientBoostingClassifier(learning_rate=0.1, max_leaf_nodes=15,
     min_samples_leaf=20, l2_regularization=1.0, max_features=0.5)``; the number of trees
     (<= 250) is the one with the lowest log-loss on the inner split, then the model is refit on
     the whole training fold with that many trees.
   - ``logreg``: ``StandardScaler`` + L2 ``LogisticRegression``; C from the declared grid
     {1e-3, 1e-2, 1e-1, 1} by the lowest log-loss on the inner split, then refit on the whole
     training fold.
   - ``svm``: ``StandardScaler`` + ``SVC(kernel="rbf", gamma="scale", probability=True)`` (Platt
     scaling by scikit-learn's internal 5-fold CV), C from {0.3, 1, 3} as logreg's.
   - ``mlp``: ``StandardScaler`` + ``MLPClassifier((256,), early_stopping=True, max_iter=300)``,
     the L2 alpha from {1e-2, 1e-1, 1} as logreg's C.
   - ``knn``: ``StandardScaler`` + ``PCA(64)`` + ``KNeighborsClassifier(weights="distance")``, k
     from {15, 31, 63} as logreg's C.
   - ``et``: ``ExtraTreesClassifier(500, max_features=0.1, min_samples_leaf=3)``, no tuning.
   - ``nystroem``: the shipped ``rbf`` member's own learner (``tfbreath.train.CLOSED_FORM_FITS``:
     Nyström RBF features, gamma = 1 / (D var(z)), ``[train] rbf_landmarks`` landmarks, then
     logistic regression) behind a ``StandardScaler``, C from the ``[train] rbf_c`` defaults as
     logreg's.

   ``--learners`` picks which run (default hgb logreg); each one's settings are part of its OOF
   cache key.

5. Variants (rows): all nine maps + scalars at each front end (the fmax 2000 row's Δ column is
   its paired change vs fmax 4500, same learner); the hgb rows on all features again with two
   other ``random_state``s (same folds and inner split: the spread a change must beat; only if
   hgb runs); then, at the front end whose hgb (without hgb: the first of ``--learners``) pooled
   OOF accuracy is higher (a choice made on these folds, so that row is slightly optimistic; the
   ablation rows are the comparison that matters), each map dropped in turn, maps only, scalars
   only and each map alone, each with its paired change vs all maps + scalars at that front end
   (session bootstrap of the accuracy difference).
6. ``--cnn-oof``: a ``fit --folds K`` run's ``oof_predictions.csv`` (file, session, fold, Target,
   one column per member, e.g. cnn8 and pooled, and ensemble), aligned by file name and checked
   to have the same labels and folds. The run's ensemble is re-cross-fitted from its members
   (and checked against the file's column), then each "all maps + scalars" learner's OOF P is
   added as one more member with ``crossval.cross_fitted_ensemble``; the table gives its OOF
   accuracy and interval and the paired session-bootstrap interval of the accuracy gain over the
   run's ensemble. A cross-fitted stack (logistic regression on the members' logits, fitted on
   the other folds) is also given.
7. ``--pair-with LEARNER`` (e.g. logreg, which must run too): at each front end, every other
   learner's "all maps + scalars" OOF P cross-fitted into an ensemble with LEARNER's
   (``crossval.cross_fitted_ensemble``), with its OOF accuracy and the paired session-bootstrap
   accuracy gain over LEARNER alone: a check of a learner's added value that needs no CNN run,
   so it works at any ``--seed``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tfbreath.config import TrainConfig  # noqa: E402  (after the path insert)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "breath"
DEFAULT_PIPELINE = REPO / "pipelines" / "breath_phase_cpu.toml"

POOLING_VERSION = 2
"""Bump when the pooling changes: it is part of the cache key (2: ``tfbreath.models.pooled``'s layer)."""

POOL_BATCH = 256
"""Clips per call of the pooling layer."""

INNER_FOLDS = 5
"""The inner tuning split is fold 0 of this many session-grouped folds of the training clips (20 %)."""

HGB_PARAMS = dict(learning_rate=0.1, max_leaf_nodes=15, min_samples_leaf=20, l2_regularization=1.0,
                  max_features=0.5)
HGB_MAX_TREES = 250
LOGREG_C = (1e-3, 1e-2, 1e-1, 1.0)
SVM_C = (0.3, 1.0, 3.0)
MLP_HIDDEN = (256,)
MLP_MAX_ITER = 300
MLP_ALPHA = (1e-2, 1e-1, 1.0)
KNN_COMPONENTS = 64
"""PCA components the neighbours are found in."""
KNN_K = (15, 31, 63)
ET_PARAMS = dict(n_estimators=500, max_features=0.1, min_samples_leaf=3)
NYSTROEM_TRAIN = TrainConfig()
"""The ``[train]`` defaults whose ``rbf_c`` and ``rbf_landmarks`` the nystroem learner uses, as the rbf member does."""
NYSTROEM_C = NYSTROEM_TRAIN.rbf_c
LEARNER_SETTINGS = {"svm": {"C": SVM_C}, "mlp": {"hidden": MLP_HIDDEN, "max_iter": MLP_MAX_ITER, "alpha": MLP_ALPHA},
                    "knn": {"pca": KNN_COMPONENTS, "k": KNN_K}, "et": ET_PARAMS,
                    "nystroem": {"C": NYSTROEM_C, "landmarks": NYSTROEM_TRAIN.rbf_landmarks, "gamma": "scale"}}
"""Each added learner's settings, part of its OOF cache key (hgb's and logreg's are in every key, as before)."""
DEFAULT_LEARNERS = ("hgb", "logreg")

SCALARS = "scalars"
ALL = "9 maps + scalars"
SEED_OFFSETS = (1, 2)
"""Extra ``random_state``s of the hgb rows on all features (same folds, same inner split)."""
FMAX_ALTERNATIVE = 2000.0


# ----------------------------------------------------------------------------- features

def pool_map(name: str, rows: int, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """One map's pooled statistics, as the pooled ensemble member computes them, and their names.
    ``[N, n_mels, T]`` -> ``[N, D]``"""
    from tfbreath.models.pooled import PooledStatistics, statistic_names

    layer = PooledStatistics([name], [rows])
    pooled = np.concatenate([layer({"spectral": x[i:i + POOL_BATCH, ..., np.newaxis]}).numpy()
                             for i in range(0, len(x), POOL_BATCH)])
    return pooled, statistic_names([name], [rows], [])


def cache_key(data_dir: Path, files, pipeline) -> str:
    text = json.dumps([str(data_dir.resolve()), [str(f) for f in files], repr(pipeline.audio),
                       repr(pipeline.features), POOLING_VERSION])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def pooled_features(examples, pipeline, data_dir: Path, cache_dir: Path) -> dict:
    """``{"blocks": {map or "scalars": [N, D]}, "names": {...}, "files", "labels", "seconds"}``,
    from the cache when it has them."""
    from tfbreath import data, maps

    key = cache_key(data_dir, examples.files, pipeline)
    path = cache_dir / f"classical_cv_{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=True) as stored:
            loaded = dict(stored.items())
        blocks = {k[len("block_"):]: v for k, v in loaded.items() if k.startswith("block_")}
        names = {k[len("names_"):]: list(v) for k, v in loaded.items() if k.startswith("names_")}
        print(f"  features from cache {path}")
        return {"blocks": blocks, "names": names, "files": loaded["files"], "labels": loaded["labels"],
                "seconds": 0.0, "key": key}
    start = time.perf_counter()
    feature_set = data.extract(examples, None, pipeline, cache="memory", progress=False)
    print(f"  {feature_set.report}".splitlines()[0])
    arrays = feature_set.to_numpy()
    seconds = time.perf_counter() - start
    spectral = arrays.pop("spectral")  # [N, n_mels, T, C]
    blocks, names = {}, {}
    for channel, (name, rows) in enumerate(maps.map_rows(pipeline.features).items()):
        blocks[name], names[name] = pool_map(name, rows, spectral[..., channel])
    del spectral
    if pipeline.features.scalars:
        from tfbreath.config import SCALAR_NAMES

        blocks[SCALARS], names[SCALARS] = arrays["scalars"].astype(np.float32), list(SCALAR_NAMES)
    files = np.array([Path(f).name for f in arrays["files"]])
    labels = arrays["labels"].astype(np.int64)
    groups = np.array(feature_set.kept_examples.groups)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, files=files, labels=labels, groups=groups,
             **{f"block_{k}": v for k, v in blocks.items()},
             **{f"names_{k}": np.array(v) for k, v in names.items()})
    os.replace(partial, path)
    print(f"  extracted and pooled {len(files)} clips in {seconds:.0f} s -> {path}")
    return {"blocks": blocks, "names": names, "files": files, "labels": labels, "seconds": seconds, "key": key}


def design_matrix(blocks: dict[str, np.ndarray], keep: list[str]) -> np.ndarray:
    """The chosen blocks side by side, columns constant over all clips dropped. ``[N, D]``"""
    x = np.concatenate([blocks[k] for k in keep], axis=1).astype(np.float64)
    varying = x.std(axis=0) > 1e-6 * (1.0 + np.abs(x).mean(axis=0))
    return x[:, varying]


# ----------------------------------------------------------------------------- learners

def log_loss(labels: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p)))


def tuned(model, grid: tuple, x_train, y_train, x_inner, y_inner) -> tuple[object, object]:
    """``model(value)`` for the ``grid`` value with the lowest log-loss on the inner split, refit on
    the whole training fold, and that value."""
    losses = [log_loss(y_inner[1], model(v).fit(x_inner[0], y_inner[0]).predict_proba(x_inner[1])[:, 1])
              for v in grid]
    value = grid[int(np.argmin(losses))]
    return model(value).fit(x_train, y_train), value


def fit_hgb(x_train, y_train, x_inner, y_inner, seed: int) -> tuple[object, dict]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    def model(trees):
        return HistGradientBoostingClassifier(max_iter=trees, early_stopping=False, random_state=seed,
                                              **HGB_PARAMS)

    probe = model(HGB_MAX_TREES).fit(x_inner[0], y_inner[0])
    losses = [log_loss(y_inner[1], p[:, 1]) for p in probe.staged_predict_proba(x_inner[1])]
    trees = int(np.argmin(losses)) + 1
    return model(trees).fit(x_train, y_train), {"trees": trees}


def fit_logreg(x_train, y_train, x_inner, y_inner, seed: int) -> tuple[object, dict]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model(c):
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=5000))

    model, c = tuned(model, LOGREG_C, x_train, y_train, x_inner, y_inner)
    return model, {"C": c}


class _QuietSVC:
    """``SVC(probability=True)`` whose fit does not repeat scikit-learn 1.9's deprecation warning
    of ``probability`` (kept: its results are the exploratory run's)."""

    def __init__(self, c: float, seed: int):
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        from sklearn.svm import SVC

        self.model = make_pipeline(StandardScaler(), SVC(C=c, gamma="scale", probability=True, random_state=seed))

    def fit(self, x, y) -> "_QuietSVC":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The `probability` parameter", category=FutureWarning)
            self.model.fit(x, y)
        return self

    def predict_proba(self, x) -> np.ndarray:
        return self.model.predict_proba(x)


def fit_svm(x_train, y_train, x_inner, y_inner, seed: int) -> tuple[object, dict]:
    model, c = tuned(lambda c: _QuietSVC(c, seed), SVM_C, x_train, y_train, x_inner, y_inner)
    return model, {"C": c}


def fit_mlp(x_train, y_train, x_inner, y_inner, seed: int) -> tuple[object, dict]:
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model(alpha):
        return make_pipeline(StandardScaler(), MLPClassifier(MLP_HIDDEN, alpha=alpha, early_stopping=True,
                                                             max_iter=MLP_MAX_ITER, random_state=seed))

    model, alpha = tuned(model, MLP_ALPHA, x_train, y_train, x_inner, y_inner)
    return model, {"alpha": alpha}


def fit_knn(x_train, y_train, x_inner, y_inner, seed: int) -> tuple[object, dict]:
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def model(k):
        return make_pipeline(StandardScaler(), PCA(KNN_COMPONENTS, random_state=seed),
                             KNeighborsClassifier(k, weights="distance"))

    model, k = tuned(model, KNN_K, x_train, y_train, x_inner, y_inner)
    return model, {"k": k}


def fit_et(x_train, y_train, x_inner, y_inner, seed: int) -> tuple[object, dict]:
    from sklearn.ensemble import ExtraTreesClassifier

    return ExtraTreesClassifier(random_state=seed, n_jobs=1, **ET_PARAMS).fit(x_train, y_train), {}


class _StandardisedRBF:
    """The rbf member's learner (``CLOSED_FORM_FITS["rbf"]``) on standardised statistics, as a
    classifier with ``fit`` and ``predict_proba``."""

    def __init__(self, c: float, seed: int):
        self.c, self.seed = c, seed

    def fit(self, x, y) -> "_StandardisedRBF":
        from sklearn.preprocessing import StandardScaler

        from tfbreath.config import RBF_MODEL
        from tfbreath.train import CLOSED_FORM_FITS

        self.scaler = StandardScaler().fit(x)
        self.fitted = CLOSED_FORM_FITS[RBF_MODEL][0](self.scaler.transform(x), y, self.c, NYSTROEM_TRAIN, self.seed)
        return self

    def predict_proba(self, x) -> np.ndarray:
        p = self.fitted.probability(self.scaler.transform(x))  # [N]
        return np.stack([1.0 - p, p], axis=1)


def fit_nystroem(x_train, y_train, x_inner, y_inner, seed: int) -> tuple[object, dict]:
    model, c = tuned(lambda c: _StandardisedRBF(c, seed), NYSTROEM_C, x_train, y_train, x_inner, y_inner)
    return model, {"C": c}


LEARNERS = {"hgb": fit_hgb, "logreg": fit_logreg, "svm": fit_svm, "mlp": fit_mlp, "knn": fit_knn, "et": fit_et,
            "nystroem": fit_nystroem}


def out_of_fold(fit, x: np.ndarray, labels: np.ndarray, groups: np.ndarray, folds: np.ndarray,
                seed: int, model_seed: int) -> tuple[np.ndarray, list[dict]]:
    """P(exhale) of every clip from the model that did not see its fold, and each fold's choice.

    ``seed`` draws the inner tuning split, ``model_seed`` the learner's own randomness."""
    from tfbreath import crossval

    p = np.zeros(len(labels), np.float64)
    chosen = []
    for fold in range(int(folds.max()) + 1):
        train, held_out = np.flatnonzero(folds != fold), np.flatnonzero(folds == fold)
        inner = crossval.session_folds(labels[train], groups[train], INNER_FOLDS, seed)  # [len(train)]
        fit_idx, stop_idx = train[inner != 0], train[inner == 0]
        model, choice = fit(x[train], labels[train], (x[fit_idx], x[stop_idx]),
                            (labels[fit_idx], labels[stop_idx]), model_seed)
        p[held_out] = model.predict_proba(x[held_out])[:, 1]
        chosen.append(choice)
    return p, chosen


# ----------------------------------------------------------------------------- CNN OOF

def read_cnn_oof(path: Path, files: np.ndarray, labels: np.ndarray, folds: np.ndarray) -> dict[str, np.ndarray]:
    """The CNN members' OOF P aligned to ``files``; labels and folds must agree with ours."""
    with open(path, newline="") as handle:
        rows = {row["file"]: row for row in csv.DictReader(handle)}
    missing = [f for f in files if f not in rows]
    if missing:
        raise SystemExit(f"error: {path}: {len(missing)} clip(s) missing, e.g. {missing[0]}")
    aligned = [rows[f] for f in files]
    theirs_labels = np.array([{"I": 0, "E": 1}[r["Target"]] for r in aligned])
    theirs_folds = np.array([int(r["fold"]) for r in aligned])
    if not np.array_equal(theirs_labels, labels):
        raise SystemExit(f"error: {path}: labels differ from train.csv")
    if not np.array_equal(theirs_folds, folds):
        raise SystemExit(f"error: {path}: folds differ from session_folds(seed) here "
                         f"({int((theirs_folds != folds).sum())} clips)")
    members = [c for c in aligned[0] if c not in ("file", "session", "fold", "Target")]
    return {c: np.array([float(r[c]) for r in aligned]) for c in members}


def stacked(members: dict[str, np.ndarray], labels: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Cross-fitted stack: logistic regression on the members' logits, fitted on the other folds."""
    from sklearn.linear_model import LogisticRegression

    z = np.stack([np.log(np.clip(p, 1e-6, 1 - 1e-6) / np.clip(1 - p, 1e-6, 1)) for p in members.values()], 1)
    out = np.zeros(len(labels))
    for fold in range(int(folds.max()) + 1):
        own = folds == fold
        out[own] = LogisticRegression().fit(z[~own], labels[~own]).predict_proba(z[own])[:, 1]
    return out


def compare_with_cnn(cnn: dict[str, np.ndarray], trees: dict[str, np.ndarray], labels, folds, groups,
                     seed: int) -> list[dict]:
    from tfbreath import crossval
    from tfbreath.config import ENSEMBLE

    cnn_members = {k: v for k, v in cnn.items() if k != ENSEMBLE}
    base, _ = crossval.cross_fitted_ensemble(cnn_members, labels, folds)
    if ENSEMBLE in cnn:
        gap = float(np.abs(base - cnn[ENSEMBLE]).max())
        print(f"  run ensemble re-cross-fitted from {list(cnn_members)}: max |diff| vs file {gap:.2e}")

    names = ", ".join(cnn_members)
    candidates = {f"run ensemble ({names})": base}
    for name, p in cnn_members.items():
        candidates[f"run {name} alone"] = p
    for name, p in trees.items():
        candidates[f"run ens. + {name}"], weights = crossval.cross_fitted_ensemble(
            {**cnn_members, name: p}, labels, folds)
        print(f"  + {name}: per-fold weights {[np.round(w, 3).tolist() for w in weights]}")
        candidates[f"stack({names}, {name})"] = stacked({**cnn_members, name: p}, labels, folds)
    candidates[f"stack({names})"] = stacked(cnn_members, labels, folds)
    summary = crossval.cross_validation_summary(labels, candidates, folds, groups, seed=seed)
    rows = []
    for name, p in candidates.items():
        rows.append({"combination": name, **summary[name],
                     "gain_vs_cnn_ensemble": crossval.paired_accuracy_gain(labels, p, base, groups, seed)})
    return rows


def pair_with(base: str, learners: dict[str, np.ndarray], labels, folds, groups, seed: int) -> list[dict]:
    """For every learner but ``base``: the cross-fitted ensemble of its and ``base``'s OOF P, scored,
    with the paired accuracy gain over ``base`` alone."""
    from tfbreath import crossval

    candidates, weights = {}, {}
    for name, p in learners.items():
        if name != base:
            pair = f"{base} + {name}"
            candidates[pair], weights[pair] = crossval.cross_fitted_ensemble({base: learners[base], name: p},
                                                                             labels, folds)
    if not candidates:
        return []
    summary = crossval.cross_validation_summary(labels, candidates, folds, groups, seed=seed)
    return [{"combination": pair, **summary[pair], "weights_per_fold": [np.round(w, 3).tolist() for w in weights[pair]],
             "gain_vs_base": crossval.paired_accuracy_gain(labels, p, learners[base], groups, seed)}
            for pair, p in candidates.items()]


# ----------------------------------------------------------------------------- report

def fmt_row(variant: str, learner: str, entry: dict, features: int, delta: dict | None = None) -> str:
    acc, auc = entry["accuracy"], entry["roc_auc"]
    lo, hi = acc["ci95"]
    change = "" if delta is None else f" {delta['pooled']:+.3f} [{delta['ci95'][0]:+.3f}, {delta['ci95'][1]:+.3f}] |"
    return (f"| {variant} | {learner} | {features} | {acc['pooled']:.3f} [{lo:.3f}, {hi:.3f}] | "
            f"{acc['mean']:.3f} ± {np.std(acc['folds']):.3f} | {auc['pooled']:.3f} |{change}")


def fmt_combination(name: str, entry: dict, gain: dict) -> str:
    acc = entry["accuracy"]
    return (f"| {name} | {acc['pooled']:.3f} [{acc['ci95'][0]:.3f}, {acc['ci95'][1]:.3f}] | "
            f"{acc['mean']:.3f} ± {np.std(acc['folds']):.3f} | {entry['roc_auc']['pooled']:.3f} | "
            f"{gain['pooled']:+.3f} [{gain['ci95'][0]:+.3f}, {gain['ci95'][1]:+.3f}] |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pipeline", type=Path, default=DEFAULT_PIPELINE)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--json", type=Path, help="write every score here")
    parser.add_argument("--cnn-oof", type=Path, help="the CNN run's oof_predictions.csv (used if it exists)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp"))
    parser.add_argument("--no-ablation", action="store_true",
                        help="only the two 'all maps + scalars' rows (and --cnn-oof's combinations): minutes, not half "
                             "an hour")
    parser.add_argument("--threads", type=int, default=1,
                        help="OpenMP/BLAS threads for the learners (default 1: on a 2-core machine shared with "
                             "a training job, 2 threads made HistGradientBoosting 5x slower)")
    parser.add_argument("--learners", nargs="+", choices=tuple(LEARNERS), default=list(DEFAULT_LEARNERS),
                        help=f"which learners run (default: {' '.join(DEFAULT_LEARNERS)})")
    parser.add_argument("--pair-with", choices=tuple(LEARNERS),
                        help="also score each other learner cross-fitted with this one (which must be among "
                             "--learners), and the paired accuracy gain over it alone")
    args = parser.parse_args(argv)
    learners = tuple(dict.fromkeys(args.learners))
    if args.pair_with is not None and args.pair_with not in learners:
        parser.error(f"--pair-with {args.pair_with}: add {args.pair_with} to --learners")
    began = time.perf_counter()

    from tfbreath import crossval, data
    from tfbreath.config import load_config, with_overrides

    pipeline = load_config(args.pipeline)
    examples = data.read_kaggle_train(args.data)
    front_ends = {f"fmax {pipeline.features.fmax:g}": pipeline,
                  f"fmax {FMAX_ALTERNATIVE:g}": with_overrides(pipeline, "features", fmax=FMAX_ALTERNATIVE)}
    features = {}
    for label, variant in front_ends.items():
        print(f"features, {label}:")
        features[label] = pooled_features(examples, variant, args.data, args.cache_dir)
    extraction = sum(f["seconds"] for f in features.values())
    first = next(iter(features.values()))
    files, labels = first["files"], first["labels"]
    for other in features.values():
        assert np.array_equal(other["files"], files) and np.array_equal(other["labels"], labels)
    kept = {Path(f).name: g for f, g in zip(examples.files, examples.groups)}
    groups = np.array([kept[f] for f in files])
    folds = crossval.session_folds(labels, groups, args.folds, args.seed)  # [N]
    print(f"{len(files)} clips, {len(set(groups))} sessions, {args.folds} folds (seed {args.seed}): "
          f"{np.bincount(folds).tolist()} clips per fold")

    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    maps = list(pipeline.features.maps)
    every = maps + [SCALARS]
    results, oof = [], {}

    def run(front: str, variant: str, keep: list[str], reference: tuple[str, str] | None = None,
            learners: tuple[str, ...] = learners, model_seed_offset: int = 0) -> None:
        """One variant, each learner: OOF scores and, against ``reference`` (front end, variant)
        of the same learner, the paired accuracy change."""
        x = design_matrix(features[front]["blocks"], keep)
        for learner in learners:
            start = time.perf_counter()
            settings = [features[front]["key"], keep, learner, HGB_PARAMS, HGB_MAX_TREES, LOGREG_C, INNER_FOLDS,
                        args.folds, args.seed] + ([model_seed_offset] if model_seed_offset else []) + (
                           [LEARNER_SETTINGS[learner]] if learner in LEARNER_SETTINGS else [])
            key = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:16]
            stored = args.cache_dir / f"classical_cv_oof_{key}.json"
            if stored.is_file():  # out-of-fold predictions of an earlier run: same features, learner, folds
                saved = json.loads(stored.read_text())
                p, chosen = np.array(saved["p"]), saved["chosen"]
            else:
                p, chosen = out_of_fold(LEARNERS[learner], x, labels, groups, folds, args.seed,
                                        args.seed + model_seed_offset)
                stored.write_text(json.dumps({"p": p.tolist(), "chosen": chosen}))
            entry = crossval.cross_validation_summary(labels, {learner: p}, folds, groups, seed=args.seed)[learner]
            delta = None if reference is None else crossval.paired_accuracy_gain(
                labels, p, oof[(*reference, learner)], groups, args.seed)
            row = {"front_end": front, "variant": variant, "learner": learner, "features": x.shape[1],
                   "chosen_per_fold": chosen, "seconds": round(time.perf_counter() - start, 1), **entry,
                   "reference": None if reference is None else ": ".join(reference),
                   "accuracy_change_vs_reference": delta}
            results.append(row)
            oof[(front, variant, learner)] = p
            print(fmt_row(f"{front}: {variant}", learner, entry, x.shape[1], delta)
                  + f" ({row['seconds']:.0f} s, {chosen})", flush=True)

    shipped, alternative = front_ends
    run(shipped, ALL, every)
    run(alternative, ALL, every, reference=(shipped, ALL))
    ranking = "hgb" if "hgb" in learners else learners[0]
    better = max(front_ends, key=lambda f: next(r["accuracy"]["pooled"] for r in results
                                                if r["front_end"] == f and r["learner"] == ranking))
    if not args.no_ablation:
        print(f"ablation at the front end with the higher {ranking} OOF accuracy: {better}")
        for front in front_ends if "hgb" in learners else ():  # hgb's own randomness: the noise floor of a change
            for offset in SEED_OFFSETS:
                run(front, f"{ALL}, hgb seed {args.seed + offset}", every, (front, ALL), ("hgb",), offset)
        for dropped in maps:
            run(better, f"- {dropped}", [k for k in every if k != dropped], (better, ALL))
        run(better, "maps only (no scalars)", maps, (better, ALL))
        run(better, "scalars only", [SCALARS], (better, ALL))
        for alone in maps:
            run(better, f"{alone} only", [alone], (better, ALL))

    cnn_rows = []
    if args.cnn_oof is not None:
        if args.cnn_oof.is_file():
            print(f"CNN out-of-fold predictions: {args.cnn_oof}")
            cnn = read_cnn_oof(args.cnn_oof, files, labels, folds)
            trees = {f"{learner} ({front})": oof[(front, ALL, learner)]
                     for front in front_ends for learner in learners}
            cnn_rows = compare_with_cnn(cnn, trees, labels, folds, groups, args.seed)
        else:
            print(f"CNN out-of-fold predictions: {args.cnn_oof} does not exist (yet): no combination scored")
    pair_rows = []
    if args.pair_with is not None:
        for front in front_ends:
            for row in pair_with(args.pair_with, {learner: oof[(front, ALL, learner)] for learner in learners},
                                 labels, folds, groups, args.seed):
                pair_rows.append({"front_end": front, **row})

    wall = time.perf_counter() - began
    print()
    print("| variant | learner | features | OOF accuracy pooled [95 % CI] | per-fold mean ± std | AUC | "
          "Δ accuracy vs reference [95 % CI] |")
    print("|---|---|---|---|---|---|---|")
    for row in results:
        line = fmt_row(f"{row['front_end']}: {row['variant']}", row["learner"], row, row["features"],
                       row["accuracy_change_vs_reference"])
        print(line if row["accuracy_change_vs_reference"] else line + " (reference) |")
    print("reference: the fmax 2000 row vs fmax 4500 (same learner); every other row vs "
          f"'{ALL}' at its front end (same learner); Δ's interval is a paired session bootstrap.")
    if cnn_rows:
        print()
        print("| combination | OOF accuracy pooled [95 % CI] | per-fold mean ± std | AUC | gain vs run ensemble [95 % CI] |")
        print("|---|---|---|---|---|")
        for row in cnn_rows:
            print(fmt_combination(row["combination"], row, row["gain_vs_cnn_ensemble"]))
    if pair_rows:
        print()
        print(f"| {ALL}: cross-fitted pair | OOF accuracy pooled [95 % CI] | per-fold mean ± std | AUC | "
              f"gain vs {args.pair_with} alone [95 % CI] |")
        print("|---|---|---|---|---|")
        for row in pair_rows:
            print(fmt_combination(f"{row['front_end']}: {row['combination']}", row, row["gain_vs_base"]))
    print(f"\nwall time {wall:.0f} s (feature extraction {extraction:.0f} s); clips {len(files)}, "
          f"sessions {len(set(groups))}")
    if args.json:
        args.json.write_text(json.dumps({
            "protocol": {"folds": args.folds, "seed": args.seed, "clips": len(files), "sessions": len(set(groups)),
                         "pipeline": str(args.pipeline), "hgb": {**HGB_PARAMS, "max_trees": HGB_MAX_TREES},
                         "logreg_C_grid": list(LOGREG_C), "learners": list(learners),
                         "learner_settings": {k: v for k, v in LEARNER_SETTINGS.items() if k in learners},
                         "ablation_front_end": better},
            "results": results, "cnn_combinations": cnn_rows, "pairs_with": args.pair_with, "pairs": pair_rows,
            "wall_seconds": round(wall, 1)}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
