"""Tests of tfmnist.report: perturbations, robustness sweeps and the written report."""

import json
import os
import re
import shutil
import types

import numpy as np
from PIL import Image
import pytest

import train_fixtures as tfx
from test_inference import shared_cli_run
from tfmnist import data, inference, prepare, records, report
from tfmnist import images as images_lib
from tfmnist.errors import DataError

REPORT_FILES = sorted(["confusion.png", "curves.png", "metrics.json", "mistakes.png", "report.md",
                       "reliability.png", "robustness.png"])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A copy of the shared run (reports are written into it), its predictor and the test split."""
  records_dir, run_dir = shared_cli_run(tmp_path_factory)
  root = tmp_path_factory.mktemp("report")
  run_dir = tfx.copy_tree(run_dir, root / "run")
  examples = data.read_examples(records.split_files(records_dir, "mnist", "test"))
  return types.SimpleNamespace(
      records_dir=records_dir, run_dir=run_dir, root=root,
      predictor=inference.Predictor(os.path.join(run_dir, "export")),
      images=examples.image.numpy(), labels=examples.label.numpy())


def _config(trained, **fields):
  return report.ReportConfig(model_dir=trained.run_dir, records_dir=trained.records_dir,
                             **fields)


def _temporary_entries(folder):
  return [name for name in os.listdir(folder) if name.startswith(".")]


# ----------------------------------------------------------------------------
# Perturbations
# ----------------------------------------------------------------------------


def _digits(count=4):
  return tfx.synthetic_split(count, seed=3)[0][..., None]


def test_add_noise_factor_zero_is_identity():
  """No noise leaves the images exactly as they are."""
  images = _digits()
  np.testing.assert_array_equal(report.add_noise(images, 0, seed=5), images)


def test_add_noise_is_seeded():
  """The same seed gives the same noise, another seed other noise."""
  images = _digits()
  first = report.add_noise(images, 0.3, seed=5)
  np.testing.assert_array_equal(report.add_noise(images, 0.3, seed=5), first)
  assert not np.array_equal(report.add_noise(images, 0.3, seed=6), first)
  np.testing.assert_array_equal(images, _digits())  # The input is left alone.


def test_add_noise_std_grows_with_the_factor():
  """On mid-grey images the noise std is the factor (pixels in [0, 1]); uint8 output."""
  grey = np.full((8, 28, 28, 1), 128, np.uint8)
  stds = []
  for factor in (0.05, 0.1, 0.2):
    noisy = report.add_noise(grey, factor, seed=0)
    assert noisy.dtype == np.uint8 and noisy.shape == grey.shape
    stds.append(float(np.std(noisy.astype(np.float64) / 255.0)))
    assert stds[-1] == pytest.approx(factor, rel=0.1)
  assert stds == sorted(stds)


def test_add_noise_clips_instead_of_wrapping():
  """White plus noise saturates at 255 (about half the pixels), black at 0."""
  for value, end in ((255, 255), (0, 0)):
    flat = np.full((8, 28, 28, 1), value, np.uint8)
    noisy = report.add_noise(flat, 0.3, seed=1)
    assert noisy.dtype == np.uint8
    at_end = float(np.mean(noisy == end))
    assert 0.45 < at_end < 0.55, (value, at_end)
    # Wrapped values would land at the other end of the range (half of them);
    # noise of std 0.3 goes that far (2.6 std) for 0.5% of the pixels.
    assert float(np.mean(np.abs(noisy.astype(int) - value) > 200)) < 0.02


def _asymmetric_image():
  """One [1, 28, 28, 1] image with no rotational symmetry: an L and a dot."""
  image = np.zeros((1, 28, 28, 1), np.uint8)
  image[0, 6:20, 8:11] = 255  # Vertical stroke.
  image[0, 17:20, 8:19] = 180  # Foot to the right.
  image[0, 7:9, 16:18] = 90  # A dot at the top right.
  return image


def test_rotate_90_degrees_is_counter_clockwise():
  """rotate(+90) is np.rot90 (counter-clockwise as displayed), rotate(-90) the other way."""
  image = _asymmetric_image()
  inner = (slice(None), slice(3, 25), slice(3, 25))
  for degrees, k in ((90, 1), (-90, -1)):
    turned = report.rotate(image, degrees)
    assert turned.dtype == np.uint8 and turned.shape == image.shape
    expected = np.rot90(image, k, axes=(1, 2))
    difference = np.abs(turned.astype(int) - expected.astype(int))
    assert difference[inner].max() <= 1, (degrees, difference[inner].max())
    wrong_way = np.rot90(image, -k, axes=(1, 2))
    assert np.abs(turned.astype(int) - wrong_way.astype(int))[inner].max() > 100
  np.testing.assert_array_equal(report.rotate(image, 0), image)


def test_rotate_small_angle_keeps_the_ink():
  """A small turn about the centre moves pixels but keeps the total ink nearly the same."""
  image = _asymmetric_image()
  turned = report.rotate(image, 10)
  assert not np.array_equal(turned, image)
  total = float(image.astype(float).sum())
  assert float(turned.astype(float).sum()) == pytest.approx(total, rel=0.05)


def test_shift_moves_content_with_black_fill():
  """shift_images moves right/down for positive (dx, dy) and fills with black."""
  image = _asymmetric_image()
  np.testing.assert_array_equal(images_lib.shift_images(image, 3, -2),
                                np.roll(image, (-2, 3), axis=(1, 2)))


# ----------------------------------------------------------------------------
# Robustness sweeps
# ----------------------------------------------------------------------------


def _bar_images():
  """Horizontal bars at rows 6..21 (label = the row), columns 6..21, over black."""
  rows = np.arange(6, 22)
  images = np.zeros((len(rows), 28, 28, 1), np.uint8)
  for i, row in enumerate(rows):
    images[i, row, 6:22] = 255
  return images, rows


def _brightest_row(images):
  """A fake model: one-hot [N, 28] of the row with the most ink."""
  rows = np.asarray(images)[..., 0].astype(np.float64).sum(axis=2).argmax(axis=1)
  return np.eye(28, dtype=np.float32)[rows]


def test_robustness_with_a_rule_based_model():
  """The sweeps' levels and accuracies, computed by hand for a known rule."""
  images, labels = _bar_images()
  calls = []

  def predict(batch):
    calls.append(len(batch))
    return _brightest_row(batch)

  result = report.robustness(predict, images, labels, seed=3)
  assert sorted(result) == ["gaussian noise", "rotation", "shift"]
  assert result["gaussian noise"]["levels"] == list(report.NOISE_FACTORS)
  assert result["rotation"]["levels"] == list(report.ROTATION_DEGREES)
  assert result["shift"]["levels"] == list(report.SHIFT_PIXELS)
  for sweep in result.values():
    assert isinstance(sweep["unit"], str) and sweep["unit"]
    assert len(sweep["accuracy"]) == len(sweep["levels"])

  def accuracy(perturbed):
    return float(np.mean(_brightest_row(perturbed).argmax(-1) == labels))

  # The rule reads every clean bar right.
  for sweep in result.values():
    assert sweep["accuracy"][sweep["levels"].index(0)] == 1.0
  assert result["gaussian noise"]["accuracy"] == pytest.approx(
      [accuracy(report.add_noise(images, f, 3)) for f in report.NOISE_FACTORS])
  assert result["rotation"]["accuracy"] == pytest.approx(
      [accuracy(report.rotate(images, d)) for d in report.ROTATION_DEGREES])
  # A quarter of the bars go each way. Left and right keep the row, up and
  # down move it: half right at every shift.
  assert result["shift"]["accuracy"] == pytest.approx([1.0, 0.5, 0.5, 0.5, 0.5])
  # One pass per sweep point: the clean pass, 10 noise levels, 8 rotations, 4 shifts.
  assert calls == [len(images)] * 23


