"""Scale-out training: which ``tf.distribute`` strategy runs ``fit``/``tune``, and its batch sizes.

Keras 3 (TensorFlow backend) trains under any ``tf.distribute`` strategy by itself: a model
built and compiled inside ``strategy.scope()`` keeps that strategy, and its ``fit``/``predict``
hand a ``tf.data`` dataset to the strategy's own input API
(``strategy.experimental_distribute_dataset``), which splits every global batch among the
replicas and all-reduces the gradients. This module only picks the strategy and the sizes:

- ``default``: no distribution (one device; a GPU if TensorFlow sees one).
- ``mirrored``: ``MirroredStrategy`` over every GPU of this machine, or, without GPUs, over
  its logical CPU devices (``use_logical_cpus`` splits the CPU, to try it on a laptop).
- ``multiworker``: ``MultiWorkerMirroredStrategy`` over the machines listed in ``TF_CONFIG``
  (one process per machine, all running the same command).

TPUs take ``tf.distribute.TPUStrategy`` (``TPUClusterResolver`` + ``initialize_tpu_system``);
Keras drives it the same way, but it is not offered here because it cannot be tested without a
TPU (the README shows the few lines that swap it in).

``[data] batch_size`` is PER REPLICA: a step consumes ``batch_size x num_replicas_in_sync``
examples (``global_batch_size``), so an epoch has proportionally fewer steps and the
learning-rate schedule is sized on those global steps.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import tensorflow as tf

from tfbreath.errors import TfbreathError

STRATEGIES = ("default", "mirrored", "multiworker")
"""Names accepted by ``make_strategy`` (and by ``--strategy``)."""

TF_CONFIG = "TF_CONFIG"
"""Environment variable describing the cluster of a multi-worker run (TensorFlow's convention)."""

WORKER, CHIEF = "worker", "chief"
"""Task types of ``TF_CONFIG`` that train (a ``chief`` is an optional worker that writes the results)."""


class StrategyError(TfbreathError, ValueError):
    """A strategy name, device split or ``TF_CONFIG`` is unusable; the message names the value."""


class _MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """``MultiWorkerMirroredStrategy`` whose ``reduce`` takes what Keras 3 hands it with several workers.

    Keras 3's ``fit`` (3.15.1, and its main branch at the time of writing) fails under a real
    multi-worker strategy in two ``strategy.reduce`` calls: (1) when ``fit`` starts it reduces one
    whole input batch, the nest ``({"spectral", "scalars"}, label)``, in a single call
    (keras-team/keras#20329; TensorFlow reduces one value: "TODO: support `value` being a nest");
    (2) after every step it averages each scalar loss/metric with ``axis=0``, which a scalar does
    not have (tensorflow/tensorflow#72388). This reduces a nest leaf by leaf, and a scalar across
    replicas only (``axis=None``), which is what Keras does under ``MirroredStrategy``.
    """

    def reduce(self, reduce_op, value, axis):
        parent = super()

        def reduce_leaf(leaf):
            scalar = self.experimental_local_results(leaf)[0].shape.rank == 0
            return parent.reduce(reduce_op, leaf, None if scalar else axis)

        return tf.nest.map_structure(reduce_leaf, value)


def use_logical_cpus(n: int) -> None:
    """Split the CPU into ``n`` logical devices, so ``mirrored`` has ``n`` replicas without GPUs.

    TensorFlow fixes its devices the first time it runs anything, so call this before any
    tensor is made (and before ``make_strategy``). Calling it again with the same ``n`` is fine.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise StrategyError(f"the number of logical CPU devices must be an integer >= 1, got {n!r}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    except RuntimeError:
        have = len(tf.config.list_logical_devices("CPU"))
        if have != n:
            raise StrategyError(f"cannot split the CPU into {n} logical devices: TensorFlow already "
                                f"initialised {have}; split it before anything else runs") from None


def _check_tf_config() -> dict:
    """The parsed ``TF_CONFIG``; a one-line error when it is missing or not a worker cluster."""
    raw = os.environ.get(TF_CONFIG)
    if not raw:
        raise StrategyError(f"strategy 'multiworker' needs ${TF_CONFIG} (the cluster's workers and this "
                            f"task's index), and it is unset; on one machine use 'mirrored'")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as err:
        raise StrategyError(f"${TF_CONFIG} is not valid JSON ({err}): {raw!r}") from None
    cluster = config.get("cluster") if isinstance(config, dict) else None
    task = config.get("task") if isinstance(config, dict) else None
    if not isinstance(cluster, dict) or not isinstance(cluster.get(WORKER, []), list) or not (
            cluster.get(WORKER) or cluster.get(CHIEF)):
        raise StrategyError(f"${TF_CONFIG} needs cluster.worker, a list of host:port, got {raw!r}")
    if not isinstance(task, dict) or task.get("type") not in (WORKER, CHIEF) or not isinstance(task.get("index"), int):
        raise StrategyError(f"${TF_CONFIG} needs task.type 'worker' (or 'chief') and an integer task.index, "
                            f"got {raw!r}")
    hosts = cluster.get(task["type"], [])
    if not 0 <= task["index"] < len(hosts):
        raise StrategyError(f"${TF_CONFIG} task.index {task['index']} is outside cluster.{task['type']} "
                            f"({len(hosts)} host(s)): {raw!r}")
    return config


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy called ``name`` (one of ``STRATEGIES``), made ready to use."""
    if name not in STRATEGIES:
        raise StrategyError(f"strategy must be one of {list(STRATEGIES)}, got {name!r}")
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    _check_tf_config()
    try:
        return _MultiWorkerMirroredStrategy()
    except RuntimeError as err:  # collectives must be configured before TensorFlow starts
        raise StrategyError(f"cannot start strategy 'multiworker' ({err}); create it before anything "
                            f"else runs in this process") from None


def add_strategy_arguments(parser: argparse.ArgumentParser, what: str = "training") -> None:
    """The ``--strategy`` and ``--cpu-devices`` flags of ``fit`` and ``tune``."""
    parser.add_argument("--strategy", default="default",
                        help=f"tf.distribute strategy of {what}: {', '.join(STRATEGIES)} (default: default)")
    parser.add_argument("--cpu-devices", type=int,
                        help="split the CPU into N logical devices (to run --strategy mirrored without GPUs)")


def strategy_from_arguments(args: argparse.Namespace) -> tf.distribute.Strategy:
    """The strategy the flags of ``add_strategy_arguments`` ask for; call before TensorFlow
    fixes its devices (before any op runs)."""
    if args.cpu_devices is not None:
        use_logical_cpus(args.cpu_devices)
    return make_strategy(args.strategy)


def strategy_name(strategy: tf.distribute.Strategy) -> str:
    """``strategy``'s name in ``STRATEGIES``, or its TensorFlow class name if made elsewhere (``TPUStrategy``)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multiworker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    public = next(cls.__name__ for cls in type(strategy).__mro__ if not cls.__name__.startswith("_"))
    return "default" if public == tf.distribute.Strategy.__name__ else public


def global_batch_size(per_replica: int, strategy: tf.distribute.Strategy) -> int:
    """Examples per training step: ``per_replica`` on each of the strategy's replicas."""
    return per_replica * strategy.num_replicas_in_sync


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` marked to be split among workers element by element (``AutoShardPolicy.DATA``).

    Features come from a cache of a map over file paths: there is no file-reading dataset to
    shard by file (the ``AUTO`` policy would try, warn and fall back). Every worker builds the
    same seeded pipeline and keeps its replicas' share of each global batch, so together they
    see every example once per epoch. Without a multi-worker strategy this changes nothing.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """Whether this process writes the run's results: always, except on non-chief workers."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    if resolver.task_type == CHIEF:
        return True
    has_chief = CHIEF in resolver.cluster_spec().as_dict()
    return resolver.task_type == WORKER and resolver.task_id == 0 and not has_chief


def worker_run_dir(run_dir: Path, strategy: tf.distribute.Strategy) -> Path:
    """Where this process writes: ``run_dir`` on the chief, ``run_dir/worker_<i>`` elsewhere.

    Every worker of a multi-worker run executes the whole program (Keras saves backups, logs
    and models on each), so the others write to their own sub-folder instead of racing the
    chief on a shared file system.
    """
    if is_chief(strategy):
        return Path(run_dir)
    return Path(run_dir) / f"{strategy.cluster_resolver.task_type}_{strategy.cluster_resolver.task_id}"
