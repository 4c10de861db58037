"""``python -m tfbreath.export``: a trained run as a waveform-in, P(exhale)-out model for phones.

    python -m tfbreath.export --model RUN_DIR [--member ensemble|cnn8|vgg|temporal|pooled|rbf]
                              [--quantize none|float16|int8] [--out FILE.tflite] [--data DIR]

The exported graph holds the feature extraction: input ``[batch, samples]`` float32 audio at the
pipeline's rate (one clip, e.g. 16,000 samples), output ``[batch]`` P(exhale). Writes

- ``FILE.tflite`` (default ``RUN_DIR/<member>[_<quantize>].tflite``), TFLite builtin ops only,
  input ``waveform``, output ``p_exhale``, with a JSON description for apps inside (labels,
  sample rate, clip length, input/output meaning, version, threshold; ``tfbreath.tflite_metadata``);
- ``RUN_DIR/<member>_waveform.keras``, the same graph as a Keras model;
- ``RUN_DIR/<member>_savedmodel/``, a SavedModel with a ``serving_default`` signature for
  TF Serving (input ``waveform``, output ``probability``).

``float16`` stores the classifier's conv and dense weights as float16; the feature constants stay
float32 (see ``classifier_weights_to_float16``). ``int8`` quantizes the classifier fully to int8
(weights and activations, calibrated on 200 training clips) behind the float32 feature graph,
keeping float the shortest prefix of the classifier that int8 would change by more than
``MAX_INT8_MEAN_PROBABILITY_DIFF`` on 200 other training clips (see ``int8_parts``). After
converting, the export checks itself on the clips ``fit`` held out (its validation split, or a
K-fold run's first fold):
TFLite vs Keras probabilities (max abs diff <= 1e-3 float32, <= 1e-2 float16; int8 may lose at
most 0.5 accuracy points), and the description read back from the flatbuffer must be the one
written, its input and output names and clip length those the interpreter shows. It prints the
table and exits 1, writing nothing, if a check fails.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import hashlib
import re
import shutil
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.tools import flatbuffer_utils

from tfbreath import artifacts, data
from tfbreath.config import (CLOSED_FORM_MODELS, ENSEMBLE, MODEL_NAMES, TEMPORAL_MODEL, PipelineConfig,
                             load_config)
from tfbreath.console import OneLineParser, add_verbose_argument, native_notes_hidden
from tfbreath.errors import TfbreathError, print_error
from tfbreath.evaluation import THRESHOLD
from tfbreath.features import tflite_compatible_copy
from tfbreath.precision import float32_copy
from tfbreath.run_folder import (METRICS_FILE, NO_QUANTIZATION, OOF_PREDICTIONS, PIPELINE_FILE, TFLITE_SUFFIX,
                                 VALIDATION_PREDICTIONS, RunFolder)
from tfbreath.serving import (PROBABILITY, TFLiteClassifier, feature_model, load_trained_model, load_waveforms,
                              probability_model, waveform_model)
from tfbreath.tflite_metadata import INPUT_NAME, OUTPUT_NAME, describe, read_metadata, with_metadata

FLOAT_QUANTIZATIONS = (NO_QUANTIZATION, "float16")
QUANTIZATIONS = (*FLOAT_QUANTIZATIONS, "int8")

MAX_PROBABILITY_DIFF = {NO_QUANTIZATION: 1e-3, "float16": 1e-2}
"""Largest allowed |P_tflite - P_keras| on any validation clip, per float quantization."""

MAX_INT8_ACCURACY_DROP = 0.005
"""Largest allowed validation-accuracy loss of the int8 model vs the float Keras model (0.5 points)."""

CALIBRATION_CLIPS = 200
"""Training clips in the int8 representative dataset (drawn with the pipeline's seed)."""

TRIAL_CLIPS = 200
"""Further training clips (none of the calibration's) on which ``quantize_head`` scores each
float prefix it tries; the validation clips stay unseen for the self-check."""

MAX_INT8_MEAN_PROBABILITY_DIFF = 0.01
"""Largest mean |P_int8 - P_float| on the trial clips that ``quantize_head`` accepts. Measured on the
shipped CNN8 (200 trial clips, 640 validation clips, 13 prefixes): the trial mean was within 0.006 of
the validation mean; validation accuracy fell by at most 0.2 points where the trial mean was
<= 0.01, by up to 3.6 points where it was 0.013-0.045 (two calibration draws)."""

MIN_RUNTIME_VERSION = b"min_runtime_version"
"""TFLite metadata entry naming the oldest runtime that has every op version of the model."""

FEATURE_SCOPE = "extract_features"
"""Name scope of the feature graph; its weights stay float32 under float16 quantization."""


MEMBERS = (ENSEMBLE, *MODEL_NAMES)


class ExportError(TfbreathError, RuntimeError):
    """A run folder cannot be exported or the exported model failed its self-check."""


@dataclasses.dataclass(frozen=True)
class Run:
    """A run folder written by ``python -m tfbreath.fit``."""

    path: Path
    pipeline: PipelineConfig
    data_dir: Path | None
    """Where its clips are: ``--data``, else where ``metrics.json`` says they were (relative to the
    folder ``fit`` ran in); ``None`` if neither names one."""

    @classmethod
    def load(cls, path: str | Path, data_dir: str | Path | None = None) -> "Run":
        folder = RunFolder(path)
        path = folder.path
        if not folder.pipeline_file.is_file():
            raise ExportError(f"{path}: not a run folder (no {PIPELINE_FILE}); train one with python -m tfbreath.fit")
        pipeline = load_config(folder.pipeline_file)
        metrics = folder.read_metrics()
        if data_dir is not None and not Path(data_dir).is_dir():
            raise ExportError(f"{data_dir}: data folder not found (--data)")
        if data_dir is None and metrics is not None:
            data_dir = metrics.get("data")
        return cls(path, pipeline, Path(data_dir) if data_dir else None)

    def model_path(self, member: str) -> Path:
        path = RunFolder(self.path).model_file(member)
        if not path.is_file():
            raise ExportError(f"{path}: model not found (members here: {RunFolder(self.path).model_names()})")
        return path

    def split(self) -> tuple[data.Examples, data.Examples]:
        """The run's training clips and the clips ``fit`` held out (``RunFolder.held_out_files``):
        the int8 calibration draws from the first, the self-check scores the second."""
        if self.data_dir is None or not self.data_dir.is_dir():
            recorded = f" ({self.data_dir}, as its {METRICS_FILE} says)" if self.data_dir else ""
            raise ExportError(f"{self.path}: its training data folder{recorded} is not available here; "
                              f"pass --data DIR")
        held_out = RunFolder(self.path).held_out_files()
        if held_out is None:
            raise ExportError(f"{self.path}: no record of the clips fit held out ({VALIDATION_PREDICTIONS} or "
                              f"{OOF_PREDICTIONS}); export a run folder written by python -m tfbreath.fit")
        examples = data.read_kaggle_train(self.data_dir)
        is_held_out = np.isin([Path(f).name for f in examples.files], held_out)  # [N]
        if is_held_out.sum() != len(held_out):
            raise ExportError(f"{self.path}: {len(held_out) - int(is_held_out.sum())} of the {len(held_out)} clips it "
                              f"held out are not in {self.data_dir}; pass the --data DIR it was trained on")
        return examples.subset(np.flatnonzero(~is_held_out)), examples.subset(np.flatnonzero(is_held_out))


def save_serving(model: keras.Model, path: Path) -> Path:
    """SavedModel with ``serving_default``: the model's named inputs -> its named outputs
    (``waveform [B, samples]`` -> ``probability [B]`` for a waveform model), in float32
    (``precision.float32_copy``). Its feature extraction is traced ``tflite_compatible``
    (``features.tflite_compatible_copy``), so it converts to builtin TFLite ops."""
    model = tflite_compatible_copy(float32_copy(model))
    archive = keras.export.ExportArchive()
    archive.track(model)
    named = model.input if isinstance(model.input, dict) else {model.input.name: model.input}
    specs = [tf.TensorSpec((None, *x.shape[1:]), tf.float32, name=name) for name, x in named.items()]

    def serve(*tensors):
        outputs = model(dict(zip(named, tensors)) if isinstance(model.input, dict) else tensors[0])
        return outputs if isinstance(outputs, dict) else {PROBABILITY: outputs}

    archive.add_endpoint("serving_default", serve, input_signature=specs)
    return artifacts.write_folder(path, lambda staged: archive.write_out(str(staged), verbose=False))


def _converter(saved_model: Path) -> tf.lite.TFLiteConverter:
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=["serving_default"])
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    return converter


