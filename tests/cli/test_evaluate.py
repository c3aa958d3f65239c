"""Tests of the evaluation command: python -m tfmnist.evaluate --model_dir=RUN."""

import json
import os
import re
import shutil
import types

import numpy as np
from PIL import Image
import pytest

import train_fixtures as tfx
from tfmnist.cli import predict
from tfmnist.data import pipeline, prepare, records
from tfmnist.serving import inference
from tfmnist.errors import DataError

pytestmark = pytest.mark.slow  # Every test here runs the command.

FIGURES = ["confusion.png", "curves.png", "mistakes.png", "reliability.png", "robustness.png"]
FIVE_CLASSES = ("a", "b", "c", "d", "e")


def _evaluate(*args):
  return tfx.run([tfx.PYTHON, "-m", "tfmnist.evaluate", *map(str, args)])


def _five_class_records(root):
  """Records of the dataset "five": the synthetic images with labels 0..4."""
  x_train, y_train = tfx.synthetic_split(100, seed=7)
  x_test, y_test = tfx.synthetic_split(30, seed=8)
  source = str(root / "five.npz")
  np.savez(source, x_train=x_train, y_train=y_train % 5, x_test=x_test, y_test=y_test % 5)
  records_dir = str(root / "records")
  prepare.make_records(prepare.PrepareConfig(
      dataset="five", source="npz", source_dir=source, output_dir=records_dir,
      class_names=FIVE_CLASSES, validation_size=0.2, num_shards=1, show_progress=False))
  return records_dir


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  """Copies of the shared run, a 5-class dataset, and the commands' results."""
  records_dir, run_dir = tfx.shared_run(tmp_path_factory)
  root = tmp_path_factory.mktemp("evaluate")
  s = types.SimpleNamespace(records_dir=records_dir, root=root)
  s.run_dir = tfx.copy_tree(run_dir, root / "run")
  s.five_run = tfx.copy_tree(run_dir, root / "five_run")
  # A run whose export and checkpoints are gone; its manifest and flags remain.
  s.bare_run = root / "bare_run"
  s.bare_run.mkdir()
  for name in ("manifest.json", "flags.txt"):
    shutil.copy(os.path.join(run_dir, name), s.bare_run / name)
  jobs = tfx.Jobs(max_parallel=2)
  s.results = {"report": jobs.submit("report", _evaluate, f"--model_dir={s.run_dir}")}
  s.five_records = _five_class_records(root)
  assert records.read_info(s.five_records, "five")["num_classes"] == 5
  s.results["five"] = jobs.submit("five", _evaluate, f"--model_dir={s.five_run}",
                                  "--dataset=five", f"--records_dir={s.five_records}")
  s.results["bare"] = jobs.submit("bare", _evaluate, f"--model_dir={s.bare_run}")
  yield s
  jobs.close()


def _assert_one_line_error(result, *names):
  """Exit status non-zero and one stderr line naming `names`; returns the line."""
  assert result.returncode != 0, tfx.describe(result)
  lines = tfx.clean_stderr(result.stderr).strip().splitlines()
  assert len(lines) == 1, tfx.describe(result)
  assert lines[0].startswith("evaluate: error: "), lines[0]
  for name in names:
    assert str(name) in lines[0], (name, lines[0])
  return lines[0]


def test_evaluate_writes_the_report(setup):
  """The report folder has every figure (valid PNGs), metrics.json and report.md."""
  tfx.check(setup.results["report"].result())
  folder = os.path.join(setup.run_dir, "eval", "test")
  assert sorted(os.listdir(folder)) == sorted(FIGURES + ["metrics.json", "report.md"])
  for name in FIGURES:
    with Image.open(os.path.join(folder, name)) as image:
      image.verify()
    with Image.open(os.path.join(folder, name)) as image:
      assert image.format == "PNG"
      assert min(image.size) >= 150 and max(image.size) <= 5000, (name, image.size)
  assert os.listdir(os.path.join(setup.run_dir, "eval")) == ["test"]  # Nothing temporary.
  log_dir = os.path.join(setup.run_dir, "logs", "eval_test")
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(log_dir))
  # One progress bar counted the test split's images, another the 22 sweep levels.
  stderr = setup.results["report"].result().stderr
  full = "#" * 24
  assert f"evaluating mnist test: [{full}] {tfx.NUM_TEST}/{tfx.NUM_TEST} " in stderr
  assert f"robustness sweeps on {tfx.NUM_TEST} images: [{full}] 22/22 " in stderr


