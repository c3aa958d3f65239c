"""Trained models as predictors: uint8 images in, probabilities out.

Evaluation, prediction and ensembles all go through a run's exported
SavedModel and its `serving_default` signature, so they see exactly what a
program that loads the export sees. A run without an export, or a chosen
checkpoint, is exported first, in process: the run's config.json rebuilds
its model (training.export.export_checkpoint) into a temporary folder.

A `Predictor` is one exported model or an `Ensemble` of them; both answer
`predict(images, ...)` and name their `source` and `members`.
"""

import glob
import os
import tempfile
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from tfmnist import metrics, run_dir
from tfmnist.data import records
from tfmnist.errors import DataError
from tfmnist.training import config as config_lib
from tfmnist.training import export

# Test-time augmentation: the image itself and its one-pixel shifts; with
# `mirror`, each of them mirrored left-right as well. Mirroring is only for
# datasets whose classes survive it (info.json "digits" false, e.g.
# Fashion-MNIST): a mirrored digit is another symbol or none.
TTA_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))


def tta_views(tta, mirror=False):
  """The (dx, dy, mirrored) views whose predictions are averaged."""
  if not tta:
    return export.IDENTITY_VIEW
  return tuple((dx, dy, flip) for flip in ((False, True) if mirror else (False,))
               for dx, dy in TTA_SHIFTS)


def shift_view(images, dx, dy, mirrored=False):
  """uint8 images [N, 28, 28, 1] moved by whole pixels (and mirrored left-right).

  The same op (export.view) that an export with test-time views runs in its graph.
  """
  if not (dx or dy or mirrored):
    return images
  return export.view(tf.constant(images), dx, dy, mirrored).numpy()


class Predictor:
  """A trained model or an average of several: uint8 images in, probabilities out.

  Attributes:
    class_names: names in label order.
    source: what the predictions come from, for reports (a folder, or several).
    members: the exported models averaged (a single model is its own member).
    weights: each member's share of the average, summing to 1.
    built_in_views: the test-time views the model averages over itself (an
      ensemble exported with them, or an average of such exports); None for
      every other model.
  """
  class_names: list
  source: str
  members: list
  weights: list
  built_in_views = None  # The views an export averages over itself (its manifest's tta_views).

  @property
  def num_classes(self):
    return len(self.class_names)

  def predict(self, images, batch_size=1000, tta=False, mirror=False):
    """Probabilities float32 [N, classes] of uint8 images [N, 28, 28(, 1)].

    With `tta`, the average over the views of `tta_views(tta, mirror)`.
    """
    raise NotImplementedError

  def predict_with_progress(self, images, batch_size=1000, tta=False, mirror=False, bar=None):
    """predict(images, ...) a batch at a time, advancing `bar` (a Progress or None).

    The batches are the ones predict makes itself, so the probabilities are
    the same.
    """
    parts = []
    for start in range(0, len(images), batch_size):
      parts.append(self.predict(images[start:start + batch_size], batch_size, tta, mirror))
      if bar:
        bar.update(len(parts[-1]))
    if not parts:
      return self.predict(images, batch_size, tta, mirror)
    return np.concatenate(parts)


class ExportedModel(Predictor):
  """One SavedModel with the tfmnist serving signatures (predicting through serving_default).

  Args:
    export_dir: the SavedModel folder.
    source: what it is, when not the folder itself (e.g. `<run> @ best`).
  """

  def __init__(self, export_dir, source=None):
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
    self.source = source or export_dir
    self.members = [self]
    self.weights = [1.0]
    # An ensemble exported with test-time views averages over them itself.
    self.built_in_views = run_dir.RunDir(export_dir).read_manifest().get("tta_views")

  def predict(self, images, batch_size=1000, tta=False, mirror=False):
    if tta:
      _refuse_more_views(self)
    images = _as_batch(images)
    views = tta_views(tta, mirror)
    total = np.zeros((len(images), self.num_classes), np.float64)
    for dx, dy, mirrored in views:
      moved = shift_view(images, dx, dy, mirrored)
      for start in range(0, len(images), batch_size):
        batch = tf.constant(moved[start:start + batch_size])
        total[start:start + batch_size] += self._serve(images=batch)["probabilities"].numpy()
    return (total / len(views)).astype(np.float32)


