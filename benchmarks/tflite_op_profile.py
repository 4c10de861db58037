"""Per-op latency of a TFLite graph at batch 1 on one thread: which ops the time goes to.

    python benchmarks/tflite_op_profile.py [--model RUN_DIR | --tflite FILE.tflite]
                                           [--wav CLIP.wav] [--top 25] [--repeats 50]

Without ``--tflite`` it converts the float32 feature graph (waveform -> maps + scalars, the
part every exported variant shares) of ``RUN_DIR``'s pipeline (default: the shipped
``saved_models/breath_phase``), as ``export.int8_parts`` builds it.

TF's Python interpreter has no op profiler (the C++ ``benchmark_model`` tool has one), so each
op is timed on its own: one run of the whole graph, on a real-looking clip, keeps every
intermediate tensor (``--wav``: that clip at the run's rate; else a synthetic breath-like one);
then every op becomes a one-op model (the graph's buffers, operator codes
and called subgraphs, e.g. a WHILE's body, kept, so indices stay valid) fed those very tensors,
and its ``invoke`` is timed (median of ``--repeats``, after warm-up, default delegates as the
exported model runs with). Prints the whole graph's median latency, the sum of the op times (a
check: the two should roughly agree; per-invoke overhead adds a few microseconds per op), the
time per op type and the top ops by time with their output shapes. Before them, the graph's
size and its largest constants (DFT matrices, filterbanks: most of a feature graph's bytes).
"""

from __future__ import annotations

import argparse
import collections
import copy
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.lite.python import schema_py_generated as schema  # noqa: E402
from tensorflow.lite.tools import flatbuffer_utils  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "saved_models" / "breath_phase"
WARMUP_CALLS = 3
LARGEST_CONSTANTS = 5
"""How many of the largest constants the size line lists."""

OPCODE_NAMES = {value: name for name, value in vars(schema.BuiltinOperator).items() if not name.startswith("_")}


def feature_flatbuffer(run_dir: Path) -> bytes:
    """The float32 TFLite feature graph of a run's pipeline, built as the export builds it."""
    from tfbreath import export, serving
    from tfbreath.run_folder import NO_QUANTIZATION

    pipeline = export.Run.load(run_dir).pipeline
    with tempfile.TemporaryDirectory() as tmp:
        saved = export.save_serving(serving.feature_model(pipeline), Path(tmp) / "features")
        return export.convert(saved, NO_QUANTIZATION)


def test_clip(n_samples: int) -> np.ndarray:
    """A breath-like clip: noise under a slow envelope, so data-dependent ops do typical work."""
    rng = np.random.default_rng(0)
    t = np.arange(n_samples) / n_samples
    return (0.05 * (0.2 + np.sin(np.pi * t)) * rng.standard_normal(n_samples)).astype(np.float32)[np.newaxis]


def real_clip(wav: Path, run_dir: Path) -> np.ndarray:
    """One WAV file as the run's pipeline reads it. ``[1, samples]``"""
    from tfbreath import export, serving

    return serving.load_waveforms([wav], export.Run.load(run_dir).pipeline)


def interpreter(flatbuffer: bytes, **kwargs) -> tf.lite.Interpreter:
    return tf.lite.Interpreter(model_content=flatbuffer, num_threads=1, **kwargs)


def median_ms(run, repeats: int) -> float:
    for _ in range(WARMUP_CALLS):
        run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times))


def whole_graph(flatbuffer: bytes, clip: np.ndarray, repeats: int) -> tuple[float, dict[int, np.ndarray]]:
    """Median latency of the whole graph at batch 1, and every tensor of subgraph 0 after one run
    (kept by an interpreter without delegates, which fuse tensors away)."""
    timed = interpreter(flatbuffer)
    index = timed.get_input_details()[0]["index"]
    timed.resize_tensor_input(index, clip.shape)
    timed.allocate_tensors()
    timed.set_tensor(index, clip)
    latency = median_ms(timed.invoke, repeats)
    kept = interpreter(flatbuffer, experimental_preserve_all_tensors=True,
                       experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    kept.resize_tensor_input(index, clip.shape)
    kept.allocate_tensors()
    kept.set_tensor(index, clip)
    kept.invoke()
    values = {}
    for detail in kept.get_tensor_details():
        try:
            values[detail["index"]] = kept.get_tensor(detail["index"])
        except ValueError:  # a tensor with no data (an omitted optional input)
            pass
    return latency, values


def one_op_model(model: schema.ModelT, op_index: int, values: dict[int, np.ndarray]) -> tuple[bytes, list[int]]:
    """Op ``op_index`` of subgraph 0 alone, its variable inputs as model inputs, shapes as in
    ``values``. Returns the flatbuffer and the original indices of its inputs, in order."""
    graph = model.subgraphs[0]
    op = copy.deepcopy(graph.operators[op_index])
    used = [i for i in (*op.inputs, *op.outputs) if i >= 0]
    new_index = {old: new for new, old in enumerate(dict.fromkeys(used))}
    tensors = []
    for old in new_index:
        tensor = copy.deepcopy(graph.tensors[old])
        if old in values:
            tensor.shape = np.asarray(values[old].shape, np.int32)
            tensor.shapeSignature = None
        tensors.append(tensor)
    constant = {old for old in new_index if model.buffers[graph.tensors[old].buffer].data is not None}
    inputs = [old for old in dict.fromkeys(i for i in op.inputs if i >= 0) if old not in constant]
    op.inputs = np.asarray([new_index[i] if i >= 0 else -1 for i in op.inputs], np.int32)
    op.outputs = np.asarray([new_index[i] for i in op.outputs], np.int32)
    single = schema.SubGraphT()
    single.tensors = tensors
    single.operators = [op]
    single.inputs = np.asarray([new_index[i] for i in inputs], np.int32)
    single.outputs = np.asarray(op.outputs, np.int32)
    single.name = "one_op"
    alone = copy.copy(model)
    alone.subgraphs = [single, *model.subgraphs[1:]]
    alone.signatureDefs = []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(alone)), inputs


