"""RespireNet model side: the ResNet-34 classifier, the ICBHI score and device-routed prediction."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pytest

from tfbreath.icbhi.config import IcbhiConfig, ModelConfig
from tfbreath.icbhi.dataset import CycleSet
from tfbreath.icbhi.finetune import DeviceModels
from tfbreath.icbhi.reader import IcbhiError
from tfbreath.icbhi.resnet import (BACKBONE, build_resnet34_backbone, build_respirenet, load_backbone_weights,
                                   save_backbone_weights)
from tfbreath.icbhi.score import icbhi_scores, plot_confusion, to_two_class
from tfbreath.icbhi.spectrogram import spectrogram_shape

TINY = ModelConfig(width=1 / 16, dense_units=8)
SHAPE = (32, 40, 1)

TORCHVISION_RESNET34_CONV_PARAMETERS = 21_284_672
"""torchvision's resnet34: 21,797,672 parameters minus its 1000-way fc (512 x 1000 + 1000)."""


def _backbone_weights(model: keras.Model) -> list[np.ndarray]:
    return model.get_layer(BACKBONE).get_weights()


# ----------------------------------------------------------------------------- resnet

def test_output_shape_and_probabilities():
    model = build_respirenet(SHAPE, 4, TINY)
    x = np.random.default_rng(0).random((3, *SHAPE), dtype=np.float32)
    probabilities = np.asarray(model(x, training=False))
    assert probabilities.shape == (3, 4)
    np.testing.assert_allclose(probabilities.sum(axis=-1), 1.0, rtol=1e-5)
    assert build_respirenet((32, 40, 3), 2, TINY).output.shape == (None, 2)


def test_softmax_is_float32_under_mixed_precision():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_respirenet(SHAPE, 4, TINY)
        assert model.get_layer(BACKBONE).get_layer("stem_conv").compute_dtype == "bfloat16"
        assert model(np.zeros((1, *SHAPE), np.float32)).dtype == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)


def test_full_width_backbone_has_resnet34_parameter_count():
    backbone = build_resnet34_backbone(1.0)
    trainable = sum(int(np.prod(w.shape)) for w in backbone.trainable_weights)
    assert trainable == TORCHVISION_RESNET34_CONV_PARAMETERS
    assert backbone.output.shape[-1] == 512
    assert sum(1 for layer in backbone.layers if isinstance(layer, keras.layers.Conv2D)) == 36  # 33 + 3 projections


def test_bad_channel_count_is_a_clear_error():
    with pytest.raises(IcbhiError, match="1 or 3 channels"):
        build_respirenet((32, 40, 2), 4, TINY)


def test_keras_round_trip(tmp_path):
    model = build_respirenet(SHAPE, 4, TINY)
    x = np.random.default_rng(1).random((2, *SHAPE), dtype=np.float32)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)


def test_initial_weights_from_weights_file_and_keras_file(tmp_path):
    source = build_respirenet(SHAPE, 4, TINY)
    weights_file = save_backbone_weights(source, tmp_path / "backbone.weights.h5")
    source.save(tmp_path / "run.keras")
    for path in (weights_file, tmp_path / "run.keras"):
        seeded = build_respirenet(SHAPE, 2, dataclasses.replace(TINY, initial_weights=str(path)))
        for a, b in zip(_backbone_weights(seeded), _backbone_weights(source), strict=True):
            np.testing.assert_array_equal(a, b)


def test_initial_weights_errors_name_the_file(tmp_path):
    source = build_respirenet(SHAPE, 4, TINY)
    save_backbone_weights(source, tmp_path / "narrow.weights.h5")
    source.save(tmp_path / "narrow.keras")
    (tmp_path / "notes.txt").write_text("not weights")
    wider = build_resnet34_backbone(width=1 / 8)
    cases = {"missing.weights.h5": "not found", "narrow.weights.h5": "do not fit",
             "narrow.keras": "do not fit", "notes.txt": "must be a .weights.h5 or .keras"}
    for name, problem in cases.items():
        with pytest.raises(IcbhiError, match=problem) as err:
            load_backbone_weights(wider, tmp_path / name)
        assert str(tmp_path / name) in str(err.value) and "\n" not in str(err.value)


# ----------------------------------------------------------------------------- score

LABELS = [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]
PREDICTED = [0, 0, 1, 0, 1, 3, 2, 0, 3, 1]
DEVICES = ["A", "A", "B", "B", "A", "B", "A", "B", "A", "B"]


