"""Any model as one callable: ``[N, num_samples]`` float32 audio -> ``[N]`` P(exhale).

``load_classifier(path, pipeline_arg)`` loads what a command line's ``--model PATH`` names into a
``Classifier``, which also knows the sample rate and clip length (``num_samples``) its model
takes. ``PATH`` is one of

- a run folder of ``python -m tfbreath.fit`` (its ``ensemble.keras`` + ``pipeline.toml``);
- a ``.keras`` file: a waveform-input model (``python -m tfbreath.export`` writes
  ``<member>_waveform.keras``; it holds its feature extraction) or a feature-input model such as
  ``cnn8.keras``. A feature-input model saved with its pipeline (``artifacts.save_model``) runs
  under that one, and the pipeline file given (``pipeline_arg``: ``--pipeline FILE``) or
  ``pipeline.toml`` beside it must make the same features (else an error); one saved without
  needs ``pipeline.toml`` beside it or ``--pipeline FILE`` (``feature_pipeline``);
- a ``.tflite`` file written by ``python -m tfbreath.export``; its input length is the clip
  size, its sample rate comes from the metadata it carries (``tfbreath.tflite_metadata``; a
  ``--pipeline FILE`` at another rate is an error), or for a file without, from ``--pipeline
  FILE``, else ``pipeline.toml`` beside it, else the default pipeline's (said on stderr). The
  file is checked before TFLite reads it: a cut or corrupt one is an error, not a crash.

``None`` is the pretrained model that installs with the package (``default_model_path``:
``tfbreath.pretrained``'s ``breath_phase`` folder; its ``ensemble.tflite`` if present, else its
``ensemble.keras``). A model that cannot be used is a ``ClassifierError``, one line naming the
file and the problem.

Its input: ``decode`` reads files whole at the classifier's rate (``[samples]`` each), ``window``
cuts one clip of them (``[samples] -> [num_samples]``, a short one repeated to fill it). Its output:
``target`` names a P(exhale) ``I`` or ``E`` at a threshold.
"""

from __future__ import annotations

import dataclasses
import stat
import sys
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Sequence

import keras
import numpy as np
from tqdm.auto import tqdm

from tfbreath import artifacts, data, pretrained, serving
from tfbreath.audio import AudioError, load_audio
from tfbreath.config import ENSEMBLE, ConfigError, PipelineConfig, first_difference, load_config, parse_config
from tfbreath.errors import TfbreathError, one_line
from tfbreath.features import FeatureExtractor
from tfbreath.run_folder import MODEL_SUFFIX, PIPELINE_FILE, TFLITE_SUFFIX, RunFolder
from tfbreath.tflite_file import TFLiteFileError
from tfbreath.tflite_metadata import read_metadata

DEFAULT_MODEL_DIR = pretrained.model_dir()
"""The shipped pretrained model, package data (``tfbreath.pretrained``): a run folder's
``ensemble.keras`` and ``pipeline.toml``, with ``ensemble.tflite``."""

INHALE, EXHALE = data.LABEL_NAMES
PHASE_COLOURS = {INHALE: "tab:blue", EXHALE: "tab:orange"}
"""The colour each label is drawn in (predict's timelines, explain's summary)."""
PROBABILITY_DECIMALS = 6
"""Decimals of a P(exhale) in the tools' CSVs and JSON."""


class ClassifierError(TfbreathError, RuntimeError):
    """A model that cannot be loaded or run: ``<file>: <problem>``."""


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A model as one callable: ``[N, num_samples]`` float32 audio at ``sample_rate`` -> ``[N]`` P(exhale)."""

    predict: Callable[[np.ndarray], np.ndarray]
    sample_rate: int
    num_samples: int
    description: str

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        waveforms = np.asarray(waveforms, np.float32)
        if len(waveforms) == 0:  # the in-graph features take no empty batch (TF dies of SIGFPE on one)
            return np.zeros(0, np.float32)
        return np.asarray(self.predict(waveforms), np.float32).reshape(-1)

    @property
    def clip_s(self) -> float:
        return self.num_samples / self.sample_rate


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------
def load_keras_model(path: Path) -> keras.Model:
    """The model of a ``.keras`` file, whose zip archive is checked first (Keras calls a cut
    archive "file not found")."""
    try:
        with zipfile.ZipFile(path) as archive:
            corrupt = archive.testzip()
    except (zipfile.BadZipFile, zlib.error, EOFError) as err:
        raise ClassifierError(f"{path}: not a valid {MODEL_SUFFIX} file (cut short or corrupt zip archive: "
                              f"{one_line(err)})") from None
    except OSError as err:
        raise ClassifierError(f"{path}: cannot read the file ({err.strerror})") from None
    if corrupt is not None:
        raise ClassifierError(f"{path}: not a valid {MODEL_SUFFIX} file (its {corrupt} is corrupt)")
    try:
        return serving.load_trained_model(path)
    except (ValueError, TypeError, KeyError, OSError) as err:
        raise ClassifierError(f"{path}: cannot load the Keras model ({one_line(err)})") from None


def feature_extractor(model: keras.Model) -> FeatureExtractor | None:
    """The ``FeatureExtractor`` layer of a waveform-input model; ``None`` for a feature-input one."""
    return next((layer for layer in model.layers if isinstance(layer, FeatureExtractor)), None)


def keras_classifier(model: keras.Model, description: str) -> Classifier:
    """A waveform-input Keras model (it holds a ``FeatureExtractor``, hence its pipeline)."""
    audio = feature_extractor(model).pipeline.audio
    return Classifier(model.predict_on_batch, audio.sample_rate, int(model.input.shape[-1]), description)


def _wrap(model: keras.Model, pipeline: PipelineConfig, description: str) -> Classifier:
    """A feature-input model behind the pipeline's feature extraction."""
    try:
        return keras_classifier(serving.waveform_model(model, pipeline), description)
    except ConfigError as err:
        raise ClassifierError(f"{description}: {err}") from None


