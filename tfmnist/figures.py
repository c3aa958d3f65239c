"""Figures for people to look at: PNG grids of images, drawn with matplotlib (Agg).

The figures are built on a `matplotlib.figure.Figure` with the Agg canvas,
never through pyplot, so drawing needs no display, keeps no global state and
can run beside training or evaluation.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf
from absl import logging
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfmnist import augment, data, records


def class_name(label, class_names):
  """The name of `label`, "unlabeled" for -1, the number itself when unnamed."""
  label = int(label)
  if label < 0:
    return "unlabeled"
  return str(class_names[label]) if label < len(class_names) else str(label)


def _as_2d(image):
  """[H, W] or [H, W, 1] image (uint8 or float in [0, 1]) as a float [H, W] array."""
  image = np.asarray(image)
  if image.ndim == 3:
    image = image[..., 0]
  if image.dtype == np.uint8:
    return image.astype(np.float32) / 255.0
  return image.astype(np.float32)


def augment_grid(originals, augmented, labels, class_names, path, title="",
                 cell_inches=1.0, dpi=100):
  """Writes a PNG grid: one row per image, its original then augmented versions.

  Args:
    originals: [R, H, W] or [R, H, W, 1] images, uint8 or float in [0, 1].
    augmented: list of C - 1 arrays shaped like `originals`; column c + 1 of
      the grid shows augmented[c].
    labels: [R] integer labels (-1 for unlabeled images).
    class_names: names indexed by label, for the row titles.
    path: the PNG to write; its folder is created if needed.
    title: optional line above the grid (e.g. the augmentation settings).
    cell_inches: size of one grid cell in inches.
    dpi: pixels per inch: the PNG is (C * cell_inches * dpi) pixels wide
      and (R * cell_inches * dpi) high.

  Returns:
    path.
  """
  originals = np.asarray(originals)
  rows, cols = len(originals), 1 + len(augmented)
  if len(labels) != rows or any(len(a) != rows for a in augmented):
    raise ValueError(f"augment_grid needs {rows} labels and {rows} images per column, got "
                     f"{len(labels)} labels and columns of {[len(a) for a in augmented]}")
  figure = Figure(figsize=(cols * cell_inches, rows * cell_inches), dpi=dpi)
  FigureCanvasAgg(figure)
  # Fixed margins in inches above the grid: the column titles, then the title.
  height = rows * cell_inches
  top = 1.0 - min(0.5, (0.45 if title else 0.2) / height)
  figure.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=top, wspace=0.08,
                         hspace=0.35)
  if title:
    figure.suptitle(title, fontsize=7, y=1.0 - 0.04 / height, va="top")
  axes = figure.subplots(rows, cols, squeeze=False)
  for r in range(rows):
    columns = [originals[r]] + [a[r] for a in augmented]
    for c, image in enumerate(columns):
      ax = axes[r, c]
      ax.imshow(_as_2d(image), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
      ax.set_xticks([])
      ax.set_yticks([])
      if c == 0:
        ax.set_title(class_name(labels[r], class_names), fontsize=6, pad=2)
        for spine in ax.spines.values():  # Frame the original apart from its variants.
          spine.set_edgecolor("tab:orange")
          spine.set_linewidth(1.5)
      elif r == 0:
        ax.set_title(f"draw {c}", fontsize=6, pad=2)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  figure.savefig(path, dpi=dpi, facecolor="white")
  return path


def _changed_fields(config):
  """The fields of a dataclass that differ from their defaults, as `name=value, ...`."""
  defaults = type(config)()
  return ", ".join(f"{f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)
                   if getattr(config, f.name) != getattr(defaults, f.name))


def augment_preview(records_dir, dataset, split, config, path, rows=8, cols=8, seed=0):
  """Writes an augment_grid of `rows` images of a split and `cols - 1` draws of each.

  Column c shows the augmentation that training step c would apply with
  `seed`, so the columns are independent draws.

  Args:
    records_dir: records folder (make_records --output_dir).
    dataset: dataset folder name; its info.json gives class names and `digits`.
    split: split to take the images from.
    config: augment.AugmentConfig; checked with augment.validate.
    path: the PNG to write.
    rows, cols: grid size; the images are a seeded random choice.
    seed: seed of the choice and of the augmentation.

  Returns:
    The number of images shown (fewer than `rows` for a smaller split).

  Raises:
    DataError: the records are missing or inconsistent.
    ValueError: `config` is invalid for the dataset.
  """
  info = records.read_info(records_dir, dataset)
  augment.validate(config, info.get("digits", True))
  files = records.split_files(records_dir, dataset, split)
  examples = data.read_examples(files[:1])  # One shard holds plenty of images.
  if len(examples) < rows:
    examples = data.read_examples(files)
  chosen = np.sort(np.random.default_rng(seed).choice(
      len(examples), min(rows, len(examples)), replace=False))
  originals = data.normalize(tf.gather(examples.image, chosen))
  if not config.enabled:
    logging.warning("no augmentation is on: every column repeats the original")
  augmented = [augment.augment(originals, config, seed, step).numpy()
               for step in range(1, cols)]
  augment_grid(originals.numpy(), augmented, examples.label.numpy()[chosen],
               info["class_names"], path,
               title=f"{dataset} {split}: {_changed_fields(config) or 'no augmentation'}")
  return len(chosen)