def convert(saved_model: Path, quantize: str) -> bytes:
    """SavedModel -> TFLite flatbuffer of builtin ops, float32 or with float16 classifier weights."""
    if quantize not in FLOAT_QUANTIZATIONS:
        raise ExportError(f"quantize must be one of {FLOAT_QUANTIZATIONS} here (int8: int8_parts), got {quantize!r}")
    with native_notes_hidden():
        flatbuffer = _converter(saved_model).convert()
    return classifier_weights_to_float16(flatbuffer) if quantize == "float16" else flatbuffer


def quantize_head(head: Path, calibration: dict[str, np.ndarray], trial: dict[str, np.ndarray]) -> bytes:
    """The classifier SavedModel (features -> ``probability``) with int8 weights and activations,
    calibrated on ``calibration``, except its float32 input stage (``float_input_stage``), its float
    members (``float_member_ops``) and the shortest float prefix (``float_prefixes``) whose model
    stays within ``MAX_INT8_MEAN_PROBABILITY_DIFF`` of the float one on ``trial``.

    Measured on the shipped CNN8, one op at a time: the int8 error comes mostly from the
    full-resolution activations of the first stages (heavy tails: max ~50 beside a 99.9th
    percentile ~8, so one min-max int8 scale leaves the bulk a few dozen levels). Quantizing only
    the second conv's input moved P by 0.14 on average; any one op of the last stage or the dense
    head by <= 0.004. Which prefix suffices depends on the calibration clips (min-max ranges
    follow their extremes); clipping the ranges to a percentile lost more (the tails carry the
    signal). If no prefix passes, the most float one is returned and the self-check decides.
    """
    with native_notes_hidden():
        return _quantize_head(head, calibration, trial)


