"""A ``.tflite`` file checked before TFLite's interpreter reads it.

TFLite's interpreter trusts its flatbuffer: cut or corrupt bytes (an out-of-range tensor index,
a buffer shorter than its tensor) crash the process with a segmentation fault instead of
raising. ``verify_tflite`` parses the bytes with TFLite's pure-Python reader, which raises, and
checks every index and constant size the interpreter relies on. ``serving.TFLiteClassifier``
runs it on every file it opens.
"""

from __future__ import annotations

import math
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
from tensorflow.lite.python import schema_py_generated as tflite_schema
from tensorflow.lite.tools import flatbuffer_utils

from tfbreath.errors import TfbreathError

TFLITE_IDENTIFIER = b"TFL3"
TFLITE_IDENTIFIER_AT = slice(4, 8)
"""A flatbuffer starts with its root table's 4-byte offset, then the 4-byte file identifier."""
TFLITE_SCHEMA_VERSION = 3
MIN_EXTERNAL_OFFSET = 2
"""A buffer offset from 2 up places the data after the flatbuffer (models over 2 GB); 0 and 1 mean inside."""
OPTIONAL_TENSOR = -1
"""An operator input index meaning "omitted"."""
SUBGRAPH_FIELD = "subgraph"
"""Operator options whose field name holds this word (``bodySubgraphIndex``, ...) index a subgraph."""
TFLITE_PARSE_ERRORS = (struct.error, ValueError, TypeError, IndexError)
"""What the pure-Python flatbuffer reader raises on cut or corrupt bytes (a bad offset, vector
length or union type)."""
_FIXED_SIZE_TYPES = ("FLOAT32", "FLOAT16", "INT32", "UINT8", "INT64", "BOOL", "INT16", "COMPLEX64", "INT8",
                     "FLOAT64", "COMPLEX128", "UINT64", "UINT32", "UINT16")
TENSOR_ITEM_BYTES = {getattr(tflite_schema.TensorType, name): np.dtype(name.lower()).itemsize
                     for name in _FIXED_SIZE_TYPES}
"""Bytes per element of the TFLite tensor types numpy shares (constant data must fill the shape)."""


class TFLiteFileError(TfbreathError, ValueError):
    """A ``.tflite`` file that cannot be read or is not a sound TFLite model: ``"<path>: <problem>"``
    (the checks raise it with the problem alone; ``verify_tflite`` adds the path)."""


def _check(condition: bool, problem: str) -> None:
    if not condition:
        raise TFLiteFileError(problem)


def _vector(values) -> Sequence:
    """A flatbuffer vector of the object API: absent ones are ``None``."""
    return () if values is None else values


def _check_indices(indices, count: int, what: str, optional: bool = False) -> None:
    low = OPTIONAL_TENSOR if optional else 0
    for index in _vector(indices):
        _check(low <= index < count, f"{what} {index} not in [0, {count})")


def _check_tensor(tensor, buffers: Sequence, where: str) -> None:
    """Its buffer exists, its shape is not negative and its constant data (if any) fills the shape."""
    _check_indices([tensor.buffer], len(buffers), f"{where} buffer")
    shape = [int(d) for d in _vector(tensor.shape)]
    _check(all(d >= 0 for d in shape), f"{where} has shape {shape}")
    data_bytes = len(_vector(buffers[tensor.buffer].data))
    item_bytes = TENSOR_ITEM_BYTES.get(tensor.type)
    if data_bytes and item_bytes is not None and tensor.sparsity is None:
        _check(data_bytes == item_bytes * math.prod(shape),
               f"{where} has {data_bytes} bytes of data for shape {shape}")


def _check_operator(op, subgraphs: int, tensors: int, opcodes: int, where: str) -> None:
    """Its opcode, tensors and the subgraphs its options name exist; no options outside the flatbuffer."""
    _check_indices([op.opcodeIndex], opcodes, f"{where} opcode")
    _check_indices(op.inputs, tensors, f"{where} input tensor", optional=True)
    _check_indices(op.outputs, tensors, f"{where} output tensor")
    _check_indices(op.intermediates, tensors, f"{where} intermediate tensor")
    _check(op.largeCustomOptionsOffset < MIN_EXTERNAL_OFFSET,
           f"{where} keeps its options outside the flatbuffer")
    for options in (op.builtinOptions, op.builtinOptions2):
        for name, value in (vars(options) if options is not None else {}).items():
            if SUBGRAPH_FIELD in name.lower() and isinstance(value, int):
                _check_indices([value], subgraphs, f"{where} {name}")


