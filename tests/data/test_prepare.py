"""Tests of `tfmnist.prepare.make_records`: splits, shards, info.json, atomic writing."""

import gzip
import hashlib
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import tfmnist
from tfmnist.data import prepare, records, splits
from tfmnist.errors import DataError

SHARD_NAME = re.compile(r"^(?P<split>[a-z]+)-(?P<shard>\d{5})-of-(?P<num>\d{5})\.tfrecord$")


def read_split(folder, split):
  """Reads every record of `split` back with tf.data and parse_example.

  Returns:
    dict of numpy arrays: image uint8 [N, 28, 28], label, index, id (str), in file order.
  """
  info = read_info(folder)
  files = [os.path.join(folder, s["file"]) for s in info["splits"][split]["shards"]]
  dataset = tf.data.TFRecordDataset(files).batch(1000).map(
      lambda serialized: tf.io.parse_example(serialized, records.feature_spec()))
  parts = {"image": [], "label": [], "index": [], "id": []}
  for batch in dataset:
    raw = tf.io.decode_raw(batch["image"], tf.uint8)
    assert raw.shape[1] == 28 * 28  # Exactly 784 bytes per image.
    parts["image"].append(raw.numpy().reshape(-1, 28, 28))
    for key in ("label", "index"):
      parts[key].append(batch[key].numpy())
    parts["id"].append([v.decode() for v in batch["id"].numpy()])
  return {k: np.concatenate(v) for k, v in parts.items()}


def read_info(folder):
  with open(os.path.join(folder, records.INFO_FILE)) as f:
    return json.load(f)


def _sha256(path):
  return hashlib.sha256(open(path, "rb").read()).hexdigest()


# ---------------------------------------------------------------- layout and round trip


def test_idx_records_layout_with_default_shards(idx_dir, make_config, tmp_path):
  folder, info = prepare.make_records(make_config(source_dir=idx_dir))

  assert folder == str(tmp_path / "records" / "mnist")
  names = sorted(os.listdir(folder))
  assert records.INFO_FILE in names
  shards = {}
  for name in names:
    if name == records.INFO_FILE:
      continue
    m = SHARD_NAME.match(name)
    assert m, name
    shards.setdefault(m["split"], []).append((int(m["shard"]), int(m["num"])))
  assert sorted(shards) == ["test", "train", "validation"]
  assert shards["train"] == [(i, 8) for i in range(8)]  # 8 train shards by default.
  for split, found in shards.items():
    num = found[0][1]
    assert found == [(i, num) for i in range(num)], split
    assert [s["file"] for s in info["splits"][split]["shards"]] == [
        records.shard_name(split, i, num) for i in range(num)]
  assert read_info(folder) == info
  assert os.listdir(tmp_path / "records") == ["mnist"]  # No temporary folder left over.


def test_records_round_trip_exactly(idx_dir, make_config, mnist_arrays):
  folder, _ = prepare.make_records(make_config(source_dir=idx_dir))
  got = {split: read_split(folder, split) for split in ("train", "validation", "test")}

  for split in ("train", "validation"):
    index = got[split]["index"]
    np.testing.assert_array_equal(got[split]["image"], mnist_arrays.train_images[index])
    np.testing.assert_array_equal(got[split]["label"], mnist_arrays.train_labels[index])
    assert set(got[split]["id"]) == {""}
  # Train and validation together are exactly the original train, each image once.
  all_train = np.concatenate([got["train"]["index"], got["validation"]["index"]])
  np.testing.assert_array_equal(np.sort(all_train), np.arange(len(mnist_arrays.train_images)))
  # Test keeps its source order and is never used for validation.
  np.testing.assert_array_equal(got["test"]["index"], np.arange(len(mnist_arrays.test_images)))
  np.testing.assert_array_equal(got["test"]["image"], mnist_arrays.test_images)
  np.testing.assert_array_equal(got["test"]["label"], mnist_arrays.test_labels)
  # Shuffled once so that shards mix classes.
  assert not np.array_equal(got["train"]["index"], np.sort(got["train"]["index"]))


