"""Image files of handwritten digits as MNIST-style 28x28 uint8 images.

MNIST was made by fitting each binary NIST digit into a 20x20 box with its
aspect ratio kept (the antialiasing of that resize gives the grey edges), then
placing the box in a 28x28 field so that the centre of mass of the pixel
intensities falls on the centre of the field. A photo or scan goes through
the same steps here, after being turned into white ink on a black background:

  1. grayscale: RGB is reduced to luminance; a transparent background is
     composited over white, so it counts as paper;
  2. a light background (judged from the border pixels) is inverted;
  3. the background level, estimated from the border, is subtracted and the
     contrast stretched so that the brightest ink is 1 (optional);
  4. the image is cropped to the pixels at or above INK_THRESHOLD;
  5. the crop is resized (antialiased) so that its longer side is 20 pixels;
  6. the result is pasted into a black 28x28 canvas with its intensity
     centre of mass at pixel (14, 14).

Files are decoded with TensorFlow, so PNG, JPEG, BMP and GIF (first frame)
are read without any other imaging library.
"""

import os
import re

import numpy as np
import tensorflow as tf

from tfmnist.data import pixels as pixels_lib
from tfmnist.errors import DataError
from tfmnist.files import read_file_bytes

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
IMAGE_SIZE = 28
BOX_SIZE = 20
# Ink is what is brighter than this once the background is black and the
# brightest ink is 1: high enough to ignore paper grain and JPEG ringing, low
# enough that the faint antialiased edges of an MNIST digit still count.
INK_THRESHOLD = 0.1
# ITU-R BT.601 luma weights, the usual RGB -> grayscale conversion.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)
# TensorFlow wraps op errors as "{{function_node ...}} <reason> [Op:DecodeImage]".
_OP_ERROR_NOISE = re.compile(r"\{\{function_node [^}]*\}\}|\[Op:\w+\]")


def _as_float(pixels):
  """Checks shape and range; returns float32 [H, W, C] in [0, 1]."""
  image = np.asarray(pixels)
  if image.ndim == 2:
    image = image[..., None]
  if image.ndim != 3 or image.shape[-1] not in (1, 2, 3, 4):
    raise ValueError(f"expected an image shaped [H, W] or [H, W, C] with C in 1..4, "
                     f"got shape {list(np.shape(pixels))}")
  if image.shape[0] == 0 or image.shape[1] == 0:
    raise ValueError(f"expected a non-empty image, got shape {list(np.shape(pixels))}")
  return pixels_lib.to_unit(image)


def _grayscale(image):
  """[H, W, C] float image as [H, W] luminance, transparency shown as white."""
  channels = image.shape[-1]
  has_alpha = channels in (2, 4)
  color = image[..., :channels - 1] if has_alpha else image
  gray = color[..., 0] if color.shape[-1] == 1 else color @ _LUMA
  if has_alpha:
    alpha = image[..., -1]
    gray = gray * alpha + (1.0 - alpha)
  return gray


def _border(image):
  """The outermost rows and columns of a [H, W] image, as one flat array."""
  return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])


def _ink_on_black(gray, denoise):
  """White ink on a black background, or ValueError when there is no ink."""
  if np.median(_border(gray)) > 0.5:
    gray = 1.0 - gray
  if not denoise:
    if gray.max() < INK_THRESHOLD:
      raise ValueError(f"no ink found: the brightest pixel, {gray.max():.3f}, is below "
                       f"the ink threshold {INK_THRESHOLD}")
    return gray
  background = float(np.median(_border(gray)))
  contrast = float(gray.max()) - background
  # Stretching a nearly flat image would turn its noise into ink.
  if contrast < INK_THRESHOLD:
    raise ValueError(f"no ink found: the image is flat (contrast {contrast:.3f} over the "
                     f"background, below the ink threshold {INK_THRESHOLD})")
  return np.clip((gray - background) / contrast, 0.0, 1.0)


def _crop_to_ink(image):
  """The smallest rectangle of `image` holding every pixel at or above INK_THRESHOLD."""
  rows = np.flatnonzero((image >= INK_THRESHOLD).any(axis=1))
  cols = np.flatnonzero((image >= INK_THRESHOLD).any(axis=0))
  return image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def _fit_box(image):
  """Resizes so that the longer side is BOX_SIZE, keeping the aspect ratio."""
  height, width = image.shape
  scale = BOX_SIZE / max(height, width)
  size = (max(1, round(height * scale)), max(1, round(width * scale)))
  if size == image.shape:
    return image  # Nothing to resample, as for an MNIST digit (already 20 long).
  resized = tf.image.resize(image[..., None], size, method="bilinear", antialias=True)
  return np.clip(resized.numpy()[..., 0], 0.0, 1.0)


