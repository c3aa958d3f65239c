"""Tests of tfmnist.augment: each transform, determinism, geometry and replica independence.

Whether labels stay untouched is a property of the train step, tested there.
"""

import dataclasses
import math

import numpy as np
import pytest
import tensorflow as tf

from tfmnist.data import augment
from tfmnist.data.augment import AugmentConfig

SEED = 17
BATCH = 8

# One setting per transform, strong enough to change every image.
TRANSFORMS = {
    "rotation": AugmentConfig(rotation_degrees=30),
    "zoom": AugmentConfig(zoom=0.3),
    "shift": AugmentConfig(shift_x=0.2, shift_y=0.2),
    "shear": AugmentConfig(shear_degrees=20),
    "elastic": AugmentConfig(elastic_alpha=34, elastic_sigma=4),
    "erase": AugmentConfig(erase_probability=1.0),
    "noise": AugmentConfig(noise_factor=0.3),
    "blur_sharpen": AugmentConfig(blur_strength=1.5),
    "flips": AugmentConfig(flip_horizontal=True, flip_vertical=True, force_flips=True),
    "all": AugmentConfig(rotation_degrees=15, zoom=0.1, shift_x=0.1, shift_y=0.1,
                         shear_degrees=10, elastic_alpha=20, elastic_sigma=4,
                         erase_probability=0.5, noise_factor=0.1, blur_strength=0.5,
                         flip_horizontal=True, flip_vertical=True, force_flips=True),
}
# The Keras ImageDataGenerator setting of the seed notebooks.
NOTEBOOK = AugmentConfig(rotation_degrees=10, zoom=0.1, shift_x=0.1, shift_y=0.1)


def _digits(batch=BATCH, seed=0):
  """float32 [B, 28, 28, 1] in [0, 1]: random strokes inside the central 16x16, rest 0."""
  rng = np.random.default_rng(seed)
  images = np.zeros((batch, 28, 28, 1), np.float32)
  images[:, 6:22, 6:22, 0] = (rng.random((batch, 16, 16)) > 0.6) * rng.uniform(
      0.5, 1.0, (batch, 16, 16))
  images[:, 6:22, 6:22, 0][rng.random((batch, 16, 16)) > 0.9] = 1.0
  return tf.constant(images)


def _run(images, config, step=0, seed=SEED, **kwargs):
  return augment.augment(images, config, seed, tf.constant(step, tf.int64), **kwargs).numpy()


def _one(value):
  return tf.constant([value], tf.float32)


def _matrix(angle_radians=0.0, shift_x=0.0, shift_y=0.0):
  return augment.affine_matrices(_one(angle_radians), _one(0.0), _one(1.0), _one(1.0),
                                 _one(shift_x), _one(shift_y))


def _both_paths(image, matrices):
  """(fused kernel, bilinear sampler with a zero displacement field) of one [H, W] image."""
  images = tf.constant(image[None, ..., None], tf.float32)
  kernel = augment.transform(images, matrices)
  sampler = augment.transform(images, matrices, displacement=tf.zeros([1, 28, 28, 2]))
  return kernel.numpy()[0, ..., 0], sampler.numpy()[0, ..., 0]


# ----------------------------------------------------------------------------
# The augmentation of a batch
# ----------------------------------------------------------------------------


def test_all_off_returns_the_images_unchanged():
  images = _digits()
  assert not AugmentConfig().enabled
  np.testing.assert_array_equal(_run(images, AugmentConfig()), images.numpy())


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_each_transform_keeps_shape_dtype_and_unit_range(name):
  images = tf.constant(np.random.default_rng(1).random((BATCH, 28, 28, 1)), tf.float32)
  out = _run(images, TRANSFORMS[name], step=3)
  assert out.shape == images.shape and out.dtype == np.float32
  assert out.min() >= 0.0 and out.max() <= 1.0
  assert not np.allclose(out, images.numpy(), atol=1e-3)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_low_precision_input_keeps_its_dtype(dtype):
  out = augment.augment(tf.cast(_digits(), dtype), TRANSFORMS["all"], SEED, 1)
  assert out.dtype == dtype
  values = tf.cast(out, tf.float32).numpy()
  assert values.min() >= 0.0 and values.max() <= 1.0


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_randomness_is_a_function_of_seed_and_step(name):
  images, config = _digits(), TRANSFORMS[name]
  first = _run(images, config, step=5)
  np.testing.assert_array_equal(first, _run(images, config, step=5))
  assert not np.array_equal(first, _run(images, config, step=6))
  assert not np.array_equal(first, _run(images, config, step=5, seed=SEED + 1))


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_eager_and_tf_function_agree(name):
  images, config = _digits(), TRANSFORMS[name]

  @tf.function
  def traced(images, step):
    return augment.augment(images, config, SEED, step)

  for step in (0, 9):
    np.testing.assert_allclose(traced(images, tf.constant(step, tf.int64)).numpy(),
                               _run(images, config, step=step), atol=1e-5)
  assert traced.experimental_get_tracing_count() == 1  # The step is a tensor: no retrace.


