"""Tests of tfmnist.data: reading, normalisation, order, resume, sharding, distribution.

The records are tiny synthetic splits written with records.write_split. Train
labels are the row numbers (label i for row i) so that a batch tells which
rows it holds, and each image carries its row in its pixels so that images are
checked to travel with their labels.
"""

import json
import logging

import numpy as np
import pytest
import tensorflow as tf

from tfmnist.data import pipeline, pixels, records
from tfmnist.errors import DataError


GLOBAL_BATCH = 8


def _two_replicas():
  devices = tf.config.list_logical_devices("CPU")
  if len(devices) < 2:
    pytest.skip("TensorFlow was initialised before two logical CPUs could be made")
  return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])


def _images_for(rows):
  """uint8 [N, 28, 28] whose pixels encode the row (and differ across the image)."""
  rows = np.asarray(rows)
  pattern = np.arange(28 * 28, dtype=np.int64).reshape(28, 28)
  return ((rows[:, None, None] * 7 + pattern) % 256).astype(np.uint8)


def _write(folder, images, labels, indices, num_shards, split="train"):
  folder.mkdir(parents=True, exist_ok=True)
  shards = records.write_split(str(folder), split, images, labels, indices, None, num_shards)
  return [str(folder / s["file"]) for s in shards], [s["count"] for s in shards]


@pytest.fixture(scope="module")
def train_split(tmp_path_factory):
  """43 rows in 4 shards, label = row: 5 steps of 8 per epoch, 3 rows dropped."""
  count = 43
  rows = np.arange(count)
  files, counts = _write(tmp_path_factory.mktemp("train"), _images_for(rows), rows, rows, 4)
  return files, counts, pipeline.read_examples(files)


@pytest.fixture(scope="module")
def eval_split(tmp_path_factory):
  """37 rows (not a multiple of the batch of 8) in 3 shards, random labels."""
  count = 37
  labels = np.random.default_rng(5).integers(0, 10, count)
  files, counts = _write(tmp_path_factory.mktemp("eval"), _images_for(np.arange(count)),
                         labels, np.arange(count), 3, split="test")
  return files, counts, labels


def _take(dataset, num_batches):
  return [{k: v.numpy() for k, v in batch.items()}
          for batch in dataset.take(num_batches)]


def _labels(batches):
  return np.concatenate([b["label"] for b in batches])


def _train(examples, seed=0, start_step=0, num_steps=None):
  num_steps = num_steps or pipeline.steps_per_epoch(len(examples), GLOBAL_BATCH)
  shard = pipeline.plan_shard(["unused"], GLOBAL_BATCH)
  return pipeline.train_dataset(examples, shard, seed, num_steps, start_step)


# ----------------------------------------------------------------------------
# Reading and normalisation
# ----------------------------------------------------------------------------


def test_read_examples_round_trips_in_file_order(tmp_path):
  # Shards longer than a few hundred records: an interleave that mixed blocks
  # of the shards would break the file order.
  count = 700
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
  labels = rng.integers(0, 10, count)
  indices = np.arange(count) * 3 + 11
  files, _ = _write(tmp_path, images, labels, indices, 2)

  examples = pipeline.read_examples(files)

  assert len(examples) == count
  assert examples.image.dtype == tf.uint8
  assert examples.image.shape == (count, 28, 28, 1)
  np.testing.assert_array_equal(examples.image.numpy(), images[..., None])
  np.testing.assert_array_equal(examples.label.numpy(), labels)
  assert examples.label.dtype == tf.int32
  np.testing.assert_array_equal(examples.index.numpy(), indices)


def test_read_examples_of_unlabeled_split_gives_minus_one(tmp_path):
  files, _ = _write(tmp_path, _images_for(range(5)), None, np.arange(5), 1)
  np.testing.assert_array_equal(pipeline.read_examples(files).label.numpy(),
                                [records.UNLABELED] * 5)


