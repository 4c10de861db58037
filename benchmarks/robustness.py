"""Label flips under harmless re-encodings: how fragile a model is to rate, level and dither (issue 19).

    python benchmarks/robustness.py [--model RUN_DIR | FILE.keras | FILE.tflite] [--data DIR]
                                    [--clips 40] [--seed 0] [--band-limit HZ] [--json OUT.json]
    python benchmarks/robustness.py --features [--pipeline FILE] [--fmax HZ] [--band-limit HZ] [...]

``--clips`` labelled clips are drawn reproducibly (``--seed``) from ``train.csv`` of ``--data``
(else ``$TFBREATH_DATA``, else ``../shared/data/breath``). Each is written to a temporary folder
as a real WAV file once per perturbation, none of which should change what a listener hears:

- resampled (librosa/soxr, ``soxr_hq``) to 8, 22.05, 44.1 and 48 kHz and written as 16-bit PCM at
  that rate: the model's own decoder resamples it back in-graph;
- gain -6 dB and +6 dB, requantised to 16-bit PCM;
- one LSB of TPDF dither (triangular, +-1 LSB peak) before requantising to 16 bits: every sample
  moves by at most one LSB;
- white Gaussian noise at 40 dB SNR (relative to the clip's own RMS), requantised to 16 bits;
- the same samples as 24-bit PCM and as 32-bit float: exact re-encodings, a check of the decoder
  (they must flip nothing).

A perturbed clip that would clip in 16 bits (+6 dB of a loud one) is written as 32-bit float
instead, which cannot clip; the table's note counts them.

Every file, the originals included, goes through the package's own prediction path
(``tfbreath.audio.load_audio`` at the model's rate and clip length, then the ``tfbreath.classifier``
classifier: features in-graph, then the model). The table gives, per perturbation, how many clips
change predicted label (P(exhale) crossing 0.5) against the original files, mean and max
|delta P(exhale)|, and the accuracy; the first row is the accuracy on the originals. The clips are
drawn from all of ``train.csv``, so most were training clips of the shipped model: its accuracy
here is optimistic, the flips are what this measures.

``--features`` runs the feature-stability diagnostic instead (no model call; the features of the
model's pipeline, or of ``--pipeline FILE``, optionally with ``--fmax HZ`` in place of the mel map's
fmax): for every map the RMS change a perturbation causes, divided by the spread of that feature
between different clips (the RMS over map cells of the between-clip standard deviation of the
originals' features). 0 is untouched; 1 means the perturbation moves the map as far as one clip's
typical distance from the mean clip (two random clips are about 1.4 apart). Maps with a frequency
axis are also split into bands below 2 kHz (where the recordings have their energy), 2-4.5 kHz
and above 4.5 kHz; the scalar vector is scored per scalar (each by its own between-clip std),
then as the RMS over the 39, with the worst scalars listed. The maps are the model's inputs as it
sees them (z-scored; of a map with fewer bands than ``n_mels`` rows only its own bands count, not
the constant padding). A second table gives the band groups in the whole map's units (the change
over the map's between-clip std, scaled so the groups' squares add up to the map's): how much of
a map's movement each group carries.

``--json OUT`` writes the table(s), the clip names, and (flips) every clip's P(exhale) per perturbation.

``--band-limit HZ`` (either mode) low-passes every decoded clip at ``HZ`` (librosa's resampler
down to ``2 HZ`` and back) before the model or the features: an emulation of a front end that
drops the empty band, to try before changing the package. The shipped model was not trained
that way, so its accuracy drops; its flips tell whether the band is what moves it.

Results (the shipped models' flips, the feature diagnostic): ``benchmarks/RESULTS.md``.

Exit code: 0 done; 2 bad arguments, data or model (one ``error: ...`` line).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402

from tfbreath.console import OneLineParser  # noqa: E402
from tfbreath.errors import EXIT_OK, EXIT_USAGE  # noqa: E402
from tfbreath.evaluation import THRESHOLD  # noqa: E402  (P(exhale) at or above which the label is E)
from tfbreath.run_folder import DATA_ENV  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "breath"
DEFAULT_CLIPS = 40
DEFAULT_SEED = 0
DEFAULT_BATCH = 64

PCM16_SCALE = 2.0 ** 15
"""Full scale of 16-bit PCM: sample value = integer / 2**15 (soundfile's and the decoder's convention)."""
PCM16_MIN, PCM16_MAX = -(2 ** 15), 2 ** 15 - 1
LSB = 1.0 / PCM16_SCALE
"""One 16-bit least significant bit, in full-scale units."""
PCM24_FROM_INT16 = 2 ** 16
"""soundfile writes int32 samples to PCM_24 as their top 24 bits: int16 << 16 is the same value."""

PCM_16, PCM_24, FLOAT = "PCM_16", "PCM_24", "FLOAT"
RESAMPLER = "soxr_hq"
"""librosa.resample's default, a high-quality band-limited resampler."""