def _check_order(subgraph, buffers: Sequence, where: str) -> None:
    """Operators run in order: each reads the subgraph's inputs, constants, variables, empty
    tensors or earlier outputs, and never writes a constant."""
    tensors = _vector(subgraph.tensors)
    constants = {t for t, tensor in enumerate(tensors) if len(_vector(buffers[tensor.buffer].data))}
    ready = {*_vector(subgraph.inputs), OPTIONAL_TENSOR, *constants}
    ready.update(t for t, tensor in enumerate(tensors) if tensor.isVariable or 0 in _vector(tensor.shape))
    for o, op in enumerate(_vector(subgraph.operators)):
        for t in _vector(op.inputs):
            _check(t in ready, f"{where} op {o} reads tensor {t} before anything sets it")
        for t in _vector(op.outputs):
            _check(t not in constants, f"{where} op {o} writes the constant tensor {t}")
            ready.add(t)


def _check_model(model) -> None:
    """Every index in range and every constant filled: what TFLite's interpreter trusts unchecked."""
    _check(model.version == TFLITE_SCHEMA_VERSION,
           f"schema version {model.version}, expected {TFLITE_SCHEMA_VERSION}")
    subgraphs, buffers = _vector(model.subgraphs), _vector(model.buffers)
    _check(len(subgraphs) > 0, "no subgraph")
    for n, buffer in enumerate(buffers):
        _check(buffer.offset < MIN_EXTERNAL_OFFSET,
               f"buffer {n} is stored outside the flatbuffer (unsupported)")
    _check_indices([metadata.buffer for metadata in _vector(model.metadata)], len(buffers), "metadata buffer")
    _check_indices(model.metadataBuffer, len(buffers), "metadata buffer")
    for g, subgraph in enumerate(subgraphs):
        tensors = _vector(subgraph.tensors)
        for t, tensor in enumerate(tensors):
            _check_tensor(tensor, buffers, f"subgraph {g} tensor {t}")
        _check_indices(subgraph.inputs, len(tensors), f"subgraph {g} input tensor")
        _check_indices(subgraph.outputs, len(tensors), f"subgraph {g} output tensor")
        for o, op in enumerate(_vector(subgraph.operators)):
            _check_operator(op, len(subgraphs), len(tensors), len(_vector(model.operatorCodes)),
                            f"subgraph {g} op {o}")
        _check_order(subgraph, buffers, f"subgraph {g}")
    for signature in _vector(model.signatureDefs):
        _check_indices([signature.subgraphIndex], len(subgraphs), "signature subgraph")
        tensors = len(_vector(subgraphs[signature.subgraphIndex].tensors))
        maps = [*_vector(signature.inputs), *_vector(signature.outputs)]
        _check_indices([m.tensorIndex for m in maps], tensors, "signature tensor")


def model_bytes(model: bytes | str | Path) -> tuple[str, bytes]:
    """``(source, bytes)`` of a ``.tflite`` path or its bytes; ``source`` names it in messages.

    Raises ``TFLiteFileError`` (``<path>: cannot read the file (...)``) for an unreadable path.
    """
    if isinstance(model, bytes):
        return "<bytes>", model
    try:
        return str(model), Path(model).read_bytes()
    except OSError as err:
        raise TFLiteFileError(f"{model}: cannot read the file ({err.strerror})") from None


def corrupt(source: str, err: Exception) -> TFLiteFileError:
    """The one-line error for bytes TFLite's flatbuffer reader could not parse."""
    return TFLiteFileError(f"{source}: not a valid TFLite model (cut short or corrupt: {' '.join(str(err).split())})")


def verify_tflite(model: bytes | str | Path) -> bytes:
    """A ``.tflite`` file or its bytes, checked, as the flatbuffer to hand to ``tf.lite.Interpreter``.

    TFLite's interpreter does not verify a flatbuffer: cut or corrupt bytes crash it (segmentation
    fault). Here the bytes are parsed by TFLite's pure-Python reader (which raises instead) and
    every index and constant size checked. The reader wraps negative offsets around as Python
    does, which the interpreter would not, so the bytes returned are the flatbuffer rebuilt from
    the checked parse (equal to the file for a sound one).

    Raises
    ------
    TFLiteFileError
        ``<path>: not a valid TFLite model (<problem>)``, or the file cannot be read.
    """
    source, model = model_bytes(model)
    try:
        _check(model[TFLITE_IDENTIFIER_AT] == TFLITE_IDENTIFIER,
               f"no {TFLITE_IDENTIFIER.decode()} identifier at bytes 4-7")
        parsed = flatbuffer_utils.convert_bytearray_to_object(model)
        _check_model(parsed)
    except TFLiteFileError as err:  # before TFLITE_PARSE_ERRORS, which holds ValueError
        raise TFLiteFileError(f"{source}: not a valid TFLite model ({err})") from None
    except TFLITE_PARSE_ERRORS as err:
        raise corrupt(source, err) from None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(parsed))
