"""The tf.distribute strategy of a run, and which of its workers is the chief."""

import tensorflow as tf

from tfmnist.training.choices import STRATEGIES


def create_strategy(name, num_virtual_devices=0, tpu=""):
  """The tf.distribute strategy named `name` (one of choices.STRATEGIES).

  Args:
    name: "default", "one_device", "mirrored", "multi_worker" or "tpu".
    num_virtual_devices: split the CPU into this many logical devices first
      (testing mirrored training without GPUs); 0 or 1 leaves it whole.
    tpu: TPU name or address for "tpu".
  """
  if num_virtual_devices > 1:
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * num_virtual_devices)
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "one_device":
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
  if name == "mirrored":
    devices = None
    if not tf.config.list_logical_devices("GPU"):
      devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker":
    return tf.distribute.MultiWorkerMirroredStrategy()
  if name == "tpu":
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
    return tf.distribute.TPUStrategy(resolver)
  raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def is_chief(strategy):
  """True on the worker that writes checkpoints, summaries and the export.

  TensorFlow's own answer: the chief, or worker 0 of a cluster without one;
  every single-machine strategy is its own chief.
  """
  return bool(strategy.extended.should_checkpoint)


def task(strategy):
  """(task type, task id) of this worker in its cluster; ("", 0) on one machine."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return "", 0
  return resolver.task_type, int(resolver.task_id or 0)
