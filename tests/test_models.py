"""CNN8, VGG and the temporal CNN: paper parameter counts, input plumbing, .keras round trip, mixed
precision and a tiny overfit that proves the graph learns.

Tiny models (a few hundred to a few thousand conv weights, 16x12 inputs) keep the file fast on
two CPU cores. Short fits run eagerly: tracing a train graph costs ~7 s per model, several
eager steps cost less.
"""

from __future__ import annotations

import numpy as np
import pytest
import keras

from conftest import compile_for_test
from tfbreath.config import CNN_MODELS, MAP_NAMES, MODEL_NAMES, FeatureConfig, PipelineConfig
from tfbreath.maps import MAP_BUILDERS
from tfbreath.models import (LOGIT, MODEL_BUILDERS, SCALAR_NORM, SCALARS, SPECTRAL,
                             build_model, build_model_for_pipeline)
from tfbreath.models.blocks import MIN_FILTERS

PAPER_SHAPE = (128, 63, 9)
PAPER_SCALARS = 39
# Exact trainable parameters at the paper's sizes (equal to the authors' PyTorch models).
PAPER_PARAMS = {"cnn8": (2_433_665, 2.43), "vgg": (8_146_177, 8.15)}
CNN8_LITERAL_PARAMS = 1_298_849  # "2 convs per stage" reading, for the record

TINY_SHAPE = (16, 12, 3)
TINY_SCALARS = 5
TINY_WIDTH = {"cnn8": 0.125, "vgg": 0.0625, "temporal": 0.0625}
MODELS = sorted(CNN_MODELS)
PAPER_MODELS = sorted(PAPER_PARAMS)


