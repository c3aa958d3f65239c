#!/usr/bin/env python3
r"""Writes a PNG grid of augmented training images, to look at before training.

Each row is one image of the split: first the original (framed), then
--cols - 1 augmentation draws of it, each the one a training step would make.
The logic is tfmnist.figures.augment_preview.

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

from tfmnist import augment, figures  # pylint: disable=g-import-not-at-top
from tfmnist.errors import DataError  # pylint: disable=g-import-not-at-top

_DEFAULTS = augment.AugmentConfig()

_DATASET = flags.DEFINE_string("dataset", "mnist", "Dataset folder under --records_dir.")
_RECORDS_DIR = flags.DEFINE_string("records_dir", "records", "Records folder (make_records).")
_SPLIT = flags.DEFINE_string("split", "train", "Split whose images are shown.")
_OUTPUT = flags.DEFINE_string("output", "", "PNG to write; default augment_<dataset>.png.")
_ROWS = flags.DEFINE_integer("rows", 8, "Images shown, one per row.", lower_bound=1)
_COLS = flags.DEFINE_integer(
    "cols", 8, "Columns: the original, then cols - 1 augmentation draws.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the image choice and the augmentation.")

_ROTATION = flags.DEFINE_float("rotation_degrees", 0.0, "Rotation drawn from [-r, r] degrees.")
_ZOOM = flags.DEFINE_float("zoom", 0.0, "Scale drawn per axis from [1 - z, 1 + z].")
_SHIFT_X = flags.DEFINE_float("shift_x", 0.0, "Horizontal shift, fraction of the width.")
_SHIFT_Y = flags.DEFINE_float("shift_y", 0.0, "Vertical shift, fraction of the height.")
_SHEAR = flags.DEFINE_float("shear_degrees", 0.0, "Shear drawn from [-s, s] degrees.")
_ELASTIC_ALPHA = flags.DEFINE_float(
    "elastic_alpha", 0.0, "Elastic distortion in pixels (Simard et al.: 34 with sigma 4).")
_ELASTIC_SIGMA = flags.DEFINE_float(
    "elastic_sigma", _DEFAULTS.elastic_sigma, "Smoothing of the elastic field, in pixels.")
_ERASE_PROBABILITY = flags.DEFINE_float(
    "erase_probability", 0.0, "Chance that an image gets one erased rectangle.")
_ERASE_AREA = flags.DEFINE_list(
    "erase_area", [str(a) for a in _DEFAULTS.erase_area],
    "min,max fraction of the image area erased.")
_NOISE = flags.DEFINE_float("noise_factor", 0.0, "Std of Gaussian noise on [0, 1] images.")
_BLUR = flags.DEFINE_float(
    "blur_strength", 0.0, "Blur (t > 0) or sharpen (t < 0) by t drawn from [-s, s].")
_BLUR_SIGMA = flags.DEFINE_float(
    "blur_sigma", _DEFAULTS.blur_sigma, "Sigma of the blur, in pixels.")
_FLIP_H = flags.DEFINE_bool("flip_horizontal", False, "Mirror left-right half the time.")
_FLIP_V = flags.DEFINE_bool("flip_vertical", False, "Mirror top-bottom half the time.")
_FORCE_FLIPS = flags.DEFINE_bool("force_flips", False, "Allow flips on digit datasets.")


def augment_config():
  """The AugmentConfig of the flags."""
  try:
    erase_area = tuple(float(a) for a in _ERASE_AREA.value)
  except ValueError:
    raise ValueError(f"--erase_area must be two numbers, got {_ERASE_AREA.value}") from None
  if len(erase_area) != 2:
    raise ValueError(f"--erase_area must be two numbers min,max, got {_ERASE_AREA.value}")
  return augment.AugmentConfig(
      rotation_degrees=_ROTATION.value, zoom=_ZOOM.value, shift_x=_SHIFT_X.value,
      shift_y=_SHIFT_Y.value, shear_degrees=_SHEAR.value, elastic_alpha=_ELASTIC_ALPHA.value,
      elastic_sigma=_ELASTIC_SIGMA.value, erase_probability=_ERASE_PROBABILITY.value,
      erase_area=erase_area, noise_factor=_NOISE.value, blur_strength=_BLUR.value,
      blur_sigma=_BLUR_SIGMA.value, flip_horizontal=_FLIP_H.value,
      flip_vertical=_FLIP_V.value, force_flips=_FORCE_FLIPS.value)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  output = _OUTPUT.value or f"augment_{_DATASET.value}.png"
  try:
    shown = figures.augment_preview(_RECORDS_DIR.value, _DATASET.value, _SPLIT.value,
                                    augment_config(), output, _ROWS.value, _COLS.value,
                                    _SEED.value)
  except (DataError, ValueError) as e:
    sys.exit(f"show_augment: error: {e}")
  print(f"{output}: {shown} {_DATASET.value} {_SPLIT.value} images x {_COLS.value - 1} "
        "augmentation draws")


if __name__ == "__main__":
  app.run(main)
