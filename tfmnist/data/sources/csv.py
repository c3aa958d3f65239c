"""Kaggle-style CSV files: one image per row, 784 pixel columns.

Handles Digit Recognizer (`label,pixel0..pixel783`; test without label),
Kannada-MNIST (`label,pixel...`; test `id,pixel...`; Dig-MNIST), files with an
`id` column before `label`, and headerless `label,pix...` rows (a headerless
file with its label elsewhere is refused with the column to name). Pixels
normalised to [0, 1] are scaled back to 0..255. Parsing is
vectorised (numpy's C parser); only when it fails does a per-line pass run to
name the offending line and column.
"""

import io

import numpy as np

from tfmnist.errors import DataError
from tfmnist.data.sources import RawSplit, check_labels, to_pixels
from tfmnist.files import read_file_bytes

NUM_PIXELS = 28 * 28
LABEL_NAMES = ("label", "labels", "class", "target", "y")
ID_NAMES = ("id", "imageid", "image_id", "index")


def _is_number(cell):
  try:
    float(cell)
    return True
  except ValueError:
    return False


def _column(spec, names, default_names, path, what):
  """Resolves a column given by name, 0-based index (negative from the end) or
  first/last; None when absent."""
  if spec in (None, ""):
    return next((i for i, n in enumerate(names) if n.lower() in default_names), None)
  if spec.lower() == "none":
    return None
  position = {"first": "0", "last": "-1"}.get(spec.lower(), spec)
  if position.lstrip("-").isdigit():
    index = int(position)
    if not -len(names) <= index < len(names):
      raise DataError(f"{path}: {what} column {spec} beyond the {len(names)} columns")
    return index % len(names)
  lowered = [n.lower() for n in names]
  if spec.lower() not in lowered:
    raise DataError(f"{path}: no {what} column named {spec!r} in the header")
  return lowered.index(spec.lower())


def _label_like_columns(values, num_classes, label_offset):
  """Columns whose values are exactly the labels label_offset..+num_classes-1."""
  wanted = np.arange(label_offset, label_offset + num_classes)
  return [c for c in range(values.shape[1])
          if np.array_equal(np.unique(values[:, c]), wanted)]


def _check_guessed_label(path, values, num_classes, label_offset):
  """Refuses a headerless file whose column 0 cannot be the label but another can.

  Headerless files are read as label,pixels. A file written pixels,label
  instead has a constant first column (the corner pixel) and the labels
  elsewhere: reading it as label,pixels would give every image one class.
  """
  first = values[:, 0]
  if len(values) < 2 or np.any(first != first[0]):
    return
  candidates = [c for c in _label_like_columns(values, num_classes, label_offset) if c != 0]
  if not candidates:
    return
  column = candidates[-1]
  where = "the last column" if column == values.shape[1] - 1 else f"column {column}"
  flag = "last" if column == values.shape[1] - 1 else str(column)
  raise DataError(
      f"{path}: no header, and its first column (the default label) holds only "
      f"{first[0]:g} while {where} (0-based {column}) holds exactly the labels "
      f"{label_offset}..{label_offset + num_classes - 1}: set label_column={flag}")


def _diagnose(path, lines, first_line, keep):
  """Finds the first offending cell after the fast parse failed."""
  for row, line in enumerate(lines):
    cells = line.split(",")
    for pos, col in enumerate(keep):
      cell = cells[col].strip()
      try:
        value = float(cell)
      except ValueError:
        raise DataError(
            f"{path}:{first_line + row}: non-numeric cell {cell!r} in column {col + 1}"
        ) from None
      if not np.isfinite(value) or value != int(value):
        raise DataError(
            f"{path}:{first_line + row}: cell {cell!r} in column {col + 1} is not an integer")
  raise DataError(f"{path}: could not parse as CSV of integers")