def test_replicas_augment_their_rows_as_the_global_batch_would():
  images, config = _digits(), TRANSFORMS["all"]
  whole = _run(images, config, step=4)
  half = BATCH // 2
  parts = [_run(images[offset:offset + half], config, step=4, replica_offset=offset,
                global_batch_size=BATCH) for offset in (0, half)]
  np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-6)

  # In the train step the offset is a tensor (replica id times batch).
  @tf.function
  def replica(images, offset):
    return augment.augment(images, config, SEED, 4, replica_offset=offset,
                           global_batch_size=BATCH)

  second = replica(images[half:], tf.constant(half))
  assert second.shape == (half, 28, 28, 1)
  np.testing.assert_allclose(second.numpy(), whole[half:], atol=1e-5)


# ----------------------------------------------------------------------------
# Geometry
# ----------------------------------------------------------------------------


def test_rotation_by_90_degrees_is_np_rot90_counter_clockwise():
  image = np.zeros((28, 28), np.float32)
  image[4:20, 6:9] = 1.0  # An L: a vertical bar and a foot to its right.
  image[17:20, 9:18] = 0.6
  image[2, 25] = 0.3
  for path in _both_paths(image, _matrix(math.pi / 2)):
    np.testing.assert_allclose(path, np.rot90(image), atol=1e-5)
  for path in _both_paths(image, _matrix(-math.pi / 2)):
    np.testing.assert_allclose(path, np.rot90(image, -1), atol=1e-5)


def test_integer_shift_is_a_roll_with_zero_fill():
  image = np.random.default_rng(2).random((28, 28)).astype(np.float32)
  expected = np.roll(image, (-2, 3), axis=(0, 1))  # 2 pixels up, 3 to the right.
  expected[-2:, :] = 0.0
  expected[:, :3] = 0.0
  for path in _both_paths(image, _matrix(shift_x=3.0, shift_y=-2.0)):
    np.testing.assert_allclose(path, expected, atol=1e-6)


def _mass_centre(images):
  """(row, column) centre of mass of each of [B, H, W, 1] images."""
  weights = images[..., 0]
  rows, cols = np.meshgrid(np.arange(28), np.arange(28), indexing="ij")
  total = weights.sum(axis=(1, 2))
  return np.stack([(weights * rows).sum(axis=(1, 2)) / total,
                   (weights * cols).sum(axis=(1, 2)) / total], -1)


def test_notebook_setting_changes_images_but_keeps_them_in_place():
  images = _digits(batch=32)
  out = _run(images, NOTEBOOK, step=1)
  assert np.all(np.abs(out - images.numpy()).max(axis=(1, 2, 3)) > 0.1)
  moved = np.abs(_mass_centre(out) - _mass_centre(images.numpy()))
  assert moved.max() <= 0.1 * 28 + 2
  assert moved.max() > 0.5  # The shifts do move the digits.


def test_zoom_above_one_magnifies():
  image = np.zeros((28, 28), np.float32)
  image[12:16, 12:16] = 1.0
  matrices = augment.affine_matrices(_one(0.0), _one(0.0), _one(2.0), _one(2.0),
                                     _one(0.0), _one(0.0))
  kernel, sampler = _both_paths(image, matrices)
  assert kernel.sum() == pytest.approx(4 * image.sum(), rel=0.05)
  np.testing.assert_allclose(kernel, sampler, atol=1e-5)


# ----------------------------------------------------------------------------
# Pixel transforms
# ----------------------------------------------------------------------------


def test_noise_has_the_configured_standard_deviation():
  images = tf.fill([BATCH, 28, 28, 1], 0.5)
  for factor in (0.02, 0.05):
    delta = _run(images, AugmentConfig(noise_factor=factor)) - 0.5
    assert delta.std() == pytest.approx(factor, rel=0.05)
    assert abs(delta.mean()) < factor / 10


