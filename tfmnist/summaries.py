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
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import api as hparams_api

import tfmnist
from tfmnist import augment as augment_lib
from tfmnist import data, hardware

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
  """Removes a non-chief's scratch folder, and `.workers` once no worker has one."""
  if os.path.abspath(work_dir) != os.path.abspath(model_dir):
    shutil.rmtree(work_dir, ignore_errors=True)
    try:
      os.rmdir(os.path.dirname(work_dir))
    except OSError:  # Another worker's folder is still there.
      pass


def read_manifest(model_dir):
  """The run's manifest.json, or {} when it has none (yet) or it is unreadable."""
  try:
    with open(os.path.join(model_dir, "manifest.json")) as f:
      manifest = json.load(f)
  except (OSError, ValueError):
    return {}
  return manifest if isinstance(manifest, dict) else {}


def write_run_files(config, info, model_dir, precision):
  """flags.txt and manifest.json (versions, machine, precision, record checksums, seed).

  Args:
    precision: {"requested", "policy", "reason"} of the run's dtype policy.
  """
  with open(os.path.join(model_dir, "flags.txt"), "w") as f:
    f.write(config.flags_text)
  manifest = {
      "tfmnist": tfmnist.__version__, "tensorflow": tf.__version__,
      "keras": keras.__version__, "numpy": np.__version__,
      "python": platform.python_version(), "command": " ".join(sys.argv),
      "cpu": hardware.describe_cpu(), "precision": precision, "seed": config.seed, "dataset": config.dataset, "model": config.model,
      "train_splits": list(config.train_splits),
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


# 0 keeps every event: the default guidance samples 10,000 scalars and only 10
# tensors per tag, and TF2 writes its scalars as tensors.
_KEEP_ALL = {event_accumulator.SCALARS: 0, event_accumulator.TENSORS: 0}
_RUNS = ("train", "validation")


def _scalar_events(folder):
  """{tag: [(step, wall_time, value)]} of the scalar summaries in one run's folder."""
  # Purging would drop events by TensorBoard's own guess at restarts; the
  # caller's rule for rewritten steps (latest write wins) is applied instead.
  accumulator = event_accumulator.EventAccumulator(folder, size_guidance=_KEEP_ALL,
                                                   purge_orphaned_data=False)
  accumulator.Reload()
  tags = accumulator.Tags()
  # tf.summary.scalar (TF2) writes a tensor tagged for the scalars plugin;
  # tensors of other plugins (images, text, hparams) are left out.
  try:
    plugin_tags = accumulator.PluginTagToContent("scalars")
  except KeyError:  # Nothing in the folder was written for the scalars plugin.
    plugin_tags = {}
  events = {tag: [(e.step, e.wall_time, float(tf.make_ndarray(e.tensor_proto)))
                  for e in accumulator.Tensors(tag)]
            for tag in tags[event_accumulator.TENSORS] if tag in plugin_tags}
  # Old-style (TF1) summaries keep scalars in their own field.
  for tag in tags[event_accumulator.SCALARS]:
    events.setdefault(tag, []).extend((e.step, e.wall_time, e.value)
                                      for e in accumulator.Scalars(tag))
  return events


def _by_step(events):
  """(steps int64, values float64) sorted by step, the latest write of a step winning."""
  steps = np.array([e[0] for e in events], np.int64)
  wall_times = np.array([e[1] for e in events], np.float64)
  values = np.array([e[2] for e in events], np.float64)
  # Sort by step, then by write time, then by reading order (for equal times);
  # the last entry of each step is then its latest write.
  order = np.lexsort((np.arange(len(steps)), wall_times, steps))
  steps, values = steps[order], values[order]
  last = np.append(steps[1:] != steps[:-1], True)
  return steps[last], values[last]


def read_scalars(log_dir):
  """The scalars that training wrote under `log_dir`, read with TensorBoard's reader.

  Args:
    log_dir: the run's logs folder (`<model_dir>/logs`), holding train/ and
      validation/ event files as `Writers` writes them.

  Returns:
    {"train": {tag: (steps, values)}, "validation": {tag: (steps, values)}}
    with steps an int64 array in increasing order and values a float64 array
    of the same length. A step written more than once (a resumed run repeats
    the steps after its last checkpoint) keeps its latest value. A run whose
    folder is missing maps to {}.

  Raises:
    ValueError: log_dir does not exist.
  """
  if not tf.io.gfile.isdir(log_dir):
    raise ValueError(f"no log folder {log_dir!r}")
  scalars = {}
  for run in _RUNS:
    folder = os.path.join(log_dir, run)
    events = _scalar_events(folder) if tf.io.gfile.isdir(folder) else {}
    scalars[run] = {tag: _by_step(run_events) for tag, run_events in sorted(events.items())}
  return scalars