def test_unlabeled_csv_test_split(digit_recognizer_csvs, make_config, mnist_arrays):
  train_csv, test_csv = digit_recognizer_csvs
  folder, info = prepare.make_records(make_config(
      dataset="digit_recognizer", train_csv=train_csv, test_csv=test_csv))

  test = read_split(folder, "test")
  assert info["source"] == "csv"
  assert info["splits"]["test"]["labeled"] is False
  assert "label_histogram" not in info["splits"]["test"]
  np.testing.assert_array_equal(test["label"], np.full(len(mnist_arrays.test_images), -1))
  np.testing.assert_array_equal(test["image"], mnist_arrays.test_images)
  train = read_split(folder, "train")
  np.testing.assert_array_equal(train["label"], mnist_arrays.train_labels[train["index"]])


def test_kannada_ids_and_extra_split(kannada_csvs, make_config, mnist_arrays, tmp_path,
                                     write_csv):
  train_csv, test_csv, ids = kannada_csvs
  dig = np.column_stack([mnist_arrays.test_labels, mnist_arrays.test_images.reshape(-1, 784)])
  dig_csv = write_csv(tmp_path / "Dig-MNIST.csv",
                      ["label"] + [f"pixel{i}" for i in range(784)], dig)
  folder, info = prepare.make_records(make_config(
      dataset="kannada_mnist", train_csv=train_csv, test_csv=test_csv,
      extra_csv=(f"dig={dig_csv}",)))

  test = read_split(folder, "test")
  assert test["id"].tolist() == ids  # In file order.
  np.testing.assert_array_equal(test["index"], np.arange(len(ids)))
  np.testing.assert_array_equal(test["image"], mnist_arrays.test_images)
  assert list(info["splits"]) == ["train", "validation", "test", "dig"]
  np.testing.assert_array_equal(read_split(folder, "dig")["label"], mnist_arrays.test_labels)


@pytest.mark.parametrize("fixture", ["keras_npz", "kmnist_npz_dir"])
def test_npz_sources(request, fixture, make_config, mnist_arrays):
  source = request.getfixturevalue(fixture)
  folder, info = prepare.make_records(make_config(
      dataset="kmnist", source_dir=source, validation_size=0, num_shards=3))

  assert info["source"] == "npz"
  assert sorted(info["splits"]) == ["test", "train"]
  train = read_split(folder, "train")
  np.testing.assert_array_equal(train["image"], mnist_arrays.train_images[train["index"]])
  np.testing.assert_array_equal(train["label"], mnist_arrays.train_labels[train["index"]])


def test_emnist_records_are_transposed_unless_overridden(tmp_path, write_idx, make_config,
                                                         mnist_arrays):
  source = tmp_path / "emnist"
  source.mkdir()
  write_idx(source / "emnist-digits-test-images-idx3-ubyte.gz", mnist_arrays.test_images)
  write_idx(source / "emnist-digits-test-labels-idx1-ubyte.gz", mnist_arrays.test_labels)

  folder, _ = prepare.make_records(make_config(dataset="emnist_digits", source_dir=str(source)))
  np.testing.assert_array_equal(read_split(folder, "test")["image"],
                                mnist_arrays.test_images.transpose(0, 2, 1))
  folder, _ = prepare.make_records(make_config(
      dataset="emnist_digits", source_dir=str(source), transpose=False, overwrite=True))
  np.testing.assert_array_equal(read_split(folder, "test")["image"], mnist_arrays.test_images)


def test_custom_dataset_name_with_class_names(digit_recognizer_csvs, make_config):
  train_csv, _ = digit_recognizer_csvs
  names = tuple("abcdefghij")
  folder, info = prepare.make_records(make_config(
      dataset="my_letters", train_csv=train_csv, class_names=names))

  assert os.path.basename(folder) == "my_letters"
  assert info["class_names"] == list(names)


# ---------------------------------------------------------------- validation split


@pytest.mark.parametrize("size", [0.1, 0.25, 0.5, 7, 13])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_split_proportions(size, seed):
  # Unbalanced classes make the rounding matter.
  labels = np.repeat(np.arange(6), [23, 11, 7, 5, 3, 1])
  rng = np.random.default_rng(seed)
  labels = rng.permutation(labels)

  keep, held = splits.stratified_split(labels, size, seed)

  expected_count = int(round(size * len(labels))) if size < 1 else size
  assert len(held) == expected_count
  np.testing.assert_array_equal(np.sort(np.concatenate([keep, held])), np.arange(len(labels)))
  share = expected_count / len(labels)
  for c in range(6):
    exact = share * np.sum(labels == c)
    assert abs(np.sum(labels[held] == c) - exact) <= 1, (c, exact)


