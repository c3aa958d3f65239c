r"""Evaluates a trained run: python -m tfmnist.evaluate --model_dir=RUN --split=test

Writes RUN/eval/<split>/: metrics.json, confusion.png, mistakes.png,
curves.png, reliability.png, robustness.png and report.md. The model is the
run's SavedModel export, or one of its checkpoints with --checkpoint. Given
an export folder itself (e.g. an exported ensemble), the report goes to
<folder>_eval/eval/<split>/.
"""

import os
import sys

from absl import app, flags

from tfmnist.cli import startup
from tfmnist.errors import DataError

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The run folder (or an export folder).")
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate.")
_DATASET = flags.DEFINE_string("dataset", "", "Dataset; empty: the run's (manifest.json).")
_RECORDS_DIR = flags.DEFINE_string("records_dir", "",
                                   "Records folder; empty: the run's --records_dir.")
_CHECKPOINT = flags.DEFINE_string(
    "checkpoint", "", "Evaluate this checkpoint ('latest', 'best' or a path) instead of "
    "the export.")
_TOP_MISTAKES = flags.DEFINE_integer("top_mistakes", 24, "Mistakes shown in the grid (count).",
                                     lower_bound=0)
_ROBUSTNESS = flags.DEFINE_bool("robustness", True, "Run the noise, rotation and shift sweeps.")
_ROBUSTNESS_IMAGES = flags.DEFINE_integer(
    "robustness_images", 2000, "Images the sweeps use (count; a class-stratified choice); "
    "0: the whole split.", lower_bound=0)
_TTA = flags.DEFINE_bool("tta", False, "Average over one-pixel shifts, and mirror images when "
                         "the dataset is not digits (test-time augmentation).")
_BATCH = flags.DEFINE_integer("batch_size", 1000, "Images per model call.", lower_bound=1)
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the noise sweep.")
_NOISE = flags.DEFINE_float(
    "noise_factor", None, "Also score the whole split with Gaussian noise of this std (pixels "
    "in [0, 1]) added; default: the noise the run trained with (--noise_factor), none if none; "
    "0: clean only.", lower_bound=0.0)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar over the images "
                              "predicted (the split, then the robustness sweeps).")


def main(argv):
  model_dir = _MODEL_DIR.value
  startup.begin(argv, "evaluate", model_dir)
  from tfmnist import run_dir  # pylint: disable=g-import-not-at-top
  from tfmnist.evaluation import report  # pylint: disable=g-import-not-at-top
  from tfmnist.serving import inference  # pylint: disable=g-import-not-at-top
  output_dir = run_dir.report_home(model_dir).path
  settings = inference.run_settings(model_dir)
  dataset = _DATASET.value or settings.dataset
  records_dir = _RECORDS_DIR.value or settings.records_dir or "records"
  trained_on_split = dataset == settings.dataset and _SPLIT.value in settings.train_splits
  if trained_on_split:
    print(f"evaluate: warning: {model_dir} trained on the {_SPLIT.value} split; its figures "
          "there measure fit, not accuracy on new images", file=sys.stderr)
  try:
    if not dataset:
      raise DataError(f"{model_dir}: no manifest.json naming the dataset; pass --dataset")
    predictor = inference.load(model_dir, _CHECKPOINT.value, _RECORDS_DIR.value)
    folder, result = report.write_report(report.ReportConfig(
        model_dir=model_dir, output_dir=output_dir, records_dir=records_dir, dataset=dataset,
        split=_SPLIT.value,
        top_mistakes=_TOP_MISTAKES.value, robustness=_ROBUSTNESS.value,
        robustness_images=_ROBUSTNESS_IMAGES.value, seed=_SEED.value,
        noise_factor=settings.training_noise if _NOISE.value is None else _NOISE.value,
        batch_size=_BATCH.value, tta=_TTA.value, trained_on_split=trained_on_split,
        progress=_PROGRESS.value), predictor)
  except (DataError, ValueError) as e:
    sys.exit(f"evaluate: error: {e}")
  noisy = result.get("training_noise")
  noisy = (f", with noise {noisy['noise_std']:g} {noisy['accuracy']:.4%}" if noisy else "")
  print(f"{dataset} {_SPLIT.value}: accuracy {result['accuracy']:.4%} "
        f"({result['error_count']} errors in {result['count']}){noisy}, loss "
        f"{result['loss']:.4f}, ECE {result['expected_calibration_error']:.4f}; report in "
        f"{os.path.join(folder, 'report.md')} ({result['seconds']:.1f} s)")


def run():
  flags.mark_flag_as_required("model_dir")
  app.run(main)


if __name__ == "__main__":
  run()
