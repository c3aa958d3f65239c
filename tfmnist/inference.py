"""Trained models as predictors: uint8 images in, probabilities out.

Evaluation, prediction and ensembles all go through a run's exported
SavedModel and its `serving_default` signature, so they see exactly what a
program that loads the export sees. A run without an export, or a chosen
checkpoint, is exported first by the training command itself
(`python -m tfmnist.train --flagfile=<run>/flags.txt --export_checkpoint=...`),
which rebuilds the run's model from its own flags.
"""

import glob
import json
import os
import subprocess
import sys
import tempfile
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfmnist import export, metrics
from tfmnist import images as images_lib
from tfmnist.errors import DataError

# Test-time augmentation: the image itself and its one-pixel shifts; with
# `mirror`, each of them mirrored left-right as well. Mirroring is only for
# datasets whose classes survive it (info.json "digits" false, e.g.
# Fashion-MNIST): a mirrored digit is another symbol or none.
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def tta_views(tta, mirror=False):
  """The (dx, dy, mirrored) views whose predictions are averaged."""
  if not tta:
    return ((0, 0, False),)
  return tuple((dx, dy, flip) for flip in ((False, True) if mirror else (False,))
               for dx, dy in TTA_SHIFTS)


class Predictor:
  """One SavedModel with the tfmnist serving signature.

  Attributes:
    path: what was loaded (the export folder, or `<run> @ <checkpoint>`).
    class_names: names in label order, from the export's asset.
  """

  def __init__(self, export_dir, label=None):
    try:
      self.loaded = tf.saved_model.load(export_dir)
      self._serve = self.loaded.signatures["serving_default"]
    except (OSError, ValueError, KeyError, tf.errors.OpError) as e:
      raise DataError(f"{export_dir}: not a loadable tfmnist SavedModel "
                      f"({str(e).splitlines()[0]})") from None
    names = os.path.join(export_dir, "assets", export.CLASS_NAMES_FILE)
    if not os.path.exists(names):
      raise DataError(f"{export_dir}: no assets/{export.CLASS_NAMES_FILE}; not a tfmnist export")
    with open(names) as f:
      self.class_names = [line.rstrip("\n") for line in f]
    self.path = label or export_dir

  @property
  def num_classes(self):
    return len(self.class_names)

  def predict(self, images, batch_size=1000, tta=False, mirror=False):
    """Probabilities float32 [N, classes] of uint8 images [N, 28, 28(, 1)].

    With `tta`, the average over the views of `tta_views(tta, mirror)`.
    """
    images = _as_batch(images)
    views = tta_views(tta, mirror)
    total = np.zeros((len(images), self.num_classes), np.float64)
    for dx, dy, mirrored in views:
      moved = images_lib.shift_images(images, dx, dy)
      if mirrored:
        moved = np.ascontiguousarray(moved[:, :, ::-1])
      for start in range(0, len(images), batch_size):
        batch = tf.constant(moved[start:start + batch_size])
        total[start:start + batch_size] += self._serve(images=batch)["probabilities"].numpy()
    return (total / len(views)).astype(np.float32)


def predict_with_progress(model, images, batch_size=1000, tta=False, mirror=False, bar=None):
  """model.predict(images, ...) one batch at a time, advancing `bar` by each batch's images.

  The batches are the ones model.predict makes itself, so the probabilities
  are the same. `model` is a Predictor or an Ensemble; `bar` a Progress or None.
  """
  parts = []
  for start in range(0, len(images), batch_size):
    parts.append(model.predict(images[start:start + batch_size], batch_size, tta, mirror))
    if bar:
      bar.update(len(parts[-1]))
  if not parts:
    return model.predict(images, batch_size, tta, mirror)
  return np.concatenate(parts)


def _as_batch(images):
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(f"images must be uint8, got {images.dtype}")
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[1:] != (28, 28, 1):
    raise ValueError(f"images must be [N, 28, 28] or [N, 28, 28, 1], got {images.shape}")
  return images


def _export_checkpoint(model_dir, checkpoint, destination, records_dir=""):
  """Runs the training command's --export_checkpoint for one run."""
  flagfile = os.path.join(model_dir, "flags.txt")
  if not os.path.exists(flagfile):
    raise DataError(f"{model_dir}: no flags.txt, so its checkpoints cannot be rebuilt into a "
                    "model")
  command = [sys.executable, "-m", "tfmnist.train", f"--flagfile={flagfile}",
             f"--model_dir={model_dir}", f"--export_checkpoint={checkpoint}",
             f"--export_dir={destination}", "--noprogress"]
  if records_dir:
    command.append(f"--records_dir={records_dir}")
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  if result.returncode:
    lines = [l for l in result.stderr.splitlines() if l.startswith("train: error:")]
    reason = lines[-1][len("train: error: "):] if lines else (
        result.stderr.strip().splitlines() or ["unknown failure"])[-1]
    raise DataError(f"{model_dir}: exporting checkpoint {checkpoint!r} failed: {reason}")


