"""Files that read without an error but wrongly: each is read right or refused in one line.

One test per shape of file a user may bring (the table of tfmnist.data.checks
and the source readers): the label in another column, 1-based labels,
normalised pixels, blank images, transposed images, a training file without
labels, one class, a missing class. A refused file leaves nothing behind.
"""

import gzip
import json
import os
import re

import numpy as np
import pytest

from tfmnist.data import checks, prepare
from tfmnist.data.catalog import get_spec
from tfmnist.data.sources import csv as csv_source
from tfmnist.data.sources import npz
from tfmnist.errors import DataError

NUM_IMAGES = 200  # Enough per class (20) for the class checks to judge.


def _images(count, seed=0):
  """Images with a tall stroke over faint noise, never one value throughout."""
  rng = np.random.default_rng(seed)
  images = rng.integers(0, 30, (count, 28, 28), dtype=np.uint8)
  images[:, 4:24, 12:16] = 255
  images[:, 0, 0] = 0  # The corner pixel is blank, as in MNIST.
  return images


def _labels(count, offset=0):
  return np.arange(count) % 10 + offset


def _csv(path, rows, header=None):
  lines = [] if header is None else [",".join(header)]
  lines += [",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in row) for row in rows]
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _make(tmp_path, **fields):
  fields.setdefault("dataset", "mnist")
  fields.setdefault("output_dir", str(tmp_path / "records"))
  fields.setdefault("show_progress", False)
  return prepare.make_records(prepare.PrepareConfig(**fields))


def _refused(tmp_path, message, **fields):
  with pytest.raises(DataError, match=message) as error:
    _make(tmp_path, **fields)
  assert "\n" not in str(error.value)
  assert not (tmp_path / "records").exists() or not os.listdir(tmp_path / "records")
  return str(error.value)


def _checks(info):
  return {c["check"]: c for c in info["checks"]}


def test_headerless_csv_with_the_label_last_is_refused_naming_the_column(tmp_path):
  images, labels = _images(NUM_IMAGES), _labels(NUM_IMAGES)
  path = _csv(tmp_path / "mnist_5k.csv", np.column_stack([images.reshape(-1, 784), labels]))

  message = _refused(tmp_path, re.escape(path) + ": no header", dataset="mnist5k",
                     train_csv=path, class_names=tuple("0123456789"))

  assert message.endswith("the last column (0-based 784) holds exactly the labels 0..9: "
                          "set label_column=last")


@pytest.mark.parametrize("label_column", ["last", "-1", "784"])
def test_headerless_csv_with_the_label_last_reads_with_label_column(tmp_path, label_column):
  images, labels = _images(NUM_IMAGES), _labels(NUM_IMAGES)
  path = _csv(tmp_path / "mnist_5k.csv", np.column_stack([images.reshape(-1, 784), labels]))

  raw = csv_source.read_csv(path, 10, label_column)

  np.testing.assert_array_equal(raw.labels, labels)
  np.testing.assert_array_equal(raw.images, images)


def test_label_column_beyond_the_columns_is_refused(tmp_path):
  path = _csv(tmp_path / "a.csv", np.column_stack([_labels(20), _images(20).reshape(-1, 784)]))

  with pytest.raises(DataError, match=r"label column -786 beyond the 785 columns"):
    csv_source.read_csv(path, 10, "-786")


def test_one_based_labels_are_refused_with_the_offset_to_give(tmp_path):
  header = ["label"] + [f"pixel{i}" for i in range(784)]
  rows = np.column_stack([_labels(NUM_IMAGES, offset=1), _images(NUM_IMAGES).reshape(-1, 784)])
  path = _csv(tmp_path / "train.csv", rows, header)

  message = _refused(tmp_path, re.escape(path) + r":11: label 10 outside the 10 classes",
                     dataset="digit_recognizer", train_csv=path)
  assert message.endswith("the labels run 1..10, so they look 1-based: set label_offset=1")

  _, info = _make(tmp_path, dataset="digit_recognizer", train_csv=path, label_offset=1)
  assert info["splits"]["train"]["label_histogram"] == [18] * 10
  assert info["request"]["label_offset"] == 1
  assert "--label_offset=1" in info["rebuild"]


def test_one_based_idx_labels_are_refused_then_read_with_the_offset(tmp_path, write_idx):
  folder = tmp_path / "idx"
  folder.mkdir()
  write_idx(folder / "train-images-idx3-ubyte.gz", _images(NUM_IMAGES))
  write_idx(folder / "train-labels-idx1-ubyte.gz", _labels(NUM_IMAGES, 1).astype(np.uint8))

  _refused(tmp_path, r"look 1-based: set label_offset=1", source_dir=str(folder))
  _, info = _make(tmp_path, source_dir=str(folder), label_offset=1)

  assert sum(info["splits"]["train"]["label_histogram"]) == 180


@pytest.mark.parametrize("scale", [1 / 255, 1.0])
def test_pixels_normalised_to_unit_range_are_scaled_back(tmp_path, scale):
  """A normalised export (floats in [0, 1]) and a binarised one (0 and 1) alike."""
  images = _images(NUM_IMAGES)
  if scale == 1.0:
    images = (images > 127).astype(np.uint8)  # Binarised: 0 and 1.
  values = images.reshape(-1, 784) * scale
  header = ["label"] + [f"pixel{i}" for i in range(784)]
  path = _csv(tmp_path / "train.csv", np.column_stack([_labels(NUM_IMAGES), values]).tolist(),
              header)

  raw = csv_source.read_csv(path, 10)

  expected = images if scale != 1.0 else images * 255
  np.testing.assert_array_equal(raw.images, expected)
  assert raw.notes[0]["check"] == "pixel_range" and raw.notes[0]["outcome"] == "fixed"
  _, info = _make(tmp_path, dataset="digit_recognizer", train_csv=path)
  assert _checks(info)["pixel_range"]["detail"].endswith("scaled to 0..255")


def test_fractional_pixels_beyond_the_unit_range_are_refused(tmp_path):
  header = ["label"] + [f"pixel{i}" for i in range(784)]
  values = (_images(20).reshape(-1, 784) - 128) / 128.0  # Standardised: in [-1, 1).
  path = _csv(tmp_path / "train.csv", np.column_stack([_labels(20), values]).tolist(), header)

  with pytest.raises(DataError, match=re.escape(path) + r":2: cell '-?[0-9.]+' in column \d+ is "
                     "not an integer"):
    csv_source.read_csv(path, 10)


def test_npz_of_normalised_flat_or_channel_first_images_reads_right(tmp_path):
  images, labels = _images(NUM_IMAGES), _labels(NUM_IMAGES)
  spec = get_spec("mnist")
  for name, array in (("flat", images.reshape(-1, 784)), ("channels_first", images[:, None]),
                      ("unit", images / 255.0)):
    path = tmp_path / f"{name}.npz"
    np.savez(path, x_train=array, y_train=labels)

    splits = npz.load_npz(str(path), spec)

    np.testing.assert_array_equal(splits["train"].images, images, err_msg=name)


def test_npz_one_hot_labels_are_refused(tmp_path):
  path = tmp_path / "onehot.npz"
  np.savez(path, x_train=_images(20), y_train=np.eye(10)[_labels(20)])

  with pytest.raises(DataError, match=r"\[y_train\]: one-hot labels \[N, 10\]"):
    npz.load_npz(str(path), get_spec("mnist"))


def test_image_count_that_does_not_fill_28x28_is_refused(tmp_path):
  path = tmp_path / "short.npz"
  np.savez(path, x_train=np.zeros((20, 783), np.uint8), y_train=_labels(20))

  with pytest.raises(DataError, match=r"\[x_train\]: wrong image shape \[20, 783\]"):
    npz.load_npz(str(path), get_spec("mnist"))


def test_blank_images_are_refused_naming_the_first(tmp_path):
  images = _images(NUM_IMAGES)
  images[37] = 0
  images[90] = 255
  path = tmp_path / "mnist.npz"
  np.savez(path, x_train=images, y_train=_labels(NUM_IMAGES))

  _refused(tmp_path, re.escape(str(path)) + r": 2 image\(s\) of train are one value "
           r"throughout \(the first, #37, is all 0\)", source_dir=str(path))


def test_training_file_without_labels_is_refused(tmp_path):
  path = _csv(tmp_path / "train.csv", _images(NUM_IMAGES).reshape(-1, 784))

  _refused(tmp_path, re.escape(path) + ": the training images have no labels",
           dataset="digit_recognizer", train_csv=path)


def test_test_file_with_a_label_column_keeps_its_labels(tmp_path):
  header = ["label"] + [f"pixel{i}" for i in range(784)]
  train = _csv(tmp_path / "train.csv",
               np.column_stack([_labels(NUM_IMAGES), _images(NUM_IMAGES).reshape(-1, 784)]),
               header)
  test = _csv(tmp_path / "test.csv",  # Headerless, label first: 785 columns.
              np.column_stack([_labels(50), _images(50, seed=1).reshape(-1, 784)]))

  _, info = _make(tmp_path, dataset="digit_recognizer", train_csv=train, test_csv=test)

  assert info["splits"]["test"]["labeled"]
  assert info["splits"]["test"]["label_histogram"] == [5] * 10


def test_split_of_one_class_is_refused(tmp_path):
  """The user's case: a constant pixel taken as the label."""
  header = ["label"] + [f"pixel{i}" for i in range(784)]
  path = _csv(tmp_path / "train.csv", np.column_stack(
      [np.zeros(NUM_IMAGES, np.int64), _images(NUM_IMAGES).reshape(-1, 784)]), header)

  _refused(tmp_path, re.escape(path) + r": all 200 images of train have the label '0'; the "
           r"labels were read from the wrong place \(set label_column\)",
           dataset="digit_recognizer", train_csv=path)


def test_train_missing_a_named_class_is_refused(tmp_path):
  header = ["label"] + [f"pixel{i}" for i in range(784)]
  labels = np.arange(NUM_IMAGES) % 9  # Class 9 never appears.
  path = _csv(tmp_path / "train.csv",
              np.column_stack([labels, _images(NUM_IMAGES).reshape(-1, 784)]), header)

  _refused(tmp_path, re.escape(path) + r": train has no image of class '9' \(9 of 10 classes "
           r"present\)", dataset="digit_recognizer", train_csv=path)


def test_few_images_are_not_judged_on_their_classes(tmp_path):
  header = ["label"] + [f"pixel{i}" for i in range(784)]
  path = _csv(tmp_path / "train.csv",
              np.column_stack([np.zeros(30, np.int64), _images(30).reshape(-1, 784)]), header)

  _, info = _make(tmp_path, dataset="digit_recognizer", train_csv=path, validation_size=0)

  assert _checks(info)["classes"]["outcome"] == "skipped"


def test_transposed_mnist_is_refused_then_read_with_transpose(tmp_path, real_mnist_dir):
  with gzip.open(os.path.join(real_mnist_dir, "train-images-idx3-ubyte.gz")) as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:1000]
  with gzip.open(os.path.join(real_mnist_dir, "train-labels-idx1-ubyte.gz")) as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)[:1000]
  path = tmp_path / "mnist.npz"
  np.savez(path, x_train=images.transpose(0, 2, 1), y_train=labels)

  message = _refused(tmp_path, re.escape(str(path)) + ": the images look transposed",
                     source_dir=str(path))
  assert message.endswith("set transpose=yes")

  _, info = _make(tmp_path, source_dir=str(path), transpose=True)
  assert _checks(info)["orientation"]["outcome"] == "passed"
  assert checks.ink_aspect(images) > 1.3


