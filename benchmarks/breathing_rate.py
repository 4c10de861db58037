"""Breathing phase timelines and rates on long recordings with known phases, raw vs smoothed.

    python benchmarks/breathing_rate.py [--data ../shared/data/breath] [--icbhi ../shared/data/icbhi_sample]
        [--model PATH | --run RUN] [--recordings 20] [--breaths 8] [--hop 0.5] [--rate-bpm LOW HIGH]
        [--seed 0] [--json OUT.json]

Recordings are built with known phases, breath after breath (inhale then exhale):

- ``clips``: every inhale is 2 consecutive labelled 1-s inhale clips, every exhale 3 exhale
  clips (12 breaths/min); ``clips, varied``: 1-2 inhale and 2-3 exhale clips per breath, drawn
  at random. Two sets lie outside the decoder's typical rate range (12-20/min, its
  ``TimelineConfig()`` default), to show what its rate prior does there: ``clips, fast``, 1-s
  inhales and 1-s exhales (30/min), and ``clips, slow``, 3-s inhales and 4-s exhales (8.6/min). A recording's clips come from neighbouring
  sessions (each label's clips sorted by session name and read on from a random place), so the
  clips of one session follow each other where it has them;
- ``synthetic`` and ``synthetic, varied``: the same durations, each phase one piece of
  ``tfbreath.synthetic``'s inhale/exhale-like noise as long as the phase, one band and gain per
  recording.

Which model and which clips: with ``--run RUN`` (a K-fold run of ``python -m tfbreath.fit``),
recording ``r`` takes clips of fold ``r mod K``'s held-out sessions only and is classified by
that fold's model (``fold_<k>/ensemble.keras``, else the fold's one ``.keras``): no clip was
seen by its model. A pooled-member run takes about 80 s on 2 cores:
``python -m tfbreath.fit --pipeline pipelines/breath_phase_cpu.toml --data ../shared/data/breath
--folds 5 --models pooled --no-refit --out RUN``. Otherwise the model is ``--model`` or predict's
default, the shipped one, which was refit on all 3,200 labelled clips: its ``clips`` rows smooth
the output of a classifier that has seen those clips (an optimistic window accuracy).

Each recording is classified as ``python -m tfbreath.predict --hop`` does (``tfbreath.recording``'s
windows, batches and ``smooth``); a window's truth is the phase of most of its samples (a window
half inhale, half exhale is left out of the accuracy). Per set: the window accuracy of the raw
(P >= 0.5) and smoothed phases, the median breathing-rate error ``|rate - true| / true``, both rates
counted alike (``tfbreath.timeline.summarize``; a recording without a rate, too short or with one
phase the classifier never shows, counts as 100 %), and the median signed error of the smoothed
rate (> 0: too many breaths). The decoder runs with its defaults (``TimelineConfig()``;
``--rate-bpm`` changes its rate prior), no parameter fitted to these recordings; but its
per-recording tempo with a 12-20/min rate prior was added after this benchmark had shown the
fixed-tempo prior's high bias (README, "Breathing rate and I:E ratio"), and the ``clips`` sets'
12-15/min lie inside that range: the fast and slow sets show the other side.

ICBHI (``--icbhi``): each recording's annotated cycle starts (a cycle is an inhale and an
exhale) against the predicted inhale onsets (exhale -> inhale changes) inside the annotated
span. A start is found when an onset lies within ``TOLERANCE_S`` (one-to-one, nearest pairs
first); starts before ``TOLERANCE_S`` (the recording's own start) are left out. Precision,
recall and F1 over all recordings, the F1 of as many uniformly random onsets in the same spans
(chance, mean of ``CHANCE_DRAWS``), and per recording the annotated rate (first to last cycle
start) next to the predicted ones ("-": none, as for ``predict``'s summary).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import tensorflow as tf

from tfbreath import data, synthetic, timeline
from tfbreath.audio import load_audio
from tfbreath.classifier import Classifier, load_classifier
from tfbreath.config import ENSEMBLE
from tfbreath.evaluation import THRESHOLD
from tfbreath.icbhi.reader import read_annotations
from tfbreath.recording import Recording, breathing, classify, smooth, window_centres_s, window_starts
from tfbreath.run_folder import MODEL_SUFFIX, RunFolder

STEADY, VARIED, FAST, SLOW = ((2,), (3,)), ((1, 2), (2, 3)), ((1,), (1,)), ((3,), (4,))
"""Per breath, the inhale's and the exhale's length in whole clips (seconds), or the choices one
is drawn from: the issue's 2-s inhale and 3-s exhale (12 breaths/min); varied 3-5 s breaths; 30
and 8.6 breaths/min, outside the decoder's typical rate range."""
SETS = (("clips", STEADY), ("clips, varied", VARIED), ("synthetic", STEADY), ("synthetic, varied", VARIED),
        ("clips, fast", FAST), ("clips, slow", SLOW))
