"""Helpers for the training tests: tiny learnable datasets and training runs.

The synthetic digits are class-dependent patterns (class c is a bright bar
at rows 2 + 2c, over noise), learnable in a few dozen steps; a few labels are
flipped so that validation always has mistakes to show.

Run as a program, this module is `python -m tfmnist.train` with two test
hooks: it registers the model "tiny_bn" (a small BatchNorm network, the
cheapest way to check synchronised BatchNorm across replicas), and, when
$TFMNIST_TEST_SECONDS_PER_LOOP is set, sleeps that long before every call of
the traced loop so that a signal can land mid-run.
"""

import concurrent.futures
import gzip
import os
import pathlib
import re
import shutil
import struct
import subprocess
import sys
import threading

import numpy as np

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
PYTHON = sys.executable
THIS_FILE = str(pathlib.Path(__file__).resolve())
SECONDS_PER_LOOP_ENV = "TFMNIST_TEST_SECONDS_PER_LOOP"
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
NUM_TRAIN = 600  # 480 train + 120 validation with validation_size=0.2.
NUM_TEST = 100
# TensorFlow's C++ start-up chatter, printed before absl logging is set up.
_TF_NOISE = re.compile(r"^(I0000|E0000|W0000|WARNING: All log messages|To enable the following)")


# ----------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------


def synthetic_split(count, seed, label_noise=0.05):
  """uint8 images [count, 28, 28] and int64 labels [count] of 10 classes."""
  rng = np.random.default_rng(seed)
  labels = np.arange(count) % 10
  rng.shuffle(labels)
  images = rng.integers(0, 60, (count, 28, 28)).astype(np.uint8)
  for i, label in enumerate(labels):
    row = 2 + 2 * label
    images[i, row:row + 3, 4:24] = 255
  flipped = rng.random(count) < label_noise
  labels[flipped] = rng.integers(0, 10, int(flipped.sum()))
  return images, labels.astype(np.int64)


def write_npz(path, seed=0, num_train=NUM_TRAIN, num_test=NUM_TEST):
  """A Keras-style mnist.npz of the synthetic data; returns its path."""
  x_train, y_train = synthetic_split(num_train, seed)
  x_test, y_test = synthetic_split(num_test, seed + 1)
  np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
  return str(path)


def _idx_bytes(array):
  array = np.asarray(array, np.uint8)
  header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
  return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_dir(folder, seed=0):
  """The four official MNIST IDX files (gzip) of the synthetic data; returns the folder."""
  folder = pathlib.Path(folder)
  folder.mkdir(parents=True, exist_ok=True)
  x_train, y_train = synthetic_split(NUM_TRAIN, seed)
  x_test, y_test = synthetic_split(NUM_TEST, seed + 1)
  for name, array in zip(IDX_NAMES, (x_train, y_train, x_test, y_test)):
    (folder / f"{name}.gz").write_bytes(gzip.compress(_idx_bytes(array)))
  return str(folder)


def make_records(records_dir, work_dir, dataset="mnist"):
  """Writes the synthetic dataset's records (2 train shards, 20% validation)."""
  from tfmnist.data import prepare  # pylint: disable=g-import-not-at-top
  os.makedirs(work_dir, exist_ok=True)
  source = write_npz(os.path.join(work_dir, f"{dataset}.npz"))
  prepare.make_records(prepare.PrepareConfig(
      dataset=dataset, source="npz", source_dir=source, output_dir=str(records_dir),
      validation_size=0.2, num_shards=2, show_progress=False))
  return str(records_dir)


_SHARED = {}
_SHARED_LOCK = threading.Lock()


def shared_records(tmp_path_factory):
  """One records folder of the synthetic MNIST for the whole test session."""
  with _SHARED_LOCK:
    if "records" not in _SHARED:
      work = tmp_path_factory.mktemp("synthetic")
      _SHARED["records"] = make_records(work / "records", work / "source")
    return _SHARED["records"]


# ----------------------------------------------------------------------------
# Running training
# ----------------------------------------------------------------------------


