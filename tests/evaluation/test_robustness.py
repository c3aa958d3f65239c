"""Tests of evaluation.robustness: the perturbations and the sweeps over them."""

import numpy as np
import pytest

import train_fixtures as tfx
from tfmnist.evaluation import robustness


# ----------------------------------------------------------------------------
# Perturbations
# ----------------------------------------------------------------------------


def _digits(count=4):
  return tfx.synthetic_split(count, seed=3)[0][..., None]


def test_add_noise_factor_zero_is_identity():
  """No noise leaves the images exactly as they are."""
  images = _digits()
  np.testing.assert_array_equal(robustness.add_noise(images, 0, seed=5), images)


def test_add_noise_is_seeded():
  """The same seed gives the same noise, another seed other noise."""
  images = _digits()
  first = robustness.add_noise(images, 0.3, seed=5)
  np.testing.assert_array_equal(robustness.add_noise(images, 0.3, seed=5), first)
  assert not np.array_equal(robustness.add_noise(images, 0.3, seed=6), first)
  np.testing.assert_array_equal(images, _digits())  # The input is left alone.


def test_add_noise_std_grows_with_the_factor():
  """On mid-grey images the noise std is the factor (pixels in [0, 1]); uint8 output."""
  grey = np.full((8, 28, 28, 1), 128, np.uint8)
  stds = []
  for factor in (0.05, 0.1, 0.2):
    noisy = robustness.add_noise(grey, factor, seed=0)
    assert noisy.dtype == np.uint8 and noisy.shape == grey.shape
    stds.append(float(np.std(noisy.astype(np.float64) / 255.0)))
    assert stds[-1] == pytest.approx(factor, rel=0.1)
  assert stds == sorted(stds)


def test_add_noise_clips_instead_of_wrapping():
  """White plus noise saturates at 255 (about half the pixels), black at 0."""
  for value, end in ((255, 255), (0, 0)):
    flat = np.full((8, 28, 28, 1), value, np.uint8)
    noisy = robustness.add_noise(flat, 0.3, seed=1)
    assert noisy.dtype == np.uint8
    at_end = float(np.mean(noisy == end))
    assert 0.45 < at_end < 0.55, (value, at_end)
    # Wrapped values would land at the other end of the range (half of them);
    # noise of std 0.3 goes that far (2.6 std) for 0.5% of the pixels.
    assert float(np.mean(np.abs(noisy.astype(int) - value) > 200)) < 0.02


def _asymmetric_image():
  """One [1, 28, 28, 1] image with no rotational symmetry: an L and a dot."""
  image = np.zeros((1, 28, 28, 1), np.uint8)
  image[0, 6:20, 8:11] = 255  # Vertical stroke.
  image[0, 17:20, 8:19] = 180  # Foot to the right.
  image[0, 7:9, 16:18] = 90  # A dot at the top right.
  return image


def test_rotate_90_degrees_is_counter_clockwise():
  """rotate(+90) is np.rot90 (counter-clockwise as displayed), rotate(-90) the other way."""
  image = _asymmetric_image()
  inner = (slice(None), slice(3, 25), slice(3, 25))
  for degrees, k in ((90, 1), (-90, -1)):
    turned = robustness.rotate(image, degrees)
    assert turned.dtype == np.uint8 and turned.shape == image.shape
    expected = np.rot90(image, k, axes=(1, 2))
    difference = np.abs(turned.astype(int) - expected.astype(int))
    assert difference[inner].max() <= 1, (degrees, difference[inner].max())
    wrong_way = np.rot90(image, -k, axes=(1, 2))
    assert np.abs(turned.astype(int) - wrong_way.astype(int))[inner].max() > 100
  np.testing.assert_array_equal(robustness.rotate(image, 0), image)


def test_rotate_small_angle_keeps_the_ink():
  """A small turn about the centre moves pixels but keeps the total ink nearly the same."""
  image = _asymmetric_image()
  turned = robustness.rotate(image, 10)
  assert not np.array_equal(turned, image)
  total = float(image.astype(float).sum())
  assert float(turned.astype(float).sum()) == pytest.approx(total, rel=0.05)


def test_shift_each_moves_content_with_black_fill():
  """Row 0 of shift_each moves right: the content as np.roll, black where it left."""
  image = _asymmetric_image()
  moved = robustness.shift_each(image, 2)
  np.testing.assert_array_equal(moved[:1], np.roll(image[:1], 2, axis=2))


# ----------------------------------------------------------------------------
# Robustness sweeps
# ----------------------------------------------------------------------------


def _bar_images():
  """Horizontal bars at rows 6..21 (label = the row), columns 6..21, over black."""
  rows = np.arange(6, 22)
  images = np.zeros((len(rows), 28, 28, 1), np.uint8)
  for i, row in enumerate(rows):
    images[i, row, 6:22] = 255
  return images, rows


