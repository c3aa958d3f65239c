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

from tfmnist import files, metrics, run_dir
from tfmnist.data import pipeline, records
from tfmnist.errors import DataError
from tfmnist.evaluation import figures, logs, robustness
from tfmnist.progress import Progress
from tfmnist.serving import inference


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
    noise_factor: the model trained on images with Gaussian noise of this std
      (pixels in [0, 1]): the whole split is scored again with that noise
      added and clipped, as well as clean; 0: clean only.
    batch_size: images per call of the model.
    tta: test-time augmentation: one-pixel shifts, and mirror images too when
      the dataset's info.json says its classes are not digits.
    trained_on_split: the model learned from these images; the report says so.
    progress: show a progress bar over the split's images, then one over the
      sweep levels.
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
  noise_factor: float = 0.0
  batch_size: int = 1000
  tta: bool = False
  trained_on_split: bool = False
  progress: bool = False


def read_split_for(predictor, records_dir, dataset, split):
  """pipeline.read_labelled(...), checked to have the classes of `predictor`."""
  info, images, labels = pipeline.read_labelled(records_dir, dataset, split)
  if info["num_classes"] != predictor.num_classes:
    who = (f"the model {predictor.source} predicts" if len(predictor.members) == 1 else
           f"the {len(predictor.members)} models predict")
    raise DataError(f"{records.dataset_dir(records_dir, dataset)}: {info['num_classes']} "
                    f"classes, but {who} {predictor.num_classes}")
  return info, images, labels


# ----------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------


def _tensorboard(home, split, result, confusion_png, step):
  """The confusion matrix image and the metrics under <home>/logs/eval_<split>."""
  writer = tf.summary.create_file_writer(home.log_dir(f"eval_{split}"))
  with writer.as_default(step=step):
    tf.summary.image("confusion_matrix", tf.io.decode_png(confusion_png)[None],
                     description=f"{split}: rows true class, columns predicted")
    tf.summary.scalar("accuracy", result["accuracy"])
    tf.summary.scalar("loss", result["loss"])
    tf.summary.scalar("expected_calibration_error", result["expected_calibration_error"])
  writer.close()


def _markdown(config, source, result, robust, robust_images, figure_names, seconds, mirror,
              noisy=None, built_in_views=0):
  tta = ""
  if config.tta:
    tta = (" with test-time augmentation (one-pixel shifts"
           f"{' and mirror images' if mirror else ''})")
  elif built_in_views:
    tta = f" with test-time augmentation inside the export ({built_in_views} views)"
  lines = [f"# Evaluation of {config.model_dir} on {config.dataset} / {config.split}", "",
           f"Model: `{source}`{tta}. "
           f"{result['count']} images, evaluated in {seconds:.1f} s.", "",
           *(["**The model trained on this split**: these figures measure how well it "
              "fits its training images, not its accuracy on new ones.", ""]
             if config.trained_on_split else []),
           "| metric | value |", "| --- | --- |",
           f"| accuracy | {result['accuracy']:.4%} |",
           f"| errors | {result['error_count']} of {result['count']} |",
           f"| loss (cross-entropy) | {result['loss']:.4f} |",
           f"| expected calibration error | {result['expected_calibration_error']:.4f} |",
           f"| macro F1 | {result['macro_f1']:.4f} |",
           *([f"| accuracy with the training noise (std {noisy['noise_std']:g}, "
              f"every image) | {noisy['accuracy']:.4%} ({noisy['error_count']} errors) |"]
             if noisy else []), "",
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
    predictor: an inference.Predictor (one model or an ensemble).

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
  # An ensemble exported with --tta averages over its views itself.
  built_in_views = len(predictor.built_in_views or ())
  bar = Progress(len(images), "images", desc=f"evaluating {config.dataset} {config.split}",
                 enabled=config.progress)
  probabilities = predictor.predict_with_progress(images, config.batch_size, config.tta,
                                                  mirror, bar)
  result = metrics.classification_metrics(labels, probabilities, class_names)
  noisy = None
  if config.noise_factor:
    # The task the model trained for: every image of the split, noisy.
    noisy_images = robustness.add_noise(images, config.noise_factor, config.seed)
    predicted = predictor.predict(noisy_images, config.batch_size, config.tta,
                                  mirror).argmax(axis=-1)
    errors = int(np.sum(predicted != labels))
    noisy = {"noise_std": config.noise_factor, "count": len(labels), "error_count": errors,
             "accuracy": 1.0 - errors / len(labels)}
  robust, robust_images = None, 0
  if config.robustness:
    chosen = robustness.sweep_subset(labels, config.robustness_images, config.seed)
    robust_images = int(len(chosen))
    # A bar of its own: the split's bar counts the split's images.
    sweeps = Progress(robustness.SWEEP_PASSES, "levels",
                      desc=f"robustness sweeps on {robust_images} images",
                      enabled=config.progress)

    def predict(batch):
      probabilities = predictor.predict(batch, config.batch_size, config.tta, mirror)
      sweeps.update()
      return probabilities

    robust = robustness.robustness(predict, images[chosen], labels[chosen], config.seed,
                                   clean_probabilities=probabilities[chosen])

  run = run_dir.RunDir(config.model_dir)
  home = run_dir.RunDir(config.output_dir) if config.output_dir else run
  final = home.eval_dir(config.split)
  with files.atomic_folder(final, overwrite=True) as tmp:
    names = {"confusion": "confusion.png", "mistakes": "mistakes.png"}
    title = f"{config.dataset} {config.split}: accuracy {result['accuracy']:.2%}"
    figures.confusion_figure(np.array(result["confusion_matrix"]), class_names,
                             os.path.join(tmp, names["confusion"]), title=title)
    worst = metrics.top_mistakes(labels, probabilities, config.top_mistakes)
    figures.mistakes_grid(images[worst], labels[worst], np.argmax(probabilities[worst], -1),
                          probabilities[worst].max(-1), class_names,
                          os.path.join(tmp, names["mistakes"]))
    if any(os.path.isdir(run.log_dir(name)) for name in ("train", "validation")):
      names["curves"] = "curves.png"
      figures.curves_figure(logs.read_scalars(run.logs), os.path.join(tmp, names["curves"]))
    names["reliability"] = "reliability.png"
    figures.reliability_figure(metrics.reliability_bins(labels, probabilities),
                               os.path.join(tmp, names["reliability"]), title=title)
    if robust:
      names["robustness"] = "robustness.png"
      figures.robustness_figure(robust, os.path.join(tmp, names["robustness"]))
    seconds = time.perf_counter() - start
    source = predictor.source
    output = {"model": source, "dataset": config.dataset, "split": config.split,
              "tta": config.tta or bool(built_in_views),
              "tta_views": built_in_views or len(inference.tta_views(config.tta, mirror)),
              "seconds": seconds, **result}
    if noisy:
      output["training_noise"] = noisy
    if robust:
      output["robustness"] = robust
      output["robustness_images"] = robust_images
    with open(os.path.join(tmp, "metrics.json"), "w") as f:
      json.dump(output, f, indent=1)
    with open(os.path.join(tmp, "report.md"), "w") as f:
      f.write(_markdown(config, source, result, robust, robust_images, names, seconds, mirror,
                        noisy, built_in_views))
    with open(os.path.join(tmp, names["confusion"]), "rb") as f:
      _tensorboard(home, config.split, result, f.read(), int(run.read_metrics().get("step", 0)))
  return final, output