RESAMPLE_RATES = (8000, 22050, 44100, 48000)
GAIN_DB = (-6.0, 6.0)
DITHER_LSB = 1.0
"""TPDF dither amplitude: the sum of two uniform variables of +-DITHER_LSB/2 LSB each."""
NOISE_SNR_DB = 40.0

MIN_BAND_LIMIT_HZ = 500.0
"""``--band-limit``'s lowest value (the breath sound's main band is below it); the highest is below Nyquist."""

BAND_EDGES_HZ = (2000.0, 4500.0)
"""Frequency groups of the band-resolved maps: below 2 kHz (the recordings' energy, they were made
at 4 kHz), 2 kHz to the mel map's 4.5 kHz fmax, and above."""
FREQUENCY_MAPS = ("mel", "mel_delta", "mel_delta2", "gammatone")
"""Maps whose rows are frequency bands (mel-spaced, Slaney scale, from 0 Hz)."""
MEL_MAPS = ("mel", "mel_delta", "mel_delta2")
ALL_ROWS = "all"
KEY_WIDTH, COLUMN_WIDTH = 20, 10
SHORT_NAMES = {"TPDF": "dither", "white": "noise", "24-bit": "pcm24", "32-bit": "float32"}
"""Column headings of the ``--features`` tables, by a perturbation name's first word."""
WORST_SCALARS = 6
"""Scalars listed by name in the ``--features`` report."""
RATIO_DECIMALS = 3
PROBABILITY_DECIMALS = 4


class RobustnessError(ValueError):
    """Bad arguments, data or model: one ``error:`` line, exit code 2."""


class ClipError(ValueError):
    """A signal that does not fit 16-bit PCM without clipping."""


# ---------------------------------------------------------------------------------------------
# Perturbations: 16-bit audio in, what is written to the WAV file out
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Encoded:
    """Samples to write (int16 for PCM_16, int32 for PCM_24, float32 for FLOAT), their rate and subtype."""

    samples: np.ndarray
    sample_rate: int
    subtype: str
    note: str = ""
    """Why this clip was encoded differently from the perturbation's usual way (else empty)."""

    def write(self, path: Path) -> Path:
        sf.write(path, self.samples, self.sample_rate, subtype=self.subtype)
        return path


Perturbation = Callable[[np.ndarray, int, np.random.Generator], Encoded]
"""``(audio on the 16-bit grid [n] float64, its rate, generator) -> Encoded``."""


def to_pcm16(y: np.ndarray) -> np.ndarray:
    """Round full-scale audio to 16-bit integers; ``ClipError`` if any sample would clip. ``[n] -> [n] int16``"""
    ints = np.round(np.asarray(y, np.float64) * PCM16_SCALE)
    if ints.size and (ints.min() < PCM16_MIN or ints.max() > PCM16_MAX):
        raise ClipError(f"peak {np.abs(y).max():.4f} of full scale does not fit 16-bit PCM")
    return ints.astype(np.int16)


FLOAT_NOTE = "as float (16 bits would clip)"