DEFAULT_RECORDINGS = 20
"""Per set: 20 recordings, four per fold of a 5-fold run."""
DEFAULT_BREATHS = 8
"""Eight breaths: 40-s recordings (79 windows each at the default hop) in the fixed sets."""
DEFAULT_HOP_S = 0.5
TOLERANCE_S = 0.5
"""An annotated ICBHI cycle start is found when a predicted onset is this close: one hop, the
decoder's resolution (it places a change halfway between two window centres)."""
CHANCE_DRAWS = 200
BATCH = 64
FULL_ERROR = 1.0
"""The rate error of a recording without a rate (fewer than two inhale onsets)."""
INHALE, EXHALE, TIE = 0, 1, -1
PERCENT = 100.0


# ---------------------------------------------------------------------------------------------
# Recordings with known phases
# ---------------------------------------------------------------------------------------------
def breath_plan(rng: np.random.Generator, breaths: int, lengths: tuple[tuple[int, ...], tuple[int, ...]]
                ) -> list[tuple[int, int]]:
    """Inhale and exhale length of every breath, in whole clips: ``lengths`` (one of ``SETS``'),
    drawn at random per breath where it gives a choice."""
    inhale, exhale = lengths
    if len(inhale) == len(exhale) == 1:
        return [(inhale[0], exhale[0])] * breaths
    return [(int(rng.choice(inhale)), int(rng.choice(exhale))) for _ in range(breaths)]


def phase_labels(plan: list[tuple[int, int]], clip: int) -> np.ndarray:
    """Per sample: 0 inhale, 1 exhale. ``-> [clips in plan * clip]``"""
    return np.concatenate([np.repeat([INHALE, EXHALE], [i * clip, e * clip]) for i, e in plan])


def true_rate(plan: list[tuple[int, int]], clip_s: float) -> float:
    """Breaths per minute from the first to the last inhale onset, as ``timeline.summarize`` counts."""
    onsets = np.cumsum([0] + [i + e for i, e in plan])[:-1] * clip_s
    return timeline.SECONDS_PER_MINUTE * (len(onsets) - 1) / (onsets[-1] - onsets[0])


def clip_recording(rng: np.random.Generator, plan: list[tuple[int, int]], pool: dict[int, list[Path]],
                   rate: int) -> np.ndarray:
    """The plan's phases from labelled clips (``pool``: per label, files in session order), each
    label read on from a random place. ``-> [samples]``"""
    cursor = {label: int(rng.integers(len(files))) for label, files in pool.items()}
    pieces = []
    for inhale, exhale in plan:
        for label, count in ((INHALE, inhale), (EXHALE, exhale)):
            for _ in range(count):
                pieces.append(load_audio(pool[label][cursor[label] % len(pool[label])], rate, 1.0))
                cursor[label] += 1
    return np.concatenate(pieces)


def synthetic_recording(rng: np.random.Generator, plan: list[tuple[int, int]], rate: int, clip: int) -> np.ndarray:
    """The plan's phases as ``tfbreath.synthetic`` noise, one piece per phase. ``-> [samples]``"""
    band_shift = rng.uniform(-synthetic.BAND_JITTER, synthetic.BAND_JITTER)
    gain_db = rng.uniform(*synthetic.GAIN_RANGE_DB)
    return np.concatenate([synthetic.synthetic_clip(phase, rng, rate, n * clip, band_shift, gain_db)
                           for inhale, exhale in plan for phase, n in (("I", inhale), ("E", exhale))])


def window_truth(labels: np.ndarray, starts: np.ndarray, clip: int) -> np.ndarray:
    """Per window: the phase of most of its samples, ``TIE`` when half and half. ``[samples], [T] -> [T]``"""
    exhale = np.array([labels[s:s + clip].mean() for s in starts])
    return np.where(exhale > 0.5, EXHALE, np.where(exhale < 0.5, INHALE, TIE))


