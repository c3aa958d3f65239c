"""Readers that turn source files into in-memory splits of uint8 images.

Every reader returns `RawSplit`s and raises `tfmnist.errors.DataError` with a
message naming the file (and line, for CSV) on malformed input.
"""

import dataclasses
from typing import Optional

import numpy as np

from tfmnist.errors import DataError


@dataclasses.dataclass
class RawSplit:
  """One split as read from its source.

  Attributes:
    images: uint8 array [N, 28, 28].
    labels: int64 array [N] of class indices, or None when unlabeled.
    ids: array [N] of source ids as strings (CSV id column), or None.
    files: source files this split was read from.
    notes: what the reader changed to read the file right, as check entries
      for info.json ({"check", "outcome": "fixed", "detail"}).
  """
  images: np.ndarray
  labels: Optional[np.ndarray]
  ids: Optional[np.ndarray] = None
  files: tuple = ()
  notes: list = dataclasses.field(default_factory=list)

  def __len__(self):
    return len(self.images)


def check_labels(labels, num_classes, where, label_offset=0):
  """Shifts labels by `label_offset` and checks them against the classes.

  Args:
    labels: integer array of raw labels.
    num_classes: labels must fall in [0, num_classes) after the shift.
    where: callable (index) -> str naming the place of an offending label.
    label_offset: subtracted from every raw label.

  Returns:
    int64 array of class indices.
  """
  raw = labels.astype(np.int64)
  labels = raw - label_offset
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    i = bad[0]
    hint = ""
    if raw.size and raw.min() == label_offset + 1 and raw.max() == label_offset + num_classes:
      hint = (f"; the labels run {label_offset + 1}..{label_offset + num_classes}, so they "
              f"look {label_offset + 1}-based: set label_offset={label_offset + 1}")
    raise DataError(
        f"{where(i)}: label {labels[i] + label_offset} outside the "
        f"{num_classes} classes ({label_offset}..{num_classes - 1 + label_offset}){hint}")
  return labels


def to_pixels(values, where):
  """Pixel values as uint8 0..255, scaling a normalised [0, 1] export.

  Args:
    values: numeric array of pixel values (any shape).
    where: names the source in messages (a file, an array).

  Returns:
    (uint8 array of the same shape, list of check notes for info.json).

  Raises:
    DataError: values that are not finite, or neither integers in 0..255 nor
      all within [0, 1].
  """
  values = np.asarray(values)
  if values.dtype == np.uint8:
    return values, []
  if not np.issubdtype(values.dtype, np.number) or np.issubdtype(values.dtype, np.complexfloating):
    raise DataError(f"{where}: pixel values of type {values.dtype}, expected numbers")
  if values.size == 0:
    return values.astype(np.uint8), []
  if np.issubdtype(values.dtype, np.floating) and not np.all(np.isfinite(values)):
    raise DataError(f"{where}: pixel values that are NaN or infinite")
  low, high = values.min(), values.max()
  # Every value within [0, 1] (and some ink): a normalised export, or a
  # binarised one; no image of 0..255 pixels stays within 0 and 1.
  if low >= 0 and 0 < high <= 1:
    note = {"check": "pixel_range", "outcome": "fixed",
            "detail": f"{where}: pixel values within [0, 1] (largest {float(high):g}) "
                      "scaled to 0..255"}
    return np.round(values.astype(np.float64) * 255).astype(np.uint8), [note]
  if np.issubdtype(values.dtype, np.floating) and np.any(values != np.round(values)):
    first = values.ravel()[np.flatnonzero(values.ravel() != np.round(values.ravel()))[0]]
    raise DataError(f"{where}: pixel value {float(first):g} is not an integer, and the values "
                    f"span [{float(low):g}, {float(high):g}], not 0..255 or [0, 1]")
  if low < 0 or high > 255:
    raise DataError(f"{where}: pixel values span [{float(low):g}, {float(high):g}], "
                    "outside 0..255")
  return values.astype(np.uint8), []