def test_read_examples_of_empty_files_raises(tmp_path):
  files, _ = _write(tmp_path, np.zeros((0, 28, 28), np.uint8), None, np.zeros(0), 1)
  with pytest.raises(ValueError, match="no examples in 1 files"):
    pipeline.read_examples(files)


def test_normalize_maps_uint8_to_unit_floats_with_channel():
  images = np.zeros((3, 28, 28), np.uint8)
  images[0, 0, 0] = 255
  images[1, 5, 7] = 128
  images[2] = 255

  out = pixels.normalize(tf.constant(images))

  assert out.dtype == tf.float32
  assert out.shape == (3, 28, 28, 1)
  out = out.numpy()
  assert out.min() >= 0.0 and out.max() <= 1.0
  assert out[0, 0, 0, 0] == 1.0
  assert np.all(out[2] == 1.0)
  assert out[1, 5, 7, 0] == pytest.approx(128 / 255)
  np.testing.assert_allclose(out[..., 0], images / 255.0, atol=1e-7)


def test_normalize_keeps_an_existing_channel_axis_and_honours_dtype():
  images = tf.fill([2, 28, 28, 1], tf.constant(51, tf.uint8))
  out = pixels.normalize(images, tf.bfloat16)
  assert out.dtype == tf.bfloat16
  assert out.shape == (2, 28, 28, 1)
  np.testing.assert_allclose(out.numpy().astype(np.float32), 0.2, atol=1e-2)


def test_parse_and_normalize_agree_eagerly_in_tf_data_and_tf_function():
  count = 6
  images = _images_for(range(count))
  serialized = [records.serialize_example(images[i].tobytes(), i, 100 + i,
                                          f"id{i}".encode()) for i in range(count)]

  def parse_and_normalize(batch):
    parsed = pipeline.parse_batch(batch)
    return normalize_and_label(parsed)

  def normalize_and_label(parsed):
    return pixels.normalize(parsed["image"]), parsed["label"], parsed["index"], parsed["id"]

  eager = parse_and_normalize(tf.constant(serialized))
  in_data = next(iter(tf.data.Dataset.from_tensor_slices(serialized).batch(count)
                      .map(parse_and_normalize)))
  in_function = tf.function(parse_and_normalize)(tf.constant(serialized))

  np.testing.assert_allclose(eager[0].numpy()[..., 0], images / 255.0, rtol=1e-6)
  np.testing.assert_array_equal(eager[1].numpy(), np.arange(count))
  np.testing.assert_array_equal(eager[2].numpy(), np.arange(count) + 100)
  assert [s.decode() for s in eager[3].numpy()] == [f"id{i}" for i in range(count)]
  for other in (in_data, in_function):
    assert other[0].shape.as_list()[1:] == [28, 28, 1]
    for a, b in zip(eager, other):
      np.testing.assert_array_equal(a.numpy(), b.numpy())


# ----------------------------------------------------------------------------
# Training order
# ----------------------------------------------------------------------------


def test_train_batches_have_static_shapes(train_split):
  _, _, examples = train_split
  spec = _train(examples).element_spec
  assert spec["image"].shape == (GLOBAL_BATCH, 28, 28, 1)
  assert spec["image"].dtype == tf.uint8
  assert spec["label"].shape == (GLOBAL_BATCH,)


def test_each_epoch_is_a_permutation_and_epochs_reshuffle(train_split):
  _, _, examples = train_split
  steps = pipeline.steps_per_epoch(len(examples), GLOBAL_BATCH)
  assert steps == 5  # 43 // 8: the last 3 rows of each epoch's order are dropped.

  batches = _take(_train(examples), 2 * steps)
  for batch in batches:  # Images travel with their labels.
    np.testing.assert_array_equal(batch["image"][..., 0], _images_for(batch["label"]))
  epoch0, epoch1 = _labels(batches[:steps]), _labels(batches[steps:])
  for epoch in (epoch0, epoch1):
    assert len(set(epoch.tolist())) == steps * GLOBAL_BATCH
    assert set(epoch.tolist()) <= set(range(len(examples)))
  assert not np.array_equal(epoch0, epoch1)


