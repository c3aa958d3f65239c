"""Augmentation draws of a few images of a split, as training would make them, to look at
before training (tools/show_augment.py draws them with evaluation.figures.augment_grid)."""

import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging

from tfmnist.data import augment, pipeline, pixels, records


@dataclasses.dataclass
class Preview:
  """Images of a split and their augmentation draws.

  Attributes:
    originals: float [R, 28, 28, 1] in [0, 1], the chosen images.
    augmented: list of C - 1 arrays shaped like `originals`; draw c is what
      training step c + 1 makes of them.
    labels: [R] labels (-1 for unlabelled images).
    class_names: the dataset's class names.
    title: "<dataset> <split>: <the settings that are on>".
  """
  originals: np.ndarray
  augmented: list
  labels: np.ndarray
  class_names: list
  title: str


def _changed_fields(config):
  """The fields of a dataclass that differ from their defaults, as `name=value, ...`."""
  defaults = type(config)()
  return ", ".join(f"{f.name}={getattr(config, f.name)}" for f in dataclasses.fields(config)
                   if getattr(config, f.name) != getattr(defaults, f.name))


def augment_preview(records_dir, dataset, split, config, rows=8, cols=8, seed=0):
  """`rows` images of a split, chosen with `seed`, and `cols - 1` augmentation draws of each.

  Draw c is the augmentation that training step c would apply with `seed`,
  so the columns are independent draws.

  Raises:
    DataError: the records are missing or inconsistent.
    ValueError: `config` is invalid for the dataset (flips on digits).
  """
  info = records.read_info(records_dir, dataset)
  augment.validate(config, info["digits"])
  files = records.split_files(records_dir, dataset, split)
  examples = pipeline.read_examples(files[:1])  # One shard holds plenty of images.
  if len(examples) < rows:
    examples = pipeline.read_examples(files)
  chosen = np.sort(np.random.default_rng(seed).choice(
      len(examples), min(rows, len(examples)), replace=False))
  originals = pixels.normalize(tf.gather(examples.image, chosen))
  if not config.enabled:
    logging.warning("no augmentation is on: every column repeats the original")
  augmented = [augment.augment(originals, config, seed, step).numpy()
               for step in range(1, cols)]
  return Preview(originals.numpy(), augmented, examples.label.numpy()[chosen],
                 list(info["class_names"]),
                 f"{dataset} {split}: {_changed_fields(config) or 'no augmentation'}")