def test_evaluate_metrics_and_summary(setup):
  """metrics.json has the documented keys, agrees with the export, and with the printed line."""
  result = tfx.check(setup.results["report"].result())
  with open(os.path.join(setup.run_dir, "eval", "test", "metrics.json")) as f:
    saved = json.load(f)
  for key in ("accuracy", "loss", "error_count", "per_class", "expected_calibration_error",
              "robustness"):
    assert key in saved, key
  assert sorted(saved["robustness"]) == ["gaussian noise", "rotation", "shift"]
  assert len(saved["per_class"]) == 10
  # The export's own predictions on the test split give the same accuracy.
  examples = pipeline.read_examples(records.split_files(setup.records_dir, "mnist", "test"))
  predictor = inference.ExportedModel(os.path.join(setup.run_dir, "export"))
  predicted = predictor.predict(examples.image.numpy()).argmax(-1)
  wrong = int(np.sum(predicted != examples.label.numpy()))
  assert saved["error_count"] == wrong and saved["count"] == tfx.NUM_TEST
  assert saved["accuracy"] == pytest.approx(1 - wrong / tfx.NUM_TEST)
  summary = result.stdout.strip().splitlines()[-1]
  match = re.fullmatch(
      r"mnist test: accuracy ([\d.]+)% \((\d+) errors in (\d+)\), loss ([\d.]+), "
      r"ECE ([\d.]+); report in (.+) \(([\d.]+) s\)", summary)
  assert match, summary
  assert float(match[1]) == pytest.approx(100 * saved["accuracy"], abs=1e-4)
  assert int(match[2]) == wrong and int(match[3]) == tfx.NUM_TEST
  assert float(match[4]) == pytest.approx(saved["loss"], abs=1e-4)
  assert float(match[5]) == pytest.approx(saved["expected_calibration_error"], abs=1e-4)
  assert match[6] == os.path.join(setup.run_dir, "eval", "test", "report.md")


def test_dataset_with_another_class_count(setup):
  """A 5-class --dataset for a 10-class model: one-line error, no eval/ folder."""
  line = _assert_one_line_error(setup.results["five"].result(), "5", "10")
  assert "five" in line
  assert not os.path.exists(os.path.join(setup.five_run, "eval"))
  assert not os.path.exists(os.path.join(setup.five_run, "logs", "eval_test"))


def test_calibrating_on_a_dataset_with_another_class_count_is_refused(setup):
  """predict --calibrate_split shares the class check: an ensemble on the 5-class records."""
  member = inference.load(setup.run_dir)
  settings = inference.RunSettings("five", setup.five_records, ("train",))
  ensemble = inference.Ensemble([member, member], settings)
  with pytest.raises(DataError) as raised:
    predict.calibrate(ensemble, "validation", 1000)
  assert str(raised.value) == (
      f"--calibrate_split=validation: {records.dataset_dir(setup.five_records, 'five')}: "
      "5 classes, but the 2 models predict 10")
  assert ensemble.temperature == 1.0 and not ensemble.calibrated_on


def test_a_split_the_model_trained_on_is_flagged(setup, tmp_path):
  run_dir = tfx.copy_tree(setup.run_dir, tmp_path / "refit")
  manifest_path = os.path.join(run_dir, "manifest.json")
  with open(manifest_path) as f:
    manifest = json.load(f)
  assert manifest["train_splits"] == ["train"]
  manifest["train_splits"] = ["train", "validation"]
  with open(manifest_path, "w") as f:
    json.dump(manifest, f)
  # An ensemble export inherits the dataset, records and training splits.
  ensemble_dir = str(tmp_path / "ensemble")
  inference.Ensemble([inference.load(run_dir)],
                     inference.ensemble_settings([run_dir, setup.run_dir])).export(ensemble_dir)
  report_line = "**The model trained on this split**"
  for model_dir, report_dir in ((run_dir, run_dir), (ensemble_dir, ensemble_dir + "_eval")):
    for split, flagged in (("validation", True), ("test", False)):
      result = tfx.check(_evaluate(f"--model_dir={model_dir}", f"--split={split}",
                                   "--norobustness"))
      warning = (f"evaluate: warning: {model_dir} trained on the validation split; its "
                 "figures there measure fit, not accuracy on new images")
      assert (warning in tfx.clean_stderr(result.stderr).splitlines()) == flagged
      with open(os.path.join(report_dir, "eval", split, "report.md")) as f:
        assert (report_line in f.read()) == flagged


def test_run_without_export_or_checkpoints(setup):
  """A run folder with nothing to load: one-line error naming it, nothing written."""
  _assert_one_line_error(setup.results["bare"].result(), setup.bare_run)
  assert sorted(os.listdir(setup.bare_run)) == ["flags.txt", "manifest.json"]
