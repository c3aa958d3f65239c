#!/usr/bin/env python3
r"""Training throughput of tfmnist's loop against Keras `model.fit`.

Both train the same registered model (same layers, same stateless dropout)
with the same optimizer, global batch, precision and batches, read from
records into memory first; Keras fit runs with its default settings but one:
its step is compiled without XLA, as the loop's is (`--fit_xla=auto` keeps
Keras's default, which turns XLA on wherever TensorFlow sees a GPU). One
mode per process, so whole-process timers can interleave and pair the runs:

  python tools/benchmark_fit.py --mode=custom --model=lenet
  python tools/benchmark_fit.py --mode=fit --model=lenet

Prints one line of JSON with images/s over the timed steps (after a warm-up
that includes tracing) and whether the timed step was compiled with XLA.
"""

import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfmnist  # pylint: disable=g-import-not-at-top,unused-import  # first: it sets TensorFlow's CPU kernels
from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
import keras  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tfmnist import hardware, models  # pylint: disable=g-import-not-at-top
from tfmnist.data import pipeline, pixels, records  # pylint: disable=g-import-not-at-top
from tfmnist.training import config as config_lib  # pylint: disable=g-import-not-at-top
from tfmnist.training import optim, state  # pylint: disable=g-import-not-at-top
from tfmnist.training import step as step_lib  # pylint: disable=g-import-not-at-top
from tfmnist.models.layers import Noise  # pylint: disable=g-import-not-at-top

_RECORDS_DIR = flags.DEFINE_string("records_dir", "records", "Records folder.")
_DATASET = flags.DEFINE_string("dataset", "mnist", "Dataset name.")
_MODE = flags.DEFINE_enum("mode", "custom", ("custom", "fit"), "Which loop trains.")
_MODEL = flags.DEFINE_string("model", "lenet", "Registered model.")
_BATCH = flags.DEFINE_integer("global_batch_size", 128, "Images per step.")
_STEPS = flags.DEFINE_integer("steps", 150, "Timed steps.")
_WARMUP = flags.DEFINE_integer("warmup_steps", 20, "Untimed steps first (tracing).")
_FIT_XLA = flags.DEFINE_enum(
    "fit_xla", "off", ("off", "on", "auto"),
    "Keras fit's jit_compile: off compiles its step as the loop's, without XLA; auto is "
    "Keras's default (XLA wherever there is a GPU and no distribution strategy).")
_PRECISION = flags.DEFINE_enum("precision", "float32", config_lib.PRECISIONS,
                               "dtype policy; auto: the one training would choose here.")


def precision():
  """The dtype policy measured (auto resolved for this machine)."""
  if _PRECISION.value == "auto":
    return hardware.choose_precision(hardware.detect())[0]
  return _PRECISION.value


class _FitModel(keras.Model):
  """The registered model with the Noise its dropout needs, for model.fit."""

  def __init__(self, inner, global_batch_size):
    super().__init__(name="fit_model")
    self.inner = inner
    self.global_batch_size = global_batch_size
    self.draws = tf.Variable(0, dtype=tf.int64, trainable=False)

  def call(self, images, training=False):
    noise = None
    if training:
      noise = Noise(tf.random.experimental.stateless_fold_in(
          tf.constant([0, 0x5EED], tf.int64), self.draws.assign_add(1)), 0,
                    self.global_batch_size)
    return self.inner(images, training=training, noise=noise)


def batches(files, count):
  """The first `count` training batches of seed 0, as in-memory tensors."""
  shard = pipeline.plan_shard(files, _BATCH.value)
  examples = pipeline.read_examples(files)
  steps = pipeline.steps_per_epoch(len(examples), _BATCH.value)
  taken = list(pipeline.train_dataset(examples, shard, 0, steps).take(count))
  return {k: tf.stack([b[k] for b in taken]) for k in ("image", "label")}


def run_custom(info, stacked):
  strategy = tf.distribute.get_strategy()
  config = config_lib.TrainConfig(model_dir=tempfile.mkdtemp(), model=_MODEL.value,
                                 global_batch_size=_BATCH.value, precision=precision())
  dataset = strategy.distribute_datasets_from_function(
      lambda _: tf.data.Dataset.from_tensor_slices(stacked))
  run = state.create_run(config, strategy, info["num_classes"], stacked["image"][0], 10**6, 1000)
  loop = step_lib.make_train_loop(config, run, _BATCH.value)
  iterator = iter(dataset)
  loop(iterator, tf.constant(_WARMUP.value)).numpy()
  start = time.perf_counter()
  loop(iterator, tf.constant(_STEPS.value)).numpy()
  return time.perf_counter() - start, False


class _Timer(keras.callbacks.Callback):
  """Times the steps after the warm-up, from the end of one batch to another.

  The clock stops at the end of the last step, not when `fit` returns: in
  about half of the processes here `fit` took 4.7 s more to return after its
  last callback, once per call, and counting that made Keras's steps look up
  to 2.2x slower than they ran. Nor does it stop before the step has run:
  a callback that defines on_train_batch_end makes Keras call it in turn,
  after turning the step's logs into Python numbers, which waits for them.
  """

  def __init__(self, warmup_steps, last_step):
    super().__init__()
    self.warmup_steps, self.last_step = warmup_steps, last_step
    self.start = self.stop = None

  def on_train_batch_end(self, batch, logs=None):
    if batch + 1 == self.warmup_steps:
      self.start = time.perf_counter()
    elif batch + 1 == self.last_step:
      self.stop = time.perf_counter()


def run_fit(info, stacked):
  inner = models.create(_MODEL.value, info["num_classes"])
  model = _FitModel(inner, _BATCH.value)
  model(pixels.normalize(stacked["image"][0]))
  model.compile(optimizer=optim.create(optim.OptimizerConfig(), 1e-3),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
                jit_compile={"off": False, "on": True, "auto": "auto"}[_FIT_XLA.value])
  # What a model.fit user writes: normalise in the input pipeline.
  dataset = tf.data.Dataset.from_tensor_slices(stacked).map(
      lambda b: (pixels.normalize(b["image"]), b["label"])).prefetch(tf.data.AUTOTUNE)
  timer = _Timer(_WARMUP.value, _WARMUP.value + _STEPS.value)
  model.fit(dataset, epochs=1, steps_per_epoch=_WARMUP.value + _STEPS.value, verbose=0,
            callbacks=[timer])
  return timer.stop - timer.start, bool(model.jit_compile)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  keras.utils.set_random_seed(0)
  keras.mixed_precision.set_global_policy(precision())
  info = records.read_info(_RECORDS_DIR.value, _DATASET.value)
  files = records.split_files(_RECORDS_DIR.value, _DATASET.value, "train")
  stacked = batches(files, _WARMUP.value + _STEPS.value)
  seconds, xla = (run_custom if _MODE.value == "custom" else run_fit)(info, stacked)
  print(json.dumps({"mode": _MODE.value, "model": _MODEL.value, "precision": precision(),
                    "global_batch_size": _BATCH.value, "steps": _STEPS.value, "xla": xla,
                    "seconds": seconds, "images_per_second": _STEPS.value * _BATCH.value / seconds}))


if __name__ == "__main__":
  app.run(main)
