"""Pixel values: uint8 in [0, 255] as stored, floats in [0, 1] as models see them.

`normalize` is the conversion every model input goes through (training,
validation and the exported SavedModel); `to_unit` and `to_uint8` convert
numpy images for everything around the model (figures, photos, robustness
sweeps), so no other module divides by 255.
"""

import numpy as np
import tensorflow as tf

MAX_VALUE = 255


def normalize(images, dtype=tf.float32):
  """uint8 images in [0, 255] to `dtype` in [0, 1]; adds the channel axis if missing.

  The one normalisation of tfmnist: training, evaluation and the exported
  SavedModel all call it.
  """
  images = tf.convert_to_tensor(images)
  if images.shape.rank == 3:
    images = images[..., None]
  # A product, not a quotient: grappler rewrites x / c into x * (1 / c) inside
  # tf.function but not eagerly, which made the two differ by one ulp.
  return tf.cast(images, dtype) * tf.constant(1.0 / MAX_VALUE, dtype)


def to_unit(images):
  """numpy images as float32 in [0, 1]: uint8 is scaled, floats are checked.

  Raises:
    ValueError: neither uint8 nor floats, or floats outside [0, 1] (or NaN).
  """
  images = np.asarray(images)
  if images.dtype == np.uint8:
    return images.astype(np.float32) / MAX_VALUE
  if not np.issubdtype(images.dtype, np.floating):
    raise ValueError(f"expected uint8 pixels or floats in [0, 1], got dtype {images.dtype}")
  if images.size:
    low, high = float(np.min(images)), float(np.max(images))
    if not (0.0 <= low and high <= 1.0):  # Also rejects NaN.
      raise ValueError(f"expected float pixels in [0, 1], got values in [{low}, {high}]")
  return images.astype(np.float32)


def to_uint8(images):
  """Float images in [0, 1] (values outside are clipped) as rounded uint8 pixels."""
  return np.round(np.clip(np.asarray(images, np.float32), 0.0, 1.0) * MAX_VALUE).astype(np.uint8)
