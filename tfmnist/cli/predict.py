r"""Predicts with one run or an ensemble: python -m tfmnist.predict --model_dir=RUN --input=...

Inputs:
  --input=test.csv       a Kaggle CSV; --output gets the submission: Digit
                         Recognizer `ImageId,Label` (1-based, input order), or
                         Kannada-MNIST `id,label` when the file has an id column.
  --input=records/mnist  a prepared dataset folder; --split picks the split.
  --input=photos/        image files (PNG, JPEG, ...), or one image file: each is
                         made MNIST-like (grayscale, ink white on black, cropped,
                         20x20 in a 28x28 frame centred by mass).
Several --model_dir values (or globs) average their probabilities;
--weights=3,1,1 weighs them (one number per run folder, in order);
--export_ensemble=DIR saves them as one SavedModel with the same signatures;
with --tta, the export averages over the same views itself.
--calibrate_split=validation fits a temperature on a split the models did
not learn from, so that their probabilities say how often they are right.
"""

import csv
import io
import os
import sys

from absl import app, flags
import numpy as np

from tfmnist import metrics
from tfmnist.cli import startup
from tfmnist.errors import DataError
from tfmnist.progress import Progress

# The modules that need TensorFlow are imported where they are used, after
# the flags are parsed (startup.py).

_MODEL_DIRS = flags.DEFINE_multi_string(
    "model_dir", None, "Run folder(s) or glob(s); several make an ensemble.")
_INPUT = flags.DEFINE_string("input", "", "A CSV file, a records dataset folder, an image "
                             "folder or one image file.")
_OUTPUT = flags.DEFINE_string("output", "", "CSV to write; empty: print the predictions.")
_SPLIT = flags.DEFINE_string("split", "test", "Split to predict when --input is records.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "", "Use this checkpoint of each run ('latest', 'best' or a path) "
    "instead of its export.")
_WEIGHTS = flags.DEFINE_list(
    "weights", [], "Each run folder's share of the ensemble's average, one positive number "
    "per folder in the order named (a glob's matches sorted); empty: equal shares.")
_TTA = flags.DEFINE_bool("tta", False, "Average over one-pixel shifts, and mirror images for "
                         "records of non-digit datasets (test-time augmentation).")
_EXPORT_ENSEMBLE = flags.DEFINE_string(
    "export_ensemble", "", "Write the models as one averaged SavedModel to this folder.")
_CALIBRATE = flags.DEFINE_string(
    "calibrate_split", "", "Fit a temperature to the models' probabilities on this split of "
    "the dataset they trained on (e.g. validation); it goes into predictions and the export.")
_BATCH = flags.DEFINE_integer("batch_size", 1000, "Images per model call.", lower_bound=1)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar over the images.")


class Inputs:
  """Images to predict and how to write their predictions.

  Attributes:
    images: uint8 [N, 28, 28(, 1)].
    header: the output CSV's column names.
    keys: [N] first column(s) of each output row, as a list of tuples.
    labels: [N] true labels or None.
    kind: "csv", "records" or "images".
    digits: the classes do not survive mirroring (test-time augmentation
      leaves mirror images out); only records can say otherwise.
  """

  def __init__(self, images, header, keys, labels, kind, digits=True):
    self.images, self.header, self.keys, self.labels, self.kind = (
        images, header, keys, labels, kind)
    self.digits = digits


def read_inputs(path, num_classes, split):
  """The Inputs of a CSV file, a records dataset folder, an image folder or file."""
  from tfmnist.data import photos, pipeline, records  # pylint: disable=g-import-not-at-top
  from tfmnist.data.sources import csv as csv_source  # pylint: disable=g-import-not-at-top
  if not os.path.exists(path):
    raise DataError(f"{path}: no such file or folder")
  if os.path.isdir(path) and os.path.exists(os.path.join(path, records.INFO_FILE)):
    records_dir, dataset = os.path.split(os.path.normpath(path))
    examples = pipeline.read_examples(records.split_files(records_dir, dataset, split))
    labels = examples.label.numpy()
    digits = records.read_info(records_dir, dataset)["digits"]
    return Inputs(examples.image.numpy(), ["index", "label"],
                  [(int(i), int(l)) for i, l in zip(examples.index.numpy(), labels)],
                  labels if np.all(labels >= 0) else None, "records", digits)
  if path.lower().endswith(".csv"):
    raw = csv_source.read_csv(path, num_classes)
    if raw.ids is not None:  # Kannada-MNIST: echo the test file's ids.
      return Inputs(raw.images, ["id", "label"], [(i,) for i in raw.ids], raw.labels, "csv")
    # Digit Recognizer: 1-based ImageId in input order.
    return Inputs(raw.images, ["ImageId", "Label"], [(i + 1,) for i in range(len(raw))],
                  raw.labels, "csv")
  paths = photos.list_images(path) if os.path.isdir(path) else [path]
  pixels, paths = photos.load_images(paths)
  return Inputs(pixels, ["file", "class", "name", "probability"],
                [(p,) for p in paths], None, "images")