def test_info_records_every_check_and_its_outcome(idx_dir, tmp_path):
  folder, info = _make(tmp_path, source_dir=idx_dir)

  assert [c["check"] for c in info["checks"]] == [
      "label_range", "train_labelled", "classes", "blank_images", "orientation"]
  assert {c["outcome"] for c in info["checks"]} <= {"passed", "skipped"}
  with open(os.path.join(folder, "info.json")) as f:
    assert json.load(f)["checks"] == info["checks"]
  assert info["rebuild"] == (f"python tools/make_records.py --dataset=mnist --output_dir="
                             f"{tmp_path / 'records'} --source_dir={idx_dir} --overwrite")


def test_matching_records_are_kept_and_others_refused(idx_dir, tmp_path):
  folder, info = _make(tmp_path, source_dir=idx_dir, num_shards=2)
  before = {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in os.listdir(folder)}

  again, same = _make(tmp_path, num_shards=2)  # No source named: any source will do.
  assert (again, same) == (folder, info)

  with pytest.raises(DataError, match=r"already exists with other settings: validation_size "
                     r"0.1 \(asked 0.2\); set overwrite"):
    _make(tmp_path, source_dir=idx_dir, num_shards=2, validation_size=0.2)
  with pytest.raises(DataError, match=r"source_dir '.*idx' \(asked '.*elsewhere'\)"):
    _make(tmp_path, source_dir=str(tmp_path / "elsewhere"), num_shards=2)
  after = {n: os.stat(os.path.join(folder, n)).st_mtime_ns for n in os.listdir(folder)}
  assert after == before