def _shared_views(members):
  """The test-time views every one of `members` averages over itself, None for none.

  Raises:
    DataError: some members average over views and others do not, or over
      other views: their average would read the images unevenly.
  """
  views = [tuple(tuple(v) for v in m.built_in_views or ()) for m in members]
  if len(set(views)) > 1:
    counts = ", ".join(f"{m.source}: {len(v) or 'no'} test-time view{'s' if len(v) != 1 else ''}"
                       for m, v in zip(members, views))
    raise DataError(f"the models average over different test-time views ({counts}); "
                    "export them alike, with or without --tta, before averaging them")
  return [list(v) for v in views[0]] or None


def _refuse_more_views(predictor):
  """Raises ValueError when `predictor` already averages over test-time views itself:
  test-time augmentation on top would compound them (5 shifts of 5 shifts)."""
  if predictor.built_in_views:
    raise ValueError(f"{predictor.source} already averages over "
                     f"{len(predictor.built_in_views)} test-time views (its manifest.json's "
                     "tta_views); drop --tta")


def _as_batch(images):
  images = np.asarray(images)
  if images.dtype != np.uint8:
    raise ValueError(f"images must be uint8, got {images.dtype}")
  if images.ndim == 3:
    images = images[..., None]
  if images.ndim != 4 or images.shape[1:] != (28, 28, 1):
    raise ValueError(f"images must be [N, 28, 28] or [N, 28, 28, 1], got {images.shape}")
  return images


def _class_names(folder, config, records_dir):
  """The run's classes: from its manifest, else from its records' info.json."""
  names = folder.read_manifest().get("class_names")
  if names:
    return names
  return records.read_info(records_dir or config.records_dir, config.dataset)["class_names"]


def load(model_dir, checkpoint="", records_dir=""):
  """The Predictor of a run folder.

  Args:
    model_dir: a run folder (or an export folder itself).
    checkpoint: "" for the run's export (its latest checkpoint when it has no
      export); "latest", "best" or a checkpoint path to use that checkpoint.
    records_dir: where the run's records are, when not where its config says
      (only read for the class names of a run whose manifest lacks them).

  Raises:
    DataError: the folder has no export and no checkpoint, or they cannot be
      loaded.
  """
  if not os.path.isdir(model_dir):
    raise DataError(f"{model_dir}: no such run folder")
  if run_dir.is_export(model_dir):
    if checkpoint:
      raise ValueError(f"{model_dir} is an export, it has no checkpoint {checkpoint!r}; give "
                       "the run folder")
    return ExportedModel(model_dir)
  folder = run_dir.RunDir(model_dir)
  if not checkpoint:
    if folder.has_export():
      return ExportedModel(folder.export)
    if tf.train.latest_checkpoint(folder.checkpoints) is None:
      raise DataError(f"{model_dir}: no export/ and no checkpoints/; train it first with "
                      f"`python -m tfmnist.train --model_dir={model_dir} ...`")
    checkpoint = "latest"
  values = folder.read_config()
  if values is None:
    raise DataError(f"{model_dir}: no config.json to rebuild its model from (the run "
                    "predates it); export the checkpoint with `python -m tfmnist.train "
                    f"--flagfile={os.path.join(model_dir, 'flags.txt')} "
                    f"--export_checkpoint={checkpoint} --export_dir=DIR`")
  config = config_lib.from_dict(values, model_dir)
  # The folder lives as long as the predictor: an ensemble export copies the
  # member's assets from it.
  tmp = tempfile.TemporaryDirectory(prefix="tfmnist-export-")
  destination = os.path.join(tmp.name, "export")
  export.export_checkpoint(config, checkpoint, destination,
                         _class_names(folder, config, records_dir))
  predictor = ExportedModel(destination, source=f"{model_dir} @ {checkpoint}")
  predictor.tmp = tmp
  return predictor


class RunSettings(NamedTuple):
  """What a model trained on; empty when its folder does not say (e.g. a bare export)."""
  dataset: str
  records_dir: str
  train_splits: tuple
  training_noise: float = 0.0  # Std of the Gaussian noise its training images got.


def run_settings(model_dir):
  """The RunSettings of a run folder or an ensemble export (their manifest.json)."""
  manifest = run_dir.RunDir(model_dir).read_manifest()
  config = run_dir.RunDir(model_dir).read_config() or {}
  return RunSettings(manifest.get("dataset", config.get("dataset", "")),
                     manifest.get("records_dir", config.get("records_dir", "")),
                     tuple(manifest.get("train_splits", config.get("train_splits", ["train"]))),
                     float(manifest.get("training_noise",
                                        config.get("augment", {}).get("noise_factor", 0.0))))


