r"""Converts a dataset of the MNIST family into sharded TFRecords.

Examples:
  python tools/make_records.py --dataset=mnist
  python tools/make_records.py --dataset=digit_recognizer \
      --train_csv=train.csv --test_csv=test.csv
  python tools/make_records.py --dataset=fashion_mnist --source=idx \
      --source_dir=/usr/share/datasets/fashion-mnist
"""

import os
import sys

from tfmnist.cli import startup

# The flags below take their choices from data.prepare, which loads
# TensorFlow, so it loads here, quietly (startup.py), before them.
startup.load_tensorflow()

from absl import app, flags, logging  # pylint: disable=g-import-not-at-top

from tfmnist.cli.messages import as_flags  # pylint: disable=g-import-not-at-top
from tfmnist.data import prepare  # pylint: disable=g-import-not-at-top
from tfmnist.errors import DataError  # pylint: disable=g-import-not-at-top

_DATASET = flags.DEFINE_string(
    "dataset", None, "Dataset name: mnist, fashion_mnist, kmnist, emnist_digits, "
    "emnist_letters, emnist_balanced, emnist_bymerge, emnist_byclass, emnist_mnist, "
    "digit_recognizer, kannada_mnist, or any name with --class_names/--num_classes.")
_SOURCE = flags.DEFINE_enum(
    "source", "", ("",) + prepare.SOURCES,
    "Where to read from: tfds (tensorflow-datasets, falling back to the official "
    "download), url (official download or mirror), idx, csv, npz. Empty: inferred "
    "from --train_csv/--test_csv/--source_dir, else tfds.")
_SOURCE_DIR = flags.DEFINE_string(
    "source_dir", "", "Folder of IDX files (gzip or plain), or an NPZ file/folder.")
_TRAIN_CSV = flags.DEFINE_string("train_csv", "", "Labeled CSV of training images.")
_TEST_CSV = flags.DEFINE_string("test_csv", "", "CSV of test images, labeled or not.")
_EXTRA_CSV = flags.DEFINE_multi_string(
    "extra_csv", [], "More splits from CSV as split=path, e.g. dig=Dig-MNIST.csv. Repeatable.")
_OUTPUT_DIR = flags.DEFINE_string(
    "output_dir", "records", "Records folder; the dataset goes to <output_dir>/<dataset>/.")
_VALIDATION_SIZE = flags.DEFINE_float(
    "validation_size", 0.1, "Validation images carved from train (stratified): a fraction "
    "of train when below 1, else a count of images. 0 keeps all of train.")
_NUM_SHARDS = flags.DEFINE_integer(
    "num_shards", 8, "Files for the train split (other splits get the same images per "
    "file); at least the number of workers that will read them.", lower_bound=1)
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace existing records of the dataset.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the validation split and shard order.")
_DOWNLOAD_BASE_URL = flags.DEFINE_string(
    "download_base_url", "", "Mirror holding <dataset>/<official file name>; overrides "
    "the environment variable TFMNIST_DOWNLOAD_BASE_URL.")
_CACHE_DIR = flags.DEFINE_string(
    "cache_dir", "", "Download cache (default $TFMNIST_CACHE_DIR or ~/.cache/tfmnist/downloads).")
_TFDS_DATA_DIR = flags.DEFINE_string(
    "tfds_data_dir", "", "tensorflow-datasets data folder (default: its own).")
_LABEL_COLUMN = flags.DEFINE_string(
    "label_column", "", "CSV label column, by header name, 0-based index (-1: the last), "
    "first or last; 'none' reads the file as unlabeled. Default: the column named label, "
    "or the first of a headerless 785-column file.")
_LABEL_OFFSET = flags.DEFINE_integer(
    "label_offset", None, "The raw label of the first class (1 for labels that count from "
    "1). Default: the dataset's own (0; 1 for EMNIST letters).")
_ID_COLUMN = flags.DEFINE_string(
    "id_column", "", "CSV id column, by header name or 0-based index. Default: a column "
    "named id or ImageId.")
_CLASS_NAMES = flags.DEFINE_list("class_names", [], "Class names, in label order.")
_NUM_CLASSES = flags.DEFINE_integer(
    "num_classes", 0, "Number of classes when names are not given (names become 0..N-1).")
_TRANSPOSE = flags.DEFINE_enum(
    "transpose", "auto", ("auto", "yes", "no"),
    "Transpose IDX/NPZ images; auto does it for EMNIST, which stores them transposed.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show progress bars.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  if not flags.FLAGS["verbosity"].present:  # Library INFO chatter hides the progress bar.
    logging.set_verbosity(logging.WARNING)
  class_names = tuple(_CLASS_NAMES.value) or tuple(str(i) for i in range(_NUM_CLASSES.value))
  config = prepare.PrepareConfig(
      dataset=_DATASET.value, source=_SOURCE.value, source_dir=_SOURCE_DIR.value,
      train_csv=_TRAIN_CSV.value, test_csv=_TEST_CSV.value,
      extra_csv=tuple(_EXTRA_CSV.value), output_dir=_OUTPUT_DIR.value,
      validation_size=_VALIDATION_SIZE.value, num_shards=_NUM_SHARDS.value,
      overwrite=_OVERWRITE.value, seed=_SEED.value,
      download_base_url=_DOWNLOAD_BASE_URL.value, cache_dir=_CACHE_DIR.value,
      tfds_data_dir=_TFDS_DATA_DIR.value, label_column=_LABEL_COLUMN.value,
      id_column=_ID_COLUMN.value, class_names=class_names,
      transpose={"auto": None, "yes": True, "no": False}[_TRANSPOSE.value],
      label_offset=_LABEL_OFFSET.value, show_progress=_PROGRESS.value)
  existed = (os.path.exists(os.path.join(config.output_dir, config.dataset)) and
             not config.overwrite)
  try:
    folder, info = prepare.make_records(config)
  except DataError as e:
    sys.exit(f"make_records: error: {as_flags(str(e))}")
  counts = ", ".join(f"{name} {s['count']:,}" for name, s in info["splits"].items())
  if existed:
    print(f"{folder}: already there with these settings ({counts}); nothing to do "
          "(--overwrite makes them again)")
    return
  print(f"{folder}: {counts}")
  for check in info["checks"]:
    if check["outcome"] == "fixed":
      print(f"make_records: note: {check['detail']}")


def run():
  flags.mark_flag_as_required("dataset")
  app.run(main)


if __name__ == "__main__":
  run()
