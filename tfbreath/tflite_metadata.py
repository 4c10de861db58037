"""What an app reads from an exported ``.tflite``: the names of its input and output, and a JSON
description of the model (labels, sample rate, clip length, meaning of input and output,
version, threshold), so a phone app needs no file beside the model.

Inside the flatbuffer (TFLite's schema, ``tensorflow/lite/schema/schema.fbs``):

- the signature ``serving_default`` takes ``waveform`` and gives ``p_exhale``, and the graph's
  input and output tensors carry the same names (``INPUT_NAME``, ``OUTPUT_NAME``), which every
  TFLite interpreter shows as the tensors' names;
- ``Model.metadata`` holds an entry named ``tfbreath`` (``METADATA_NAME``); its ``buffer`` indexes
  ``Model.buffers``, whose ``data`` is the description as UTF-8 JSON followed by one NUL byte
  (TFLite pads the text of its own ``min_runtime_version`` entry with NULs the same way). The
  JSON always starts with the bytes ``{"format": "tfbreath.tflite_metadata"`` (``TEXT_START``),
  so a reader without TFLite's schema can also find it by searching the file for them and
  reading up to the next NUL.

The JSON (``describe``), format version 1::

    {"format": "tfbreath.tflite_metadata", "format_version": 1,
     "version": "tfbreath 0.1.0, run breath_phase, ensemble, int8, sha256 0123456789ab",
     "model": {"tfbreath_version": "0.1.0", "pipeline": "breath_phase_cpu_level", "run": "breath_phase",
               "member": "ensemble", "quantize": "int8", "weights_sha256": "<64 hex digits>"},
     "sample_rate": 16000, "clip_samples": 16000, "clip_seconds": 1.0,
     "labels": [{"index": 0, "code": "I", "name": "inhale"}, {"index": 1, "code": "E", "name": "exhale"}],
     "threshold": 0.5,
     "input": {"name": "waveform", "dtype": "float32", "shape": [1, 16000], "description": "..."},
     "output": {"name": "p_exhale", "dtype": "float32", "shape": [1], "description": "..."}}

TFLite's interpreters (Python, Java, Swift) do not expose ``Model.metadata``; read it with a
flatbuffer reader of TFLite's schema (``read_metadata`` here). It is not the TFLite Support
"metadata" (the ``TFLITE_METADATA`` entry): writing that needs the ``tflite-support`` package,
which requires protobuf < 4 while this environment's TensorFlow 2.17 runs with protobuf 4, and
its audio-classifier schema expects a ``[1, classes]`` score output, not one probability.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tensorflow.lite.python import schema_py_generated as tflite_schema
from tensorflow.lite.tools import flatbuffer_utils

import tfbreath
from tfbreath.config import PipelineConfig
from tfbreath.data import LABEL_WORDS, LABELS
from tfbreath.evaluation import THRESHOLD
from tfbreath.tflite_file import TFLITE_PARSE_ERRORS, TFLiteFileError, corrupt, model_bytes

METADATA_NAME = b"tfbreath"
"""Name of the ``Model.metadata`` entry holding the JSON description."""
METADATA_FORMAT = "tfbreath.tflite_metadata"
METADATA_FORMAT_VERSION = 1
"""Raised when a key changes meaning or goes; a reader refuses versions newer than it knows."""
TEXT_END = b"\0"
"""Ends the JSON text in its buffer."""
TEXT_START = json.dumps({"format": METADATA_FORMAT})[:-1].encode("utf-8")
"""How the JSON text starts (``format`` is written first)."""
INPUT_NAME = "waveform"
OUTPUT_NAME = "p_exhale"
SHA256_SHOWN = 12
"""Hex digits of the weights' SHA-256 in the one-line ``version``: enough to tell runs apart."""
EXPORTED_BATCH = 1
"""First dimension of the input and output as the converter writes them (apps may resize it)."""
REQUIRED_INTEGERS = ("sample_rate", "clip_samples")
"""Keys a reader relies on (``predict`` takes the sample rate from here): positive integers."""


def describe(pipeline: PipelineConfig, identity: dict[str, str]) -> dict:
    """The JSON description of a waveform model of ``pipeline`` (see the module docstring).

    ``identity`` says which model it is: ``run``, ``member``, ``quantize`` and ``weights_sha256``
    (of the trained ``.keras`` file); the tfbreath version and pipeline name are added.
    """
    audio = pipeline.audio
    model = {"tfbreath_version": tfbreath.__version__, "pipeline": pipeline.name, **identity}
    version = (f"tfbreath {model['tfbreath_version']}, run {model['run']}, {model['member']}, "
               f"{model['quantize']}, sha256 {model['weights_sha256'][:SHA256_SHOWN]}")
    labels = [{"index": index, "code": code, "name": LABEL_WORDS[code]} for code, index in LABELS.items()]
    negative, positive = labels  # the model gives P(class 1)
    return {
        "format": METADATA_FORMAT, "format_version": METADATA_FORMAT_VERSION,
        "version": version, "model": model,
        "sample_rate": audio.sample_rate, "clip_samples": audio.num_samples,
        "clip_seconds": audio.num_samples / audio.sample_rate,
        "labels": labels, "threshold": THRESHOLD,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": [EXPORTED_BATCH, audio.num_samples],
                  "description": f"mono waveform, float32 samples in [-1, 1] at {audio.sample_rate} Hz, "
                                 f"one {audio.num_samples}-sample clip per row (repeat a shorter "
                                 f"recording end to end to fill it, cut a longer one into clips); the first "
                                 f"dimension is the batch and may be resized"},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": [EXPORTED_BATCH],
                   "description": f"P({positive['name']}) per clip, in [0, 1]: label {positive['code']} "
                                  f"({positive['name']}) when >= threshold, else {negative['code']} "
                                  f"({negative['name']})"},
    }


