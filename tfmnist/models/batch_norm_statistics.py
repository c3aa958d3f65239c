"""BatchNorm statistics measured as inference sees the layers' inputs.

Training leaves each BatchNorm's moving mean and variance as an average of
its last batches' statistics: with momentum 0.9, mostly the last ten
batches, taken with dropout on and over augmented images. Inference runs
with dropout off on images as they come, so a layer after a dropout sees
less variance than its statistics say (the variance shift of Li et al.
2019, "Understanding the disharmony between dropout and batch
normalization"), and every layer's statistics carry the noise of a few
thousand images.

`recompute` replaces them by the exact mean and variance of each layer's
input over a set of images, in inference mode. The layers are measured one
at a time in the order the model calls them, each with the recomputed
statistics of the layers before it in place, so that every layer ends up
with the statistics of exactly what it sees at inference. Measuring a layer
is one inference pass over the images.
"""

import numpy as np
import tensorflow as tf

from tfmnist.data import pixels
from tfmnist.models.layers import BatchNorm


def batch_norm_layers(model):
  """The model's BatchNorm layers in the order an inference call reaches them."""
  candidates = [layer for layer in model._flatten_layers(include_self=False)  # pylint: disable=protected-access
                if isinstance(layer, BatchNorm)]
  order = []
  for layer in candidates:
    layer.statistics_sink = lambda inputs, layer=layer: order.append(layer)
  try:
    model(tf.zeros([1, 28, 28, 1]), training=False)
  finally:
    for layer in candidates:
      layer.statistics_sink = None
  return list(dict.fromkeys(order))  # A layer called twice counts where first called.


def _measure_fn(model, layer):
  """tf.function: uint8 images -> (rows, mean [C], variance [C]) of `layer`'s input."""

  @tf.function(reduce_retracing=True)
  def measure(images):
    seen = []

    def sink(inputs):
      inputs = tf.cast(inputs, tf.float32)
      axes = list(range(inputs.shape.rank - 1))
      mean, variance = tf.nn.moments(inputs, axes)
      rows = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float64)
      seen.append((rows, mean, variance))

    layer.statistics_sink = sink
    try:
      model(pixels.normalize(images), training=False)
    finally:
      layer.statistics_sink = None
    if len(seen) != 1:
      raise ValueError(f"{layer.name}: called {len(seen)} times in one inference call; "
                       "its statistics cannot be measured alone")
    return seen[0]

  return measure


def _combine(total, batch):
  """Chan et al.'s pairwise update of (rows, mean, M2) with one batch's moments."""
  rows, mean, m2 = total
  batch_rows, batch_mean, batch_variance = (np.asarray(v, np.float64) for v in batch)
  delta = batch_mean - mean
  new_rows = rows + batch_rows
  mean = mean + delta * (batch_rows / new_rows)
  m2 = m2 + batch_variance * batch_rows + delta ** 2 * rows * batch_rows / new_rows
  return new_rows, mean, m2


def recompute(model, images, batch_size=1000, on_layer=None):
  """Sets every BatchNorm's moving statistics to those of its inference-time input.

  Args:
    model: a built tfmnist model (any dtype policy; the statistics are
      measured in the precision it computes in).
    images: uint8 images [N, 28, 28, 1] (numpy or tensor), as the records hold them.
    batch_size: images per inference call; the result does not depend on it
      beyond float rounding.
    on_layer: called with (layers measured, layers in all): once with 0
      before the first layer, then after each.

  Returns:
    The number of BatchNorm layers recomputed.

  Raises:
    ValueError: no images.
  """
  images = np.asarray(images)
  if len(images) == 0:
    raise ValueError("recomputing BatchNorm statistics needs at least one image")
  layers = batch_norm_layers(model)
  if on_layer is not None:
    on_layer(0, len(layers))
  for index, layer in enumerate(layers):
    measure = _measure_fn(model, layer)
    channels = layer.moving_mean.shape[0]
    total = (0.0, np.zeros(channels), np.zeros(channels))
    for start in range(0, len(images), batch_size):
      total = _combine(total, measure(tf.constant(images[start:start + batch_size])))
    rows, mean, m2 = total
    layer.moving_mean.assign(mean.astype(np.float32))
    layer.moving_variance.assign((m2 / rows).astype(np.float32))
    if on_layer is not None:
      on_layer(index + 1, len(layers))
  return len(layers)
