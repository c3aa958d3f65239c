#!/usr/bin/env python3
r"""Test accuracy against seconds of training: a table and a figure.

Each run folder, named after its recipe (runs/tta/fast for fast.flags), was
trained in one go with its checkpoints kept along the
way (e.g. `--checkpoint_every_steps=50 --keep_checkpoints=1000`). Every kept
checkpoint is scored on the test split, and placed in time by the run's own
train summaries (see evaluation.logs.train_seconds_at). The runs' recipes
were chosen on validation before; the test scores here only draw the curve
and say when each recipe first reached each accuracy.

Writes time_to_accuracy.md, .json and .png into --output_dir. Example:
  python tools/time_to_accuracy.py --runs=runs/tta/fast,runs/tta/fast995,runs/tta/best \
      --records_dir=records --output_dir=benchmarks
"""

import json
import os
import re
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tfmnist  # pylint: disable=g-import-not-at-top,unused-import  # first: it sets TensorFlow's CPU kernels
from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import bench  # pylint: disable=g-import-not-at-top
from tfmnist import run_dir  # pylint: disable=g-import-not-at-top
from tfmnist.data import pipeline  # pylint: disable=g-import-not-at-top
from tfmnist.errors import DataError  # pylint: disable=g-import-not-at-top
from tfmnist.evaluation import logs  # pylint: disable=g-import-not-at-top
from tfmnist.progress import Progress  # pylint: disable=g-import-not-at-top
from tfmnist.serving import inference  # pylint: disable=g-import-not-at-top

_RUNS = flags.DEFINE_list("runs", None, "Run folders, one per recipe, trained from scratch "
                          "with their checkpoints kept.")
_RECORDS_DIR = flags.DEFINE_string("records_dir", "records", "Folder of prepared records.")
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "benchmarks", "Where the table and figure go.")
_TARGETS = flags.DEFINE_list("targets", ["99.0", "99.5", "99.7"], "Test accuracies (percent) "
                             "whose first crossing the table gives.")

_STEP = re.compile(r"ckpt-(\d+)$")


def checkpoints_of(model_dir):
  """[(step, path)] of the run's kept checkpoints, oldest first."""
  state = tf.train.get_checkpoint_state(run_dir.RunDir(model_dir).checkpoints)
  if state is None:
    raise DataError(f"{model_dir}: no checkpoints")
  found = [(int(_STEP.search(p).group(1)), p) for p in state.all_model_checkpoint_paths
           if _STEP.search(p)]
  return sorted(found)


def curve(model_dir, images, labels, bar):
  """{"recipe", "steps", "seconds", "accuracy"} of one run's kept checkpoints."""
  metrics = run_dir.RunDir(model_dir).read_metrics()
  if "train_seconds" not in metrics:
    raise DataError(f"{model_dir}: no metrics.json with train_seconds; finish the run first")
  found = checkpoints_of(model_dir)
  steps = [step for step, _ in found]
  seconds = logs.train_seconds_at(run_dir.RunDir(model_dir).logs, steps,
                                  metrics["train_seconds"])
  accuracy = []
  for _, path in found:
    predicted = inference.load(model_dir, checkpoint=path).predict(images).argmax(axis=1)
    accuracy.append(float(np.mean(predicted == labels)))
    bar.update(1, acc=f"{accuracy[-1]:.2%}")
  return {"run": model_dir, "recipe": os.path.basename(os.path.normpath(model_dir)),
          "steps": steps, "seconds": seconds.tolist(), "accuracy": accuracy,
          "train_seconds": metrics["train_seconds"]}


def first_crossing(result, target):
  """Seconds of the first checkpoint at or above `target` (a fraction), or None."""
  for seconds, accuracy in zip(result["seconds"], result["accuracy"]):
    if accuracy >= target:
      return seconds
  return None


def markdown(results, targets, machine):
  lines = [f"Test accuracy of kept checkpoints against seconds of training; "
           f"{bench.device_label(machine)}.", "",
           "| recipe | final test accuracy | training seconds | " +
           " | ".join(f"seconds to {t:g}%" for t in targets) + " |",
           "| --- | --- | --- | " + " | ".join("---" for _ in targets) + " |"]
  for result in results:
    cells = []
    for target in targets:
      seconds = first_crossing(result, target / 100)
      cells.append("not reached" if seconds is None else f"{seconds:.0f}")
    lines.append(f"| `{result['recipe']}` | {result['accuracy'][-1]:.2%} | "
                 f"{result['train_seconds']:.0f} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def figure(results, targets, path, machine):
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
  for result in results:
    ax.plot(result["seconds"], np.array(result["accuracy"]) * 100, marker="o", markersize=3,
            label=f"{result['recipe']} ({result['accuracy'][-1]:.2%})")
  for target in targets:
    ax.axhline(target, color="grey", linewidth=0.6, linestyle="--")
  ax.set_xscale("log")
  ax.set_ylim(max(97.0, min(min(r["accuracy"]) * 100 for r in results) - 0.2), 100)
  ax.set_xlabel("seconds of training (log scale)")
  ax.set_ylabel("test accuracy (%)")
  ax.set_title(f"Test accuracy against seconds of training\n{bench.device_label(machine)}",
               fontsize=8)
  ax.legend(loc="lower right", fontsize=8)
  ax.grid(True, which="both", linewidth=0.3)
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  logging.set_verbosity(logging.WARNING)
  targets = [float(t) for t in _TARGETS.value]
  try:
    dataset = inference.run_settings(_RUNS.value[0]).dataset
    _, images, labels = pipeline.read_labelled(_RECORDS_DIR.value, dataset, "test")
    total = sum(len(checkpoints_of(r)) for r in _RUNS.value)
    bar = Progress(total, "checkpoints", desc="scoring")
    results = [curve(r, images, labels, bar) for r in _RUNS.value]
  except (DataError, ValueError) as e:
    sys.exit(f"time_to_accuracy.py: error: {e}")
  machine = bench.machine()
  os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
  base = os.path.join(_OUTPUT_DIR.value, "time_to_accuracy")
  with open(base + ".json", "w") as f:
    json.dump({"command": " ".join(["python", "tools/time_to_accuracy.py", *sys.argv[1:]]),
               "machine": machine, "targets": targets, "runs": results}, f, indent=1)
  with open(base + ".md", "w") as f:
    f.write(markdown(results, targets, machine))
  figure(results, targets, base + ".png", machine)
  print(markdown(results, targets, machine))


if __name__ == "__main__":
  flags.mark_flag_as_required("runs")
  app.run(main)
