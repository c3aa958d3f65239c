"""Tests of tools/make_records.py as a user runs it (each run imports TensorFlow, ~5 s).

Error cases are covered at the library level in test_prepare.py; these prove the
command-line contract: exit status, one-line errors, nothing left behind.
"""

import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # Every test here runs the command.
# TensorFlow's C++ startup messages, printed before absl logging is set up.
_NOISE_PREFIXES = ("I0000", "E0000", "W0000", "WARNING: All log messages")


def run_make_records(*args):
  """Runs the tool from the repository root; returns (exit code, stdout, stderr lines)."""
  env = dict(os.environ)
  env.pop("TF_CPP_MIN_LOG_LEVEL", None)  # The tool's own default applies.
  result = subprocess.run(
      [sys.executable, os.path.join("tools", "make_records.py"), "--noprogress", *args],
      cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)
  stderr = [line for line in result.stderr.splitlines()
            if line.strip() and not line.startswith(_NOISE_PREFIXES)]
  return result.returncode, result.stdout, stderr


def test_writes_records_then_keeps_matching_ones_and_refuses_others(idx_dir, tmp_path):
  out = tmp_path / "out"

  code, stdout, stderr = run_make_records(
      "--dataset=mnist", f"--source_dir={idx_dir}", f"--output_dir={out}", "--num_shards=2")

  assert code == 0, stderr
  assert stdout.strip() == f"{out / 'mnist'}: train 54, validation 6, test 20"
  info = json.loads((out / "mnist" / "info.json").read_text())
  assert [s["file"] for s in info["splits"]["train"]["shards"]] == [
      "train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
  before = {n: os.stat(out / "mnist" / n).st_mtime_ns for n in os.listdir(out / "mnist")}

  # The same request again (the tour after the main job made the records).
  code, stdout, stderr = run_make_records(
      "--dataset=mnist", f"--output_dir={out}", "--num_shards=2")

  assert code == 0, stderr
  assert stdout.strip() == (f"{out / 'mnist'}: already there with these settings (train 54, "
                            "validation 6, test 20); nothing to do (--overwrite makes them again)")

  code, stdout, stderr = run_make_records(
      "--dataset=mnist", f"--source_dir={idx_dir}", f"--output_dir={out}")

  assert code != 0 and stdout == ""
  assert stderr == [f"make_records: error: {out / 'mnist'}: already exists with other "
                    "settings: num_shards 2 (asked 8); pass --overwrite to replace it"]
  after = {n: os.stat(out / "mnist" / n).st_mtime_ns for n in os.listdir(out / "mnist")}
  assert after == before
  assert os.listdir(out) == ["mnist"]


def test_bad_csv_gives_one_line_error_and_no_output(tmp_path, write_csv):
  header = ["label"] + [f"pixel{i}" for i in range(784)]
  rows = [[i % 10] + [0] * 784 for i in range(10)]
  rows[4] = rows[4][:-1]  # Line 6 of the file (after the header) is one cell short.
  train_csv = write_csv(tmp_path / "train.csv", header, rows)
  out = tmp_path / "out"

  code, stdout, stderr = run_make_records(
      "--dataset=digit_recognizer", f"--train_csv={train_csv}", f"--output_dir={out}")

  assert code != 0 and stdout == ""
  assert len(stderr) == 1, stderr
  assert stderr[0] == (f"make_records: error: {train_csv}:6: ragged row with 784 columns, "
                       "expected 785")
  assert not out.exists()


def test_headerless_csv_with_the_label_last_names_the_flag_then_reads_with_it(tmp_path):
  """The user's file: 785 columns, no header, the label last; the corner pixel is always 0."""
  rows = []
  for i in range(200):
    pixels = [0] + [(i * 7 + j) % 256 for j in range(1, 784)]
    rows.append(",".join(map(str, pixels + [i % 10])))
  train_csv = tmp_path / "mnist_5k.csv"
  train_csv.write_text("\n".join(rows) + "\n")
  out = tmp_path / "out"

  code, stdout, stderr = run_make_records(
      "--dataset=mnist5k", f"--train_csv={train_csv}", "--num_classes=10",
      f"--output_dir={out}")

  assert code != 0 and stdout == ""
  assert stderr == [f"make_records: error: {train_csv}: no header, and its first column (the "
                    "default label) holds only 0 while the last column (0-based 784) holds "
                    "exactly the labels 0..9: pass --label_column=last"]
  assert not out.exists()

  code, stdout, stderr = run_make_records(
      "--dataset=mnist5k", f"--train_csv={train_csv}", "--num_classes=10",
      "--label_column=-1", f"--output_dir={out}")

  assert code == 0, stderr
  info = json.loads((out / "mnist5k" / "info.json").read_text())
  assert info["splits"]["train"]["label_histogram"] == [18] * 10
  assert {c["check"]: c["outcome"] for c in info["checks"]}["classes"] == "passed"