def _quantize_head(head: Path, calibration: dict[str, np.ndarray], trial: dict[str, np.ndarray]) -> bytes:
    converter = _converter(head)
    plain = converter.convert()
    always_float = float_input_stage(plain) + float_member_ops(plain)
    expected = _head_probabilities(plain, trial)  # [N]
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    clips = len(next(iter(calibration.values())))
    converter.representative_dataset = lambda: ({name: x[i:i + 1] for name, x in calibration.items()}
                                                for i in range(clips))
    debugger = tf.lite.experimental.QuantizationDebugger(  # TFLite's public route to selective quantization
        converter=converter, debug_dataset=converter.representative_dataset,
        debug_options=tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=always_float))
    for prefix in float_prefixes(plain):  # calibrated once; each new denylist only re-quantizes
        debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=always_float + prefix)
        quantized = debugger.get_nondebug_quantized_model()
        if np.mean(np.abs(_head_probabilities(quantized, trial) - expected)) <= MAX_INT8_MEAN_PROBABILITY_DIFF:
            break
    return quantized


def float_prefixes(flatbuffer: bytes) -> list[list[str]]:
    """Candidate float prefixes of a classifier, shortest first: for each conv or dense op in
    execution order, the output names of every op before it (the first candidate is empty)."""
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    names = [graph.tensors[op.outputs[0]].name.decode() for op in graph.operators]
    return [names[:index] for index, op in enumerate(graph.operators) if _builtin(model, op) in WEIGHTED_OPS]


