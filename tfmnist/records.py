"""The TFRecord schema of tfmnist, sharded writing, and `info.json`.

One tf.train.Example per image:
  image: bytes, the raw 28x28x1 uint8 pixels (784 bytes, row-major)
  label: int64 class index, -1 when the image is unlabeled
  index: int64 position of the image in its source file
  id:    bytes, the id column of the source (CSV), empty when there is none

A dataset is a folder `<records_dir>/<dataset>/` of
`<split>-NNNNN-of-NNNNN.tfrecord` shards plus `info.json`.
"""

import contextlib
import errno
import glob
import json
import os
import shutil
import socket

import numpy as np
import tensorflow as tf

from tfmnist.errors import DataError

SCHEMA_VERSION = 1
# Entries of info.json that readers use without a default. "digits": whether
# a mirrored image may change class (flips and mirrored test-time views are
# refused then).
REQUIRED_INFO = ("class_names", "digits", "splits")
INFO_FILE = "info.json"
UNLABELED = -1
IMAGE_BYTES = 28 * 28


def feature_spec():
  """The parsing spec for `tf.io.parse_example` over the schema above."""
  return {
      "image": tf.io.FixedLenFeature([], tf.string),
      "label": tf.io.FixedLenFeature([], tf.int64, default_value=UNLABELED),
      "index": tf.io.FixedLenFeature([], tf.int64, default_value=-1),
      "id": tf.io.FixedLenFeature([], tf.string, default_value=""),
  }


def shard_name(split, shard, num_shards):
  return f"{split}-{shard:05d}-of-{num_shards:05d}.tfrecord"


def serialize_example(image_bytes, label, index, source_id=b""):
  """One record of the schema as bytes."""
  feature = {
      "image": tf.train.Feature(bytes_list=tf.train.BytesList(value=[image_bytes])),
      "label": tf.train.Feature(int64_list=tf.train.Int64List(value=[label])),
      "index": tf.train.Feature(int64_list=tf.train.Int64List(value=[index])),
  }
  if source_id:
    feature["id"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[source_id]))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_split(folder, split, images, labels, indices, ids, num_shards, progress=None):
  """Writes one split as `num_shards` shards of consecutive examples.

  Args:
    folder: destination folder (exists).
    split: split name used in the file names.
    images: uint8 [N, 28, 28].
    labels: int64 [N] or None (written as -1).
    indices: int64 [N] source positions.
    ids: array of str [N] or None.
    num_shards: number of files; each gets N / num_shards examples (+-1).
    progress: optional Progress advanced per image.

  Returns:
    list of {"file", "count"} per shard, in order.
  """
  flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), IMAGE_BYTES)
  labels = (np.full(len(images), UNLABELED, np.int64) if labels is None
            else np.asarray(labels, np.int64))
  encoded_ids = None if ids is None else [str(i).encode() for i in ids]
  shards = []
  for shard, rows in enumerate(np.array_split(np.arange(len(images)), num_shards)):
    name = shard_name(split, shard, num_shards)
    with tf.io.TFRecordWriter(os.path.join(folder, name)) as writer:
      for i in rows:
        writer.write(serialize_example(flat[i].tobytes(), int(labels[i]), int(indices[i]),
                                       encoded_ids[i] if encoded_ids else b""))
    shards.append({"file": name, "count": len(rows)})
    if progress is not None:
      progress.update(len(rows))
  return shards


# Write failures that are about the destination, not about the data.
_WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG)