def test_erase_blanks_one_rectangle_within_the_area_range():
  images = tf.ones([16, 28, 28, 1])
  config = AugmentConfig(erase_probability=1.0, erase_area=(0.05, 0.2))
  out = _run(images, config)[..., 0]
  for image in out:
    rows, cols = np.nonzero(image == 0.0)
    assert rows.size > 0
    box = image[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
    assert np.all(box == 0.0)  # One solid rectangle...
    assert np.all(image[image != 0.0] == 1.0)  # ...and nothing else touched.
    area = box.size / (28 * 28)
    assert 0.03 <= area <= 0.25  # The configured range, give or take the pixel edges.


def test_erase_probability_is_per_image():
  out = _run(tf.ones([64, 28, 28, 1]), AugmentConfig(erase_probability=0.5))
  erased = (out == 0.0).any(axis=(1, 2, 3))
  assert 10 < erased.sum() < 54


def test_blur_and_sharpen_move_along_the_gaussian_blur():
  images = _digits(batch=16)
  strength = 0.8
  out = _run(images, AugmentConfig(blur_strength=strength), step=2)
  blurred = augment.gaussian_blur(images, 1.0).numpy()
  x = images.numpy()
  ts = []
  for image, result, blur in zip(x, out, blurred):
    inside = (result > 0.0) & (result < 1.0)  # Pixels the final clip left alone.
    direction = (blur - image)[inside]
    t = direction @ (result - image)[inside] / (direction @ direction)
    unclipped = np.clip(image + t * (blur - image), 0.0, 1.0)
    np.testing.assert_allclose(result, unclipped, atol=1e-5)
    ts.append(t)
  ts = np.array(ts)
  assert np.all(np.abs(ts) <= strength + 1e-4)
  assert (ts > 0).any() and (ts < 0).any()  # Both blurred and sharpened images.


def test_gaussian_kernel_is_normalised_and_symmetric():
  kernel = augment.gaussian_kernel(1.5)
  assert len(kernel) == 2 * math.ceil(4.5) + 1
  assert sum(kernel) == pytest.approx(1.0)
  assert kernel == kernel[::-1]


def test_forced_flips_mirror_some_images_and_leave_the_others():
  images = _digits(batch=16)
  x = images.numpy()
  out = _run(images, AugmentConfig(flip_horizontal=True, force_flips=True))
  mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)]
  same = [np.array_equal(o, i) for o, i in zip(out, x)]
  assert all(m or s for m, s in zip(mirrored, same))
  assert any(mirrored) and any(same)
  out = _run(images, AugmentConfig(flip_vertical=True, force_flips=True))
  assert all(np.array_equal(o, i) or np.array_equal(o, i[::-1]) for o, i in zip(out, x))


# ----------------------------------------------------------------------------
# validate
# ----------------------------------------------------------------------------


@pytest.mark.parametrize("flip", ["flip_horizontal", "flip_vertical"])
def test_validate_refuses_flips_on_digits_unless_forced(flip):
  config = AugmentConfig(**{flip: True})
  with pytest.raises(ValueError, match="flips are refused.*force_flips"):
    augment.validate(config, digits=True)
  augment.validate(dataclasses.replace(config, force_flips=True), digits=True)
  augment.validate(config, digits=False)


@pytest.mark.parametrize("fields, message", [
    ({"zoom": 1.5}, "zoom must be in \\[0, 1\\), got 1.5"),
    ({"rotation_degrees": -5.0}, "rotation_degrees must be >= 0, got -5.0"),
    ({"erase_area": (0.5, 0.2)}, "erase_area .* got \\(0.5, 0.2\\)"),
    ({"erase_probability": 1.2}, "erase_probability .* got 1.2"),
    ({"noise_factor": -0.1}, "noise_factor must be >= 0, got -0.1"),
    ({"elastic_sigma": 0.0}, "elastic_sigma and blur_sigma must be > 0"),
])
def test_validate_rejects_bad_values_naming_them(fields, message):
  with pytest.raises(ValueError, match=message):
    augment.validate(AugmentConfig(**fields), digits=False)


def test_validate_accepts_the_notebook_setting_and_every_transform():
  augment.validate(NOTEBOOK, digits=True)
  for config in TRANSFORMS.values():
    augment.validate(config, digits=True)


def test_training_inputs_leave_labels_untouched():
  rng = np.random.default_rng(3)
  batch = {"image": tf.constant(rng.integers(0, 256, (8, 28, 28, 1)), tf.uint8),
           "label": tf.constant(rng.integers(0, 10, 8), tf.int32)}
  config = augment.AugmentConfig(rotation_degrees=30, zoom=0.2, shift_x=0.2, shift_y=0.2,
                                 erase_probability=1.0, noise_factor=0.3)
  images, labels = augment.training_inputs(batch, config, seed=1, step=tf.constant(5))
  np.testing.assert_array_equal(labels.numpy(), batch["label"].numpy())
  assert labels.dtype == tf.int32
  assert images.dtype == tf.float32 and images.shape == (8, 28, 28, 1)
  assert not np.allclose(images.numpy(), batch["image"].numpy() / 255.0)


def test_noise_probability_keeps_the_other_images_clean_and_the_noise_unchanged():
  images = tf.fill([64, 28, 28, 1], 0.5)
  always = augment.augment(images, augment.AugmentConfig(noise_factor=0.3), seed=3, step=7)
  half = augment.augment(images, augment.AugmentConfig(noise_factor=0.3, noise_probability=0.5),
                         seed=3, step=7)

  clean = np.all(half.numpy() == 0.5, axis=(1, 2, 3))
  assert 16 <= clean.sum() <= 48  # About half of 64, never all or none.
  # The images that got noise got exactly the noise of probability 1.
  np.testing.assert_array_equal(half.numpy()[~clean], always.numpy()[~clean])
  with pytest.raises(ValueError, match="noise_probability must be in"):
    augment.validate(augment.AugmentConfig(noise_probability=1.5), digits=True)
