"""Data augmentation that runs inside the train step, on the model's device.

Every transform is vectorised over the batch and stateless: its randomness is
drawn from (seed, step) only, so a re-run or a resumed run augments the same
images the same way. The random draws are made for the whole global batch and
each replica keeps its own rows (`replica_offset`), so the augmentation of an
image does not depend on how many replicas share the batch.

Geometry (rotation, zoom, shift, shear and elastic distortion) is fused into
one map from output to input coordinates and one bilinear resampling, so the
image is interpolated once however many transforms are on.

The building blocks are the image operations of tfmnist: the robustness
sweeps (`rotate`, `translate`, `gaussian_noise`) use the same ops as
training's augmentation.
"""

import dataclasses
import math

import tensorflow as tf

from tfmnist.data import pixels

# Folded into the seed so each transform draws independent numbers.
_AFFINE, _ELASTIC, _ERASE, _BLUR, _NOISE, _FLIP = range(6)


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
  """Augmentation settings; every default is "off".

  The Keras ImageDataGenerator settings of the seed notebooks (rotation_range
  10, zoom_range 0.1, width/height_shift_range 0.1) are
  `AugmentConfig(rotation_degrees=10, zoom=0.1, shift_x=0.1, shift_y=0.1)`.

  Attributes:
    rotation_degrees: rotation drawn uniformly from [-r, r] degrees.
    zoom: scale drawn per axis from [1 - zoom, 1 + zoom].
    shift_x: horizontal shift drawn from [-s, s] times the image width.
    shift_y: vertical shift drawn from [-s, s] times the image height.
    shear_degrees: shear angle drawn from [-s, s] degrees.
    elastic_alpha: elastic distortion strength in pixels (Simard et al. 2003
      use 34 with sigma 4 on MNIST); 0 turns it off.
    elastic_sigma: smoothing of the displacement field, in pixels.
    erase_probability: chance that an image gets one erased rectangle.
    erase_area: (min, max) fraction of the image area erased.
    noise_factor: std of additive Gaussian noise on [0, 1] images; the result
      is clipped to [0, 1].
    noise_probability: chance that an image gets that noise (1: every image;
      less keeps some images clean, for a model that must read both).
    blur_strength: each image is blurred (t > 0) or sharpened (t < 0) by t
      drawn from [-s, s]: out = x + t * (gaussian_blur(x) - x).
    blur_sigma: sigma of that Gaussian, in pixels.
    flip_horizontal: mirror left-right with probability 1/2.
    flip_vertical: mirror top-bottom with probability 1/2.
    force_flips: allow flips on digit datasets, where a mirrored class is
      another class or none.
  """
  rotation_degrees: float = 0.0
  zoom: float = 0.0
  shift_x: float = 0.0
  shift_y: float = 0.0
  shear_degrees: float = 0.0
  elastic_alpha: float = 0.0
  elastic_sigma: float = 4.0
  erase_probability: float = 0.0
  erase_area: tuple = (0.02, 0.2)
  noise_factor: float = 0.0
  noise_probability: float = 1.0
  blur_strength: float = 0.0
  blur_sigma: float = 1.0
  flip_horizontal: bool = False
  flip_vertical: bool = False
  force_flips: bool = False

  @property
  def affine(self):
    return any((self.rotation_degrees, self.zoom, self.shift_x, self.shift_y,
                self.shear_degrees))

  @property
  def enabled(self):
    return any((self.affine, self.elastic_alpha, self.erase_probability,
                self.noise_factor, self.blur_strength, self.flip_horizontal,
                self.flip_vertical))


def validate(config, digits):
  """Checks `config` against a dataset; raises ValueError with the offending value.

  Args:
    config: AugmentConfig.
    digits: True for datasets whose mirrored images are not the same class
      (info.json "digits"): flips are refused there unless forced.
  """
  if (config.flip_horizontal or config.flip_vertical) and digits and not config.force_flips:
    raise ValueError("flips are refused on a digit/character dataset (a mirrored 2 is not a "
                     "2); pass force_flips to use them anyway")
  if not 0 <= config.zoom < 1:
    raise ValueError(f"zoom must be in [0, 1), got {config.zoom}")
  for name in ("erase_probability", "noise_probability"):
    if not 0 <= getattr(config, name) <= 1:
      raise ValueError(f"{name} must be in [0, 1], got {getattr(config, name)}")
  low, high = config.erase_area
  if not 0 < low <= high <= 1:
    raise ValueError(f"erase_area must satisfy 0 < min <= max <= 1, got {config.erase_area}")
  for name in ("rotation_degrees", "shift_x", "shift_y", "shear_degrees", "elastic_alpha",
               "noise_factor", "blur_strength"):
    if getattr(config, name) < 0:
      raise ValueError(f"{name} must be >= 0, got {getattr(config, name)}")
  if config.elastic_sigma <= 0 or config.blur_sigma <= 0:
    raise ValueError("elastic_sigma and blur_sigma must be > 0")