def pcm16_or_float(y: np.ndarray, rate: int) -> Encoded:
    """16-bit PCM of ``y``; where that would clip, 32-bit float (which cannot), with ``FLOAT_NOTE``."""
    try:
        return Encoded(to_pcm16(y), rate, PCM_16)
    except ClipError:
        return Encoded(np.asarray(y, np.float32), rate, FLOAT, note=FLOAT_NOTE)


def read_pcm16(path: Path) -> tuple[np.ndarray, int]:
    """A mono 16-bit WAV as float64 on the 16-bit grid (integer / 2**15), with its rate."""
    try:
        info = sf.info(path)
    except RuntimeError as err:  # soundfile.LibsndfileError
        raise RobustnessError(f"{path}: cannot read it as audio ({' '.join(str(err).split())})") from None
    if info.subtype != PCM_16 or info.channels != 1:
        raise RobustnessError(f"{path}: expected mono 16-bit PCM, got {info.channels} channel(s) {info.subtype}")
    ints, rate = sf.read(path, dtype="int16")
    return ints.astype(np.float64) / PCM16_SCALE, rate


def resampled(new_rate: int) -> Perturbation:
    """Band-limited resampling to ``new_rate``, written as 16-bit PCM at that rate (``pcm16_or_float``)."""
    def perturb(y: np.ndarray, rate: int, rng: np.random.Generator) -> Encoded:
        return pcm16_or_float(librosa.resample(y, orig_sr=rate, target_sr=new_rate, res_type=RESAMPLER), new_rate)
    return perturb


def gained(db: float) -> Perturbation:
    """Gain of ``db`` dB, requantised to 16 bits (``pcm16_or_float``)."""
    factor = 10.0 ** (db / 20.0)

    def perturb(y: np.ndarray, rate: int, rng: np.random.Generator) -> Encoded:
        return pcm16_or_float(y * factor, rate)
    return perturb


def tpdf_dithered(lsb: float = DITHER_LSB) -> Perturbation:
    """Triangular dither of ``lsb`` LSB peak, requantised to 16 bits (moves a sample by <= ``lsb`` LSB)."""
    def perturb(y: np.ndarray, rate: int, rng: np.random.Generator) -> Encoded:
        half = lsb / 2.0 * LSB
        dither = rng.uniform(-half, half, y.shape) + rng.uniform(-half, half, y.shape)  # [n] in (-lsb, lsb) LSB
        return pcm16_or_float(y + dither, rate)
    return perturb


def with_noise(snr_db: float) -> Perturbation:
    """White Gaussian noise ``snr_db`` dB below the clip's RMS, requantised to 16 bits."""
    def perturb(y: np.ndarray, rate: int, rng: np.random.Generator) -> Encoded:
        noise_rms = np.sqrt(np.mean(np.square(y))) * 10.0 ** (-snr_db / 20.0)
        return pcm16_or_float(y + rng.normal(0.0, noise_rms, y.shape), rate)
    return perturb


def as_pcm24(y: np.ndarray, rate: int, rng: np.random.Generator) -> Encoded:
    """The same samples as 24-bit PCM (exact)."""
    return Encoded(to_pcm16(y).astype(np.int32) * PCM24_FROM_INT16, rate, PCM_24)


def as_float32(y: np.ndarray, rate: int, rng: np.random.Generator) -> Encoded:
    """The same samples as 32-bit float (exact: every 16-bit value is a float32)."""
    return Encoded(np.asarray(y, np.float32), rate, FLOAT)


def _db_label(db: float) -> str:
    return f"{db:+g} dB"


PERTURBATIONS: dict[str, Perturbation] = {
    **{f"resample {rate} Hz": resampled(rate) for rate in RESAMPLE_RATES},
    **{f"gain {_db_label(db)}": gained(db) for db in GAIN_DB},
    f"TPDF dither {DITHER_LSB:g} LSB": tpdf_dithered(DITHER_LSB),
    f"white noise {NOISE_SNR_DB:g} dB SNR": with_noise(NOISE_SNR_DB),
    "24-bit PCM": as_pcm24,
    "32-bit float": as_float32,
}
"""Every perturbation the benchmark applies, by the name its table row carries."""


