"""Tests of tfmnist.files: files and folders that appear whole or not at all."""

import errno
import os

import pytest
import tensorflow as tf

from tfmnist import files
from tfmnist.errors import DataError


def test_write_text_atomically_replaces_whole_files_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "metrics.json"
  files.write_text_atomically(str(path), "old\n")
  files.write_text_atomically(str(path), "new\n")
  assert path.read_text() == "new\n"

  with pytest.raises(TypeError):
    files.write_text_atomically(str(path), 123)  # Fails after the temporary is open.
  assert path.read_text() == "new\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_write_text_atomically_on_a_full_disk_is_one_line_and_keeps_the_old_file(
    tmp_path, monkeypatch):
  path = tmp_path / "submission.csv"
  files.write_text_atomically(str(path), "old\n")

  def full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(files.os, "replace", full_disk)
  with pytest.raises(DataError) as error:
    files.write_text_atomically(str(path), "new\n")
  assert str(error.value) == f"{path}: cannot write: No space left on device; nothing was written"
  assert path.read_text() == "old\n"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["submission.csv"]


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)),
    OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)),
    # What TFRecordWriter raises when the disk fills.
    tf.errors.ResourceExhaustedError(None, None, "foo.tfrecord; No space left on device"),
], ids=["enospc", "quota", "tensorflow"])
def test_atomic_folder_turns_a_refused_write_into_one_line(tmp_path, error):
  final = tmp_path / "mnist"
  with pytest.raises(DataError) as raised:
    with files.atomic_folder(str(final)) as tmp:
      (tmp_path / os.path.basename(tmp) / "part").write_text("half")
      raise error
  message = str(raised.value)
  assert message.startswith(f"{final}: cannot write: ") and message.endswith(
      "; nothing was written")
  assert "\n" not in message
  assert list(tmp_path.iterdir()) == []


def test_atomic_folder_lets_other_errors_through(tmp_path):
  with pytest.raises(FileNotFoundError):
    with files.atomic_folder(str(tmp_path / "mnist")):
      open(tmp_path / "no-such-input", encoding="utf-8").close()
  assert list(tmp_path.iterdir()) == []


def test_atomic_folder_keeps_what_another_process_wrote_meanwhile(tmp_path):
  final = tmp_path / "mnist"
  with pytest.raises(DataError, match="another process wrote it meanwhile; kept that one"):
    with files.atomic_folder(str(final)) as tmp:
      (tmp_path / os.path.basename(tmp) / "info.json").write_text("mine")
      final.mkdir()  # The other worker's rename lands first.
      (final / "info.json").write_text("theirs")
  assert sorted(p.name for p in tmp_path.iterdir()) == ["mnist"]
  assert (final / "info.json").read_text() == "theirs"
