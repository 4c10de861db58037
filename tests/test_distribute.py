"""Scale-out training: strategies by name, mirrored over two logical CPUs, two local workers.

The mirrored and multi-worker runs are real ``python -m tfbreath.fit`` processes: logical
devices and collective ops must be set up before TensorFlow starts, which this pytest process
may already have done.
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import types
from pathlib import Path

import keras
import numpy as np
import pytest
import scipy.special
import tensorflow as tf

from tfbreath import distribute, fit
from tfbreath.config import PipelineConfig, dump_config, with_overrides
from tfbreath.synthetic import write_synthetic_breath

PER_REPLICA_BATCH = 4
TINY = with_overrides(PipelineConfig(name="tiny"), "train", models=("cnn8",), epochs=1, model_width=0.125,
                      precision="float32")
TINY = with_overrides(with_overrides(TINY, "features", maps=("mel",)), "augment", warmup_epochs=0)
TINY = with_overrides(TINY, "data", batch_size=PER_REPLICA_BATCH, validation_fraction=0.25)
NO_SCALARS = with_overrides(TINY, "features", scalars=False)
"""For the two-worker run: the scalar features take a third of each process's time."""

RUN_TIMEOUT_S = 900
"""Generous: the machine running the tests may be busy (on 2 cores at a load of 10, the mirrored
run took over 300 s); a hung collective must still fail."""


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """A tiny Kaggle-layout folder (12 training clips, 4 validation clips)."""
    return write_synthetic_breath(tmp_path_factory.mktemp("distribute") / "data", n_sessions=8, clips_per_session=2)


def _pipeline_file(pipeline: PipelineConfig, folder: Path) -> Path:
    path = folder / "pipeline.toml"
    path.write_text(dump_config(pipeline))
    return path


def _fit_command(data_dir: Path, pipeline: Path, out: Path, *flags: str) -> list[str]:
    return [sys.executable, "-m", "tfbreath.fit", "--data", str(data_dir), "--pipeline", str(pipeline),
            "--out", str(out), *flags]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != distribute.TF_CONFIG}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": "", **extra}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_each_strategy_name_makes_its_strategy_and_a_bad_one_is_named():
    default = distribute.make_strategy("default")
    assert default is tf.distribute.get_strategy()
    assert distribute.strategy_name(default) == "default"
    assert distribute.global_batch_size(16, default) == 16
    mirrored = distribute.make_strategy("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    assert distribute.strategy_name(mirrored) == "mirrored"
    assert distribute.global_batch_size(16, mirrored) == 16 * mirrored.num_replicas_in_sync
    assert distribute.is_chief(mirrored)
    assert distribute.worker_run_dir(Path("run"), mirrored) == Path("run")
    with pytest.raises(distribute.StrategyError, match=r"one of \['default', 'mirrored', 'multiworker'\], got 'tpu'"):
        distribute.make_strategy("tpu")
    with pytest.raises(distribute.StrategyError, match="got 0"):
        distribute.use_logical_cpus(0)
    tf.constant(0)  # TensorFlow has now fixed its devices: a different split must be refused
    with pytest.raises(distribute.StrategyError, match="already initialised"):
        distribute.use_logical_cpus(len(tf.config.list_logical_devices("CPU")) + 1)


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs $TF_CONFIG"),
    ("{not json", "is not valid JSON"),
    ('{"cluster": {"worker": "a:1"}, "task": {"type": "worker", "index": 0}}', "needs cluster.worker"),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "ps", "index": 0}}', "needs task.type"),
    ('{"cluster": {"worker": ["a:1", "b:2"]}, "task": {"type": "worker", "index": 2}}', "task.index 2 is outside"),
])
def test_multiworker_rejects_a_missing_or_bad_tf_config(tf_config, message, monkeypatch):
    monkeypatch.delenv(distribute.TF_CONFIG, raising=False)
    if tf_config is not None:
        monkeypatch.setenv(distribute.TF_CONFIG, tf_config)
    with pytest.raises(distribute.StrategyError) as err:
        distribute.make_strategy("multiworker")
    assert message in str(err.value)


