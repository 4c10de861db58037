"""The description for apps inside an exported ``.tflite`` (tfbreath.tflite_metadata). The export
writing it is tested in test_export.py, predict reading it in test_predict.py."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as tflite_schema
from tensorflow.lite.tools import flatbuffer_utils

import tfbreath
from tfbreath import artifacts
from tfbreath.config import PipelineConfig, with_overrides
from tfbreath.tflite_file import TFLiteFileError, verify_tflite
from tfbreath.tflite_metadata import (INPUT_NAME, METADATA_NAME, OUTPUT_NAME, TEXT_START, describe, read_metadata,
                                      with_metadata)

IDENTITY = {"run": "some_run", "member": "cnn8", "quantize": "int8", "weights_sha256": "0123456789abcdef" * 4}
SAMPLES = 8


@pytest.fixture(scope="module")
def flatbuffer():
    """A tiny converted model with one signature: ``[B, 8]`` -> ``[B]``."""
    inputs = keras.Input((SAMPLES,), name="audio")
    model = keras.Model(inputs, keras.layers.Reshape(())(keras.layers.Dense(1)(inputs)))
    return tf.lite.TFLiteConverter.from_keras_model(model).convert()


def _entries(model: bytes) -> list[bytes]:
    return [bytes(m.name) for m in flatbuffer_utils.convert_bytearray_to_object(bytearray(model)).metadata]


def _with_raw_entry(model: bytes, data: bytes) -> bytes:
    """``model`` with a ``tfbreath`` entry holding ``data`` as is."""
    parsed = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
    buffer, entry = tflite_schema.BufferT(), tflite_schema.MetadataT()
    buffer.data = np.frombuffer(data, np.uint8)
    parsed.buffers.append(buffer)
    entry.name, entry.buffer = METADATA_NAME, len(parsed.buffers) - 1
    parsed.metadata.append(entry)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(parsed))


def test_the_description_states_the_model_and_its_pipeline():
    pipeline = with_overrides(PipelineConfig(), "audio", sample_rate=22050, duration_s=1.5)
    metadata = describe(pipeline, IDENTITY)
    assert (metadata["sample_rate"], metadata["clip_samples"], metadata["clip_seconds"]) == (22050, 33075, 1.5)
    assert metadata["labels"] == [{"index": 0, "code": "I", "name": "inhale"},
                                  {"index": 1, "code": "E", "name": "exhale"}]
    assert metadata["threshold"] == 0.5
    assert metadata["input"]["shape"] == [1, 33075] and metadata["output"]["shape"] == [1]
    assert (metadata["input"]["name"], metadata["output"]["name"]) == ("waveform", "p_exhale")
    assert "22050 Hz" in metadata["input"]["description"] and "P(exhale)" in metadata["output"]["description"]
    assert metadata["model"] == {"tfbreath_version": tfbreath.__version__, "pipeline": pipeline.name, **IDENTITY}
    assert metadata["version"] == f"tfbreath {tfbreath.__version__}, run some_run, cnn8, int8, sha256 0123456789ab"
    assert json.loads(json.dumps(metadata)) == metadata


def test_metadata_round_trips_and_names_the_input_and_output(flatbuffer, tmp_path):
    metadata = describe(PipelineConfig(), IDENTITY)
    tagged = with_metadata(flatbuffer, metadata)
    path = artifacts.write_bytes(tmp_path / "model.tflite", tagged)
    assert read_metadata(tagged) == metadata and read_metadata(path) == metadata
    assert verify_tflite(tagged) == tagged
    assert _entries(tagged) == [*_entries(flatbuffer), METADATA_NAME]  # TFLite's own entries kept

    interpreter = tf.lite.Interpreter(model_content=tagged)
    assert interpreter.get_signature_list() == {"serving_default": {"inputs": [INPUT_NAME], "outputs": [OUTPUT_NAME]}}
    assert interpreter.get_input_details()[0]["name"] == INPUT_NAME
    assert interpreter.get_output_details()[0]["name"] == OUTPUT_NAME
    x = np.random.default_rng(0).normal(size=(1, SAMPLES)).astype(np.float32)
    plain = tf.lite.Interpreter(model_content=flatbuffer).get_signature_runner()
    np.testing.assert_array_equal(interpreter.get_signature_runner()(waveform=x)[OUTPUT_NAME],
                                  next(iter(plain(audio=x).values())))


def test_the_json_can_be_found_without_a_flatbuffer_reader(flatbuffer):
    metadata = describe(PipelineConfig(), IDENTITY)
    tagged = with_metadata(flatbuffer, {key: metadata[key] for key in reversed(metadata)})  # "format" last
    assert tagged.count(TEXT_START) == 1 and TEXT_START == b'{"format": "tfbreath.tflite_metadata"'
    start = tagged.index(TEXT_START)
    assert json.loads(tagged[start:tagged.index(b"\0", start)]) == metadata


def test_metadata_a_reader_would_refuse_is_not_written(flatbuffer):
    with pytest.raises(TFLiteFileError, match="^metadata to write has sample_rate = 0"):
        with_metadata(flatbuffer, {**describe(PipelineConfig(), IDENTITY), "sample_rate": 0})


def test_writing_again_replaces_the_entry(flatbuffer):
    first = with_metadata(flatbuffer, describe(PipelineConfig(), IDENTITY))
    second_metadata = describe(PipelineConfig(), {**IDENTITY, "quantize": "none"})
    second = with_metadata(first, second_metadata)
    assert read_metadata(second) == second_metadata
    assert _entries(second).count(METADATA_NAME) == 1
    assert second.count(TEXT_START) == 1 and len(second) < len(first) + len(TEXT_START)  # old text gone


def test_a_model_without_metadata_has_none(flatbuffer):
    assert read_metadata(flatbuffer) is None


@pytest.mark.parametrize("data, problem", [
    (b"{not json\0", "is not JSON"),
    (b"\xff\xfe\0", "is not JSON"),
    (json.dumps({"format": "other"}).encode(), "is not a tfbreath.tflite_metadata object"),
    (json.dumps({"format": "tfbreath.tflite_metadata", "format_version": 2}).encode(), "format_version 2"),
    (json.dumps({"format": "tfbreath.tflite_metadata", "format_version": 1, "sample_rate": 0,
                 "clip_samples": 16000}).encode(), "sample_rate = 0, expected a positive integer"),
    (json.dumps({"format": "tfbreath.tflite_metadata", "format_version": 1, "sample_rate": 16000}).encode(),
     "clip_samples = None"),
])
def test_a_bad_entry_is_one_error_naming_the_file(flatbuffer, tmp_path, data, problem):
    path = artifacts.write_bytes(tmp_path / "bad.tflite", _with_raw_entry(flatbuffer, data))
    with pytest.raises(TFLiteFileError, match=f"^{path}: its tfbreath metadata .*{problem}"):
        read_metadata(path)


def test_a_cut_or_missing_file_is_one_error_naming_it(flatbuffer, tmp_path):
    tagged = with_metadata(flatbuffer, describe(PipelineConfig(), IDENTITY))
    cut = artifacts.write_bytes(tmp_path / "cut.tflite", tagged[:len(tagged) // 3])
    with pytest.raises(TFLiteFileError, match=f"^{cut}: not a valid TFLite model"):
        read_metadata(cut)
    with pytest.raises(TFLiteFileError, match=f"^{tmp_path / 'none.tflite'}: cannot read the file"):
        read_metadata(tmp_path / "none.tflite")
