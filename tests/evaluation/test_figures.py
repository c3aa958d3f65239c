"""Tests of evaluation.figures: arrays in, PNG out."""


import numpy as np
import pytest
from PIL import Image

from tfmnist import metrics
from tfmnist.evaluation import figures, robustness


def _images(rows, value_seed):
  rng = np.random.default_rng(value_seed)
  images = np.zeros((rows, 28, 28, 1), np.float32)
  images[:, 8:20, 10:18] = rng.random((rows, 12, 8, 1))
  return images


def _pixels(path):
  with Image.open(path) as image:
    return np.asarray(image.convert("L"), np.float32)


@pytest.mark.parametrize("title", ["", "mnist train: rotation_degrees=10"])
def test_augment_grid_writes_a_png_of_the_expected_size(tmp_path, title):
  rows, cols, dpi = 3, 4, 40
  originals = _images(rows, 0)
  augmented = [_images(rows, seed) for seed in range(1, cols)]
  path = str(tmp_path / "sub" / "grid.png")  # The folder is created.

  assert figures.augment_grid(originals, augmented, [0, 1, 2], ["zero", "one", "two"], path,
                              title=title, cell_inches=1.0, dpi=dpi) == path

  pixels = _pixels(path)
  assert pixels.shape == (rows * dpi, cols * dpi)
  assert pixels.min() < 10  # The black image backgrounds...
  assert pixels.max() > 245  # ...on a white page.
  assert pixels.std() > 20


def test_augment_grid_draws_each_image_where_it_belongs(tmp_path):
  # Row 0 is all black images, row 1 all white: the lower half must be brighter.
  rows, cols, dpi = 2, 3, 50
  black = np.zeros((1, 28, 28), np.uint8)
  white = np.full((1, 28, 28), 255, np.uint8)
  images = np.concatenate([black, white])
  path = str(tmp_path / "grid.png")
  figures.augment_grid(images, [images] * (cols - 1), [-1, 7], [], path, dpi=dpi)
  pixels = _pixels(path)
  assert pixels.shape == (rows * dpi, cols * dpi)
  top, bottom = pixels[:dpi], pixels[dpi:]
  assert bottom.mean() > top.mean() + 100


def test_augment_grid_rejects_mismatched_columns(tmp_path):
  with pytest.raises(ValueError, match="needs 3 labels and 3 images per column.*\\[3, 2\\]"):
    figures.augment_grid(_images(3, 0), [_images(3, 1), _images(2, 2)], [0, 1, 2], [],
                         str(tmp_path / "grid.png"))


def test_class_name():
  names = ["T-shirt/top", "Trouser"]
  assert figures.class_name(1, names) == "Trouser"
  assert figures.class_name(np.int64(0), names) == "T-shirt/top"
  assert figures.class_name(-1, names) == "unlabeled"
  assert figures.class_name(5, names) == "5"


# ----------------------------------------------------------------------------
# Evaluation figures
# ----------------------------------------------------------------------------


def _rgb(path):
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"), np.float32)


def _assert_png(path, width_inches, height_inches, dpi):
  """The PNG at `path` is figsize * dpi pixels and not a blank page."""
  pixels = _pixels(path)
  assert pixels.shape == (round(height_inches * dpi), round(width_inches * dpi))
  assert pixels.std() > 0


def _red_pixels(path):
  red, green, blue = np.moveaxis(_rgb(path), -1, 0)
  return int(np.sum((red > green + 60) & (red > blue + 60)))


def test_confusion_figure_writes_a_png(tmp_path):
  path = str(tmp_path / "sub" / "confusion.png")
  matrix = np.array([[50, 2, 0], [1, 40, 3], [0, 0, 60]])
  assert figures.confusion_figure(matrix, ["a", "b", "c"], path, title="test", dpi=50) == path
  _assert_png(path, 4, 4, 50)  # At least 4 inches square.
  many = np.diag(np.full(30, 5))
  _assert_png(figures.confusion_figure(many, [str(i) for i in range(30)],
                                       str(tmp_path / "many.png"), dpi=20),
              0.45 * 30 + 1.6, 0.45 * 30 + 1.6, 20)


def test_confusion_figure_shows_a_single_mistake_beside_large_hits(tmp_path):
  hits = np.diag([1000, 1000, 1000])
  one_mistake = hits.copy()
  one_mistake[2, 0] = 1
  clean = figures.confusion_figure(hits, ["a", "b", "c"], str(tmp_path / "clean.png"))
  mistaken = figures.confusion_figure(one_mistake, ["a", "b", "c"], str(tmp_path / "one.png"))
  assert _red_pixels(clean) == 0
  assert _red_pixels(mistaken) > 500  # A whole cell, not a faint tint.


def test_confusion_figure_rejects_mismatched_names(tmp_path):
  with pytest.raises(ValueError, match="a 2x2 confusion matrix needs 2 class names, got 3"):
    figures.confusion_figure(np.eye(2), ["a", "b", "c"], str(tmp_path / "c.png"))
  with pytest.raises(ValueError, match=r"must be square, got shape \(2, 3\)"):
    figures.confusion_figure(np.zeros((2, 3)), ["a", "b"], str(tmp_path / "c.png"))