def test_stratified_split_is_seeded():
  labels = np.arange(200) % 10
  a = splits.stratified_split(labels, 0.2, seed=5)[1]
  b = splits.stratified_split(labels, 0.2, seed=5)[1]
  c = splits.stratified_split(labels, 0.2, seed=6)[1]
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


@pytest.mark.parametrize("size,count", [(0.25, 15), (12, 12), (1, 1), (0, 0)])
def test_validation_size_fraction_or_count(idx_dir, make_config, size, count):
  folder, info = prepare.make_records(make_config(source_dir=idx_dir, validation_size=size))

  if count:
    validation = read_split(folder, "validation")
    assert info["splits"]["validation"]["count"] == len(validation["index"]) == count
  else:
    assert "validation" not in info["splits"]
  assert info["splits"]["train"]["count"] == 60 - count
  assert info["splits"]["test"]["count"] == 20


def test_validation_split_in_records_is_stratified_and_seeded(idx_dir, make_config, tmp_path):
  def validation_indices(seed, name):
    folder, info = prepare.make_records(make_config(
        source_dir=idx_dir, seed=seed, validation_size=0.5,
        output_dir=str(tmp_path / name)))
    assert info["splits"]["validation"]["label_histogram"] == [3] * 10  # Half of 6 per class.
    return np.sort(read_split(folder, "validation")["index"])

  first = validation_indices(3, "a")
  np.testing.assert_array_equal(first, validation_indices(3, "b"))
  assert not np.array_equal(first, validation_indices(4, "c"))


@pytest.mark.parametrize("size", [60, 75, 0.999])
def test_validation_size_must_leave_training_images(idx_dir, make_config, tmp_path, size):
  with pytest.raises(DataError, match=f"validation_size {size} must leave"):
    prepare.make_records(make_config(source_dir=idx_dir, validation_size=size))
  assert not os.path.exists(tmp_path / "records")


# ---------------------------------------------------------------- info.json


def test_info_json_contents(idx_dir, make_config, mnist_arrays):
  folder, info = prepare.make_records(make_config(source_dir=idx_dir, seed=3))
  info = read_info(folder)

  assert info["schema_version"] == records.SCHEMA_VERSION
  assert info["dataset"] == "mnist"
  assert info["class_names"] == [str(d) for d in range(10)]
  assert info["num_classes"] == 10
  assert info["image_shape"] == [28, 28, 1]
  assert info["tool_version"] == tfmnist.__version__
  assert info["seed"] == 3 and info["source"] == "idx"
  assert {k: v["count"] for k, v in info["splits"].items()} == {
      "train": 54, "validation": 6, "test": 20}
  for split, summary in info["splits"].items():
    got = read_split(folder, split)
    assert sum(s["count"] for s in summary["shards"]) == summary["count"] == len(got["label"])
    for shard in summary["shards"]:
      path = os.path.join(folder, shard["file"])
      assert sum(1 for _ in tf.data.TFRecordDataset(path)) == shard["count"]
      assert shard["sha256"] == _sha256(path)
    assert summary["labeled"] is True
    assert summary["label_histogram"] == np.bincount(got["label"], minlength=10).tolist()
  assert info["splits"]["train"]["label_histogram"] == [
      a - b for a, b in zip(np.bincount(mnist_arrays.train_labels).tolist(),
                            info["splits"]["validation"]["label_histogram"])]
  train = read_split(folder, "train")["image"] / 255.0
  assert info["pixel_mean"] == pytest.approx(train.mean(), rel=1e-9)
  assert info["pixel_std"] == pytest.approx(train.std(), rel=1e-9)
  expected_files = sorted(os.path.join(idx_dir, n) for n in os.listdir(idx_dir))
  assert [f["path"] for f in info["source_files"]] == expected_files
  for f in info["source_files"]:
    assert f["sha256"] == _sha256(f["path"])
  assert records.split_files(os.path.dirname(folder), "mnist", "validation") == [
      os.path.join(folder, s["file"]) for s in info["splits"]["validation"]["shards"]]


