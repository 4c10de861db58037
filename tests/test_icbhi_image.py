"""ICBHI image input (``[spectrogram] input = "image"``): the in-graph rendering against an independent
NumPy/librosa/matplotlib one, its channel statistics, and the model that normalises by them."""

from __future__ import annotations

import keras
import librosa
import matplotlib
import numpy as np
import pytest
import tensorflow as tf

from conftest import sine
from tfbreath.config import with_overrides
from tfbreath.icbhi import image, trainer
from tfbreath.icbhi.config import IcbhiConfig, ModelConfig
from tfbreath.icbhi.dataset import CycleSet, load_cycle_sets
from tfbreath.icbhi.finetune import DeviceModels
from tfbreath.icbhi.reader import IcbhiError
from tfbreath.icbhi.resnet import NORMALIZATION, build_respirenet
from tfbreath.icbhi.spectrogram import clip_blank_rows, cycle_spectrogram, scaled_image, spectrogram_shape
from tfbreath.icbhi.synthetic import write_synthetic_icbhi

IMAGE = with_overrides(with_overrides(IcbhiConfig(), "audio", cycle_s=2.0), "spectrogram", input="image")
"""2-s cycles rendered as the authors' 3x magma image."""
UNCLIPPED = with_overrides(IMAGE, "spectrogram", clip_blank=False)
"""The reference rendering below has no blank-region clipping."""
TINY = ModelConfig(width=1 / 16, dense_units=8)

ROUND_OFF = 1e-5
"""float32 bilinear weights (thirds) against float64 ones: measured up to 2.5e-6, 1/1500 of a level."""

LEVEL = 1 / 255
"""One grey level of the 8-bit image."""
FLIPPED_SHARE = 0.01
"""At most this share of spectrogram pixels may land one grey level apart from the reference:
the in-graph dB and librosa's differ by round-off (< 0.01 dB), which moves a pixel across a level
boundary only when it sits that close to one (measured: no pixel on this file's clips)."""


def _waveform(seed: int, config: IcbhiConfig) -> np.ndarray:
    """A tone, a sweep and noise under a swell: structure in every band. ``[samples]`` float32"""
    rate, n = config.audio.sample_rate, config.audio.num_samples
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    sweep = np.sin(2 * np.pi * (100.0 + 400.0 * t) * t)
    swell = np.sin(np.pi * t / t[-1]) ** 2
    tone = sine(rng.uniform(200.0, 900.0), config.audio.cycle_s, rate, 0.3)
    return (tone + 0.2 * sweep * swell + 0.05 * rng.standard_normal(n)).astype(np.float32)


def _upscale_reference(rgb: np.ndarray, scale: int) -> np.ndarray:
    """Bilinear upscaling with half-pixel centres and clamped edges, as cv2.INTER_LINEAR. ``[H, W, C]``"""
    def taps(size: int):
        source = np.clip((np.arange(size * scale) + 0.5) / scale - 0.5, 0, size - 1)
        lower = np.floor(source).astype(int)
        return lower, np.minimum(lower + 1, size - 1), source - lower

    lower, upper, weight = taps(rgb.shape[0])
    rows = rgb[lower] * (1 - weight)[:, None, None] + rgb[upper] * weight[:, None, None]
    lower, upper, weight = taps(rgb.shape[1])
    return rows[:, lower] * (1 - weight)[None, :, None] + rows[:, upper] * weight[None, :, None]


def _levels_reference(y: np.ndarray, config: IcbhiConfig) -> np.ndarray:
    """RespireNet's ``create_mel_raw`` up to the uint8 image, by librosa. ``[n_mels, frames]`` (row 0 = lowest band)"""
    spec = config.spectrogram
    mel = librosa.feature.melspectrogram(y=y, sr=config.audio.sample_rate, n_fft=spec.n_fft,
                                         hop_length=spec.hop_length, n_mels=spec.n_mels, fmin=spec.fmin,
                                         fmax=spec.fmax)
    db = librosa.power_to_db(mel, ref=np.max, top_db=spec.top_db)
    scaled = (db - db.min()) / (db.max() - db.min())
    return (scaled * 255).astype(np.uint8)


def _render_reference(levels: np.ndarray, scale: int) -> np.ndarray:
    """Magma colours, upscaled, flipped (low bands at the bottom). ``[n_mels, frames] -> [sH, sW, 3]``"""
    rgb = matplotlib.colormaps["magma"](levels)[..., :3]  # integer input: the colour table's entries
    return _upscale_reference(rgb, scale)[::-1]


