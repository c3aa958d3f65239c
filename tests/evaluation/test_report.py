"""Tests of evaluation.report: the written report of a model on a split."""

import json
import os
import re
import shutil
import types

import numpy as np
from PIL import Image
import pytest

import train_fixtures as tfx
from tfmnist.data import pipeline, prepare, records
from tfmnist.evaluation import report, robustness
from tfmnist.serving import inference
from tfmnist.errors import DataError

REPORT_FILES = sorted(["confusion.png", "curves.png", "metrics.json", "mistakes.png", "report.md",
                       "reliability.png", "robustness.png"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A copy of the shared run (reports are written into it), its predictor and the test split."""
  records_dir, run_dir = tfx.shared_run(tmp_path_factory)
  root = tmp_path_factory.mktemp("report")
  run_dir = tfx.copy_tree(run_dir, root / "run")
  examples = pipeline.read_examples(records.split_files(records_dir, "mnist", "test"))
  return types.SimpleNamespace(
      records_dir=records_dir, run_dir=run_dir, root=root,
      predictor=inference.ExportedModel(os.path.join(run_dir, "export")),
      images=examples.image.numpy(), labels=examples.label.numpy())


class _Fixed(inference.Predictor):
  """A Predictor whose probabilities are a function of the images."""

  def __init__(self, class_names, source, probabilities):
    self.class_names, self.source, self.members = class_names, source, [self]
    self._probabilities = probabilities

  def predict(self, images, batch_size=1000, tta=False, mirror=False):
    return self._probabilities(images)


def _config(trained, **fields):
  return report.ReportConfig(model_dir=trained.run_dir, records_dir=trained.records_dir,
                             **fields)


def _temporary_entries(folder):
  return [name for name in os.listdir(folder) if name.startswith(".")]


# ----------------------------------------------------------------------------
# write_report
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def written(trained):
  """The report of the run's export on the test split."""
  return report.write_report(_config(trained, top_mistakes=6), trained.predictor)


def test_write_report_writes_every_file(trained, written):
  """The report folder holds the metrics, every figure and report.md linking them."""
  folder, _ = written
  assert folder == os.path.join(trained.run_dir, "eval", "test")
  assert sorted(os.listdir(folder)) == REPORT_FILES
  with open(os.path.join(folder, "report.md")) as f:
    markdown = f.read()
  for name in REPORT_FILES:
    if name.endswith(".png"):
      assert f"]({name})" in markdown, name
      with Image.open(os.path.join(folder, name)) as image:
        image.verify()
      with Image.open(os.path.join(folder, name)) as image:
        width, height = image.size
      assert 150 <= width <= 5000 and 150 <= height <= 5000, (name, image.size)
  assert _temporary_entries(os.path.join(trained.run_dir, "eval")) == []
  # The metrics also go to TensorBoard.
  log_dir = os.path.join(trained.run_dir, "logs", "eval_test")
  assert any(n.startswith("events.out.tfevents") for n in os.listdir(log_dir))


def test_write_report_progress_counts_the_split_then_the_sweeps(trained, tmp_path, capsys):
  """One bar over the split's images, one over the 22 sweep levels: 10 noise levels, 8
  rotations, 4 shifts."""
  report.write_report(_config(trained, output_dir=str(tmp_path), robustness_images=40,
                              progress=True), trained.predictor)
  lines = capsys.readouterr().err.splitlines()
  split = [line for line in lines if line.startswith("evaluating mnist test: ")]
  sweeps = [line for line in lines if line.startswith("robustness sweeps on 40 images: ")]
  assert split + sweeps == lines
  full = "#" * 24
  assert split[-1].startswith(f"evaluating mnist test: [{full}] {tfx.NUM_TEST}/{tfx.NUM_TEST} ")
  assert sweeps[-1].startswith(f"robustness sweeps on 40 images: [{full}] 22/22 ")
  assert len(sweeps) > 1  # Not a tty: a line at every tenth of the way.


def test_write_report_metrics_match_the_predictions(trained, written):
  """metrics.json: accuracy, errors and per-class support from the predictor's predictions."""
  folder, result = written
  with open(os.path.join(folder, "metrics.json")) as f:
    saved = json.load(f)
  predicted = trained.predictor.predict(trained.images).argmax(-1)
  wrong = int(np.sum(predicted != trained.labels))
  assert saved["count"] == len(trained.labels) == tfx.NUM_TEST
  assert saved["accuracy"] == pytest.approx(1 - wrong / len(trained.labels))
  assert saved["error_count"] == wrong
  assert wrong > 0  # The flipped labels guarantee mistakes to show.
  assert [row["support"] for row in saved["per_class"]] == np.bincount(
      trained.labels, minlength=10).tolist()
  assert saved["split"] == "test" and saved["dataset"] == "mnist" and saved["tta"] is False
  assert saved["model"] == trained.predictor.source
  assert sorted(saved["robustness"]) == ["gaussian noise", "rotation", "shift"]
  assert saved["robustness"]["gaussian noise"]["accuracy"][0] == pytest.approx(
      saved["accuracy"])
  assert saved["accuracy"] == pytest.approx(result["accuracy"])
  with open(os.path.join(folder, "report.md")) as f:
    markdown = f.read()
  assert f"{wrong} of {tfx.NUM_TEST}" in markdown
  noise = saved["robustness"]["gaussian noise"]
  assert (f"| gaussian noise (std, pixels in [0, 1]) | 0.1 | {noise['accuracy'][1]:.4%} |"
          in markdown.splitlines())
  assert "| shift (pixels, a quarter of the images each left, right, up, down) | 1 |" in markdown
  assert "))" not in markdown


def test_write_report_of_an_unlabelled_split(trained, tmp_path, write_csv):
  """A split without labels (Kaggle test.csv) is a DataError; nothing is written."""
  images, labels = tfx.synthetic_split(40, seed=4)
  flat = images.reshape(len(images), -1)
  pixels = [f"pixel{i}" for i in range(784)]
  train_csv = write_csv(tmp_path / "train.csv", ["label"] + pixels,
                        np.column_stack([labels, flat]))
  test_csv = write_csv(tmp_path / "test.csv", pixels, flat[:10])
  records_dir = str(tmp_path / "records")
  prepare.make_records(prepare.PrepareConfig(
      dataset="digit_recognizer", train_csv=train_csv, test_csv=test_csv,
      output_dir=records_dir, num_shards=1, show_progress=False))
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  config = report.ReportConfig(model_dir=str(model_dir), records_dir=records_dir,
                               dataset="digit_recognizer", split="test")
  with pytest.raises(DataError, match="no labels") as error:
    report.write_report(config, trained.predictor)
  assert "digit_recognizer" in str(error.value)
  assert os.listdir(model_dir) == []


def test_write_report_with_a_class_count_mismatch(trained, tmp_path):
  """A model of 3 classes on a 10-class dataset: DataError naming both, nothing written."""
  fake = _Fixed(["a", "b", "c"], "fake-model",
                lambda images: np.full((len(images), 3), 1 / 3, np.float32))
  model_dir = tmp_path / "run"
  model_dir.mkdir()
  config = report.ReportConfig(model_dir=str(model_dir), records_dir=trained.records_dir)
  with pytest.raises(DataError) as error:
    report.write_report(config, fake)
  message = str(error.value)
  assert "10" in message and "3" in message and "fake-model" in message, message
  assert os.listdir(model_dir) == []


def test_write_report_without_training_logs_has_no_curves(trained, tmp_path):
  """A model folder without training logs gets no curves figure, on a rerun either."""
  oracle = _Fixed([str(i) for i in range(10)], "oracle",
                  lambda images: np.eye(10, dtype=np.float32)[trained.labels])
  config = report.ReportConfig(model_dir=str(tmp_path / "model"),
                               records_dir=trained.records_dir, robustness=False)
  for attempt in range(2):
    folder, result = report.write_report(config, oracle)
    assert result["accuracy"] == 1.0 and result["error_count"] == 0
    names = sorted(os.listdir(folder))
    assert "curves.png" not in names, (attempt, names)
    with open(os.path.join(folder, "report.md")) as f:
      assert "Training curves" not in f.read(), attempt


def test_write_report_rerun_replaces_the_report(trained, written):
  """A second report replaces the first whole and leaves no temporary folders."""
  folder, _ = written
  stale = os.path.join(folder, "stale.txt")
  with open(stale, "w") as f:
    f.write("from an older report")
  again, result = report.write_report(
      _config(trained, robustness=False, tta=True, top_mistakes=3), trained.predictor)
  assert again == folder
  assert not os.path.exists(stale)
  assert sorted(os.listdir(folder)) == [n for n in REPORT_FILES if n != "robustness.png"]
  with open(os.path.join(folder, "metrics.json")) as f:
    saved = json.load(f)
  assert saved["tta"] is True and saved["tta_views"] == 5 and "robustness" not in saved
  tta = trained.predictor.predict(trained.images, tta=True).argmax(-1)
  assert saved["error_count"] == int(np.sum(tta != trained.labels)) == result["error_count"]
  assert _temporary_entries(os.path.join(trained.run_dir, "eval")) == []
  with open(os.path.join(folder, "report.md")) as f:
    markdown = f.read()
  assert re.search(r"test-time augmentation \(one-pixel shifts\)", markdown)


def test_write_report_tta_mirrors_a_dataset_that_is_not_digits(trained, tmp_path):
  """info.json "digits": false (Fashion-MNIST) adds the mirror images to the TTA views."""
  records_dir = tmp_path / "records"
  shutil.copytree(trained.records_dir, records_dir)
  info_path = records_dir / "mnist" / records.INFO_FILE
  info = json.loads(info_path.read_text())
  assert info["digits"] is True
  info_path.write_text(json.dumps(dict(info, digits=False)))
  config = report.ReportConfig(model_dir=str(tmp_path / "model"), records_dir=str(records_dir),
                               robustness=False, tta=True, top_mistakes=3)
  folder, result = report.write_report(config, trained.predictor)
  with open(os.path.join(folder, "metrics.json")) as f:
    saved = json.load(f)
  assert saved["tta"] is True and saved["tta_views"] == 10
  mirrored = trained.predictor.predict(trained.images, tta=True, mirror=True)
  assert result["loss"] == pytest.approx(
      -np.mean(np.log(np.maximum(mirrored[np.arange(len(mirrored)), trained.labels], 1e-7))),
      rel=1e-3)
  assert saved["error_count"] == int(np.sum(mirrored.argmax(-1) != trained.labels))
  with open(os.path.join(folder, "report.md")) as f:
    assert "one-pixel shifts and mirror images" in f.read()


def test_write_report_to_another_output_dir(trained, tmp_path):
  """output_dir takes the report and its TensorBoard events; the run folder is untouched."""
  before = sorted(os.listdir(trained.run_dir))
  out = tmp_path / "elsewhere"
  folder, _ = report.write_report(
      _config(trained, robustness=False, top_mistakes=2, output_dir=str(out)),
      trained.predictor)
  assert folder == os.path.join(str(out), "eval", "test")
  assert "report.md" in os.listdir(folder)
  assert os.listdir(out / "logs" / "eval_test")
  assert sorted(os.listdir(trained.run_dir)) == before


def test_write_report_scores_the_whole_split_at_the_training_noise(trained, tmp_path):
  """A run trained on noisy images is scored on the whole split with that noise, too."""
  seen = []

  def dark_means_noisy(images):
    seen.append(images.copy())
    # Class 1 for images whose mean moved (noise was added), else class 0.
    moved = np.abs(images.reshape(len(images), -1).mean(1) -
                   trained.images.reshape(len(images), -1).mean(1)) > 0.5
    return np.eye(10, dtype=np.float32)[moved.astype(int)]

  predictor = _Fixed([str(i) for i in range(10)], "fixed", dark_means_noisy)
  folder, result = report.write_report(
      _config(trained, output_dir=str(tmp_path), robustness=False, noise_factor=0.5, seed=3),
      predictor)

  noisy = result["training_noise"]
  expected = robustness.add_noise(trained.images, 0.5, 3)
  np.testing.assert_array_equal(seen[1], expected)  # Every image of the split, noisy.
  assert noisy["count"] == len(trained.labels)
  assert noisy["accuracy"] == pytest.approx(np.mean(trained.labels == 1))
  with open(os.path.join(folder, "report.md")) as f:
    assert (f"| accuracy with the training noise (std 0.5, every image) | "
            f"{noisy['accuracy']:.4%} ({noisy['error_count']} errors) |") in f.read()


def test_run_settings_carry_the_training_noise(trained, tmp_path):
  run = tfx.copy_tree(trained.run_dir, tmp_path / "noisy_run")
  path = os.path.join(run, "config.json")
  with open(path) as f:
    config = json.load(f)
  config["augment"]["noise_factor"] = 0.5
  with open(path, "w") as f:
    json.dump(config, f)

  assert inference.run_settings(run).training_noise == 0.5
  assert inference.run_settings(trained.run_dir).training_noise == 0.0
  assert inference.ensemble_settings([run, trained.run_dir]).training_noise == 0.0
  assert inference.ensemble_settings([run, run]).training_noise == 0.5


def test_report_of_an_export_with_built_in_views(trained, tmp_path):
  """An ensemble exported with --tta's views is reported as test-time augmented, with its
  own views' count, and scores what its members score with tta=True."""
  ensemble = inference.Ensemble([trained.predictor], inference.ensemble_settings(
      [trained.run_dir]))
  ensemble.export(str(tmp_path / "tta"), inference.tta_views(True))
  exported = inference.ExportedModel(str(tmp_path / "tta"))
  assert len(exported.built_in_views) == 5
  assert trained.predictor.built_in_views is None
  folder, result = report.write_report(
      report.ReportConfig(model_dir=str(tmp_path / "tta"), records_dir=trained.records_dir,
                          output_dir=str(tmp_path / "report"), robustness=False), exported)
  with open(os.path.join(folder, "metrics.json")) as f:
    saved = json.load(f)
  assert saved["tta"] is True and saved["tta_views"] == 5
  tta = trained.predictor.predict(trained.images, tta=True).argmax(-1)
  assert result["error_count"] == int(np.sum(tta != trained.labels))
  with open(os.path.join(folder, "report.md")) as f:
    assert "with test-time augmentation inside the export (5 views)" in f.read()
