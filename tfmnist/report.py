"""The evaluation report of a trained model on one split: `write_report(...)`.

Everything lands in `<output_dir>/eval/<split>/` (output_dir is the run
folder unless told otherwise): metrics.json, the figures
(confusion matrix, most confident mistakes, training curves, reliability
diagram, robustness) and report.md, which shows them all. The folder is
written under a temporary name and renamed at the end, so an interrupted
evaluation leaves the previous report whole.
"""

import dataclasses
import json
import os
import time

import numpy as np
import tensorflow as tf

from tfmnist import augment, data, figures, inference, metrics, prepare, records, summaries
from tfmnist import images as images_lib
from tfmnist.errors import DataError
from tfmnist.progress import Progress

NOISE_FACTORS = tuple(round(0.1 * i, 1) for i in range(11))
ROTATION_DEGREES = (-20, -15, -10, -5, 0, 5, 10, 15, 20)
SHIFT_PIXELS = (0, 1, 2, 3, 4)
# Passes of the robustness sweeps over their images: every level but the
# unperturbed one, which reuses the plain predictions.
SWEEP_PASSES = sum(1 for levels in (NOISE_FACTORS, ROTATION_DEGREES, SHIFT_PIXELS)
                   for level in levels if level)
_SHIFT_DIRECTIONS = ((1, 0), (-1, 0), (0, 1), (0, -1))


@dataclasses.dataclass
class ReportConfig:
  """What to evaluate and how.

  Attributes:
    model_dir: the run folder, whose logs give the training curves.
    output_dir: the report goes to <output_dir>/eval/<split> and its
      TensorBoard summaries to <output_dir>/logs/eval_<split>; empty: model_dir.
    records_dir, dataset, split: the images evaluated.
    top_mistakes: mistakes shown in the grid.
    robustness: run the noise, rotation and shift sweeps.
    robustness_images: the sweeps run on this many images of the split (a
      seeded, class-stratified choice; 0 or more than the split: all). Each
      sweep point is one pass over them, 22 passes in all.
    seed: seed of the Gaussian noise.
    batch_size: images per call of the model.
    tta: test-time augmentation: one-pixel shifts, and mirror images too when
      the dataset's info.json says its classes are not digits.
    trained_on_split: the model learned from these images; the report says so.
    progress: show a progress bar over the images predicted, sweeps included.
  """
  model_dir: str
  output_dir: str = ""
  records_dir: str = "records"
  dataset: str = "mnist"
  split: str = "test"
  top_mistakes: int = 24
  robustness: bool = True
  robustness_images: int = 2000
  seed: int = 0
  batch_size: int = 1000
  tta: bool = False
  trained_on_split: bool = False
  progress: bool = False


def read_split_for(predictor, records_dir, dataset, split):
  """read_split(...), checked to have the classes of `predictor` (a Predictor or Ensemble)."""
  info, images, labels = read_split(records_dir, dataset, split)
  if info["num_classes"] != predictor.num_classes:
    who = (f"the model {predictor.path} predicts" if hasattr(predictor, "path") else
           f"the {len(predictor.members)} models predict")
    raise DataError(f"{records.dataset_dir(records_dir, dataset)}: {info['num_classes']} "
                    f"classes, but {who} {predictor.num_classes}")
  return info, images, labels


def read_split(records_dir, dataset, split):
  """(info, uint8 images [N, 28, 28, 1], int labels [N]) of a labelled split."""
  info = records.read_info(records_dir, dataset)
  examples = data.read_examples(records.split_files(records_dir, dataset, split))
  labels = examples.label.numpy()
  if np.any(labels < 0):
    raise DataError(f"{records.dataset_dir(records_dir, dataset)}: split {split!r} has no "
                    "labels to evaluate against; use `python -m tfmnist.predict` for it")
  return info, examples.image.numpy(), labels


# ----------------------------------------------------------------------------
# Robustness
# ----------------------------------------------------------------------------


def add_noise(images, factor, seed):
  """uint8 images plus Gaussian noise of std `factor` (pixels in [0, 1]), clipped."""
  if factor == 0:
    return images
  noise = np.random.default_rng(seed).standard_normal(images.shape, np.float32)
  noisy = images.astype(np.float32) / 255.0 + factor * noise
  return np.round(np.clip(noisy, 0.0, 1.0) * 255.0).astype(np.uint8)