def trainable_params(model: keras.Model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def tiny(name: str, shape=TINY_SHAPE, n_scalars=TINY_SCALARS, **kwargs) -> keras.Model:
    return build_model(name, shape, n_scalars, width=TINY_WIDTH[name], **kwargs)


def random_inputs(n: int, shape=TINY_SHAPE, n_scalars=TINY_SCALARS, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    x = {SPECTRAL: rng.standard_normal((n, *shape)).astype(np.float32)}
    if n_scalars:
        x[SCALARS] = rng.standard_normal((n, n_scalars)).astype(np.float32)
    return x


@pytest.fixture
def policy():
    """Set a global dtype policy for one test; the previous one is restored afterwards."""
    previous = keras.mixed_precision.global_policy()
    try:
        yield keras.mixed_precision.set_global_policy
    finally:
        keras.mixed_precision.set_global_policy(previous)


# --- paper sizes ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PAPER_MODELS)
def test_full_size_trainable_parameters_match_the_paper(name):
    exact, millions = PAPER_PARAMS[name]
    model = build_model(name, PAPER_SHAPE, PAPER_SCALARS)
    count = trainable_params(model)
    assert count == exact
    assert round(count / 1e6, 2) == millions
    # BatchNorm moving statistics and the scalar normaliser are not trainable.
    assert model.count_params() > count


def test_cnn8_has_eight_3x3_convs_rising_32_64_128_256():
    model = build_model("cnn8", PAPER_SHAPE, PAPER_SCALARS)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.filters for c in convs] == [32, 64, 128, 128, 256, 256, 256, 256]
    assert all(c.kernel_size == (3, 3) for c in convs)
    pools = [layer.name for layer in model.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    assert pools == ["stage2_pool", "stage3_pool"]
    assert model.get_layer("global_pool").output.shape == (None, 256)
    literal = build_model("cnn8", PAPER_SHAPE, PAPER_SCALARS,
                          stages=((32, 32), (64, 64), (128, 128), (256, 256)),
                          pool_after=(True,) * 4)
    assert trainable_params(literal) == CNN8_LITERAL_PARAMS


@pytest.mark.parametrize("name, norm_first", [("cnn8", False), ("vgg", True), ("temporal", False)])
def test_units_order_activation_and_batch_norm_as_the_authors_code(name, norm_first):
    """CNN8 and the temporal CNN: conv (bias) -> activation -> BN; VGG: conv (no bias) -> BN ->
    activation; the same in the dense units."""
    model = build_model(name, PAPER_SHAPE, PAPER_SCALARS)
    activations = [layer for layer in model.layers if isinstance(layer, keras.layers.Activation)]
    assert len(activations) >= 8
    for activation in activations:
        norm = model.get_layer(f"{activation.name.rsplit('_', 1)[0]}_bn")
        first, second = (norm, activation) if norm_first else (activation, norm)
        assert second.input is first.output, activation.name


# Every dropout layer of the authors' code: {name: (kind, rate)} at the default dropout
# (CNN8 and the temporal CNN 0.3, VGG 0.2 and half that in block 1).
DROPOUTS = {
    "cnn8": {"stage3_dropout": ("SpatialDropout2D", 0.3), "scalar1_dropout": ("Dropout", 0.3),
             "head1_dropout": ("Dropout", 0.3)},
    "vgg": {**{f"block{b}_dropout": ("SpatialDropout2D", 0.2) for b in (2, 3, 4)},
            "block1_dropout": ("SpatialDropout2D", 0.1), "scalar1_dropout": ("Dropout", 0.2),
            "head1_dropout": ("Dropout", 0.2), "head2_dropout": ("Dropout", 0.2)},
    "temporal": {"temporal_dropout": ("SpatialDropout1D", 0.3), "scalar1_dropout": ("Dropout", 0.3),
                 "head1_dropout": ("Dropout", 0.3)},
}
ACTIVATIONS = {"cnn8": "relu", "vgg": "gelu", "temporal": "relu"}


@pytest.mark.parametrize("name", MODELS)
def test_dropouts_and_activations_are_the_authors(name):
    """Which layers drop out, of which kind (spatial after the convs) and at which rate, and the
    one activation of each model: none of these changes a shape or a parameter count."""
    model = tiny(name)
    dropouts = {layer.name: (type(layer).__name__, layer.rate) for layer in model.layers
                if isinstance(layer, (keras.layers.Dropout, keras.layers.SpatialDropout1D,
                                      keras.layers.SpatialDropout2D))}
    assert dropouts == DROPOUTS[name]
    activations = {layer.activation.__name__ for layer in model.layers if isinstance(layer, keras.layers.Activation)}
    assert activations == {ACTIVATIONS[name]}


def test_cnn8_shapes_follow_the_module_docstring():
    """2x2 max-pools after the 64 and 128 stages, then a global *average* pool."""
    model = build_model("cnn8", PAPER_SHAPE, PAPER_SCALARS)
    assert model.get_layer("stage2_pool").output.shape == (None, 64, 31, 64)
    assert model.get_layer("stage3_pool").output.shape == (None, 32, 15, 128)
    assert isinstance(model.get_layer("global_pool"), keras.layers.GlobalAveragePooling2D)


def test_cnn8_needs_one_pool_flag_per_stage():
    with pytest.raises(ValueError, match=r"pool_after needs one flag per stage \(4\), got \[True, True\]"):
        build_model("cnn8", TINY_SHAPE, TINY_SCALARS, pool_after=(True, True))


def test_vgg_pools_round_up_like_ceil_mode():
    """Odd sizes: a stride-2 "same" conv and "same" 2x2 pools give ceil(n / 2) at each step."""
    model = tiny("vgg", shape=(20, 14, 2))
    assert model.get_layer("block1_3_conv").output.shape[1:3] == (10, 7)
    assert model.get_layer("block2_pool").output.shape[1:3] == (5, 4)
    assert model.get_layer("block3_pool").output.shape[1:3] == (3, 2)


def test_vgg_strides_the_third_conv_of_block_one():
    """The authors' ``downsample_conv=2``: block 1's first two convs run at full resolution (block 1's
    output shape is the same wherever the stride is)."""
    model = tiny("vgg")
    assert [model.get_layer(f"block1_{c}_conv").strides for c in (1, 2, 3)] == [(1, 1), (1, 1), (2, 2)]


def test_vgg_downsample_conv_must_index_a_conv_of_block_one():
    with pytest.raises(ValueError, match=r"downsample_conv must index a conv of block 1 \(0..2\), got 3"):
        build_model("vgg", TINY_SHAPE, TINY_SCALARS, downsample_conv=3)


def test_vgg_has_twelve_bias_free_3x3_convs_and_a_residual_projection():
    model = build_model("vgg", PAPER_SHAPE, PAPER_SCALARS)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    three = [c for c in convs if c.kernel_size == (3, 3)]
    assert [c.filters for c in three] == [64] * 3 + [128] * 3 + [256] * 3 + [512] * 3
    assert not any(c.use_bias for c in convs)
    assert [c.strides for c in three].count((2, 2)) == 1
    residual = model.get_layer("block4_residual_conv")
    assert residual.kernel_size == (1, 1) and residual.filters == 512
    assert tuple(residual.input.shape[1:]) == (16, 8, 256)  # block 3 output
    assert model.get_layer("block1_3_conv").output.shape[1:3] == (64, 32)  # stride 2
    assert model.get_layer("global_pool").output.shape == (None, 512)


# --- inputs and API ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_channels_and_scalar_count_follow_the_arguments(name):
    shape = (20, 14, 2)
    model = tiny(name, shape=shape, n_scalars=0)
    assert [t.name for t in model.inputs] == [SPECTRAL]
    assert all(not isinstance(layer, keras.layers.Normalization) for layer in model.layers)
    first = next(layer for layer in model.layers if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D)))
    # a 2-D conv reads the 2 maps as channels; the temporal CNN reads every band of both per frame
    assert first.kernel.shape[-2] == (shape[0] * 2 if name == "temporal" else 2)
    out = model(random_inputs(3, shape, 0), training=False)
    assert tuple(out.shape) == (3, 1)

    with_scalars = tiny(name, shape=shape, n_scalars=7)
    assert sorted(t.name for t in with_scalars.inputs) == [SCALARS, SPECTRAL]
    assert with_scalars.get_layer(SCALAR_NORM).input.shape == (None, 7)
    out = with_scalars(random_inputs(4, shape, 7), training=False)
    assert tuple(out.shape) == (4, 1)
    assert np.all(np.isfinite(out))