def train_config(model_dir, records_dir, **fields):
  """TrainConfig of a small quiet run: mlp, 1 epoch of 15 steps, no export."""
  from tfmnist.training import config as config_lib  # pylint: disable=g-import-not-at-top
  fields.setdefault("model", "mlp")
  fields.setdefault("epochs", 1)
  fields.setdefault("global_batch_size", 32)
  fields.setdefault("eval_batch_size", 60)
  fields.setdefault("export", False)
  fields.setdefault("progress", False)
  return config_lib.TrainConfig(model_dir=str(model_dir), records_dir=str(records_dir),
                                **fields)


def train_in_process(model_dir, records_dir, say=print, **fields):
  """training.loop.train_and_evaluate of train_config(...); returns its final metrics.

  Messages go to `say` (print, as the command line does). Restores the
  float32 dtype policy afterwards so that later tests see the default.
  """
  import keras  # pylint: disable=g-import-not-at-top
  from tfmnist.training import loop  # pylint: disable=g-import-not-at-top
  try:
    return loop.train_and_evaluate(train_config(model_dir, records_dir, **fields), say=say)
  finally:
    keras.mixed_precision.set_global_policy("float32")


def shared_run(tmp_path_factory):
  """(records folder, run folder) of the session's one finished run.

  An mlp trained in process for 2 epochs of 15 steps on the shared records,
  with everything a run leaves: export/, checkpoints/ (steps 15 and 30),
  best/, logs/, config.json, manifest.json and metrics.json. Nobody changes
  it; tests that do work on a copy.
  """
  records_dir = shared_records(tmp_path_factory)
  with _SHARED_LOCK:
    if "run" not in _SHARED:
      run_dir = tmp_path_factory.mktemp("shared_run") / "run"
      train_in_process(run_dir, records_dir, say=lambda message: None, epochs=2, export=True,
                       flags_text="--model=mlp\n--epochs=2.0\n")
      _SHARED["run"] = str(run_dir)
  return records_dir, _SHARED["run"]


def random_export(destination, class_names=tuple(str(i) for i in range(10)), seed=1):
  """Exports an untrained mlp (a second, different ensemble member); returns its folder."""
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfmnist import models  # pylint: disable=g-import-not-at-top
  from tfmnist.data import pixels  # pylint: disable=g-import-not-at-top
  from tfmnist.training import export  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(seed)
  model = models.create("mlp", len(class_names))
  model(pixels.normalize(tf.zeros([1, 28, 28, 1], tf.uint8)), training=False)
  return export.export(model, list(class_names), str(destination))


def keras_probabilities(run, checkpoint_path, images):
  """Softmax of a restored run's Keras model after restoring one checkpoint."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfmnist.data import pixels  # pylint: disable=g-import-not-at-top
  run.checkpoint.restore(checkpoint_path).assert_existing_objects_matched()
  logits = run.model(pixels.normalize(tf.constant(images)), training=False)
  return tf.nn.softmax(logits).numpy()


def restore_run(model_dir, records_dir, **fields):
  """A fresh train_lib.Run of train_config(...), restored from its newest checkpoint.

  Returns:
    (run, validation Examples).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tfmnist.data import pipeline, records  # pylint: disable=g-import-not-at-top
  from tfmnist.training import state  # pylint: disable=g-import-not-at-top
  config = train_config(model_dir, records_dir, **fields)
  info = records.read_info(config.records_dir, config.dataset)
  steps_per_epoch = pipeline.pipeline_steps(
      [s["count"] for s in info["splits"]["train"]["shards"]], config.global_batch_size)
  total_steps = int(np.ceil(config.epochs * steps_per_epoch))
  val = pipeline.read_examples(records.split_files(config.records_dir, config.dataset,
                                                   "validation"))
  run = state.create_run(config, tf.distribute.get_strategy(), info["num_classes"],
                         val.image[:2], total_steps, steps_per_epoch)
  latest = tf.train.latest_checkpoint(os.path.join(str(model_dir), "checkpoints"))
  run.checkpoint.restore(latest).assert_existing_objects_matched()
  return run, val


