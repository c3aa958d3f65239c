"""Tests of the Deskew layer and strided_bn_deskew, against a plain numpy shear."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfmnist import models
from tfmnist.models.layers import Deskew


def _moments(image):
  """(row centroid, column centroid, slant) of one [H, W] image, in float64."""
  image = image.astype(np.float64)
  rows, cols = np.mgrid[:image.shape[0], :image.shape[1]]
  mass = image.sum()
  r0, c0 = (rows * image).sum() / mass, (cols * image).sum() / mass
  row_var = ((rows - r0)**2 * image).sum() / mass
  covariance = ((rows - r0) * (cols - c0) * image).sum() / mass
  return r0, c0, covariance / row_var


def _reference(image, max_slant=1.0):
  """Output (r, n) reads input (r, n + slant (r - r0)), linear between columns, zero outside."""
  height, width = image.shape
  if image.sum() <= 1e-6:
    return image.copy()
  r0, _, slant = _moments(image)
  slant = min(max(slant, -max_slant), max_slant)
  out = np.zeros_like(image, np.float64)
  for r in range(height):
    for n in range(width):
      source = n + slant * (r - r0)
      left = int(np.floor(source))
      frac = source - left
      for c, weight in ((left, 1 - frac), (left + 1, frac)):
        if 0 <= c < width:
          out[r, n] += weight * image[r, c]
  return out


def _slanted_bar(lean, height=28, width=28):
  """A 2-pixel-wide stroke from row 4 to row 23 that moves `lean` columns per row."""
  image = np.zeros([height, width], np.float32)
  for r in range(4, 24):
    c = 13 + lean * (r - 13.5)
    left = int(np.floor(c))
    image[r, left:left + 2] = 1.0
  return image


def test_deskew_takes_the_slant_out_and_keeps_the_centroid():
  image = _slanted_bar(0.4)
  assert _moments(image)[2] > 0.3
  out = Deskew()(image[None, ..., None]).numpy()[0, ..., 0]
  r0, c0, slant = _moments(out)
  assert abs(slant) < 1e-3
  before = _moments(image)
  assert abs(r0 - before[0]) < 1e-4 and abs(c0 - before[1]) < 0.02
  np.testing.assert_allclose(out.sum(), image.sum(), rtol=1e-3)


def test_deskew_matches_a_numpy_shear_on_random_images():
  rng = np.random.default_rng(0)
  images = rng.uniform(size=[4, 28, 28]).astype(np.float32) * (rng.uniform(size=[4, 28, 28]) < 0.2)
  images[1] = _slanted_bar(-0.3)
  out = Deskew()(images[..., None]).numpy()[..., 0]
  for image, got in zip(images, out):
    np.testing.assert_allclose(got, _reference(image), atol=2e-5)


def test_deskew_leaves_an_upright_image_and_a_blank_one_exactly_as_they_are():
  upright = _slanted_bar(0.0)
  blank = np.zeros([28, 28], np.float32)
  out = Deskew()(np.stack([upright, blank])[..., None]).numpy()[..., 0]
  np.testing.assert_array_equal(out[0], upright)
  np.testing.assert_array_equal(out[1], blank)


def test_deskew_limits_the_shear_of_a_nearly_flat_stroke():
  # Two rows of ink: a small row variance and a large covariance, a slant of 14
  # columns per row, which would fold the image; it is sheared by max_slant.
  image = np.zeros([28, 28], np.float32)
  image[13, 0:14] = 1.0
  image[14, 14:28] = 1.0
  assert _moments(image)[2] > 10
  out = Deskew(max_slant=1.0)(image[None, ..., None]).numpy()[0, ..., 0]
  assert np.all(np.isfinite(out))
  np.testing.assert_allclose(out, _reference(image, max_slant=1.0), atol=2e-5)


def test_deskew_treats_each_image_alone_and_traces_alike():
  images = np.stack([_slanted_bar(0.4), _slanted_bar(-0.2), _slanted_bar(0.1)])[..., None]
  together = Deskew()(images).numpy()
  for i in range(3):
    np.testing.assert_allclose(Deskew()(images[i:i + 1]).numpy()[0], together[i], atol=1e-6)
  traced = tf.function(Deskew().call, autograph=False)
  np.testing.assert_allclose(traced(tf.constant(images)).numpy(), together, atol=1e-6)


def test_strided_bn_deskew_is_strided_bn_reading_deskewed_images():
  images = tf.constant(np.stack([_slanted_bar(0.4), _slanted_bar(-0.3)])[..., None])
  deskewing = models.create("strided_bn_deskew", 10)
  deskewing(images, training=False)
  plain = models.create("strided_bn", 10)
  plain(images, training=False)
  assert deskewing.count_params() == plain.count_params() == 326_826
  for source, target in zip(deskewing.variables, plain.variables):
    target.assign(source)
  np.testing.assert_allclose(deskewing(images, training=False).numpy(),
                             plain(Deskew()(images), training=False).numpy(), rtol=1e-5, atol=1e-5)


@pytest.fixture
def bfloat16_policy():
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  yield
  keras.mixed_precision.set_global_policy("float32")


def test_deskew_under_mixed_bfloat16_gives_bfloat16_near_the_float32_shear(bfloat16_policy):
  del bfloat16_policy
  image = _slanted_bar(0.4)[None, ..., None]
  out = Deskew()(image)
  assert out.dtype == tf.bfloat16
  np.testing.assert_allclose(tf.cast(out, tf.float32).numpy()[0, ..., 0],
                             _reference(image[0, ..., 0]), atol=1e-2)
