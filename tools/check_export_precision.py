#!/usr/bin/env python3
r"""The float32 export against the model as it trained, on a whole split.

A run trained in mixed precision (bfloat16 or float16 arithmetic) exports a
SavedModel that computes in float32, so that it runs anywhere. This tool
scores both on the split: the export through its `serving_default`
signature, and the run's latest checkpoint (its weight average when it kept
one) rebuilt under the training's own dtype policy. It prints both
accuracies and the share of images whose classes agree, and exits 1 when
that share is below --min_agreement.

Example, a fast.flags run trained in mixed bfloat16:
  python tools/check_export_precision.py --model_dir=runs/fast --split=test
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top

from tfmnist import run_dir  # pylint: disable=g-import-not-at-top
from tfmnist.data import pipeline, pixels  # pylint: disable=g-import-not-at-top
from tfmnist.errors import DataError  # pylint: disable=g-import-not-at-top
from tfmnist.serving import inference  # pylint: disable=g-import-not-at-top
from tfmnist.training import config as config_lib  # pylint: disable=g-import-not-at-top
from tfmnist.training import export  # pylint: disable=g-import-not-at-top

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "A run folder with an export and checkpoints.")
_SPLIT = flags.DEFINE_string("split", "test", "The labelled split both models classify.")
_RECORDS_DIR = flags.DEFINE_string("records_dir", "", "Records folder; empty: the run's.")
_MIN_AGREEMENT = flags.DEFINE_float("min_agreement", 0.999, "Least share of images whose "
                                    "classes must agree.", lower_bound=0.0, upper_bound=1.0)
_OUTPUT = flags.DEFINE_string("output", "", "Also write the figures to this JSON file.")


def trained_precision_probabilities(config, images, batch_size=1000):
  """Probabilities of the run's latest checkpoint under its training dtype policy."""
  recorded = run_dir.RunDir(config.model_dir).read_manifest()
  policy = recorded.get("precision", {}).get("policy")
  if not policy:
    raise DataError(f"{config.model_dir}: manifest.json does not record the training precision")
  model, _ = export.restore_model(config, "latest", len(recorded["class_names"]), policy)
  parts = []
  for start in range(0, len(images), batch_size):
    logits = model(pixels.normalize(images[start:start + batch_size]), training=False)
    parts.append(np.asarray(logits, np.float32))
  return policy, np.concatenate(parts)


def main(argv):
  del argv
  logging.set_verbosity(logging.WARNING)
  model_dir = _MODEL_DIR.value
  folder = run_dir.RunDir(model_dir)
  values = folder.read_config()
  if values is None or not folder.has_export():
    sys.exit(f"check_export_precision: error: {model_dir}: needs a run folder with "
             "config.json and export/")
  config = config_lib.from_dict(values, model_dir)
  try:
    _, images, labels = pipeline.read_labelled(_RECORDS_DIR.value or config.records_dir,
                                               config.dataset, _SPLIT.value)
    exported = inference.ExportedModel(folder.export).predict(images).argmax(1)
    policy, logits = trained_precision_probabilities(config, images)
  except DataError as e:
    sys.exit(f"check_export_precision: error: {e}")
  trained = logits.argmax(1)
  figures = {"model_dir": model_dir, "split": _SPLIT.value, "images": int(len(labels)),
             "training_policy": policy,
             "training_precision_accuracy": float(np.mean(trained == labels)),
             "export_float32_accuracy": float(np.mean(exported == labels)),
             "class_agreement": float(np.mean(trained == exported)),
             "disagreements": int(np.sum(trained != exported))}
  print(f"{model_dir} on {config.dataset} {_SPLIT.value} ({len(labels)} images): trained "
        f"in {policy} {figures['training_precision_accuracy']:.2%}, float32 export "
        f"{figures['export_float32_accuracy']:.2%}; classes agree on "
        f"{figures['class_agreement']:.3%} ({figures['disagreements']} differ)")
  if _OUTPUT.value:
    with open(_OUTPUT.value, "w") as f:
      json.dump(figures, f, indent=1)
  if figures["class_agreement"] < _MIN_AGREEMENT.value:
    sys.exit(f"check_export_precision: error: agreement {figures['class_agreement']:.3%} "
             f"is below --min_agreement={_MIN_AGREEMENT.value:g}")


if __name__ == "__main__":
  flags.mark_flag_as_required("model_dir")
  app.run(main)