def ensemble_settings(model_dirs):
  """The RunSettings an ensemble of these runs inherits.

  The dataset and records folder are those the members that name one agree
  on (empty when they differ); the training splits are every split any
  member trained on; the training noise is the members' when they all
  trained with the same, else none.
  """
  members = [run_settings(d) for d in model_dirs]

  def agreed(values):
    named = {value for value in values if value}
    return named.pop() if len(named) == 1 else ""

  noises = {m.training_noise for m in members}
  return RunSettings(agreed(m.dataset for m in members), agreed(m.records_dir for m in members),
                     tuple(sorted({split for m in members for split in m.train_splits})),
                     noises.pop() if len(noises) == 1 else 0.0)


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


def check_weights(weights, count):
  """`weights` (None: all equal) for `count` models, scaled to sum to 1.

  Raises:
    ValueError: not one positive finite number per model.
  """
  if weights is None:
    return [1.0 / count] * count
  try:
    weights = [float(w) for w in weights]
  except (TypeError, ValueError):
    raise ValueError(f"weights must be numbers, got {list(weights)}") from None
  if len(weights) != count:
    raise ValueError(f"{len(weights)} weights for {count} model(s); give one per run folder, "
                     "in the order the folders are named (a glob's matches sorted)")
  if not all(np.isfinite(w) and w > 0 for w in weights):
    raise ValueError(f"weights must be positive and finite, got {weights}")
  total = sum(weights)
  return [w / total for w in weights]


class Ensemble(Predictor):
  """Predictors whose probabilities are averaged; one member is a plain model.

  Args:
    predictors: the ExportedModels averaged (at least one, all with the same classes).
    settings: RunSettings the ensemble's export records in its manifest.
    weights: one positive number per predictor, its share of the average
      (scaled to sum to 1); None weights them equally. A predictor that is
      itself an Ensemble shares its weight among its members as its own
      weights say.

  Attributes:
    temperature: divides the log of the averaged probabilities (temperature
      scaling, fitted by evaluation.calibration); 1 leaves them as they are.
    calibrated_on: what the temperature was fitted on, "" when it was not.
  """

  def __init__(self, predictors, settings=None, weights=None):
    if not predictors:
      raise ValueError("an ensemble needs at least one model")
    shares = check_weights(weights, len(predictors))
    names = predictors[0].class_names
    for p in predictors[1:]:
      if p.class_names != names:
        raise DataError(f"{p.source}: classes {p.class_names} differ from "
                        f"{predictors[0].source}'s {names}")
    self.members = [m for p in predictors for m in p.members]
    self.weights = [share * w for p, share in zip(predictors, shares) for w in p.weights]
    self.class_names = names
    self.source = ", ".join(m.source for m in self.members)
    self.built_in_views = _shared_views(self.members)
    self.settings = settings
    self.temperature = 1.0
    self.calibrated_on = ""

  def export(self, destination, views=None):
    """Writes the ensemble as one SavedModel with the single-model signatures.

    With settings, its manifest.json names the dataset, records folder and
    training splits, so that evaluation needs no dataset name for it.
    `views` (tta_views(...)) puts test-time augmentation inside the export:
    it then serves what predict(..., tta=True) gives, and its manifest
    lists the views.
    """
    weights = self.weights if len(set(self.weights)) > 1 else None  # None: a plain mean.
    views = tuple(views) if views and len(views) > 1 else None  # None: the image alone.
    if views:
      _refuse_more_views(self)  # Members with views of their own all share them.
    manifest = {}
    if self.settings:
      manifest = {**self.settings._asdict(), "members": [m.source for m in self.members]}
      if weights:
        manifest["weights"] = weights
      if self.calibrated_on:
        manifest.update(temperature=self.temperature, calibrated_on=self.calibrated_on)
    # Always, the members' own views too: loaders read them to refuse a second set.
    listed = views or self.built_in_views
    if listed:
      manifest["tta_views"] = [list(v) for v in listed]
    export.export([m.loaded for m in self.members], self.class_names, destination,
                  manifest or None, self.temperature, weights, views)
    return destination

  def average(self, images, batch_size=1000, tta=False, mirror=False):
    """The members' weighted mean probabilities, before any temperature."""
    total = sum(w * m.predict(images, batch_size, tta, mirror).astype(np.float64)
                for m, w in zip(self.members, self.weights))
    return total.astype(np.float32)

  def predict(self, images, batch_size=1000, tta=False, mirror=False):
    average = self.average(images, batch_size, tta, mirror)
    if self.temperature == 1.0:
      return average
    return metrics.apply_temperature(average, self.temperature)