def test_pipeline_sizes_set_the_inputs():
    pipeline = PipelineConfig(features=FeatureConfig(maps=("mel", "mfcc"), scalars=False))
    model = build_model_for_pipeline("cnn8", pipeline, width=TINY_WIDTH["cnn8"])
    assert [tuple(t.shape) for t in model.inputs] == [(None, 128, pipeline.num_frames, 2)]
    full = build_model_for_pipeline("cnn8", PipelineConfig())
    assert trainable_params(full) == PAPER_PARAMS["cnn8"][0]


def test_unknown_model_name_is_rejected():
    with pytest.raises(ValueError,
                       match=r"unknown model 'resnet'; choose from \['cnn8', 'pooled', 'rbf', 'temporal', 'vgg'\]"):
        build_model("resnet", TINY_SHAPE, TINY_SCALARS)


def test_width_must_be_positive():
    with pytest.raises(ValueError, match="width must be > 0, got 0"):
        build_model("cnn8", TINY_SHAPE, TINY_SCALARS, width=0)


@pytest.mark.parametrize("shape, n_scalars, message", [
    ((16, 0, 3), TINY_SCALARS, r"spectral_shape must be \(H, W, C\) with positive sizes, got \(16, 0, 3\)"),
    (TINY_SHAPE, -1, "n_scalars must be >= 0, got -1")])
def test_empty_or_negative_input_sizes_are_refused(shape, n_scalars, message):
    with pytest.raises(ValueError, match=message):
        build_model("cnn8", shape, n_scalars)


ODD_WIDTH = 0.09
"""A width whose filter counts (32, 64, 128, 256 x 0.09 = 2.88, 5.76, 11.52, 23.04) round up and down."""