def rotate(images, degrees):
  """uint8 images turned counter-clockwise by `degrees` (bilinear, black fill)."""
  if degrees == 0:
    return images
  count = len(images)
  zeros, ones = tf.zeros([count]), tf.ones([count])
  matrices = augment.affine_matrices(tf.fill([count], np.deg2rad(degrees).astype(np.float32)),
                                     zeros, ones, ones, zeros, zeros)
  turned = augment.transform(tf.cast(images, tf.float32), matrices)
  return tf.cast(tf.round(tf.clip_by_value(turned, 0.0, 255.0)), tf.uint8).numpy()


def sweep_subset(labels, count, seed=0):
  """Sorted row indices of `count` images, the same share of every class."""
  if count <= 0 or count >= len(labels):
    return np.arange(len(labels))
  # The same draw that carves the validation split from train.
  return prepare.stratified_split(labels, count, seed)[1]


def shift_each(images, pixels):
  """Images moved by `pixels`: left, right, up or down, in turn by row.

  Row i goes in direction i mod 4, so each direction moves a quarter of the
  images (and, the classes being shuffled in the records, about a quarter
  of every class).
  """
  moved = np.empty_like(images)
  for i, (dx, dy) in enumerate(_SHIFT_DIRECTIONS):
    moved[i::4] = images_lib.shift_images(images[i::4], pixels * dx, pixels * dy)
  return moved


def robustness(predict, images, labels, seed=0, clean_probabilities=None):
  """Accuracy under Gaussian noise, rotations and shifts.

  Every sweep point is one pass of `predict` over the images: 10 noise
  levels, 8 rotations and 4 shifts, 22 passes in all (23 without
  `clean_probabilities`).

  Args:
    predict: uint8 images -> probabilities [N, classes].
    images, labels: the split.
    seed: seed of the noise.
    clean_probabilities: predict(images) when the caller already has it.

  Returns:
    {name: {"levels", "accuracy", "unit"}} for figures.robustness_figure.
  """
  def accuracy(perturbed=None, probabilities=None):
    if probabilities is None:
      probabilities = predict(perturbed)
    return float(np.mean(np.argmax(probabilities, -1) == labels))

  clean = accuracy(images, clean_probabilities)
  return {
      "gaussian noise": {"unit": "noise std (pixels in [0, 1])", "levels": list(NOISE_FACTORS),
                         "accuracy": [clean if f == 0 else accuracy(add_noise(images, f, seed))
                                      for f in NOISE_FACTORS]},
      "rotation": {"unit": "degrees", "levels": list(ROTATION_DEGREES),
                   "accuracy": [clean if d == 0 else accuracy(rotate(images, d))
                                for d in ROTATION_DEGREES]},
      "shift": {"unit": "pixels (a quarter of the images each left, right, up, down)",
                "levels": list(SHIFT_PIXELS),
                "accuracy": [clean if p == 0 else accuracy(shift_each(images, p))
                             for p in SHIFT_PIXELS]},
  }


# ----------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------


def _tensorboard(model_dir, split, result, confusion_png, step):
  """The confusion matrix image and the metrics under <model_dir>/logs/eval_<split>."""
  writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs", f"eval_{split}"))
  with writer.as_default(step=step):
    tf.summary.image("confusion_matrix", tf.io.decode_png(confusion_png)[None],
                     description=f"{split}: rows true class, columns predicted")
    tf.summary.scalar("accuracy", result["accuracy"])
    tf.summary.scalar("loss", result["loss"])
    tf.summary.scalar("expected_calibration_error", result["expected_calibration_error"])
  writer.close()


def _final_step(model_dir):
  try:
    with open(os.path.join(model_dir, "metrics.json")) as f:
      return int(json.load(f)["step"])
  except (OSError, ValueError, KeyError):
    return 0


def _markdown(config, source, result, robust, robust_images, figure_names, seconds, mirror):
  tta = ""
  if config.tta:
    tta = (" with test-time augmentation (one-pixel shifts"
           f"{' and mirror images' if mirror else ''})")
  lines = [f"# Evaluation of {config.model_dir} on {config.dataset} / {config.split}", "",
           f"Model: `{source}`{tta}. "
           f"{result['count']} images, evaluated in {seconds:.1f} s.", "",
           *([f"**The model trained on this split**: these figures measure how well it "
              "fits its training images, not its accuracy on new ones.", ""]
             if config.trained_on_split else []),
           "| metric | value |", "| --- | --- |",
           f"| accuracy | {result['accuracy']:.4%} |",
           f"| errors | {result['error_count']} of {result['count']} |",
           f"| loss (cross-entropy) | {result['loss']:.4f} |",
           f"| expected calibration error | {result['expected_calibration_error']:.4f} |",
           f"| macro F1 | {result['macro_f1']:.4f} |", "",
           "## Per class", "", "| class | support | precision | recall | F1 |",
           "| --- | ---: | ---: | ---: | ---: |"]
  for row in result["per_class"]:
    lines.append(f"| {row['name']} | {row['support']} | {row['precision']:.4f} | "
                 f"{row['recall']:.4f} | {row['f1']:.4f} |")
  titles = {"confusion": "Confusion matrix",
            "mistakes": f"The {config.top_mistakes} most confident mistakes",
            "curves": "Training curves", "reliability": "Reliability diagram",
            "robustness": "Robustness"}
  for key, name in figure_names.items():
    lines += ["", f"## {titles[key]}", "", f"![{titles[key]}]({name})"]
  if robust:
    lines += ["", f"On {robust_images} images of the split, the same share of each class.",
              "", "| perturbation | level | accuracy |", "| --- | ---: | ---: |"]
    for kind, sweep in robust.items():
      for level, acc in zip(sweep["levels"], sweep["accuracy"]):
        lines.append(f"| {kind} ({sweep['unit']}) | {level:g} | {acc:.4%} |")
  return "\n".join(lines) + "\n"