def perturbation_rng(seed: int, clip: int, perturbation: int) -> np.random.Generator:
    """The generator of one clip's one perturbation: the same numbers whatever else is run."""
    return np.random.default_rng([seed, clip, perturbation])


# ---------------------------------------------------------------------------------------------
# Clips and their perturbed copies
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Clips:
    """The drawn clips: their files and labels (1 = exhale)."""

    files: tuple[Path, ...]
    labels: np.ndarray


def data_dir(arg: Path | None) -> Path:
    """``--data``, else ``$TFBREATH_DATA``, else ``../shared/data/breath``; it must hold ``train.csv``."""
    root = arg or (Path(os.environ[DATA_ENV]) if os.environ.get(DATA_ENV) else DEFAULT_DATA)
    if not (root / "train.csv").is_file():
        raise RobustnessError(f"{root}: no train.csv (pass --data DIR with the Kaggle layout or set ${DATA_ENV})")
    return root


def draw_clips(root: Path, count: int, seed: int) -> Clips:
    """``count`` labelled clips of ``root``'s ``train.csv``, drawn without replacement by ``seed``, in CSV order."""
    from tfbreath import data

    try:
        examples = data.read_kaggle_train(root)
    except data.DataError as err:
        raise RobustnessError(str(err)) from None
    if count > len(examples):
        raise RobustnessError(f"--clips {count}: {root} has only {len(examples)} labelled clips")
    chosen = np.sort(np.random.default_rng(seed).choice(len(examples), count, replace=False))
    return Clips(tuple(examples.files[i] for i in chosen), examples.labels[chosen])


def _slug(index: int, name: str) -> str:
    """A folder name for perturbation number ``index`` (its number keeps "+6 dB" and "-6 dB" apart)."""
    return f"{index:02d}_" + "".join(c if c.isalnum() else "_" for c in name)


def write_perturbed(clips: Clips, folder: Path, seed: int) -> tuple[dict[str, list[Path]], dict[str, list[str]]]:
    """Every perturbation of every clip as a WAV in ``folder/<perturbation>/``: the files and notes per name."""
    files: dict[str, list[Path]] = {}
    notes: dict[str, list[str]] = {}
    originals = [read_pcm16(path) for path in clips.files]
    for p_index, (name, perturb) in enumerate(PERTURBATIONS.items()):
        out = folder / _slug(p_index, name)
        out.mkdir()
        encoded = [perturb(y, rate, perturbation_rng(seed, c_index, p_index))
                   for c_index, (y, rate) in enumerate(originals)]
        files[name] = [e.write(out / path.name) for e, path in zip(encoded, clips.files)]
        notes[name] = [e.note for e in encoded if e.note]
    return files, notes


def decode_clips(files: Sequence[Path], sample_rate: int, clip_s: float) -> np.ndarray:
    """The package's decoder: each file at ``sample_rate``, trimmed or repeated to one clip. ``[N, samples]``"""
    from tfbreath.audio import AudioError, load_audio

    try:
        return np.stack([load_audio(path, sample_rate, clip_s) for path in files])
    except AudioError as err:
        raise RobustnessError(str(err)) from None


def band_limited(waveforms: np.ndarray, rate: int, cutoff_hz: float) -> np.ndarray:
    """Waveforms through librosa's band-limited resampler to ``2 cutoff_hz`` and back: nothing left above it.

    ``[N, n]`` -> ``[N, n]`` float32. Emulates a front end that low-passes the decoded clip before any feature.
    """
    low_rate = int(round(2 * cutoff_hz))
    down = librosa.resample(waveforms.astype(np.float64), orig_sr=rate, target_sr=low_rate, res_type=RESAMPLER)
    up = librosa.resample(down, orig_sr=low_rate, target_sr=rate, res_type=RESAMPLER)
    return librosa.util.fix_length(up, size=waveforms.shape[-1]).astype(np.float32)


