"""Model inputs from waveforms, in-graph: the spectral maps and the scalar vector.

``extract_features(y, pipeline)`` maps ``[..., samples]`` to
``{"spectral": [..., n_mels, frames, C], "scalars": [..., 39]}`` (``"scalars"`` only when the
config asks for them). It is a pure TF function: call it directly, inside ``Dataset.map`` or in
an exported model.

The command line ``python -m tfbreath.features`` (``tfbreath/features/__main__.py``) writes them
for WAV files to one ``.npz``.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tfbreath import filters, maps, scalars, spectral
from tfbreath.config import NO_BAND_LIMIT, NO_LEVEL, SCALARS, SPECTRAL, PipelineConfig, dump_config, parse_config


@tf.autograph.experimental.do_not_convert
def extract_features(y: tf.Tensor, pipeline: PipelineConfig,
                     fft_mode: spectral.FftMode = spectral.FftMode()) -> dict[str, tf.Tensor]:
    """Waveforms at the pipeline's rate to model inputs. ``[..., n]`` -> dict of ``[..., ...]``

    ``fft_mode`` builds every FFT of the graph (``spectral.FftMode``): the default for a graph TF
    runs itself (a tf.data map too), ``tflite_compatible`` for a TFLite conversion.
    """
    with tf.name_scope("extract_features"):
        rate = pipeline.audio.sample_rate
        features = pipeline.features
        flat, restore = spectral.flatten_batch(y)  # [B, n]
        if features.band_limit_hz != NO_BAND_LIMIT:
            flat = spectral.fir_filter(flat, filters.lowpass_taps(rate, features.band_limit_hz))  # [B, n]
        if features.level_rms != NO_LEVEL:
            flat = spectral.scale_to_rms(flat, features.level_rms)  # [B, n]
        # STFTs shared by the maps and the scalars, zero above the band limit if there is one
        cache = spectral.SpectrogramCache(flat, rate, features.band_limit_hz, fft_mode)
        out = {SPECTRAL: restore(maps.maps_from_cache(cache, rate, features))}  # [..., n_mels, T, C]
        if features.scalars:
            out[SCALARS] = restore(scalars.scalars_from_cache(cache, rate, features.hop_length))  # [..., 39]
        return out


@keras.saving.register_keras_serializable(package="tfbreath")
class FeatureExtractor(keras.layers.Layer):
    """``extract_features`` as a Keras layer: waveforms ``[B, samples]`` -> ``{"spectral", "scalars"}``.

    The pipeline travels in the layer's config as TOML, so a saved waveform-input model carries
    its own feature recipe. Always float32, whatever the global dtype policy; no weights.
    ``tflite_compatible`` builds the features of TFLite builtin ops only (``spectral.FftMode``):
    an export serves a copy with it on (``tflite_compatible_copy``); off, TF runs its faster FFTs.
    """

    def __init__(self, pipeline_toml: str, tflite_compatible: bool = False, **kwargs):
        kwargs["dtype"] = "float32"
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.pipeline_toml = pipeline_toml
        self.pipeline = parse_config(pipeline_toml, source=f"layer {self.name}")
        self.tflite_compatible = tflite_compatible

    @classmethod
    def for_pipeline(cls, pipeline: PipelineConfig, **kwargs) -> "FeatureExtractor":
        return cls(dump_config(pipeline), **kwargs)

    def call(self, waveforms):
        fft_mode = spectral.FftMode(tflite_compatible=self.tflite_compatible)
        return extract_features(waveforms, self.pipeline, fft_mode)  # {"spectral": [B, M, T, C], "scalars": [B, 39]}

    def compute_output_spec(self, waveforms):
        """The outputs' shapes from the pipeline, without tracing ``call`` (a whole feature graph,
        seconds per trace) each time a model is built or cloned around the layer."""
        batch = tuple(waveforms.shape[:-1])  # [...] of [..., samples]
        spec = {SPECTRAL: keras.KerasTensor((*batch, *self.pipeline.spectral_shape), "float32")}
        if self.pipeline.features.scalars:
            spec[SCALARS] = keras.KerasTensor((*batch, self.pipeline.features.n_scalars), "float32")
        return spec

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        return {**config, "pipeline_toml": self.pipeline_toml, "tflite_compatible": self.tflite_compatible}


def tflite_compatible_copy(model: keras.Model) -> keras.Model:
    """``model`` with its ``FeatureExtractor`` layers rebuilt ``tflite_compatible``, sharing every
    other layer (and so the weights); ``model`` itself if it has no such layer.

    Only top-level layers are looked at, where ``serving.feature_model`` and ``waveform_model``
    put the extractor.
    """
    if not any(isinstance(layer, FeatureExtractor) for layer in model.layers):
        return model

    def rebuild(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, FeatureExtractor):
            return FeatureExtractor.from_config({**layer.get_config(), "tflite_compatible": True})
        return layer

    return keras.models.clone_model(model, clone_function=rebuild)
