"""Tests of data.preview: images of a split and their augmentation draws."""

import json
import pathlib

import numpy as np
import pytest

from tfmnist.data import preview, records
from tfmnist.data.augment import AugmentConfig
from tfmnist.errors import DataError


def _write_records(records_dir, dataset="mnist", count=12, digits=True, class_names=None):
  """A `count`-image train split and its info.json, as make_records would write them."""
  folder = pathlib.Path(records.dataset_dir(str(records_dir), dataset))
  folder.mkdir(parents=True)
  images = np.zeros((count, 28, 28), np.uint8)
  images[:, 6:22, 12:16] = 255  # A bar: every augmentation draw moves it differently.
  shards = records.write_split(str(folder), "train", images, np.arange(count) % 10,
                               np.arange(count), None, 2)
  info = {"schema_version": records.SCHEMA_VERSION, "dataset": dataset, "digits": digits,
          "class_names": class_names or [str(i) for i in range(10)],
          "splits": {"train": {"count": count, "shards": shards}}}
  (folder / records.INFO_FILE).write_text(json.dumps(info))
  return str(records_dir)


def test_preview_draws_distinct_augmentations_of_chosen_images(tmp_path):
  records_dir = _write_records(tmp_path / "records")
  config = AugmentConfig(rotation_degrees=10, zoom=0.1, shift_x=0.1, shift_y=0.1)
  shown = preview.augment_preview(records_dir, "mnist", "train", config, rows=4, cols=5, seed=3)
  assert shown.originals.shape == (4, 28, 28, 1) and shown.originals.max() == 1.0
  assert len(set(shown.labels.tolist())) == 4 and set(shown.labels.tolist()) <= set(range(10))
  assert shown.class_names == [str(i) for i in range(10)]
  assert shown.title == "mnist train: rotation_degrees=10, zoom=0.1, shift_x=0.1, shift_y=0.1"
  columns = [shown.originals] + shown.augmented
  assert len(columns) == 5
  for a in range(5):
    for b in range(a + 1, 5):  # Every column is its own draw, for every image.
      assert np.all(np.abs(columns[a] - columns[b]).max(axis=(1, 2, 3)) > 0.1), (a, b)
  again = preview.augment_preview(records_dir, "mnist", "train", config, rows=4, cols=5, seed=3)
  np.testing.assert_array_equal(again.augmented[2], shown.augmented[2])  # Seeded.


def test_preview_shows_fewer_rows_for_a_small_split(tmp_path):
  records_dir = _write_records(tmp_path / "records", count=3)
  shown = preview.augment_preview(records_dir, "mnist", "train", AugmentConfig(noise_factor=0.1),
                                  rows=8, cols=2)
  assert len(shown.labels) == 3 and len(shown.augmented) == 1


def test_preview_names_the_command_for_missing_records(tmp_path):
  with pytest.raises(DataError, match="tools/make_records.py --dataset=mnist"):
    preview.augment_preview(str(tmp_path / "nowhere"), "mnist", "train", AugmentConfig())


def test_preview_flips_follow_the_digits_flag(tmp_path):
  flips = AugmentConfig(flip_horizontal=True)
  digits = _write_records(tmp_path / "digits")
  with pytest.raises(ValueError, match="flips are refused"):
    preview.augment_preview(digits, "mnist", "train", flips)
  clothes = _write_records(tmp_path / "clothes", dataset="fashion_mnist", digits=False,
                           class_names=[f"c{i}" for i in range(10)])
  shown = preview.augment_preview(clothes, "fashion_mnist", "train", flips, rows=2, cols=2)
  assert shown.class_names[0] == "c0"


def test_preview_rejects_an_unknown_split(tmp_path):
  records_dir = _write_records(tmp_path / "records")
  with pytest.raises(DataError, match="no split 'test' \\(has train\\)"):
    preview.augment_preview(records_dir, "mnist", "test", AugmentConfig())