def _brightest_row(images):
  """A fake model: one-hot [N, 28] of the row with the most ink."""
  rows = np.asarray(images)[..., 0].astype(np.float64).sum(axis=2).argmax(axis=1)
  return np.eye(28, dtype=np.float32)[rows]


def test_robustness_with_a_rule_based_model():
  """The sweeps' levels and accuracies, computed by hand for a known rule."""
  images, labels = _bar_images()
  calls = []

  def predict(batch):
    calls.append(len(batch))
    return _brightest_row(batch)

  result = robustness.robustness(predict, images, labels, seed=3)
  assert sorted(result) == ["gaussian noise", "rotation", "shift"]
  assert result["gaussian noise"]["levels"] == list(robustness.NOISE_FACTORS)
  assert result["rotation"]["levels"] == list(robustness.ROTATION_DEGREES)
  assert result["shift"]["levels"] == list(robustness.SHIFT_PIXELS)
  for sweep in result.values():
    assert isinstance(sweep["unit"], str) and sweep["unit"]
    assert len(sweep["accuracy"]) == len(sweep["levels"])

  def accuracy(perturbed):
    return float(np.mean(_brightest_row(perturbed).argmax(-1) == labels))

  # The rule reads every clean bar right.
  for sweep in result.values():
    assert sweep["accuracy"][sweep["levels"].index(0)] == 1.0
  assert result["gaussian noise"]["accuracy"] == pytest.approx(
      [accuracy(robustness.add_noise(images, f, 3)) for f in robustness.NOISE_FACTORS])
  assert result["rotation"]["accuracy"] == pytest.approx(
      [accuracy(robustness.rotate(images, d)) for d in robustness.ROTATION_DEGREES])
  # A quarter of the bars go each way. Left and right keep the row, up and
  # down move it: half right at every shift.
  assert result["shift"]["accuracy"] == pytest.approx([1.0, 0.5, 0.5, 0.5, 0.5])
  # One pass per sweep point: the clean pass, 10 noise levels, 8 rotations, 4 shifts.
  assert calls == [len(images)] * 23


def test_robustness_reuses_the_clean_probabilities():
  """Given the clean predictions, the sweeps never predict the clean images again."""
  images, labels = _bar_images()
  seen = []

  def predict(batch):
    seen.append(batch.copy())
    return _brightest_row(batch)

  clean = np.eye(28, dtype=np.float32)[np.where(labels % 2 == 0, labels, 0)]
  result = robustness.robustness(predict, images, labels, seed=3, clean_probabilities=clean)
  assert len(seen) == 22
  assert not any(np.array_equal(batch, images) for batch in seen)
  # The given probabilities, not the model, score level 0: half the labels are odd.
  for sweep in result.values():
    assert sweep["accuracy"][sweep["levels"].index(0)] == 0.5


def test_shift_each_moves_a_quarter_of_the_rows_each_way():
  image = np.zeros((28, 28, 1), np.uint8)
  image[10, 12] = 255
  moved = robustness.shift_each(np.stack([image] * 8), 3)
  ink = [tuple(np.argwhere(m[..., 0])[0]) for m in moved]
  assert ink == [(10, 15), (10, 9), (13, 12), (7, 12)] * 2


def test_robustness_noise_follows_the_seed():
  """Another seed gives other noise, so the noise sweep of a noise-sensitive rule changes."""
  images, labels = _bar_images()
  images = (images // 4).astype(np.uint8)  # Faint bars: noise often hides them.
  sweeps = [robustness.robustness(_brightest_row, images, labels, seed=s)["gaussian noise"]
            for s in (0, 0, 1)]
  assert sweeps[0] == sweeps[1]
  assert sweeps[0]["accuracy"] != sweeps[2]["accuracy"]



def test_sweep_subset_is_stratified_seeded_and_bounded():
  """The sweep images keep each class's share, depend on the seed only, and cap at the split."""
  labels = np.repeat(np.arange(4), [100, 200, 300, 400])
  chosen = robustness.sweep_subset(labels, 100, seed=1)
  assert len(chosen) == 100 and np.all(np.diff(chosen) > 0)
  np.testing.assert_array_equal(np.bincount(labels[chosen]), [10, 20, 30, 40])
  np.testing.assert_array_equal(chosen, robustness.sweep_subset(labels, 100, seed=1))
  assert not np.array_equal(chosen, robustness.sweep_subset(labels, 100, seed=2))
  np.testing.assert_array_equal(robustness.sweep_subset(labels, 0), np.arange(1000))
  np.testing.assert_array_equal(robustness.sweep_subset(labels, 5000), np.arange(1000))