def _head_probabilities(flatbuffer: bytes, features: dict[str, np.ndarray]) -> np.ndarray:
    """A classifier flatbuffer's P(exhale) ``[N]`` for named features ``{name: [N, ...]}``, clip by clip."""
    with native_notes_hidden():
        runner = tf.lite.Interpreter(model_content=flatbuffer).get_signature_runner()
    clips = len(next(iter(features.values())))
    return np.concatenate([np.reshape(runner(**{name: x[i:i + 1] for name, x in features.items()})[PROBABILITY], -1)
                           for i in range(clips)])


INPUT_STAGE_OPS = {schema.BuiltinOperator.ADD, schema.BuiltinOperator.SUB, schema.BuiltinOperator.MUL}
"""Elementwise ops (normalisation, batch norm) that stay float when they follow a float op."""


FLOAT_MEMBERS = (*CLOSED_FORM_MODELS, TEMPORAL_MODEL)
"""Members whose every op stays float32 in an int8 classifier. The pooled statistics the
closed-form members read sit beside the raw scalars in one vector that no single int8 scale holds
(measured on the pooled member: its validation accuracy fell from 0.745 to 0.584 all-int8), and
each costs one or two matrix products. The temporal CNN, exported alone in int8 after the
float-prefix search, fell from 0.925 to 0.889 (max |dP| 0.60, 640 clips, the shipped refit); in
the ensemble it pushed the search to its most float prefix, leaving CNN8 float too."""


def float_member_ops(flatbuffer: bytes) -> list[str]:
    """Output names of the ops inside a ``FLOAT_MEMBERS`` model: a path segment of the tensor name
    is the member's name, as Keras scopes a nested model (``pooled``, ``pooled_1``, ...)."""
    scope = re.compile(r"(^|/)(" + "|".join(map(re.escape, FLOAT_MEMBERS)) + r")(_\d+)?/")
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    names = (graph.tensors[op.outputs[0]].name.decode() for op in graph.operators)
    return [name for name in names if scope.search(name)]


