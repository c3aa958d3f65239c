"""Tests of the source readers: IDX, Kaggle-style CSV and NPZ."""

import gzip
import os
import re
import string

import numpy as np
import pytest

from tfmnist.data.catalog import get_spec
from tfmnist.errors import DataError
from tfmnist.data.sources import csv as csv_source
from tfmnist.data.sources import idx, npz

MNIST = get_spec("mnist")
PIXEL_NAMES = [f"pixel{i}" for i in range(28 * 28)]


def _named(path):
  """A pytest.raises match for a message that starts with `path`."""
  return "^" + re.escape(str(path))


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
@pytest.mark.parametrize("count", [1, 7, 33])
def test_idx_round_trips_any_count(tmp_path, write_idx, compress, count):
  images = np.random.default_rng(count).integers(0, 256, (count, 28, 28), dtype=np.uint8)
  labels = np.arange(count, dtype=np.uint8) % 10
  image_path = write_idx(tmp_path / "images", images, compress)
  label_path = write_idx(tmp_path / "labels", labels, compress)

  np.testing.assert_array_equal(idx.read_idx(image_path), images)
  np.testing.assert_array_equal(idx.read_idx(label_path), labels)


def test_load_idx_dir_reads_gzip_pairs(idx_dir, mnist_arrays):
  splits = idx.load_idx_dir(idx_dir, MNIST)

  assert sorted(splits) == ["test", "train"]
  np.testing.assert_array_equal(splits["train"].images, mnist_arrays.train_images)
  np.testing.assert_array_equal(splits["train"].labels, mnist_arrays.train_labels)
  np.testing.assert_array_equal(splits["test"].images, mnist_arrays.test_images)
  np.testing.assert_array_equal(splits["test"].labels, mnist_arrays.test_labels)
  assert splits["train"].labels.dtype == np.int64
  assert splits["test"].ids is None
  assert splits["train"].files == (os.path.join(idx_dir, "train-images-idx3-ubyte.gz"),
                                   os.path.join(idx_dir, "train-labels-idx1-ubyte.gz"))


@pytest.mark.parametrize("names", [
    ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("train-images.idx3-ubyte", "train-labels.idx1-ubyte"),
    ("fashion-train-images-idx3-ubyte.gz", "fashion-train-labels-idx1-ubyte.gz"),
], ids=["plain", "dotted", "prefixed-gzip"])
def test_load_idx_dir_accepts_name_variants(tmp_path, write_idx, mnist_arrays, names):
  for name, array in zip(names, (mnist_arrays.train_images, mnist_arrays.train_labels)):
    write_idx(tmp_path / name, array, compress=name.endswith(".gz"))

  splits = idx.load_idx_dir(str(tmp_path), MNIST)

  assert list(splits) == ["train"]
  np.testing.assert_array_equal(splits["train"].images, mnist_arrays.train_images)


def test_emnist_digits_images_are_transposed(tmp_path, write_idx, mnist_arrays):
  spec = get_spec("emnist_digits")
  assert spec.transposed
  write_idx(tmp_path / "emnist-digits-train-images-idx3-ubyte.gz", mnist_arrays.train_images)
  write_idx(tmp_path / "emnist-digits-train-labels-idx1-ubyte.gz", mnist_arrays.train_labels)

  images = idx.load_idx_dir(str(tmp_path), spec)["train"].images

  np.testing.assert_array_equal(images, mnist_arrays.train_images.transpose(0, 2, 1))
  assert not np.array_equal(images, mnist_arrays.train_images)
  assert images.flags.c_contiguous


def test_emnist_prefix_selects_the_subset(tmp_path, write_idx, mnist_arrays):
  images = mnist_arrays.train_images
  write_idx(tmp_path / "emnist-digits-train-images-idx3-ubyte.gz", images[:5])
  write_idx(tmp_path / "emnist-digits-train-labels-idx1-ubyte.gz", np.arange(5))
  write_idx(tmp_path / "emnist-letters-train-images-idx3-ubyte.gz", images[5:12])
  write_idx(tmp_path / "emnist-letters-train-labels-idx1-ubyte.gz", np.arange(1, 8))

  digits = idx.load_idx_dir(str(tmp_path), get_spec("emnist_digits"))["train"]
  letters = idx.load_idx_dir(str(tmp_path), get_spec("emnist_letters"))["train"]

  assert len(digits) == 5 and len(letters) == 7
  with pytest.raises(DataError, match="several IDX datasets"):
    idx.load_idx_dir(str(tmp_path), MNIST)