@pytest.mark.parametrize("channel", [False, True])
def test_mistakes_grid_writes_a_png(tmp_path, channel):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 28, 28, 1) if channel else (5, 28, 28), dtype=np.uint8)
  probabilities = np.full((5, 10), 0.02)
  probabilities[np.arange(5), [9, 1, 2, 3, 4]] = 0.82
  path = str(tmp_path / "sub" / "mistakes.png")
  assert figures.mistakes_grid(images, [4, 7, 0, 0, 1], [9, 1, 2, 3, 4], probabilities,
                               [str(i) for i in range(10)], path, columns=4, dpi=50) == path
  _assert_png(path, 4 * 1.3, 2 * 1.5, 50)


def test_mistakes_grid_titles(tmp_path):
  assert figures._mistake_title(4, 9, 0.981, [str(i) for i in range(10)]) == (
      "true 4, pred 9 (0.98)")
  assert figures._mistake_title(0, 6, 0.5, ["T-shirt/top"] + ["x"] * 5 + ["Shirt"]) == (
      "true T-shirt/top,\npred Shirt (0.50)")


def test_mistakes_grid_of_no_mistakes_says_so(tmp_path):
  path = figures.mistakes_grid(np.zeros((0, 28, 28), np.uint8), [], [], [], ["a"],
                               str(tmp_path / "none.png"), dpi=50)
  _assert_png(path, 6 * 1.3, 1.5, 50)


def test_mistakes_grid_rejects_mismatched_lengths(tmp_path):
  with pytest.raises(ValueError, match=r"as images \(2\), got 2, 1 and 2"):
    figures.mistakes_grid(np.zeros((2, 28, 28)), [0, 1], [1], [0.9, 0.8], ["a", "b"],
                          str(tmp_path / "m.png"))


def _series(steps, values):
  return np.asarray(steps, np.int64), np.asarray(values, np.float64)


def test_curves_figure_writes_a_png(tmp_path):
  steps = np.arange(0, 500, 10)
  scalars = {"train": {"loss": _series(steps, np.exp(-steps / 100)),
                       "accuracy": _series(steps, 1 - np.exp(-steps / 100)),
                       "learning_rate": _series(steps, np.linspace(0.1, 0.0, len(steps)))},
             "validation": {"loss": _series([100, 300], [0.5, 0.2]),
                            "accuracy": _series([100, 300], [0.8, 0.9])}}
  path = str(tmp_path / "sub" / "curves.png")
  assert figures.curves_figure(scalars, path, dpi=50) == path
  _assert_png(path, 12, 3.5, 50)


def test_curves_figure_without_validation_or_learning_rate(tmp_path):
  train = {"loss": _series([0, 10, 20], [2.0, 1.0, 0.5]),
           "accuracy": _series([0, 10, 20], [0.1, 0.5, 0.8])}
  without_validation = figures.curves_figure({"train": train, "validation": {}},
                                             str(tmp_path / "a.png"), dpi=50)
  _assert_png(without_validation, 12, 3.5, 50)
  nothing = figures.curves_figure({"train": {}}, str(tmp_path / "b.png"), dpi=50)
  _assert_png(nothing, 12, 3.5, 50)


def test_reliability_figure_writes_a_png(tmp_path):
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 10, 500)
  logits = rng.normal(size=(500, 10))
  logits[np.arange(500), labels] += 3
  probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
  bins = metrics.reliability_bins(labels, probabilities)
  path = str(tmp_path / "sub" / "reliability.png")
  assert figures.reliability_figure(bins, path, title="test", dpi=50) == path
  _assert_png(path, 5, 6, 50)


def test_robustness_figure_writes_a_png(tmp_path):
  results = {"gaussian noise": {"levels": [0, 0.5, 1], "accuracy": [0.99, 0.9, 0.6],
                                "unit": "noise factor"},
             "rotation": {"levels": [0, 15, 30, 45], "accuracy": [0.99, 0.97, 0.8, 0.4],
                          "unit": "degrees"}}
  path = str(tmp_path / "sub" / "robustness.png")
  assert figures.robustness_figure(results, path, dpi=50) == path
  _assert_png(path, 2 * 3.5, 3, 50)


def test_robustness_figure_keeps_every_label_inside(tmp_path):
  """The sweeps' own units, the shift's wider than its panel, leave the PNG's edges blank."""
  results = {name: {"levels": [0, 1, 2], "accuracy": [0.99, 0.9, 0.6], "unit": unit}
             for name, unit in robustness.UNITS.items()}
  path = figures.robustness_figure(results, str(tmp_path / "robustness.png"))
  pixels = _pixels(path)
  for edge in (pixels[:3], pixels[-3:], pixels[:, :3], pixels[:, -3:]):
    assert edge.min() == 255  # Nothing drawn runs off the figure.


def test_robustness_figure_rejects_bad_results(tmp_path):
  with pytest.raises(ValueError, match="'shift' has 2 levels but 1 accuracies"):
    figures.robustness_figure({"shift": {"levels": [0, 1], "accuracy": [0.9], "unit": "pixels"}},
                              str(tmp_path / "r.png"))
  with pytest.raises(ValueError, match="at least one perturbation"):
    figures.robustness_figure({}, str(tmp_path / "r.png"))