# ----------------------------------------------------------------------------
# Building blocks (usable on their own, e.g. by evaluation's robustness tests)
# ----------------------------------------------------------------------------


def _uniform(seed, shape, low, high):
  return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high)


def affine_matrices(angle_radians, shear_radians, zoom_x, zoom_y, shift_x, shift_y):
  """Per-image 2x3 matrices mapping output pixel offsets to input offsets.

  All arguments are [B] tensors; shifts in pixels. Coordinates are (x, y)
  relative to the image centre, y pointing down, and a positive angle turns
  the content counter-clockwise as it is displayed.

  Returns:
    [B, 2, 3] float32: input = M[:, :, :2] @ output + M[:, :, 2].
  """
  # Inverse of: content = T(shift) R(angle) Shear Zoom (source). Sampling
  # needs the source position of each output pixel, so invert each factor in
  # reverse order.
  cos, sin = tf.cos(angle_radians), tf.sin(angle_radians)
  tan = tf.tan(shear_radians)
  # R^-1 for a counter-clockwise turn on screen (y down) is [[c, -s], [s, c]].
  r00, r01, r10, r11 = cos, -sin, sin, cos
  # Shear^-1 (x += tan * y) is x -= tan * y; Zoom^-1 divides.
  m00 = r00 / zoom_x - tan * r10 / zoom_x
  m01 = r01 / zoom_x - tan * r11 / zoom_x
  m10 = r10 / zoom_y
  m11 = r11 / zoom_y
  tx = -(m00 * shift_x + m01 * shift_y)
  ty = -(m10 * shift_x + m11 * shift_y)
  return tf.stack([tf.stack([m00, m01, tx], -1), tf.stack([m10, m11, ty], -1)], 1)


def _grid(height, width):
  ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32) - (height - 1) / 2,
                       tf.range(width, dtype=tf.float32) - (width - 1) / 2, indexing="ij")
  return xs, ys


def sample_bilinear(images, xs, ys):
  """Samples images at input pixel coordinates, zero outside the image.

  Args:
    images: [B, H, W, C] float.
    xs, ys: [B, H, W] absolute input coordinates (pixel centres are integers).

  Returns:
    [B, H, W, C] images.
  """
  batch, height, width, channels = images.shape
  batch = tf.shape(images)[0] if batch is None else batch
  flat = tf.reshape(images, [-1, channels])
  base = tf.reshape(tf.range(batch) * (height * width), [-1, 1, 1])
  x0, y0 = tf.floor(xs), tf.floor(ys)
  wx, wy = xs - x0, ys - y0
  x0, y0 = tf.cast(x0, tf.int32), tf.cast(y0, tf.int32)
  out = 0.0
  for dy, weight_y in ((0, 1.0 - wy), (1, wy)):
    for dx, weight_x in ((0, 1.0 - wx), (1, wx)):
      xi, yi = x0 + dx, y0 + dy
      inside = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
      index = base + tf.clip_by_value(yi, 0, height - 1) * width + tf.clip_by_value(
          xi, 0, width - 1)
      weight = weight_x * weight_y * tf.cast(inside, images.dtype)
      out += tf.gather(flat, index) * weight[..., None]
  return out


