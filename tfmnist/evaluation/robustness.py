"""Accuracy under perturbations the model never trained on: Gaussian noise, rotations
and shifts, each a sweep of levels over the same images.

The perturbations are the image operations of training's augmentation
(data.augment): `gaussian_noise`, `rotate` and `translate`.
"""

import numpy as np
import tensorflow as tf

from tfmnist.data import augment, pixels, splits

NOISE_FACTORS = tuple(round(0.1 * i, 1) for i in range(11))
ROTATION_DEGREES = (-20, -15, -10, -5, 0, 5, 10, 15, 20)
SHIFT_PIXELS = (0, 1, 2, 3, 4)
# What a sweep's levels measure: the report shows "<sweep> (<unit>)", the
# figure the unit under its x-axis.
UNITS = {"gaussian noise": "std, pixels in [0, 1]", "rotation": "degrees",
         "shift": "pixels, a quarter of the images each left, right, up, down"}
# Passes of the sweeps over their images: every level but the unperturbed
# one, which reuses the plain predictions.
SWEEP_PASSES = sum(1 for levels in (NOISE_FACTORS, ROTATION_DEGREES, SHIFT_PIXELS)
                   for level in levels if level)
_SHIFT_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def add_noise(images, factor, seed):
  """uint8 images plus Gaussian noise of std `factor` (pixels in [0, 1]), clipped.

  The noise is drawn from `seed` alone, so every level perturbs the images
  with the same pattern, scaled.
  """
  if factor == 0:
    return images
  noisy = augment.gaussian_noise(pixels.normalize(images), factor,
                                 tf.constant([seed, 0], tf.int64))
  return pixels.to_uint8(noisy.numpy())


def rotate(images, degrees):
  """uint8 images turned counter-clockwise by `degrees` (bilinear, black fill)."""
  if degrees == 0:
    return images
  turned = augment.rotate(tf.cast(images, tf.float32), degrees)
  return tf.cast(tf.round(tf.clip_by_value(turned, 0.0, 255.0)), tf.uint8).numpy()


def sweep_subset(labels, count, seed=0):
  """Sorted row indices of `count` images, the same share of every class."""
  if count <= 0 or count >= len(labels):
    return np.arange(len(labels))
  # The same draw that carves the validation split from train.
  return splits.stratified_split(labels, count, seed)[1]


def shift_each(images, pixels_moved):
  """uint8 images [N, 28, 28, 1] moved by `pixels_moved`: left, right, up or down by row.

  Row i goes in direction i mod 4, so each direction moves a quarter of the
  images (and, the classes being shuffled in the records, about a quarter
  of every class).
  """
  moved = np.empty_like(images)
  for i, (dx, dy) in enumerate(_SHIFT_DIRECTIONS):
    part = augment.translate(tf.cast(images[i::4], tf.float32), pixels_moved * dx,
                             pixels_moved * dy)
    moved[i::4] = tf.cast(part, tf.uint8).numpy()  # Exact: whole pixels are copied.
  return moved


def robustness(predict, images, labels, seed=0, clean_probabilities=None):
  """Accuracy under Gaussian noise, rotations and shifts.

  Every sweep point is one pass of `predict` over the images: 10 noise
  levels, 8 rotations and 4 shifts, 22 passes in all (23 without
  `clean_probabilities`).

  Args:
    predict: uint8 images -> probabilities [N, classes].
    images, labels: the split, uint8 [N, 28, 28, 1] and [N].
    seed: seed of the noise.
    clean_probabilities: predict(images) when the caller already has it.

  Returns:
    {name: {"levels", "accuracy", "unit"}} for figures.robustness_figure.
  """
  def accuracy(perturbed=None, probabilities=None):
    if probabilities is None:
      probabilities = predict(perturbed)
    return float(np.mean(np.argmax(probabilities, -1) == labels))

  clean = accuracy(images, clean_probabilities)
  return {
      "gaussian noise": {"unit": UNITS["gaussian noise"], "levels": list(NOISE_FACTORS),
                         "accuracy": [clean if f == 0 else accuracy(add_noise(images, f, seed))
                                      for f in NOISE_FACTORS]},
      "rotation": {"unit": UNITS["rotation"], "levels": list(ROTATION_DEGREES),
                   "accuracy": [clean if d == 0 else accuracy(rotate(images, d))
                                for d in ROTATION_DEGREES]},
      "shift": {"unit": UNITS["shift"], "levels": list(SHIFT_PIXELS),
                "accuracy": [clean if p == 0 else accuracy(shift_each(images, p))
                             for p in SHIFT_PIXELS]},
  }
