r"""LiteRT (TFLite) files of a trained model: python -m tfmnist.convert --model_dir=RUN

Writes RUN/export/litert/ (for an export folder itself, e.g. an exported
ensemble: <folder>/litert/): float32.tflite, float16.tflite,
dynamic_range.tflite and int8.tflite (integers only, uint8 input and output,
calibrated on --calibration_images images of the run's training split), and
report.json and report.md: each file run with LiteRT's own interpreter on the
whole test split, one image at a time, for its size, accuracy, agreement with
the SavedModel and milliseconds per image on this CPU.

Needs LiteRT's interpreter: pip install 'tfmnist[litert]'.
"""

import os
import sys

from absl import app, flags

from tfmnist.cli import startup
from tfmnist.cli.messages import as_flags
from tfmnist.errors import DataError
from tfmnist.training.choices import LITERT_VARIANTS as VARIANTS

_MODEL_DIR = flags.DEFINE_string("model_dir", None, "The run folder (or an export folder).")
_VARIANTS = flags.DEFINE_list("variants", list(VARIANTS),
                              f"Which files to write, of {', '.join(VARIANTS)}.")
_DATASET = flags.DEFINE_string("dataset", "", "Dataset; empty: the run's (manifest.json).")
_RECORDS_DIR = flags.DEFINE_string("records_dir", "",
                                   "Records folder; empty: the run's --records_dir.")
_SPLIT = flags.DEFINE_string("split", "test", "The labelled split the files are checked on.")
_CHECK_IMAGES = flags.DEFINE_integer("check_images", 0, "Images of --split to check each file "
                                     "on (count, the first ones); 0: all.", lower_bound=0)
_CALIBRATION_SPLIT = flags.DEFINE_string("calibration_split", "train",
                                         "The split whose first images calibrate int8.")
_CALIBRATION_IMAGES = flags.DEFINE_integer("calibration_images", 500, "Images that calibrate "
                                           "the int8 file (count).", lower_bound=1)
_THREADS = flags.DEFINE_integer("threads", 1, "LiteRT interpreter threads for the check.",
                                lower_bound=1)
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar over the images checked.")


def main(argv):
  model_dir = _MODEL_DIR.value
  startup.begin(argv, "convert", model_dir)
  from tfmnist.serving import litert  # pylint: disable=g-import-not-at-top
  try:
    folder, report = litert.convert_model(litert.ConvertConfig(
        model_dir=model_dir, variants=tuple(_VARIANTS.value), dataset=_DATASET.value,
        records_dir=_RECORDS_DIR.value, split=_SPLIT.value, check_images=_CHECK_IMAGES.value,
        calibration_split=_CALIBRATION_SPLIT.value,
        calibration_images=_CALIBRATION_IMAGES.value, threads=_THREADS.value,
        progress=_PROGRESS.value))
  except (DataError, ValueError) as e:
    sys.exit(f"convert: error: {as_flags(str(e))}")
  print(f"SavedModel: {report['saved_model_accuracy']:.2%} on {report['dataset']} "
        f"{report['split']} ({report['images']:,} images)")
  for row in report["files"]:
    print(f"{os.path.join(folder, row['file'])}: {row['bytes'] / 1024:,.0f} KiB, accuracy "
          f"{row['accuracy']:.2%}, agrees with the SavedModel on {row['agreement']:.2%}, "
          f"{row['ms_per_image']:.3f} ms/image")
  print(f"report: {os.path.join(folder, 'report.md')}")


def run():
  flags.mark_flag_as_required("model_dir")
  app.run(main)


if __name__ == "__main__":
  run()