def load_waveforms(files: Sequence[Path], sample_rate: int, clip_s: float, band_limit: float | None) -> np.ndarray:
    """``decode_clips``, then ``band_limited`` at ``band_limit`` Hz if given. ``[N, samples]``"""
    if band_limit is not None and band_limit >= sample_rate / 2:
        raise RobustnessError(f"--band-limit {band_limit:g} Hz: must be below the Nyquist frequency "
                              f"({sample_rate / 2:g} Hz) of the model's {sample_rate} Hz")
    waveforms = decode_clips(files, sample_rate, clip_s)
    return waveforms if band_limit is None else band_limited(waveforms, sample_rate, band_limit)


# ---------------------------------------------------------------------------------------------
# Label flips
# ---------------------------------------------------------------------------------------------
def load_classifier(model: Path | None):
    """``tfbreath.classifier``'s classifier of ``--model`` (default: the shipped run folder's ensemble)."""
    from tfbreath import classifier

    try:
        return classifier.load_classifier(classifier.DEFAULT_MODEL_DIR if model is None else model)
    except classifier.ClassifierError as err:
        raise RobustnessError(str(err)) from None


def probabilities(classifier, files: Sequence[Path], batch_size: int, band_limit: float | None = None) -> np.ndarray:
    """P(exhale) of each file through the package's decoder (``load_waveforms``) and the classifier. ``[N]``"""
    waveforms = load_waveforms(files, classifier.sample_rate, classifier.clip_s, band_limit)
    return np.concatenate([classifier(waveforms[i:i + batch_size]) for i in range(0, len(waveforms), batch_size)])


def flip_row(name: str, original: np.ndarray, perturbed: np.ndarray | None, labels: np.ndarray,
             notes: Sequence[str] = ()) -> dict:
    """One table row: clips predicted E, clips whose label changed, mean / max |delta P|, accuracy
    (``perturbed=None``: the originals' row)."""
    p = original if perturbed is None else perturbed
    predicted = p >= THRESHOLD
    row = {"perturbation": name, "n": len(p), "exhale": int(predicted.sum()),
           "accuracy": round(float(np.mean(predicted == (labels >= THRESHOLD))), 4)}
    if perturbed is not None:
        delta = np.abs(perturbed - original)
        row.update(flips=int(np.sum(predicted != (original >= THRESHOLD))),
                   mean_abs_dp=round(float(delta.mean()), PROBABILITY_DECIMALS),
                   max_abs_dp=round(float(delta.max()), PROBABILITY_DECIMALS))
    if notes:
        row["note"] = f"{len(notes)} {notes[0]}"
    return row


def flip_table(rows: Sequence[dict]) -> str:
    """The flip table: one line per row of ``flip_row``."""
    lines = [f"{'perturbation':<24}{'n':>3}{'E':>4}{'flips':>7}{'mean|dP|':>10}{'max|dP|':>9}{'accuracy':>10}  note"]
    for r in rows:
        flips = f"{r['flips']:>7}" if "flips" in r else f"{'-':>7}"
        dp = (f"{r['mean_abs_dp']:>10.4f}{r['max_abs_dp']:>9.4f}" if "flips" in r else f"{'-':>10}{'-':>9}")
        lines.append(f"{r['perturbation']:<24}{r['n']:>3}{r['exhale']:>4}{flips}{dp}{r['accuracy']:>10.3f}  {r.get('note', '')}")
    return "\n".join(lines)


def run_flips(args: argparse.Namespace, clips: Clips, folder: Path) -> dict:
    classifier = load_classifier(args.model)
    print(f"model: {classifier.description}", file=sys.stderr)
    files, notes = write_perturbed(clips, folder, args.seed)
    if args.band_limit is not None:
        print(f"every decoded clip low-passed at {args.band_limit:g} Hz before the model", file=sys.stderr)
    original = probabilities(classifier, clips.files, args.batch_size, args.band_limit)
    perturbed = {name: probabilities(classifier, paths, args.batch_size, args.band_limit)
                 for name, paths in files.items()}
    rows = [flip_row("original", original, None, clips.labels),
            *(flip_row(name, original, p, clips.labels, notes[name]) for name, p in perturbed.items())]
    print(flip_table(rows))
    return {"model": classifier.description, "band_limit_hz": args.band_limit, "labels": clips.labels.tolist(),
            "rows": rows, "probabilities": {"original": original.round(PROBABILITY_DECIMALS).tolist(), **{
                name: p.round(PROBABILITY_DECIMALS).tolist() for name, p in perturbed.items()}}}