def load(model_dir, checkpoint="", records_dir=""):
  """The Predictor of a run folder.

  Args:
    model_dir: a run folder (or an export folder itself).
    checkpoint: "" for the run's export (its latest checkpoint when it has no
      export); "latest", "best" or a checkpoint path to use that checkpoint.
    records_dir: where the run's records are, when not where its flags say
      (only needed to rebuild a model from a checkpoint).

  Raises:
    DataError: the folder has no export and no checkpoint, or they cannot be
      loaded.
  """
  if not os.path.isdir(model_dir):
    raise DataError(f"{model_dir}: no such run folder")
  if os.path.exists(os.path.join(model_dir, "saved_model.pb")):
    if checkpoint:
      raise ValueError(f"{model_dir} is an export, it has no checkpoint {checkpoint!r}; give "
                       "the run folder")
    return Predictor(model_dir)
  if not checkpoint:
    if os.path.exists(os.path.join(export.run_export_dir(model_dir), "saved_model.pb")):
      return Predictor(export.run_export_dir(model_dir))
    if tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")) is None:
      raise DataError(f"{model_dir}: no export/ and no checkpoints/; train it first with "
                      f"`python -m tfmnist.train --model_dir={model_dir} ...`")
    checkpoint = "latest"
  # The folder lives as long as the predictor: an ensemble export copies the
  # member's assets from it.
  tmp = tempfile.TemporaryDirectory(prefix="tfmnist-export-")
  destination = os.path.join(tmp.name, "export")
  _export_checkpoint(model_dir, checkpoint, destination, records_dir)
  predictor = Predictor(destination, label=f"{model_dir} @ {checkpoint}")
  predictor.tmp = tmp
  return predictor


class RunSettings(NamedTuple):
  """What a model trained on; empty when its folder does not say (e.g. a bare export)."""
  dataset: str
  records_dir: str
  train_splits: tuple


def run_settings(model_dir):
  """The RunSettings of a run folder (manifest.json and flags.txt) or ensemble export."""
  dataset, records_dir, train_splits = "", "", ()
  try:
    with open(os.path.join(model_dir, "manifest.json")) as f:
      manifest = json.load(f)
    dataset = manifest.get("dataset", "")
    records_dir = manifest.get("records_dir", "")  # Ensembles; runs keep it in flags.txt.
    train_splits = tuple(manifest.get("train_splits", ["train"]))
  except (OSError, ValueError, AttributeError):
    pass
  try:
    with open(os.path.join(model_dir, "flags.txt")) as f:
      for line in f:
        if line.startswith("--records_dir="):
          records_dir = line.strip().split("=", 1)[1]
  except OSError:
    pass
  return RunSettings(dataset, records_dir, train_splits)


def ensemble_settings(model_dirs):
  """The RunSettings an ensemble of these runs inherits.

  The dataset and records folder are those the members that name one agree
  on (empty when they differ); the training splits are every split any
  member trained on.
  """
  members = [run_settings(d) for d in model_dirs]

  def agreed(values):
    named = {value for value in values if value}
    return named.pop() if len(named) == 1 else ""

  return RunSettings(agreed(m.dataset for m in members), agreed(m.records_dir for m in members),
                     tuple(sorted({split for m in members for split in m.train_splits})))


def expand_model_dirs(patterns):
  """Run folders named by paths or glob patterns, in the order given."""
  found = []
  for pattern in patterns:
    matches = ([m for m in sorted(glob.glob(pattern)) if os.path.isdir(m)]
               if glob.has_magic(pattern) else [pattern])
    if not matches:
      raise DataError(f"{pattern}: no run folder matches")
    found += [m for m in matches if m not in found]
  return found


class Ensemble:
  """Predictors whose probabilities are averaged; one member is a plain model."""

  def __init__(self, predictors, settings=None):
    """Averages `predictors`; `settings` (RunSettings) goes into the export's manifest.

    `temperature` (1: none) rescales the averaged probabilities; `calibrate`
    fits it.
    """
    if not predictors:
      raise ValueError("an ensemble needs at least one model")
    names = predictors[0].class_names
    for p in predictors[1:]:
      if p.class_names != names:
        raise DataError(f"{p.path}: classes {p.class_names} differ from "
                        f"{predictors[0].path}'s {names}")
    self.members = list(predictors)
    self.class_names = names
    self.settings = settings
    self.temperature = 1.0
    self.calibrated_on = ""

  @property
  def num_classes(self):
    return len(self.class_names)

  def export(self, destination):
    """Writes the ensemble as one SavedModel with the single-model signature.

    With settings, its manifest.json names the dataset, records folder and
    training splits, so that tfmnist.evaluate needs no --dataset for it.
    """
    manifest = None
    if self.settings:
      manifest = {**self.settings._asdict(), "members": [m.path for m in self.members]}
      if self.calibrated_on:
        manifest.update(temperature=self.temperature, calibrated_on=self.calibrated_on)
    export.export([m.loaded for m in self.members], self.class_names, destination, manifest,
                  self.temperature)
    return destination

  def calibrate(self, images, labels, name, batch_size=1000):
    """Fits the temperature on labelled images no member learned from.

    Temperature scaling (metrics.fit_temperature) of the plain, non-TTA
    probabilities: it changes no prediction, only how sure each one is.

    Args:
      images, labels: the held-out images, uint8 [N, 28, 28(, 1)], and [N].
      name: what they are (e.g. "mnist validation"), kept in the manifest.
      batch_size: images per model call.

    Returns:
      The cross-entropy on these images (before, after).
    """
    plain = self._average(images, batch_size, tta=False, mirror=False)
    self.temperature = metrics.fit_temperature(labels, plain)
    self.calibrated_on = name
    scaled = metrics.apply_temperature(plain, self.temperature)
    return metrics.log_loss(labels, plain), metrics.log_loss(labels, scaled)

  def _average(self, images, batch_size, tta, mirror):
    total = sum(m.predict(images, batch_size, tta, mirror).astype(np.float64)
                for m in self.members)
    return (total / len(self.members)).astype(np.float32)

  def predict(self, images, batch_size=1000, tta=False, mirror=False):
    average = self._average(images, batch_size, tta, mirror)
    if self.temperature == 1.0:
      return average
    return metrics.apply_temperature(average, self.temperature)
