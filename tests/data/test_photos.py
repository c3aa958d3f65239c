"""Tests of tfmnist.images: image files of digits made into MNIST-style images."""

import gzip
import os

import numpy as np
import pytest
import tensorflow as tf

from tfmnist.data import photos as images
from tfmnist.errors import DataError

MNIST_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "mnist")
# The ink threshold of tfmnist.images, in uint8 levels.
INK = 26


def _page(height=200, width=120, paper=255):
  """A blank RGB page."""
  return np.full((height, width, 3), paper, np.uint8)


def _draw_seven(page, top, left, size=60, stroke=8, ink=0):
  """Draws a "7" (a top bar and a diagonal to the lower left) into `page`."""
  page[top:top + stroke, left:left + size] = ink
  for row in range(stroke, size):
    col = left + int((size - stroke) * (1 - row / size))
    page[top + row, col:col + stroke] = ink
  return page


def _ink_box(image):
  """(height, width) of the rectangle holding the pixels at or above INK."""
  rows = np.flatnonzero((image >= INK).any(axis=1))
  cols = np.flatnonzero((image >= INK).any(axis=0))
  return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


def _centre_of_mass(image):
  image = image.astype(np.float64)
  rows, cols = np.indices(image.shape)
  return (rows * image).sum() / image.sum(), (cols * image).sum() / image.sum()


def _mean_abs_diff(a, b):
  return np.abs(a.astype(np.float64) - b.astype(np.float64)).mean()


def _write(path, pixels, encode=tf.io.encode_png):
  path.write_bytes(encode(pixels).numpy())
  return str(path)


@pytest.mark.parametrize("top, left", [(70, 30), (5, 3), (135, 58)])
def test_dark_digit_on_white_is_inverted_fitted_and_centred(top, left):
  out = images.preprocess_image(_draw_seven(_page(), top, left))

  assert out.dtype == np.uint8 and out.shape == (28, 28)
  # Inverted: the page became black, the ink bright. (The box touches the
  # bottom edge: the mass of a "7" is in its bar, so centring pulls it down.)
  assert (out == 0).mean() > 0.6
  assert out[:4].max() == 0 and out[0, -1] == 0 and out[-1, -1] == 0
  assert out.max() >= 250
  assert max(_ink_box(out)) in (19, 20, 21)
  row, col = _centre_of_mass(out)
  assert abs(row - 14) <= 1 and abs(col - 14) <= 1


def test_a_different_position_on_the_page_gives_the_same_image():
  near_corner = images.preprocess_image(_draw_seven(_page(), 5, 3))
  in_middle = images.preprocess_image(_draw_seven(_page(), 70, 30))
  np.testing.assert_array_equal(near_corner, in_middle)


@pytest.mark.parametrize("bar, expected", [((150, 15), (20, 2)), ((12, 100), (2, 20))])
def test_aspect_ratio_is_kept(bar, expected):
  page = _page(200, 200)
  page[20:20 + bar[0], 30:30 + bar[1]] = 0
  height, width = _ink_box(images.preprocess_image(page))
  assert abs(height - expected[0]) <= 1 and abs(width - expected[1]) <= 1


def test_light_ink_on_dark_is_not_inverted():
  dark_on_light = _draw_seven(_page(), 40, 20)
  light_on_dark = 255 - dark_on_light
  from_light = images.preprocess_image(light_on_dark)
  assert from_light.max() >= 250 and from_light[0].max() == 0
  diff = np.abs(from_light.astype(int) - images.preprocess_image(dark_on_light))
  assert diff.max() <= 1


def test_uint8_and_float_and_gray_inputs_agree():
  page = _draw_seven(_page(), 40, 20)
  expected = images.preprocess_image(page)
  np.testing.assert_array_equal(images.preprocess_image(page / 255.0), expected)
  np.testing.assert_array_equal(images.preprocess_image(page[..., 0]), expected)
  np.testing.assert_array_equal(images.preprocess_image(page[..., :1]), expected)


@pytest.mark.parametrize("channels", [2, 4])
def test_transparent_background_counts_as_paper(channels):
  # Black ink drawn on fully transparent *black* pixels: read without the
  # alpha, the whole picture would be black and hold no digit at all.
  opaque = _draw_seven(np.zeros((200, 120, 3), np.uint8), 40, 20, ink=255)[..., :1]
  pixels = np.zeros((200, 120, channels), np.uint8)
  pixels[..., -1] = opaque[..., 0]
  out = images.preprocess_image(pixels)
  expected = images.preprocess_image(_draw_seven(_page(), 40, 20))
  np.testing.assert_array_equal(out, expected)