@contextlib.contextmanager
def atomic_folder(final_path, overwrite=False):
  """Yields a temporary folder that replaces `final_path` only on success.

  The temporary folder sits beside the destination (same file system, so the
  rename is atomic) and is deleted when the body raises. An existing
  destination is replaced only with `overwrite`, and removed only after the
  new folder is in place.

  Without `overwrite`, a destination that another process (another worker
  of a cluster) put in place while the body ran is kept, and this copy is
  dropped with a DataError. A full disk, a quota or a read-only or
  forbidden destination is a DataError too, with nothing left behind.
  """
  parent, name = os.path.split(os.path.abspath(final_path))
  if os.path.exists(final_path) and not overwrite:
    raise DataError(f"{final_path}: already exists; pass --overwrite to replace it")
  try:
    os.makedirs(parent, exist_ok=True)
    # Host and pid: workers of a cluster may share the parent folder.
    tmp = os.path.join(parent, f".{name}.tmp-{socket.gethostname()}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
  except OSError as e:
    raise DataError(f"{final_path}: cannot write here: {e.strerror}") from None
  try:
    with _refused_writes(final_path):
      yield tmp
    old = None
    if os.path.exists(final_path):
      if not overwrite:
        raise DataError(f"{final_path}: another process wrote it meanwhile; kept that one")
      old = os.path.join(parent, f".{name}.old-{socket.gethostname()}-{os.getpid()}")
      os.replace(final_path, old)
    try:
      os.replace(tmp, final_path)
    except OSError as e:  # Another process's folder landed first (ENOTEMPTY).
      if old:
        os.replace(old, final_path)
      raise DataError(f"{final_path}: another process wrote it meanwhile; kept that one "
                      f"({e.strerror})") from None
    if old:
      shutil.rmtree(old, ignore_errors=True)
  finally:
    shutil.rmtree(tmp, ignore_errors=True)


def _write_failure(error):
  """The reason, when `error` says the destination refused the bytes; else None."""
  if isinstance(error, OSError):
    return error.strerror if error.errno in _WRITE_ERRNOS else None
  message = str(getattr(error, "message", error))
  for code in _WRITE_ERRNOS:
    if os.strerror(code).lower() in message.lower():
      return os.strerror(code)
  return None


@contextlib.contextmanager
def _refused_writes(path):
  """Turns a refused write (full disk, quota, read-only...) into a one-line DataError."""
  try:
    yield
  except (OSError, tf.errors.OpError) as e:
    reason = _write_failure(e)
    if reason is None:
      raise
    raise DataError(f"{path}: cannot write: {reason}; nothing was written") from None


def write_text_atomically(path, text):
  """Writes `text` to `path` under a temporary name, then renames it into place.

  Readers see the old file or the whole new one, never a partial one; the
  temporary file is removed when writing fails.
  """
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with _refused_writes(path):
      with open(tmp, "w", newline="") as f:
        f.write(text)
      os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def dataset_dir(records_dir, dataset):
  return os.path.join(records_dir, dataset)


def read_info(records_dir, dataset):
  """Reads `info.json` of a prepared dataset, or raises DataError."""
  path = os.path.join(dataset_dir(records_dir, dataset), INFO_FILE)
  if not os.path.exists(path):
    raise DataError(
        f"{path}: not found; prepare the records with "
        f"`python tools/make_records.py --dataset={dataset} --output_dir={records_dir}`")
  with open(path) as f:
    info = json.load(f)
  if info.get("schema_version") != SCHEMA_VERSION:
    raise DataError(f"{path}: schema version {info.get('schema_version')}, this tfmnist "
                    f"reads version {SCHEMA_VERSION}; make the records again")
  missing = [key for key in REQUIRED_INFO if key not in info]
  if missing:
    raise DataError(f"{path}: no {', '.join(map(repr, missing))} entry; make the records again")
  return info


def split_files(records_dir, dataset, split):
  """Shard paths of one split, checked against `info.json`."""
  info = read_info(records_dir, dataset)
  if split not in info["splits"]:
    raise DataError(f"{dataset}: no split {split!r} (has {', '.join(info['splits'])})")
  folder = dataset_dir(records_dir, dataset)
  expected = [os.path.join(folder, s["file"]) for s in info["splits"][split]["shards"]]
  missing = [p for p in expected if not os.path.exists(p)]
  if missing:
    raise DataError(f"{missing[0]}: shard listed in info.json is missing")
  found = sorted(glob.glob(os.path.join(folder, f"{split}-*.tfrecord")))
  if found != sorted(expected):
    raise DataError(f"{folder}: shards of {split!r} differ from info.json")
  return expected