def float_input_stage(flatbuffer: bytes) -> list[str]:
    """Output names of the ops that stay float32 in an int8 classifier: every op reading a model
    input (the first conv, the scalar normalisation's subtraction) and the elementwise chain
    right after it (that conv's batch norm, the normalisation's scaling).

    Measured on the shipped CNN8: one int8 scale per input tensor cannot hold the features
    (z-scored maps span -49..36 with 98 % of values inside +-3; the raw scalars span 0.006..598),
    and the first batch-normalised activations spread as widely. Quantizing them cost 7.8
    accuracy points, all-int8 past them 0.6 (640 validation clips).
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    graph = model.subgraphs[0]
    inputs, floating, names = set(graph.inputs), set(), []
    for op in graph.operators:  # in execution order
        if inputs & set(op.inputs) or (floating & set(op.inputs) and _builtin(model, op) in INPUT_STAGE_OPS):
            floating.update(op.outputs)
            names.append(graph.tensors[op.outputs[0]].name.decode())
    return names


def _version(text: bytes) -> tuple[int, ...]:
    return tuple(int(part) for part in bytes(text).decode().split(".") if part.isdigit())


def join_graphs(front: bytes, back: bytes) -> bytes:
    """One TFLite model computing ``back(front(x))``: each input of ``back``'s signature is fed
    the output of ``front``'s signature with the same name.

    Each has one signature; ``back`` is one subgraph (no control flow), while ``front`` may call
    further subgraphs (the feature graph's while loops). The result takes ``front``'s inputs and
    gives ``back``'s outputs: ``back``'s operators run after ``front``'s in ``front``'s signature
    subgraph, operator codes are shared where equal, ``back``'s buffers and tensors are
    appended, and the minimum runtime version is the higher of the two.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(front))
    tail = flatbuffer_utils.convert_bytearray_to_object(bytearray(back))
    if len(tail.subgraphs) != 1:
        raise ExportError(f"join_graphs: the second model has {len(tail.subgraphs)} subgraphs, it must have 1")
    graph, tail_graph = model.subgraphs[model.signatureDefs[0].subgraphIndex], tail.subgraphs[0]
    made = {bytes(m.name).decode(): m.tensorIndex for m in model.signatureDefs[0].outputs}
    fed = {m.tensorIndex: bytes(m.name).decode() for m in tail.signatureDefs[0].inputs}
    missing = sorted(set(fed.values()) - set(made))
    if missing:
        raise ExportError(f"join_graphs: the second model needs {missing}, the first makes {sorted(made)}")

    codes = {}
    for index, code in enumerate(tail.operatorCodes):
        key = (code.builtinCode, code.deprecatedBuiltinCode, code.customCode, code.version)
        same = [i for i, c in enumerate(model.operatorCodes)
                if (c.builtinCode, c.deprecatedBuiltinCode, c.customCode, c.version) == key]
        if not same:
            model.operatorCodes.append(code)
        codes[index] = same[0] if same else len(model.operatorCodes) - 1

    buffer_offset, tensor_offset = len(model.buffers), len(graph.tensors)
    model.buffers.extend(tail.buffers)
    for tensor in tail_graph.tensors:
        tensor.buffer += buffer_offset
        graph.tensors.append(tensor)

    def moved(index: int) -> int:  # -1 marks an omitted optional input
        return index if index < 0 else made[fed[index]] if index in fed else index + tensor_offset

    for op in tail_graph.operators:
        op.opcodeIndex = codes[op.opcodeIndex]
        op.inputs = [moved(i) for i in op.inputs]
        op.outputs = [moved(i) for i in op.outputs]
        if op.intermediates is not None:
            op.intermediates = [moved(i) for i in op.intermediates]
        graph.operators.append(op)
    graph.outputs = [moved(i) for i in tail_graph.outputs]
    signature = model.signatureDefs[0]
    signature.outputs = tail.signatureDefs[0].outputs
    for tensor_map in signature.outputs:
        tensor_map.tensorIndex = moved(tensor_map.tensorIndex)

    versions = {bytes(m.name): m for m in model.metadata or []}
    for entry in tail.metadata or []:
        mine = versions.get(bytes(entry.name))
        if (mine is not None and bytes(entry.name) == MIN_RUNTIME_VERSION
                and _version(tail.buffers[entry.buffer].data) > _version(model.buffers[mine.buffer].data)):
            mine.buffer = entry.buffer + buffer_offset
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


WEIGHTED_OPS = {schema.BuiltinOperator.CONV_2D, schema.BuiltinOperator.DEPTHWISE_CONV_2D,
                schema.BuiltinOperator.FULLY_CONNECTED}
"""TFLite ops whose second input is a weight tensor (the part float16 storage halves)."""


def _builtin(model, op) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _dequantize_opcode(model) -> int:
    """Index of the DEQUANTIZE operator code, added to the model if missing."""
    for index, code in enumerate(model.operatorCodes):
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.DEQUANTIZE:
            return index
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.DEQUANTIZE
    code.version = 1
    model.operatorCodes.append(code)
    return len(model.operatorCodes) - 1