def _given_pipeline(path: Path, pipeline_arg: Path | None) -> tuple[Path, PipelineConfig] | None:
    """``--pipeline FILE`` if given, else ``pipeline.toml`` beside the model, else ``None``; with its file."""
    source = RunFolder(path.parent).pipeline_file if pipeline_arg is None else pipeline_arg
    if pipeline_arg is None and not source.is_file():
        return None
    return source, load_config(source)


def feature_pipeline(path: Path, pipeline_arg: Path | None) -> PipelineConfig:
    """The pipeline a feature-input ``.keras`` runs under: the one it carries
    (``artifacts.save_model``), which ``--pipeline FILE`` or ``pipeline.toml`` beside it must match;
    for a model carrying none, that file."""
    given = _given_pipeline(path, pipeline_arg)
    try:
        carried_toml = artifacts.model_pipeline_toml(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise ClassifierError(f"{path}: cannot read its archive ({one_line(err)})") from None
    if carried_toml is None:
        if given is None:
            raise ClassifierError(f"{path}: a feature-input model needs its {PIPELINE_FILE} beside it "
                                  f"(or pass --pipeline FILE)")
        return given[1]
    carried = parse_config(carried_toml, source=f"{path} ({artifacts.MODEL_PIPELINE_ENTRY})")
    difference = None if given is None else first_difference(carried, given[1])
    if difference is not None:
        fix = "leave out --pipeline" if pipeline_arg is not None else f"move the model away from {given[0]}"
        raise ClassifierError(f"{path}: trained with pipeline {carried.name!r} but {given[0]} gives a different "
                              f"one ({difference}, model first); the model carries its own, so {fix}")
    return carried


def load_run(path: Path, pipeline_arg: Path | None) -> Classifier:
    """A run folder: its ensemble with its pipeline's feature extraction in front."""
    ensemble = RunFolder(path).model_file(ENSEMBLE)
    if not ensemble.is_file():
        raise ClassifierError(f"{path}: not a run folder (no {ensemble.name}); --model takes a run folder of "
                              f"python -m tfbreath.fit, a {MODEL_SUFFIX} or a {TFLITE_SUFFIX} file")
    return load_keras_file(ensemble, pipeline_arg, f"run {path} ({ENSEMBLE})")


def load_keras_file(path: Path, pipeline_arg: Path | None, description: str | None = None) -> Classifier:
    """A waveform-input ``.keras`` as is; a feature-input one behind its pipeline (``feature_pipeline``)."""
    model = load_keras_model(path)
    if feature_extractor(model) is not None:
        return keras_classifier(model, description or f"{path} (waveform input)")
    return _wrap(model, feature_pipeline(path, pipeline_arg), description or f"{path} (feature input)")


def load_tflite(path: Path, pipeline_arg: Path | None) -> Classifier:
    """A waveform ``.tflite``: clip size from its input; sample rate from the metadata it carries
    (``tflite_metadata.read_metadata``), where an explicit ``--pipeline`` must agree, else from
    the pipeline (``--pipeline``, ``pipeline.toml`` beside it, or the default one, said on stderr).

    The model is checked (``tflite_file.verify_tflite``) and run once on a silent clip, so that a model
    TFLite cannot prepare fails here, before any input is read.
    """
    try:
        interpreter = serving.TFLiteClassifier(path)  # checked first (tflite_file.verify_tflite)
        interpreter(np.zeros((1, interpreter.num_samples), np.float32))
        metadata = read_metadata(path)
    except TFLiteFileError as err:
        raise ClassifierError(str(err)) from None
    except (ValueError, RuntimeError, IndexError) as err:
        raise ClassifierError(f"{path}: cannot run the TFLite model ({one_line(err)})") from None
    if metadata is not None:
        rate = metadata["sample_rate"]
        given_rate = None if pipeline_arg is None else load_config(pipeline_arg).audio.sample_rate
        if given_rate not in (None, rate):
            raise ClassifierError(f"{path}: its metadata says {rate} Hz but {pipeline_arg} gives {given_rate} Hz; "
                                  f"the model carries its own rate, so leave out --pipeline")
        return Classifier(interpreter, rate, interpreter.num_samples, f"{path} (TFLite)")
    given = _given_pipeline(path, pipeline_arg)
    pipeline = PipelineConfig() if given is None else given[1]
    if given is None:
        print(f"note: no {PIPELINE_FILE} beside {path} and no --pipeline: assuming the default "
              f"pipeline's {pipeline.audio.sample_rate} Hz", file=sys.stderr)
    if pipeline.audio.num_samples != interpreter.num_samples:
        print(f"warning: {path} takes {interpreter.num_samples} samples per clip, the pipeline "
              f"{pipeline.audio.num_samples}; using {interpreter.num_samples} at "
              f"{pipeline.audio.sample_rate} Hz", file=sys.stderr)
    return Classifier(interpreter, pipeline.audio.sample_rate, interpreter.num_samples, f"{path} (TFLite)")


def default_model_path() -> Path:
    """The shipped model: its ``ensemble.tflite``, else its folder (a run folder: ``ensemble.keras``)."""
    tflite = RunFolder(DEFAULT_MODEL_DIR).tflite_file(ENSEMBLE)
    if tflite.is_file():
        return tflite
    if RunFolder(DEFAULT_MODEL_DIR).model_file(ENSEMBLE).is_file():
        return DEFAULT_MODEL_DIR
    raise ClassifierError(f"no pretrained model at {DEFAULT_MODEL_DIR} yet; pass --model RUN_DIR, "
                          f"FILE{MODEL_SUFFIX} or FILE{TFLITE_SUFFIX}")


def model_path_mode(path: Path) -> int:
    """``path``'s ``st_mode``, or a one-line ``ClassifierError`` when a ``--model`` path is missing or unreadable."""
    try:
        return path.stat().st_mode
    except FileNotFoundError:
        raise ClassifierError(f"{path}: no such model file or run folder") from None
    except OSError as err:
        raise ClassifierError(f"{path}: cannot read it ({err.strerror})") from None


def load_classifier(path: Path | None, pipeline_arg: Path | None = None) -> Classifier:
    """Whatever ``--model`` names (default: the shipped model) as a ``Classifier``."""
    path = default_model_path() if path is None else Path(path)
    mode = model_path_mode(path)
    try:
        if stat.S_ISDIR(mode):
            return load_run(path, pipeline_arg)
        if stat.S_ISREG(mode) and path.suffix == MODEL_SUFFIX:
            return load_keras_file(path, pipeline_arg)
        if stat.S_ISREG(mode) and path.suffix == TFLITE_SUFFIX:
            return load_tflite(path, pipeline_arg)
    except ConfigError as err:
        raise ClassifierError(str(err)) from None
    raise ClassifierError(f"{path}: not a model; --model takes a run folder, a {MODEL_SUFFIX} or a "
                          f"{TFLITE_SUFFIX} file")


# ---------------------------------------------------------------------------------------------
# Its input and output
# ---------------------------------------------------------------------------------------------
def decode(files: Sequence[Path], sample_rate: int) -> list[np.ndarray | None]:
    """Each file at ``sample_rate``, whole (``[samples]``); ``None`` for a file that fails (said on stderr)."""
    audios = []
    for path in tqdm(files, desc="decode", unit="file", leave=False, disable=None):
        try:
            audios.append(load_audio(path, sample_rate, None))
        except AudioError as err:
            audios.append(None)
            tqdm.write(f"skipped {err}", file=sys.stderr)
    return audios


def window(audio: np.ndarray, start: int, clip: int) -> np.ndarray:
    """``audio[start:start + clip]``, a shorter piece repeated end to end to fill it, as
    ``tfbreath.audio.decode_wav`` fits a file to a clip. ``[samples] -> [clip]``"""
    piece = audio[start:start + clip]
    return np.resize(piece, clip) if len(piece) else np.zeros(clip, audio.dtype)


def target(probability: float, threshold: float) -> str:
    """The label of a P(exhale): ``E`` at or above ``threshold``, else ``I``."""
    return EXHALE if probability >= threshold else INHALE
