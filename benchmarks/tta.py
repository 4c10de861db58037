"""Test-time augmentation by small time shifts, judged out of fold on a K-fold run.

    python benchmarks/tta.py --run RUN --data ../shared/data/breath [--shifts-ms 25 50 100]
        [--json OUT.json]

``RUN`` is a folder written by ``python -m tfbreath.fit --folds K``: its ``fold_<k>/`` models
and ``oof_predictions.csv``. Each fold's members predict the clips that fold held out, once as
they are and once shifted by each of ``-s`` and ``+s`` milliseconds; a shift keeps the clip's
length by mirroring the audio at the edge it moves away from (no silence, no click). The TTA
prediction of a member is the mean P(exhale) over the clip and its two shifts; the ensemble is
cross-fitted as in ``fit`` (each fold's member weights from the other folds' accuracies).

It prints, per shift, every member's and the ensemble's pooled out-of-fold accuracy and its
paired change against no TTA (session-bootstrap 95 % interval), and first the largest
difference between this script's unshifted predictions and the run's ``oof_predictions.csv``
(a check that the folds' models and clips were found as trained).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfbreath import crossval, data
from tfbreath.audio import load_audio
from tfbreath.config import ENSEMBLE, load_config
from tfbreath.features import extract_features
from tfbreath.run_folder import RunFolder

DEFAULT_SHIFTS_MS = (25.0, 50.0, 100.0)
BATCH = 64
MS_PER_S = 1000.0


def shifted(y: np.ndarray, samples: int) -> np.ndarray:
    """The clip moved ``samples`` later (> 0) or earlier (< 0), mirrored at the edge it leaves.
    ``[n] -> [n]``"""
    n = len(y)
    if samples > 0:
        return np.pad(y, (samples, 0), mode="reflect")[:n]
    if samples < 0:
        return np.pad(y, (0, -samples), mode="reflect")[-samples:]
    return y


def signed(gain: dict) -> str:
    """``+0.004 [-0.006, +0.014]`` from ``crossval.paired_accuracy_gain``'s result."""
    low, high = gain["ci95"]
    return f"{gain['pooled']:+.3f} [{low:+.3f}, {high:+.3f}]"


def read_oof(path: Path) -> tuple[list[str], np.ndarray, np.ndarray, list[str], dict[str, np.ndarray]]:
    """Files, labels, folds, sessions and each model's out-of-fold P from ``oof_predictions.csv``."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    models = [c for c in rows[0] if c not in ("file", "session", "fold", "Target")]
    return ([r["file"] for r in rows], np.array([data.LABELS[r["Target"]] for r in rows], np.float32),
            np.array([int(r["fold"]) for r in rows]), [r["session"] for r in rows],
            {m: np.array([float(r[m]) for r in rows]) for m in models})


def member_probabilities(models: dict[str, keras.Model], waveforms: np.ndarray, featurize) -> dict[str, np.ndarray]:
    """P(exhale) of every clip by every member. ``[N, n] -> {name: [N]}``"""
    out = {name: [] for name in models}
    for start in range(0, len(waveforms), BATCH):
        inputs = featurize(tf.constant(waveforms[start:start + BATCH]))
        for name, model in models.items():
            out[name].append(tf.sigmoid(tf.cast(model(inputs, training=False), tf.float32)).numpy().reshape(-1))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="a K-fold run folder of tfbreath.fit")
    parser.add_argument("--data", type=Path, required=True, help="the Kaggle-layout folder it trained on")
    parser.add_argument("--shifts-ms", type=float, nargs="+", default=list(DEFAULT_SHIFTS_MS))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    run = RunFolder(args.run)
    pipeline = load_config(run.pipeline_file)
    files, labels, folds, sessions, recorded = read_oof(run.oof_predictions)
    ensemble_recorded = recorded.pop(ENSEMBLE)
    rate = pipeline.audio.sample_rate
    featurize = tf.function(lambda y: extract_features(y, pipeline), reduce_retracing=True)
    path_of = {path.name: path for path in data.read_kaggle_train(args.data).files}
    waveforms = np.stack([load_audio(path_of[f], rate, pipeline.audio.duration_s) for f in files])  # [N, n]
    offsets = [0] + [sign * int(round(ms * rate / MS_PER_S)) for ms in args.shifts_ms for sign in (-1, 1)]
    per_offset = {offset: {m: np.zeros(len(files)) for m in recorded} for offset in offsets}  # {offset: {m: [N]}}
    for fold in range(int(folds.max()) + 1):
        own = np.flatnonzero(folds == fold)
        models = {m: keras.models.load_model(run.fold(fold).model_file(m)) for m in recorded}
        for offset in offsets:
            moved = np.stack([shifted(y, offset) for y in waveforms[own]])  # [N_k, n]
            for m, p in member_probabilities(models, moved, featurize).items():
                per_offset[offset][m][own] = p
        print(f"fold {fold}: {len(own)} clips, {len(offsets)} versions each")
    drift = max(float(np.max(np.abs(per_offset[0][m] - recorded[m]))) for m in recorded)
    print(f"largest |P - oof_predictions.csv| unshifted: {drift:.2e} (the run's models and clips)")

    def with_ensemble(members: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {**members, ENSEMBLE: crossval.cross_fitted_ensemble(members, labels, folds)[0]}

    plain = with_ensemble(per_offset[0])
    table = {"none": {m: {"accuracy": round(crossval.accuracy(labels, p), 4)} for m, p in plain.items()}}
    print(f"ensemble as recorded: {crossval.accuracy(labels, ensemble_recorded):.4f}")
    print("| TTA | " + " | ".join(plain) + " |")
    print("|---|" + "---|" * len(plain))
    print("| none | " + " | ".join(f"{v['accuracy']:.3f}" for v in table["none"].values()) + " |")
    for ms, pair in zip(args.shifts_ms, zip(offsets[1::2], offsets[2::2])):
        averaged = with_ensemble({m: np.mean([per_offset[o][m] for o in (0, *pair)], axis=0) for m in recorded})
        row = {m: {"accuracy": round(crossval.accuracy(labels, p), 4),
                   "gain": crossval.paired_accuracy_gain(labels, p, plain[m], sessions)} for m, p in averaged.items()}
        table[f"±{ms:g} ms"] = row
        print(f"| ±{ms:g} ms | " + " | ".join(f"{v['accuracy']:.3f} ({signed(v['gain'])})" for v in row.values()) + " |")
    if args.json:
        args.json.write_text(json.dumps({"run": str(args.run), "drift": drift, "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
