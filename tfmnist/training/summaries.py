"""The run's TensorBoard writers: `Writers`.

Under `<model_dir>/logs`: train/ and validation/ scalars, the augmented
samples and the validation mistakes as images, the run's flags as text, and
the hparams plugin's record of the run with its final metrics. The writers
take arrays and numbers; the loop computes them.
"""

import os

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from tfmnist.data import pixels

MAX_IMAGES = 64


def image_grid(images, columns=8):
  """Tiles uint8 images or floats in [0, 1], [N, 28, 28, 1], into one [1, H, W, 1] image."""
  images = pixels.to_unit(images)
  count = len(images)
  rows = max(1, -(-count // columns))
  padded = np.zeros((rows * columns,) + images.shape[1:], np.float32)
  padded[:count] = images
  h, w = images.shape[1], images.shape[2]
  grid = padded.reshape(rows, columns, h, w, 1).transpose(0, 2, 1, 3, 4)
  return grid.reshape(1, rows * h, columns * w, 1)


class Writers:
  """The run's TensorBoard writers (no-ops off the chief, and for validation without it)."""

  def __init__(self, log_dir, enabled=True, validation=True):
    self.log_dir = log_dir
    noop = tf.summary.create_noop_writer()
    self.train_writer = self.validation_writer = self.run_writer = noop
    if enabled:
      self.train_writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))
      self.run_writer = tf.summary.create_file_writer(log_dir)
      if validation:
        self.validation_writer = tf.summary.create_file_writer(
            os.path.join(log_dir, "validation"))

  def run_start(self, config, dataset, augmented):
    """Flags as text, hparams, and a grid of augmented samples.

    Args:
      config: the TrainConfig.
      dataset: its name, for the samples' description.
      augmented: float images in [0, 1], [N, 28, 28, 1], as step 0 augments them.
    """
    with self.run_writer.as_default(step=0):
      tf.summary.text("flags", "\n".join(f"    {line}" for line in
                                         config.flags_text.splitlines()) or "(none)")
      hparams_api.hparams(hparams_of(config), trial_id=os.path.basename(
          os.path.abspath(os.path.join(self.log_dir, ".."))))
    with self.train_writer.as_default(step=0):
      tf.summary.image("augmented_samples", image_grid(augmented[:MAX_IMAGES]),
                       description=f"{dataset}: augmentation {config.augment}")

  def train_loop(self, step, loss, accuracy, learning_rate, images_per_second, step_seconds):
    with self.train_writer.as_default(step=step):
      tf.summary.scalar("loss", loss)
      tf.summary.scalar("accuracy", accuracy)
      tf.summary.scalar("learning_rate", learning_rate)
      tf.summary.scalar("images_per_second", images_per_second)
      tf.summary.scalar("step_seconds", step_seconds)

  def validation(self, step, metrics, wrong, examples, class_names):
    with self.validation_writer.as_default(step=step):
      tf.summary.scalar("loss", metrics["loss"])
      tf.summary.scalar("accuracy", metrics["accuracy"])
      if len(wrong["index"]):
        # Examples are indexed by source position; map back to rows.
        positions = {int(p): row for row, p in enumerate(examples.index.numpy())}
        rows = [positions[int(i)] for i in wrong["index"][:MAX_IMAGES]]
        pairs = ", ".join(f"{class_names[t]}->{class_names[p]}" for t, p in
                          zip(wrong["label"][:MAX_IMAGES], wrong["prediction"][:MAX_IMAGES]))
        tf.summary.image("mistakes", image_grid(tf.gather(examples.image, rows).numpy()),
                         description=f"true->predicted, row by row: {pairs}")

  def hparams_end(self, config, final):
    with self.run_writer.as_default(step=int(final["step"])):
      for key, value in final.items():
        if isinstance(value, float):
          tf.summary.scalar(f"final/{key}", value)

  def flush(self):
    for writer in (self.train_writer, self.validation_writer, self.run_writer):
      writer.flush()


def hparams_of(config):
  """The run's settings as flat hparams for TensorBoard's comparison table."""
  flat = {}
  for field in ("model", "dataset", "epochs", "global_batch_size", "learning_rate", "schedule",
                "label_smoothing", "precision", "seed"):
    flat[field] = getattr(config, field)
  flat["optimizer"] = config.optimizer.name
  flat["weight_decay"] = config.optimizer.weight_decay
  flat["ema_decay"] = config.optimizer.ema_decay
  flat["swa_start_epoch"] = config.swa_start_epoch
  flat["augment"] = config.augment.enabled
  return flat