def classifier_weights_to_float16(flatbuffer: bytes) -> bytes:
    """Store the classifier's conv/dense weights as float16, each expanded by a DEQUANTIZE op.

    This is the graph TFLite's own float16 quantization makes, minus the feature extraction:
    that converter rounds every constant, and the feature matrices do not survive float16
    (spectral moments up to 8 kHz^2 overflow it; chroma and tempogram maps move by 0.2-0.4 sd).
    A weight belongs to the classifier when its op's output is outside ``extract_features``.
    """
    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(flatbuffer))
    dequantize = _dequantize_opcode(model)
    for graph in model.subgraphs:
        weights = {op.inputs[1] for op in graph.operators
                   if _builtin(model, op) in WEIGHTED_OPS
                   and FEATURE_SCOPE not in graph.tensors[op.outputs[0]].name.decode()}
        users = collections.Counter(t.buffer for g in model.subgraphs for t in g.tensors)
        expansions = []
        for index in sorted(weights):
            tensor = graph.tensors[index]
            buffer = model.buffers[tensor.buffer]
            if (tensor.type != schema.TensorType.FLOAT32 or buffer.data is None or not len(buffer.data)
                    or users[tensor.buffer] > 1):
                continue
            half = schema.BufferT()
            half.data = np.frombuffer(bytes(buffer.data), np.float32).astype(np.float16).view(np.uint8)
            model.buffers.append(half)
            buffer.data = None  # its only user now reads the float16 copy
            stored = schema.TensorT()
            stored.shape, stored.type = tensor.shape, schema.TensorType.FLOAT16
            stored.buffer, stored.name = len(model.buffers) - 1, tensor.name + b"/float16"
            graph.tensors.append(stored)
            tensor.buffer = 0  # TFLite's empty buffer: the float32 weight is now computed at run time
            op = schema.OperatorT()
            op.opcodeIndex, op.inputs, op.outputs = dequantize, [len(graph.tensors) - 1], [index]
            expansions.append(op)
        graph.operators = expansions + list(graph.operators)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def check(tflite: bytes, keras_model: keras.Model, quantize: str, waveforms: np.ndarray,
          labels: np.ndarray, metadata: dict) -> dict:
    """TFLite vs Keras on the same clips, and the app's view of the file (``metadata_problem``);
    ``passed`` says whether the quantization's limit holds and the metadata round-trips."""
    expected = np.asarray(keras_model.predict(waveforms, batch_size=64, verbose=0), np.float32).reshape(-1)
    classifier = TFLiteClassifier(tflite)
    got = classifier(waveforms)
    keras_accuracy = float(np.mean((expected >= THRESHOLD) == labels))
    tflite_accuracy = float(np.mean((got >= THRESHOLD) == labels))
    row = {"quantize": quantize, "clips": len(labels), "max_abs_diff": float(np.max(np.abs(got - expected))),
           "keras_accuracy": keras_accuracy, "tflite_accuracy": tflite_accuracy,
           "bytes": len(tflite), "metadata_problem": metadata_problem(tflite, classifier, metadata)}
    if quantize == "int8":
        row["limit"] = f"accuracy drop <= {100 * MAX_INT8_ACCURACY_DROP:g} points"
        within = keras_accuracy - tflite_accuracy <= MAX_INT8_ACCURACY_DROP
    else:
        row["limit"] = f"max abs diff <= {MAX_PROBABILITY_DIFF[quantize]:g}"
        within = row["max_abs_diff"] <= MAX_PROBABILITY_DIFF[quantize]
    row["passed"] = within and row["metadata_problem"] is None
    return row


def metadata_problem(tflite: bytes, classifier: TFLiteClassifier, metadata: dict) -> str | None:
    """What an app would read wrongly from ``tflite``, or ``None``: the description read back
    must be ``metadata``, and the interpreter must show its input and output names and clip length."""
    read = read_metadata(tflite)
    if read != metadata:
        return "metadata missing" if read is None else "metadata read back differs from the one written"
    shown = (classifier.input["name"], classifier.output["name"], classifier.num_samples)
    described = (INPUT_NAME, OUTPUT_NAME, metadata["clip_samples"])
    if shown != described:
        return f"the interpreter shows (input, output, samples) {shown}, the metadata {described}"
    return None


