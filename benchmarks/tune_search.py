"""A real, bounded hyperparameter search on the shared breath clips: wall time and what it finds.

    python benchmarks/tune_search.py [--data ../shared/data/breath] [--pipeline pipelines/breath_phase_cpu.toml]
                                     [--model cnn8] [--tuner hyperband] [--max-trials 10] [--max-epochs 6]
                                     [--out saved_models/tune_benchmark] [--json OUT.json]

Runs ``python -m tfbreath.tune`` with that budget (the pipeline's ``[tune]`` space, every trial
scored on the session-grouped validation split) and prints the wall time, the number of
trials, and the best trial's validation accuracy and hyperparameters.
With the defaults (Hyperband, at most 6 epochs a trial, factor 3) the search trains about 22
epochs of width-0.125/0.25 models: minutes, not hours, on 2 CPU cores. Run again with the
same ``--out`` to resume; a larger ``--max-epochs`` is a real search (the best pipeline then
trains with ``python -m tfbreath.fit --pipeline <out>/best_pipeline.toml``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

from tfbreath import tune
from tfbreath.run_folder import SearchFolder

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "breath"
DEFAULT_PIPELINE = REPO / "pipelines" / "breath_phase_cpu.toml"
DEFAULT_MAX_TRIALS = 10
DEFAULT_MAX_EPOCHS = 6
"""The bound: Hyperband's longest trial; the shorter brackets train 2 epochs a model."""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pipeline", type=Path, default=DEFAULT_PIPELINE)
    parser.add_argument("--model", default="cnn8")
    parser.add_argument("--tuner", default="hyperband")
    parser.add_argument("--max-trials", type=int, default=DEFAULT_MAX_TRIALS)
    parser.add_argument("--max-epochs", type=int, default=DEFAULT_MAX_EPOCHS)
    parser.add_argument("--out", type=Path, default=REPO / "saved_models" / "tune_benchmark")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if not args.data.is_dir():
        print(f"error: {args.data}: data folder not found (pass --data)", file=sys.stderr)
        return 2
    started = time.monotonic()
    status = tune.main(["--pipeline", str(args.pipeline), "--data", str(args.data), "--out", str(args.out),
                        "--model", args.model, "--tuner", args.tuner, "--max-trials", str(args.max_trials),
                        "--max-epochs", str(args.max_epochs)])
    wall = time.monotonic() - started
    if status != 0:
        return status
    with open(SearchFolder(args.out).trials_file, newline="") as handle:
        rows = list(csv.DictReader(handle))
    best = json.loads(SearchFolder(args.out).best_hyperparameters_file.read_text())
    finished = [row for row in rows if row["status"] == "COMPLETED"]
    result = {
        "data": str(args.data), "pipeline": str(args.pipeline), "model": args.model, "tuner": args.tuner,
        "max_trials": args.max_trials, "max_epochs": args.max_epochs, "wall_seconds": round(wall, 1),
        "trials": len(rows), "completed": len(finished),
        "seconds_per_trial": round(wall / max(1, len(finished)), 1),
        "best": best,
    }
    print(f"{len(finished)} of {len(rows)} trials completed in {wall / 60:.1f} min; best trial {best['trial']}: "
          f"val_accuracy {best['val_accuracy']:.3f} ({best['epochs']} epochs) with {best['hyperparameters']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