def test_fit_names_a_bad_strategy_in_one_line(tmp_path, capsys):
    assert fit.main(["--strategy", "tpu", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert "strategy must be one of" in err and "'tpu'" in err and "\n" not in err


def test_mirrored_over_two_logical_cpus_trains_on_a_doubled_global_batch(tiny_data, tmp_path):
    out = tmp_path / "run"
    command = _fit_command(tiny_data, _pipeline_file(TINY, tmp_path), out, "--strategy", "mirrored", "--cpu-devices", "2")
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == {"name": "mirrored", "replicas": 2,
                                   "global_batch_size": 2 * PER_REPLICA_BATCH}
    # Saved under the strategy, loaded without it: the steps taken are those of the global batch.
    model = keras.models.load_model(out / "cnn8.keras")
    steps = math.ceil(metrics["split"]["train_clips"] / (2 * PER_REPLICA_BATCH))
    assert steps < math.ceil(metrics["split"]["train_clips"] / PER_REPLICA_BATCH)
    assert int(model.optimizer.iterations) == steps * TINY.train.epochs
    assert all(layer.synchronized for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization))
    ensemble = keras.models.load_model(out / "ensemble.keras")
    rng = np.random.default_rng(0)
    x = {"spectral": rng.standard_normal((3, 128, TINY.num_frames, 1)).astype("float32"),
         "scalars": rng.standard_normal((3, TINY.features.n_scalars)).astype("float32")}
    np.testing.assert_allclose(ensemble.predict(x, verbose=0), scipy.special.expit(model.predict(x, verbose=0)),
                               atol=1e-5)


def test_two_local_workers_train_to_the_same_weights(tiny_data, tmp_path):
    pipeline = _pipeline_file(NO_SCALARS, tmp_path)
    out = tmp_path / "run"
    workers = [f"127.0.0.1:{_free_port()}" for _ in range(2)]
    processes = []
    for index in range(len(workers)):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        processes.append(subprocess.Popen(_fit_command(tiny_data, pipeline, out, "--strategy", "multiworker"),
                                          env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE, text=True))
    try:
        outputs = [process.communicate(timeout=RUN_TIMEOUT_S) for process in processes]
    finally:
        for process in processes:
            process.kill()
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr[-3000:]
    chief_dir, worker_dir = out, out / "worker_1"  # the chief writes the run, worker 1 its own copy
    metrics = [json.loads((d / "metrics.json").read_text()) for d in (chief_dir, worker_dir)]
    for m in metrics:
        assert m["strategy"] == {"name": "multiworker", "replicas": 2,
                                 "global_batch_size": 2 * PER_REPLICA_BATCH}
    models = [keras.models.load_model(d / "cnn8.keras") for d in (chief_dir, worker_dir)]
    steps = math.ceil(metrics[0]["split"]["train_clips"] / (2 * PER_REPLICA_BATCH))
    assert [int(m.optimizer.iterations) for m in models] == [steps, steps]
    # Every weight, batch-norm averages included, and so every validation prediction.
    for chief_weight, worker_weight in zip(*(m.get_weights() for m in models)):
        np.testing.assert_allclose(chief_weight, worker_weight, rtol=1e-5, atol=1e-6)
    predictions = [(d / "validation_predictions.csv").read_text() for d in (chief_dir, worker_dir)]
    assert predictions[0] == predictions[1]


def _strategy(cluster: dict, task_type: str, task_id: int):
    resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
        tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
    return types.SimpleNamespace(cluster_resolver=resolver)


def test_with_a_chief_in_the_cluster_worker_0_is_not_the_chief():
    cluster = {"chief": ["a:1"], "worker": ["b:2", "c:3"]}
    assert distribute.is_chief(_strategy(cluster, "chief", 0))
    worker0 = _strategy(cluster, "worker", 0)
    assert not distribute.is_chief(worker0)
    assert distribute.worker_run_dir(Path("run"), worker0) == Path("run/worker_0")


@pytest.mark.parametrize("cluster", [{"chief": ["a:1"], "worker": ["b:2"]}, {"chief": ["a:1"]}])
def test_a_chief_task_is_accepted(cluster, monkeypatch):
    monkeypatch.setenv(distribute.TF_CONFIG, json.dumps({"cluster": cluster, "task": {"type": "chief", "index": 0}}))
    assert distribute._check_tf_config()["task"]["type"] == "chief"


def test_a_bool_is_not_a_device_count():
    with pytest.raises(distribute.StrategyError, match="got True"):
        distribute.use_logical_cpus(True)


def test_global_batch_counts_every_replica():
    assert distribute.global_batch_size(4, types.SimpleNamespace(num_replicas_in_sync=3)) == 12
