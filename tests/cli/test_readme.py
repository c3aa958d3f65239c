"""The README's "Loading the model elsewhere" examples run as written."""

import json
import os
import re
import subprocess

import numpy as np
import pytest
import tensorflow as tf

import train_fixtures as tfx

README = tfx.REPO_ROOT / "README.md"
README_EXPORT = "runs/lenet/export"


def _section(title):
  text = README.read_text()
  start = text.index(f"## {title}\n")
  end = text.find("\n## ", start + 1)
  return text[start:end if end >= 0 else len(text)]


def _blocks(section, language=None):
  """The fenced code blocks of a section, optionally only those of one language."""
  blocks, current, tag = [], None, ""
  for line in section.splitlines(keepends=True):
    if line.startswith("```"):
      if current is None:
        current, tag = [], line[3:].strip()
      else:
        if language is None or tag == language:
          blocks.append("".join(current))
        current = None
    elif current is not None:
      current.append(line)
  return blocks


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
  records_dir = tfx.shared_records(tmp_path_factory)
  root = tmp_path_factory.mktemp("readme")
  tfx.train_in_process(root / "run", records_dir, model="lenet5", export=True)
  return root / "run" / "export"


@pytest.mark.slow
def test_loading_snippet_runs_without_tfmnist(export_dir, tmp_path):
  """The Python snippet loads a real export in a fresh interpreter and prints its outputs."""
  root = tmp_path
  (snippet,) = _blocks(_section("Loading the model elsewhere"), "python")
  assert README_EXPORT in snippet
  script = root / "snippet.py"
  modules = "\nimport sys\nprint(sorted(m for m in sys.modules if m.startswith('tfmnist')))\n"
  script.write_text(snippet.replace(README_EXPORT, str(export_dir)) + modules)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  result = subprocess.run([tfx.PYTHON, str(script)], capture_output=True, text=True,
                          timeout=300, cwd=str(root), env=env)
  assert result.returncode == 0, tfx.describe(result)
  lines = result.stdout.strip().splitlines()
  assert re.fullmatch(r"\[\d \d\] \(2, 10\)", lines[-2]), result.stdout
  assert lines[-1] == "[]"  # The snippet never imported tfmnist.


def _expand_elisions(body):
  """The README's request body with its "..." filled in: rows of 28 zeros, 28 rows."""
  row = "[" + ", ".join(["0"] * 28) + "]"
  body = body.replace("[0, 0, ..., 0]", row)
  return body.replace(f"[{row}, ..., {row}]", "[" + ", ".join([row] * 28) + "]")


def test_serving_request_and_answer_match_the_signature(export_dir):
  """The README's REST request, pixels filled in, is what the signature takes, and its
  answer names what the signature returns."""
  section = _section("Loading the model elsewhere")
  (request,) = [b for b in _blocks(section) if "v1/models" in b]
  payload = json.loads(_expand_elisions(re.search(r"-d '(.*)'", request, re.S).group(1)))
  # TensorFlow Serving's row format: each instance is one value of the one input.
  instances = np.array(payload["instances"], np.uint8)
  assert instances.shape == (1, 28, 28)
  serve = tf.saved_model.load(str(export_dir)).signatures[payload["signature_name"]]
  assert list(serve.structured_input_signature[1]) == ["images"]
  out = serve(images=tf.constant(instances))
  answer = re.search(r'`(\{"predictions": .*\})`', section).group(1)
  prediction = json.loads(answer.replace("[...]", "[]"))["predictions"][0]
  assert sorted(prediction) == sorted(out)
  assert out["probabilities"].shape == (1, 10) and out["classes"].dtype == tf.int64


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["int8", "float32"])
def test_litert_snippet_runs_with_only_litert(export_dir, tmp_path, variant):
  """The device snippet reads a class from each kind of file with nothing but LiteRT."""
  pytest.importorskip("ai_edge_litert", reason="LiteRT's interpreter: pip install -e '.[test]'")
  from tfmnist.serving import litert  # pylint: disable=g-import-not-at-top
  (snippet,) = _blocks(_section("Phones, boards and microcontrollers (LiteRT)"), "python")
  readme_file = "runs/fast/export/litert/int8.tflite"
  assert readme_file in snippet
  folder = os.path.join(export_dir, litert.FOLDER)
  if not os.path.exists(folder):
    litert.convert_model(litert.ConvertConfig(
        model_dir=str(export_dir.parent), variants=("float32", "int8"), check_images=10,
        calibration_images=20, progress=False))
  script = tmp_path / "device.py"
  modules = ("\nimport sys\nprint(sorted(m for m in sys.modules if m.split('.')[0] in "
             "('tfmnist', 'tensorflow')))\n")
  script.write_text(snippet.replace(readme_file, os.path.join(folder, f"{variant}.tflite"))
                    + modules)
  result = subprocess.run([tfx.PYTHON, "-I", str(script)], capture_output=True, text=True,
                          timeout=120, cwd=str(tmp_path))
  assert result.returncode == 0, tfx.describe(result)
  lines = result.stdout.strip().splitlines()
  assert re.fullmatch(r"\d", lines[-2]), result.stdout
  assert lines[-1] == "[]"