def test_robustness_reuses_the_clean_probabilities():
  """Given the clean predictions, the sweeps never predict the clean images again."""
  images, labels = _bar_images()
  seen = []

  def predict(batch):
    seen.append(batch.copy())
    return _brightest_row(batch)

  clean = np.eye(28, dtype=np.float32)[np.where(labels % 2 == 0, labels, 0)]
  result = report.robustness(predict, images, labels, seed=3, clean_probabilities=clean)
  assert len(seen) == 22
  assert not any(np.array_equal(batch, images) for batch in seen)
  # The given probabilities, not the model, score level 0: half the labels are odd.
  for sweep in result.values():
    assert sweep["accuracy"][sweep["levels"].index(0)] == 0.5


def test_shift_each_moves_a_quarter_of_the_rows_each_way():
  image = np.zeros((28, 28, 1), np.uint8)
  image[10, 12] = 255
  moved = report.shift_each(np.stack([image] * 8), 3)
  ink = [tuple(np.argwhere(m[..., 0])[0]) for m in moved]
  assert ink == [(10, 15), (10, 9), (13, 12), (7, 12)] * 2


def test_robustness_noise_follows_the_seed():
  """Another seed gives other noise, so the noise sweep of a noise-sensitive rule changes."""
  images, labels = _bar_images()
  images = (images // 4).astype(np.uint8)  # Faint bars: noise often hides them.
  sweeps = [report.robustness(_brightest_row, images, labels, seed=s)["gaussian noise"]
            for s in (0, 0, 1)]
  assert sweeps[0] == sweeps[1]
  assert sweeps[0]["accuracy"] != sweeps[2]["accuracy"]


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


def test_write_report_progress_counts_the_split_and_every_sweep_pass(trained, tmp_path,
                                                                   capsys):
  report.write_report(_config(trained, output_dir=str(tmp_path), robustness_images=40,
                              progress=True), trained.predictor)
  total = tfx.NUM_TEST + 22 * 40  # 10 noise levels, 8 rotations, 4 shifts.
  lines = capsys.readouterr().err.splitlines()
  assert lines[-1].startswith(f"evaluating mnist test: [{'#' * 24}] {total}/{total} ")
  assert len(lines) > 1  # Not a tty: a line at every tenth of the way.


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
  assert saved["model"] == trained.predictor.path
  assert sorted(saved["robustness"]) == ["gaussian noise", "rotation", "shift"]
  assert saved["robustness"]["gaussian noise"]["accuracy"][0] == pytest.approx(
      saved["accuracy"])
  assert saved["accuracy"] == pytest.approx(result["accuracy"])
  with open(os.path.join(folder, "report.md")) as f:
    markdown = f.read()
  assert f"{wrong} of {tfx.NUM_TEST}" in markdown


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
  fake = types.SimpleNamespace(
      num_classes=3, class_names=["a", "b", "c"], path="fake-model",
      predict=lambda images, *args, **kwargs: np.full((len(images), 3), 1 / 3, np.float32))
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
  oracle = types.SimpleNamespace(
      num_classes=10, class_names=[str(i) for i in range(10)], path="oracle",
      predict=lambda images, *args, **kwargs: np.eye(10, dtype=np.float32)[trained.labels])
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


def test_sweep_subset_is_stratified_seeded_and_bounded():
  """The sweep images keep each class's share, depend on the seed only, and cap at the split."""
  labels = np.repeat(np.arange(4), [100, 200, 300, 400])
  chosen = report.sweep_subset(labels, 100, seed=1)
  assert len(chosen) == 100 and np.all(np.diff(chosen) > 0)
  np.testing.assert_array_equal(np.bincount(labels[chosen]), [10, 20, 30, 40])
  np.testing.assert_array_equal(chosen, report.sweep_subset(labels, 100, seed=1))
  assert not np.array_equal(chosen, report.sweep_subset(labels, 100, seed=2))
  np.testing.assert_array_equal(report.sweep_subset(labels, 0), np.arange(1000))
  np.testing.assert_array_equal(report.sweep_subset(labels, 5000), np.arange(1000))