def format_check(row: dict) -> str:
    header = f"{'quantize':<9}{'clips':>6}{'max |dP|':>11}{'Keras acc':>11}{'TFLite acc':>12}{'size':>11}  check"
    line = (f"{row['quantize']:<9}{row['clips']:>6}{row['max_abs_diff']:>11.2e}{row['keras_accuracy']:>11.4f}"
            f"{row['tflite_accuracy']:>12.4f}{row['bytes'] / 1e6:>9.2f}MB  "
            f"{'PASS' if row['passed'] else 'FAIL'} ({checked(row)})")
    return header + "\n" + line


def checked(row: dict) -> str:
    """What the self-check of ``row`` tested: the quantization's limit, and the metadata's fate."""
    return f"{row['limit']}; {row['metadata_problem'] or 'metadata round-trips'}"


def calibration_features(features: keras.Model, pipeline: PipelineConfig,
                         examples: data.Examples) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """``features`` (a ``feature_model``) of ``CALIBRATION_CLIPS`` training clips and of up to
    ``TRIAL_CLIPS`` others, drawn in turn with the pipeline's seed: ``(calibration, trial)``. A
    training set too small for both gives its calibration clips as the trial ones too."""
    rng = np.random.default_rng(pipeline.data.seed)
    calibration = np.sort(rng.choice(len(examples), min(CALIBRATION_CLIPS, len(examples)), replace=False))
    others = np.setdiff1d(np.arange(len(examples)), calibration)  # [N - calibration]
    trial = np.sort(rng.choice(others, min(TRIAL_CLIPS, len(others)), replace=False))
    chosen = np.concatenate([calibration, trial])  # [calibration + trial]
    waveforms = load_waveforms([examples.files[i] for i in chosen], pipeline)  # [calibration + trial, samples]
    arrays = features.predict(waveforms, batch_size=data.FEATURE_BATCH, verbose=0)
    first = {name: np.asarray(x[:len(calibration)], np.float32) for name, x in arrays.items()}
    rest = {name: np.asarray(x[len(calibration):], np.float32) for name, x in arrays.items()}
    return (first, rest) if len(trial) else (first, first)


@dataclasses.dataclass(frozen=True)
class Int8Parts:
    """What an int8 export is built from (``int8_parts``); the latency benchmark times them too."""

    extractor: keras.Model  # waveforms -> {"spectral", "scalars"}
    head: keras.Model  # those features -> probability
    head_saved: Path  # ``head`` as a SavedModel
    features: bytes  # the float32 TFLite feature graph
    head_int8: bytes  # the int8 TFLite classifier

    @property
    def flatbuffer(self) -> bytes:
        """The exported model: float32 audio in, float32 P(exhale) out."""
        return join_graphs(self.features, self.head_int8)


def int8_parts(trained: keras.Model, pipeline: PipelineConfig, train_examples: data.Examples,
               folder: Path) -> Int8Parts:
    """Float32 feature graph + int8-quantized classifier of a trained member or ensemble.

    The classifier's weights and activations are int8, calibrated on the features of training
    clips (``calibration_features``), except its input stage (``float_input_stage``) and the
    float prefix ``quantize_head`` finds on further training clips, which stay float32. The
    features stay float32: TFLite 2.17's quantizer crashes (segmentation fault) on the feature
    graph, and its spectral moments need float range anyway. SavedModels go to ``folder``.
    """
    extractor, head = feature_model(pipeline), probability_model(trained)
    calibration, trial = calibration_features(extractor, pipeline, train_examples)
    head_saved = save_serving(head, folder / "head")
    features = convert(save_serving(extractor, folder / "features"), NO_QUANTIZATION)
    inputs = list(trained.input)
    head_int8 = quantize_head(head_saved, {name: calibration[name] for name in inputs},
                              {name: trial[name] for name in inputs})
    return Int8Parts(extractor, head, head_saved, features, head_int8)


