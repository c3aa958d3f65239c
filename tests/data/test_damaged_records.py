"""A damaged shard is found when its split is read, and named with the command that rebuilds it."""

import json
import os
import re

import pytest

import train_fixtures as tfx
from tfmnist.data import pipeline, records
from tfmnist.errors import DataError


def _flip_byte(path, position=None):
  data = bytearray(open(path, "rb").read())
  position = len(data) // 2 if position is None else position
  data[position] ^= 0x01
  with open(path, "wb") as f:
    f.write(data)


def _damaged_copy(tmp_path_factory, tmp_path, splits):
  """A copy of the shared records with one byte flipped in the first shard of each split."""
  copy = tfx.copy_tree(tfx.shared_records(tmp_path_factory), tmp_path / "records")
  with open(os.path.join(copy, "mnist", records.INFO_FILE)) as f:
    info = json.load(f)
  shards = {s: os.path.join(copy, "mnist", info["splits"][s]["shards"][0]["file"])
            for s in splits}
  for shard in shards.values():
    _flip_byte(shard)
  return copy, info, shards


def test_flipped_byte_is_named_with_the_rebuild_command(tmp_path_factory, tmp_path):
  copy, info, shards = _damaged_copy(tmp_path_factory, tmp_path, ["train"])

  with pytest.raises(DataError) as error:
    records.split_files(copy, "mnist", "train")

  assert str(error.value) == (
      f"{shards['train']}: damaged (its SHA-256 differs from info.json's: a bad disk or a copy "
      f"cut short); rebuild the records: {info['rebuild']}")
  assert info["rebuild"].startswith("python tools/make_records.py --dataset=mnist ")
  assert records.split_files(copy, "mnist", "validation")  # The other splits still read.


def test_unchecked_damage_still_names_the_folder(tmp_path_factory, tmp_path):
  """A record whose length field is flipped: TensorFlow's DataLossError becomes one line."""
  copy, _, shards = _damaged_copy(tmp_path_factory, tmp_path, [])
  files = records.split_files(copy, "mnist", "test", verify=False)
  _flip_byte(files[0], position=2)  # Inside the first record's length.

  with pytest.raises(DataError, match=re.escape(os.path.dirname(files[0])) +
                     r": a shard of 1 is damaged \(.*\); make the records again"):
    pipeline.read_examples(files)


@pytest.mark.slow
def test_every_command_stops_naming_the_damaged_shard(tmp_path_factory, tmp_path):
  _, run_dir = tfx.shared_run(tmp_path_factory)
  copy, info, shards = _damaged_copy(tmp_path_factory, tmp_path, ["train", "test"])
  line = "{}: error: {}: damaged (its SHA-256 differs from info.json's: a bad disk or a copy " \
         "cut short); rebuild the records: " + info["rebuild"]
  commands = {
      "train": (["-m", "tfmnist.train", f"--model_dir={tmp_path / 'new_run'}", "--model=mlp",
                 f"--records_dir={copy}", "--epochs=1", "--noprogress"], shards["train"]),
      "evaluate": (["-m", "tfmnist.evaluate", f"--model_dir={run_dir}", f"--records_dir={copy}",
                    "--noprogress"], shards["test"]),
      "predict": (["-m", "tfmnist.predict", f"--model_dir={run_dir}",
                   f"--input={os.path.join(copy, 'mnist')}"], shards["test"]),
  }
  for command, (args, shard) in commands.items():
    result = tfx.run([tfx.PYTHON, *args])

    assert result.returncode != 0, command
    assert tfx.clean_stderr(result.stderr).splitlines() == [line.format(command, shard)]
    assert result.stdout == "", command
  assert not os.path.exists(tmp_path / "new_run")  # Nothing written.