def test_denoise_removes_a_noisy_background():
  rng = np.random.default_rng(0)
  page = rng.integers(190, 211, (200, 120, 3)).astype(np.uint8)  # Grey, grainy paper.
  page = _draw_seven(page, 40, 20, ink=30)
  clean = images.preprocess_image(_draw_seven(_page(), 40, 20))

  out = images.preprocess_image(page)
  assert (out[clean == 0] < INK).all()
  assert _mean_abs_diff(out, clean) < 5
  # Without denoising the grey paper is ink too: the crop is the whole page.
  assert _ink_box(images.preprocess_image(page, denoise=False)) == (20, 12)


@pytest.mark.parametrize("encode, bound", [
    (tf.io.encode_png, 0.0),
    # JPEG is lossy: its ringing shifts grey levels near the strokes a little.
    (lambda pixels: tf.io.encode_jpeg(pixels, quality=95), 3.0)])
def test_image_files_round_trip(tmp_path, encode, bound):
  page = _draw_seven(_page(), 40, 20)
  path = _write(tmp_path / "seven.img", page, encode)
  assert _mean_abs_diff(images.load_image(path), images.preprocess_image(page)) <= bound


def test_real_mnist_digit_is_reproduced():
  path = os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz")
  if not os.path.exists(path):
    pytest.skip(f"real MNIST not found at {path}")
  with gzip.open(path) as f:
    header_and_first = f.read(16 + 28 * 28)
  digit = np.frombuffer(header_and_first, np.uint8, offset=16).reshape(28, 28)

  out = images.preprocess_image(digit)
  # The digit is already 20 pixels long and centred by its mass, so it comes
  # back unchanged (the difference is 0 today). One grey level on average
  # leaves room for rounding; a one-pixel shift or a rescale costs 4 to 30.
  assert _mean_abs_diff(out, digit) < 1.0


def test_missing_file_is_named(tmp_path):
  path = str(tmp_path / "nothing.png")
  with pytest.raises(DataError, match="nothing.png: file not found"):
    images.load_image(path)


def test_garbage_file_cannot_be_decoded(tmp_path):
  path = tmp_path / "x.png"
  path.write_bytes(b"this is not a picture\n" * 4)
  with pytest.raises(DataError) as error:
    images.load_image(str(path))
  message = str(error.value)
  assert message.startswith(f"cannot decode {path} as an image: ")
  assert "\n" not in message and "function_node" not in message


def test_blank_image_has_no_ink(tmp_path):
  path = _write(tmp_path / "white.png", _page())
  with pytest.raises(DataError, match="white.png: no ink found"):
    images.load_image(path)
  with pytest.raises(ValueError, match="no ink found"):
    images.preprocess_image(np.zeros((28, 28), np.uint8))


@pytest.mark.parametrize("pixels, message", [
    (np.zeros(28, np.uint8), r"got shape \[28\]"),
    (np.zeros((28, 28, 5), np.uint8), r"C in 1..4, got shape \[28, 28, 5\]"),
    (np.zeros((1, 28, 28, 1), np.uint8), r"got shape \[1, 28, 28, 1\]"),
    (np.zeros((0, 28), np.uint8), r"non-empty image, got shape \[0, 28\]"),
    (np.zeros((28, 28), np.int64), "got dtype int64"),
    (np.full((28, 28), 255.0), r"values in \[255.0, 255.0\]")])
def test_bad_arrays_are_rejected(pixels, message):
  with pytest.raises(ValueError, match=message):
    images.preprocess_image(pixels)


def test_list_images_finds_image_files_only(tmp_path):
  for name in ("b.PNG", "a.jpeg", "c.gif", "d.Bmp", "e.JPG", "notes.txt", "png"):
    (tmp_path / name).write_bytes(b"")
  (tmp_path / "sub.png").mkdir()  # A folder, whatever its name.
  (tmp_path / "sub.png" / "f.png").write_bytes(b"")  # Not searched.
  names = [os.path.basename(p) for p in images.list_images(str(tmp_path))]
  assert names == ["a.jpeg", "b.PNG", "c.gif", "d.Bmp", "e.JPG"]


def test_list_images_rejects_missing_and_empty_folders(tmp_path):
  with pytest.raises(DataError, match="absent: folder not found"):
    images.list_images(str(tmp_path / "absent"))
  (tmp_path / "notes.txt").write_text("no pictures here")
  with pytest.raises(DataError, match=f"{tmp_path}: no image files"):
    images.list_images(str(tmp_path))


def test_load_images_stacks_in_order_and_names_the_bad_file(tmp_path):
  seven = _draw_seven(_page(), 40, 20)
  bar = _page()
  bar[30:170, 50:70] = 0
  paths = [_write(tmp_path / "1.png", bar), _write(tmp_path / "2.png", seven)]

  stacked, returned = images.load_images(paths)
  assert stacked.dtype == np.uint8 and stacked.shape == (2, 28, 28)
  assert returned == paths
  np.testing.assert_array_equal(stacked[1], images.preprocess_image(seven))

  paths.append(_write(tmp_path / "3.png", _page()))
  with pytest.raises(DataError, match="3.png: no ink found"):
    images.load_images(paths)
