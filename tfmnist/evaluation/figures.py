"""Figures for people to look at: PNG grids of images, drawn with matplotlib (Agg).

The figures are built on a `matplotlib.figure.Figure` with the Agg canvas,
never through pyplot, so drawing needs no display, keeps no global state and
can run beside training or evaluation.
"""

import os
import textwrap

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tfmnist import metrics
from tfmnist.data import pixels


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
  return pixels.to_unit(image)


def _write_png(figure, path, dpi):
  """Saves `figure` as a PNG at `path`, creating its folder; returns path."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  # No bbox_inches="tight": the PNG is exactly figsize * dpi pixels.
  figure.savefig(path, dpi=dpi, facecolor="white")
  return path


def _new_figure(width, height, dpi):
  figure = Figure(figsize=(width, height), dpi=dpi)
  FigureCanvasAgg(figure)
  return figure


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
  figure = _new_figure(cols * cell_inches, rows * cell_inches, dpi)
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
  return _write_png(figure, path, dpi)


# ----------------------------------------------------------------------------
# Evaluation figures
# ----------------------------------------------------------------------------


def _say(ax, text):
  """Writes `text` in the middle of an otherwise empty panel."""
  ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=10,
          color="0.4")
  ax.set_xticks([])
  ax.set_yticks([])


def confusion_figure(matrix, class_names, path, title="", dpi=100):
  """Writes a PNG of a confusion matrix: true class down, predicted class across.

  Every cell shows its count. The diagonal (hits) is shaded in blue relative to
  the largest hit count, and the mistakes in red relative to the largest
  mistake count, so that a confusion of a few examples stands out even beside
  diagonals of thousands.

  Args:
    matrix: [C, C] counts, rows = true class, columns = predicted class (as
      metrics.confusion_matrix returns).
    class_names: C names for the tick labels.
    path: the PNG to write; its folder is created if needed.
    title: optional title above the matrix.
    dpi: pixels per inch; the figure is max(4, 0.45 * C + 1.6) inches square.

  Returns:
    path.

  Raises:
    ValueError: matrix not square or not matching class_names.
  """
  matrix = np.asarray(matrix, np.int64)
  if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
    raise ValueError(f"the confusion matrix must be square, got shape {matrix.shape}")
  size = len(matrix)
  if len(class_names) != size:
    raise ValueError(f"a {size}x{size} confusion matrix needs {size} class names, got "
                     f"{len(class_names)}")
  inches = max(4.0, 0.45 * size + 1.6)
  figure = _new_figure(inches, inches, dpi)
  ax = figure.add_subplot()
  # One colour scale would map every mistake to near-white beside the diagonal;
  # two scales, each up to its own maximum, keep both readable.
  hits = np.eye(size, dtype=bool)
  mistakes = np.ma.masked_array(matrix, mask=hits)
  diagonal = np.ma.masked_array(matrix, mask=~hits)
  mistake_max = max(int(mistakes.max()) if mistakes.count() else 0, 1)
  hit_max = max(int(diagonal.max()), 1)
  ax.imshow(mistakes, cmap="Reds", vmin=0, vmax=mistake_max, interpolation="nearest")
  ax.imshow(diagonal, cmap="Blues", vmin=0, vmax=hit_max, interpolation="nearest")
  fontsize = 7 if size <= 20 else 5
  for t in range(size):
    for p in range(size):
      count = matrix[t, p]
      shade = count / (hit_max if t == p else mistake_max)
      color = "white" if shade > 0.6 else ("0.75" if count == 0 else "black")
      ax.text(p, t, str(count), ha="center", va="center", fontsize=fontsize, color=color)
  names = [str(name) for name in class_names]
  ax.set_xticks(range(size), names, rotation=90 if max(map(len, names)) > 2 else 0,
                fontsize=fontsize + 1)
  ax.set_yticks(range(size), names, fontsize=fontsize + 1)
  ax.set_xlabel("predicted")
  ax.set_ylabel("true")
  if title:
    ax.set_title(title, fontsize=9)
  figure.tight_layout()
  return _write_png(figure, path, dpi)


def _mistake_title(label, prediction, probability, class_names):
  title = (f"true {class_name(label, class_names)}, "
           f"pred {class_name(prediction, class_names)} ({probability:.2f})")
  return title.replace(", ", ",\n") if len(title) > 24 else title


def mistakes_grid(images, labels, predictions, probabilities, class_names, path, columns=6,
                  dpi=100):
  """Writes a PNG grid of misclassified images, each titled "true 4, pred 9 (0.98)".

  The number in brackets is the probability given to the predicted class. A
  long title breaks after the comma. With no images the figure says
  "no mistakes".

  Args:
    images: [N, 28, 28] or [N, 28, 28, 1] images, uint8 or float in [0, 1].
    labels: [N] true classes.
    predictions: [N] predicted classes.
    probabilities: [N] probability of each predicted class, or the [N, C]
      rows of the softmax (the predicted class's entry is shown).
    class_names: names indexed by class.
    path: the PNG to write; its folder is created if needed.
    columns: images per row.
    dpi: pixels per inch: the PNG is columns * 1.3 inches wide and
      ceil(N / columns) * 1.5 inches high (1.5 inches for N = 0).

  Returns:
    path.

  Raises:
    ValueError: inputs of different lengths, or columns < 1.
  """
  images = np.asarray(images)
  probabilities = np.asarray(probabilities, np.float64)
  count = len(images)
  if columns < 1:
    raise ValueError(f"columns must be at least 1, got {columns}")
  if not len(labels) == len(predictions) == len(probabilities) == count:
    raise ValueError(f"mistakes_grid needs as many labels, predictions and probabilities as "
                     f"images ({count}), got {len(labels)}, {len(predictions)} and "
                     f"{len(probabilities)}")
  if probabilities.ndim == 2:
    probabilities = probabilities[np.arange(count), np.asarray(predictions, np.int64)]
  rows = max(1, -(-count // columns))
  figure = _new_figure(columns * 1.3, rows * 1.5, dpi)
  if count == 0:
    ax = figure.add_subplot()
    _say(ax, "no mistakes")
    ax.set_axis_off()
    return _write_png(figure, path, dpi)
  # Fixed margins in inches, as in augment_grid: room for two-line titles.
  height = rows * 1.5
  figure.subplots_adjust(left=0.01, right=0.99, bottom=0.03 / height, top=1.0 - 0.3 / height,
                         wspace=0.1, hspace=0.3)
  axes = figure.subplots(rows, columns, squeeze=False).ravel()
  for i, ax in enumerate(axes):
    ax.set_axis_off()
    if i < count:
      ax.imshow(_as_2d(images[i]), cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
      ax.set_title(_mistake_title(labels[i], predictions[i], probabilities[i], class_names),
                   fontsize=7, pad=2)
  return _write_png(figure, path, dpi)


def _plot_series(ax, series, label, **style):
  """Draws one (steps, values) series if present; returns whether it was drawn."""
  if series is None or len(series[0]) == 0:
    return False
  steps, values = series
  ax.plot(steps, values, label=label, linewidth=1.2, **style)
  return True


def curves_figure(scalars, path, dpi=100):
  """Writes a PNG of a run's training curves against the step, in three panels.

  Loss (train and validation), accuracy (train and validation), and the
  learning rate. A series missing from `scalars` is not drawn (a run without
  validation has train curves only); a panel with no series at all says so.

  Args:
    scalars: {"train": {tag: (steps, values)}, "validation": {...}}, as
      summaries.read_scalars returns; tags "loss", "accuracy" and
      "learning_rate" (train only) are drawn.
    path: the PNG to write; its folder is created if needed.
    dpi: pixels per inch; the figure is 12 x 3.5 inches.

  Returns:
    path.
  """
  train = scalars.get("train", {})
  validation = scalars.get("validation", {})
  figure = _new_figure(12.0, 3.5, dpi)
  axes = figure.subplots(1, 3)
  panels = (("loss", [(train, "train"), (validation, "validation")]),
            ("accuracy", [(train, "train"), (validation, "validation")]),
            ("learning_rate", [(train, "train")]))
  for ax, (tag, runs) in zip(axes, panels):
    ax.set_title(tag.replace("_", " "), fontsize=10)
    drawn = [_plot_series(ax, run.get(tag), name, color=f"C{i}")
             for i, (run, name) in enumerate(runs)]
    if not any(drawn):
      _say(ax, f"no {tag.replace('_', ' ')} logged")
      continue
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    if len(runs) > 1:
      ax.legend(fontsize=8)
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4))
  figure.tight_layout()
  return _write_png(figure, path, dpi)


def reliability_figure(bins, path, title="", dpi=100):
  """Writes a PNG reliability diagram: accuracy against confidence, bin by bin.

  The top panel has a bar per non-empty confidence bin at the bin's accuracy,
  the bin's mean confidence as a dot, and the diagonal of perfect calibration;
  its legend gives the expected calibration error. The bottom panel shows how
  many examples fall in each bin (log scale).

  Args:
    bins: the dict returned by metrics.reliability_bins.
    path: the PNG to write; its folder is created if needed.
    title: optional title above the diagram.
    dpi: pixels per inch; the figure is 5 x 6 inches.

  Returns:
    path.
  """
  edges = np.asarray(bins["edges"], np.float64)
  count = np.asarray(bins["count"], np.int64)
  accuracy = np.asarray(bins["accuracy"], np.float64)
  confidence = np.asarray(bins["confidence"], np.float64)
  ece = metrics.expected_calibration_error(bins)
  # Empty bins carry accuracy 0 by convention; a bar there would look like a
  # badly calibrated bin, so only bins with examples are drawn.
  full = count > 0
  lefts, widths = edges[:-1][full], np.diff(edges)[full]
  figure = _new_figure(5.0, 6.0, dpi)
  top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
  top.bar(lefts, accuracy[full], width=widths, align="edge", color="tab:blue",
          edgecolor="white", label=f"accuracy (ECE {ece:.4f})")
  top.plot(confidence[full], accuracy[full], "o", color="tab:orange", markersize=3,
           label="mean confidence")
  top.plot([0, 1], [0, 1], "--", color="0.4", linewidth=1, label="perfect calibration")
  top.set_xlim(0, 1)
  top.set_ylim(0, 1)
  top.set_ylabel("accuracy")
  top.legend(loc="upper left", fontsize=8)
  top.set_title(f"{title}  ECE {ece:.4f}" if title else f"ECE {ece:.4f}", fontsize=10)
  bottom.bar(lefts, count[full], width=widths, align="edge", color="0.5", edgecolor="white")
  if full.any():
    bottom.set_yscale("log")
  bottom.set_xlabel("confidence (top probability)")
  bottom.set_ylabel("examples")
  figure.tight_layout()
  return _write_png(figure, path, dpi)


def robustness_figure(results, path, dpi=100):
  """Writes a PNG of accuracy under growing perturbations, one panel per perturbation.

  Args:
    results: {name: {"levels": [...], "accuracy": [...], "unit": str}}, e.g.
      "rotation": levels in degrees with unit "degrees"; accuracy as a
      fraction in [0, 1] at each level.
    path: the PNG to write; its folder is created if needed.
    dpi: pixels per inch; each panel is 3.5 x 3 inches.

  Returns:
    path.

  Raises:
    ValueError: no results, or levels and accuracy of different lengths.
  """
  if not results:
    raise ValueError("robustness_figure needs at least one perturbation, got none")
  for name, result in results.items():
    if len(result["levels"]) != len(result["accuracy"]):
      raise ValueError(f"perturbation {name!r} has {len(result['levels'])} levels but "
                       f"{len(result['accuracy'])} accuracies")
  figure = _new_figure(3.5 * len(results), 3.0, dpi)
  axes = figure.subplots(1, len(results), squeeze=False)[0]
  for ax, (name, result) in zip(axes, results.items()):
    ax.plot(result["levels"], result["accuracy"], "o-", markersize=4)
    ax.set_title(name, fontsize=10)
    # A unit wider than its 3.5-inch panel would run off the figure: wrapped
    # to about 40 characters of 10-point text, tight_layout makes room.
    ax.set_xlabel(textwrap.fill(result.get("unit", "") or "level", 40))
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
  figure.tight_layout()
  return _write_png(figure, path, dpi)