# ----------------------------------------------------------------------------- rendering

def test_rendering_matches_numpy_librosa_and_matplotlib():
    y = _waveform(0, UNCLIPPED)
    levels = _levels_reference(y, UNCLIPPED)
    got_levels = np.floor(scaled_image(y, UNCLIPPED).numpy() * np.float32(255)).astype(int)[::-1]
    flipped = got_levels != levels
    assert np.abs(got_levels - levels.astype(int)).max() <= 1 and flipped.mean() <= FLIPPED_SHARE

    # With the same levels the two renderings agree to round-off...
    scale = UNCLIPPED.spectrogram.image_scale
    exact = _render_reference(got_levels, scale)
    rendered = cycle_spectrogram(y, UNCLIPPED).numpy()
    assert rendered.shape == exact.shape == spectrogram_shape(UNCLIPPED)
    np.testing.assert_allclose(rendered, exact, atol=ROUND_OFF)
    # ... and against librosa's levels only near the flipped pixels, by at most one level's colour step.
    step = np.abs(np.diff(image.magma_table(), axis=0)).max()
    difference = np.abs(rendered - _render_reference(levels, scale))
    assert difference.max() <= step + ROUND_OFF
    reach = (2 * scale) ** 2 / scale ** 2  # bilinear taps: a flipped pixel changes (2 s)^2 image pixels, not s^2
    assert (difference.max(axis=-1) > ROUND_OFF).mean() <= reach * FLIPPED_SHARE


def test_upscale_and_colour_map_alone_match_numpy():
    rgb = np.random.default_rng(1).random((5, 7, 3), dtype=np.float32)
    for scale in (1, 2, 3):
        np.testing.assert_allclose(image.upscale(rgb, scale).numpy(), _upscale_reference(rgb, scale), atol=ROUND_OFF)
    table = matplotlib.colormaps["magma"](np.arange(image.LEVELS))[:, :3]
    np.testing.assert_allclose(image.magma_table(), table, atol=1e-7)
    grey = np.array([[0.0, 0.999 * LEVEL, 1.001 * LEVEL, 0.5, 1.0]], np.float32)  # truncated, not rounded
    np.testing.assert_allclose(image.colour_map(grey).numpy()[0], table[[0, 0, 1, 127, 255]], atol=1e-7)


def test_blank_clipping_runs_on_the_grey_image_before_the_colour_map():
    y = _waveform(2, IMAGE)
    clipped = clip_blank_rows(scaled_image(y[None], IMAGE), IMAGE.spectrogram)
    np.testing.assert_allclose(cycle_spectrogram(y, IMAGE).numpy(),
                               image.render(clipped, IMAGE.spectrogram.image_scale).numpy()[0], atol=1e-6)