def profile_ops(flatbuffer: bytes, values: dict[int, np.ndarray], repeats: int) -> list[dict]:
    """One row per op of subgraph 0: type, output shape, median ms of its invoke alone."""
    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    graph = model.subgraphs[0]
    rows = []
    for op_index, op in enumerate(graph.operators):
        code = model.operatorCodes[op.opcodeIndex]
        kind = OPCODE_NAMES.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
        content, inputs = one_op_model(model, op_index, values)
        alone = interpreter(content)
        alone.allocate_tensors()
        for detail, old in zip(alone.get_input_details(), inputs):
            alone.set_tensor(detail["index"], values[old])
        output = graph.tensors[op.outputs[0]]
        rows.append({"op": op_index, "type": kind, "ms": median_ms(alone.invoke, repeats),
                     "name": output.name.decode(errors="replace"),
                     "shape": tuple(values[op.outputs[0]].shape) if op.outputs[0] in values else None})
    return rows


def feature_scope(name: str) -> str:
    """The feature an op belongs to: the name scope (two levels at most) under ``extract_features``."""
    scopes = name.split(";")[0].split("/")
    inside = scopes[scopes.index("extract_features") + 1:-1] if "extract_features" in scopes else []
    return "/".join(inside[:2]) or "(other)"


def constant_bytes(flatbuffer: bytes) -> list[tuple[int, str]]:
    """Size and tensor name of every constant of subgraph 0, largest first."""
    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    graph = model.subgraphs[0]
    sizes = [(len(model.buffers[tensor.buffer].data), tensor.name.decode(errors="replace"))
             for tensor in graph.tensors if model.buffers[tensor.buffer].data is not None]
    return sorted(sizes, reverse=True)


def print_size(flatbuffer: bytes) -> None:
    constants = constant_bytes(flatbuffer)
    largest = ", ".join(f"{size / 1e6:.2f}" for size, _ in constants[:LARGEST_CONSTANTS])
    print(f"size: {len(flatbuffer) / 1e6:.2f} MB, constants {sum(size for size, _ in constants) / 1e6:.2f} MB "
          f"(largest: {largest} MB)")


def print_tables(latency: float, rows: list[dict], top: int) -> None:
    total = sum(row["ms"] for row in rows)
    print(f"whole graph: {latency:.3f} ms median at batch 1, 1 thread; {len(rows)} ops, "
          f"sum of per-op medians {total:.3f} ms")
    by_type = collections.defaultdict(lambda: [0, 0.0])
    for row in rows:
        by_type[row["type"]][0] += 1
        by_type[row["type"]][1] += row["ms"]
    print(f"\n{'op type':<26}{'count':>6}{'ms':>9}{'share':>8}")
    for kind, (count, ms) in sorted(by_type.items(), key=lambda item: -item[1][1])[:top]:
        print(f"{kind:<26}{count:>6}{ms:>9.3f}{ms / total:>8.1%}")
    by_scope = collections.defaultdict(lambda: [0, 0.0])
    for row in rows:
        by_scope[feature_scope(row["name"])][0] += 1
        by_scope[feature_scope(row["name"])][1] += row["ms"]
    print(f"\n{'name scope':<52}{'ops':>6}{'ms':>9}{'share':>8}")
    for scope, (count, ms) in sorted(by_scope.items(), key=lambda item: -item[1][1])[:top]:
        print(f"{scope[-52:]:<52}{count:>6}{ms:>9.3f}{ms / total:>8.1%}")
    print(f"\n{'op':>5} {'type':<24}{'ms':>8}  {'output shape':<22}name")
    for row in sorted(rows, key=lambda row: -row["ms"])[:top]:
        print(f"{row['op']:>5} {row['type']:<24}{row['ms']:>8.3f}  {str(row['shape']):<22}{row['name'][-70:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="run folder whose pipeline to convert")
    source.add_argument("--tflite", type=Path, help="profile this .tflite instead")
    parser.add_argument("--wav", type=Path, help="profile on this clip (read with the run's pipeline)")
    parser.add_argument("--save", type=Path, help="also write the converted feature graph here")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)

    flatbuffer = args.tflite.read_bytes() if args.tflite else feature_flatbuffer(args.model)
    if args.save:
        args.save.write_bytes(flatbuffer)
    n_samples = int(interpreter(flatbuffer).get_input_details()[0]["shape"][-1])
    clip = real_clip(args.wav, args.model) if args.wav else test_clip(n_samples)
    latency, values = whole_graph(flatbuffer, clip, args.repeats)
    print_size(flatbuffer)
    print_tables(latency, profile_ops(flatbuffer, values, args.repeats), args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