def test_emnist_letters_labels_shift_to_zero(tmp_path, write_idx, mnist_arrays):
  spec = get_spec("emnist_letters")
  raw_labels = np.arange(26) + 1  # EMNIST letters count A=1 .. Z=26.
  write_idx(tmp_path / "emnist-letters-test-images-idx3-ubyte", mnist_arrays.train_images[:26],
            compress=False)
  write_idx(tmp_path / "emnist-letters-test-labels-idx1-ubyte", raw_labels, compress=False)

  labels = idx.load_idx_dir(str(tmp_path), spec)["test"].labels

  np.testing.assert_array_equal(labels, np.arange(26))
  assert spec.class_names[labels[0]] == "A" and spec.class_names[labels[-1]] == "Z"
  assert spec.class_names == tuple(string.ascii_uppercase)


def test_emnist_letters_label_zero_is_outside_the_classes(tmp_path, write_idx, mnist_arrays):
  write_idx(tmp_path / "emnist-letters-train-images-idx3-ubyte.gz", mnist_arrays.train_images[:3])
  labels_path = write_idx(tmp_path / "emnist-letters-train-labels-idx1-ubyte.gz", [1, 0, 2])

  with pytest.raises(DataError, match=_named(labels_path) + r" \(label #1\): label 0 outside"):
    idx.load_idx_dir(str(tmp_path), get_spec("emnist_letters"))


