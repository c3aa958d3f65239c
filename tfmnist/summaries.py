"""What a run leaves behind besides checkpoints: TensorBoard logs and run files.

Under `<model_dir>/logs`: train/ and validation/ scalars, the augmented
samples and the validation mistakes as images, the run's flags as text, and
the hparams plugin's record of the run with its final metrics.
"""

import json
import os
import platform
import shutil
import sys

import keras
import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

import tfmnist
from tfmnist import augment as augment_lib
from tfmnist import data

_MAX_IMAGES = 64


def is_chief(strategy):
  """True on the worker that writes checkpoints, summaries and the export."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  if resolver.task_type == "chief":
    return True
  has_chief = "chief" in resolver.cluster_spec().as_dict()
  return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def worker_dir(model_dir, strategy):
  """model_dir on the chief; a scratch folder inside it on other workers."""
  if is_chief(strategy):
    return model_dir
  resolver = strategy.cluster_resolver
  return os.path.join(model_dir, ".workers", f"{resolver.task_type}_{resolver.task_id}")


def cleanup_worker_dir(work_dir, model_dir):
  if os.path.abspath(work_dir) != os.path.abspath(model_dir):
    shutil.rmtree(work_dir, ignore_errors=True)


def write_run_files(config, info, model_dir):
  """flags.txt and manifest.json (versions, record checksums, seed)."""
  with open(os.path.join(model_dir, "flags.txt"), "w") as f:
    f.write(config.flags_text)
  manifest = {
      "tfmnist": tfmnist.__version__, "tensorflow": tf.__version__,
      "keras": keras.__version__, "numpy": np.__version__,
      "python": platform.python_version(), "command": " ".join(sys.argv),
      "seed": config.seed, "dataset": config.dataset, "model": config.model,
      "records": {split: [{"file": s["file"], "sha256": s.get("sha256")}
                          for s in summary["shards"]]
                  for split, summary in info["splits"].items()},
  }
  with open(os.path.join(model_dir, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)


def image_grid(images, columns=8):
  """Tiles uint8 or float images [N, 28, 28, 1] into one [1, H, W, 1] image."""
  images = np.asarray(images, np.float32)
  if images.max(initial=0) > 1.0:
    images = images / 255.0
  count = len(images)
  rows = max(1, -(-count // columns))
  padded = np.zeros((rows * columns,) + images.shape[1:], np.float32)
  padded[:count] = images
  h, w = images.shape[1], images.shape[2]
  grid = padded.reshape(rows, columns, h, w, 1).transpose(0, 2, 1, 3, 4)
  return grid.reshape(1, rows * h, columns * w, 1)


class Writers:
  """The run's TensorBoard writers (no-ops off the chief)."""

  def __init__(self, log_dir, enabled=True):
    self.log_dir = log_dir
    if enabled:
      self.train_writer = tf.summary.create_file_writer(os.path.join(log_dir, "train"))
      self.validation_writer = tf.summary.create_file_writer(os.path.join(log_dir, "validation"))
      self.run_writer = tf.summary.create_file_writer(log_dir)
    else:
      self.train_writer = self.validation_writer = self.run_writer = (
          tf.summary.create_noop_writer())

  def run_start(self, config, info, examples):
    """Flags as text, hparams, and a grid of augmented samples."""
    images = data.normalize(examples.image[:_MAX_IMAGES])
    augmented = augment_lib.augment(images, config.augment, config.seed, 0)
    with self.run_writer.as_default(step=0):
      tf.summary.text("flags", "\n".join(f"    {line}" for line in
                                         config.flags_text.splitlines()) or "(none)")
      hparams_api.hparams(hparams_of(config), trial_id=os.path.basename(
          os.path.abspath(os.path.join(self.log_dir, ".."))))
    with self.train_writer.as_default(step=0):
      tf.summary.image("augmented_samples", image_grid(augmented.numpy()),
                       description=f"{info['dataset']}: augmentation {config.augment}")

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
        rows = [positions[int(i)] for i in wrong["index"][:_MAX_IMAGES]]
        pairs = ", ".join(f"{class_names[t]}->{class_names[p]}" for t, p in
                          zip(wrong["label"][:_MAX_IMAGES], wrong["prediction"][:_MAX_IMAGES]))
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
  flat["augment"] = config.augment.enabled
  return flat