def transform(images, matrices, displacement=None):
  """Applies per-image affine matrices (and an optional displacement field).

  Without a displacement field this is one fused projective-transform kernel
  per batch; with one, the affine and elastic maps are summed and the image
  is resampled once by `sample_bilinear`.

  Args:
    images: [B, H, W, C] float.
    matrices: [B, 2, 3] from `affine_matrices`.
    displacement: optional [B, H, W, 2] (dx, dy) in pixels added to the
      sampling position (elastic distortion).
  """
  height, width = images.shape[1], images.shape[2]
  if displacement is None:
    # The kernel takes absolute coordinates: fold the centring into the offsets.
    cx, cy = (width - 1) / 2, (height - 1) / 2
    m = matrices
    zeros = tf.zeros_like(m[:, 0, 0])
    flat = tf.stack([m[:, 0, 0], m[:, 0, 1], m[:, 0, 2] + cx - m[:, 0, 0] * cx - m[:, 0, 1] * cy,
                     m[:, 1, 0], m[:, 1, 1], m[:, 1, 2] + cy - m[:, 1, 0] * cx - m[:, 1, 1] * cy,
                     zeros, zeros], axis=1)
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=flat, output_shape=[height, width], fill_value=0.0,
        interpolation="BILINEAR", fill_mode="CONSTANT")
  xs, ys = _grid(height, width)
  m = matrices[:, :, None, None, :]
  src_x = m[:, 0, ..., 0] * xs + m[:, 0, ..., 1] * ys + m[:, 0, ..., 2] + (width - 1) / 2
  src_y = m[:, 1, ..., 0] * xs + m[:, 1, ..., 1] * ys + m[:, 1, ..., 2] + (height - 1) / 2
  if displacement is not None:
    src_x += displacement[..., 0]
    src_y += displacement[..., 1]
  return sample_bilinear(images, src_x, src_y)


def translate(images, dx, dy):
  """Moves the content of [B, H, W, C] float images by whole pixels, filling with 0.

  dx > 0 moves it right, dy > 0 down. Exact: with whole-pixel offsets the
  bilinear resampling copies every output pixel from one input pixel.
  """
  count = tf.shape(images)[0]
  zeros, ones = tf.zeros([count]), tf.ones([count])
  return transform(images, affine_matrices(zeros, zeros, ones, ones, zeros + float(dx),
                                           zeros + float(dy)))


def rotate(images, degrees):
  """[B, H, W, C] float images turned counter-clockwise by `degrees` (bilinear, 0 fill)."""
  count = tf.shape(images)[0]
  zeros, ones = tf.zeros([count]), tf.ones([count])
  return transform(images, affine_matrices(zeros + math.radians(degrees), zeros, ones, ones,
                                           zeros, zeros))


def gaussian_noise(images, std, seed, row_offset=0, global_batch_size=None):
  """`images + std * N(0, 1)`, drawn statelessly from `seed` for the global batch.

  Args:
    images: [B, H, W, C] float images in [0, 1] (not clipped here).
    std: standard deviation of the noise.
    seed: int64 [2] stateless seed.
    row_offset, global_batch_size: the noise is drawn for `global_batch_size`
      rows (default B) and these images get rows row_offset .. row_offset + B.
  """
  batch, height, width, channels = images.shape
  global_batch_size = global_batch_size or batch
  full = tf.random.stateless_normal([global_batch_size, height, width, channels], seed)
  return images + std * full[row_offset:row_offset + batch]


def gaussian_kernel(sigma):
  """1-D Gaussian kernel of radius ceil(3 sigma), normalised, as a Python list."""
  radius = max(1, int(math.ceil(3 * sigma)))
  weights = [math.exp(-0.5 * (i / sigma) ** 2) for i in range(-radius, radius + 1)]
  return [w / sum(weights) for w in weights]


def gaussian_blur(images, sigma):
  """Separable Gaussian blur of [B, H, W, C] images with zero padding."""
  kernel = tf.constant(gaussian_kernel(sigma), images.dtype)
  channels = images.shape[-1]
  size = kernel.shape[0]
  horizontal = tf.tile(tf.reshape(kernel, [1, size, 1, 1]), [1, 1, channels, 1])
  vertical = tf.tile(tf.reshape(kernel, [size, 1, 1, 1]), [1, 1, channels, 1])
  images = tf.nn.depthwise_conv2d(images, horizontal, [1, 1, 1, 1], "SAME")
  return tf.nn.depthwise_conv2d(images, vertical, [1, 1, 1, 1], "SAME")


# ----------------------------------------------------------------------------
# The augmentation of one training batch
# ----------------------------------------------------------------------------


