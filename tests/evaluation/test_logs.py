"""Tests of evaluation.logs.read_scalars: the scalars train.summaries.Writers wrote, back as arrays."""

import re

import numpy as np
import pytest
import tensorflow as tf

from tfmnist.evaluation import logs
from tfmnist.training import summaries


def _write(folder, points, tag="loss"):
  """Writes (step, value) points of one TF2 scalar with a new writer, as one run would."""
  writer = tf.summary.create_file_writer(str(folder))
  with writer.as_default():
    for step, value in points:
      tf.summary.scalar(tag, value, step=step)
  writer.close()


def _write_old_style(folder, points, tag):
  """Writes (step, value) points as TF1 `simple_value` summaries."""
  writer = tf.summary.create_file_writer(str(folder))
  with writer.as_default():
    for step, value in points:
      summary = tf.compat.v1.Summary(value=[tf.compat.v1.Summary.Value(tag=tag,
                                                                       simple_value=value)])
      tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=step)
  writer.close()


def _assert_series(series, steps, values):
  got_steps, got_values = series
  assert got_steps.dtype == np.int64 and got_values.dtype == np.float64
  np.testing.assert_array_equal(got_steps, steps)
  np.testing.assert_allclose(got_values, values, rtol=1e-6)


def test_reads_what_the_training_writers_write(tmp_path):
  writers = summaries.Writers(str(tmp_path))
  for step in (10, 20, 30):
    writers.train_loop(step, loss=1.0 / step, accuracy=step / 100, learning_rate=0.1,
                       images_per_second=1000.0 + step, step_seconds=0.5)
  with writers.validation_writer.as_default(step=30):
    tf.summary.scalar("loss", 0.25)
    tf.summary.scalar("accuracy", 0.9)
    # Images share the tensor field with TF2 scalars and must be left out.
    tf.summary.image("mistakes", np.zeros((1, 28, 28, 1), np.float32))
  writers.flush()

  scalars = logs.read_scalars(str(tmp_path))

  assert set(scalars) == {"train", "validation"}
  assert set(scalars["train"]) == {"loss", "accuracy", "learning_rate", "images_per_second",
                                   "step_seconds"}
  _assert_series(scalars["train"]["loss"], [10, 20, 30], [0.1, 0.05, 1 / 30])
  _assert_series(scalars["train"]["images_per_second"], [10, 20, 30], [1010, 1020, 1030])
  assert set(scalars["validation"]) == {"loss", "accuracy"}
  _assert_series(scalars["validation"]["accuracy"], [30], [0.9])


def test_a_resumed_run_overwrites_the_steps_it_repeats(tmp_path):
  # The first run logged up to step 40 but its last checkpoint was at step 20;
  # the resumed run writes steps 30 and 40 again, into a second event file.
  _write(tmp_path / "train", [(0, 4.0), (10, 3.0), (20, 2.0), (30, 1.5), (40, 1.4)])
  _write(tmp_path / "train", [(30, 1.0), (40, 0.9), (50, 0.8)])
  _write(tmp_path / "validation", [(20, 2.5), (40, 1.9)])
  _write(tmp_path / "validation", [(40, 1.2)])

  scalars = logs.read_scalars(str(tmp_path))

  assert len(list((tmp_path / "train").iterdir())) == 2
  _assert_series(scalars["train"]["loss"], [0, 10, 20, 30, 40, 50],
                 [4.0, 3.0, 2.0, 1.0, 0.9, 0.8])
  _assert_series(scalars["validation"]["loss"], [20, 40], [2.5, 1.2])


def test_keeps_every_point_of_a_long_run(tmp_path):
  # TensorBoard keeps 10 tensors per tag by default; nothing may be sampled away.
  points = [(step, float(step)) for step in range(0, 3000, 3)]
  _write(tmp_path / "train", reversed(points))  # Written out of order, read back sorted.

  series = logs.read_scalars(str(tmp_path))["train"]["loss"]

  _assert_series(series, [p[0] for p in points], [p[1] for p in points])


def test_reads_old_style_scalars(tmp_path):
  _write_old_style(tmp_path / "train", [(1, 0.5), (2, 0.25)], "loss")
  _write(tmp_path / "train", [(1, 0.01)], tag="learning_rate")

  scalars = logs.read_scalars(str(tmp_path))["train"]

  _assert_series(scalars["loss"], [1, 2], [0.5, 0.25])
  _assert_series(scalars["learning_rate"], [1], [0.01])


def test_a_missing_run_folder_reads_as_empty(tmp_path):
  _write(tmp_path / "train", [(5, 1.0)])
  scalars = logs.read_scalars(str(tmp_path))
  assert scalars["validation"] == {}
  _assert_series(scalars["train"]["loss"], [5], [1.0])
  (tmp_path / "empty").mkdir()
  assert logs.read_scalars(str(tmp_path / "empty")) == {"train": {}, "validation": {}}


def test_a_missing_log_dir_is_an_error(tmp_path):
  missing = str(tmp_path / "no_such_run" / "logs")
  with pytest.raises(ValueError, match=re.escape(f"no log folder '{missing}'")):
    logs.read_scalars(missing)


def test_train_seconds_at_places_steps_by_their_summaries(tmp_path):
  """The last summary is the end of training; earlier steps lie back by their write times."""
  from tensorboard.compat.proto import event_pb2, summary_pb2  # pylint: disable=g-import-not-at-top
  from tensorboard.summary.writer import event_file_writer  # pylint: disable=g-import-not-at-top
  writer = event_file_writer.EventFileWriter(str(tmp_path / "logs" / "train"))
  for step, wall_time in ((10, 100.0), (20, 130.0), (30, 190.0)):
    value = summary_pb2.Summary.Value(tag="loss", simple_value=1.0 / step)
    writer.add_event(event_pb2.Event(wall_time=wall_time, step=step,
                                     summary=summary_pb2.Summary(value=[value])))
  writer.close()

  seconds = logs.train_seconds_at(str(tmp_path / "logs"), [0, 10, 15, 30], train_seconds=100.0)

  # Step 30 ends at 100 s; step 10 was 90 s earlier; 15 halfway to step 20;
  # step 0 starts the run.
  np.testing.assert_allclose(seconds, [0.0, 10.0, 25.0, 100.0])
  with pytest.raises(ValueError, match="no train summaries"):
    logs.train_seconds_at(str(tmp_path / "nothing"), [1], 1.0)
