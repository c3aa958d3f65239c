r"""Measures how fast make_records converts IDX and Kaggle-style CSV data.

Two cases, each run --repeats times:
  idx: 70,000 IDX images (Fashion-MNIST from --idx_dir, or synthetic ones).
  csv: a 42,000-row `label,pixel0..pixel783` CSV made from real images.
Every run is timed as a whole command (`python tools/make_records.py ...`,
interpreter and TensorFlow start-up included) and as the in-process call of
`prepare.make_records` alone (TensorFlow already imported). The in-process
runs share one warm process; a first call in a fresh process is slower.

Example:
  python tools/benchmark_records.py --repeats=3 --json=/tmp/records_bench.json
"""

import gzip
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # pylint: disable=g-import-not-at-top
from absl import app, flags  # pylint: disable=g-import-not-at-top

from tfmnist.data import prepare  # pylint: disable=g-import-not-at-top
from tfmnist.data.catalog import get_spec  # pylint: disable=g-import-not-at-top
from tfmnist.data.sources import idx  # pylint: disable=g-import-not-at-top

_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed runs per case.", lower_bound=1)
_JSON = flags.DEFINE_string("json", "", "Write the timings as JSON to this path.")
_IDX_DIR = flags.DEFINE_string(
    "idx_dir", "/usr/share/datasets/fashion-mnist",
    "Fashion-MNIST IDX files (60k+10k); synthetic images are used when absent.")
_CSV_IMAGES_DIR = flags.DEFINE_string(
    "csv_images_dir", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                   "shared", "data", "mnist"),
    "IDX folder whose images fill the CSV (MNIST: Kaggle's sparsity); else --idx_dir.")
_CSV_ROWS = flags.DEFINE_integer("csv_rows", 42_000, "Rows of the CSV (Kaggle: 42,000).")

_TOOL = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_records.py")
_SYNTHETIC_COUNTS = {"train": 60_000, "t10k": 10_000}


def _write_idx(path, array):
  header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
      f">{array.ndim}I", *array.shape)
  with gzip.open(path, "wb", compresslevel=1) as f:
    f.write(header + array.astype(np.uint8).tobytes())


def synthesize_idx(folder, seed=0):
  """Writes 70,000 sparse random images with labels as gzip IDX files into `folder`."""
  rng = np.random.default_rng(seed)
  for split, count in _SYNTHETIC_COUNTS.items():
    images = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
    images[rng.random(images.shape) < 0.8] = 0  # About MNIST's share of black pixels.
    _write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte.gz"), images)
    _write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte.gz"),
               rng.integers(0, 10, count, dtype=np.uint8))


def write_kaggle_csv(path, image_dir, rows):
  """Writes `rows` labeled images of `image_dir` as `label,pixel0..pixel783` text.

  When the folder holds fewer images, further passes shift them by one pixel
  per pass, so the rows stay distinct.
  """
  splits = idx.load_idx_dir(image_dir, get_spec("mnist"))
  images = np.concatenate([s.images for s in splits.values()])
  labels = np.concatenate([s.labels for s in splits.values()])
  passes = -(-rows // len(images))
  images = np.concatenate([np.roll(images, k, axis=2) for k in range(passes)])[:rows]
  labels = np.tile(labels, passes)[:rows]
  table = np.column_stack([labels, images.reshape(rows, -1)])
  header = ",".join(["label"] + [f"pixel{i}" for i in range(28 * 28)])
  np.savetxt(path, table, fmt="%d", delimiter=",", header=header, comments="")
  return float((images == 0).mean())


def time_command(args, output_dir):
  """Seconds of one `tools/make_records.py` run as a separate process."""
  command = [sys.executable, _TOOL, *args, f"--output_dir={output_dir}", "--noprogress",
             "--overwrite"]
  start = time.perf_counter()
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  if result.returncode:
    sys.exit(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
  return seconds


def time_in_process(config):
  """Seconds of one `prepare.make_records` call, and the images it wrote."""
  start = time.perf_counter()
  _, info = prepare.make_records(config)
  return time.perf_counter() - start, sum(s["count"] for s in info["splits"].values())


def _summary(seconds):
  return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds),
          "runs": seconds}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  with tempfile.TemporaryDirectory(prefix="tfmnist-bench-") as tmp:
    idx_dir = idx_label = _IDX_DIR.value
    if not idx.find_idx_files(os.listdir(idx_dir) if os.path.isdir(idx_dir) else []):
      idx_dir, idx_label = os.path.join(tmp, "idx"), "synthetic random images"
      os.makedirs(idx_dir)
      synthesize_idx(idx_dir)
    csv_images_dir = _CSV_IMAGES_DIR.value if os.path.isdir(_CSV_IMAGES_DIR.value) else idx_dir
    csv_path = os.path.join(tmp, "train.csv")
    zero_share = write_kaggle_csv(csv_path, csv_images_dir, _CSV_ROWS.value)

    output_dir = os.path.join(tmp, "records")
    cases = {
        "idx": (f"IDX, {idx_label}",
                ["--dataset=fashion_mnist", "--source=idx", f"--source_dir={idx_dir}"],
                prepare.PrepareConfig(dataset="fashion_mnist", source="idx",
                                      source_dir=idx_dir)),
        "csv": (f"CSV, images of {os.path.normpath(csv_images_dir)}, {zero_share:.0%} zeros",
                ["--dataset=digit_recognizer", f"--train_csv={csv_path}"],
                prepare.PrepareConfig(dataset="digit_recognizer", train_csv=csv_path)),
    }
    results = {}
    for name, (description, args, config) in cases.items():
      config.output_dir, config.overwrite, config.show_progress = output_dir, True, False
      command = [time_command(args, output_dir) for _ in range(_REPEATS.value)]
      in_process, counts = zip(*(time_in_process(config) for _ in range(_REPEATS.value)))
      results[name] = {"images": counts[0], "source": description,
                       "command_seconds": _summary(command),
                       "make_records_seconds": _summary(list(in_process))}

  print(f"make_records, {_REPEATS.value} runs per case (seconds)\n")
  print("| case | images | command median | min | max | make_records median | min | max |")
  print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
  for name, r in results.items():
    c, m = r["command_seconds"], r["make_records_seconds"]
    print(f"| {name} ({r['source']}) | {r['images']:,} | {c['median']:.2f} | {c['min']:.2f} "
          f"| {c['max']:.2f} | {m['median']:.2f} | {m['min']:.2f} | {m['max']:.2f} |")
  if _JSON.value:
    with open(_JSON.value, "w") as f:
      json.dump({"repeats": _REPEATS.value, "python": sys.version.split()[0],
                 "cases": results}, f, indent=1)
    print(f"\nwrote {_JSON.value}")


if __name__ == "__main__":
  app.run(main)
