#!/usr/bin/env python3
r"""Writes a PNG grid of augmented training images, to look at before training.

Each row is one image of the split: first the original (framed), then
--cols - 1 augmentation draws of it, each the one a training step would make.
The images and draws come from tfmnist.data.preview, the grid from
tfmnist.evaluation.figures.augment_grid.

Examples:
  python tools/show_augment.py --rotation_degrees=10 --zoom=0.1 \
      --shift_x=0.1 --shift_y=0.1
  python tools/show_augment.py --dataset=fashion_mnist --flip_horizontal \
      --erase_probability=0.5 --output=/tmp/fashion.png
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # pylint: disable=g-import-not-at-top

from tfmnist.cli import augment_flags  # pylint: disable=g-import-not-at-top
from tfmnist.data import preview  # pylint: disable=g-import-not-at-top
from tfmnist.errors import DataError  # pylint: disable=g-import-not-at-top
from tfmnist.evaluation import figures  # pylint: disable=g-import-not-at-top

_DATASET = flags.DEFINE_string("dataset", "mnist", "Dataset folder under --records_dir.")
_RECORDS_DIR = flags.DEFINE_string("records_dir", "records", "Records folder (make_records).")
_SPLIT = flags.DEFINE_string("split", "train", "Split whose images are shown.")
_OUTPUT = flags.DEFINE_string("output", "", "PNG to write; default augment_<dataset>.png.")
_ROWS = flags.DEFINE_integer("rows", 8, "Images shown, one per row.", lower_bound=1)
_COLS = flags.DEFINE_integer(
    "cols", 8, "Columns: the original, then cols - 1 augmentation draws.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the image choice and the augmentation.")


def show_augment(records_dir, dataset, split, config, path, rows, cols, seed):
  """Writes the grid of preview.augment_preview to `path`; returns the images shown."""
  shown = preview.augment_preview(records_dir, dataset, split, config, rows, cols, seed)
  figures.augment_grid(shown.originals, shown.augmented, shown.labels, shown.class_names, path,
                       title=shown.title)
  return len(shown.labels)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  output = _OUTPUT.value or f"augment_{_DATASET.value}.png"
  try:
    shown = show_augment(_RECORDS_DIR.value, _DATASET.value, _SPLIT.value,
                            augment_flags.augment_config(), output, _ROWS.value, _COLS.value,
                            _SEED.value)
  except (DataError, ValueError) as e:
    sys.exit(f"show_augment: error: {e}")
  print(f"{output}: {shown} {_DATASET.value} {_SPLIT.value} images x {_COLS.value - 1} "
        "augmentation draws")


if __name__ == "__main__":
  app.run(main)
