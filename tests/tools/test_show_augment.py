"""Tests of tools/show_augment.py, run as a command on tiny synthetic records.

The grid (evaluation.figures.augment_grid) is tested in test_figures.py;
here the tool's flags, its output and the exit status. The runs start together, as each pays
TensorFlow's start-up.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tfmnist.data import records

pytestmark = pytest.mark.slow  # Every test here runs the tool.

TOOL = pathlib.Path(__file__).resolve().parents[2] / "tools" / "show_augment.py"


def _write_records(records_dir):
  """A 12-image `mnist` train split and its info.json, as make_records would write."""
  folder = pathlib.Path(records.dataset_dir(str(records_dir), "mnist"))
  folder.mkdir(parents=True)
  images = np.zeros((12, 28, 28), np.uint8)
  images[:, 6:22, 12:16] = 255
  shards = records.write_split(str(folder), "train", images, np.arange(12) % 10,
                               np.arange(12), None, 2)
  info = {"schema_version": records.SCHEMA_VERSION, "dataset": "mnist", "digits": True,
          "class_names": [str(i) for i in range(10)],
          "splits": {"train": {"count": 12, "shards": shards}}}
  (folder / records.INFO_FILE).write_text(json.dumps(info))


def _start(*flags):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
  return subprocess.Popen([sys.executable, str(TOOL), *flags], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env)


def _errors(stderr):
  """The tool's own error lines (TensorFlow's start-up chatter left out)."""
  return [line for line in stderr.splitlines() if "show_augment" in line or "Traceback" in line]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("show_augment")
  _write_records(tmp / "records")
  output = tmp / "grid.png"
  processes = {
      "ok": _start(f"--records_dir={tmp / 'records'}", f"--output={output}", "--rows=3",
                   "--cols=4", "--rotation_degrees=10", "--zoom=0.1", "--shift_x=0.1"),
      "missing": _start(f"--records_dir={tmp / 'nowhere'}", f"--output={tmp / 'x.png'}"),
      "flips": _start(f"--records_dir={tmp / 'records'}", f"--output={tmp / 'x.png'}",
                      "--flip_vertical"),
  }
  results = {}
  for name, process in processes.items():
    stdout, stderr = process.communicate(timeout=120)
    results[name] = (process.returncode, stdout, stderr)
  return results, output, tmp


def test_writes_the_grid(runs):
  results, output, _ = runs
  code, stdout, stderr = results["ok"]
  assert code == 0, stderr
  assert f"{output}: 3 mnist train images x 3 augmentation draws" in stdout
  with Image.open(output) as image:
    assert image.size == (400, 300)  # 4 x 3 cells of 1 inch at 100 dpi.
    pixels = np.asarray(image.convert("L"))
  assert pixels.min() < 10 and pixels.max() > 245


def test_missing_records_name_the_command_that_makes_them(runs):
  results, _, tmp = runs
  code, _, stderr = results["missing"]
  assert code == 1
  errors = _errors(stderr)
  assert len(errors) == 1, stderr
  assert errors[0].startswith("show_augment: error: ")
  assert f"tools/make_records.py --dataset=mnist --output_dir={tmp / 'nowhere'}" in errors[0]
  assert not (tmp / "x.png").exists()


def test_flips_on_digits_are_refused(runs):
  results, _, tmp = runs
  code, _, stderr = results["flips"]
  assert code == 1
  assert _errors(stderr) == [
      "show_augment: error: flips are refused on a digit/character dataset (a mirrored 2 is "
      "not a 2); pass force_flips to use them anyway"]
  assert not (tmp / "x.png").exists()
