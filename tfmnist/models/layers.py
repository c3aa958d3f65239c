"""Layers shared by tfmnist's models.

Dropout here is stateless: its mask is drawn from the step's seed for the
whole global batch, and each replica keeps its own rows. Keras's own Dropout
keeps its random state in a variable that tf.train.Checkpoint does not save
and that replicas share, so a resumed or a two-replica run would drop other
units than an uninterrupted one-replica run.
"""

import dataclasses

import keras
import tensorflow as tf

from tfmnist.data import augment


@dataclasses.dataclass(frozen=True)
class Noise:
  """Where a replica's random draws come from in one training step.

  Attributes:
    seed: int64 [2] tensor, a function of (run seed, step).
    row_offset: this replica's first row in the global batch (int or tensor).
    global_batch_size: rows of the global batch (int).
  """
  seed: tf.Tensor
  row_offset: object
  global_batch_size: int


class Dropout(keras.layers.Layer):
  """Dropout with masks drawn from a `Noise` (inverted scaling, as Keras's).

  Args:
    rate: fraction of units dropped during training.
    salt: distinguishes this layer's draws from the other Dropout layers'.
  """

  def __init__(self, rate, salt, **kwargs):
    super().__init__(**kwargs)
    self.rate = float(rate)
    self.salt = int(salt)

  def call(self, inputs, training=False, noise=None):
    if not training or self.rate == 0.0:
      return inputs
    if noise is None:
      raise ValueError(f"{self.name}: training needs a Noise for its dropout masks")
    seed = tf.random.experimental.stateless_fold_in(noise.seed, self.salt)
    shape = [noise.global_batch_size] + list(inputs.shape[1:])
    keep = tf.random.stateless_uniform(shape, seed) >= self.rate
    batch = tf.shape(inputs)[0]
    keep = keep[noise.row_offset:noise.row_offset + batch]
    scale = tf.cast(1.0 / (1.0 - self.rate), inputs.dtype)
    return tf.where(keep, inputs * scale, tf.zeros_like(inputs))

  def get_config(self):
    return {**super().get_config(), "rate": self.rate, "salt": self.salt}


def batch_norm(momentum=0.9, **kwargs):
  """BatchNormalization synchronised across replicas.

  Batch statistics over the global batch make N replicas compute what one
  replica computes on the same global batch; on one replica it is the usual
  layer.

  The moving statistics keep 0.9 of their value per step (Keras's default is
  0.99). They start at mean 0 and variance 1 while a first layer's
  activations may have a variance near 0.004: after 318 steps 0.99^318 = 4%
  of the initial 1 was still ten times the true variance, and the model
  scored 64% on validation while it was 98% right on the same images with
  batch statistics. The momentum never changes training, only what
  evaluation and export use.
  """
  return BatchNorm(synchronized=True, momentum=momentum, **kwargs)


class BatchNorm(keras.layers.BatchNormalization):
  """Keras's BatchNormalization, with its one-replica training step as one fused op.

  Keras 3 computes a training step's normalisation as separate reductions,
  casts and arithmetic over the whole activation, and differentiates through
  each of them. With one replica and 4-D channels-last inputs this layer
  calls TensorFlow's fused batch norm instead, whose forward and gradient
  are one op each, and updates the moving statistics as Keras does. With
  several replicas the batch statistics must be all-reduced, so Keras's own
  synchronised path runs. Variables and checkpoints are Keras's.
  """

  # While batch_norm_statistics.recompute measures this layer's input: a
  # function given every input of an inference call. None otherwise.
  statistics_sink = None

  def call(self, inputs, training=None, mask=None):
    if not training and self.statistics_sink is not None:
      self.statistics_sink(inputs)
    if not (training and self.trainable and mask is None and len(inputs.shape) == 4
            and self.axis in (-1, 3) and not self.renorm
            and tf.distribute.get_strategy().num_replicas_in_sync == 1):
      return super().call(inputs, training=training, mask=mask)
    channels = inputs.shape[-1]
    gamma = (tf.cast(tf.convert_to_tensor(self.gamma), tf.float32) if self.scale
             else tf.ones([channels]))
    beta = (tf.cast(tf.convert_to_tensor(self.beta), tf.float32) if self.center
            else tf.zeros([channels]))
    outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        inputs, gamma, beta, epsilon=self.epsilon, is_training=True)
    # The op's variance carries Bessel's correction, n / (n - 1); Keras keeps
    # the plain batch variance.
    count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:3]), tf.float32)
    variance *= (count - 1.0) / count
    for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
      moving.assign(moving * self.momentum + tf.stop_gradient(batch) * (1.0 - self.momentum))
    return tf.cast(outputs, self.compute_dtype)


def conv_bn_relu(filters, kernel, stride=1, padding="valid"):
  """[Conv2D without bias, batch_norm, ReLU]: the BatchNorm networks' unit."""
  return [keras.layers.Conv2D(filters, kernel, stride, padding=padding, use_bias=False),
          batch_norm(), keras.layers.ReLU()]


