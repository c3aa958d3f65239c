"""Checks that a dataset was read right, before any record of it is written.

A source file can be read without an error and still wrongly: a pixel taken
as the label, a training file without labels, transposed images, blank or
damaged images. `run_checks` looks at what the readers produced, raises a
DataError naming the file and the fix when the data is plainly wrong, and
returns what it checked for `info.json`, with the readers' own notes (a
normalised export scaled back to 0..255).

Every check entry is {"check": name, "outcome": "passed" | "fixed" |
"skipped", "detail": one line}; a failed check raises instead.
"""

import numpy as np

from tfmnist.errors import DataError

# Class coverage is judged only from this many images per class on average:
# a handful of images may honestly miss a class.
MIN_IMAGES_PER_CLASS = 10
# Median per-image aspect (ink spread top to bottom over left to right) below
# which images of a `tall` dataset are taken as transposed. Upright MNIST is
# 1.45 and Fashion-MNIST 1.26; transposed, 0.69 and 0.79; noise is about 1.
MIN_TALL_ASPECT = 0.85
_ASPECT_SAMPLE = 10_000


def _where(raw, split):
  """The file a split came from, for messages."""
  return raw.files[0] if raw.files else f"split {split}"


def _entry(check, outcome, detail):
  return {"check": check, "outcome": outcome, "detail": detail}


def check_train_labelled(splits):
  if "train" not in splits:
    return _entry("train_labelled", "skipped", "no train split")
  raw = splits["train"]
  if raw.labels is None:
    raise DataError(f"{_where(raw, 'train')}: the training images have no labels (no label "
                    "column found); set label_column=NAME_OR_INDEX")
  return _entry("train_labelled", "passed", f"train: {len(raw)} labelled images")


def check_classes(splits, spec):
  """Every labelled split holds more than one class; train holds every class."""
  enough = MIN_IMAGES_PER_CLASS * spec.num_classes
  judged = []
  for split, raw in splits.items():
    if raw.labels is None or len(raw) < enough:
      continue
    counts = np.bincount(raw.labels, minlength=spec.num_classes)
    present = np.flatnonzero(counts)
    if len(present) == 1:
      raise DataError(
          f"{_where(raw, split)}: all {len(raw)} images of {split} have the label "
          f"{spec.class_names[present[0]]!r}; the labels were read from the wrong place "
          "(set label_column) or the file holds one class")
    if split == "train" and len(present) < spec.num_classes:
      missing = [spec.class_names[c] for c in np.flatnonzero(counts == 0)]
      shown = ", ".join(map(repr, missing[:5])) + (", ..." if len(missing) > 5 else "")
      raise DataError(
          f"{_where(raw, split)}: train has no image of class {shown} ({len(present)} of "
          f"{spec.num_classes} classes present); check num_classes/class_names and the "
          "label column")
    judged.append(f"{split} {len(present)} classes")
  if not judged:
    return _entry("classes", "skipped",
                  f"no labelled split of {enough} or more images to judge")
  return _entry("classes", "passed", ", ".join(judged))


def check_blank_images(splits):
  """No image is a single value from corner to corner."""
  for split, raw in splits.items():
    flat = raw.images.reshape(len(raw), -1)
    if not len(flat):
      continue
    blank = np.flatnonzero(flat.min(axis=1) == flat.max(axis=1))
    if blank.size:
      i = blank[0]
      raise DataError(
          f"{_where(raw, split)}: {blank.size} image(s) of {split} are one value throughout "
          f"(the first, #{i}, is all {flat[i, 0]}); the file is damaged or its pixels were "
          "read from the wrong columns")
  return _entry("blank_images", "passed", "no image is one value throughout")


def ink_aspect(images):
  """Median over images of the ink's spread top to bottom over left to right."""
  x = images[:_ASPECT_SAMPLE].astype(np.float64)
  positions = np.arange(x.shape[1], dtype=np.float64)
  mass = x.sum(axis=(1, 2))
  x, mass = x[mass > 0], mass[mass > 0]
  if not len(x):
    return float("nan")

  def spread(profile):
    mean = (profile * positions).sum(1) / mass
    return (profile * (positions - mean[:, None]) ** 2).sum(1) / mass

  rows, cols = spread(x.sum(2)), spread(x.sum(1))
  valid = cols > 0
  return float(np.median(np.sqrt(rows[valid] / cols[valid])))


def check_orientation(splits, spec):
  """Images of a dataset known to be tall are not read transposed."""
  if not spec.tall:
    return _entry("orientation", "skipped", f"no reference orientation for {spec.name}")
  split = "train" if "train" in splits else max(splits, key=lambda s: len(splits[s]))
  raw = splits[split]
  aspect = ink_aspect(raw.images)
  if aspect < MIN_TALL_ASPECT:
    fix = "no" if spec.transposed else "yes"
    raise DataError(
        f"{_where(raw, split)}: the images look transposed: their ink is wider than tall "
        f"(median aspect {aspect:.2f}; upright {spec.name} images are taller than wide); "
        f"set transpose={fix}")
  return _entry("orientation", "passed", f"{split}: median ink aspect {aspect:.2f}")


def run_checks(splits, spec):
  """Checks the splits read for `spec`; returns the entries for info.json.

  Raises:
    DataError: a check failed; the message names the file and the fix.
  """
  entries = [note for raw in splits.values() for note in raw.notes]
  # The readers refuse a label outside the classes, naming it.
  entries.append(_entry("label_range", "passed",
                        f"every label is one of the {spec.num_classes} classes"))
  entries.append(check_train_labelled(splits))
  entries.append(check_classes(splits, spec))
  entries.append(check_blank_images(splits))
  entries.append(check_orientation(splits, spec))
  return entries