def write_report(config, predictor):
  """Evaluates `predictor` on the split and writes <output_dir>/eval/<split>/.

  Args:
    config: ReportConfig.
    predictor: inference.Predictor or inference.Ensemble.

  Returns:
    (report folder, metrics dict).

  Raises:
    DataError: missing records, an unlabelled split, or classes that differ
      between the dataset and the model.
  """
  start = time.perf_counter()
  info, images, labels = read_split_for(predictor, config.records_dir, config.dataset,
                                       config.split)
  class_names = info["class_names"]

  mirror = not info["digits"]
  chosen = (sweep_subset(labels, config.robustness_images, config.seed) if config.robustness
            else np.arange(0))
  bar = Progress(len(images) + SWEEP_PASSES * len(chosen), "images",
                 desc=f"evaluating {config.dataset} {config.split}", enabled=config.progress)

  def predict(batch):
    return inference.predict_with_progress(predictor, batch, config.batch_size, config.tta,
                                           mirror, bar)

  probabilities = predict(images)
  result = metrics.classification_metrics(labels, probabilities, class_names)
  robust, robust_images = None, 0
  if config.robustness:
    robust = robustness(predict, images[chosen], labels[chosen], config.seed,
                        clean_probabilities=probabilities[chosen])
    robust_images = int(len(chosen))

  output_dir = config.output_dir or config.model_dir
  final = os.path.join(output_dir, "eval", config.split)
  with records.atomic_folder(final, overwrite=True) as tmp:
    names = {"confusion": "confusion.png", "mistakes": "mistakes.png"}
    title = f"{config.dataset} {config.split}: accuracy {result['accuracy']:.2%}"
    figures.confusion_figure(np.array(result["confusion_matrix"]), class_names,
                             os.path.join(tmp, names["confusion"]), title=title)
    worst = metrics.top_mistakes(labels, probabilities, config.top_mistakes)
    figures.mistakes_grid(images[worst], labels[worst], np.argmax(probabilities[worst], -1),
                          probabilities[worst].max(-1), class_names,
                          os.path.join(tmp, names["mistakes"]))
    log_dir = os.path.join(config.model_dir, "logs")
    if any(os.path.isdir(os.path.join(log_dir, run)) for run in ("train", "validation")):
      names["curves"] = "curves.png"
      figures.curves_figure(summaries.read_scalars(log_dir), os.path.join(tmp, names["curves"]))
    names["reliability"] = "reliability.png"
    figures.reliability_figure(metrics.reliability_bins(labels, probabilities),
                               os.path.join(tmp, names["reliability"]), title=title)
    if robust:
      names["robustness"] = "robustness.png"
      figures.robustness_figure(robust, os.path.join(tmp, names["robustness"]))
    seconds = time.perf_counter() - start
    source = getattr(predictor, "path", None) or ", ".join(m.path for m in predictor.members)
    output = {"model": source, "dataset": config.dataset, "split": config.split,
              "tta": config.tta, "tta_views": len(inference.tta_views(config.tta, mirror)),
              "seconds": seconds, **result}
    if robust:
      output["robustness"] = robust
      output["robustness_images"] = robust_images
    with open(os.path.join(tmp, "metrics.json"), "w") as f:
      json.dump(output, f, indent=1)
    with open(os.path.join(tmp, "report.md"), "w") as f:
      f.write(_markdown(config, source, result, robust, robust_images, names, seconds, mirror))
    with open(os.path.join(tmp, names["confusion"]), "rb") as f:
      _tensorboard(output_dir, config.split, result, f.read(),
                   _final_step(config.model_dir))
  return final, output