def linear_then_batch_norm(linear, bn, x, training=False):
  """`bn(linear(x))`, with the BatchNorm folded into the Conv2D or Dense at inference.

  At inference BatchNorm is a per-channel affine map, scale = gamma /
  sqrt(moving_variance + epsilon) and shift = beta - moving_mean * scale.
  Following a linear layer it is the same linear layer with kernel * scale
  and bias * scale + shift: one convolution with a bias, which the CPU
  fuses with the ReLU after it, instead of a convolution followed by
  BatchNorm's casts and arithmetic over its whole output. The fold is taken
  from the variables at every call, so it always matches them. Training,
  and the first call that builds the layers, take the plain path.

  Args:
    linear: a Conv2D or Dense layer without activation.
    bn: the BatchNormalization layer that follows it (channels last).
    x: the input of `linear`.
    training: training mode (batch statistics): no folding.

  A BatchNorm whose input is being measured (its statistics_sink is set)
  takes the plain path too, so that the sink sees that input.
  """
  if (training or getattr(bn, "statistics_sink", None) is not None
      or not (linear.built and bn.built and _foldable(linear, bn, x))):
    return bn(linear(x), training=training)

  def read(variable):
    # Under mixed precision Keras hands out trainable weights already cast to
    # the compute dtype; the fold itself is computed in float32.
    return tf.cast(tf.convert_to_tensor(variable), tf.float32)

  scale = tf.math.rsqrt(read(bn.moving_variance) + bn.epsilon)
  if bn.scale:
    scale *= read(bn.gamma)
  shift = -read(bn.moving_mean) * scale
  if bn.center:
    shift += read(bn.beta)
  if linear.use_bias:
    shift += read(linear.bias) * scale
  dtype = linear.compute_dtype
  kernel = tf.cast(read(linear.kernel) * scale, dtype)
  x = tf.cast(x, dtype)
  if isinstance(linear, keras.layers.Conv2D):
    y = tf.nn.conv2d(x, kernel, strides=linear.strides, padding=linear.padding.upper(),
                     dilations=linear.dilation_rate)
  else:
    y = tf.matmul(x, kernel)
  return tf.cast(tf.nn.bias_add(y, tf.cast(shift, dtype)), bn.compute_dtype)


def _foldable(linear, bn, x):
  """Whether the fold is exact: a plain linear layer, BatchNorm over its last axis."""
  rank = 4 if isinstance(linear, keras.layers.Conv2D) else 2
  if len(x.shape) != rank or bn.renorm or bn.axis not in (-1, rank - 1):
    return False
  if rank == 4:
    return (linear.activation is keras.activations.linear and linear.groups == 1
            and linear.data_format == "channels_last")
  return isinstance(linear, keras.layers.Dense) and linear.activation is keras.activations.linear


class Deskew(keras.layers.Layer):
  """Removes each image's slant: a horizontal shear that leaves no correlation
  between a pixel's row and its column.

  Handwriting leans; deskewing by the image's second moments is the classic
  normalisation of MNIST (LeCun et al. 1998 list deskewed variants of most of
  their classifiers). With the ink's centroid (r0, c0), row variance
  var_r and row-column covariance cov_rc, the slant is a = cov_rc / var_r
  columns per row, and the output pixel (r, c) reads the input at
  (r, c + a (r - r0)), interpolated linearly along the row, zero outside.
  The centroid stays where it was, so shifts the training augmentation made
  survive; only the lean is taken out. A blank image passes unchanged, and
  the shear is limited to `max_slant` columns per row so that a nearly flat
  stroke (var_r near 0) cannot fold the image.

  Inputs are [B, H, W, 1] floats in the layer's compute dtype; the moments
  and the interpolation are computed in float32 and cast back. The layer has
  no variables, so it runs alike in training, evaluation and every export.
  """

  def __init__(self, max_slant=1.0, **kwargs):
    super().__init__(**kwargs)
    self.max_slant = float(max_slant)

  def call(self, inputs):
    images = tf.cast(inputs[..., 0], tf.float32)
    height, width = images.shape[1], images.shape[2]
    rows = tf.range(height, dtype=tf.float32)
    cols = tf.range(width, dtype=tf.float32)
    # Sums, products and gathers only (no einsum): LiteRT has kernels for them all.
    mass = tf.reduce_sum(images, axis=[1, 2])
    inked = mass > 1e-6
    safe_mass = tf.where(inked, mass, 1.0)
    row_mass = tf.reduce_sum(images, axis=2)  # [B, H]
    row_mean = tf.reduce_sum(row_mass * rows, axis=1) / safe_mass
    col_mean = tf.reduce_sum(tf.reduce_sum(images, axis=1) * cols, axis=1) / safe_mass
    d_row = rows[None, :] - row_mean[:, None]  # [B, H]
    d_col = cols[None, :] - col_mean[:, None]  # [B, W]
    row_var = tf.reduce_sum(row_mass * tf.square(d_row), axis=1) / safe_mass
    covariance = tf.reduce_sum(images * d_row[:, :, None] * d_col[:, None, :],
                               axis=[1, 2]) / safe_mass
    slant = covariance / tf.maximum(row_var, 1e-6)
    slant = tf.where(inked, tf.clip_by_value(slant, -self.max_slant, self.max_slant), 0.0)
    # Output column n of row h reads input column n + slant * d_row[h] of the
    # same row: the augmentation's sampler, with whole-pixel rows, is linear
    # interpolation along the row, zero beyond the edges.
    source = cols[None, None, :] + slant[:, None, None] * d_row[:, :, None]  # [B, H, W]
    same_row = tf.broadcast_to(rows[None, :, None], tf.shape(source))
    deskewed = augment.sample_bilinear(images[..., None], source, same_row)
    return tf.cast(deskewed, inputs.dtype)

  def get_config(self):
    return {**super().get_config(), "max_slant": self.max_slant}
