"""Faults in process: damaged checkpoints, a folder of another run, a full disk while
checkpointing or writing records.

A run that finds its newest checkpoint damaged resumes from the previous
one, with one warning; with every checkpoint damaged it stops rather than
start again; a folder that holds another model, classes or precision is
refused before anything in it is touched; a full disk stops it with one line
and leaves the last good checkpoint (or the previous records) in place.
Faults of running commands and clusters are in tests/tools/test_launch_local.py.
"""

import errno
import json
import os

import pytest
import tensorflow as tf

import train_fixtures as tfx
from tfmnist import run_dir
from tfmnist.data import pipeline, prepare, records
from tfmnist.errors import DataError, SaveError
from tfmnist.training import export

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
  warnings = [line for line in out.splitlines() if "is damaged" in line]
  assert len(warnings) == 1, out  # Once, for the one damaged checkpoint.
  assert warnings[0].startswith(f"warning: checkpoint {newest} is damaged (")
  assert warnings[0].endswith("); falling back to the previous one")
  previous = os.path.join(model_dir, "checkpoints", "ckpt-10")
  assert f"Resuming from {previous} at step 10 of {TOTAL_STEPS}." in out
  assert final["step"] == metrics(model_dir)["step"] == TOTAL_STEPS
  assert step_of(os.path.join(model_dir, "checkpoints")) == TOTAL_STEPS


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(one_epoch, records_dir,
                                                                tmp_path, capsys):
  model_dir = tfx.copy_tree(one_epoch, tmp_path / "run")
  for step in (5, 10, 15):
    _damage(os.path.join(model_dir, "checkpoints", f"ckpt-{step}.data-00000-of-00001"),
            "deleted")
  with pytest.raises(DataError) as error:
    tfx.train_in_process(model_dir, records_dir, checkpoint_every_steps=5, epochs=2)
  message = str(error.value)
  assert "\n" not in message and message.startswith("no readable checkpoint: ")
  warnings = [line for line in capsys.readouterr().out.splitlines() if "is damaged" in line]
  for step in (15, 10, 5):  # Newest first, one warning each.
    path = os.path.join(model_dir, "checkpoints", f"ckpt-{step}")
    assert path in message
    assert warnings.pop(0).startswith(f"warning: checkpoint {path} is damaged (")
  assert not warnings
  assert metrics(model_dir)["step"] == STEPS_PER_EPOCH  # Untouched.


def _contents(folder):
  """{relative path: bytes} of every file under `folder`."""
  found = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        found[os.path.relpath(path, folder)] = f.read()
  return found


def _edit_manifest(model_dir, **values):
  folder = run_dir.RunDir(model_dir)
  manifest = folder.read_manifest()
  manifest.update(values)
  with open(os.path.join(model_dir, run_dir.MANIFEST_FILE), "w") as f:
    json.dump(manifest, f)


@pytest.mark.parametrize("asked, holds", [
    (dict(model="lenet5"), "lenet5 on mnist (float32)"),
    (dict(precision="mixed_bfloat16"), "mlp on mnist (mixed_bfloat16)"),
])
def test_a_folder_of_another_run_is_refused_before_anything_is_touched(
    one_epoch, records_dir, tmp_path, asked, holds):
  """Another model or precision: one line saying what the folder holds, nothing written."""
  model_dir = tfx.copy_tree(one_epoch, tmp_path / "run")
  before = _contents(model_dir)
  with pytest.raises(DataError) as error:
    tfx.train_in_process(model_dir, records_dir, checkpoint_every_steps=5, epochs=2, **asked)
  assert str(error.value) == (
      f"{model_dir} holds a run of mlp on mnist (float32); asked for {holds}: choose another "
      "model_dir, or delete the folder to start over")
  assert _contents(model_dir) == before


def test_a_folder_trained_on_other_classes_is_refused(one_epoch, records_dir, tmp_path):
  model_dir = tfx.copy_tree(one_epoch, tmp_path / "run")
  letters = [chr(ord("a") + i) for i in range(10)]
  _edit_manifest(model_dir, class_names=letters)
  with pytest.raises(DataError) as error:
    tfx.train_in_process(model_dir, records_dir, epochs=2)
  assert str(error.value).startswith(
      f"{model_dir} holds a run of mlp on mnist (float32, classes {','.join(letters)}); asked "
      "for mlp on mnist (float32, classes 0,1,2,3,4,5,6,7,8,9): ")


def test_auto_precision_is_described_with_its_choice(one_epoch, records_dir, tmp_path):
  """A run that chose float32 under auto, asked for mixed_float16: both sides say so."""
  model_dir = tfx.copy_tree(one_epoch, tmp_path / "run")
  _edit_manifest(model_dir, precision={"requested": "auto", "policy": "float32",
                                       "reason": "no bfloat16 here"})
  with pytest.raises(DataError, match=r"holds a run of mlp on mnist \(auto: float32\); asked "
                     r"for mlp on mnist \(mixed_float16\): "):
    tfx.train_in_process(model_dir, records_dir, epochs=2, precision="mixed_float16")


def test_a_checkpoint_of_another_run_is_not_exported(one_epoch, tmp_path):
  model_dir = tfx.copy_tree(one_epoch, tmp_path / "run")
  config = tfx.train_config(model_dir, "records", model="lenet5")
  with pytest.raises(DataError, match=r"holds a run of mlp on mnist \(float32\); asked for "
                     r"lenet5 on mnist \(float32\)"):
    export.export_checkpoint(config, "latest", str(tmp_path / "export"),
                           [str(i) for i in range(10)])
  assert not os.path.exists(tmp_path / "export")


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


