"""The temporal CNN member: frames built from the right axis, the documented shapes, and a task
only a model of time order can solve. (Round trip, precision and input plumbing: test_models.py.)"""

from __future__ import annotations

import keras
import numpy as np

from conftest import compile_for_test
from tfbreath.models import SCALAR_NORM, SCALARS, SPECTRAL, build_model
from tfbreath.models.blocks import scaled
from tfbreath.models.temporal import PROJECTION, STAGES

DEFAULT_SHAPE = (128, 63, 6)
DEFAULT_SCALARS = 39
TINY_SHAPE = (8, 12, 2)
TINY_WIDTH = 0.0625


def test_frames_hold_every_band_of_every_map_at_one_time_step():
    """``frames[b, t, h * k + c] == spectral[b, h, t, c]``: the convs slide along time, not bands."""
    model = build_model("temporal", TINY_SHAPE, 0, width=TINY_WIDTH)
    x = np.random.default_rng(0).standard_normal((2, *TINY_SHAPE)).astype(np.float32)
    frames = np.asarray(keras.Model(model.input, model.get_layer("frames").output)({SPECTRAL: x}))
    bands, steps, maps = TINY_SHAPE
    assert frames.shape == (2, steps, bands * maps)
    np.testing.assert_array_equal(frames, x.transpose(0, 2, 1, 3).reshape(2, steps, bands * maps))


def test_default_sizes_follow_the_module_docstring():
    model = build_model("temporal", DEFAULT_SHAPE, DEFAULT_SCALARS)
    assert model.get_layer("frames").output.shape == (None, 63, 128 * 6)
    assert model.get_layer("projection_conv").output.shape == (None, 63, 256)
    assert model.get_layer("temporal2_pool").output.shape == (None, 31, 256)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv1D)]
    assert [(c.filters, c.kernel_size[0]) for c in convs] == [(256, 1), *STAGES]
    assert model.get_layer("global_pool").output.shape == (None, 2 * 512)
    assert isinstance(model.get_layer("temporal2_pool"), keras.layers.MaxPooling1D)
    assert isinstance(model.get_layer("global_average"), keras.layers.GlobalAveragePooling1D)
    assert isinstance(model.get_layer("global_max"), keras.layers.GlobalMaxPooling1D)


def test_one_pool_after_the_second_conv_only():
    """The frames are halved once: convs 3 and 4 run at the pooled length ([B, 31, 512])."""
    model = build_model("temporal", DEFAULT_SHAPE, DEFAULT_SCALARS)
    assert model.get_layer("temporal4_conv").output.shape == (None, 31, 512)
    assert [layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling1D)] == ["temporal2_pool"]


def test_width_scales_the_projection_and_every_conv():
    model = build_model("temporal", TINY_SHAPE, 0, width=TINY_WIDTH)
    convs = [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv1D)]
    assert convs == [scaled(PROJECTION, TINY_WIDTH), *(scaled(filters, TINY_WIDTH) for filters, _ in STAGES)]


def test_channels_pick_the_maps_it_reads():
    """With ``channels=[1]`` the logit moves with map 1 and never with map 0."""
    model = build_model("temporal", TINY_SHAPE, 0, width=TINY_WIDTH, channels=[1])
    assert model.get_layer("frames").output.shape == (None, TINY_SHAPE[1], TINY_SHAPE[0])
    x = np.random.default_rng(0).standard_normal((2, *TINY_SHAPE)).astype("float32")
    other_map, read_map = x.copy(), x.copy()
    other_map[..., 0] += 3.0
    read_map[..., 1] += 3.0
    logit = model({"spectral": x}).numpy()
    np.testing.assert_array_equal(model({"spectral": other_map}).numpy(), logit)
    assert np.abs(model({"spectral": read_map}).numpy() - logit).max() > 1e-4


def test_learns_whether_the_level_rises_or_falls():
    """Every clip has the same bands and the same mean level; only the direction of its level ramp
    tells the classes apart (as an inhale swells and an exhale fades). Pooled statistics cannot
    separate them; a working temporal CNN does, in inference mode."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(5)
    n = 64
    bands, steps, maps = TINY_SHAPE
    rising = np.arange(n) % 2 == 0
    ramp = np.linspace(-1.0, 1.0, steps, dtype=np.float32)  # [T]
    level = np.where(rising[:, None], ramp, -ramp)  # [N, T]
    x = {SPECTRAL: (level[:, None, :, None] + 0.5 * rng.standard_normal((n, bands, steps, maps))).astype(np.float32),
         SCALARS: rng.standard_normal((n, 3)).astype(np.float32)}
    y = rising.astype(np.float32)[:, None]
    np.testing.assert_allclose(x[SPECTRAL][rising].mean(), x[SPECTRAL][~rising].mean(), atol=0.05)

    model = build_model("temporal", TINY_SHAPE, 3, width=TINY_WIDTH, dropout=0.0)
    model.get_layer(SCALAR_NORM).adapt(x[SCALARS])
    compile_for_test(model, learning_rate=1e-2)
    _, chance = model.evaluate(x, y, batch_size=n, verbose=0)
    model.fit(x, y, batch_size=16, epochs=6, shuffle=True, verbose=0)
    _, accuracy = model.evaluate(x, y, batch_size=n, verbose=0)  # inference mode
    assert accuracy > 0.9 > chance
