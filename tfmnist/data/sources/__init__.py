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
  """
  images: np.ndarray
  labels: Optional[np.ndarray]
  ids: Optional[np.ndarray] = None
  files: tuple = ()

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
  labels = labels.astype(np.int64) - label_offset
  bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
  if bad.size:
    i = bad[0]
    raise DataError(
        f"{where(i)}: label {labels[i] + label_offset} outside the "
        f"{num_classes} classes ({label_offset}..{num_classes - 1 + label_offset})")
  return labels