def test_same_seed_same_batches_other_seed_other_batches(train_split):
  _, _, examples = train_split
  first = _labels(_take(_train(examples, seed=1), 7))
  again = _labels(_take(_train(examples, seed=1), 7))
  other = _labels(_take(_train(examples, seed=2), 7))
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


@pytest.mark.parametrize("start_step", [1, 3, 5, 7, 11])
def test_resumed_stream_equals_the_uninterrupted_one(train_split, start_step):
  # Steps 0-4 are epoch 0: 3 resumes mid-epoch and crosses into epoch 1,
  # 5 starts exactly at epoch 1, 7 and 11 start inside later epochs.
  _, _, examples = train_split
  total = 14
  full = _take(_train(examples, seed=4), total)
  resumed = _take(_train(examples, seed=4, start_step=start_step), total - start_step)
  for expected, got in zip(full[start_step:], resumed):
    np.testing.assert_array_equal(expected["label"], got["label"])
    np.testing.assert_array_equal(expected["image"], got["image"])


def test_train_dataset_refuses_more_steps_than_examples(train_split):
  _, _, examples = train_split
  with pytest.raises(ValueError, match="6 steps of 8 rows need more than the 43"):
    _train(examples, num_steps=6)


def test_train_dataset_runs_without_the_autotuner(train_split):
  # Deleting an autotuned iterator waits for the tuner's thread; long runs
  # then held the finished command for tens of seconds.
  _, _, examples = train_split
  dataset = _train(examples)
  assert dataset.options().autotune.enabled is False
  assert next(iter(dataset))["image"].shape == (GLOBAL_BATCH, 28, 28, 1)


def test_steps_per_epoch_refuses_a_batch_larger_than_the_data():
  assert pipeline.steps_per_epoch(43, 8) == 5
  with pytest.raises(ValueError, match="global batch size 64 is larger than the 43"):
    pipeline.steps_per_epoch(43, 64)


# ----------------------------------------------------------------------------
# Sharding among input pipelines
# ----------------------------------------------------------------------------


def _context(pipeline_id, pipelines=2, replicas=2):
  return tf.distribute.InputContext(num_input_pipelines=pipelines,
                                    input_pipeline_id=pipeline_id,
                                    num_replicas_in_sync=replicas)


def test_plan_shard_by_file_when_shards_divide():
  files = [f"f{i}" for i in range(4)]
  for pipeline_id in (0, 1):
    shard = pipeline.plan_shard(files, GLOBAL_BATCH, _context(pipeline_id))
    assert shard.files == tuple(files[pipeline_id::2])
    assert (shard.row_offset, shard.rows_per_batch, shard.batch_rows) == (0, 4, 4)
    assert shard.per_replica_batch_size == 4


def _capture_absl_warnings():
  """A handler on the absl logger that keeps the warnings it sees."""
  handler = logging.Handler(logging.WARNING)
  handler.messages = []
  handler.emit = lambda record: handler.messages.append(record.getMessage())
  logging.getLogger("absl").addHandler(handler)
  return handler


def test_plan_shard_by_data_with_a_warning_when_shards_do_not_divide():
  files = [f"f{i}" for i in range(3)]
  handler = _capture_absl_warnings()
  try:
    shards = [pipeline.plan_shard(files, GLOBAL_BATCH, _context(p)) for p in (0, 1)]
  finally:
    logging.getLogger("absl").removeHandler(handler)
  assert any("3 shards do not divide among 2 input pipelines" in m for m in handler.messages)
  for pipeline_id, shard in enumerate(shards):
    assert shard.files == tuple(files)
    assert shard.row_offset == 4 * pipeline_id
    assert (shard.rows_per_batch, shard.batch_rows, shard.per_replica_batch_size) == (4, 8, 4)


