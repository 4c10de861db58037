"""Training step time of the models under float32 vs mixed precision, same run, same data.

    python benchmarks/train_speed.py [--models cnn8,vgg] [--batch 64] [--steps 20]

Times full-size models (the paper's 2.43 M CNN8 and 8.15 M VGG) on random inputs of the real
shape, after a warm-up of a few steps, and prints ms/step and the speed-up of each mixed
policy over float32 (target for CNN8 on CPU: >= 2x with mixed_bfloat16). Reports whether this
CPU has native bf16 (AVX512-BF16/AMX): without it, bf16 is emulated and slower.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import keras
import numpy as np

from tfbreath.config import PipelineConfig, with_overrides
from tfbreath.precision import cpu_supports_bf16
from tfbreath.train import compile_model, new_model

WARMUP_STEPS = 2


def step_time(name: str, policy: str, batch: int, steps: int, width: float) -> float:
    keras.mixed_precision.set_global_policy(policy)
    keras.utils.set_random_seed(0)
    pipeline = with_overrides(PipelineConfig(), "train", model_width=width)
    model = compile_model(new_model(name, pipeline), 1e-3, 1000, pipeline.train)
    rng = np.random.default_rng(0)
    x = {"spectral": rng.standard_normal((batch, 128, pipeline.num_frames, len(pipeline.features.maps)), np.float32),
         "scalars": rng.standard_normal((batch, pipeline.features.n_scalars), np.float32)}
    y = rng.integers(0, 2, batch).astype(np.float32)
    for _ in range(WARMUP_STEPS):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return (time.perf_counter() - start) / steps * 1000.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="cnn8,vgg")
    parser.add_argument("--policies", default="float32,mixed_bfloat16")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--width", type=float, default=1.0, help="conv width multiplier (1.0 = the paper's models)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(f"CPU native bf16 (avx512_bf16/amx_bf16): {cpu_supports_bf16()}")
    results = {}
    for name in args.models.split(","):
        times = {policy: step_time(name, policy, args.batch, args.steps, args.width)
                 for policy in args.policies.split(",")}
        baseline = times["float32"]
        results[name] = {policy: {"ms_per_step": round(ms, 1), "speedup": round(baseline / ms, 2)}
                         for policy, ms in times.items()}
        for policy, ms in times.items():
            print(f"{name:5s} width {args.width:g} {policy:15s} {ms:8.1f} ms/step (batch {args.batch})  "
                  f"speed-up {baseline / ms:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"cpu_native_bf16": cpu_supports_bf16(), "batch": args.batch, "width": args.width,
                                         "models": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
