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


def test_serving_request_body_matches_the_signature(export_dir):
  """The REST body's "instances" layout, filled with real images, is what the signature takes."""
  section = _section("Loading the model elsewhere")
  (request,) = [b for b in _blocks(section) if "v1/models" in b]
  body = re.search(r"-d '(.*)'", request, re.S).group(1)
  # The README elides pixels with "..."; build the same nesting with real values.
  assert body.count("[[[") == 1 and '"instances"' in body
  images = tfx.synthetic_split(3, seed=5)[0]
  payload = json.loads(json.dumps({"signature_name": "serving_default",
                                   "instances": images.tolist()}))
  instances = np.array(payload["instances"], np.uint8)
  assert instances.shape == (3, 28, 28)
  serve = tf.saved_model.load(str(export_dir)).signatures[
      payload["signature_name"]]
  out = serve(images=tf.constant(instances))
  assert out["probabilities"].shape == (3, 10)
  assert out["classes"].dtype == tf.int64