# ---------------------------------------------------------------------------------------------
# Models and clips
# ---------------------------------------------------------------------------------------------
def fold_model_file(run: RunFolder, fold: int) -> Path:
    """A fold's ensemble, else its one model."""
    ensemble = run.fold(fold).model_file(ENSEMBLE)
    if ensemble.is_file():
        return ensemble
    (only,) = sorted(run.fold(fold).path.glob(f"*{MODEL_SUFFIX}"))
    return only


def clip_pools(data_dir: Path, run: RunFolder | None) -> list[dict[int, list[Path]]]:
    """Per model, each label's clips in session order: per fold of ``run`` its held-out clips,
    else all clips."""
    examples = data.read_kaggle_train(data_dir)
    if run is None:
        folds, count = np.zeros(len(examples), np.int64), 1
    else:
        fold_of = {row["file"]: int(row["fold"]) for row in _csv_rows(run.oof_predictions)}
        folds = np.array([fold_of[f.name] for f in examples.files])
        count = int(folds.max()) + 1
    order = np.argsort([f.name for f in examples.files], kind="stable")
    return [{label: [examples.files[i] for i in order if folds[i] == k and examples.labels[i] == label]
             for label in (INHALE, EXHALE)} for k in range(count)]


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def classify_audio(classifier: Classifier, audios: dict[str, np.ndarray], hop: int,
                   config: timeline.TimelineConfig) -> list[Recording]:
    """Each audio windowed, classified and smoothed as ``predict --hop`` does."""
    clip = classifier.num_samples
    recordings = [Recording(name, Path(name), audio, window_starts(len(audio), clip, hop))
                  for name, audio in audios.items()]
    return smooth(classify(classifier, recordings, BATCH), hop, classifier.sample_rate, config)


def summaries(recording: Recording, classifier: Classifier) -> dict[str, timeline.BreathingSummary]:
    """The breathing of the raw (P >= threshold) and of the smoothed phases."""
    raw = dataclasses.replace(recording, smoothed=recording.probabilities >= THRESHOLD)
    return {"raw": breathing(raw, classifier.num_samples, classifier.sample_rate),
            "smoothed": breathing(recording, classifier.num_samples, classifier.sample_rate)}


# ---------------------------------------------------------------------------------------------
# Scores
# ---------------------------------------------------------------------------------------------
def rate_error(rate: float | None, truth: float) -> float:
    return FULL_ERROR if rate is None else abs(rate - truth) / truth


def score_set(recordings: list[Recording], labels: dict[str, np.ndarray], rates: dict[str, float],
              classifier: Classifier) -> dict:
    """Window accuracy and median rate error, raw and smoothed, over one set's recordings."""
    clip = classifier.num_samples
    correct = {"raw": 0, "smoothed": 0}
    errors = {"raw": [], "smoothed": []}
    signed = []                                                         # smoothed, recordings with a rate
    windows = ties = 0
    for r in recordings:
        truth = window_truth(labels[r.id], r.starts, clip)
        known = truth != TIE
        windows, ties = windows + int(known.sum()), ties + int((~known).sum())
        phases = {"raw": r.probabilities >= THRESHOLD, "smoothed": r.smoothed}
        for kind, summary in summaries(r, classifier).items():
            correct[kind] += int((phases[kind][known] == truth[known]).sum())
            errors[kind].append(rate_error(summary.breaths_per_min, rates[r.id]))
            if kind == "smoothed" and summary.breaths_per_min is not None:
                signed.append(summary.breaths_per_min / rates[r.id] - 1.0)
    return {"recordings": len(recordings), "windows": windows, "ties_left_out": ties,
            **{f"accuracy_{k}": correct[k] / windows for k in correct},
            **{f"median_rate_error_{k}": float(np.median(errors[k])) for k in errors},
            "median_signed_rate_error_smoothed": float(np.median(signed)) if signed else None,
            "no_rate_smoothed": int(sum(e == FULL_ERROR for e in errors["smoothed"]))}


def match_count(annotated: np.ndarray, predicted: np.ndarray, tolerance: float) -> int:
    """One-to-one matches within ``tolerance``, nearest pairs first."""
    gaps = np.abs(annotated[:, None] - predicted[None, :])                # [A, P]
    pairs = sorted(zip(*np.nonzero(gaps <= tolerance)), key=lambda ij: gaps[ij])
    used_a, used_p = set(), set()
    for i, j in pairs:
        if i not in used_a and j not in used_p:
            used_a.add(i)
            used_p.add(j)
    return len(used_a)


