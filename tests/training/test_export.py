"""Tests of the exported SavedModel: plain TensorFlow in, the trained model's
predictions out."""

import json
import os
import subprocess
import types

import numpy as np
import pytest
import tensorflow as tf

import train_fixtures as tfx
from tfmnist import models
from tfmnist.data import pixels, records
from tfmnist.training import export

NHWC_MESSAGE = "images must be uint8 [N, 28, 28, 1] (serving_nhw takes [N, 28, 28])"
NHW_MESSAGE = "images must be uint8 [N, 28, 28] (serving_default takes [N, 28, 28, 1])"
SAVED_MODEL_CLI = os.path.join(os.path.dirname(tfx.PYTHON), "saved_model_cli")

# Runs in a fresh interpreter that must never import tfmnist.
LOAD_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf

export_dir, inputs_path, outputs_path = sys.argv[1:]
loaded = tf.saved_model.load(export_dir)
serve = loaded.signatures["serving_default"]
serve_nhw = loaded.signatures["serving_nhw"]
images = np.load(inputs_path)["images"]
channel = serve(images=tf.constant(images[..., None]))
flat = serve_nhw(images=tf.constant(images))
np.savez(outputs_path, probabilities=flat["probabilities"].numpy(),
         classes=flat["classes"].numpy(), probabilities_4d=channel["probabilities"].numpy(),
         classes_4d=channel["classes"].numpy())
specs = {name: {key: [spec.shape.as_list(), spec.dtype.name]
                for key, spec in loaded.signatures[name].structured_input_signature[1].items()}
         for name in ("serving_default", "serving_nhw")}
errors = {}
floats = images[..., None].astype(np.float32) / 255.0
bad_inputs = {"shape": (serve, np.zeros((2, 32, 32, 1), np.uint8)),
              "channels": (serve, np.zeros((2, 28, 28, 3), np.uint8)),
              "rank": (serve, np.zeros((28, 28), np.uint8)),
              "no channel": (serve, np.zeros((2, 28, 28), np.uint8)),
              "nhw shape": (serve_nhw, np.zeros((2, 32, 32), np.uint8)),
              "nhw channel": (serve_nhw, np.zeros((2, 28, 28, 1), np.uint8)),
              "dtype": (serve, floats),
              "dtype served": (loaded.serve, floats)}
for name, (function, bad) in bad_inputs.items():
  try:
    if function is loaded.serve:
      function(tf.constant(bad))
    else:
      function(images=tf.constant(bad))
    errors[name] = None
  except Exception as e:  # Reported to the test, which judges the message.
    errors[name] = f"{type(e).__name__}: {e}"
with open(loaded.class_names_file.asset_path.numpy().decode()) as f:
  class_names = f.read().splitlines()
print(json.dumps({
    "tfmnist_modules": sorted(m for m in sys.modules if m.split(".")[0] == "tfmnist"),
    "output_dtypes": {k: v.dtype.name for k, v in flat.items()},
    "input_specs": specs, "errors": errors, "class_names": class_names}))
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A lenet5 trained for one epoch with export, and the plain-TF load of its export."""
  records_dir = tfx.shared_records(tmp_path_factory)
  root = tmp_path_factory.mktemp("export")
  fields = dict(model="lenet5", export=True, learning_rate=3e-3)
  tfx.train_in_process(root / "run", records_dir, **fields)
  export_dir = str(root / "run" / "export")
  images = tfx.synthetic_split(tfx.NUM_TEST, seed=11)[0]
  np.savez(root / "inputs.npz", images=images)

  jobs = tfx.Jobs(max_parallel=2)
  script = root / "load.py"
  script.write_text(LOAD_SCRIPT)
  # Run from outside the repository; whether tfmnist got imported is read from
  # the program's own sys.modules.
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  load = jobs.submit("load", lambda: subprocess.run(
      [tfx.PYTHON, str(script), export_dir, str(root / "inputs.npz"), str(root / "out.npz")],
      capture_output=True, text=True, timeout=300, cwd=str(root), env=env))
  cli = jobs.submit("cli", lambda: subprocess.run(
      [SAVED_MODEL_CLI, "show", "--dir", export_dir, "--all"],
      capture_output=True, text=True, timeout=300, cwd=str(root), env=env))
  yield types.SimpleNamespace(records_dir=records_dir, root=root, fields=fields,
                              export_dir=export_dir, images=images, load=load, cli=cli)
  jobs.close()


@pytest.fixture(scope="module")
def loaded(trained):
  """What the plain-TensorFlow program reported, and the outputs it saved."""
  result = tfx.check(trained.load.result())
  report = json.loads(result.stdout.strip().splitlines()[-1])
  with np.load(trained.root / "out.npz") as outputs:
    report["outputs"] = dict(outputs)
  return report


def test_loads_and_runs_without_tfmnist(loaded):
  assert loaded["tfmnist_modules"] == []


def test_outputs_are_probabilities_and_classes(trained, loaded):
  outputs = loaded["outputs"]
  count = len(trained.images)
  assert outputs["probabilities"].shape == (count, 10)
  assert loaded["output_dtypes"] == {"probabilities": "float32", "classes": "int64"}
  np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1.0, atol=1e-5)
  assert np.all(outputs["probabilities"] >= 0)
  np.testing.assert_array_equal(outputs["classes"], outputs["probabilities"].argmax(axis=1))
  # [N, 28, 28] and [N, 28, 28, 1] are the same images.
  np.testing.assert_array_equal(outputs["probabilities_4d"], outputs["probabilities"])
  np.testing.assert_array_equal(outputs["classes_4d"], outputs["classes"])


def test_predictions_equal_the_trained_model(trained, loaded):
  run, _ = tfx.restore_run(trained.root / "run", trained.records_dir, **trained.fields)
  logits = run.model(pixels.normalize(tf.constant(trained.images)), training=False)
  expected = tf.nn.softmax(logits).numpy()
  np.testing.assert_allclose(loaded["outputs"]["probabilities"], expected, atol=1e-5)
  # The model learned the patterns, so the comparison is not between two uniform outputs.
  labels = tfx.synthetic_split(tfx.NUM_TEST, seed=11)[1]
  assert (loaded["outputs"]["classes"] == labels).mean() > 0.5


def test_signatures_take_images_of_a_concrete_shape(loaded):
  assert loaded["input_specs"] == {"serving_default": {"images": [[None, 28, 28, 1], "uint8"]},
                                   "serving_nhw": {"images": [[None, 28, 28], "uint8"]}}


@pytest.mark.parametrize("name, message", [
    ("shape", NHWC_MESSAGE), ("channels", NHWC_MESSAGE), ("rank", NHWC_MESSAGE),
    ("no channel", NHWC_MESSAGE), ("nhw shape", NHW_MESSAGE), ("nhw channel", NHW_MESSAGE)])
def test_wrong_shape_raises_a_clear_error(loaded, name, message):
  """TensorFlow does not check a loaded signature's shape; the export does."""
  error = loaded["errors"][name]
  assert error is not None, f"{name}: no error"
  assert message in error, error


