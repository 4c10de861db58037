"""A trained model as a function of audio: waveform in, P(exhale) out, in Keras and in TFLite.

What ``export`` writes and ``predict`` runs: ``load_trained_model`` reads a run's ``.keras`` in
float32; ``waveform_model`` puts the pipeline's in-graph features (``feature_model``) in front of it
and a sigmoid behind a member's logit; ``TFLiteClassifier`` runs an exported ``.tflite`` on
batches of clips.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfbreath import train
from tfbreath.audio import load_audio
from tfbreath.config import ConfigError, PipelineConfig
from tfbreath.console import native_notes_hidden
from tfbreath.ensemble import WeightedSigmoidAverage
from tfbreath.features import FeatureExtractor
from tfbreath.precision import FLOAT32, float32_copy, global_policy
from tfbreath.tflite_file import TFLiteFileError, verify_tflite

TFLITE_BATCH = 64
"""Clips per interpreter call: bounds the interpreter's arena (the feature maps of a clip take
~0.3 MB) however many clips a caller passes."""


WAVEFORM = "waveform"
"""Input name of a waveform model and of its SavedModel signature."""
PROBABILITY = "probability"
"""Output name: P(exhale) per clip."""


def load_trained_model(path: str | Path) -> keras.Model:
    """A ``.keras`` model of a run, for inference, in float32 whatever policy it was trained under
    (``precision.float32_copy``). Its members were saved compiled with the training metric,
    which has to be known to load them."""
    model = keras.models.load_model(path, compile=False,
                                    custom_objects={"dominant_label_accuracy": train.dominant_label_accuracy})
    return float32_copy(model)


def outputs_probability(model: keras.Model) -> bool:
    """True for an ensemble (ends in a probability), False for a member (ends in a logit)."""
    return isinstance(model.layers[-1], WeightedSigmoidAverage)


@keras.saving.register_keras_serializable(package="tfbreath")
class MapAveragePooling2D(keras.layers.Layer):
    """Global average pooling as one full-map average pool: ``[B, H, W, C]`` -> ``[B, C]``.

    ``GlobalAveragePooling2D`` converts to a TFLite MEAN, which TFLite 2.17's default XNNPACK
    delegate runs wrongly from a batch of 256 up (batch mod 256 rows out, heap corruption);
    AVERAGE_POOL_2D gives the same numbers at any batch.
    """

    def call(self, x):
        window = tuple(x.shape[1:3])  # (H, W)
        pooled = keras.ops.average_pool(x, pool_size=window, strides=window, padding="valid")  # [B, 1, 1, C]
        return keras.ops.reshape(pooled, (-1, x.shape[-1]))  # [B, C]


def with_map_average_pooling(model: keras.Model) -> keras.Model:
    """A copy of ``model`` (nested models included) sharing its weights, with every
    channels-last ``GlobalAveragePooling2D`` replaced by ``MapAveragePooling2D``."""
    def swap(layer):
        if (isinstance(layer, keras.layers.GlobalAveragePooling2D) and not layer.keepdims
                and layer.data_format == "channels_last"):
            return MapAveragePooling2D(name=layer.name, dtype=layer.dtype_policy.name)
        return layer  # the same layer: its weights are shared, not re-initialised

    return keras.models.clone_model(model, clone_function=swap, recursive=True)


def probability_model(model: keras.Model) -> keras.Model:
    """``model`` + sigmoid (for a member's logit): its feature inputs -> ``[B]`` P(exhale), float32
    throughout whatever policy ``model`` was built under."""
    with global_policy(FLOAT32):
        inputs = {name: keras.Input(x.shape[1:], name=name, dtype=FLOAT32) for name, x in model.input.items()}
        output = with_map_average_pooling(float32_copy(model))(inputs)  # [B, 1]
        if not outputs_probability(model):
            output = keras.layers.Activation("sigmoid", name="sigmoid")(output)
        probability = keras.layers.Reshape((), name=PROBABILITY)(output)  # [B]
        return keras.Model(inputs, probability, name=f"{model.name}_probability")


def feature_model(pipeline: PipelineConfig) -> keras.Model:
    """The pipeline's in-graph features as a model: ``[B, samples]`` -> ``{"spectral", "scalars"}``."""
    waveform = keras.Input((pipeline.audio.num_samples,), name=WAVEFORM, dtype=FLOAT32)
    return keras.Model(waveform, FeatureExtractor.for_pipeline(pipeline, name="features")(waveform),
                       name="features")


def waveform_model(model: keras.Model, pipeline: PipelineConfig) -> keras.Model:
    """Feature extraction + ``model`` + sigmoid: ``[B, samples]`` audio -> ``[B]`` P(exhale), float32."""
    extractor = feature_model(pipeline)
    features = extractor.output  # {"spectral": [B, M, T, C], "scalars": [B, 39]}
    made = {name: tuple(x.shape[1:]) for name, x in features.items()}
    wanted = {name: tuple(x.shape[1:]) for name, x in model.input.items()}
    if any(made.get(name) != shape for name, shape in wanted.items()):
        raise ConfigError(f"model {model.name!r} takes {wanted}, but its pipeline makes {made}")
    probability = probability_model(model)({name: features[name] for name in model.input})  # [B]
    return keras.Model(extractor.input, probability, name=f"{model.name}_waveform")


class TFLiteClassifier:
    """Runs a waveform ``.tflite``: ``[N, samples]`` float32 -> ``[N]`` P(exhale), builtin ops only.

    ``model`` is a flatbuffer just made, or a file, which is checked first
    (``tflite_file.verify_tflite`` raises ``TFLiteFileError`` where the interpreter would crash).
    """

    def __init__(self, model: bytes | str | Path, num_threads: int | None = None):
        flatbuffer = model if isinstance(model, bytes) else verify_tflite(model)
        self.interpreter = tf.lite.Interpreter(
            model_content=flatbuffer, num_threads=num_threads,
            experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN)
        inputs, outputs = self.interpreter.get_input_details(), self.interpreter.get_output_details()
        waveform_in = len(inputs) == 1 and len(inputs[0]["shape"]) == 2 and inputs[0]["dtype"] == np.float32
        one_out = len(outputs) == 1 and int(np.prod(outputs[0]["shape"][1:])) == 1
        if not (waveform_in and one_out):
            raise TFLiteFileError(f"{'the flatbuffer' if isinstance(model, bytes) else model}: not a waveform "
                                  f"classifier (one float32 [N, samples] input, one P per clip out); takes "
                                  f"{_tensors(inputs)}, gives {_tensors(outputs)}")
        self.input, self.output = inputs[0], outputs[0]
        self.num_samples = int(self.input["shape"][-1])
        self._batch = None

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        waveforms = np.asarray(waveforms, np.float32).reshape(-1, self.num_samples)
        return np.concatenate([self._invoke(waveforms[i:i + TFLITE_BATCH])
                               for i in range(0, len(waveforms), TFLITE_BATCH)] or [np.zeros(0, np.float32)])

    def _invoke(self, waveforms: np.ndarray) -> np.ndarray:
        if self._batch != len(waveforms):
            self.interpreter.resize_tensor_input(self.input["index"], waveforms.shape)
            with native_notes_hidden():  # the XNNPACK delegate's INFO line
                self.interpreter.allocate_tensors()
            self._batch = len(waveforms)
        self.interpreter.set_tensor(self.input["index"], waveforms)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self.output["index"]).reshape(-1).copy()


def _tensors(details: list[dict]) -> list[tuple[tuple[int, ...], str]]:
    """The shape and dtype of each of an interpreter's inputs or outputs, for a message."""
    return [(tuple(int(n) for n in x["shape"]), np.dtype(x["dtype"]).name) for x in details]


def load_waveforms(files, pipeline: PipelineConfig) -> np.ndarray:
    """Decoded clips ``[N, samples]`` at the pipeline's rate and length."""
    audio = pipeline.audio
    return np.stack([load_audio(f, audio.sample_rate, audio.duration_s) for f in files])
