"""The TFRecord schema of tfmnist, sharded writing, and `info.json`.

One tf.train.Example per image:
  image: bytes, the raw 28x28x1 uint8 pixels (784 bytes, row-major)
  label: int64 class index, -1 when the image is unlabeled
  index: int64 position of the image in its source file
  id:    bytes, the id column of the source (CSV), empty when there is none

A dataset is a folder `<records_dir>/<dataset>/` of
`<split>-NNNNN-of-NNNNN.tfrecord` shards plus `info.json`.
"""

import glob
import json
import os

import numpy as np
import tensorflow as tf

from tfmnist import files
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


def rebuild_hint(info, records_dir, dataset):
  """The command that makes a dataset's records again, as info.json keeps it."""
  return info.get("rebuild") or (
      f"python tools/make_records.py --dataset={dataset} --output_dir={records_dir} "
      "--overwrite (with the source flags they were made from)")


def verify_shards(paths, shards, rebuild):
  """Checks each shard's SHA-256 against info.json's.

  A flipped byte or a file cut short otherwise surfaces mid-training as
  TensorFlow's DataLossError, which names no file, or not at all (a flipped
  pixel byte keeps the record readable). Hashing costs about a second per
  100 MB, a fraction of reading and parsing the same records.

  Raises:
    DataError: naming the first damaged shard and the command that rebuilds it.
  """
  for path, shard in zip(paths, shards):
    if "sha256" in shard and files.sha256_file(path) != shard["sha256"]:
      raise DataError(f"{path}: damaged (its SHA-256 differs from info.json's: a bad disk or "
                      f"a copy cut short); rebuild the records: {rebuild}")


def split_files(records_dir, dataset, split, verify=True):
  """Shard paths of one split, checked against `info.json`.

  Args:
    records_dir, dataset, split: which split.
    verify: check every shard's SHA-256 (see verify_shards).
  """
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
  if verify:
    verify_shards(expected, info["splits"][split]["shards"],
                  rebuild_hint(info, records_dir, dataset))
  return expected