def _offset(profile):
  """Where to start `profile` (an intensity sum) so its mass centres on pixel 14."""
  centre = float(np.sum(np.arange(len(profile)) * profile) / np.sum(profile))
  start = int(np.floor(IMAGE_SIZE / 2 - centre + 0.5))
  return min(max(start, 0), IMAGE_SIZE - len(profile))


def _centre(box):
  """Pastes `box` into a black IMAGE_SIZE canvas, centred by its centre of mass."""
  top, left = _offset(box.sum(axis=1)), _offset(box.sum(axis=0))
  canvas = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)
  canvas[top:top + box.shape[0], left:left + box.shape[1]] = box
  return canvas


def preprocess_image(pixels, denoise=True):
  """Turns a picture of one handwritten digit into an MNIST-style image.

  Args:
    pixels: [H, W] or [H, W, C] array, C being 1 (gray), 2 (gray and alpha),
      3 (RGB) or 4 (RGBA); uint8, or float in [0, 1]. Dark ink on light paper
      and light ink on a dark background are both accepted.
    denoise: subtract the background level and stretch the contrast before
      looking for ink; turn off only for images whose background is clean.

  Returns:
    uint8 [28, 28]: white ink on black, the digit fitted in a 20x20 box and
    centred by its centre of mass.

  Raises:
    ValueError: `pixels` has the wrong shape, dtype or range, or holds no ink.
  """
  ink = _ink_on_black(_grayscale(_as_float(pixels)), denoise)
  box = _fit_box(_crop_to_ink(ink))
  return pixels_lib.to_uint8(_centre(box))


def decode_image(data, name):
  """The pixels of an encoded image (PNG, JPEG, BMP, GIF) as uint8 [H, W, C].

  Args:
    data: the bytes of an image file.
    name: what the bytes are, for the error (a path, "the upload").

  Raises:
    DataError: the bytes are not an image TensorFlow can decode.
  """
  try:
    image = tf.io.decode_image(data, channels=0, expand_animations=False)
  except tf.errors.OpError as e:
    reason = " ".join(_OP_ERROR_NOISE.sub("", e.message).split()) or type(e).__name__
    raise DataError(f"cannot decode {name} as an image: {reason}") from None
  return image.numpy()


def _decode(path):
  """The pixels of an image file as uint8 [H, W, C], or DataError."""
  return decode_image(read_file_bytes(path), path)


def load_image(path, denoise=True):
  """Reads one image file and returns `preprocess_image` of it.

  Args:
    path: a PNG, JPEG, BMP or GIF file (the first frame of an animation).
    denoise: as in `preprocess_image`.

  Returns:
    uint8 [28, 28] MNIST-style image.

  Raises:
    DataError: the file is missing, cannot be decoded or holds no ink.
  """
  pixels = _decode(path)
  try:
    return preprocess_image(pixels, denoise)
  except ValueError as e:
    raise DataError(f"{path}: {e}") from None


def list_images(folder):
  """The image files of a folder (not its subfolders), sorted by path.

  A file is an image when its extension, in any case, is in IMAGE_EXTENSIONS.

  Raises:
    DataError: the folder does not exist or holds no image file.
  """
  if not os.path.isdir(folder):
    what = "not a folder" if os.path.exists(folder) else "folder not found"
    raise DataError(f"{folder}: {what}")
  paths = sorted(os.path.join(folder, name) for name in os.listdir(folder)
                 if name.lower().endswith(IMAGE_EXTENSIONS)
                 and os.path.isfile(os.path.join(folder, name)))
  if not paths:
    raise DataError(f"{folder}: no image files ({', '.join(IMAGE_EXTENSIONS)})")
  return paths


def load_images(paths, denoise=True):
  """Loads image files with `load_image`.

  Args:
    paths: image file paths, e.g. from `list_images`.
    denoise: as in `preprocess_image`.

  Returns:
    (uint8 [N, 28, 28] images in the order of `paths`, list of the paths).

  Raises:
    DataError: naming the first file that is missing, unreadable or blank.
  """
  paths = list(paths)
  images = np.zeros((len(paths), IMAGE_SIZE, IMAGE_SIZE), np.uint8)
  for i, path in enumerate(paths):
    images[i] = load_image(path, denoise)
  return images, paths