# ---------------------------------------------------------------------------------------------
# Feature stability
# ---------------------------------------------------------------------------------------------
def map_bands(pipeline) -> dict[str, int]:
    """Rows of each map that are its own bands (the rest of its ``n_mels`` rows are constant padding)."""
    from tfbreath import maps

    return maps.map_rows(pipeline.features)


def band_centres(name: str, pipeline) -> np.ndarray:
    """Centre frequency (Hz) of each band of a frequency map (``filters.mel_filterbank``'s Slaney mel scale)."""
    f, rate = pipeline.features, pipeline.audio.sample_rate
    n_bands, fmax = (f.n_mels, f.fmax) if name in MEL_MAPS else (f.n_gammatone, rate / 2.0)
    return librosa.mel_frequencies(n_bands + 2, fmin=0.0, fmax=fmax)[1:-1]


def band_groups(name: str, pipeline, n_rows: int) -> dict[str, np.ndarray]:
    """Row indices of the whole map (``"all"``) and, for a frequency map, of each frequency group that has bands."""
    groups = {ALL_ROWS: np.arange(n_rows)}
    if name not in FREQUENCY_MAPS:
        return groups
    centres = band_centres(name, pipeline)[:n_rows]
    edges = (0.0, *BAND_EDGES_HZ, np.inf)
    for low, high in zip(edges[:-1], edges[1:]):
        rows = np.flatnonzero((centres >= low) & (centres < high))
        if rows.size:
            groups[_band_label(low, high)] = rows
    return groups


def _band_label(low: float, high: float) -> str:
    if low == 0.0:
        return f"<{high / 1000:g}k"
    return f">={low / 1000:g}k" if np.isinf(high) else f"{low / 1000:g}-{high / 1000:g}k"


def between_clip_spread(original: np.ndarray) -> float:
    """RMS over cells of the between-clip std of a feature. ``[N, ...]`` -> scalar"""
    return float(np.sqrt(np.mean(np.var(original, axis=0))))


def relative_change(original: np.ndarray, perturbed: np.ndarray, spread: float | None = None) -> float:
    """RMS of ``perturbed - original`` over clips and cells, over ``spread`` (default ``between_clip_spread(original)``).

    ``[N, ...]`` each; 0 for no change, ~1.4 for the distance between two random clips.
    """
    spread = between_clip_spread(original) if spread is None else spread
    change = float(np.sqrt(np.mean(np.square(perturbed - original))))
    return change / spread if spread > 0 else float("nan")