def rows(inputs, probabilities, class_names):
  """Output rows: the input's key columns, then the prediction."""
  predictions = np.argmax(probabilities, -1)
  if inputs.kind == "csv":
    return [key + (int(p),) for key, p in zip(inputs.keys, predictions)]
  confidence = probabilities.max(-1)
  if inputs.kind == "records":
    return [key + (int(p), f"{c:.6f}") for key, p, c in zip(inputs.keys, predictions,
                                                             confidence)]
  return [key + (int(p), class_names[p], f"{c:.6f}")
          for key, p, c in zip(inputs.keys, predictions, confidence)]


def header(inputs):
  if inputs.kind == "records":
    return inputs.header + ["prediction", "probability"]
  return inputs.header


def csv_text(head, body):
  """The CSV of a header row and rows: what --output gets, and the console without it."""
  buffer = io.StringIO()
  writer = csv.writer(buffer, lineterminator="\n")
  writer.writerow(head)
  writer.writerows(body)
  return buffer.getvalue()


def write_csv(path, head, body):
  """Writes the CSV under a temporary name, then renames it into place."""
  from tfmnist import files  # pylint: disable=g-import-not-at-top
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise DataError(f"{path}: folder {folder} does not exist")
  files.write_text_atomically(path, csv_text(head, body))


def export_views(settings):
  """The test-time views --export_ensemble puts inside the export (None: the image alone).

  With --tta: the one-pixel shifts, and their mirror images when the classes
  of the runs' dataset survive mirroring, as its info.json says.
  """
  from tfmnist.data import records  # pylint: disable=g-import-not-at-top
  from tfmnist.serving import inference  # pylint: disable=g-import-not-at-top
  if not _TTA.value:
    return None
  if not (settings.dataset and settings.records_dir):
    raise DataError("--tta with --export_ensemble: the runs name no one dataset and records "
                    "folder, so whether mirror images belong among the views is unknown")
  digits = records.read_info(settings.records_dir, settings.dataset)["digits"]
  return inference.tta_views(True, mirror=not digits)


def calibrate(model, split, batch_size, tta=False):
  """Fits the ensemble's temperature on `split` of its members' dataset; prints the gain.

  With `tta`, on the averages over the test-time views that predictions and
  the export then use.
  """
  from tfmnist.evaluation import calibration  # pylint: disable=g-import-not-at-top
  try:
    count, before, after = calibration.calibrate(model, split, batch_size, tta)
  except DataError as e:
    raise DataError(f"--calibrate_split={split}: {e}") from None
  print(f"temperature {model.temperature:.4f} fitted on {model.calibrated_on} "
        f"({count} images): log loss {before:.4f} -> {after:.4f}", file=sys.stderr)


def main(argv):
  if not _INPUT.value and not _EXPORT_ENSEMBLE.value:
    raise app.UsageError("give --input (and --output), or --export_ensemble")
  startup.begin(argv, "predict")
  from tfmnist.serving import inference  # pylint: disable=g-import-not-at-top
  try:
    model_dirs = inference.expand_model_dirs(_MODEL_DIRS.value)
    weights = _WEIGHTS.value or None
    inference.check_weights(weights, len(model_dirs))  # Before loading any model.
    model = inference.Ensemble([inference.load(d, _CHECKPOINT.value) for d in model_dirs],
                               inference.ensemble_settings(model_dirs), weights)
    if _CALIBRATE.value:
      calibrate(model, _CALIBRATE.value, _BATCH.value, _TTA.value)
    if _EXPORT_ENSEMBLE.value:
      views = export_views(model.settings)
      model.export(_EXPORT_ENSEMBLE.value, views)
      count = len(model.members)
      print(f"{'ensemble of ' if count > 1 else ''}{count} model{'s' if count > 1 else ''} "
            f"exported to {_EXPORT_ENSEMBLE.value}"
            f"{f', averaging over {len(views)} test-time views' if views else ''}")
    if not _INPUT.value:
      return
    inputs = read_inputs(_INPUT.value, model.num_classes, _SPLIT.value)
    bar = Progress(len(inputs.images), "images", desc="predicting", enabled=_PROGRESS.value)
    probabilities = model.predict_with_progress(inputs.images, _BATCH.value, _TTA.value,
                                                not inputs.digits, bar)
    body = rows(inputs, probabilities, model.class_names)
    if _OUTPUT.value:
      write_csv(_OUTPUT.value, header(inputs), body)
    else:
      print(csv_text(header(inputs), body), end="")
  except (DataError, ValueError) as e:
    sys.exit(f"predict: error: {e}")
  summary = f"{len(body)} predictions from {len(model.members)} model(s)"
  if _WEIGHTS.value:
    summary += " weighted " + ", ".join(f"{w:.4g}" for w in model.weights)
  if inputs.labels is not None:
    # Log loss tells apart models whose accuracies tie: it scores every image.
    accuracy = float(np.mean(np.argmax(probabilities, -1) == inputs.labels))
    loss = metrics.log_loss(inputs.labels, probabilities)
    summary += f"; accuracy {accuracy:.4%}, log loss {loss:.4f} against the input's labels"
  if _OUTPUT.value:
    summary += f"; written to {_OUTPUT.value}"
  print(summary, file=sys.stderr if not _OUTPUT.value else sys.stdout)


def run():
  flags.mark_flag_as_required("model_dir")
  app.run(main)


if __name__ == "__main__":
  run()