def test_width_rounds_each_filter_count_to_the_nearest_and_keeps_at_least_one():
    model = build_model("cnn8", TINY_SHAPE, TINY_SCALARS, width=ODD_WIDTH)
    convs = [layer.filters for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert convs == [3, 6, 12, 12, 23, 23, 23, 23]
    thinnest = build_model("cnn8", TINY_SHAPE, TINY_SCALARS, width=1e-3)
    assert {layer.filters for layer in thinnest.layers if isinstance(layer, keras.layers.Conv2D)} == {MIN_FILTERS}


# PyTorch's BatchNorm2d / kaiming_normal_ (the reference models'): running statistics move by
# 0.1 of the batch's, eps 1e-5; kernels start at std sqrt(2 / fan_in).
TORCH_BN_MOMENTUM = 0.1
TORCH_BN_EPS = 1e-5
HE_GAIN = 2.0
HE_STD_RTOL = 0.02


def test_batch_norm_updates_and_normalises_like_pytorch():
    model = tiny("cnn8")
    norm = model.get_layer("stage1_1_bn")
    x = np.random.default_rng(6).normal(3.0, 0.01, (8, 4, 4, norm.gamma.shape[0])).astype(np.float32)
    norm(x, training=True)
    np.testing.assert_allclose(norm.moving_mean, TORCH_BN_MOMENTUM * x.mean(axis=(0, 1, 2)), rtol=1e-5)
    # inference: (x - mean) / sqrt(var + eps); with a variance of eps, eps halves the output
    norm.moving_mean.assign(np.zeros_like(norm.moving_mean))
    norm.moving_variance.assign(np.full_like(norm.moving_variance, TORCH_BN_EPS))
    np.testing.assert_allclose(norm(x, training=False), x / np.sqrt(2 * TORCH_BN_EPS), rtol=1e-4)


def test_convs_start_from_he_normal_kernels():
    model = build_model("cnn8", PAPER_SHAPE, PAPER_SCALARS)
    kernel = np.asarray(model.get_layer("stage4_4_conv").kernel)  # [3, 3, 256, 256]
    fan_in = np.prod(kernel.shape[:-1])
    np.testing.assert_allclose(kernel.std(), np.sqrt(HE_GAIN / fan_in), rtol=HE_STD_RTOL)


def test_unadapted_scalar_norm_is_the_identity_and_adapts():
    model = tiny("cnn8")
    norm = model.get_layer(SCALAR_NORM)
    raw = np.random.default_rng(1).normal(50.0, 4.0, (64, TINY_SCALARS)).astype(np.float32)
    np.testing.assert_allclose(norm(raw), raw, rtol=1e-6)
    norm.adapt(raw)
    standardised = np.asarray(norm(raw))
    np.testing.assert_allclose(standardised.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(standardised.std(axis=0), 1.0, atol=1e-3)


# --- saving -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", MODELS)
def test_keras_file_round_trip_gives_identical_outputs(name, tmp_path):
    model = tiny(name)
    x = random_inputs(6, seed=2)
    model.get_layer(SCALAR_NORM).adapt(x[SCALARS] * 3.0 + 1.0)
    model(x, training=True)  # moves the BatchNorm statistics away from their initial values
    before = np.asarray(model(x, training=False))
    assert np.ptp(before) > 0  # outputs depend on the inputs

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    after = np.asarray(loaded(x, training=False))
    np.testing.assert_array_equal(after, before)
    np.testing.assert_array_equal(loaded.get_layer(SCALAR_NORM).mean,
                                  model.get_layer(SCALAR_NORM).mean)


# --- precision and training -------------------------------------------------------------------

@pytest.mark.parametrize("policy_name", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("name", MODELS)
def test_logit_is_float32_and_a_few_steps_train(name, policy_name, policy):
    policy(policy_name)
    model = tiny(name)
    assert model.get_layer(LOGIT).compute_dtype == "float32"
    assert model.output.dtype == "float32"
    compute = "bfloat16" if policy_name == "mixed_bfloat16" else "float32"
    assert model.get_layer("global_pool").compute_dtype == compute
    assert model.get_layer(SCALAR_NORM).compute_dtype == "float32"

    x = random_inputs(16, seed=3)
    y = (np.arange(16) % 2).astype(np.float32)[:, None]
    compile_for_test(model)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    losses = history.history["loss"]
    assert len(losses) == 2 and np.all(np.isfinite(losses))
    logits = model(x, training=False)
    assert logits.dtype == "float32" and tuple(logits.shape) == (16, 1)
    assert np.all(np.isfinite(logits))


def test_float16_policy_keeps_a_float32_logit(policy):
    policy("mixed_float16")
    model = tiny("cnn8")
    out = model(random_inputs(2), training=False)
    assert model.get_layer("global_pool").compute_dtype == "float16"
    assert out.dtype == "float32" and np.all(np.isfinite(out))


def test_tiny_model_overfits_a_separable_task():
    """Label = sign of the mean of map 0: a working graph fits it; a broken one cannot."""
    keras.utils.set_random_seed(0)
    n = 64
    x = random_inputs(n, seed=4)
    shift = np.where(np.arange(n) % 2 == 0, 0.5, -0.5).astype(np.float32)
    x[SPECTRAL][..., 0] += shift[:, None, None]
    y = (x[SPECTRAL][..., 0].mean(axis=(1, 2)) > 0).astype(np.float32)[:, None]
    assert 0.4 < y.mean() < 0.6

    model = tiny("cnn8", dropout=0.0)
    model.get_layer(SCALAR_NORM).adapt(x[SCALARS])
    compile_for_test(model, learning_rate=1e-2)
    _, chance = model.evaluate(x, y, verbose=0)
    model.fit(x, y, batch_size=16, epochs=4, shuffle=True, verbose=0)
    _, accuracy = model.evaluate(x, y, batch_size=n, verbose=0)  # inference mode
    assert accuracy > 0.9 > chance


def test_every_model_name_has_one_builder_and_every_map_name_one_map():
    """``config`` holds the one list of each; the registries must cover exactly those names."""
    assert tuple(MODEL_BUILDERS) == MODEL_NAMES
    assert tuple(MAP_BUILDERS) == MAP_NAMES