def test_four_class_score_needs_the_exact_abnormal_class():
    result = icbhi_scores(LABELS, PREDICTED, 4, devices=DEVICES)
    assert result["sp"] == pytest.approx(3 / 4)
    assert result["se"] == pytest.approx(3 / 6)  # crackle->both and both->crackle are misses
    assert result["score"] == pytest.approx((3 / 4 + 3 / 6) / 2)
    assert result["accuracy"] == pytest.approx(6 / 10)
    assert result["confusion_matrix"] == [[3, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 1, 0, 1]]
    assert result["per_class"]["crackle"] == {"cycles": 2, "correct": 1, "recall": 0.5}
    assert result["per_device"]["A"]["score"] == pytest.approx(1.0)
    assert result["per_device"]["B"]["sp"] == pytest.approx(0.5)
    assert result["per_device"]["B"]["se"] == pytest.approx(0.0)
    assert result["per_device"]["B"]["score"] == pytest.approx(0.25)


def test_two_class_score_counts_any_abnormal_call():
    result = icbhi_scores(to_two_class(LABELS), to_two_class(PREDICTED), 2, devices=DEVICES)
    assert result["sp"] == pytest.approx(3 / 4)
    assert result["se"] == pytest.approx(5 / 6)  # only wheeze->normal is missed
    assert result["score"] == pytest.approx((3 / 4 + 5 / 6) / 2)
    assert result["per_device"]["B"]["se"] == pytest.approx(2 / 3)
    assert result["confusion_matrix"] == [[3, 1], [1, 5]]


def test_score_without_normal_cycles_is_none_and_bad_input_raises():
    result = icbhi_scores([1, 2], [1, 1], 4)
    assert result["sp"] is None and result["score"] is None and result["se"] == 0.5
    with pytest.raises(ValueError, match="differ in length"):
        icbhi_scores([0, 1], [0], 4)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\]"):
        icbhi_scores([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match=r"predictions must be in \[0, 3\], got \[-1, 0\]"):
        icbhi_scores([0, 1], [-1, 0], 4)
    with pytest.raises(ValueError, match="devices and labels differ in length: 1 vs 2"):
        icbhi_scores([0, 1], [0, 1], 4, devices=["Meditron"])


def test_all_normal_cycles_have_no_se_no_score_and_a_full_confusion_matrix():
    """No abnormal cycle: Se has nothing to count, so the score is ``None`` too (not Sp / 2), and
    the confusion matrix keeps every class of the task (a device with only normal cycles)."""
    all_normal = [0, 0, 0]
    result = icbhi_scores(all_normal, [0, 0, 2], 4, devices=["A", "A", "B"])
    assert result["se"] is None and result["score"] is None and result["sp"] == pytest.approx(2 / 3)
    assert result["confusion_matrix"] == [[2, 0, 1, 0], [0] * 4, [0] * 4, [0] * 4]
    assert result["per_class"]["wheeze"] == {"cycles": 0, "correct": 0, "recall": None}
    device_a = result["per_device"]["A"]
    assert device_a["sp"] == 1.0 and device_a["score"] is None
    assert device_a["confusion_matrix"] == [[2, 0, 0, 0], [0] * 4, [0] * 4, [0] * 4]


def test_plot_confusion_writes_png(tmp_path):
    result = icbhi_scores(LABELS, PREDICTED, 4)
    path = plot_confusion({"stage1": result["confusion_matrix"], "finetuned": result["confusion_matrix"]}, 4,
                          tmp_path / "cm.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- routed prediction

def _constant_model(shape: tuple[int, int, int], classes: int, answer: int) -> keras.Model:
    """A model that always predicts class ``answer`` (zero kernel, one large bias)."""
    inputs = keras.Input(shape)
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    bias = np.zeros(classes, np.float32)
    bias[answer] = 10.0
    dense = keras.layers.Dense(classes, activation="softmax", kernel_initializer="zeros",
                               bias_initializer=keras.initializers.Constant(bias))
    return keras.Model(inputs, dense(pooled))


def test_routed_prediction_picks_each_devices_copy_and_falls_back(tmp_path):
    config = IcbhiConfig()
    shape = spectrogram_shape(config)
    _constant_model(shape, 4, 0).save(tmp_path / "stage1.keras")
    for device, answer in (("Meditron", 1), ("AKGC417L", 2), ("LittC2SE", 3)):
        _constant_model(shape, 4, answer).save(tmp_path / f"device_{device}.keras")
    devices = DeviceModels.load(tmp_path)
    assert sorted(devices.devices) == ["AKGC417L", "LittC2SE", "Meditron"]

    cycle_devices = np.array(["Meditron", "AKGC417L", "Unknown", "Meditron", "AKGC417L"])
    rng = np.random.default_rng(2)
    cycles = CycleSet(rng.standard_normal((5, config.audio.num_samples)).astype(np.float32) * 0.1,
                      np.zeros(5, np.int64), cycle_devices, np.array([f"r{i}" for i in range(5)]))
    predicted = np.argmax(devices.predict(cycles, config), axis=-1)
    np.testing.assert_array_equal(predicted, [1, 2, 0, 1, 2])
    for got, want in zip(devices.model.get_weights(), devices.stage1, strict=True):  # stage 1 again afterwards
        np.testing.assert_array_equal(got, want)
