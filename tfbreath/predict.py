"""``python -m tfbreath.predict``: P(exhale) for WAV files, long recordings or a Kaggle test set.

    python -m tfbreath.predict [--model PATH] INPUT... [--out FILE.csv] [--threshold T]
                               [--hop SECONDS] [--plot DIR] [--summary FILE.csv]
                               [--inhale-s LOW HIGH] [--exhale-s LOW HIGH] [--rate-bpm LOW HIGH]
                               [--batch-size N] [--pipeline FILE]
    python -m tfbreath.predict [--model PATH] --kaggle TEST_CSV [--out submission.csv]

``INPUT`` is WAV files or folders of them (searched recursively), at any rate and bit depth
the decoder takes. ``PATH`` is a run folder of ``python -m tfbreath.fit``, a ``.keras`` file
(waveform- or feature-input) or a ``.tflite`` file written by ``python -m tfbreath.export``,
loaded by ``tfbreath.classifier.load_classifier``, whose docstring says how each finds its
pipeline and sample rate (``--pipeline FILE`` gives them to a model that neither carries its own
nor has ``pipeline.toml`` beside it). A cut or corrupt file is an error, not a crash.

Without ``--model``, the pretrained model that installs with the package is used
(``tfbreath.pretrained``: ``saved_models/breath_phase/`` of the repository; its ``ensemble.tflite``
if present, else its ``ensemble.keras``).

The CSV (``--out``, else stdout) has one row per file, ``ID,Target,Probability,Padded``: the
file name, ``E`` when P(exhale) >= ``--threshold`` (default 0.5) else ``I``, P(exhale), and
``True`` when the file holds less than half a clip of audio
(``tfbreath.recording.MIN_AUDIO_FRACTION``), so the model saw mostly repeats of it (also warned
on stderr, with the file's duration). If any recording is longer than one clip, every file is
classified window by window instead (``tfbreath.recording``): clip-long windows at most ``--hop``
seconds apart (default: half a clip), evenly spread from the recording's start to its end, rows
``ID,start_s,end_s,Target,Probability,Padded,Smoothed`` (a short file gives one window, its audio repeated
to fill it). ``Target`` is the window's own phase; ``Smoothed`` is its phase in the recording's most
probable phase sequence (``tfbreath.timeline``: a two-state hidden semi-Markov model whose
duration prior puts 80 % of inhales in ``--inhale-s LOW HIGH``, default 0.8 2.0 s, and of
exhales in ``--exhale-s LOW HIGH``, default 1.0 3.0 s, both stretched to the recording's own
tempo, chosen under a prior that puts 80 % of breathing rates in ``--rate-bpm LOW HIGH``,
default 12 20 breaths/min). ``--plot DIR`` then draws each
recording's smoothed phase timeline, its breathing rate in the title, to ``DIR/<file name>.png``.

Windowed runs also write a summary, one row per recording,
``ID,duration_s,breaths_per_min,ie_ratio,n_inhale,n_exhale`` (``tfbreath.timeline.summarize``:
one breath is an inhale followed by an exhale, the rate counted between the first and last
inhale onsets; the I:E ratio is inhale over exhale time of the phases seen whole; the counts are
of smoothed phases), to ``--summary FILE.csv``, by default ``<stem>_summary.csv`` beside
``--out``. With the CSV on stdout and no ``--summary``, no summary is written (said on stderr).
A recording too short to show a whole breath (two inhale onsets; e.g. a 1-s file among long
ones) or a whole inhale and exhale, or whose windows show one phase only (the classifier hears
no inhale, say: ``timeline.MAX_UNSUPPORTED_FRACTION``), keeps its row, with the rate or ratio
empty and a note on stderr; without any recording longer than one clip there is no timeline, so no summary either
(said on stderr).

``--kaggle TEST_CSV`` writes the competition's submission instead: ``ID,Target`` in the CSV's
order and spelling, the WAVs read from ``test/`` beside it, each as one clip (trimmed or padded,
as in training; a mostly padded one is warned about on stderr only).

``--out``, ``--plot`` and the summary path are checked before any work. The timelines appear in
``DIR`` together or not at all, the summary after them, and the CSV is written last: a run that
fails leaves no CSV.

Messages go to stderr, each one line. A file that cannot be decoded, an empty one too, is
reported (``skipped <file>: <problem>``) and skipped (it has no row, in a summary or a
submission either).
Exit code: 0 every file predicted; 1 some or all skipped (nothing written if all);
2 bad arguments, model or output path (``error: <file or value>: <problem>``; no CSV).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfbreath import artifacts, data, timeline  # noqa: E402
from tfbreath.classifier import (DEFAULT_MODEL_DIR, EXHALE, INHALE, PHASE_COLOURS, PROBABILITY_DECIMALS,  # noqa: E402
                                 Classifier, decode, load_classifier, target)
from tfbreath.config import ConfigError  # noqa: E402
from tfbreath.console import OneLineParser, add_verbose_argument  # noqa: E402
from tfbreath.errors import EXIT_OK, EXIT_SKIPPED, TfbreathError, reported  # noqa: E402
from tfbreath.evaluation import THRESHOLD  # noqa: E402
from tfbreath.recording import (MIN_AUDIO_FRACTION, ONE_CLIP, Recording, breathing, classify,  # noqa: E402
                                is_padded, sample_probability, smooth, window_centres_s, window_starts,
                                window_step)
from tfbreath.run_folder import MODEL_SUFFIX, PIPELINE_FILE, TFLITE_SUFFIX  # noqa: E402

KAGGLE_CSV = "test.csv"

DEFAULT_BATCH_SIZE = 64
DEFAULT_HOP_CLIPS = 0.5
"""Default hop between windows, in clip lengths."""

TIME_DECIMALS = 3

CLIP_COLUMNS = ("ID", "Target", "Probability", "Padded")
WINDOW_COLUMNS = ("ID", "start_s", "end_s", "Target", "Probability", "Padded", "Smoothed")
SUMMARY_COLUMNS = ("ID", "duration_s", "breaths_per_min", "ie_ratio", "n_inhale", "n_exhale")
SUMMARY_SUFFIX = "_summary"
"""The default summary is ``<stem of --out>_summary.csv`` beside ``--out``."""
RATE_DECIMALS = 2
KAGGLE_COLUMNS = ("ID", "Target")

SPAN_ALPHA = 0.15
FIGURE_SIZE = (12, 5)
WAVEFORM_HEIGHT_RATIO = 2
"""The waveform panel is this many times taller than the probability panel."""
LEGEND_OUTSIDE = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0), "fontsize": 8}


class PredictError(TfbreathError, RuntimeError):
    """Bad arguments, inputs or outputs: reported as one ``error:`` line, exit code 2 (an unusable
    model is a ``classifier.ClassifierError``, reported alike)."""


# ---------------------------------------------------------------------------------------------
# CSV rows
# ---------------------------------------------------------------------------------------------
def _probability(p: float) -> str:
    return f"{p:.{PROBABILITY_DECIMALS}f}"


def _seconds(samples: int, sample_rate: int) -> str:
    return f"{samples / sample_rate:.{TIME_DECIMALS}f}"


def clip_rows(recordings: Sequence[Recording], clip: int, threshold: float) -> list[list[str]]:
    return [[r.id, target(r.probabilities[0], threshold), _probability(r.probabilities[0]),
             str(is_padded(r, clip))] for r in recordings]


def _phase(exhale: bool) -> str:
    return EXHALE if exhale else INHALE


def window_rows(recordings: Sequence[Recording], clip: int, sample_rate: int,
                threshold: float) -> list[list[str]]:
    """One row per window, its own phase and its smoothed one; a window past the end of a short
    recording stops at its end."""
    return [[r.id, _seconds(start, sample_rate), _seconds(min(start + clip, len(r.audio)), sample_rate),
             target(p, threshold), _probability(p), str(is_padded(r, clip)), _phase(smoothed)]
            for r in recordings for start, p, smoothed in zip(r.starts, r.probabilities, r.smoothed)]


def _optional(value: float | None) -> str:
    """A rate or ratio, empty when the recording shows none."""
    return "" if value is None else f"{value:.{RATE_DECIMALS}f}"


def summary_rows(recordings: Sequence[Recording], summaries: Sequence[timeline.BreathingSummary]) -> list[list[str]]:
    return [[r.id, f"{s.duration_s:.{TIME_DECIMALS}f}", _optional(s.breaths_per_min), _optional(s.ie_ratio),
             str(s.n_inhale), str(s.n_exhale)] for r, s in zip(recordings, summaries)]


def kaggle_rows(recordings: Sequence[Recording], threshold: float) -> list[list[str]]:
    return [[r.id, target(r.probabilities[0], threshold)] for r in recordings]


# ---------------------------------------------------------------------------------------------
# Timeline plot
# ---------------------------------------------------------------------------------------------
def _rate_words(summary: timeline.BreathingSummary) -> str:
    """The plot title's breathing: rate and I:E ratio, or why there is none."""
    if summary.unsupported:
        return "no rate (the windows show one phase only)"
    if summary.breaths_per_min is None:
        return "no whole breath"
    ratio = "" if summary.ie_ratio is None else f", I:E {summary.ie_ratio:.{RATE_DECIMALS}f}"
    return f"{summary.breaths_per_min:.1f} breaths/min{ratio}"