def test_duplicate_counts_without_validation(idx_dir, make_config):
  _, info = prepare.make_records(make_config(source_dir=idx_dir, validation_size=0))

  assert list(info["splits"]) == ["train", "test"]  # Train first, though t10k sorts first.
  # Planted in the fixture: train 1 = train 0, test 3 = test 2, train 10 = test 5.
  assert info["duplicates"] == {"within": {"train": 1, "test": 1},
                                "across": {"train/test": 1}}


def _brute_force_duplicates(a, b=None):
  keys_a = [img.tobytes() for img in a]
  if b is None:
    return len(keys_a) - len(set(keys_a))
  return sum(img.tobytes() in set(keys_a) for img in b)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_duplicate_counts_with_validation(idx_dir, make_config, tmp_path, seed):
  folder, info = prepare.make_records(make_config(
      source_dir=idx_dir, validation_size=0.5, seed=seed, output_dir=str(tmp_path / str(seed))))
  images = {s: read_split(folder, s)["image"] for s in ("train", "validation", "test")}
  dup = info["duplicates"]

  for s in images:
    assert dup["within"][s] == _brute_force_duplicates(images[s]), s
  for pair in ("train/validation", "train/test", "validation/test"):
    a, b = pair.split("/")
    assert dup["across"][pair] == _brute_force_duplicates(images[a], images[b]), pair
  # The planted train pair lands in one split or straddles two; either way it counts once.
  assert (dup["within"]["train"] + dup["within"]["validation"] +
          dup["across"]["train/validation"]) == 1
  assert dup["across"]["train/test"] + dup["across"]["validation/test"] == 1
  assert dup["within"]["test"] == 1


def test_pixel_statistics_match_numpy():
  images = np.random.default_rng(0).integers(0, 256, (9, 28, 28), dtype=np.uint8)
  mean, std = prepare.pixel_statistics(images)
  assert mean == pytest.approx((images / 255.0).mean(), rel=1e-12)
  assert std == pytest.approx((images / 255.0).std(), rel=1e-12)


# ---------------------------------------------------------------- atomic writing


def _fill_with_old_records(folder):
  os.makedirs(folder)
  with open(os.path.join(folder, "sentinel.txt"), "w") as f:
    f.write("old")


def test_existing_dataset_needs_overwrite(idx_dir, make_config, tmp_path):
  folder = tmp_path / "records" / "mnist"
  _fill_with_old_records(folder)

  with pytest.raises(DataError, match=re.escape(str(folder)) + ": already exists"):
    prepare.make_records(make_config(source_dir=idx_dir))
  assert os.listdir(folder) == ["sentinel.txt"]
  assert (folder / "sentinel.txt").read_text() == "old"

  prepare.make_records(make_config(source_dir=idx_dir, overwrite=True))
  assert "sentinel.txt" not in os.listdir(folder)
  assert read_info(folder)["splits"]["train"]["count"] == 54
  assert os.listdir(tmp_path / "records") == ["mnist"]


@pytest.mark.parametrize("overwrite", [False, True])
def test_failure_midway_leaves_nothing_behind(idx_dir, make_config, tmp_path, monkeypatch,
                                              overwrite):
  output_dir = tmp_path / "records"
  if overwrite:
    _fill_with_old_records(output_dir / "mnist")
  real_write_split = records.write_split
  calls = []

  def failing_write_split(*args, **kwargs):
    calls.append(args[1])
    if len(calls) == 2:
      raise OSError("disk full")
    return real_write_split(*args, **kwargs)

  monkeypatch.setattr(records, "write_split", failing_write_split)
  with pytest.raises(OSError, match="disk full"):
    prepare.make_records(make_config(source_dir=idx_dir, overwrite=overwrite))

  assert calls == ["train", "validation"]
  leftovers = sorted(os.listdir(output_dir))
  if overwrite:  # The old dataset is untouched.
    assert leftovers == ["mnist"]
    assert os.listdir(output_dir / "mnist") == ["sentinel.txt"]
  else:
    assert leftovers == []


# ---------------------------------------------------------------- bad input