def read_csv(path, num_classes, label_column=None, id_column=None, label_offset=0):
  """Reads a Kaggle-style CSV of 28x28 images.

  Args:
    path: CSV file.
    num_classes: labels must be in [0, num_classes).
    label_column: header name, 0-based index (negative counts from the end)
      or first/last; None finds it by name ("label"), or takes the first
      column of a headerless 785-column file; "none" reads the file as
      unlabeled.
    id_column: header name or index of an id column; None finds "id"/"ImageId".
    label_offset: the label of class 0 in the file (1 for 1-based labels).

  Returns:
    RawSplit; labels None for unlabeled files, ids None without an id column.
  """
  text = read_file_bytes(path).decode("utf-8-sig", errors="replace")
  lines = text.splitlines()
  while lines and not lines[-1].strip():
    lines.pop()
  if not lines:
    raise DataError(f"{path}: empty file")
  first = [c.strip().strip('"') for c in lines[0].split(",")]
  has_header = not all(_is_number(c) for c in first)
  num_columns = len(first)
  guessed_label = False
  if has_header:
    names, body, first_line = first, lines[1:], 2
  else:
    # Headerless files carry no names: 785 columns are label + pixels.
    names = [str(i) for i in range(num_columns)]
    body, first_line = lines, 1
    guessed_label = label_column is None and num_columns == NUM_PIXELS + 1
    if label_column is None:
      label_column = "0" if guessed_label else "none"
  label_pos = _column(label_column, names, LABEL_NAMES, path, "label")
  id_pos = _column(id_column, names, ID_NAMES, path, "id") if has_header or id_column else None
  if id_pos is not None and id_pos == label_pos:
    raise DataError(f"{path}: the id and label columns are the same column ({id_pos})")
  pixel_cols = [i for i in range(num_columns) if i not in (label_pos, id_pos)]
  if len(pixel_cols) != NUM_PIXELS:
    raise DataError(
        f"{path}: expected {NUM_PIXELS} pixel columns (28x28), found {len(pixel_cols)} "
        f"of {num_columns} columns; name the label/id columns with "
        "label_column/id_column")
  if not body:
    raise DataError(f"{path}: no data rows")

  commas = np.fromiter((line.count(",") for line in body), np.int64, len(body))
  ragged = np.flatnonzero(commas != num_columns - 1)
  if ragged.size:
    row = ragged[0]
    raise DataError(
        f"{path}:{first_line + row}: ragged row with {commas[row] + 1} columns, "
        f"expected {num_columns}")

  ids = None
  if id_pos is not None:
    ids = np.array([line.split(",", id_pos + 1)[id_pos].strip().strip('"') for line in body])
  keep = [i for i in range(num_columns) if i != id_pos]
  # comments=None: loadtxt would otherwise drop everything after a "#" silently.
  try:
    values = np.loadtxt(io.StringIO("\n".join(body)), delimiter=",", dtype=np.int64,
                        usecols=keep, ndmin=2, comments=None)
  except ValueError:
    try:  # Floats: integral ones ("12.0"), or a normalised export in [0, 1].
      values = np.loadtxt(io.StringIO("\n".join(body)), delimiter=",",
                          dtype=np.float64, usecols=keep, ndmin=2, comments=None)
    except ValueError:
      values = None
    if values is None or not np.all(np.isfinite(values)):
      _diagnose(path, body, first_line, keep)

  label_idx = keep.index(label_pos) if label_pos is not None else None
  pixel_idx = [keep.index(c) for c in pixel_cols]
  pixels = values[:, pixel_idx]
  notes = []
  if np.all((pixels >= 0) & (pixels <= 1)):  # A normalised or binarised export.
    pixels, notes = to_pixels(pixels, path)
  elif np.any(pixels != np.round(pixels)):
    _diagnose(path, body, first_line, keep)
  bad = np.argwhere((pixels < 0) | (pixels > 255))
  if bad.size:
    row, col = bad[0]
    raise DataError(
        f"{path}:{first_line + row}: pixel value {pixels[row, col]:g} in column "
        f"{pixel_cols[col] + 1} ({names[pixel_cols[col]]}) outside 0..255")
  labels = None
  if label_idx is not None:
    raw_labels = values[:, label_idx]
    fractional = np.flatnonzero(raw_labels != np.round(raw_labels))
    if fractional.size:
      row = fractional[0]
      raise DataError(f"{path}:{first_line + row}: label {raw_labels[row]:g} in column "
                      f"{label_pos + 1} is not an integer")
    if guessed_label:
      _check_guessed_label(path, values, num_classes, label_offset)
    labels = check_labels(raw_labels, num_classes, lambda i: f"{path}:{first_line + i}",
                          label_offset)
  images = pixels.astype(np.uint8).reshape(-1, 28, 28)
  return RawSplit(images, labels, ids, (path,), notes)
