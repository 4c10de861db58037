"""Two K-fold runs of one data folder compared clip by clip, out of fold.

    python benchmarks/paired_runs.py RUN_A RUN_B --column cnn8 [--reference-column cnn8]
        [--blend pooled [rbf ...]]

``RUN_A`` and ``RUN_B`` are folders written by ``python -m tfbreath.fit --folds K`` with the same
seed, so the same folds (checked: every clip must sit in the same fold in both). Prints each
run's pooled out-of-fold accuracy and ROC AUC for the chosen columns of ``oof_predictions.csv``
and A's accuracy change over B with its paired session-bootstrap 95 % interval
(``crossval.paired_accuracy_gain``). ``--blend M [M ...]`` also scores the equal-weight mean of
A's column and B's columns ``M`` against B's ``ensemble`` column: what A's model would give in
place of B's in an ensemble with B's other members (``--blend pooled rbf`` for the shipped
three-member recipe, whose out-of-fold weights are within 0.01 of equal).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tfbreath import crossval
from tfbreath.config import ENSEMBLE
from tfbreath.evaluation import roc_auc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tta import read_oof, signed  # noqa: E402  (a sibling benchmark script)

OOF_FILE = "oof_predictions.csv"
THRESHOLD = 0.5


def accuracy(labels: np.ndarray, probabilities: np.ndarray) -> float:
    return float(np.mean((probabilities >= THRESHOLD) == (labels >= THRESHOLD)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_a", type=Path)
    parser.add_argument("run_b", type=Path, help="the reference run")
    parser.add_argument("--column", required=True, help="the model column of A (e.g. cnn8, ensemble)")
    parser.add_argument("--reference-column", help="the model column of B (default: --column)")
    parser.add_argument("--blend", metavar="M", nargs="+",
                        help="also score mean(A's column, B's columns M ...) vs B's ensemble")
    args = parser.parse_args(argv)

    files_a, labels, folds_a, sessions, columns_a = read_oof(args.run_a / OOF_FILE)
    files_b, _, folds_b, _, columns_b = read_oof(args.run_b / OOF_FILE)
    if files_a != files_b or not np.array_equal(folds_a, folds_b):
        parser.error(f"{args.run_a} and {args.run_b} do not hold the same clips in the same folds (same seed?)")
    column_b = args.reference_column or args.column
    blend_b = [*args.blend, ENSEMBLE] if args.blend else []
    for run, columns, wanted in ((args.run_a, columns_a, [args.column]),
                                 (args.run_b, columns_b, [column_b, *blend_b])):
        missing = [name for name in wanted if name not in columns]
        if missing:
            parser.error(f"{run / OOF_FILE} has no column {', '.join(missing)} (it has {', '.join(columns)})")
    a = columns_a[args.column]
    b = columns_b[column_b]
    for name, p in ((f"A {args.column}", a), (f"B {column_b}", b)):
        print(f"{name}: accuracy {accuracy(labels, p):.4f}, ROC AUC {roc_auc(labels, p):.4f}")
    print(f"A - B accuracy: {signed(crossval.paired_accuracy_gain(labels, a, b, sessions))}")
    if args.blend:
        blend = np.mean([a] + [columns_b[name] for name in args.blend], axis=0)
        reference = columns_b[ENSEMBLE]
        print(f"mean(A {args.column}, B {' + '.join(args.blend)}): accuracy {accuracy(labels, blend):.4f}, "
              f"ROC AUC {roc_auc(labels, blend):.4f}; vs B {ENSEMBLE} {accuracy(labels, reference):.4f}: "
              f"{signed(crossval.paired_accuracy_gain(labels, blend, reference, sessions))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
