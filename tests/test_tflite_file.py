"""TFLite files checked before the interpreter reads them (tfbreath.tflite_file). The CLI's
behaviour on cut and bit-flipped files, in a child process, is in test_predict.py."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from tfbreath import artifacts
from tfbreath.tflite_file import TFLiteFileError, verify_tflite


@pytest.fixture(scope="module")
def flatbuffer():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(1)(keras.layers.Dense(3, activation="relu")(inputs)))
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def test_a_sound_model_passes_unchanged(flatbuffer, tmp_path):
    assert verify_tflite(flatbuffer) == flatbuffer
    assert verify_tflite(artifacts.write_bytes(tmp_path / "model.tflite", flatbuffer)) == flatbuffer


@pytest.mark.parametrize("damage, problem", [
    (lambda b: b[: len(b) // 2], "cut short or corrupt"),
    (lambda b: b[:4] + b"XXXX" + b[8:], "no TFL3 identifier"),
    (lambda b: b"", "no TFL3 identifier"),
])
def test_a_damaged_model_is_one_error_naming_the_file(flatbuffer, tmp_path, damage, problem):
    path = artifacts.write_bytes(tmp_path / "bad.tflite", damage(flatbuffer))
    with pytest.raises(TFLiteFileError, match=f"^{path}: not a valid TFLite model .*{problem}"):
        verify_tflite(path)


def test_an_unreadable_path_is_an_error_naming_it(tmp_path):
    with pytest.raises(TFLiteFileError, match=f"^{tmp_path}: cannot read the file"):
        verify_tflite(tmp_path)  # a folder