def test_float_input_raises_an_error_that_asks_for_uint8(loaded):
  # The signature's check is TensorFlow's: it names the dtype, not the input
  # (its only one); the function `serve` names both.
  error = loaded["errors"]["dtype"]
  assert error is not None
  assert "expected to be a uint8 tensor but is a float tensor" in error, error
  error = loaded["errors"]["dtype served"]
  assert error is not None
  assert "dtype=tf.float32, name='images'" in error and "dtype=tf.uint8, name='images'" in error


def test_class_names_asset(trained, loaded):
  path = os.path.join(trained.export_dir, "assets", export.CLASS_NAMES_FILE)
  assert os.path.isfile(path)
  names = records.read_info(trained.records_dir, "mnist")["class_names"]
  with open(path) as f:
    assert f.read().splitlines() == names
  assert loaded["class_names"] == names


def test_saved_model_cli_shows_the_signature(trained):
  result = tfx.check(trained.cli.result())
  text = result.stdout
  assert "inputs['images'] tensor_info:" in text, text
  assert "dtype: DT_UINT8" in text
  for name, shape in (("serving_default", "(-1, 28, 28, 1)"), ("serving_nhw", "(-1, 28, 28)")):
    signature = text[text.index(f"signature_def['{name}']"):]
    signature = signature[:signature.index("Method name is")]
    assert f"shape: {shape}\n" in signature and "unknown_rank" not in signature, signature
  assert "outputs['probabilities'] tensor_info:" in text
  assert "outputs['classes'] tensor_info:" in text
  assert "dtype: DT_INT64" in text and "dtype: DT_FLOAT" in text
  assert "shape: (-1, 10)" in text
  assert "Method name is: tensorflow/serving/predict" in text


def test_export_of_several_models_averages_and_replaces_atomically(tmp_path):
  images = tf.constant(tfx.synthetic_split(8, seed=5)[0])
  x = pixels.normalize(images)
  ensemble = []
  for seed in (1, 2):
    tf.keras.utils.set_random_seed(seed)
    model = models.create("mlp", 3)
    model(x, training=False)
    ensemble.append(model)
  export_dir = str(tmp_path / "export")
  export.export(ensemble[0], ["a", "b", "c"], export_dir)
  export.export(ensemble, ["a", "b", "c"], export_dir)  # Replaces the first export.
  assert sorted(os.listdir(tmp_path)) == ["export"]  # No temporary folders left.
  served = tf.saved_model.load(export_dir).signatures["serving_nhw"](images=images)
  expected = np.mean([tf.nn.softmax(m(x, training=False)).numpy() for m in ensemble], axis=0)
  np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-6)
  with open(os.path.join(export_dir, "assets", export.CLASS_NAMES_FILE)) as f:
    assert f.read() == "a\nb\nc\n"
