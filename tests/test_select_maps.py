"""SelectMaps: a member that reads some of the extracted maps (``[train] member_maps``)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfbreath import export, serving
from tfbreath.config import PipelineConfig, with_overrides
from tfbreath.models import build_model_for_pipeline
from tfbreath.models.select_maps import SELECT_MAPS, SelectMaps
from tfbreath.precision import global_policy

READ = ("mel", "mfcc", "lpc")
"""The maps the member under test reads: channels 0, 3 and 8 of the nine."""
PIPELINE = with_overrides(PipelineConfig(), "train", member_maps={"cnn8": list(READ)})
N_MAPS = len(PIPELINE.features.maps)


def _inputs(seed: int = 0, batch: int = 3) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"spectral": rng.standard_normal((batch, *PIPELINE.spectral_shape)).astype("float32"),
            "scalars": rng.standard_normal((batch, PIPELINE.features.n_scalars)).astype("float32")}


@pytest.fixture(scope="module")
def member():
    return build_model_for_pipeline("cnn8", PIPELINE, width=0.125)


def test_takes_channels_in_the_order_given():
    spectral = np.arange(2 * 3 * 4 * 5, dtype="float32").reshape(2, 3, 4, 5)
    picked = np.asarray(SelectMaps([4, 1])(spectral))
    np.testing.assert_array_equal(picked, spectral[..., [4, 1]])
    assert SelectMaps.from_config(SelectMaps([4, 1]).get_config()).channels == [4, 1]


@pytest.mark.parametrize("channels", [[], [0, -1]])
def test_bad_channels_are_refused_with_the_value(channels):
    with pytest.raises(ValueError, match=r"channels must be a non-empty list of indices >= 0, got \[.*\]"):
        SelectMaps(channels)


def test_a_channel_past_the_maps_is_refused_when_built():
    with pytest.raises(ValueError, match=r"channels must index the 9 map channels, got \[0, 9\]"):
        build_model_for_pipeline("cnn8", PipelineConfig(), width=0.125, channels=[0, 9])


def test_runs_in_the_policys_compute_dtype_and_inside_a_dataset_map():
    spectral = tf.random.stateless_normal((4, 6, 5, 3), seed=(1, 2))
    with global_policy("mixed_bfloat16"):
        layer = SelectMaps([2, 0])
    direct = layer(spectral)
    assert direct.dtype == tf.bfloat16 and direct.shape == (4, 6, 5, 2)
    np.testing.assert_array_equal(direct.numpy(), tf.cast(tf.gather(spectral, [2, 0], axis=-1), tf.bfloat16).numpy())
    mapped = next(iter(tf.data.Dataset.from_tensors(spectral).map(layer)))
    np.testing.assert_array_equal(mapped.numpy(), direct.numpy())


def test_a_member_reads_only_its_maps(member):
    assert member.input_shape[1] == (None, *PIPELINE.spectral_shape)  # fed all nine maps
    assert member.get_layer(SELECT_MAPS).channels == [PIPELINE.features.maps.index(m) for m in READ]
    x = _inputs()
    unread, read = dict(x), dict(x)
    unread["spectral"] = x["spectral"].copy()
    unread["spectral"][..., PIPELINE.features.maps.index("chroma")] += 5.0
    read["spectral"] = x["spectral"].copy()
    read["spectral"][..., PIPELINE.features.maps.index("mel")] += 5.0
    logit = member.predict(x, verbose=0)
    np.testing.assert_array_equal(member.predict(unread, verbose=0), logit)
    assert np.abs(member.predict(read, verbose=0) - logit).max() > 1e-3


def test_a_member_reads_its_maps_in_the_order_member_maps_lists_them():
    """Channel k of the member is the k-th map named in ``[train] member_maps``, not the k-th
    in feature order (its first conv's weights are per channel)."""
    named = list(READ[::-1])  # lpc, mfcc, mel: channels 8, 3, 0
    pipeline = with_overrides(PipelineConfig(), "train", member_maps={"cnn8": named})
    model = build_model_for_pipeline("cnn8", pipeline, width=0.125)
    assert model.get_layer(SELECT_MAPS).channels == [pipeline.features.maps.index(m) for m in named]


def test_a_member_without_member_maps_reads_every_map():
    model = build_model_for_pipeline("cnn8", PipelineConfig(), width=0.125)
    assert SELECT_MAPS not in [layer.name for layer in model.layers]


def test_the_member_round_trips_through_keras_and_tflite(member, tmp_path):
    x = _inputs(seed=1)
    expected = member.predict(x, verbose=0)
    assert np.ptp(expected) > 1e-4  # distinct clips give distinct logits
    member.save(tmp_path / "member.keras")
    np.testing.assert_allclose(keras.models.load_model(tmp_path / "member.keras").predict(x, verbose=0), expected,
                               atol=1e-6)
    probability = serving.probability_model(member)
    flatbuffer = export.convert(export.save_serving(probability, tmp_path / "serving"), "none")
    interpreter = tf.lite.Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    feeds = {detail["index"]: next(v for k, v in x.items() if k in detail["name"])
             for detail in interpreter.get_input_details()}
    for detail in interpreter.get_input_details():
        interpreter.resize_tensor_input(detail["index"], feeds[detail["index"]].shape)
    interpreter.allocate_tensors()
    for index, value in feeds.items():
        interpreter.set_tensor(index, value)
    interpreter.invoke()
    tflite = interpreter.get_tensor(interpreter.get_output_details()[0]["index"]).reshape(-1)
    np.testing.assert_allclose(tflite, keras.ops.sigmoid(expected).numpy().reshape(-1), atol=1e-5)