def _break_source(kind, idx_dir, tmp_path, write_csv):
  """Makes one broken source; returns (config fields, regex the error must match)."""
  train_images = os.path.join(idx_dir, "train-images-idx3-ubyte.gz")
  test_labels = os.path.join(idx_dir, "t10k-labels-idx1-ubyte.gz")
  if kind == "truncated gzip":
    data = open(train_images, "rb").read()
    open(train_images, "wb").write(data[:-50])
    return {"source_dir": idx_dir}, re.escape(train_images) + ": truncated or corrupt gzip"
  if kind == "label outside classes":
    labels = gzip.decompress(open(test_labels, "rb").read())
    open(test_labels, "wb").write(gzip.compress(labels[:-1] + b"\x0c"))
    return ({"source_dir": idx_dir},
            re.escape(test_labels) + r" \(label #19\): label 12 outside")
  if kind == "empty file":
    open(test_labels, "wb").close()
    return {"source_dir": idx_dir}, re.escape(test_labels) + ": empty file"
  if kind == "missing folder":
    missing = os.path.join(tmp_path, "nowhere")
    return {"source_dir": missing}, re.escape(missing) + ": source folder not found"
  header = ["label"] + [f"pixel{i}" for i in range(784)]
  rows = [[i % 10] + [0] * 784 for i in range(12)]
  if kind == "csv pixel":
    rows[7][300] = 300
    path = write_csv(tmp_path / "train.csv", header, rows)
    return {"dataset": "digit_recognizer", "train_csv": path}, (
        re.escape(path) + r":9: pixel value 300 in column 301 \(pixel299\)")
  if kind == "missing csv":
    path = str(tmp_path / "test.csv")
    return ({"dataset": "digit_recognizer", "train_csv": write_csv(
        tmp_path / "train.csv", header, rows), "test_csv": path},
            re.escape(path) + ": file not found")
  if kind == "unknown dataset":
    return {"dataset": "nmist", "source_dir": idx_dir}, "^unknown dataset 'nmist'"
  raise ValueError(kind)


@pytest.mark.parametrize("kind", ["truncated gzip", "label outside classes", "empty file",
                                  "missing folder", "csv pixel", "missing csv",
                                  "unknown dataset"])
def test_bad_source_raises_and_writes_nothing(idx_dir, make_config, tmp_path, write_csv, kind):
  fields, message = _break_source(kind, idx_dir, tmp_path, write_csv)

  with pytest.raises(DataError, match=message):
    prepare.make_records(make_config(**fields))
  assert not os.path.exists(tmp_path / "records")


@pytest.mark.parametrize("fields,message", [
    ({"num_shards": 0}, "num_shards must be at least 1"),
    ({"source": "zip"}, "unknown source 'zip'"),
    ({"source": "idx"}, "source=idx needs source_dir"),
    ({"extra_csv": ("dig.csv",)}, "extra_csv 'dig.csv': expected split=path"),
    ({"dataset": "../x", "class_names": ("a", "b")}, "must be a plain folder name"),
])
def test_bad_config_raises(make_config, tmp_path, fields, message):
  with pytest.raises(DataError, match=re.escape(message)):
    prepare.make_records(make_config(**fields))
  assert not os.path.exists(tmp_path / "records")


# ---------------------------------------------------------------- real data


def test_real_mnist(real_mnist_dir, make_config):
  folder, info = prepare.make_records(make_config(source_dir=real_mnist_dir))

  splits = info["splits"]
  assert splits["train"]["count"] + splits["validation"]["count"] == 22699
  assert splits["validation"]["count"] == 2270
  assert splits["test"]["count"] == 10000
  histogram = np.add(splits["train"]["label_histogram"], splits["validation"]["label_histogram"])
  assert histogram.tolist() == [2258, 2581, 2215, 2369, 2222, 2010, 2235, 2356, 2163, 2290]
  assert len(splits["train"]["shards"]) == 8
  assert sum(s["count"] for s in splits["test"]["shards"]) == 10000
  assert 0.12 < info["pixel_mean"] < 0.14 and 0.29 < info["pixel_std"] < 0.33
  test = read_split(folder, "test")
  np.testing.assert_array_equal(np.bincount(test["label"]), splits["test"]["label_histogram"])
