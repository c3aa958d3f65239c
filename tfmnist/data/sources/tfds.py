"""Built-in datasets through tensorflow-datasets.

tensorflow-datasets retries unreachable hosts for minutes before it gives up,
so a download is only attempted after a quick check that its host answers;
data already prepared in the tensorflow-datasets folder loads without network.
"""

import socket
import urllib.parse

import numpy as np
from absl import logging

from tfmnist.errors import DataError
from tfmnist.data.sources import RawSplit, check_labels


def host_reachable(url, timeout_seconds=5.0):
  """True when a TCP connection to the host of `url` opens within the timeout."""
  parts = urllib.parse.urlsplit(url)
  port = parts.port or (443 if parts.scheme == "https" else 80)
  try:
    with socket.create_connection((parts.hostname, port), timeout=timeout_seconds):
      return True
  except OSError:
    return False


def load_tfds(spec, data_dir=None, download=True):
  """Loads all splits of `spec.tfds_name` as numpy arrays.

  Args:
    spec: the DatasetSpec; must have a tfds_name.
    data_dir: tensorflow-datasets folder (None: its default).
    download: allow tensorflow-datasets to download and prepare the data.

  Returns:
    {split: RawSplit} with the splits tensorflow-datasets offers.
  """
  if not spec.tfds_name:
    raise DataError(f"dataset {spec.name!r} is not in tensorflow-datasets")
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.builder(spec.tfds_name, data_dir=data_dir)
  if not builder.is_prepared():
    if not download:
      raise DataError(f"tensorflow-datasets has not prepared {spec.tfds_name!r} in "
                      f"{builder.data_dir}")
    if spec.base_url and not host_reachable(spec.base_url):
      raise DataError(f"{spec.base_url}: unreachable, tensorflow-datasets cannot "
                      f"download {spec.tfds_name!r}")
    logging.info("tensorflow-datasets is downloading %s", spec.tfds_name)
    builder.download_and_prepare()
  splits = {}
  for split in builder.info.splits:
    arrays = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
    images = np.asarray(arrays["image"])
    if images.ndim == 4:
      images = images[..., 0]
    if spec.transposed:  # tensorflow-datasets keeps EMNIST's stored orientation.
      images = images.transpose(0, 2, 1)
    labels = check_labels(np.asarray(arrays["label"]), spec.num_classes,
                          lambda i, s=split: f"tfds {spec.tfds_name}[{s}] (label #{i})",
                          spec.label_offset)
    splits[split] = RawSplit(np.ascontiguousarray(images, dtype=np.uint8), labels,
                             files=(f"tfds:{spec.tfds_name}:{builder.info.version}",))
  return splits
