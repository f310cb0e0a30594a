"""tf.distribute for the fit path: one strategy per run, chosen by name.

- ``none``: the default (one device).
- ``mirrored``: ``MirroredStrategy`` over every local GPU, or every logical CPU device when
  there is no GPU (tests split the CPU in two with ``tf.config.set_logical_device_configuration``).
- ``multiworker``: ``MultiWorkerMirroredStrategy``; the cluster comes from ``TF_CONFIG``.  Every
  worker reads its share of each batch from the decoded cache (``shard``), and only the chief
  writes the run folder, so the folder must be on storage the workers share.
"""
from __future__ import annotations

import contextlib
import functools
import json
import os

STRATEGIES = ("none", "mirrored", "multiworker")


def add_strategy_flag(parser, choices=STRATEGIES) -> None:
    parser.add_argument("--strategy", choices=choices, default="none",
                        help="tf.distribute: 'mirrored' = all local GPUs (or logical CPU devices), "
                             "'multiworker' = MultiWorkerMirroredStrategy over the cluster in "
                             "TF_CONFIG (default none)")


@functools.lru_cache(maxsize=None)
def make_strategy(name: str = "none"):
    """The tf.distribute strategy called ``name`` (None for "none"), one per process.

    MultiWorkerMirroredStrategy must exist before TensorFlow runs anything: the CLIs call
    this first, and ``fit`` gets the same object back.
    """
    if name in (None, "none"):
        return None
    import tensorflow as tf

    if name == "mirrored":
        devices = [d.name for d in tf.config.list_logical_devices("GPU")] or \
                  [d.name for d in tf.config.list_logical_devices("CPU")]
        return tf.distribute.MirroredStrategy(devices)
    if name == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise ValueError("the multiworker strategy needs TF_CONFIG (the cluster and this "
                             "worker's task); see README 'Training on the full dataset'")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")


def scope(strategy):
    return strategy.scope() if strategy is not None else contextlib.nullcontext()


def is_multiworker(strategy) -> bool:
    if strategy is None:
        return False
    import tensorflow as tf

    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def is_chief(strategy) -> bool:
    """Whether this process writes the run folder (the only process, or the cluster's chief)."""
    if not is_multiworker(strategy):
        return True
    task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
    has_chief = "chief" in json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    return task.get("type") == "chief" or (not has_chief and task.get("type") == "worker"
                                            and task.get("index", 0) == 0)


def distribute_batches(strategy, make_dataset):
    """``make_dataset(shard)`` for this process: sharded per worker under multiworker."""
    if not is_multiworker(strategy):
        return make_dataset((0, 1))
    return strategy.distribute_datasets_from_function(
        lambda ctx: make_dataset((ctx.input_pipeline_id, ctx.num_input_pipelines)))


def prepare_model(strategy, model, sample_rate: int) -> None:
    """Work around two Keras 3 bugs with MultiWorkerMirroredStrategy (keras-team/keras#20585).

    - Before its first step, ``fit`` reduces the first distributed batch with
      ``strategy.reduce`` only to learn its shapes, which MultiWorkerMirroredStrategy cannot
      do eagerly.  The shapes are known: build from them instead.
    - Each step's logs (scalars) are averaged with ``strategy.reduce("MEAN", v, axis=0)``,
      which fails on a scalar; average them over the replicas (axis None) instead.
    """
    if not is_multiworker(strategy):
        return
    import types

    import tensorflow as tf
    from keras.src.backend.tensorflow import trainer

    if not getattr(trainer.reduce_per_replica, "_kws_tf", False):
        keras_reduce = trainer.reduce_per_replica

        def reduce_per_replica(values, strategy, reduction):
            if is_multiworker(strategy) and reduction in ("auto", "mean"):
                return tf.nest.map_structure(lambda v: strategy.reduce("MEAN", v, axis=None), values)
            return keras_reduce(values, strategy, reduction)

        reduce_per_replica._kws_tf = True
        trainer.reduce_per_replica = reduce_per_replica

    spec = (tf.TensorSpec((None, sample_rate), tf.float32), tf.TensorSpec((None,), tf.int32))

    def build_from_spec(self, iterator=None, data_batch=None):
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=spec)

    model._maybe_symbolic_build = types.MethodType(build_from_spec, model)