def per_scalar_change(original: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """Each scalar's RMS change over clips / its between-clip std (NaN for a constant one). ``[N, S]`` each -> ``[S]``"""
    spread = original.std(axis=0)
    change = np.sqrt(np.mean(np.square(perturbed - original), axis=0))
    return np.where(spread > 0, change / np.where(spread > 0, spread, 1.0), np.nan)


def feature_model(pipeline):
    """The pipeline's in-graph features as a Keras model (``tfbreath.serving.feature_model``)."""
    from tfbreath import serving

    return serving.feature_model(pipeline)


def extract(model, waveforms: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    """``feature_model``'s features of ``[N, samples]`` waveforms: ``spectral [N, M, T, C]``, ``scalars [N, 39]``."""
    parts = [model.predict_on_batch(waveforms[i:i + batch_size]) for i in range(0, len(waveforms), batch_size)]
    return {key: np.concatenate([np.asarray(p[key]) for p in parts]) for key in parts[0]}


def map_rows(features: dict[str, np.ndarray], channel: int) -> np.ndarray:
    """One map of the model input: ``spectral [N, M, T, C]`` -> ``[N, M, T]``."""
    return features["spectral"][..., channel]


def stability(pipeline, original: dict[str, np.ndarray], perturbed: dict[str, np.ndarray],
              own_spread: bool = True) -> dict[str, float]:
    """``relative_change`` per ``map/group`` and for the scalar vector (``scalars``: RMS of the per-scalar ratios).

    ``own_spread``: a band group's change over that group's own between-clip spread; else over the
    whole map's (the units the model's input moves in: the groups' squares then add up to the map's).
    """
    out = {}
    for channel, (name, n_rows) in enumerate(map_bands(pipeline).items()):
        before, after = map_rows(original, channel), map_rows(perturbed, channel)  # [N, rows, T] each
        groups = band_groups(name, pipeline, n_rows)
        whole = between_clip_spread(before[:, :n_rows])
        for group, rows in groups.items():
            share = np.sqrt(len(rows) / n_rows)  # a group's squared change is its share of the map's cells
            out[f"{name}/{group}"] = relative_change(before[:, rows], after[:, rows],
                                                     None if own_spread else whole / share)
    if "scalars" in original:
        ratios = per_scalar_change(original["scalars"], perturbed["scalars"])
        out["scalars"] = float(np.sqrt(np.nanmean(np.square(ratios))))
    return out


def feature_pipeline(args: argparse.Namespace):
    """``--pipeline FILE``, else the model's pipeline (as ``python -m tfbreath.predict`` finds it); ``--fmax`` applied."""
    from tfbreath import classifier, config, run_folder

    try:
        if args.pipeline is not None:
            pipeline = config.load_config(args.pipeline)
        else:
            model = classifier.DEFAULT_MODEL_DIR if args.model is None else args.model
            if not model.exists():
                raise RobustnessError(f"{model}: no such model file or run folder")
            if model.suffix == run_folder.MODEL_SUFFIX:
                pipeline = classifier.feature_pipeline(model, None)  # the one it carries, else the file beside it
            else:  # a run folder, or a .tflite with its pipeline beside it
                pipeline = config.load_config((model if model.is_dir() else model.parent) / run_folder.PIPELINE_FILE)
        return config.with_overrides(pipeline, "features", fmax=args.fmax)
    except (config.ConfigError, classifier.ClassifierError) as err:
        raise RobustnessError(str(err)) from None


def _short(name: str) -> str:
    """A column heading of at most 9 characters for a perturbation name."""
    first, *rest = name.split()
    if first == "resample":
        return f"rs{int(rest[0]) / 1000:g}k"
    if first == "gain":
        return f"gain{rest[0]}"
    return SHORT_NAMES.get(first, first[:COLUMN_WIDTH - 1])


def stability_table(table: dict[str, dict[str, float]]) -> str:
    """Rows ``map/group``, one column per perturbation."""
    names = list(table)
    header = f"{'map/bands':<{KEY_WIDTH}}" + "".join(f"{_short(n):>{COLUMN_WIDTH}}" for n in names)
    rows = [f"{key:<{KEY_WIDTH}}" + "".join(f"{table[n][key]:>{COLUMN_WIDTH}.{RATIO_DECIMALS}f}" for n in names)
            for key in next(iter(table.values()))]
    return "\n".join([header, *rows])


def worst_scalars(original: np.ndarray, perturbed: dict[str, np.ndarray]) -> list[tuple[str, float, str]]:
    """The scalars moved most (relative to their between-clip std) by any perturbation: (name, ratio, by what)."""
    from tfbreath.config import SCALAR_NAMES

    names = list(perturbed)
    ratios = np.nan_to_num(np.stack([per_scalar_change(original, p) for p in perturbed.values()]), nan=0.0)  # [P, S]
    worst = ratios.max(axis=0)  # [S]
    return [(SCALAR_NAMES[s], float(worst[s]), names[int(np.argmax(ratios[:, s]))])
            for s in np.argsort(-worst)[:WORST_SCALARS]]


def run_features(args: argparse.Namespace, clips: Clips, folder: Path) -> dict:
    pipeline = feature_pipeline(args)
    rate, clip_s = pipeline.audio.sample_rate, pipeline.audio.duration_s
    limit = "" if args.band_limit is None else f", clips low-passed at {args.band_limit:g} Hz first"
    print(f"features of pipeline {pipeline.name!r}, mel fmax {pipeline.features.fmax:g} Hz{limit}", file=sys.stderr)
    files, _ = write_perturbed(clips, folder, args.seed)
    model = feature_model(pipeline)

    def features_of(paths: Sequence[Path]) -> dict[str, np.ndarray]:
        return extract(model, load_waveforms(paths, rate, clip_s, args.band_limit), args.batch_size)

    original = features_of(clips.files)
    perturbed = {name: features_of(paths) for name, paths in files.items()}
    own = {name: stability(pipeline, original, p) for name, p in perturbed.items()}
    in_map = {name: stability(pipeline, original, p, own_spread=False) for name, p in perturbed.items()}
    print("RMS feature change / between-clip std of the same cells (0 = unchanged, ~1.4 = another clip):")
    print(stability_table(own))
    print("\nband groups in the whole map's units (change / map's between-clip std, scaled to the group's cells):")
    print(stability_table({n: {k: v for k, v in t.items() if "/" in k and not k.endswith(ALL_ROWS)}
                           for n, t in in_map.items()}))
    result = {"pipeline": pipeline.name, "fmax": pipeline.features.fmax, "band_limit_hz": args.band_limit,
              "stability": own, "stability_in_map_units": in_map}
    if "scalars" in original:
        worst = worst_scalars(original["scalars"], {n: p["scalars"] for n, p in perturbed.items()})
        print("\nscalars moved most: " + ", ".join(f"{n} {r:.2f} ({by})" for n, r, by in worst))
        result["worst_scalars"] = [{"name": n, "ratio": round(r, RATIO_DECIMALS), "by": by} for n, r, by in worst]
    return result


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python benchmarks/robustness.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, metavar="PATH",
                        help="run folder or .keras / .tflite model (default: saved_models/breath_phase)")
    parser.add_argument("--data", type=Path, metavar="DIR",
                        help=f"Kaggle-layout data folder (default: ${DATA_ENV}, else {DEFAULT_DATA})")
    parser.add_argument("--clips", type=int, default=DEFAULT_CLIPS, metavar="N", help=f"clips to draw (default {DEFAULT_CLIPS})")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"seed of the draw and of the dither and noise (default {DEFAULT_SEED})")
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, metavar="N", help=f"clips per model call (default {DEFAULT_BATCH})")
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the results as JSON")
    parser.add_argument("--features", action="store_true",
                        help="feature-stability diagnostic instead of label flips")
    parser.add_argument("--pipeline", type=Path, metavar="FILE",
                        help="with --features: this pipeline instead of the model's")
    parser.add_argument("--fmax", type=float, metavar="HZ", help="with --features: the mel map's fmax instead")
    parser.add_argument("--band-limit", type=float, metavar="HZ",
                        help="low-pass every decoded clip at HZ before the model or the features (a front-end emulation)")
    args = parser.parse_args(argv)
    if args.clips < 1:
        parser.error(f"--clips must be >= 1, got {args.clips}")
    if args.seed < 0:
        parser.error(f"--seed must be >= 0, got {args.seed}")
    if args.batch_size < 1:
        parser.error(f"--batch-size must be >= 1, got {args.batch_size}")
    if not args.features and (args.pipeline is not None or args.fmax is not None):
        parser.error("--pipeline and --fmax apply to --features only")
    if args.band_limit is not None and not args.band_limit >= MIN_BAND_LIMIT_HZ:
        parser.error(f"--band-limit must be >= {MIN_BAND_LIMIT_HZ:g} Hz, got {args.band_limit:g}")
    if args.json is not None and not args.json.parent.is_dir():
        parser.error(f"--json {args.json}: folder {args.json.parent} does not exist")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # tfio's resampler warns about retracing on every new length
    try:
        clips = draw_clips(data_dir(args.data), args.clips, args.seed)
        with tempfile.TemporaryDirectory(prefix="robustness-") as tmp:
            result = (run_features if args.features else run_flips)(args, clips, Path(tmp))
    except RobustnessError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return EXIT_USAGE
    result.update(seed=args.seed, clips=[p.name for p in clips.files])
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
