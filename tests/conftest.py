"""Shared fixtures: tiny synthetic datasets in every source format tfmnist reads.

The synthetic data carries planted exact duplicates so that the statistics in
`info.json` have known answers:
  * train image 1 is a copy of train image 0 (one duplicate within train);
  * test image 3 is a copy of test image 2 (one duplicate within test);
  * train image 10 is a copy of test image 5 (one test image also in train).
"""

import gzip
import os
import pathlib
import struct
import types

import numpy as np
import pytest

import tfmnist  # pylint: disable=unused-import  # before TensorFlow, as the commands load it
import tensorflow as tf  # pylint: disable=g-import-not-at-top

from tfmnist.data import prepare


def _split_cpu_in_two():
  """Two logical CPUs, so that MirroredStrategy runs two replicas in process.

  Only possible before TensorFlow initialises its devices, hence at import of
  this file, before any test module runs an op. Single-replica code uses the
  first device and is unaffected.
  """
  cpu = tf.config.list_physical_devices("CPU")[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
  except RuntimeError:  # Already initialised (e.g. by a plugin): two-replica tests skip.
    pass


_split_cpu_in_two()

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
# Real MNIST lives beside the repository and is never copied into it.
REAL_MNIST_DIR = pathlib.Path(
    os.environ.get("TFMNIST_REAL_MNIST_DIR", REPO_ROOT.parent / "shared" / "data" / "mnist"))
IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
PIXEL_NAMES = [f"pixel{i}" for i in range(28 * 28)]
NUM_TRAIN = 60
NUM_TEST = 20


def _idx_bytes(array):
  """The IDX encoding (uint8 type code) of `array`, header included."""
  array = np.asarray(array, np.uint8)
  header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
  return header + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_idx(path, array, compress=True):
  data = _idx_bytes(array)
  pathlib.Path(path).write_bytes(gzip.compress(data) if compress else data)
  return str(path)


def _write_csv(path, header, rows):
  lines = [] if header is None else [",".join(header)]
  lines += [",".join(str(v) for v in row) for row in rows]
  pathlib.Path(path).write_text("\n".join(lines) + "\n")
  return str(path)


@pytest.fixture
def mnist_arrays():
  """60 train and 20 test random 28x28 images, 10 balanced classes, planted duplicates."""
  rng = np.random.default_rng(1234)
  data = types.SimpleNamespace(
      train_images=rng.integers(0, 256, (NUM_TRAIN, 28, 28), dtype=np.uint8),
      train_labels=np.arange(NUM_TRAIN, dtype=np.int64) % 10,
      test_images=rng.integers(0, 256, (NUM_TEST, 28, 28), dtype=np.uint8),
      test_labels=rng.permutation(np.arange(NUM_TEST, dtype=np.int64) % 10))
  data.train_images[1] = data.train_images[0]
  data.test_images[3] = data.test_images[2]
  data.train_images[10] = data.test_images[5]
  return data


@pytest.fixture
def idx_bytes():
  """Function (array) -> the bytes of an uncompressed IDX file."""
  return _idx_bytes


@pytest.fixture
def write_idx():
  """Function (path, array, compress=True) -> path writing an IDX file."""
  return _write_idx


@pytest.fixture
def write_csv():
  """Function (path, header or None, rows) -> path writing a CSV file."""
  return _write_csv


@pytest.fixture
def idx_dir(tmp_path, mnist_arrays):
  """A folder with the four official MNIST IDX files (gzip) of `mnist_arrays`."""
  folder = tmp_path / "idx"
  folder.mkdir()
  arrays = (mnist_arrays.train_images, mnist_arrays.train_labels,
            mnist_arrays.test_images, mnist_arrays.test_labels)
  for name, array in zip(IDX_NAMES, arrays):
    _write_idx(folder / f"{name}.gz", array)
  return str(folder)


def _flat(images):
  return images.reshape(len(images), -1)


@pytest.fixture
def digit_recognizer_csvs(tmp_path, mnist_arrays):
  """Kaggle Digit Recognizer: train `label,pixel0..`, test unlabeled `pixel0..`."""
  train = np.column_stack([mnist_arrays.train_labels, _flat(mnist_arrays.train_images)])
  return (_write_csv(tmp_path / "train.csv", ["label"] + PIXEL_NAMES, train),
          _write_csv(tmp_path / "test.csv", PIXEL_NAMES, _flat(mnist_arrays.test_images)))


@pytest.fixture
def kannada_csvs(tmp_path, mnist_arrays):
  """Kannada-MNIST: train `label,pixel..`, test `id,pixel..`; returns (train, test, ids)."""
  # Ids out of numeric order prove that the file order, not the id, is kept.
  ids = np.random.default_rng(7).permutation(NUM_TEST) + 1000
  train = np.column_stack([mnist_arrays.train_labels, _flat(mnist_arrays.train_images)])
  test = np.column_stack([ids, _flat(mnist_arrays.test_images)])
  return (_write_csv(tmp_path / "kannada-train.csv", ["label"] + PIXEL_NAMES, train),
          _write_csv(tmp_path / "kannada-test.csv", ["id"] + PIXEL_NAMES, test),
          [str(i) for i in ids])


@pytest.fixture
def keras_npz(tmp_path, mnist_arrays):
  """A Keras-style `mnist.npz` with x_train, y_train, x_test, y_test."""
  path = tmp_path / "mnist.npz"
  np.savez(path, x_train=mnist_arrays.train_images, y_train=mnist_arrays.train_labels,
           x_test=mnist_arrays.test_images, y_test=mnist_arrays.test_labels)
  return str(path)


@pytest.fixture
def kmnist_npz_dir(tmp_path, mnist_arrays):
  """A folder of KMNIST-style `kmnist-<split>-imgs.npz`/`-labels.npz` (key arr_0)."""
  folder = tmp_path / "kmnist"
  folder.mkdir()
  for split, images, labels in (
      ("train", mnist_arrays.train_images, mnist_arrays.train_labels),
      ("test", mnist_arrays.test_images, mnist_arrays.test_labels)):
    np.savez_compressed(folder / f"kmnist-{split}-imgs.npz", images)
    np.savez_compressed(folder / f"kmnist-{split}-labels.npz", labels.astype(np.uint8))
  return str(folder)


@pytest.fixture
def make_config(tmp_path):
  """Function (**fields) -> PrepareConfig writing under tmp_path/records, quietly."""
  def make(**fields):
    fields.setdefault("dataset", "mnist")
    fields.setdefault("output_dir", str(tmp_path / "records"))
    fields.setdefault("show_progress", False)
    return prepare.PrepareConfig(**fields)
  return make


@pytest.fixture(scope="session")
def records_dir(tmp_path_factory):
  """The synthetic learnable MNIST records (train_fixtures) shared by the whole session."""
  import train_fixtures  # pylint: disable=g-import-not-at-top
  return train_fixtures.shared_records(tmp_path_factory)


@pytest.fixture
def two_replicas():
  """A MirroredStrategy over the two logical CPUs made at start-up."""
  devices = tf.config.list_logical_devices("CPU")
  if len(devices) < 2:
    pytest.skip("TensorFlow was initialised before two logical CPUs could be made")
  return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])


@pytest.fixture
def real_mnist_dir():
  """The shared real MNIST IDX folder; skips the test when it is absent."""
  if not all((REAL_MNIST_DIR / f"{name}.gz").is_file() for name in IDX_NAMES):
    pytest.skip(f"real MNIST not found in {REAL_MNIST_DIR}")
  return str(REAL_MNIST_DIR)
