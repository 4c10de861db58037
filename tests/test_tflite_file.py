"""TFLite files checked before the interpreter reads them (tfbreath.tflite_file). The CLI's
behaviour on cut and bit-flipped files, in a child process, is in test_predict.py."""

from __future__ import annotations

import keras
import pytest
import tensorflow as tf

from tfbreath import artifacts
from tfbreath.tflite_file import TFLiteFileError, verify_tflite


def _converted(inputs, outputs) -> bytes:
    return tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs)).convert()


@pytest.fixture(scope="module")
def flatbuffer():
    inputs = keras.Input((4,))
    return _converted(inputs, keras.layers.Dense(1)(keras.layers.Dense(3, activation="relu")(inputs)))


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


def test_a_sound_model_that_is_not_a_waveform_classifier_is_refused(flatbuffer, tmp_path):
    """One float32 [N, samples] input and one P per clip: a second input was left unset and a
    second output's values were taken as the clips' probabilities."""
    from tfbreath.serving import TFLiteClassifier

    assert TFLiteClassifier(flatbuffer)([[0.0] * 4] * 3).shape == (3,)
    first, second = keras.Input((4,)), keras.Input((4,))
    two_in = _converted([first, second], keras.layers.Dense(1)(keras.layers.Concatenate()([first, second])))
    two_out = _converted(first, [keras.layers.Dense(1)(first), keras.layers.Dense(3)(first)])
    wide_out = _converted(first, keras.layers.Dense(3)(first))
    for name, model in (("two_in", two_in), ("two_out", two_out), ("wide_out", wide_out)):
        path = artifacts.write_bytes(tmp_path / f"{name}.tflite", model)
        with pytest.raises(TFLiteFileError, match=f"^{path}: not a waveform classifier .* takes "):
            TFLiteClassifier(path)
