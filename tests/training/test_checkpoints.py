"""Faults in process: damaged checkpoints, a full disk while checkpointing or writing records.

A run that finds its newest checkpoint damaged resumes from the previous
one; with every checkpoint damaged it stops rather than start again; a full
disk stops it with one line and leaves the last good checkpoint (or the
previous records) in place. Faults of running commands and clusters are in
tests/tools/test_launch_local.py.
"""

import errno
import os

import pytest
import tensorflow as tf

import train_fixtures as tfx
from tfmnist import run_dir
from tfmnist.data import pipeline, prepare, records
from tfmnist.errors import DataError, SaveError

STEPS_PER_EPOCH = 15  # 480 train images / global batch 32.
TOTAL_STEPS = 2 * STEPS_PER_EPOCH


def step_of(path):
  return int(tfx.checkpoint_values(path)["step/.ATTRIBUTES/VARIABLE_VALUE"])


def metrics(model_dir):
  return run_dir.RunDir(model_dir).read_metrics()


@pytest.fixture(scope="module")
def one_epoch(records_dir, tmp_path_factory):
  """A finished 1-epoch run with checkpoints at steps 5, 10 and 15."""
  model_dir = tmp_path_factory.mktemp("one_epoch") / "run"
  tfx.train_in_process(model_dir, records_dir, checkpoint_every_steps=5)
  return str(model_dir)


def _damage(path, how):
  if how == "truncated":
    with open(path, "r+b") as f:
      f.truncate(os.path.getsize(path) // 2)
  else:
    os.remove(path)


@pytest.mark.parametrize("how", ["truncated", "deleted"])
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(one_epoch, records_dir,
                                                                  tmp_path, capsys, how):
  model_dir = tfx.copy_tree(one_epoch, tmp_path / "run")
  newest = os.path.join(model_dir, "checkpoints", "ckpt-15")
  _damage(newest + ".data-00000-of-00001", how)
  final = tfx.train_in_process(model_dir, records_dir, checkpoint_every_steps=5, epochs=2)
  out = capsys.readouterr().out
  assert f"warning: checkpoint {newest} is damaged; falling back to the previous one" in out
  previous = os.path.join(model_dir, "checkpoints", "ckpt-10")
  assert f"Resuming from {previous} at step 10 of {TOTAL_STEPS}." in out
  assert final["step"] == metrics(model_dir)["step"] == TOTAL_STEPS
  assert step_of(os.path.join(model_dir, "checkpoints")) == TOTAL_STEPS


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(one_epoch, records_dir,
                                                                tmp_path):
  model_dir = tfx.copy_tree(one_epoch, tmp_path / "run")
  for step in (5, 10, 15):
    _damage(os.path.join(model_dir, "checkpoints", f"ckpt-{step}.data-00000-of-00001"),
            "deleted")
  with pytest.raises(DataError) as error:
    tfx.train_in_process(model_dir, records_dir, checkpoint_every_steps=5, epochs=2)
  message = str(error.value)
  assert "\n" not in message and message.startswith("no readable checkpoint: ")
  for step in (5, 10, 15):
    assert os.path.join(model_dir, "checkpoints", f"ckpt-{step}") in message
  assert metrics(model_dir)["step"] == STEPS_PER_EPOCH  # Untouched.


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(one_epoch, records_dir,
                                                                     tmp_path, monkeypatch):
  model_dir = tfx.copy_tree(one_epoch, tmp_path / "run")
  real_write = tf.train.Checkpoint._write

  def write_until_full(self, file_prefix, options=None):
    if file_prefix.endswith("ckpt-20"):
      # TensorFlow's writers report a full disk as ResourceExhaustedError.
      raise tf.errors.ResourceExhaustedError(
          None, None, f"{file_prefix}_temp/part-00000-of-00001.data-00000-of-00001.tempstate1; "
          "No space left on device")
    return real_write(self, file_prefix, options=options)

  monkeypatch.setattr(tf.train.Checkpoint, "_write", write_until_full)
  with pytest.raises(SaveError) as error:
    tfx.train_in_process(model_dir, records_dir, checkpoint_every_steps=5, epochs=2)
  folder = os.path.join(model_dir, "checkpoints")
  assert str(error.value) == (
      f"could not write checkpoint {folder}/ckpt-20 ({folder}/ckpt-20_temp/part-00000-of-00001"
      ".data-00000-of-00001.tempstate1; No space left on device); the last good checkpoint is "
      f"{folder}/ckpt-15, which a rerun resumes from")
  monkeypatch.undo()
  assert tf.train.latest_checkpoint(folder) == os.path.join(folder, "ckpt-15")
  run, _ = tfx.restore_run(model_dir, records_dir, checkpoint_every_steps=5, epochs=2)
  assert int(run.step.numpy()) == STEPS_PER_EPOCH


def _file_bytes(folder):
  return {name: open(os.path.join(folder, name), "rb").read()
          for name in sorted(os.listdir(folder))}


def test_disk_full_while_writing_records_keeps_the_previous_dataset(tmp_path, monkeypatch):
  records_dir = tfx.make_records(tmp_path / "records", tmp_path / "source")
  folder = records.dataset_dir(records_dir, "mnist")
  before = _file_bytes(folder)
  real_writer = tf.io.TFRecordWriter
  written = []

  class FullDisk:
    """A TFRecordWriter on a disk that fills up after 300 records."""

    def __init__(self, path, *args, **kwargs):
      self.path = path
      self._writer = real_writer(path, *args, **kwargs)

    def write(self, record):
      if len(written) == 300:
        self._writer.flush()  # What fitted is on disk: a partial shard.
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), self.path)
      written.append(self.path)
      self._writer.write(record)

    def __enter__(self):
      return self

    def __exit__(self, *exc):
      self._writer.close()

  monkeypatch.setattr(tf.io, "TFRecordWriter", FullDisk)
  config = prepare.PrepareConfig(
      dataset="mnist", source="npz", source_dir=str(tmp_path / "source" / "mnist.npz"),
      output_dir=records_dir, validation_size=0.2, num_shards=4, overwrite=True,
      show_progress=False)
  with pytest.raises(DataError) as error:
    prepare.make_records(config)
  monkeypatch.undo()
  assert str(error.value) == f"{folder}: cannot write: No space left on device; nothing was written"
  # It failed in the temporary folder beside the dataset, in its third shard.
  assert os.path.dirname(written[-1]) != folder
  assert os.path.basename(written[-1]) == "train-00002-of-00004.tfrecord"
  assert os.listdir(records_dir) == ["mnist"]  # No temporary folder is left.
  assert _file_bytes(folder) == before
  assert len(pipeline.read_examples(records.split_files(records_dir, "mnist", "train"))) == 480


