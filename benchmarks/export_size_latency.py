"""Size, single-thread latency and accuracy of a run's model: Keras fp32 vs TFLite fp32/fp16/int8.

    python benchmarks/export_size_latency.py --model RUN_DIR [--member cnn8] [--data DIR]
                                              [--latency-clips 50] [--json OUT.json]

All four are the end-to-end waveform-in, P(exhale)-out model (features inside), measured in
the same run on the run's validation clips: size on disk (the ``.keras`` file vs the
``.tflite``), median per-clip latency at batch 1 on one thread after a warm-up (all variants
timed clip by clip in turn, so machine drift hits them alike), accuracy.
Issue 4's target is for the int8 CNN8 (<= 3 MB, >= 3x faster than Keras fp32). A last row times
the float32 feature graph alone (waveform -> maps + scalars as TFLite), which every variant
shares: the floor under any quantization of the classifier. A second table times the classifier
alone on precomputed features (Keras fp32 vs TFLite fp32 vs TFLite int8, same clips): what int8
buys on this CPU once the features are out of the way.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(1)  # one thread, before TF starts any op
tf.config.threading.set_inter_op_parallelism_threads(1)

from tfbreath import export, serving  # noqa: E402
from tfbreath.evaluation import THRESHOLD  # noqa: E402

WARMUP_CALLS = 3
PASSES = 3
"""Each clip is timed this many times per variant."""


def median_latencies_ms(predictors: dict, inputs) -> dict[str, float]:
    """Median wall time of each ``predict(x)`` over ``inputs``, interleaved: every input goes
    through all predictors in turn, ``PASSES`` times, so a drift in the (shared, virtual)
    machine's speed hits every variant alike. Each predictor first runs a few untimed calls."""
    inputs = list(inputs)
    for predict in predictors.values():
        for x in inputs[:WARMUP_CALLS]:
            predict(x)
    times = {name: [] for name in predictors}
    for _ in range(PASSES):
        for x in inputs:
            for name, predict in predictors.items():
                started = time.perf_counter()
                predict(x)
                times[name].append(time.perf_counter() - started)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def one_clip_batches(clips: np.ndarray) -> list[np.ndarray]:
    return [clip[np.newaxis] for clip in clips]


def classifier_rows(parts: export.Int8Parts, clips: np.ndarray) -> list[dict]:
    """Latency of the classifier alone on the features of ``clips``: Keras fp32, TFLite fp32, int8."""
    features = {name: np.asarray(x) for name, x in parts.extractor.predict(clips, verbose=0).items()
                if name in parts.head.input}
    one = [{name: x[i:i + 1] for name, x in features.items()} for i in range(len(clips))]
    compiled = tf.function(parts.head, input_signature=[{name: tf.TensorSpec((1, *x.shape[1:]), tf.float32)
                                                         for name, x in features.items()}])
    predictors = {"Keras fp32": lambda x: compiled(x).numpy(),
                  "TFLite fp32": named_input_invoker(export.convert(parts.head_saved, "none")),
                  "TFLite int8": named_input_invoker(parts.head_int8)}
    return [{"model": name, "latency_ms": ms} for name, ms in median_latencies_ms(predictors, one).items()]