def f1(matched: int, predicted: int, annotated: int) -> tuple[float, float, float]:
    precision = matched / predicted if predicted else 0.0
    recall = matched / annotated if annotated else 0.0
    return precision, recall, (2 * precision * recall / (precision + recall) if matched else 0.0)


def icbhi_scores(recordings: list[Recording], starts: dict[str, np.ndarray], spans: dict[str, tuple],
                 classifier: Classifier, rng: np.random.Generator) -> dict:
    """Onset F1 (raw, smoothed, chance) over all recordings and the rates per recording."""
    clip, rate = classifier.num_samples, classifier.sample_rate
    totals = {"raw": [0, 0], "smoothed": [0, 0]}                          # matched, predicted
    annotated_total, chance, rows = 0, np.zeros((CHANCE_DRAWS, 2)), []
    for r in recordings:
        low, high = spans[r.id]
        found = starts[r.id][starts[r.id] >= TOLERANCE_S]
        annotated_total += len(found)
        centres, duration = window_centres_s(r, clip, rate), len(r.audio) / rate
        row = {"recording": r.id, "cycles": len(starts[r.id]),
               "annotated_rate": timeline.SECONDS_PER_MINUTE * (len(starts[r.id]) - 1)
               / (starts[r.id][-1] - starts[r.id][0])}
        for kind, phases in (("raw", r.probabilities >= THRESHOLD), ("smoothed", r.smoothed)):
            onsets = np.array(timeline.inhale_onsets_s(timeline.phase_spans_s(phases, centres, duration)))
            onsets = onsets[(onsets >= low - TOLERANCE_S) & (onsets <= high + TOLERANCE_S)]
            matched = match_count(found, onsets, TOLERANCE_S)
            totals[kind][0] += matched
            totals[kind][1] += len(onsets)
            row[f"onsets_{kind}"], row[f"matched_{kind}"] = len(onsets), matched
            if kind == "smoothed":
                for draw in range(CHANCE_DRAWS):
                    random = rng.uniform(low - TOLERANCE_S, high + TOLERANCE_S, len(onsets))
                    chance[draw] += (match_count(found, random, TOLERANCE_S), len(onsets))
        for kind, summary in summaries(r, classifier).items():
            row[f"rate_{kind}"] = summary.breaths_per_min
            row[f"rate_error_{kind}"] = rate_error(summary.breaths_per_min, row["annotated_rate"])
        rows.append(row)
    result = {"annotated_starts": annotated_total, "rows": rows,
              "chance_f1": float(np.mean([f1(int(m), int(p), annotated_total)[2] for m, p in chance]))}
    for kind, (matched, predicted) in totals.items():
        result[f"precision_{kind}"], result[f"recall_{kind}"], result[f"f1_{kind}"] = f1(
            matched, predicted, annotated_total)
        result[f"median_rate_error_{kind}"] = float(np.median([row[f"rate_error_{kind}"] for row in rows]))
    return result


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def _percent(value: float | None) -> str:
    return "-" if value is None else f"{PERCENT * value:+.1f} %"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def print_tables(sets: dict[str, dict], icbhi: dict | None) -> None:
    print("| set | recordings | windows | accuracy raw | accuracy smoothed | median rate error raw "
          "| median rate error smoothed | median signed error smoothed | no rate (smoothed) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, s in sets.items():
        print(f"| {name} | {s['recordings']} | {s['windows']} | {s['accuracy_raw']:.3f} | "
              f"{s['accuracy_smoothed']:.3f} | {PERCENT * s['median_rate_error_raw']:.1f} % | "
              f"{PERCENT * s['median_rate_error_smoothed']:.1f} % | {_percent(s['median_signed_rate_error_smoothed'])} | "
              f"{s['no_rate_smoothed']} |")
    if icbhi is None:
        return
    print(f"\nICBHI: {icbhi['annotated_starts']} annotated cycle starts, onsets within ±{TOLERANCE_S:g} s")
    print("| phases | precision | recall | F1 | median rate error |")
    print("|---|---|---|---|---|")
    for kind in ("raw", "smoothed"):
        print(f"| {kind} | {icbhi[f'precision_{kind}']:.3f} | {icbhi[f'recall_{kind}']:.3f} | "
              f"{icbhi[f'f1_{kind}']:.3f} | {PERCENT * icbhi[f'median_rate_error_{kind}']:.1f} % |")
    print(f"| random onsets (chance, as many as smoothed) | | | {icbhi['chance_f1']:.3f} | |")
    print("\n| recording | cycles | annotated rate | rate raw | rate smoothed | starts found (smoothed) |")
    print("|---|---|---|---|---|---|")
    for row in icbhi["rows"]:
        print(f"| {row['recording']} | {row['cycles']} | {row['annotated_rate']:.1f} | {_rate(row['rate_raw'])} | "
              f"{_rate(row['rate_smoothed'])} | {row['matched_smoothed']} of {row['onsets_smoothed']} onsets |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/breath"))
    parser.add_argument("--icbhi", type=Path, default=Path("../shared/data/icbhi_sample"))
    models = parser.add_mutually_exclusive_group()
    models.add_argument("--model", type=Path, help="any model predict takes (default: the shipped one)")
    models.add_argument("--run", type=Path, help="a K-fold run: each recording from one fold's held-out sessions")
    parser.add_argument("--recordings", type=int, default=DEFAULT_RECORDINGS, help="per set")
    parser.add_argument("--breaths", type=int, default=DEFAULT_BREATHS, help="per recording")
    parser.add_argument("--hop", type=float, default=DEFAULT_HOP_S, help="most seconds between windows")
    parser.add_argument("--rate-bpm", type=float, nargs=2, metavar=("LOW", "HIGH"), default=timeline.TYPICAL_RATE_BPM,
                        help="the decoder's typical breathing rate, as predict's --rate-bpm (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # as predict: tfio's resampler warns about retracing on every new length
    began = time.perf_counter()

    run = None if args.run is None else RunFolder(args.run)
    pools = clip_pools(args.data, run)
    classifiers = ([load_classifier(args.model)] if run is None else
                   [load_classifier(fold_model_file(run, k), run.pipeline_file) for k in range(len(pools))])
    first = classifiers[0]
    rate, clip = first.sample_rate, first.num_samples
    hop = int(round(args.hop * rate))
    config = timeline.TimelineConfig(rate_low_bpm=args.rate_bpm[0], rate_high_bpm=args.rate_bpm[1])
    print(f"model: {first.description}{f' (and {len(classifiers) - 1} more folds)' if run else ''}; "
          f"hop {args.hop:g} s; prior {config}")

    sets = {}
    for index, (name, lengths) in enumerate(SETS):
        labels, rates, by_model = {}, {}, [{} for _ in classifiers]
        for r in range(args.recordings):
            rng = np.random.default_rng([args.seed, index, r])
            plan = breath_plan(rng, args.breaths, lengths)
            model = r % len(classifiers)
            key = f"{name} {r}"
            by_model[model][key] = (clip_recording(rng, plan, pools[model], rate) if name.startswith("clips")
                                    else synthetic_recording(rng, plan, rate, clip))
            labels[key], rates[key] = phase_labels(plan, clip), true_rate(plan, clip / rate)
        recordings = [rec for m, audios in enumerate(by_model) if audios
                      for rec in classify_audio(classifiers[m], audios, hop, config)]
        sets[name] = score_set(recordings, labels, rates, first)
        print(f"{name}: done after {time.perf_counter() - began:.0f} s", flush=True)

    icbhi = None
    if args.icbhi.is_dir():
        wavs = sorted(args.icbhi.glob("*.wav"))
        cycles = {w.name: read_annotations(w.with_suffix(".txt")) for w in wavs}
        starts = {name: np.array([c.start_s for c in cs]) for name, cs in cycles.items()}
        spans = {name: (cs[0].start_s, cs[-1].end_s) for name, cs in cycles.items()}
        recordings = classify_audio(first, {w.name: load_audio(w, rate, None) for w in wavs}, hop, config)
        icbhi = icbhi_scores(recordings, starts, spans, first, np.random.default_rng(args.seed))
    elapsed = time.perf_counter() - began

    print()
    print_tables(sets, icbhi)
    machine = f"{platform.machine()}, {os.cpu_count()} CPU(s), {platform.python_version()}"
    print(f"\n{elapsed:.0f} s on {machine}")
    if args.json:
        args.json.write_text(json.dumps({"model": first.description, "run": None if run is None else str(args.run),
                                         "hop_s": args.hop, "prior": dataclasses.asdict(config), "sets": sets,
                                         "icbhi": icbhi, "seconds": round(elapsed, 1), "machine": machine},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