def train_args(model_dir, records_dir, *extra, model="mlp"):
  """Flags of a small deterministic run (mlp with dropout, 15 steps per epoch)."""
  return [f"--model_dir={model_dir}", f"--records_dir={records_dir}", f"--model={model}",
          "--epochs=2", "--global_batch_size=32", "--eval_batch_size=60",
          "--steps_per_loop=5", "--noprogress", "--noexport", "--deterministic", *extra]


def train_command(args, hooks=False):
  """The command line: `python -m tfmnist.train`, or this module with its hooks."""
  return [PYTHON, THIS_FILE, *args] if hooks else [PYTHON, "-m", "tfmnist.train", *args]


def subprocess_env(**extra):
  env = dict(os.environ)
  env.pop(SECONDS_PER_LOOP_ENV, None)
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
  env.update({k: str(v) for k, v in extra.items()})
  return env


def run(command, timeout=300, **env):
  """Runs a command to the end; returns the CompletedProcess (text output)."""
  return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                        cwd=str(REPO_ROOT), env=subprocess_env(**env))


def clean_stderr(text):
  """stderr without TensorFlow's C++ start-up lines."""
  return "\n".join(line for line in text.splitlines() if not _TF_NOISE.match(line))


def describe(result):
  """A failure message: the command, its exit code and its output."""
  return (f"command {' '.join(map(str, result.args))} exited {result.returncode}\n"
          f"--- stdout\n{result.stdout}\n--- stderr\n{clean_stderr(result.stderr)}")


def check(result):
  assert result.returncode == 0, describe(result)
  return result


class Jobs:
  """Background jobs on a small pool, so that independent runs overlap.

  A job may wait for another job only when that one was submitted first (the
  pool starts jobs in order, so the awaited one is running or done).
  """

  def __init__(self, max_parallel=2):
    self._pool = concurrent.futures.ThreadPoolExecutor(max_parallel)
    self._futures = {}
    self._lock = threading.Lock()

  def submit(self, name, fn, *args):
    """Starts `fn(*args)` as job `name` unless it exists; returns its Future."""
    with self._lock:
      if name not in self._futures:
        self._futures[name] = self._pool.submit(fn, *args)
      return self._futures[name]

  def close(self):
    self._pool.shutdown(wait=True, cancel_futures=True)


class BackgroundRuns:
  """Base of a test module's runs: each method named in its job list is one job."""

  def __init__(self, records_dir, root, jobs):
    self.records_dir, self.root, self.jobs = records_dir, root, jobs

  def result(self, name):
    """Waits for the job `name`, starting it if no test selection prefetched it."""
    return self.jobs.submit(name, getattr(self, name)).result()

  def model_dir(self, name):
    return str(self.root / name)


def runs_fixture(runs_class, folder, job_order, needs, implied=None):
  """A module-scoped autouse fixture: the module's Runs, its needed jobs started.

  Args:
    runs_class: called as runs_class(records_dir, root folder, Jobs).
    folder: name of the temporary root folder.
    job_order, needs, implied: as in submit_needed.
  """
  import pytest  # pylint: disable=g-import-not-at-top

  @pytest.fixture(scope="module", autouse=True)
  def runs(request, tmp_path_factory):
    """Starts the background runs of the selected tests of this module."""
    jobs = Jobs(max_parallel=2)
    runs_ = runs_class(shared_records(tmp_path_factory), tmp_path_factory.mktemp(folder), jobs)
    submit_needed(request, runs_, job_order, needs, implied)
    yield runs_
    jobs.close()

  return runs


def slow_tests_selected(request):
  """Whether this module's selected tests include slow ones (which start commands)."""
  return any(item.get_closest_marker("slow") for item in request.session.items
             if item.module is request.module)


def submit_needed(request, runs, job_order, needs, implied=None):
  """Starts, in `job_order`, the background runs the module's selected tests need.

  Args:
    request: the module fixture's pytest request.
    runs: an object with `jobs` (a Jobs) and one method per job name.
    job_order: job names in submission order (a job may wait for earlier ones).
    needs: {test name: job names it reads}.
    implied: {job name: job names it waits for}.
  """
  selected = {item.originalname for item in request.session.items
              if item.module is request.module}
  needed = {job for test in selected for job in needs.get(test, ())}
  for job, waits_for in (implied or {}).items():
    if job in needed:
      needed.update(waits_for)
  for name in job_order:
    if name in needed:
      runs.jobs.submit(name, getattr(runs, name))


