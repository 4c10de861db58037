"""Model inputs from waveforms, in-graph: the spectral maps and the scalar vector.

``extract_features(y, pipeline)`` maps ``[..., samples]`` to
``{"spectral": [..., n_mels, frames, C], "scalars": [..., 39]}`` (``"scalars"`` only when the
config asks for them). It is a pure TF function: call it directly, inside ``Dataset.map`` or in
an exported model.

Command line (features of the default or a given pipeline, skipped files reported)::

    python -m tfbreath.features WAV_OR_DIR... --out FILE.npz [--pipeline pipelines/x.toml]

writes one array per map name ``[N, n_mels, frames]``, ``scalars [N, 39]`` and ``files [N]`` of the
files that decoded, to exactly ``FILE.npz`` (atomically: an interrupted run leaves no partial file).
Files that cannot be read or decoded are skipped, counted and reported on stderr.
Exit code: 0 every file written; 1 some skipped (all skipped: ``error: no file could be decoded``,
nothing written); 2 bad arguments, pipeline, inputs or output (one ``error: ...`` line).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tfbreath import artifacts, filters, maps, scalars, spectral
from tfbreath.config import (NO_BAND_LIMIT, NO_LEVEL, SCALARS, SPECTRAL, PipelineConfig, dump_config,
                             load_config, parse_config)
from tfbreath.errors import TfbreathError, print_error


EXIT_OK = 0
EXIT_SKIPPED = 1
EXIT_USAGE = 2


def extract_features(y: tf.Tensor, pipeline: PipelineConfig,
                     fft_mode: spectral.FftMode = spectral.FftMode()) -> dict[str, tf.Tensor]:
    """Waveforms at the pipeline's rate to model inputs. ``[..., n]`` -> dict of ``[..., ...]``

    ``fft_mode`` builds every FFT of the graph (``spectral.FftMode``): the default for a graph TF
    runs itself, ``tflite_compatible`` for a TFLite conversion, ``one_thread`` in a tf.data map.
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

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        return {**config, "pipeline_toml": self.pipeline_toml, "tflite_compatible": self.tflite_compatible}


def tflite_compatible_copy(model: keras.Model) -> keras.Model:
    """``model`` with its ``FeatureExtractor`` layers rebuilt ``tflite_compatible``, sharing every
    other layer (and so the weights); ``model`` itself if it has no such layer.

    Only top-level layers are looked at, where ``export.feature_model`` and ``waveform_model``
    put the extractor.
    """
    if not any(isinstance(layer, FeatureExtractor) for layer in model.layers):
        return model

    def rebuild(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, FeatureExtractor):
            return FeatureExtractor.from_config({**layer.get_config(), "tflite_compatible": True})
        return layer

    return keras.models.clone_model(model, clone_function=rebuild)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tfbreath.features",
        description="Compute the pipeline's spectral maps and scalars for WAV files, in-graph.")
    parser.add_argument("inputs", nargs="+", help="WAV files or folders of WAV files")
    parser.add_argument("--out", required=True, help="output .npz file")
    parser.add_argument("--pipeline", help="pipeline TOML (default: the embedded breath-phase recipe)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    from tfbreath import data  # data builds on this module

    args = _parse_args(argv)
    out_path = Path(args.out)
    try:
        pipeline = load_config(args.pipeline) if args.pipeline else PipelineConfig()
        files = data.collect_wav_files(args.inputs)
        artifacts.check_writable(out_path)  # before the extraction, not after it
    except TfbreathError as err:
        return print_error(err)
    feature_set = data.extract(files, None, pipeline, description="features")
    print(feature_set.report, file=sys.stderr)
    report = feature_set.report
    if len(report.skipped) == report.total:
        print(f"error: no file could be decoded ({report.total} skipped); nothing written", file=sys.stderr)
        return EXIT_SKIPPED
    arrays = feature_set.to_numpy()
    out = {name: arrays[SPECTRAL][..., channel] for channel, name in enumerate(pipeline.features.maps)}
    if SCALARS in arrays:
        out[SCALARS] = arrays[SCALARS]
    out["files"] = np.array([str(p) for p in arrays["files"]])
    npz = io.BytesIO()
    np.savez(npz, **out)  # to a buffer: np.savez would add ".npz" to a name without it
    try:
        artifacts.write_bytes(out_path, npz.getvalue())
    except OSError as err:
        print(f"error: {out_path}: cannot be written ({err.strerror})", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote {len(out['files'])} file(s) to {out_path}", file=sys.stderr)
    return EXIT_SKIPPED if report.skipped else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