def _corrupt_idx(kind, tmp_path, write_idx, idx_bytes, arrays):
  """Writes a train IDX pair with one defect; returns the file the error must name."""
  images_path = tmp_path / "train-images-idx3-ubyte.gz"
  labels_path = tmp_path / "train-labels-idx1-ubyte.gz"
  write_idx(images_path, arrays.train_images)
  write_idx(labels_path, arrays.train_labels)
  if kind == "truncated gzip":
    data = images_path.read_bytes()
    images_path.write_bytes(data[:len(data) // 2])
    return images_path, "truncated or corrupt gzip"
  if kind == "truncated plain":
    images_path.unlink()
    images_path = tmp_path / "train-images-idx3-ubyte"
    images_path.write_bytes(idx_bytes(arrays.train_images)[:-100])
    return images_path, "truncated IDX file"
  if kind == "truncated header":
    labels_path.write_bytes(gzip.compress(idx_bytes(arrays.train_labels)[:6]))
    return labels_path, "truncated IDX header"
  if kind == "oversized":
    labels_path.write_bytes(gzip.compress(idx_bytes(arrays.train_labels) + b"\0"))
    return labels_path, "oversized IDX file"
  if kind == "wrong magic":
    data = bytearray(idx_bytes(arrays.train_images))
    data[2] = 0x0D  # float32 type code
    images_path.write_bytes(gzip.compress(bytes(data)))
    return images_path, "wrong magic number 0x00000d03"
  if kind == "not idx":
    labels_path.write_bytes(b"label\n1\n2\n")
    return labels_path, "wrong magic number"
  if kind == "count mismatch":
    write_idx(labels_path, arrays.train_labels[:-1])
    return images_path, f"60 images but {re.escape(str(labels_path))} has 59 labels"
  if kind == "32x32":
    write_idx(images_path, np.zeros((60, 32, 32), np.uint8))
    return images_path, "wrong image size 32x32, expected 28x28"
  if kind == "labels in images file":
    write_idx(images_path, arrays.train_labels)
    return images_path, "expected an images file"
  if kind == "label outside classes":
    labels = arrays.train_labels.copy()
    labels[17] = 10
    write_idx(labels_path, labels)
    return labels_path, r"\(label #17\): label 10 outside the 10 classes"
  if kind == "empty file":
    labels_path.write_bytes(b"")
    return labels_path, "empty file"
  if kind == "missing labels":
    labels_path.unlink()
    return images_path, "no matching train labels file"
  raise ValueError(kind)


IDX_DEFECTS = ["truncated gzip", "truncated plain", "truncated header", "oversized",
               "wrong magic", "not idx", "count mismatch", "32x32", "labels in images file",
               "label outside classes", "empty file", "missing labels"]


@pytest.mark.parametrize("kind", IDX_DEFECTS)
def test_bad_idx_raises_naming_the_file(tmp_path, write_idx, idx_bytes, mnist_arrays, kind):
  path, message = _corrupt_idx(kind, tmp_path, write_idx, idx_bytes, mnist_arrays)

  with pytest.raises(DataError, match=_named(path) + ".*" + message):
    idx.load_idx_dir(str(tmp_path), MNIST)


def test_read_idx_missing_file(tmp_path):
  path = tmp_path / "train-images-idx3-ubyte.gz"
  with pytest.raises(DataError, match=_named(path) + ": file not found"):
    idx.read_idx(str(path))


def test_load_idx_dir_missing_or_empty_folder(tmp_path):
  with pytest.raises(DataError, match=_named(tmp_path / "nope") + ": source folder not found"):
    idx.load_idx_dir(str(tmp_path / "nope"), MNIST)
  with pytest.raises(DataError, match=_named(tmp_path) + ": no IDX files"):
    idx.load_idx_dir(str(tmp_path), MNIST)


# ---------------------------------------------------------------- CSV


def test_digit_recognizer_train_and_unlabeled_test(digit_recognizer_csvs, mnist_arrays):
  train_path, test_path = digit_recognizer_csvs

  train = csv_source.read_csv(train_path, 10)
  test = csv_source.read_csv(test_path, 10)

  np.testing.assert_array_equal(train.images, mnist_arrays.train_images)
  np.testing.assert_array_equal(train.labels, mnist_arrays.train_labels)
  assert train.ids is None and train.files == (train_path,)
  np.testing.assert_array_equal(test.images, mnist_arrays.test_images)
  assert test.labels is None and test.ids is None


def test_kannada_test_keeps_ids_in_file_order(kannada_csvs, mnist_arrays):
  train_path, test_path, ids = kannada_csvs

  train = csv_source.read_csv(train_path, 10)
  test = csv_source.read_csv(test_path, 10)

  np.testing.assert_array_equal(train.labels, mnist_arrays.train_labels)
  assert test.labels is None
  assert test.ids.tolist() == ids
  np.testing.assert_array_equal(test.images, mnist_arrays.test_images)


def test_id_label_pixel_columns(tmp_path, write_csv, mnist_arrays):
  num = 12
  ids = [f"img_{i:03d}" for i in range(num)]
  rows = [[ids[i], mnist_arrays.train_labels[i], *mnist_arrays.train_images[i].ravel()]
          for i in range(num)]
  path = write_csv(tmp_path / "class.csv", ["id", "label"] + PIXEL_NAMES, rows)

  split = csv_source.read_csv(path, 10)

  assert split.ids.tolist() == ids
  np.testing.assert_array_equal(split.labels, mnist_arrays.train_labels[:num])
  np.testing.assert_array_equal(split.images, mnist_arrays.train_images[:num])


def test_headerless_label_rows(tmp_path, write_csv, mnist_arrays):
  rows = np.column_stack([mnist_arrays.train_labels,
                          mnist_arrays.train_images.reshape(-1, 784)])
  path = write_csv(tmp_path / "headerless.csv", None, rows)

  split = csv_source.read_csv(path, 10)

  np.testing.assert_array_equal(split.labels, mnist_arrays.train_labels)
  np.testing.assert_array_equal(split.images, mnist_arrays.train_images)


def test_headerless_pixels_only_is_unlabeled(tmp_path, write_csv, mnist_arrays):
  path = write_csv(tmp_path / "pixels.csv", None, mnist_arrays.test_images.reshape(-1, 784))

  split = csv_source.read_csv(path, 10)

  assert split.labels is None
  np.testing.assert_array_equal(split.images, mnist_arrays.test_images)


@pytest.mark.parametrize("label_column,id_column", [("Digit", "ImageNo"), ("2", "0")],
                         ids=["by-name", "by-index"])
def test_label_and_id_columns_by_name_or_index(tmp_path, write_csv, mnist_arrays,
                                               label_column, id_column):
  # Pixels sit on both sides of the label so that the index really matters.
  images = mnist_arrays.train_images[:9].reshape(9, 784)
  labels = mnist_arrays.train_labels[:9]
  rows = [[100 + i, images[i, 0], labels[i], *images[i, 1:]] for i in range(9)]
  header = ["ImageNo", "px0", "Digit"] + [f"px{i}" for i in range(1, 784)]
  path = write_csv(tmp_path / "custom.csv", header, rows)

  with pytest.raises(DataError, match=_named(path) + ": expected 784 pixel columns"):
    csv_source.read_csv(path, 10)  # Neither column has a name the reader knows.
  split = csv_source.read_csv(path, 10, label_column=label_column, id_column=id_column)

  np.testing.assert_array_equal(split.labels, labels)
  np.testing.assert_array_equal(split.images.reshape(9, 784), images)
  assert split.ids.tolist() == [str(100 + i) for i in range(9)]


def test_label_column_none_reads_unlabeled(digit_recognizer_csvs, mnist_arrays):
  train_path, test_path = digit_recognizer_csvs

  split = csv_source.read_csv(test_path, 10, label_column="none")

  assert split.labels is None
  np.testing.assert_array_equal(split.images, mnist_arrays.test_images)
  with pytest.raises(DataError, match=_named(train_path) + ": expected 784 .* found 785"):
    csv_source.read_csv(train_path, 10, label_column="none")


def test_integral_floats_and_crlf_accepted(tmp_path, mnist_arrays):
  images = mnist_arrays.train_images[:3].reshape(3, 784)
  lines = [",".join(["label"] + PIXEL_NAMES)]
  lines += [",".join([f"{i}.0"] + [f"{v}.0" for v in images[i]]) for i in range(3)]
  path = tmp_path / "floats.csv"
  path.write_bytes(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8-sig"))

  split = csv_source.read_csv(str(path), 10)

  np.testing.assert_array_equal(split.images.reshape(3, 784), images)
  np.testing.assert_array_equal(split.labels, [0, 1, 2])


def _csv_rows(arrays, n=5):
  labels = arrays.train_labels[:n].tolist()
  return [[labels[i]] + arrays.train_images[i].ravel().tolist() for i in range(n)]


@pytest.mark.parametrize("header", [True, False], ids=["header", "headerless"])
@pytest.mark.parametrize("defect,row,message", [
    ("ragged", 2, "ragged row with 784 columns, expected 785"),
    ("trailing comma", 1, "ragged row with 786 columns"),
    ("blank line", 3, "ragged row with 1 columns"),
    ("non-numeric", 1, "non-numeric cell 'abc' in column 101"),
    ("comment char", 4, "non-numeric cell '7#' in column 785"),
    ("empty cell", 3, "non-numeric cell '' in column 300"),
    ("fraction", 2, "cell '3.5' in column 50 is not an integer"),
    ("nan", 2, "cell 'nan' in column 2 is not an integer"),
    ("pixel 256", 4, r"pixel value 256 in column 12 \(.*\) outside 0..255"),
    ("pixel -1", 1, r"pixel value -1 in column 785 \(.*\) outside 0..255"),
    ("label 10", 3, "label 10 outside the 10 classes"),
    ("label -1", 0, "label -1 outside the 10 classes"),
])
def test_bad_csv_raises_naming_file_and_line(tmp_path, write_csv, mnist_arrays, header,
                                             defect, row, message):
  rows = _csv_rows(mnist_arrays)
  edit = {
      "ragged": lambda r: r[:-1],
      "trailing comma": lambda r: r + [""],
      "blank line": lambda r: [],
      "non-numeric": lambda r: r[:100] + ["abc"] + r[101:],
      "comment char": lambda r: r[:-1] + ["7#"],
      "empty cell": lambda r: r[:299] + [""] + r[300:],
      "fraction": lambda r: r[:49] + ["3.5"] + r[50:],
      "nan": lambda r: r[:1] + ["nan"] + r[2:],
      "pixel 256": lambda r: r[:11] + [256] + r[12:],
      "pixel -1": lambda r: r[:-1] + [-1],
      "label 10": lambda r: [10] + r[1:],
      "label -1": lambda r: [-1] + r[1:],
  }[defect]
  rows[row] = edit(rows[row])
  path = write_csv(tmp_path / "bad.csv", ["label"] + PIXEL_NAMES if header else None, rows)
  line = row + (2 if header else 1)

  with pytest.raises(DataError, match=f"{_named(path)}:{line}: {message}"):
    csv_source.read_csv(path, 10)


@pytest.mark.parametrize("content,message", [
    ("", "empty file"),
    ("\n\n  \n", "empty file"),
    (",".join(["label"] + PIXEL_NAMES) + "\n", "no data rows"),
    (",".join(["label"] + PIXEL_NAMES[:-1]) + "\n", "expected 784 pixel columns"),
])
def test_csv_without_images_raises(tmp_path, content, message):
  path = tmp_path / "train.csv"
  path.write_text(content)
  with pytest.raises(DataError, match=_named(path) + ": " + message):
    csv_source.read_csv(str(path), 10)


def test_csv_missing_file_and_unknown_column(tmp_path, digit_recognizer_csvs):
  missing = tmp_path / "missing.csv"
  with pytest.raises(DataError, match=_named(missing) + ": file not found"):
    csv_source.read_csv(str(missing), 10)
  train_path, _ = digit_recognizer_csvs
  with pytest.raises(DataError, match=_named(train_path) + ": no label column named 'digit'"):
    csv_source.read_csv(train_path, 10, label_column="digit")
  with pytest.raises(DataError, match=_named(train_path) + ": label column 900 beyond"):
    csv_source.read_csv(train_path, 10, label_column="900")


# ---------------------------------------------------------------- NPZ


@pytest.mark.parametrize("source", ["file", "folder"])
def test_keras_npz(keras_npz, mnist_arrays, source):
  splits = npz.load_npz(keras_npz if source == "file" else os.path.dirname(keras_npz), MNIST)

  np.testing.assert_array_equal(splits["train"].images, mnist_arrays.train_images)
  np.testing.assert_array_equal(splits["train"].labels, mnist_arrays.train_labels)
  np.testing.assert_array_equal(splits["test"].images, mnist_arrays.test_images)
  np.testing.assert_array_equal(splits["test"].labels, mnist_arrays.test_labels)
  assert splits["test"].files == (keras_npz,)


def test_kmnist_npz_pairs(kmnist_npz_dir, mnist_arrays):
  splits = npz.load_npz(kmnist_npz_dir, get_spec("kmnist"))

  assert sorted(splits) == ["test", "train"]
  np.testing.assert_array_equal(splits["train"].images, mnist_arrays.train_images)
  np.testing.assert_array_equal(splits["train"].labels, mnist_arrays.train_labels)
  np.testing.assert_array_equal(splits["test"].images, mnist_arrays.test_images)
  assert splits["test"].files == (
      os.path.join(kmnist_npz_dir, "kmnist-test-imgs.npz"),
      os.path.join(kmnist_npz_dir, "kmnist-test-labels.npz"))


def test_npz_channel_axis_and_integral_floats(tmp_path, mnist_arrays):
  path = tmp_path / "mnist.npz"
  np.savez(path, x_train=mnist_arrays.train_images[..., None].astype(np.float32),
           y_train=mnist_arrays.train_labels)

  splits = npz.load_npz(str(path), MNIST)

  assert list(splits) == ["train"]
  np.testing.assert_array_equal(splits["train"].images, mnist_arrays.train_images)
  assert splits["train"].images.dtype == np.uint8


@pytest.mark.parametrize("arrays,message", [
    ({"x_train": np.zeros((4, 32, 32), np.uint8), "y_train": np.zeros(4)},
     r"\[x_train\]: wrong image shape \[4, 32, 32\]"),
    ({"x_train": np.full((4, 28, 28), 2.5), "y_train": np.zeros(4)},
     r"\[x_train\]: pixel value 2.5 is not an integer, and the values span \[2.5, 2.5\]"),
    ({"x_train": np.full((4, 28, 28), -1.0), "y_train": np.zeros(4)},
     r"\[x_train\]: pixel values span \[-1, -1\], outside 0..255"),
    ({"x_train": np.zeros((4, 28, 28), np.uint8), "y_train": np.zeros(3)},
     r"\[x_train\]: 4 images but .*\[y_train\] has 3 labels"),
    ({"x_train": np.zeros((4, 28, 28), np.uint8), "y_train": [0, 1, 10, 2]},
     r"\[y_train\] \(label #2\): label 10 outside"),
    ({"x_train": np.zeros((4, 28, 28), np.uint8)}, ": has x_train but no y_train"),
    ({"images": np.zeros((4, 28, 28), np.uint8)}, r": no x_train/y_train .*found images"),
])
def test_bad_npz_raises_naming_the_file(tmp_path, arrays, message):
  path = tmp_path / "mnist.npz"
  np.savez(path, **arrays)
  with pytest.raises(DataError, match=_named(path) + message):
    npz.load_npz(str(path), MNIST)


def test_unreadable_npz(tmp_path, keras_npz):
  truncated = tmp_path / "truncated.npz"
  data = open(keras_npz, "rb").read()
  truncated.write_bytes(data[:len(data) // 2])
  empty = tmp_path / "empty.npz"
  empty.write_bytes(b"")
  for path, message in ((truncated, "not a readable .npz archive"), (empty, "empty file"),
                        (tmp_path / "missing.npz", "file not found")):
    with pytest.raises(DataError, match=_named(path) + ": " + message):
      npz.load_npz(str(path), MNIST)


def test_npz_folder_with_several_archives(tmp_path, keras_npz):
  np.savez(tmp_path / "other.npz", x=np.zeros(1))
  with pytest.raises(DataError, match=_named(tmp_path) + ": expected one Keras-style .npz"):
    npz.load_npz(str(tmp_path), MNIST)