# ----------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------

# Bookkeeping that legitimately differs between an interrupted and a straight run.
_NOT_STATE = ("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter/.ATTRIBUTES/VARIABLE_VALUE")


def checkpoint_values(path):
  """{variable name: numpy value} of a checkpoint file prefix or of the newest in a folder."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if os.path.isdir(path):
    latest = tf.train.latest_checkpoint(path)
    assert latest, f"no checkpoint in {path}: {sorted(os.listdir(path))}"
    path = latest
  reader = tf.train.load_checkpoint(path)
  return {name: np.asarray(reader.get_tensor(name))
          for name, _ in tf.train.list_variables(path) if name not in _NOT_STATE}


def max_differences(a, b):
  """{name: max |a - b|} over the float variables of two checkpoints (same names)."""
  assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)))
  differences = {}
  for name in a:
    if a[name].dtype.kind == "f":
      x, y = a[name].astype(np.float64), b[name].astype(np.float64)
      gap = np.where(np.isnan(x) & np.isnan(y), 0.0, np.abs(x - y))  # NaN == NaN here.
      differences[name] = float(np.max(np.nan_to_num(gap, nan=np.inf), initial=0.0))
  return differences


def assert_identical(a, b):
  """Every variable of two checkpoints bit for bit equal."""
  assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)))
  differ = [name for name in a if a[name].tobytes() != b[name].tobytes()]
  assert not differ, f"{len(differ)} variables differ, e.g. {differ[:3]}: " \
      f"{max_differences(a, b)}"


def copy_tree(source, destination):
  shutil.copytree(source, destination)
  return str(destination)


# ----------------------------------------------------------------------------
# Hooks for the subprocess runs
# ----------------------------------------------------------------------------


def register_tiny_bn():
  """Registers the model "tiny_bn" (once per process)."""
  import keras  # pylint: disable=g-import-not-at-top
  from tfmnist import models  # pylint: disable=g-import-not-at-top
  if "tiny_bn" in models.names():
    return
  from tfmnist.models.convnets import Sequence  # pylint: disable=g-import-not-at-top
  from tfmnist.models.layers import Dropout, batch_norm  # pylint: disable=g-import-not-at-top
  layers = keras.layers

  @models.register("tiny_bn")
  class TinyBN(Sequence):  # pylint: disable=unused-variable
    """Conv 8, BN, ReLU, pool, dropout, conv 16 stride 2, BN, ReLU, logits."""

    def __init__(self, num_classes):
      super().__init__([
          layers.Conv2D(8, 3, use_bias=False), batch_norm(), layers.ReLU(),
          layers.MaxPooling2D(2), Dropout(0.25, salt=0),
          layers.Conv2D(16, 3, strides=2, use_bias=False), batch_norm(), layers.ReLU(),
          layers.Flatten(), layers.Dense(num_classes, dtype="float32"),
      ], name="tiny_bn")


def _slow_down_loop(seconds):
  import time  # pylint: disable=g-import-not-at-top
  from tfmnist.training import step  # pylint: disable=g-import-not-at-top
  make_loop = step.make_train_loop

  def make_slow_loop(*args, **kwargs):
    loop = make_loop(*args, **kwargs)

    def slow_loop(iterator, num_steps):
      time.sleep(seconds)
      return loop(iterator, num_steps)

    return slow_loop

  step.make_train_loop = make_slow_loop


def main():
  from tfmnist.cli import startup  # pylint: disable=g-import-not-at-top
  startup.load_tensorflow()  # As the command does, before the hooks load TensorFlow.
  register_tiny_bn()
  if os.environ.get(SECONDS_PER_LOOP_ENV):
    _slow_down_loop(float(os.environ[SECONDS_PER_LOOP_ENV]))
  from tfmnist.cli import train  # pylint: disable=g-import-not-at-top
  train.run()


if __name__ == "__main__":
  main()