def app_metadata(run: Run, member: str, quantize: str) -> dict:
    """The description an exported member carries for apps (``tflite_metadata.describe``): the run
    folder's name, the member, the quantization and the SHA-256 of the trained ``.keras`` file."""
    weights = hashlib.sha256(run.model_path(member).read_bytes()).hexdigest()
    return describe(run.pipeline, {"run": run.path.name, "member": member, "quantize": quantize,
                                   "weights_sha256": weights})


def export(run: Run, member: str, quantize: str, out: Path) -> dict:
    """Convert one member and check it; only if it passes, write ``out`` (the ``.tflite``),
    ``<member>_waveform.keras`` and ``<member>_savedmodel/`` into the run. Returns the check's row.

    The member's file and the clips the check and the int8 calibration need are looked up first,
    so a run without them fails before anything is built, and a failed check leaves every output
    as it was.
    """
    model_file = run.model_path(member)  # a member the run lacks is said before any clip is read
    train_examples, val_examples = run.split()
    waveforms = load_waveforms(val_examples.files, run.pipeline)
    trained = load_trained_model(model_file)
    model = waveform_model(trained, run.pipeline)
    with tempfile.TemporaryDirectory() as tmp:
        saved_model = save_serving(model, Path(tmp) / "savedmodel")
        if quantize == "int8":
            flatbuffer = int8_parts(trained, run.pipeline, train_examples, Path(tmp)).flatbuffer
        else:
            flatbuffer = convert(saved_model, quantize)
        metadata = app_metadata(run, member, quantize)
        flatbuffer = with_metadata(flatbuffer, metadata)
        row = check(flatbuffer, model, quantize, waveforms, val_examples.labels, metadata)
        if row["passed"]:
            artifacts.save_model(model, RunFolder(run.path).waveform_model_file(member))
            artifacts.write_folder(RunFolder(run.path).savedmodel_dir(member),
                                   lambda staged: shutil.copytree(saved_model, staged))
            artifacts.write_bytes(out, flatbuffer)
    return row


def check_output_paths(out: Path, run_dir: Path, member: str) -> None:
    """Refuse, before any work, an ``--out`` that is no ``.tflite``, or any output (``out`` and the
    member's waveform ``.keras`` and SavedModel in ``run_dir``) that cannot be written."""
    if out.suffix != TFLITE_SUFFIX:
        raise ExportError(f"{out}: --out must name a {TFLITE_SUFFIX} file")
    artifacts.check_writable(out)
    artifacts.check_writable(RunFolder(run_dir).waveform_model_file(member))
    artifacts.check_writable(RunFolder(run_dir).savedmodel_dir(member), folder=True)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineParser(prog="python -m tfbreath.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="run folder written by python -m tfbreath.fit")
    parser.add_argument("--member", default=ENSEMBLE, choices=MEMBERS, help="which model (default: ensemble)")
    parser.add_argument("--quantize", default=NO_QUANTIZATION, choices=QUANTIZATIONS)
    parser.add_argument("--out", type=Path, help="output .tflite (default: RUN_DIR/<member>[_<quantize>].tflite); "
                                                 "<member>_waveform.keras and <member>_savedmodel/ go into RUN_DIR")
    parser.add_argument("--data", type=Path, help="the run's data folder, if it moved (for the self-check)")
    add_verbose_argument(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    out = args.out or RunFolder(args.model).tflite_file(args.member, args.quantize)
    try:
        check_output_paths(out, args.model, args.member)
        row = export(Run.load(args.model, args.data), args.member, args.quantize, out)
    except TfbreathError as err:
        return print_error(err)
    print(format_check(row))
    if not row["passed"]:
        print(f"error: {out}: not written, the converted model failed its self-check ({checked(row)})",
              file=sys.stderr)
        return 1
    print(f"wrote {out} ({row['bytes'] / 1e6:.2f} MB), {RunFolder(args.model).savedmodel_dir(args.member)} "
          f"and {RunFolder(args.model).waveform_model_file(args.member)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