def named_input_invoker(flatbuffer: bytes):
    """``invoke({name: array})`` on a one-thread interpreter. Not the signature runner: its calls
    skip the default XNNPACK delegate (measured 4.8 vs 2.5 ms for the CNN8 classifier)."""
    interpreter = tf.lite.Interpreter(model_content=flatbuffer, num_threads=1)
    interpreter.allocate_tensors()
    indices = {name: detail["index"] for name, detail in interpreter.get_signature_runner().get_input_details().items()}

    def invoke(inputs: dict[str, np.ndarray]) -> None:
        for name, x in inputs.items():
            interpreter.set_tensor(indices[name], x)
        interpreter.invoke()

    return invoke


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="run folder from python -m tfbreath.fit")
    parser.add_argument("--member", default="cnn8", choices=export.MEMBERS)
    parser.add_argument("--data", type=Path, help="the run's data folder, if it moved")
    parser.add_argument("--latency-clips", type=int, default=50)
    parser.add_argument("--json", type=Path, help="also write the table as JSON")
    args = parser.parse_args(argv)

    run = export.Run.load(args.model, args.data)
    trained = serving.load_trained_model(run.model_path(args.member))
    model = serving.waveform_model(trained, run.pipeline)
    train_examples, val_examples = run.split()
    clips = serving.load_waveforms(val_examples.files, run.pipeline)
    labels = val_examples.labels
    timed = clips[:args.latency_clips]

    rows, predictors = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        keras_file = Path(tmp) / "model.keras"
        model.save(keras_file)
        compiled = tf.function(model, input_signature=[tf.TensorSpec((1, clips.shape[1]), tf.float32)])
        keras_p = np.asarray(model.predict(clips, batch_size=64, verbose=0)).reshape(-1)
        rows.append({"model": "Keras fp32", "bytes": keras_file.stat().st_size,
                     "accuracy": float(np.mean((keras_p >= THRESHOLD) == labels))})
        predictors["Keras fp32"] = lambda x: compiled(x).numpy()
        saved = export.save_serving(model, Path(tmp) / "savedmodel")
        parts = export.int8_parts(trained, run.pipeline, train_examples, Path(tmp))  # made once: both tables time them
        for quantize in export.QUANTIZATIONS:
            flatbuffer = parts.flatbuffer if quantize == "int8" else export.convert(saved, quantize)
            classifier = serving.TFLiteClassifier(flatbuffer, num_threads=1)
            p = classifier(clips)
            name = f"TFLite {quantize if quantize != 'none' else 'fp32'}"
            rows.append({"model": name, "bytes": len(flatbuffer),
                         "accuracy": float(np.mean((p >= THRESHOLD) == labels)),
                         "max_abs_diff_vs_keras": float(np.max(np.abs(p - keras_p)))})
            predictors[name] = classifier
        rows.append({"model": "features only", "bytes": len(parts.features)})
        predictors["features only"] = serving.TFLiteClassifier(parts.features, num_threads=1)
        latencies = median_latencies_ms(predictors, one_clip_batches(timed))
        for row in rows:
            row["latency_ms"] = latencies[row["model"]]
        head_rows = classifier_rows(parts, timed)

    base = rows[0]["latency_ms"]
    print(f"{args.member} end-to-end (waveform -> P(exhale)), {len(labels)} validation clips, "
          f"latency: median of {PASSES} x {len(timed)} interleaved calls at batch 1, 1 thread")
    print(f"{'model':<14}{'size MB':>9}{'ms/clip':>9}{'speed-up':>10}{'accuracy':>10}{'max |dP|':>11}")
    for row in rows:
        row["speedup_vs_keras"] = base / row["latency_ms"]
        diff, accuracy = row.get("max_abs_diff_vs_keras"), row.get("accuracy")
        print(f"{row['model']:<14}{row['bytes'] / 1e6:>9.2f}{row['latency_ms']:>9.2f}{row['speedup_vs_keras']:>9.2f}x"
              f"{'' if accuracy is None else f'{accuracy:>10.4f}'}{'' if diff is None else f'{diff:>11.2e}'}")
    print(f"\n{args.member} classifier alone (features precomputed), same clips and timing, batch 1, 1 thread")
    print(f"{'model':<14}{'ms/clip':>9}{'speed-up':>10}")
    for row in head_rows:
        row["speedup_vs_keras"] = head_rows[0]["latency_ms"] / row["latency_ms"]
        print(f"{row['model']:<14}{row['latency_ms']:>9.2f}{row['speedup_vs_keras']:>9.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"end_to_end": rows, "classifier": head_rows}, indent=2) + "\n",
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