def augment(images, config, seed, step, replica_offset=0, global_batch_size=None):
  """Augments a batch of normalised images.

  Runs in replica context inside the train step (or eagerly); contains only
  TensorFlow ops, so it runs on the replica's device.

  Args:
    images: [B, H, W, C] float in [0, 1] (the output of pixels.normalize).
    config: AugmentConfig; when nothing is on, `images` is returned as is.
    seed: int seed of the run.
    step: scalar int tensor, the global step of this batch.
    replica_offset: index of this replica's first row in the global batch.
    global_batch_size: rows of the global batch (default: B, one replica).

  Returns:
    Augmented images, same shape and dtype, values in [0, 1].
  """
  if not config.enabled:
    return images
  batch, height, width, channels = images.shape
  global_batch_size = global_batch_size or batch
  dtype = images.dtype
  images = tf.cast(images, tf.float32)
  step_seed = tf.stack([tf.cast(seed, tf.int64), tf.cast(step, tf.int64)])
  seeds = tf.random.experimental.stateless_split(step_seed, num=6)

  def draw(kind, shape, low=0.0, high=1.0):
    """Uniform numbers for the global batch; this replica's rows."""
    full = _uniform(seeds[kind], [global_batch_size] + list(shape), low, high)
    return full[replica_offset:replica_offset + batch]

  if config.affine or config.elastic_alpha:
    # Draws of switched-off parameters are harmless zeros (or ones for zoom).
    params = draw(_AFFINE, [6], -1.0, 1.0)
    matrices = affine_matrices(
        params[:, 0] * math.radians(config.rotation_degrees),
        params[:, 1] * math.radians(config.shear_degrees),
        1.0 + params[:, 2] * config.zoom, 1.0 + params[:, 3] * config.zoom,
        params[:, 4] * config.shift_x * width, params[:, 5] * config.shift_y * height)
    displacement = None
    if config.elastic_alpha:
      field = draw(_ELASTIC, [height, width, 2], -1.0, 1.0)
      displacement = config.elastic_alpha * gaussian_blur(field, config.elastic_sigma)
    images = transform(images, matrices, displacement)

  if config.erase_probability:
    u = draw(_ERASE, [5])
    low, high = config.erase_area
    area = (low + (high - low) * u[:, 0]) * height * width
    aspect = tf.exp((u[:, 1] * 2.0 - 1.0) * math.log(3.0))  # within [1/3, 3]
    box_h = tf.minimum(tf.sqrt(area * aspect), float(height))
    box_w = tf.minimum(tf.sqrt(area / aspect), float(width))
    top = u[:, 2] * (height - box_h)
    left = u[:, 3] * (width - box_w)
    erase = u[:, 4] < config.erase_probability
    ys = tf.range(height, dtype=tf.float32)[None, :, None]
    xs = tf.range(width, dtype=tf.float32)[None, None, :]
    inside = ((ys >= top[:, None, None]) & (ys < (top + box_h)[:, None, None]) &
              (xs >= left[:, None, None]) & (xs < (left + box_w)[:, None, None]) &
              erase[:, None, None])
    images = tf.where(inside[..., None], 0.0, images)

  if config.blur_strength:
    t = draw(_BLUR, [], -config.blur_strength, config.blur_strength)[:, None, None, None]
    images = images + t * (gaussian_blur(images, config.blur_sigma) - images)

  if config.noise_factor:
    noisy = gaussian_noise(images, config.noise_factor, seeds[_NOISE], replica_offset,
                           global_batch_size)
    if config.noise_probability < 1:
      # A seed of its own, derived from the noise's: the noise itself stays
      # what it was before the probability existed.
      coin_seed = tf.random.experimental.stateless_fold_in(seeds[_NOISE], 1)
      coins = _uniform(coin_seed, [global_batch_size], 0.0, 1.0)
      coins = coins[replica_offset:replica_offset + batch] < config.noise_probability
      noisy = tf.where(coins[:, None, None, None], noisy, images)
    images = noisy

  if config.flip_horizontal or config.flip_vertical:
    coins = draw(_FLIP, [2]) < 0.5
    if config.flip_horizontal:
      images = tf.where(coins[:, 0, None, None, None], tf.reverse(images, [2]), images)
    if config.flip_vertical:
      images = tf.where(coins[:, 1, None, None, None], tf.reverse(images, [1]), images)

  return tf.cast(tf.clip_by_value(images, 0.0, 1.0), dtype)


def training_inputs(batch, config, seed, step, replica_offset=0, global_batch_size=None):
  """The train step's inputs from a pipeline batch; replica context.

  Returns:
    (images normalised and augmented, labels exactly as the batch holds them).
  """
  images = augment(pixels.normalize(batch["image"]), config, seed, step, replica_offset,
                   global_batch_size)
  return images, batch["label"]
