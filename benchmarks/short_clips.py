"""Files shorter than a clip: filled with zeros or with their own audio repeated.

    python benchmarks/short_clips.py [--model RUN_DIR | FILE.keras | FILE.tflite] [--data DIR]
                                     [--every 4] [--fractions 0.95 0.9 0.75 0.6 0.5 0.3] [--json OUT.json]

Every ``--every``-th labelled clip of ``train.csv`` in ``--data`` (else ``$TFBREATH_DATA``, else
``../shared/data/breath``) is decoded as the package decodes it (``tfbreath.audio.load_audio`` at
the model's rate and clip length), then cut to its first ``fraction`` of a clip and filled back
to the clip in two ways:

- ``zeros``: zeros at the end (the package's fill before 2026-12-07);
- ``repeat``: the cut audio repeated end to end (``tfbreath.audio.decode_wav`` and
  ``tfbreath.classifier.window`` since then).

Each row gives the model's accuracy on the filled clips, how many change label against the whole
clips, and the mean P(exhale). The shared clips are all one clip long, so the model never saw a
filled one in training. They are also the shipped model's training clips: its accuracy here is
optimistic; the drop from the whole clips, and the gap between the two fills, are what this
measures. Results: ``benchmarks/RESULTS.md``.

Exit code: 0 done; 2 bad arguments, data or model (one ``error: ...`` line).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from tfbreath import data  # noqa: E402
from tfbreath.audio import load_audio  # noqa: E402
from tfbreath.classifier import load_classifier, window  # noqa: E402
from tfbreath.console import OneLineParser  # noqa: E402
from tfbreath.errors import EXIT_OK, reported  # noqa: E402
from tfbreath.evaluation import THRESHOLD  # noqa: E402
from tfbreath.run_folder import DATA_ENV  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "breath"
DEFAULT_EVERY = 4
DEFAULT_FRACTIONS = (0.95, 0.9, 0.75, 0.6, 0.5, 0.3)


def zeros(piece: np.ndarray, clip: int) -> np.ndarray:
    """``piece`` followed by zeros up to ``clip`` samples. ``[n] -> [clip]``"""
    return np.pad(piece, (0, clip - len(piece)))


def repeat(piece: np.ndarray, clip: int) -> np.ndarray:
    """``piece`` repeated end to end to ``clip`` samples: the package's own fill. ``[n] -> [clip]``"""
    return window(piece, 0, clip)


FILLS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"zeros": zeros, "repeat": repeat}


def _row(name: str, probabilities: np.ndarray, whole: np.ndarray, labels: np.ndarray) -> dict:
    predicted = probabilities >= THRESHOLD
    return {"fill": name, "accuracy": float(np.mean(predicted == labels)),
            "flips": int(np.sum(predicted != (whole >= THRESHOLD))), "mean_p": float(np.mean(probabilities))}


def measure(classifier, waveforms: np.ndarray, labels: np.ndarray, fractions) -> list[dict]:
    """One row for the whole clips, then one per fraction and fill."""
    clip = classifier.num_samples
    whole = classifier(waveforms)
    rows = [{"fraction": 1.0, **_row("whole", whole, whole, labels)}]
    for fraction in fractions:
        kept = int(round(fraction * clip))
        for name, fill in FILLS.items():
            filled = np.stack([fill(w[:kept], clip) for w in waveforms])
            rows.append({"fraction": fraction, **_row(name, classifier(filled), whole, labels)})
    return rows


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, help="run folder, .keras or .tflite (default: the shipped model)")
    parser.add_argument("--data", type=Path, help=f"Kaggle-layout folder (default ${DATA_ENV}, else {DEFAULT_DATA})")
    parser.add_argument("--every", type=int, default=DEFAULT_EVERY, help="use every N-th labelled clip")
    parser.add_argument("--fractions", type=float, nargs="+", default=DEFAULT_FRACTIONS,
                        help="the part of a clip kept, each in (0, 1)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    return parser


def run(args: argparse.Namespace) -> int:
    data_dir = args.data or Path(os.environ.get(DATA_ENV, DEFAULT_DATA))
    started = time.monotonic()
    examples = data.read_kaggle_train(data_dir)
    classifier = load_classifier(args.model)
    files, labels = examples.files[::args.every], examples.labels[::args.every].astype(bool)
    waveforms = np.stack([load_audio(f, classifier.sample_rate, classifier.clip_s) for f in files])
    rows = measure(classifier, waveforms, labels, args.fractions)
    print(f"model: {classifier.description}; {len(files)} clips (every {args.every}-th of {data_dir / 'train.csv'})")
    print("| kept | fill | accuracy | label changes vs whole | mean P(exhale) |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['fraction']:.2f} | {row['fill']} | {row['accuracy']:.3f} | {row['flips']} of {len(files)} "
              f"| {row['mean_p']:.3f} |")
    print(f"{time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"model": classifier.description, "clips": len(files), "rows": rows}, indent=1))
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.every < 1:
        parser.error(f"--every must be >= 1, got {args.every}")
    if not all(0.0 < f < 1.0 for f in args.fractions):
        parser.error(f"--fractions must each be in (0, 1), got {args.fractions}")
    return reported(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