def test_plan_shard_by_file_warns_nothing():
  handler = _capture_absl_warnings()
  try:
    pipeline.plan_shard(["a", "b"], GLOBAL_BATCH, _context(0))
  finally:
    logging.getLogger("absl").removeHandler(handler)
  assert not handler.messages


def test_plan_shard_rejects_bad_arguments():
  with pytest.raises(ValueError, match="global batch size 9 does not divide among 2"):
    pipeline.plan_shard(["a", "b"], 9, _context(0))
  with pytest.raises(ValueError, match="1 shards cannot be split by file among 2"):
    pipeline.plan_shard(["a"], GLOBAL_BATCH, _context(0), sharding="file")
  with pytest.raises(ValueError, match="'rows'"):
    pipeline.plan_shard(["a"], GLOBAL_BATCH, _context(0), sharding="rows")


def test_data_sharded_pipelines_split_each_global_batch(train_split):
  files, counts, examples = train_split
  steps = pipeline.pipeline_steps(counts, GLOBAL_BATCH, num_pipelines=2, sharding="data")
  assert steps == pipeline.pipeline_steps(counts, GLOBAL_BATCH) == 5
  single = _take(_train(examples, seed=6), 2 * steps)
  halves = []
  for pipeline_id in (0, 1):
    shard = pipeline.plan_shard(files, GLOBAL_BATCH, _context(pipeline_id), sharding="data")
    halves.append(_take(pipeline.train_dataset(examples, shard, 6, steps), 2 * steps))
  for whole, first, second in zip(single, *halves):
    assert first["label"].shape == (4,)
    np.testing.assert_array_equal(first["label"], whole["label"][:4])
    np.testing.assert_array_equal(second["label"], whole["label"][4:])
    np.testing.assert_array_equal(np.concatenate([first["image"], second["image"]]),
                                  whole["image"])


def test_file_sharded_pipelines_read_disjoint_rows(train_split):
  files, counts, _ = train_split
  steps = pipeline.pipeline_steps(counts, GLOBAL_BATCH, num_pipelines=2)
  seen = []
  for pipeline_id in (0, 1):
    shard = pipeline.plan_shard(files, GLOBAL_BATCH, _context(pipeline_id))
    examples = pipeline.read_examples(shard.files)
    seen.append(set(_labels(_take(pipeline.train_dataset(examples, shard, 0, steps), steps))))
    assert len(seen[-1]) == steps * 4
  assert not seen[0] & seen[1]


def test_pipeline_steps_is_the_minimum_over_pipelines():
  counts = [10, 9, 7, 4]
  # By file: pipeline 0 reads shards 0 and 2 (17 rows, 8 steps of 2), pipeline 1
  # shards 1 and 3 (13 rows, 6 steps of 2).
  assert pipeline.pipeline_steps(counts, 4, num_pipelines=2) == 6
  assert pipeline.pipeline_steps(counts, 4) == 7
  assert pipeline.pipeline_steps(counts, 4, num_pipelines=2, sharding="data") == 7
  # Three shards do not divide among 2 pipelines: by data, all 27 rows each.
  assert pipeline.pipeline_steps([10, 10, 7], 4, num_pipelines=2) == 6


def test_num_input_pipelines_of_the_default_strategy_is_one():
  assert pipeline.num_input_pipelines(tf.distribute.get_strategy()) == 1


# ----------------------------------------------------------------------------
# Distribution over two replicas
# ----------------------------------------------------------------------------


