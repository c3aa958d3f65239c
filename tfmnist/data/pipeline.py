"""The tf.data input pipeline over tfmnist's TFRecords.

Reading: the shards of a split are read in parallel, each parsed whole
(`batch` then `parse_example`), concatenated in file order and kept in memory
as uint8 (an MNIST-family split is tens of MB), which is the cache:
later epochs never touch the files again.

Order: the training order of epoch e is a stateless permutation seeded by
(seed, e), cut into global batches; each replica takes its rows of each global
batch. Because the order is a pure function of (seed, epoch, step), a resumed
run starts at any step and sees the same batches as an uninterrupted run, and
the global batch is the same whatever the number of replicas.

Sharding across workers: by file when every worker can get whole shards, else
by data (every worker reads all shards and keeps its rows), with a warning.

Images stay uint8 until the train step; `pixels.normalize` turns them into
floats there, in evaluation and in the exported model alike.

The functions tf.data traces branch on Python values only, so autograph is
told not to convert them (`do_not_convert`), as training.step explains.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import logging

from tfmnist.data import records
from tfmnist.errors import DataError

# A batch larger than any shard: each shard becomes one element, so the
# interleave below yields the shards whole and in file order.
_WHOLE_FILE = np.iinfo(np.int64).max


@tf.autograph.experimental.do_not_convert
def parse_batch(serialized):
  """Parses a batch of serialized examples into uint8 images and int32 labels.

  Returns:
    {"image": uint8 [B, 28, 28, 1], "label": int32 [B] (-1 unlabeled),
     "index": int64 [B], "id": string [B]}
  """
  features = tf.io.parse_example(serialized, records.feature_spec())
  images = tf.io.decode_raw(features["image"], tf.uint8)
  return {
      "image": tf.reshape(images, [-1, 28, 28, 1]),
      "label": tf.cast(features["label"], tf.int32),
      "index": features["index"],
      "id": features["id"],
  }


@dataclasses.dataclass
class Examples:
  """A split (or a worker's share of it) held in memory."""
  image: tf.Tensor  # uint8 [N, 28, 28, 1]
  label: tf.Tensor  # int32 [N]
  index: tf.Tensor  # int64 [N], position in the source file
  id: tf.Tensor  # string [N]

  def __len__(self):
    return int(self.label.shape[0])


def read_examples(files):
  """Reads and parses shards into memory, in file order.

  Args:
    files: shard paths; read in parallel, concatenated in the given order.

  Returns:
    Examples.
  """
  dataset = tf.data.Dataset.from_tensor_slices(list(files))
  # One element per file: interleaving records (block_length < shard size)
  # would mix the shards and break the file order.
  dataset = dataset.interleave(
      tf.autograph.experimental.do_not_convert(
          lambda path: tf.data.TFRecordDataset(path).batch(_WHOLE_FILE)),
      cycle_length=max(1, min(len(files), 8)), block_length=1,
      num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  dataset = dataset.map(parse_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  try:
    parts = list(dataset.prefetch(tf.data.AUTOTUNE))
  except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
    # Shards checked against info.json (records.split_files) do not get here;
    # these were not, or changed since.
    raise DataError(f"{os.path.dirname(files[0])}: a shard of {len(files)} is damaged "
                    f"({e.message.splitlines()[0][:200]}); make the records again") from None
  if not parts:
    raise ValueError(f"no examples in {len(files)} files starting with {files[:1]}")
  return Examples(**{k: tf.concat([p[k] for p in parts], 0) for k in parts[0]})


@dataclasses.dataclass(frozen=True)
class Shard:
  """Which part of a split one input pipeline reads, and how it batches.

  Attributes:
    files: shards this pipeline reads.
    row_offset: first row of this pipeline in each global batch (data
      sharding), 0 with file sharding.
    rows_per_batch: rows of each global batch this pipeline provides.
    batch_rows: rows of the global batch drawn from the files read (the global
      batch for data sharding, this pipeline's rows for file sharding).
    per_replica_batch_size: rows of one element of the dataset.
  """
  files: tuple
  row_offset: int
  rows_per_batch: int
  batch_rows: int
  per_replica_batch_size: int


def plan_shard(files, global_batch_size, input_context=None, sharding="auto"):
  """Decides which files and rows an input pipeline reads.

  Args:
    files: all shards of the split, in order.
    global_batch_size: examples per step over all replicas.
    input_context: tf.distribute.InputContext, or None for one pipeline.
    sharding: "auto" (by file when the shards divide among the pipelines),
      "file" or "data".

  Returns:
    Shard.
  """
  pipelines = input_context.num_input_pipelines if input_context else 1
  pipeline_id = input_context.input_pipeline_id if input_context else 0
  replicas = input_context.num_replicas_in_sync if input_context else 1
  if global_batch_size % replicas:
    raise ValueError(f"global batch size {global_batch_size} does not divide among "
                     f"{replicas} replicas")
  per_replica = global_batch_size // replicas
  rows = global_batch_size // pipelines
  if pipelines == 1:
    return Shard(tuple(files), 0, rows, rows, per_replica)
  if sharding == "auto":
    sharding = "file" if len(files) >= pipelines and len(files) % pipelines == 0 else "data"
    if sharding == "data":
      logging.warning("%d shards do not divide among %d input pipelines: sharding by data "
                      "(every worker reads all shards); write more shards with "
                      "make_records num_shards", len(files), pipelines)
  if sharding == "file":
    if len(files) < pipelines:
      raise ValueError(f"{len(files)} shards cannot be split by file among {pipelines} workers")
    return Shard(tuple(files[pipeline_id::pipelines]), 0, rows, rows, per_replica)
  if sharding != "data":
    raise ValueError(f"sharding must be auto, file or data, got {sharding!r}")
  return Shard(tuple(files), pipeline_id * rows, rows, global_batch_size, per_replica)


def steps_per_epoch(num_examples, global_batch_size):
  """Full global batches in one pass over `num_examples` (the rest is dropped)."""
  steps = num_examples // global_batch_size
  if steps == 0:
    raise ValueError(f"global batch size {global_batch_size} is larger than the "
                     f"{num_examples} training examples")
  return steps


def epoch_order(num_examples, seed, epoch):
  """Permutation of range(num_examples) for one epoch; a function of (seed, epoch) only."""
  return tf.random.experimental.stateless_shuffle(
      tf.range(num_examples, dtype=tf.int32),
      seed=tf.stack([tf.cast(seed, tf.int64), tf.cast(epoch, tf.int64)]))


def train_dataset(examples, shard, seed, num_steps, start_step=0):
  """Endless training stream of per-replica batches from `start_step` on.

  Args:
    examples: Examples this pipeline reads (`read_examples(shard.files)`).
    shard: the Shard plan of this pipeline.
    seed: the run's seed; epoch e uses the permutation of (seed, e).
    num_steps: steps in one epoch (same on every pipeline).
    start_step: global step of the first batch (resume position).

  Returns:
    tf.data.Dataset of {"image": uint8 [b, 28, 28, 1], "label": int32 [b]},
    b = per-replica batch size; the replicas of this pipeline take
    consecutive elements.
  """
  if num_steps * shard.batch_rows > len(examples):
    raise ValueError(f"{num_steps} steps of {shard.batch_rows} rows need more than the "
                     f"{len(examples)} examples of this pipeline")
  images, labels = examples.image, examples.label
  per_replica = shard.per_replica_batch_size
  start_epoch, skip_steps = divmod(start_step, num_steps)

  @tf.autograph.experimental.do_not_convert
  def epoch_rows(epoch):
    order = epoch_order(len(examples), seed, epoch)[:num_steps * shard.batch_rows]
    order = tf.reshape(order, [num_steps, shard.batch_rows])
    mine = order[:, shard.row_offset:shard.row_offset + shard.rows_per_batch]
    return tf.data.Dataset.from_tensor_slices(tf.reshape(mine, [-1, per_replica]))

  @tf.autograph.experimental.do_not_convert
  def gather(rows):
    return {"image": tf.gather(images, rows), "label": tf.gather(labels, rows)}

  replicas_here = shard.rows_per_batch // per_replica
  dataset = tf.data.Dataset.range(start_epoch, np.iinfo(np.int64).max).flat_map(epoch_rows)
  dataset = dataset.skip(skip_steps * replicas_here)
  # A gather from memory needs no tuning: two batches in flight keep a step
  # fed (the pipeline gathers several hundred thousand images/s). tf.data's
  # autotuner is off: deleting an iterator waits for its optimisation
  # thread, which after runs of a few minutes held the finished command for
  # up to 40 s more.
  dataset = dataset.map(gather, num_parallel_calls=2, deterministic=True).prefetch(2)
  options = tf.data.Options()
  options.autotune.enabled = False
  return dataset.with_options(options)


def eval_dataset(examples, shard):
  """Every example exactly once, padded to whole global batches with mask 0.

  Returns:
    tf.data.Dataset of {"image", "label", "index", "mask"} per-replica
    batches with static shapes; "mask" is 1.0 for real examples, 0.0 for
    padding, so sums of masked metrics count each example once on any number
    of replicas.
  """
  count = len(examples)
  num_batches = -(-count // shard.batch_rows)
  rows = tf.range(num_batches * shard.batch_rows, dtype=tf.int32)
  rows = tf.reshape(rows, [num_batches, shard.batch_rows])
  mine = rows[:, shard.row_offset:shard.row_offset + shard.rows_per_batch]
  mine = tf.reshape(mine, [-1, shard.per_replica_batch_size])
  images, labels, index = examples.image, examples.label, examples.index

  @tf.autograph.experimental.do_not_convert
  def gather(rows):
    valid = rows < count
    safe = tf.minimum(rows, count - 1)
    return {"image": tf.gather(images, safe), "label": tf.gather(labels, safe),
            "index": tf.where(valid, tf.gather(index, safe), -1),
            "mask": tf.cast(valid, tf.float32)}

  dataset = tf.data.Dataset.from_tensor_slices(mine)
  return dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE,
                     deterministic=True).prefetch(tf.data.AUTOTUNE)


def num_input_pipelines(strategy):
  """Input pipelines of `strategy`: one per worker (host)."""
  try:
    local_replicas = max(1, len(strategy.extended.worker_devices))
  except RuntimeError:  # The default strategy: one replica, one pipeline.
    return 1
  return max(1, strategy.num_replicas_in_sync // local_replicas)


def pipeline_steps(shard_counts, global_batch_size, num_pipelines=1, sharding="auto"):
  """Steps per epoch that every input pipeline can serve.

  Args:
    shard_counts: examples per shard file, in file order (from info.json).
    global_batch_size: examples per step over all replicas.
    num_pipelines: input pipelines (workers).
    sharding: as in plan_shard.

  Returns:
    The smallest number of full batches over the pipelines, so that all
    workers run the same number of steps.
  """
  counts = list(shard_counts)
  steps = None
  for pipeline in range(num_pipelines):
    context = tf.distribute.InputContext(num_pipelines, pipeline, num_pipelines)
    # Planning over shard numbers tells which shards each pipeline would read.
    shard = plan_shard(range(len(counts)), global_batch_size,
                       context if num_pipelines > 1 else None, sharding)
    mine = sum(counts[i] for i in shard.files)
    pipeline_steps_ = steps_per_epoch(mine, shard.batch_rows)
    steps = pipeline_steps_ if steps is None else min(steps, pipeline_steps_)
  return steps


def distribute_train(strategy, files, shard_counts, global_batch_size, seed, start_step=0,
                     sharding="auto"):
  """Distributed training dataset and steps per epoch.

  Built with `strategy.distribute_datasets_from_function`: each input
  pipeline (one per worker) reads its Shard and yields per-replica batches.

  Args:
    strategy: a tf.distribute.Strategy.
    files: all train shards.
    shard_counts: examples per shard (info.json), aligned with `files`.
    global_batch_size: examples per step over all replicas.
    seed: the run's seed.
    start_step: global step to start from (resume).
    sharding: "auto", "file" or "data" (see plan_shard).

  Returns:
    (distributed dataset, steps per epoch).
  """
  num_steps = pipeline_steps(shard_counts, global_batch_size, num_input_pipelines(strategy),
                             sharding)

  def dataset_fn(input_context):
    shard = plan_shard(files, global_batch_size, input_context, sharding)
    return train_dataset(read_examples(shard.files), shard, seed, num_steps, start_step)

  return strategy.distribute_datasets_from_function(dataset_fn), num_steps


def distribute_eval(strategy, examples, global_batch_size):
  """Distributed evaluation dataset (see eval_dataset) over in-memory Examples.

  Evaluation shards by data, so every pipeline needs the whole split; the
  caller reads it once (read_examples) and every pipeline takes its rows.
  """

  def dataset_fn(input_context):
    shard = plan_shard((), global_batch_size, input_context, "data")
    return eval_dataset(examples, shard)

  return strategy.distribute_datasets_from_function(dataset_fn)


def read_labelled(records_dir, dataset, split):
  """(info, uint8 images [N, 28, 28, 1], int labels [N]) of a labelled split, in memory.

  Raises:
    DataError: the records are missing, or the split has unlabelled images.
  """
  info = records.read_info(records_dir, dataset)
  examples = read_examples(records.split_files(records_dir, dataset, split))
  labels = examples.label.numpy()
  if np.any(labels < 0):
    raise DataError(f"{records.dataset_dir(records_dir, dataset)}: split {split!r} has no "
                    "labels to evaluate against; use `python -m tfmnist.predict` for it")
  return info, examples.image.numpy(), labels