def with_metadata(flatbuffer: bytes, metadata: dict) -> bytes:
    """The model with ``metadata`` as its ``tfbreath`` entry (replacing one there) and its single
    input and output named ``INPUT_NAME`` and ``OUTPUT_NAME`` (tensors and signature).

    ``metadata`` must be what ``read_metadata`` accepts (``describe`` makes it); its text starts
    with ``TEXT_START``.
    """
    problem = _problem(metadata)
    if problem is not None:
        raise TFLiteFileError(f"metadata to write {problem}")
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    _name_io(model)
    entry = next((m for m in model.metadata or [] if bytes(m.name) == METADATA_NAME), None)
    if entry is None:  # a new entry and buffer; else the entry's buffer is rewritten
        entry, buffer = tflite_schema.MetadataT(), tflite_schema.BufferT()
        model.buffers.append(buffer)
        entry.name, entry.buffer = METADATA_NAME, len(model.buffers) - 1
        model.metadata = [*(model.metadata or []), entry]
    text = json.dumps({"format": metadata["format"], **metadata})  # dict order: "format" stays first
    model.buffers[entry.buffer].data = np.frombuffer(text.encode("utf-8") + TEXT_END, np.uint8)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _name_io(model) -> None:
    """Name the one signature's input and output, and the tensors behind them."""
    if len(model.signatureDefs or []) != 1:
        raise TFLiteFileError(f"an app model has one signature, this one {len(model.signatureDefs or [])}")
    signature = model.signatureDefs[0]
    graph = model.subgraphs[signature.subgraphIndex]
    for maps, name in ((signature.inputs, INPUT_NAME), (signature.outputs, OUTPUT_NAME)):
        if len(maps) != 1:
            raise TFLiteFileError(f"an app model has one input and one output, this one "
                                  f"{len(signature.inputs)} and {len(signature.outputs)}")
        maps[0].name = name.encode()
        graph.tensors[maps[0].tensorIndex].name = name.encode()


def read_metadata(model: bytes | str | Path) -> dict | None:
    """The JSON description in a ``.tflite`` file or its bytes; ``None`` when it has none
    (a file exported before the metadata, or by another tool).

    Raises
    ------
    TFLiteFileError
        ``<path>: ...`` when the file cannot be read, is no TFLite model, or its ``tfbreath``
        entry is not a description this version understands.
    """
    source, flatbuffer = model_bytes(model)
    try:
        data = _entry_data(flatbuffer)
    except TFLITE_PARSE_ERRORS as err:
        raise corrupt(source, err) from None
    if data is None:
        return None
    try:
        metadata = json.loads(data.split(TEXT_END, 1)[0].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TFLiteFileError(f"{source}: its {METADATA_NAME.decode()} metadata is not JSON ({err})") from None
    problem = _problem(metadata)
    if problem is not None:
        raise TFLiteFileError(f"{source}: its {METADATA_NAME.decode()} metadata {problem}")
    return metadata


def _entry_data(flatbuffer: bytes) -> bytes | None:
    """The bytes of the ``tfbreath`` entry's buffer, read lazily (no full parse); ``None`` if absent."""
    if not tflite_schema.Model.ModelBufferHasIdentifier(flatbuffer, 0):
        raise ValueError("no TFL3 identifier at bytes 4-7")
    model = tflite_schema.Model.GetRootAs(flatbuffer, 0)
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() == METADATA_NAME:
            if not 0 <= entry.Buffer() < model.BuffersLength():
                raise IndexError(f"metadata buffer {entry.Buffer()} not in [0, {model.BuffersLength()})")
            buffer = model.Buffers(entry.Buffer())
            return buffer.DataAsNumpy().tobytes() if buffer.DataLength() else b""
    return None


def _problem(metadata) -> str | None:
    """What makes ``metadata`` unusable, or ``None``."""
    if not isinstance(metadata, dict) or metadata.get("format") != METADATA_FORMAT:
        return f"is not a {METADATA_FORMAT} object"
    version = metadata.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= METADATA_FORMAT_VERSION:
        return f"has format_version {version!r}; this tfbreath reads 1 to {METADATA_FORMAT_VERSION}"
    for key in REQUIRED_INTEGERS:
        value = metadata.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            return f"has {key} = {value!r}, expected a positive integer"
    return None
