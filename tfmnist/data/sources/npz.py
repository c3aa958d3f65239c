"""NPZ archives: Keras `mnist.npz` and KMNIST `*-imgs.npz` / `*-labels.npz`."""

import glob
import os
import zipfile

import numpy as np

from tfmnist.errors import DataError
from tfmnist.data.sources import RawSplit, check_labels, to_pixels

_SPLIT_WORDS = {"train": "train", "test": "test", "t10k": "test"}


def _load(path):
  if not os.path.exists(path):
    raise DataError(f"{path}: file not found")
  if os.path.getsize(path) == 0:
    raise DataError(f"{path}: empty file")
  try:
    with np.load(path, allow_pickle=False) as archive:
      return {k: archive[k] for k in archive.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise DataError(f"{path}: not a readable .npz archive ({e})") from None


def _as_images(images, name):
  """[N, 28, 28] from [N, 28, 28], [N, 28, 28, 1], [N, 1, 28, 28] or flat [N, 784]."""
  images = np.asarray(images)
  if images.ndim == 4 and images.shape[-1] == 1:
    images = images[..., 0]
  elif images.ndim == 4 and images.shape[1] == 1:
    images = images[:, 0]
  elif images.ndim == 2 and images.shape[1] == 28 * 28:
    images = images.reshape(-1, 28, 28)
  if images.ndim != 3 or images.shape[1:] != (28, 28):
    raise DataError(f"{name}: wrong image shape {list(images.shape)}, expected [N, 28, 28] "
                    "(or [N, 784], [N, 28, 28, 1], [N, 1, 28, 28])")
  return images


def _make_split(images, labels, image_name, label_name, spec):
  images, notes = to_pixels(_as_images(images, image_name), image_name)
  labels = np.asarray(labels)
  if labels.ndim == 2 and labels.shape[1] == spec.num_classes and labels.shape[1] > 1:
    raise DataError(f"{label_name}: one-hot labels [N, {labels.shape[1]}]; save class "
                    "indices instead (labels.argmax(axis=1))")
  labels = labels.reshape(-1)
  if len(labels) != len(images):
    raise DataError(f"{image_name}: {len(images)} images but {label_name} has {len(labels)} labels")
  if np.issubdtype(labels.dtype, np.floating) and np.any(labels != np.round(labels)):
    raise DataError(f"{label_name}: labels that are not integers")
  if spec.transposed:
    images = images.transpose(0, 2, 1)
  labels = check_labels(labels, spec.num_classes, lambda i: f"{label_name} (label #{i})",
                        spec.label_offset)
  return RawSplit(np.ascontiguousarray(images), labels, notes=notes)


def load_npz(source, spec):
  """Reads splits from an NPZ file or a folder of NPZ files.

  Args:
    source: a Keras-style archive with x_train/y_train/x_test/y_test, or a
      folder holding one, or KMNIST-style `<name>-<split>-imgs.npz` and
      `<name>-<split>-labels.npz` pairs (array `arr_0` each).
    spec: the DatasetSpec.

  Returns:
    {split: RawSplit}.
  """
  if os.path.isdir(source):
    pairs = {}
    for path in sorted(glob.glob(os.path.join(source, "*-imgs.npz"))):
      stem = os.path.basename(path)[:-len("-imgs.npz")]
      split = _SPLIT_WORDS.get(stem.rsplit("-", 1)[-1])
      labels_path = path[:-len("imgs.npz")] + "labels.npz"
      if split and os.path.exists(labels_path):
        pairs[split] = (path, labels_path)
    if pairs:
      splits = {}
      for split, (images_path, labels_path) in pairs.items():
        images, labels = _load(images_path), _load(labels_path)
        splits[split] = _make_split(next(iter(images.values())), next(iter(labels.values())),
                                    images_path, labels_path, spec)
        splits[split].files = (images_path, labels_path)
      return splits
    archives = sorted(glob.glob(os.path.join(source, "*.npz")))
    if len(archives) != 1:
      raise DataError(
          f"{source}: expected one Keras-style .npz or *-imgs.npz/*-labels.npz pairs, "
          f"found {len(archives)} .npz files")
    source = archives[0]
  arrays = _load(source)
  splits = {}
  for split in ("train", "test"):
    x, y = f"x_{split}", f"y_{split}"
    if x in arrays:
      if y not in arrays:
        raise DataError(f"{source}: has {x} but no {y}")
      splits[split] = _make_split(arrays[x], arrays[y], f"{source}[{x}]", f"{source}[{y}]", spec)
      splits[split].files = (source,)
  if not splits:
    raise DataError(f"{source}: no x_train/y_train or x_test/y_test arrays "
                    f"(found {', '.join(sorted(arrays)) or 'none'})")
  return splits
