"""Tests of the LiteRT files: python -m tfmnist.convert and serving.litert, in process.

The files are checked by LiteRT's own interpreter in a child process that
loads neither tfmnist nor TensorFlow; these tests also run them here, next
to the SavedModel, to compare probabilities.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import train_fixtures as tfx
from tfmnist import models
from tfmnist.data import pipeline, pixels
from tfmnist.errors import DataError
from tfmnist.serving import inference, litert
from tfmnist.training import export

pytest.importorskip("ai_edge_litert", reason="LiteRT's interpreter: pip install -e '.[test]'")
from ai_edge_litert.interpreter import Interpreter  # pylint: disable=g-import-not-at-top

CHECK_IMAGES = 60


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  """A copy of the session's run, converted to every variant (checked on 60 test images)."""
  records_dir, run = tfx.shared_run(tmp_path_factory)
  model_dir = tfx.copy_tree(run, tmp_path_factory.mktemp("litert") / "run")
  folder, report = litert.convert_model(litert.ConvertConfig(
      model_dir=str(model_dir), records_dir=records_dir, check_images=CHECK_IMAGES,
      calibration_images=100, progress=False))
  return records_dir, model_dir, folder, report


def _run(path, images):
  """Probabilities [N, classes] of a LiteRT file, one image at a time, dequantized."""
  interpreter = Interpreter(model_path=str(path))
  interpreter.allocate_tensors()
  source, = interpreter.get_input_details()
  target, = interpreter.get_output_details()
  outputs = []
  for image in images:
    value = image[None].astype(source["dtype"])  # uint8 pixels: scale 1, zero point 0.
    if source["dtype"] != np.float32:
      scale, zero_point = source["quantization"]
      value = np.round(image[None] / scale + zero_point).astype(source["dtype"])
    interpreter.set_tensor(source["index"], value)
    interpreter.invoke()
    output = interpreter.get_tensor(target["index"])[0].astype(np.float32)
    if target["dtype"] != np.float32:
      scale, zero_point = target["quantization"]
      output = (output - zero_point) * scale
    outputs.append(output)
  return np.array(outputs)


def test_every_variant_is_written_with_its_report(converted):
  _, model_dir, folder, report = converted
  assert folder == os.path.join(model_dir, "export", "litert")
  assert sorted(os.listdir(folder)) == ["dynamic_range.tflite", "float16.tflite",
                                        "float32.tflite", "int8.tflite", "report.json",
                                        "report.md"]
  assert json.loads(open(os.path.join(folder, "report.json")).read()) == report
  rows = {row["variant"]: row for row in report["files"]}
  assert list(rows) == list(litert.VARIANTS)
  for row in rows.values():
    assert row["bytes"] == os.path.getsize(os.path.join(folder, row["file"]))
    assert row["ms_per_image"] > 0
    assert abs(row["accuracy"] - report["saved_model_accuracy"]) <= 0.05
    assert row["agreement"] >= 0.95
  assert rows["float32"]["agreement"] == 1.0
  # The mlp is all weights: int8 keeps about a quarter of float32's bytes.
  assert rows["int8"]["bytes"] < 0.3 * rows["float32"]["bytes"]
  assert rows["float16"]["bytes"] < 0.55 * rows["float32"]["bytes"]
  assert rows["int8"]["input"] == {"dtype": "uint8", "shape": [1, 28, 28, 1], "scale": 1.0,
                                   "zero_point": 0}
  assert rows["int8"]["output"]["dtype"] == "uint8"
  assert rows["float32"]["input"]["dtype"] == "float32"
  markdown = open(os.path.join(folder, "report.md")).read()
  assert "| int8.tflite |" in markdown and f"{report['images']:,} images" in markdown


def test_the_files_compute_what_the_saved_model_computes(converted):
  records_dir, model_dir, folder, _ = converted
  _, images, _ = pipeline.read_labelled(records_dir, "mnist", "test")
  images = images[:CHECK_IMAGES]
  saved = inference.load(str(model_dir)).predict(images)
  np.testing.assert_allclose(_run(os.path.join(folder, "float32.tflite"), images), saved,
                             atol=1e-5)
  np.testing.assert_allclose(_run(os.path.join(folder, "float16.tflite"), images), saved,
                             atol=2e-2)
  int8 = _run(os.path.join(folder, "int8.tflite"), images)
  assert np.abs(int8 - saved).max() < 0.1  # Probabilities in steps of 1/256.
  assert np.mean(int8.argmax(1) == saved.argmax(1)) >= 0.95


def test_the_check_runs_without_tfmnist_or_tensorflow(converted, tmp_path):
  records_dir, _, folder, _ = converted
  _, images, labels = pipeline.read_labelled(records_dir, "mnist", "test")
  rows, loaded = litert.check([os.path.join(folder, "int8.tflite")], images[:10], labels[:10],
                              labels[:10])
  assert loaded == {"tfmnist": False, "tensorflow": False}
  assert rows[0]["file"] == "int8.tflite" and 0 <= rows[0]["accuracy"] <= 1


