"""Tests of tools/check_export_precision.py: a bfloat16 run against its float32 export."""

import json

import pytest

import train_fixtures as tfx

pytestmark = pytest.mark.slow  # Runs the tool.


def test_a_bfloat16_run_agrees_with_its_float32_export(tmp_path, records_dir):
  model_dir = tmp_path / "run"
  tfx.train_in_process(model_dir, records_dir, model="fast_cnn", precision="mixed_bfloat16",
                       epochs=1, export=True, say=lambda message: None)
  output = tmp_path / "figures.json"
  result = tfx.run([tfx.PYTHON, str(tfx.REPO_ROOT / "tools" / "check_export_precision.py"),
                    f"--model_dir={model_dir}", "--split=validation", f"--output={output}"])
  assert result.returncode == 0, tfx.describe(result)
  figures = json.loads(output.read_text())
  assert figures["training_policy"] == "mixed_bfloat16" and figures["images"] == 120
  assert figures["class_agreement"] >= 0.99
  assert f"trained in mixed_bfloat16 {figures['training_precision_accuracy']:.2%}" in result.stdout
  # A run folder without an export is one line.
  (tmp_path / "bare").mkdir()
  result = tfx.run([tfx.PYTHON, str(tfx.REPO_ROOT / "tools" / "check_export_precision.py"),
                    f"--model_dir={tmp_path / 'bare'}"])
  assert result.returncode == 1
  assert tfx.clean_stderr(result.stderr).strip() == (
      f"check_export_precision: error: {tmp_path / 'bare'}: needs a run folder with "
      "config.json and export/")