def plot_timeline(recording: Recording, classifier: Classifier, threshold: float, hop: int, path: Path) -> Path:
    """Waveform coloured by smoothed phase over phase-coloured spans, the rate in the title, and the
    P(exhale) curves below."""
    rate, clip = classifier.sample_rate, classifier.num_samples
    probability = sample_probability(recording, clip)
    time = np.arange(len(recording.audio)) / rate
    centres = window_centres_s(recording, clip, rate)
    spans = timeline.phase_spans_s(recording.smoothed, centres, len(recording.audio) / rate)
    phase = np.zeros(len(time), bool)
    figure, (wave_ax, prob_ax) = plt.subplots(2, 1, figsize=FIGURE_SIZE, sharex=True,
                                              gridspec_kw={"height_ratios": [WAVEFORM_HEIGHT_RATIO, 1]})
    for start, end, is_exhale in spans:
        phase[(time >= start) & (time < end)] = is_exhale
        for ax in (wave_ax, prob_ax):
            ax.axvspan(start, end, color=PHASE_COLOURS[_phase(is_exhale)], alpha=SPAN_ALPHA, linewidth=0)
    for letter, mask in ((INHALE, ~phase), (EXHALE, phase)):
        wave_ax.plot(time, np.where(mask, recording.audio, np.nan), color=PHASE_COLOURS[letter], linewidth=0.5,
                     label=f"{data.LABEL_WORDS[letter]} ({letter}), smoothed")
    wave_ax.set(ylabel="amplitude",
                title=f"{recording.path.name}: {_rate_words(breathing(recording, clip, rate))}; smoothed phase "
                      f"of {len(recording.starts)} window(s) of {clip / rate:g} s every "
                      f"{window_step(recording.starts, hop) / rate:.3g} s")
    wave_ax.legend(**LEGEND_OUTSIDE)
    prob_ax.plot(time, probability, color="black", linewidth=1, label="mean over windows")
    prob_ax.plot(centres, recording.probabilities, "o", color="grey", markersize=3, label="window (at its centre)")
    prob_ax.axhline(threshold, color="red", linestyle="--", linewidth=0.8, label=f"threshold {threshold:g}")
    prob_ax.set(xlabel="time (s)", ylabel="P(exhale)", ylim=(0, 1), xlim=(0, len(recording.audio) / rate))
    prob_ax.legend(**LEGEND_OUTSIDE)
    return artifacts.save_figure(figure, path)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m tfbreath.predict", description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", nargs="*", metavar="INPUT", help="WAV files or folders of WAV files")
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help=f"run folder, {MODEL_SUFFIX} or {TFLITE_SUFFIX} (default: {DEFAULT_MODEL_DIR})")
    parser.add_argument("--out", type=Path, metavar="FILE.csv", help="output CSV (default: stdout)")
    parser.add_argument("--threshold", type=float, default=THRESHOLD, metavar="T",
                        help=f"P(exhale) at or above which the target is E (default {THRESHOLD:g})")
    parser.add_argument("--kaggle", type=Path, metavar="TEST_CSV",
                        help=f"write a submission (ID,Target) for this {KAGGLE_CSV} and the test/ folder beside it")
    parser.add_argument("--hop", type=float, metavar="SECONDS",
                        help="hop between windows of long recordings (default: half a clip)")
    parser.add_argument("--plot", type=Path, metavar="DIR", help="phase timeline PNG per windowed recording")
    parser.add_argument("--summary", type=Path, metavar="FILE.csv",
                        help=f"breathing rate and I:E ratio per windowed recording (default: "
                             f"<stem>{SUMMARY_SUFFIX}.csv beside --out; none when the CSV goes to stdout)")
    parser.add_argument("--inhale-s", type=float, nargs=2, metavar=("LOW", "HIGH"), default=timeline.TYPICAL_INHALE_S,
                        help="typical inhale duration, the central 80 %% of the smoothing's prior "
                             "(default %(default)s s)")
    parser.add_argument("--exhale-s", type=float, nargs=2, metavar=("LOW", "HIGH"), default=timeline.TYPICAL_EXHALE_S,
                        help="typical exhale duration (default %(default)s s)")
    parser.add_argument("--rate-bpm", type=float, nargs=2, metavar=("LOW", "HIGH"), default=timeline.TYPICAL_RATE_BPM,
                        help="typical breathing rate, the central 80 %% of the prior that chooses each recording's "
                             "tempo (default %(default)s breaths/min)")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH_SIZE, metavar="N",
                        help=f"clips per model call (default {DEFAULT_BATCH_SIZE})")
    parser.add_argument("--pipeline", type=Path, metavar="FILE",
                        help=f"pipeline TOML for a {TFLITE_SUFFIX} or feature-input {MODEL_SUFFIX} "
                             f"(default: {PIPELINE_FILE} beside the model)")
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    if bool(args.inputs) == bool(args.kaggle):
        parser.error("give WAV inputs or --kaggle TEST_CSV (one of the two)")
    if args.kaggle and (args.plot or args.hop or args.summary):
        parser.error("--plot, --hop and --summary apply to WAV inputs, not to --kaggle (one clip per file)")
    if args.summary is not None and args.out is not None and args.summary.resolve() == args.out.resolve():
        parser.error(f"--summary and --out name the same file, {args.out}")
    if not 0.0 <= args.threshold <= 1.0:
        parser.error(f"--threshold must be in [0, 1], got {args.threshold:g}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.hop is not None and not (math.isfinite(args.hop) and args.hop > 0):
        parser.error(f"--hop must be a positive number of seconds, got {args.hop:g}")
    return args


def _hop_samples(hop_s: float | None, classifier: Classifier) -> int:
    """``--hop`` in samples: at least one, at most one clip (windows must not leave gaps)."""
    clip = classifier.num_samples
    if hop_s is None:
        return int(round(clip * DEFAULT_HOP_CLIPS))
    hop = int(round(hop_s * classifier.sample_rate))
    if not 1 <= hop <= clip:
        raise PredictError(f"--hop must be at most one clip ({classifier.clip_s:g} s) and at least "
                           f"one sample, got {hop_s:g} s")
    return hop


def _inputs(args: argparse.Namespace) -> list[tuple[str, Path]]:
    """The CSV IDs (file names, the paths of files whose names clash, or the competition's IDs with
    ``--kaggle``) and WAV files, in order."""
    if not args.kaggle:
        paths = data.collect_wav_files(args.inputs)
        names = Counter(path.name for path in paths)
        return [(path.name if names[path.name] == 1 else path.as_posix(), path) for path in paths]
    if args.kaggle.name != KAGGLE_CSV:
        raise PredictError(f"{args.kaggle}: --kaggle takes the competition's {KAGGLE_CSV} (with test/ beside it)")
    ids, examples = data.read_kaggle_test(args.kaggle.parent)
    return list(zip(ids, examples.files))


def _write(text: str, out: Path | None, what: str = "the CSV") -> None:
    if out is None:
        sys.stdout.write(text)
        return
    try:
        artifacts.write_text(out, text)
    except OSError as err:
        raise PredictError(f"{out}: cannot write {what} ({err.strerror})") from None
    print(f"wrote {out}", file=sys.stderr)


def _timeline_config(args: argparse.Namespace) -> timeline.TimelineConfig:
    """The smoothing's priors from ``--inhale-s``, ``--exhale-s`` and ``--rate-bpm``."""
    try:
        return timeline.TimelineConfig(inhale_low_s=args.inhale_s[0], inhale_high_s=args.inhale_s[1],
                                       exhale_low_s=args.exhale_s[0], exhale_high_s=args.exhale_s[1],
                                       rate_low_bpm=args.rate_bpm[0], rate_high_bpm=args.rate_bpm[1])
    except ConfigError as err:
        raise PredictError(f"--inhale-s/--exhale-s/--rate-bpm: {err}") from None


def _summary_path(args: argparse.Namespace) -> Path | None:
    """``--summary``, else ``<stem>_summary.csv`` beside ``--out``; ``None`` with neither (or ``--kaggle``)."""
    if args.kaggle is not None or args.summary is not None:
        return args.summary
    return None if args.out is None else args.out.with_name(f"{args.out.stem}{SUMMARY_SUFFIX}.csv")


def _note_incomplete(recordings: Sequence[Recording], summaries: Sequence[timeline.BreathingSummary]) -> None:
    """One stderr line per recording whose rate or I:E ratio stays empty, saying why."""
    reasons = {"breaths_per_min": "fewer than two inhale onsets (no whole breath)",
               "ie_ratio": "no inhale and exhale seen whole"}
    for recording, summary in zip(recordings, summaries):
        empty = [name for name in reasons if getattr(summary, name) is None]
        if summary.unsupported:
            print(f"note: {recording.path}: breaths_per_min and ie_ratio left empty: its windows show one phase "
                  f"only (most smoothed spans of the other run against their P(exhale)), so its breaths would "
                  f"come from the smoothing's duration prior, not from the audio", file=sys.stderr)
        elif empty:
            print(f"note: {recording.path}: {' and '.join(empty)} left empty: its {summary.duration_s:.3f} s "
                  f"show {' and '.join(reasons[name] for name in empty)}", file=sys.stderr)


def _write_summary(path: Path | None, explicit: bool, recordings: Sequence[Recording],
                   classifier: Classifier) -> None:
    """The breathing summary of the windowed ``recordings`` to ``path``; a stderr note when there is
    none to write (no windowed recording, or the CSV on stdout and no ``--summary``)."""
    if not recordings:
        if explicit:
            print(f"--summary: no recording is longer than one clip ({classifier.clip_s:g} s), so none has a "
                  f"breathing timeline; no summary written", file=sys.stderr)
        return
    if path is None:
        print("note: the CSV goes to stdout; pass --summary FILE.csv for the breathing summary", file=sys.stderr)
        return
    summaries = [breathing(r, classifier.num_samples, classifier.sample_rate) for r in recordings]
    _note_incomplete(recordings, summaries)
    _write(artifacts.format_csv(SUMMARY_COLUMNS, summary_rows(recordings, summaries)), path, "the summary")


def _csv_text(recordings: Sequence[Recording], kaggle: bool, windowed: bool, classifier: Classifier,
              threshold: float) -> str:
    """The submission, the window table or the clip table, as CSV text."""
    if kaggle:
        return artifacts.format_csv(KAGGLE_COLUMNS, kaggle_rows(recordings, threshold))
    if windowed:
        rows = window_rows(recordings, classifier.num_samples, classifier.sample_rate, threshold)
        return artifacts.format_csv(WINDOW_COLUMNS, rows)
    return artifacts.format_csv(CLIP_COLUMNS, clip_rows(recordings, classifier.num_samples, threshold))


def _recordings(inputs: Sequence[tuple[str, Path]], audios: Sequence[np.ndarray | None], windowed: bool,
                clip: int, hop: int) -> list[Recording]:
    """Each decoded file with its windows: at most ``hop`` samples apart if ``windowed``
    (``window_starts``), else one clip."""
    return [Recording(clip_id, path, audio, window_starts(len(audio), clip, hop) if windowed else ONE_CLIP)
            for (clip_id, path), audio in zip(inputs, audios) if audio is not None]


def _warn_padded(recordings: Sequence[Recording], classifier: Classifier) -> None:
    """One stderr line per recording shorter than half a clip, so mostly repeats (``Padded`` in the CSV)."""
    for recording in recordings:
        if is_padded(recording, classifier.num_samples):
            print(f"warning: {recording.path}: only {len(recording.audio) / classifier.sample_rate:.3f} s "
                  f"of audio, less than {MIN_AUDIO_FRACTION:.0%} of a {classifier.clip_s:g}-s clip; its "
                  f"prediction rests mostly on repeats of it", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    """Check the outputs, load, decode, classify, smooth, draw, summarise, write; return the exit
    code (a ``TfbreathError`` for usage problems). The CSV comes last: it exists only if all else did."""
    if args.out is not None:
        artifacts.check_writable(args.out)
    if args.plot is not None:
        artifacts.check_writable(args.plot, folder=True)
    summary_path = _summary_path(args)
    if summary_path is not None:
        artifacts.check_writable(summary_path)
    config = _timeline_config(args)
    classifier = load_classifier(args.model, args.pipeline)
    clip, hop = classifier.num_samples, _hop_samples(args.hop, classifier)
    inputs = _inputs(args)
    _refuse_writing_over_inputs({"--out": args.out, "--summary": summary_path}, inputs)
    print(f"model: {classifier.description}; {clip} samples per clip "
          f"({classifier.clip_s:g} s at {classifier.sample_rate} Hz)", file=sys.stderr)
    audios = decode([path for _, path in inputs], classifier.sample_rate)
    skipped = sum(audio is None for audio in audios)
    summary = f"decoded {len(inputs) - skipped} of {len(inputs)} file(s)"
    print(f"{summary}; skipped {skipped} (reasons above, no rows)" if skipped else summary, file=sys.stderr)
    if skipped == len(inputs):
        print("no file could be decoded; nothing written", file=sys.stderr)
        return EXIT_SKIPPED
    kaggle = args.kaggle is not None
    windowed = not kaggle and any(audio is not None and len(audio) > clip for audio in audios)
    if windowed:
        print(f"a recording is longer than one clip: windows of {classifier.clip_s:g} s at most "
              f"{hop / classifier.sample_rate:g} s apart", file=sys.stderr)
    recordings = classify(classifier, _recordings(inputs, audios, windowed, clip, hop), args.batch_size)
    _warn_padded(recordings, classifier)
    if windowed:
        recordings = smooth(recordings, hop, classifier.sample_rate, config)
    text = _csv_text(recordings, kaggle, windowed, classifier, args.threshold)
    _plot(args.plot, recordings if windowed else [], classifier, args.threshold, hop)
    _write_summary(summary_path, args.summary is not None, recordings if windowed else [], classifier)
    _write(text, args.out)
    return EXIT_SKIPPED if skipped else EXIT_OK


def _refuse_writing_over_inputs(outputs: dict[str, Path | None], inputs: Sequence[tuple[str, Path]]) -> None:
    """Raise ``PredictError`` if an output file is one of the WAV files being read."""
    read = {path.resolve() for _, path in inputs}
    for flag, path in outputs.items():
        if path is not None and path.resolve() in read:
            raise PredictError(f"{path}: {flag} would write over an input WAV; give another file")


def _timeline_name(recording: Recording) -> str:
    """``<ID>.png``, a path ID's folders joined by ``__``: two files of one name (or of one stem,
    ``a.wav`` and ``a.WAV``) get two timelines."""
    return f"{recording.id.replace('/', '__')}.png"


def _plot(folder: Path | None, recordings: Sequence[Recording], classifier: Classifier, threshold: float,
          hop: int) -> None:
    """Every timeline, drawn into a staging folder, then moved into ``folder``: all or none."""
    if folder is None:
        return
    if not recordings:
        print(f"--plot: no recording is longer than one clip ({classifier.clip_s:g} s); no timeline drawn",
              file=sys.stderr)
        return
    try:
        staging = Path(tempfile.mkdtemp(prefix=".timelines-", dir=artifacts.nearest_existing(folder)))
        try:
            drawn = [plot_timeline(r, classifier, threshold, hop, staging / _timeline_name(r)) for r in recordings]
            folder.mkdir(parents=True, exist_ok=True)
            drawn = list(dict.fromkeys(drawn))  # a file given twice is drawn once
            for png in drawn:
                os.replace(png, folder / png.name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    except OSError as err:
        raise PredictError(f"{folder}: cannot write the timelines ({err.strerror}); no CSV written") from None
    print(f"wrote {len(drawn)} timeline(s) to {folder}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    tf.get_logger().setLevel("ERROR")  # tfio's resampler warns about retracing on every new length
    return reported(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
