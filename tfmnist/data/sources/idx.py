"""IDX files, the official format of MNIST, Fashion-MNIST, KMNIST and EMNIST.

An IDX file is a big-endian header (two zero bytes, a type code, the number of
dimensions, then one uint32 per dimension) followed by the raw values. Files
may be gzip-compressed; compression is detected from the content, not the name.
"""

import gzip
import os
import re
import struct
import zlib

import numpy as np

from tfmnist.errors import DataError
from tfmnist.data.sources import RawSplit, check_labels
from tfmnist.files import read_file_bytes

_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"
# train-images-idx3-ubyte.gz, t10k-labels.idx1-ubyte, emnist-digits-test-images-idx3-ubyte
_NAME = re.compile(
    r"^(?P<prefix>.*?)(?P<split>train|t10k|test)-(?P<kind>images|labels)"
    r"[-.]idx(?P<ndim>[13])-ubyte(?:\.gz)?$")


def decode_idx(data, name):
  """Decodes IDX bytes (plain or gzip) into a uint8 array.

  Args:
    data: file contents.
    name: file name used in error messages.

  Returns:
    numpy uint8 array with the shape the header announces.
  """
  if data[:2] == _GZIP_MAGIC:
    try:
      data = gzip.decompress(data)
    except (EOFError, OSError, zlib.error) as e:
      raise DataError(f"{name}: truncated or corrupt gzip data ({e})") from None
  if len(data) < 4:
    raise DataError(f"{name}: truncated IDX file ({len(data)} bytes, no header)")
  magic = struct.unpack(">I", data[:4])[0]
  ndim = data[3]
  if data[:2] != b"\0\0" or data[2] != _UBYTE or ndim not in (1, 3):
    raise DataError(
        f"{name}: wrong magic number 0x{magic:08x}, expected 0x00000801 "
        "(labels) or 0x00000803 (images)")
  header_bytes = 4 + 4 * ndim
  if len(data) < header_bytes:
    raise DataError(f"{name}: truncated IDX header ({len(data)} bytes)")
  dims = struct.unpack(f">{ndim}I", data[4:header_bytes])
  count = int(np.prod(dims, dtype=np.int64))
  if len(data) - header_bytes != count:
    kind = "truncated" if len(data) - header_bytes < count else "oversized"
    raise DataError(
        f"{name}: {kind} IDX file: header announces shape {list(dims)} "
        f"({count} values) but {len(data) - header_bytes} follow the header")
  return np.frombuffer(data, np.uint8, count=count, offset=header_bytes).reshape(dims)


def read_idx(path):
  """Reads one IDX file (plain or gzip) into a uint8 array."""
  return decode_idx(read_file_bytes(path), path)


def find_idx_files(names, prefix=None):
  """Pairs up IDX image and label files by split.

  Args:
    names: file names (or archive member names) to choose from.
    prefix: keep only names with this prefix before the split word (e.g.
      "emnist-digits-"); None accepts a single prefix of any kind.

  Returns:
    {split: (images_name, labels_name)} with split "train" or "test".
  """
  found = {}
  for name in names:
    m = _NAME.match(os.path.basename(name))
    if not m or (prefix is not None and m["prefix"] != prefix):
      continue
    split = "train" if m["split"] == "train" else "test"
    found.setdefault(m["prefix"], {}).setdefault(split, {})[m["kind"]] = name
  if len(found) > 1:
    raise DataError(
        "several IDX datasets found (prefixes "
        f"{', '.join(repr(p) for p in sorted(found))}); choose one with the dataset name")
  pairs = {}
  for split, kinds in (next(iter(found.values())) if found else {}).items():
    if set(kinds) != {"images", "labels"}:
      missing = ({"images", "labels"} - set(kinds)).pop()
      raise DataError(f"{next(iter(kinds.values()))}: no matching {split} {missing} file")
    pairs[split] = (kinds["images"], kinds["labels"])
  return pairs


def decode_split(image_data, label_data, image_name, label_name, spec):
  """Decodes one IDX image/label pair into a RawSplit checked against `spec`."""
  images = decode_idx(image_data, image_name)
  labels = decode_idx(label_data, label_name)
  if images.ndim != 3:
    raise DataError(f"{image_name}: expected an images file (idx3), found {images.ndim} dims")
  if labels.ndim != 1:
    raise DataError(f"{label_name}: expected a labels file (idx1), found {labels.ndim} dims")
  if images.shape[1:] != (28, 28):
    raise DataError(
        f"{image_name}: wrong image size {images.shape[1]}x{images.shape[2]}, expected 28x28")
  if len(images) != len(labels):
    raise DataError(
        f"{image_name}: {len(images)} images but {label_name} has {len(labels)} labels")
  if spec.transposed:
    images = images.transpose(0, 2, 1)
  labels = check_labels(labels, spec.num_classes,
                        lambda i: f"{label_name} (label #{i})", spec.label_offset)
  return RawSplit(np.ascontiguousarray(images), labels)


def load_idx_dir(source_dir, spec):
  """Reads the train and test IDX pairs found in `source_dir`.

  Args:
    source_dir: folder with `*-images-idx3-ubyte[.gz]` and labels files.
    spec: the DatasetSpec (prefix, orientation, classes).

  Returns:
    {split: RawSplit}.
  """
  if not os.path.isdir(source_dir):
    raise DataError(f"{source_dir}: source folder not found")
  # Full paths, so that errors about a pair name the folder too.
  names = [os.path.join(source_dir, n) for n in sorted(os.listdir(source_dir))]
  pairs = find_idx_files(names, spec.idx_prefix if spec.idx_prefix else None)
  if not pairs and spec.idx_prefix:
    pairs = find_idx_files(names, "")
  if not pairs:
    raise DataError(
        f"{source_dir}: no IDX files (expected names like "
        f"{spec.idx_prefix}train-images-idx3-ubyte.gz)")
  splits = {}
  for split, (image_path, label_path) in pairs.items():
    raw = decode_split(read_file_bytes(image_path), read_file_bytes(label_path),
                       image_path, label_path, spec)
    raw.files = (image_path, label_path)
    splits[split] = raw
  return splits