def test_distribute_train_splits_the_global_batch_among_replicas(train_split):
  files, counts, _ = train_split
  strategy = _two_replicas()
  assert pipeline.num_input_pipelines(strategy) == 1
  start_step = 3
  distributed, steps = pipeline.distribute_train(strategy, files, counts, GLOBAL_BATCH, seed=2,
                                             start_step=start_step)
  single, single_steps = pipeline.distribute_train(tf.distribute.get_strategy(), files, counts,
                                               GLOBAL_BATCH, seed=2, start_step=start_step)
  assert steps == single_steps == 5
  distributed_batches, single_batches = iter(distributed), iter(single)
  for _ in range(2 * steps):
    batch, whole = next(distributed_batches), next(single_batches)
    parts = strategy.experimental_local_results(batch)
    assert [p["label"].shape for p in parts] == [(4,), (4,)]
    for key in ("image", "label"):
      np.testing.assert_array_equal(np.concatenate([p[key].numpy() for p in parts]),
                                    whole[key].numpy())


# ----------------------------------------------------------------------------
# Evaluation: every example exactly once
# ----------------------------------------------------------------------------


def _check_counted_once(batches, labels):
  count = len(labels)
  mask = np.concatenate([b["mask"] for b in batches])
  index = np.concatenate([b["index"] for b in batches])
  batch_labels = np.concatenate([b["label"] for b in batches])
  images = np.concatenate([b["image"] for b in batches])
  assert mask.sum() == count
  assert sorted(index[mask == 1].tolist()) == list(range(count))
  assert np.all(index[mask == 0] == -1)
  assert (batch_labels * mask).sum() == labels.sum()
  real = mask == 1
  np.testing.assert_array_equal(images[real][..., 0], _images_for(index[real]))


def test_eval_dataset_counts_every_example_once(eval_split):
  files, _, labels = eval_split
  dataset = pipeline.eval_dataset(pipeline.read_examples(files), pipeline.plan_shard(files, GLOBAL_BATCH))
  assert dataset.element_spec["image"].shape == (GLOBAL_BATCH, 28, 28, 1)
  batches = _take(dataset, 100)
  assert len(batches) == 5  # 37 rows: 4 full batches and one of 5 rows + 3 padding.
  assert batches[-1]["mask"].tolist() == [1.0] * 5 + [0.0] * 3
  _check_counted_once(batches, labels)


def test_eval_dataset_over_two_data_sharded_pipelines_counts_every_example_once(eval_split):
  files, _, labels = eval_split
  examples = pipeline.read_examples(files)
  batches = []
  for pipeline_id in (0, 1):
    shard = pipeline.plan_shard(files, GLOBAL_BATCH, _context(pipeline_id), sharding="data")
    batches += _take(pipeline.eval_dataset(examples, shard), 100)
  assert len(batches) == 10
  _check_counted_once(batches, labels)


def test_distribute_eval_over_two_replicas_counts_every_example_once(eval_split):
  files, _, labels = eval_split
  strategy = _two_replicas()
  batches = []
  for batch in pipeline.distribute_eval(strategy, pipeline.read_examples(files), GLOBAL_BATCH):
    for part in strategy.experimental_local_results(batch):
      assert part["mask"].shape == (4,)
      batches.append({k: v.numpy() for k, v in part.items()})
  assert len(batches) == 10
  _check_counted_once(batches, labels)


def test_distribute_eval_on_one_replica_counts_every_example_once(eval_split):
  files, _, labels = eval_split
  batches = _take(pipeline.distribute_eval(tf.distribute.get_strategy(),
                                           pipeline.read_examples(files), GLOBAL_BATCH), 100)
  _check_counted_once(batches, labels)


@pytest.mark.parametrize("key", records.REQUIRED_INFO)
def test_read_info_names_a_missing_entry(tmp_path, key):
  folder = tmp_path / "mnist"
  folder.mkdir()
  info = {"schema_version": records.SCHEMA_VERSION, "class_names": ["0", "1"], "digits": True,
          "splits": {}}
  (folder / records.INFO_FILE).write_text(json.dumps(info))
  assert records.read_info(str(tmp_path), "mnist") == info
  del info[key]
  (folder / records.INFO_FILE).write_text(json.dumps(info))
  with pytest.raises(DataError, match=rf"info.json: no '{key}' entry; make the records again"):
    records.read_info(str(tmp_path), "mnist")