@pytest.mark.parametrize("scale", [1, 3])
def test_silence_is_level_0_everywhere_in_the_configured_shape(scale):
    config = with_overrides(IMAGE, "spectrogram", image_scale=scale)
    rendered = cycle_spectrogram(np.zeros((2, config.audio.num_samples), np.float32), config).numpy()
    height, width, channels = spectrogram_shape(config)
    assert (height, width, channels) == (config.spectrogram.n_mels * scale,
                                         (1 + config.audio.num_samples // config.spectrogram.hop_length) * scale, 3)
    assert rendered.shape == (2, height, width, channels) and rendered.dtype == np.float32
    np.testing.assert_allclose(rendered, np.broadcast_to(image.magma_table()[0], rendered.shape), atol=1e-7)


def test_batched_unbatched_and_dataset_map_agree():
    waveforms = np.stack([_waveform(seed, IMAGE) for seed in range(3)])
    direct = cycle_spectrogram(waveforms, IMAGE).numpy()
    assert direct.shape == (3, *spectrogram_shape(IMAGE)) and 0.0 <= direct.min() and direct.max() <= 1.0
    np.testing.assert_allclose(cycle_spectrogram(waveforms[1], IMAGE).numpy(), direct[1], atol=1e-6)
    nested = cycle_spectrogram(waveforms[None], IMAGE)
    assert nested.shape == (1, *direct.shape)
    single = tf.data.Dataset.from_tensor_slices(waveforms).map(lambda w: cycle_spectrogram(w, IMAGE))
    np.testing.assert_allclose(np.stack(list(single.as_numpy_iterator())), direct, atol=1e-6)
    batched = tf.data.Dataset.from_tensor_slices(waveforms).batch(2).map(lambda w: cycle_spectrogram(w, IMAGE))
    np.testing.assert_allclose(np.concatenate(list(batched.as_numpy_iterator())), direct, atol=1e-6)


def test_grey_input_keeps_its_shape():
    grey = with_overrides(IMAGE, "spectrogram", input="grey")
    assert spectrogram_shape(grey) == (grey.spectrogram.n_mels, spectrogram_shape(IMAGE)[1] // 3, 1)


# ----------------------------------------------------------------------------- statistics and the model

def test_channel_statistics_equal_numpy_over_the_rendered_images():
    config = with_overrides(IMAGE, "train", batch_size=2)  # 5 cycles: 3 batches, the last one short
    waveforms = np.stack([_waveform(seed, config) for seed in range(5)])
    cycles = CycleSet(waveforms, np.zeros(5, np.int64), np.array(["Meditron"] * 5), np.array(["r"] * 5))
    mean, std = image.channel_statistics(cycles, config)
    rendered = cycle_spectrogram(waveforms, config).numpy().astype(np.float64)
    np.testing.assert_allclose(mean, rendered.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(std, rendered.std(axis=(0, 1, 2)), rtol=1e-5)
    assert mean.shape == std.shape == (3,) and mean.dtype == std.dtype == np.float32


def test_image_model_normalises_and_keeps_it_through_a_keras_file(tmp_path):
    shape = (24, 40, 3)
    mean, std = np.array([0.4, 0.15, 0.45], np.float32), np.array([0.25, 0.12, 0.1], np.float32)
    model = build_respirenet(shape, 4, TINY, (mean, std))
    plain = build_respirenet(shape, 4, TINY)
    plain.set_weights(model.get_weights())  # the normalisation has no weights: the same list
    rng = np.random.default_rng(4)
    x = rng.random((2, *shape), dtype=np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), plain.predict((x - mean) / std, verbose=0), atol=1e-5)
    at_mean = np.broadcast_to(mean, (1, *shape))
    np.testing.assert_allclose(model.predict(at_mean, verbose=0), plain.predict(np.zeros((1, *shape)), verbose=0),
                               atol=1e-6)
    model.save(tmp_path / "image.keras")
    loaded = keras.models.load_model(tmp_path / "image.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    with pytest.raises(IcbhiError, match="3 means and stds"):
        build_respirenet(shape, 4, TINY, (mean[:2], std[:2]))


def test_a_run_saves_the_training_statistics_in_every_model_and_resumes(tmp_path):
    config = with_overrides(IMAGE, "audio", cycle_s=1.0)
    config = with_overrides(config, "spectrogram", n_mels=16, image_scale=2)
    config = with_overrides(config, "model", width=1 / 16, dense_units=8)
    config = with_overrides(config, "augment", concat=False, noise_probability=0.0, speed_probability=0.0,
                            shift_probability=0.0)
    config = with_overrides(config, "train", batch_size=8, epochs=1, finetune_epochs=1, precision="float32")
    root = write_synthetic_icbhi(tmp_path / "data", n_patients=4, recordings_per_patient=1, cycles_per_recording=4)
    summary = trainer.run(config, root, tmp_path / "run")
    train_set, _, _ = load_cycle_sets(config, root, progress=False)
    mean, std = image.channel_statistics(train_set, config)
    files = sorted((tmp_path / "run").glob("*.keras"))
    assert len(files) == 1 + len(summary["finetuned_devices"]) > 1
    for path in files:
        layer = keras.models.load_model(path, compile=False).get_layer(NORMALIZATION).get_config()
        np.testing.assert_allclose(layer["mean"], mean, rtol=1e-6)
        np.testing.assert_allclose(np.sqrt(layer["variance"]), std, rtol=1e-6)
    devices = DeviceModels.load(tmp_path / "run")
    assert devices.model.input_shape[1:] == spectrogram_shape(config)
    again = trainer.run(config, root, tmp_path / "run")  # every stage loaded, nothing trained
    assert again["stage1"]["score"] == summary["stage1"]["score"]
    assert again[trainer.FINETUNED]["score"] == summary[trainer.FINETUNED]["score"]

