#!/usr/bin/env python3
r"""Input-pipeline throughput, and training from records vs from memory.

Modes (one per process, so whole-process timers can compare them):
  read           read + parse the split from records, then one epoch of batches
  augment        one epoch of batches with the random affine augmentation applied
  train_records  the seed LeNet trained with augmentation from the records pipeline
  train_memory   the same steps on the same batches, gathered into memory first

Each mode prints one line of JSON with images/s measured inside the process
(after tracing). Example:
  python tools/benchmark_pipeline.py --records_dir=records --dataset=mnist --mode=read
"""

import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfmnist  # pylint: disable=g-import-not-at-top,unused-import  # first: it sets TensorFlow's CPU kernels
from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tfmnist.data import augment, pipeline, pixels, records  # pylint: disable=g-import-not-at-top
from tfmnist.training import config as config_lib  # pylint: disable=g-import-not-at-top
from tfmnist.training import state  # pylint: disable=g-import-not-at-top
from tfmnist.training import step as step_lib  # pylint: disable=g-import-not-at-top

_RECORDS_DIR = flags.DEFINE_string("records_dir", "records", "Records folder.")
_DATASET = flags.DEFINE_string("dataset", "mnist", "Dataset name.")
_MODE = flags.DEFINE_enum("mode", "read", ("read", "augment", "train_records", "train_memory"),
                          "What to measure.")
_BATCH = flags.DEFINE_integer("global_batch_size", 128, "Images per batch.")
_STEPS = flags.DEFINE_integer("steps", 300, "Train steps timed (train modes).")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed passes (read/augment); the best is kept.")

# The seed notebooks' ImageDataGenerator settings.
_AFFINE = augment.AugmentConfig(rotation_degrees=10, zoom=0.1, shift_x=0.1, shift_y=0.1)


def measure_pipeline(files, mode):
  """Images/s of reading (cold, from the files) and of batching/augmenting epochs."""
  start = time.perf_counter()
  examples = pipeline.read_examples(files)
  read_seconds = time.perf_counter() - start
  shard = pipeline.plan_shard(files, _BATCH.value)
  steps = pipeline.steps_per_epoch(len(examples), _BATCH.value)
  # Batches are consumed the way the train loop consumes them: inside one
  # traced loop (steps per call as a tensor), here with nothing but the
  # augmentation after them.
  config = _AFFINE if mode == "augment" else augment.AugmentConfig()

  @tf.function
  def consume(iterator, num_steps):
    total = tf.constant(0.0)
    for step in tf.range(tf.cast(num_steps, tf.int64)):
      images = augment.augment(pixels.normalize(next(iterator)["image"]), config, 0, step)
      total += tf.reduce_sum(images[:, 0, 0, 0])
    return total

  best = 0.0
  for repeat in range(_REPEATS.value + 1):  # The first pass traces.
    iterator = iter(pipeline.train_dataset(examples, shard, 0, steps))
    start = time.perf_counter()
    consume(iterator, tf.constant(steps)).numpy()
    rate = steps * _BATCH.value / (time.perf_counter() - start)
    if repeat:
      best = max(best, rate)
  return {"mode": mode, "images": len(examples), "read_seconds": read_seconds,
          "read_images_per_second": len(examples) / read_seconds,
          "epoch_images_per_second": best,
          "read_plus_epoch_images_per_second":
              2 * len(examples) / (read_seconds + len(examples) / best)}


def measure_training(files, info, mode):
  """Images/s of the real train loop (seed LeNet, augmentation on)."""
  strategy = tf.distribute.get_strategy()
  counts = [s["count"] for s in info["splits"]["train"]["shards"]]
  steps_per_epoch = pipeline.pipeline_steps(counts, _BATCH.value)
  config = config_lib.TrainConfig(model_dir=tempfile.mkdtemp(), model="lenet",
                                 global_batch_size=_BATCH.value, augment=_AFFINE)
  warmup = 20
  if mode == "train_records":
    dataset, _ = pipeline.distribute_train(strategy, files, counts, _BATCH.value, seed=0)
  else:
    # The same batches, materialised before training starts.
    shard = pipeline.plan_shard(files, _BATCH.value)
    examples = pipeline.read_examples(files)
    batches = list(pipeline.train_dataset(examples, shard, 0, steps_per_epoch)
                   .take(warmup + _STEPS.value))
    stacked = {k: tf.stack([b[k] for b in batches]) for k in ("image", "label")}
    dataset = strategy.distribute_datasets_from_function(
        lambda _: tf.data.Dataset.from_tensor_slices(stacked))
  sample = pipeline.read_examples(files[:1]).image[:_BATCH.value]
  run = state.create_run(config, strategy, info["num_classes"], sample, steps_per_epoch * 10,
                             steps_per_epoch)
  loop = step_lib.make_train_loop(config, run, _BATCH.value)
  iterator = iter(dataset)
  loop(iterator, tf.constant(warmup)).numpy()  # Traces.
  start = time.perf_counter()
  loop(iterator, tf.constant(_STEPS.value)).numpy()
  seconds = time.perf_counter() - start
  return {"mode": mode, "steps": _STEPS.value, "seconds": seconds,
          "images_per_second": _STEPS.value * _BATCH.value / seconds}


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  files = records.split_files(_RECORDS_DIR.value, _DATASET.value, "train")
  if _MODE.value in ("read", "augment"):
    result = measure_pipeline(files, _MODE.value)
  else:
    result = measure_training(files, records.read_info(_RECORDS_DIR.value, _DATASET.value),
                              _MODE.value)
  print(json.dumps(result))


if __name__ == "__main__":
  app.run(main)