@pytest.mark.slow  # A second conversion process.
def test_an_ensemble_export_converts(converted, tmp_path):
  records_dir, model_dir, _, _ = converted
  member = inference.load(str(model_dir))
  other = inference.ExportedModel(tfx.random_export(tmp_path / "random"))
  ensemble = inference.Ensemble([member, other], inference.run_settings(str(model_dir)))
  destination = ensemble.export(str(tmp_path / "ensemble"))
  folder, report = litert.convert_model(litert.ConvertConfig(
      model_dir=destination, variants=("float32", "int8"), check_images=20,
      calibration_images=50, progress=False))
  assert folder == os.path.join(destination, "litert")
  rows = {row["variant"]: row for row in report["files"]}
  assert rows["float32"]["agreement"] == 1.0
  _, images, _ = pipeline.read_labelled(records_dir, "mnist", "test")
  np.testing.assert_allclose(_run(os.path.join(folder, "float32.tflite"), images[:20]),
                             ensemble.predict(images[:20]), atol=1e-5)


def test_a_run_without_an_export_is_one_line(tmp_path):
  (tmp_path / "run").mkdir()
  with pytest.raises(DataError, match=r"run: no export/ to convert; export its latest "
                     r"checkpoint first: python -m tfmnist.train --flagfile=\S+flags.txt "
                     "--export_checkpoint=latest"):
    litert.convert_model(litert.ConvertConfig(model_dir=str(tmp_path / "run")))
  assert os.listdir(tmp_path / "run") == []


def test_an_unknown_variant_is_one_line():
  with pytest.raises(ValueError, match="unknown variant 'int4'; choose from float32, float16, "
                     "dynamic_range, int8"):
    litert.check_variants(["float32", "int4"])


def test_without_litert_the_error_says_what_to_install(converted, monkeypatch):
  _, model_dir, _, _ = converted
  monkeypatch.setattr(litert, "has_interpreter", lambda: False)
  with pytest.raises(DataError, match=r"ai-edge-litert\) is not installed: pip install "
                     r"'tfmnist\[litert\]'"):
    litert.convert_model(litert.ConvertConfig(model_dir=str(model_dir)))


def _export(model, destination):
  model(pixels.normalize(tf.zeros([1, 28, 28, 1], tf.uint8)), training=False)
  return export.export(model, [str(i) for i in range(10)], str(destination))


def test_an_export_in_bfloat16_says_to_export_again(tmp_path):
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy("mixed_bfloat16")
  try:
    destination = _export(models.create("mlp", 10), tmp_path / "run" / "export")
  finally:
    keras.mixed_precision.set_global_policy(previous)
  with pytest.raises(DataError, match="the export computes in bfloat16, which LiteRT's "
                     "converter does not take; export it again: python -m tfmnist.train "):
    litert.convert(destination, np.zeros((1, 28, 28, 1), np.uint8))


@pytest.mark.slow  # A conversion process.
def test_the_deskewing_model_converts_with_builtin_ops(converted, tmp_path):
  # Deskew's moments and shear are sums, products and gathers, all
  # LiteRT builtins; the file reads slanted digits as the SavedModel does.
  records_dir, _, _, _ = converted
  keras.utils.set_random_seed(3)
  destination = _export(models.create("strided_bn_deskew", 10), tmp_path / "deskew" / "export")
  flatbuffers = litert.convert(destination, np.zeros((1, 28, 28, 1), np.uint8),
                               variants=("float32",))
  path = tmp_path / "deskew.tflite"
  path.write_bytes(flatbuffers["float32"])
  _, images, _ = pipeline.read_labelled(records_dir, "mnist", "test")
  np.testing.assert_allclose(_run(path, images[:20]),
                             inference.ExportedModel(destination).predict(images[:20]), atol=1e-5)


class OddOpModel(keras.Model):
  """A model with an op that LiteRT has no kernel for, or one its quantizer cannot take."""

  def __init__(self, num_classes, op):
    super().__init__()
    self.op = op
    self.dense = keras.layers.Dense(num_classes)

  def call(self, x, training=False):
    return self.dense(self.op(keras.ops.reshape(x, [-1, 28, 28])))


def _determinant(x):
  return tf.repeat(tf.linalg.det(x)[:, None], 784, axis=1)


def _lgamma(x):
  return tf.math.lgamma(tf.reshape(x, [-1, 784]) + 1.0)


@pytest.mark.slow  # A conversion process each.
@pytest.mark.parametrize("op, variant, reason", [
    (_determinant, "float32", "'tf.MatrixDeterminant' op is neither a custom op nor a flex "
     "op (LiteRT has no kernel for it)"),
    # The float files take lgamma, but the int8 quantizer crashes its process on it.
    (_lgamma, "int8", "LiteRT's converter crashed (SIGSEGV); the model holds an op it cannot "
     "handle in this variant; set variants to the others")])
def test_an_op_litert_lacks_is_one_line_and_leaves_the_old_files(converted, tmp_path, op,
                                                                 variant, reason):
  _, model_dir, _, _ = converted
  destination = _export(OddOpModel(10, op), tmp_path / "odd")
  os.makedirs(os.path.join(destination, "litert"))
  with open(os.path.join(destination, "litert", "float32.tflite"), "wb") as f:
    f.write(b"earlier")
  with pytest.raises(DataError) as error:
    litert.convert_model(litert.ConvertConfig(
        model_dir=destination, dataset="mnist",
        records_dir=inference.run_settings(str(model_dir)).records_dir, check_images=5,
        calibration_images=5, progress=False))
  assert str(error.value) == f"{destination}: cannot convert to LiteRT {variant}: {reason}"
  assert os.listdir(os.path.join(destination, "litert")) == ["float32.tflite"]
  assert open(os.path.join(destination, "litert", "float32.tflite"), "rb").read() == b"earlier"
  assert not [name for name in os.listdir(destination) if name.startswith(".")]
