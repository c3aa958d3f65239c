"""Tests of tfmnist.predict: Kaggle CSVs, records, image folders, ensembles, errors.

The command-line runs start together in the module fixture (each start of
TensorFlow costs seconds) and the tests read their results.
"""

import csv
import json
import os
import re
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf

import train_fixtures as tfx
from tfmnist import metrics
from tfmnist.cli import predict
from tfmnist.data import photos, pipeline, records
from tfmnist.serving import inference
from tfmnist.training import export
from tfmnist.errors import DataError

PIXELS = [f"pixel{i}" for i in range(784)]
KANNADA_IDS = ["57", "3", "1000", "12", "8"]


def _write_csv(path, head, rows):
  with open(path, "w") as f:
    f.write("\n".join(",".join(str(v) for v in row) for row in [head, *rows]) + "\n")
  return str(path)


def _stroke_image(strokes, height=40, width=32):
  """uint8 [H, W, 1]: dark strokes (rows, cols slices) on white paper."""
  image = np.full((height, width, 1), 245, np.uint8)
  for rows, cols in strokes:
    image[rows, cols] = 20
  return image


def _write_png(path, image):
  tf.io.write_file(str(path), tf.io.encode_png(image))
  return str(path)


def _predict_command(*args):
  return tfx.run([tfx.PYTHON, "-m", "tfmnist.predict", *map(str, args)])


@pytest.fixture(scope="module")
def setup(request, tmp_path_factory):
  """Inputs in every format, a second ensemble member, and every command's result."""
  records_dir, run_dir = tfx.shared_run(tmp_path_factory)
  root = tmp_path_factory.mktemp("predict")
  s = types.SimpleNamespace(records_dir=records_dir, run_dir=run_dir, root=root)
  # Kaggle Digit Recognizer test.csv: pixels only.
  s.digit_images = tfx.synthetic_split(12, seed=21)[0]
  s.digit_csv = _write_csv(root / "test.csv", PIXELS, s.digit_images.reshape(12, -1))
  # Kannada-MNIST test.csv: an id column whose values are not 0..N-1.
  s.kannada_images = tfx.synthetic_split(len(KANNADA_IDS), seed=22)[0]
  s.kannada_csv = _write_csv(
      root / "kannada_test.csv", ["id"] + PIXELS,
      [[i] + list(p) for i, p in zip(KANNADA_IDS, s.kannada_images.reshape(5, -1))])
  # Photos of digits: dark ink on white.
  photos = root / "photos"
  photos.mkdir()
  s.photo_paths = [
      _write_png(photos / "a_one.png", _stroke_image([(slice(6, 34), slice(14, 18))])),
      _write_png(photos / "b_seven.png", _stroke_image(
          [(slice(6, 10), slice(6, 26)), (slice(6, 34), slice(22, 26))])),
      _write_png(photos / "c_ell.png", _stroke_image(
          [(slice(6, 34), slice(8, 12)), (slice(30, 34), slice(8, 24))])),
  ]
  (photos / "notes.txt").write_text("not an image, skipped")
  # Bad inputs.
  s.bad_csv = _write_csv(root / "bad.csv", PIXELS[:-1],
                         s.digit_images.reshape(12, -1)[:3, :-1])
  bad_photos = root / "bad_photos"
  bad_photos.mkdir()
  _write_png(bad_photos / "a_good.png", _stroke_image([(slice(6, 34), slice(14, 18))]))
  s.broken_png = str(bad_photos / "b_broken.png")
  with open(s.broken_png, "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n this is not really a PNG")
  s.empty_run = root / "empty_run"
  s.empty_run.mkdir()
  # The second member of the ensemble, named by a glob.
  s.member_dir = str(root / "members" / "run_b")
  tfx.random_export(os.path.join(s.member_dir, "export"))
  s.ensemble_export = str(root / "ensemble_export")
  s.calibrated_export = str(root / "calibrated_export")
  # A run that (by its manifest) learned from the validation split.
  s.refit_run = tfx.copy_tree(run_dir, root / "refit_run")
  manifest_path = os.path.join(s.refit_run, "manifest.json")
  with open(manifest_path) as f:
    manifest = json.load(f)
  with open(manifest_path, "w") as f:
    json.dump({**manifest, "train_splits": ["train", "validation"]}, f)
  s.refused_export = str(root / "refused_export")
  s.tta_export = str(root / "tta_export")
  s.refused_tta_export = str(root / "refused_tta_export")
  s.out = {name: root / f"out_{name}" for name in ("digit", "kannada", "bad_csv", "bad_image",
                                                   "no_model", "weighted", "bad_weights",
                                                   "tta_export")}
  for folder in s.out.values():
    folder.mkdir()
  model = f"--model_dir={run_dir}"
  commands = {
      "digit": [model, f"--input={s.digit_csv}", f"--output={s.out['digit']}/sub.csv"],
      "kannada": [model, f"--input={s.kannada_csv}", f"--output={s.out['kannada']}/sub.csv"],
      "records": [model, f"--input={os.path.join(records_dir, 'mnist')}", "--split=test"],
      # Two models, one named by a glob, predicting the photos.
      "ensemble": [model, f"--model_dir={root / 'members' / 'run_*'}", f"--input={photos}",
                   f"--export_ensemble={s.ensemble_export}"],
      # The same two, the first with three times the second's weight, on labelled records.
      "weighted": [model, f"--model_dir={root / 'members' / 'run_*'}", "--weights=3,1",
                   f"--input={os.path.join(records_dir, 'mnist')}", "--split=test",
                   f"--output={s.out['weighted']}/pred.csv"],
      "bad_weights": [model, f"--model_dir={root / 'members' / 'run_*'}", "--weights=1",
                      f"--input={s.digit_csv}", f"--output={s.out['bad_weights']}/sub.csv"],
      "bad_csv": [model, f"--input={s.bad_csv}", f"--output={s.out['bad_csv']}/sub.csv"],
      "bad_image": [model, f"--input={bad_photos}",
                    f"--output={s.out['bad_image']}/sub.csv"],
      "no_model": [f"--model_dir={s.empty_run}", f"--input={s.digit_csv}",
                   f"--output={s.out['no_model']}/sub.csv"],
      "calibrated": [model, "--calibrate_split=validation",
                     f"--export_ensemble={s.calibrated_export}"],
      "calibrate_trained": [f"--model_dir={s.refit_run}", "--calibrate_split=validation",
                            f"--export_ensemble={s.refused_export}"],
      # The two members with test-time shifts, predicted and exported with them.
      "tta_export": [model, f"--model_dir={root / 'members' / 'run_*'}", "--tta",
                     f"--input={os.path.join(records_dir, 'mnist')}", "--split=test",
                     f"--output={s.out['tta_export']}/pred.csv",
                     f"--export_ensemble={s.tta_export}"],
      # A bare export names no dataset: are mirror images among the views?
      "tta_export_unknown_dataset": [f"--model_dir={s.member_dir}", "--tta",
                                     f"--export_ensemble={s.refused_tta_export}"],
  }
  # The commands run in the background, two at a time, when slow tests are selected.
  s.jobs, s.commands = tfx.Jobs(max_parallel=2), commands
  if tfx.slow_tests_selected(request):
    for name, args in commands.items():
      s.jobs.submit(name, _predict_command, *args)
  s.predictor = inference.ExportedModel(os.path.join(run_dir, "export"))
  s.member = inference.ExportedModel(os.path.join(s.member_dir, "export"))
  s.ensemble = inference.Ensemble([s.predictor, s.member])
  yield s
  s.jobs.close()


def _result(setup, name):
  return setup.jobs.submit(name, _predict_command, *setup.commands[name]).result()


def _read_csv(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


def _assert_one_line_error(result, *names):
  """Exit status non-zero and one stderr line naming `names`."""
  assert result.returncode != 0, tfx.describe(result)
  lines = tfx.clean_stderr(result.stderr).strip().splitlines()
  assert len(lines) == 1, tfx.describe(result)
  assert lines[0].startswith("predict: error: "), lines[0]
  for name in names:
    assert str(name) in lines[0], (name, lines[0])


# ----------------------------------------------------------------------------
# Library functions
# ----------------------------------------------------------------------------


def test_read_inputs_of_a_digit_recognizer_csv(setup):
  """Pixels-only CSV: ImageId 1..N in input order, no labels."""
  inputs = predict.read_inputs(setup.digit_csv, 10, "test")
  assert inputs.kind == "csv" and inputs.labels is None and inputs.digits
  assert inputs.header == ["ImageId", "Label"] == predict.header(inputs)
  assert inputs.keys == [(i,) for i in range(1, 13)]
  np.testing.assert_array_equal(np.asarray(inputs.images).reshape(12, 28, 28),
                                setup.digit_images)


def test_read_inputs_of_a_kannada_csv(setup):
  """id,pixel... CSV: the ids are echoed as they are, in file order."""
  inputs = predict.read_inputs(setup.kannada_csv, 10, "test")
  assert inputs.header == ["id", "label"]
  assert [str(key[0]) for key in inputs.keys] == KANNADA_IDS
  np.testing.assert_array_equal(np.asarray(inputs.images).reshape(5, 28, 28),
                                setup.kannada_images)


def test_read_inputs_of_records(setup):
  """A records dataset folder: the split's images, indices and labels."""
  inputs = predict.read_inputs(os.path.join(setup.records_dir, "mnist"), 10, "test")
  examples = pipeline.read_examples(records.split_files(setup.records_dir, "mnist", "test"))
  assert inputs.kind == "records"
  assert predict.header(inputs) == ["index", "label", "prediction", "probability"]
  np.testing.assert_array_equal(inputs.labels, examples.label.numpy())
  assert [k[1] for k in inputs.keys] == examples.label.numpy().tolist()
  assert inputs.digits  # MNIST's info.json: test-time augmentation never mirrors.
  with pytest.raises(DataError, match="no split 'dig'"):
    predict.read_inputs(os.path.join(setup.records_dir, "mnist"), 10, "dig")


def test_read_inputs_of_records_that_are_not_digits(setup, tmp_path):
  """Records whose info.json says "digits": false let test-time augmentation mirror."""
  shutil.copytree(os.path.join(setup.records_dir, "mnist"), tmp_path / "clothes")
  info_path = tmp_path / "clothes" / records.INFO_FILE
  info_path.write_text(json.dumps(dict(json.loads(info_path.read_text()), digits=False)))
  assert not predict.read_inputs(str(tmp_path / "clothes"), 10, "test").digits


def test_read_inputs_of_a_missing_path(tmp_path):
  """A path that does not exist is a DataError naming it."""
  missing = str(tmp_path / "nothing.csv")
  with pytest.raises(DataError, match="no such file") as error:
    predict.read_inputs(missing, 10, "test")
  assert missing in str(error.value)


def test_rows_of_each_kind():
  """CSV rows end with the label; records add the probability; images the class name too."""
  probabilities = np.array([[0.1, 0.7, 0.2], [0.6, 0.3, 0.1]], np.float32)
  keys = [("x",), ("y",)]
  csv_inputs = predict.Inputs(None, ["id", "label"], keys, None, "csv")
  assert predict.rows(csv_inputs, probabilities, ["a", "b", "c"]) == [("x", 1), ("y", 0)]
  record_inputs = predict.Inputs(None, ["index", "label"], [(4, 1), (9, 2)], None, "records")
  assert predict.rows(record_inputs, probabilities, ["a", "b", "c"]) == [
      (4, 1, 1, "0.700000"), (9, 2, 0, "0.600000")]
  image_inputs = predict.Inputs(None, ["file", "class", "name", "probability"], keys,
                                None, "images")
  assert predict.rows(image_inputs, probabilities, ["a", "b", "c"]) == [
      ("x", 1, "b", "0.700000"), ("y", 0, "a", "0.600000")]
  assert predict.header(image_inputs) == ["file", "class", "name", "probability"]


def test_an_image_folder_has_the_readmes_columns(setup):
  inputs = predict.read_inputs(os.path.dirname(setup.photo_paths[0]), 10, "test")
  assert predict.header(inputs) == ["file", "class", "name", "probability"]
  readme = (tfx.REPO_ROOT / "README.md").read_text()
  assert "`file,class,name,probability`" in readme


def test_csv_text_quotes_what_needs_it():
  assert predict.csv_text(["file", "class", "name", "probability"],
                          [("a,b.png", 1, "one", "0.500000")]) == (
      'file,class,name,probability\n"a,b.png",1,one,0.500000\n')


def test_write_csv(tmp_path):
  """The CSV is written whole, replacing an older one, without a temporary file left."""
  path = tmp_path / "out.csv"
  path.write_text("old\n")
  predict.write_csv(str(path), ["id", "label"], [("57", 3), ("3", 1)])
  assert path.read_text() == "id,label\n57,3\n3,1\n"
  assert os.listdir(tmp_path) == ["out.csv"]
  missing = tmp_path / "no_folder" / "out.csv"
  with pytest.raises(DataError, match="does not exist"):
    predict.write_csv(str(missing), ["id"], [])
  assert not os.path.exists(missing.parent)


# ----------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------


@pytest.mark.slow
def test_digit_recognizer_submission(setup):
  """ImageId,Label with 1-based ids in input order; labels are the export's argmax."""
  result = tfx.check(_result(setup, "digit"))
  path = setup.out["digit"] / "sub.csv"
  assert "12 predictions from 1 model(s)" in result.stdout
  lines = _read_csv(path)
  assert lines[0] == ["ImageId", "Label"]
  expected = setup.predictor.predict(setup.digit_images).argmax(-1)
  assert lines[1:] == [[str(i + 1), str(label)] for i, label in enumerate(expected)]
  assert os.listdir(setup.out["digit"]) == ["sub.csv"]


@pytest.mark.slow
def test_kannada_submission_echoes_the_ids(setup):
  """id,label with the file's ids, in file order."""
  tfx.check(_result(setup, "kannada"))
  lines = _read_csv(setup.out["kannada"] / "sub.csv")
  assert lines[0] == ["id", "label"]
  expected = setup.predictor.predict(setup.kannada_images).argmax(-1)
  assert lines[1:] == [[i, str(label)] for i, label in zip(KANNADA_IDS, expected)]


@pytest.mark.slow
def test_records_split_is_printed(setup):
  """A records folder with --split: one printed row per example, accuracy on stderr."""
  result = tfx.check(_result(setup, "records"))
  examples = pipeline.read_examples(records.split_files(setup.records_dir, "mnist", "test"))
  probabilities = setup.predictor.predict(examples.image.numpy())
  labels = examples.label.numpy()
  head, *rows = [line.split(",") for line in result.stdout.strip().splitlines()]
  assert head == ["index", "label", "prediction", "probability"]
  assert len(rows) == tfx.NUM_TEST
  assert [int(r[0]) for r in rows] == examples.index.numpy().tolist()
  assert [int(r[1]) for r in rows] == labels.tolist()
  assert [int(r[2]) for r in rows] == probabilities.argmax(-1).tolist()
  np.testing.assert_allclose([float(r[3]) for r in rows], probabilities.max(-1), atol=2e-6)
  accuracy = np.mean(probabilities.argmax(-1) == labels)
  loss = np.mean(-np.log(np.maximum(probabilities[np.arange(len(labels)), labels], 1e-7)))
  assert (f"accuracy {accuracy:.4%}, log loss {loss:.4f} against the input's labels"
          in result.stderr)
  assert f"predicting: [{'#' * 24}] {tfx.NUM_TEST}/{tfx.NUM_TEST} " in result.stderr


@pytest.mark.slow
def test_image_folder_is_printed(setup):
  """An image folder: the CSV header, then one line per image file (others skipped)."""
  result = tfx.check(_result(setup, "ensemble"))
  head, *lines = [line for line in result.stdout.strip().splitlines()
                  if not line.startswith("ensemble")]
  assert head == "file,class,name,probability"
  assert len(lines) == len(setup.photo_paths), result.stdout
  pixels, _ = photos.load_images(setup.photo_paths)
  probabilities = setup.ensemble.predict(pixels)
  for line, path, p in zip(lines, setup.photo_paths, probabilities):
    file, label, name, probability = line.split(",")
    assert file == path
    assert int(label) == p.argmax() and name == setup.predictor.class_names[p.argmax()]
    assert float(probability) == pytest.approx(p.max(), abs=2e-6)


@pytest.mark.slow
def test_calibrate_split_fits_a_temperature_into_the_export(setup):
  result = tfx.check(_result(setup, "calibrated"))
  match = re.search(r"^temperature (\S+) fitted on mnist validation \(120 images\): "
                    r"log loss (\S+) -> (\S+)$", tfx.clean_stderr(result.stderr), re.M)
  assert match, tfx.describe(result)
  assert float(match.group(3)) < float(match.group(2))
  assert f"1 model exported to {setup.calibrated_export}" in result.stdout.splitlines()
  with open(os.path.join(setup.calibrated_export, "manifest.json")) as f:
    manifest = json.load(f)
  assert manifest["calibrated_on"] == "mnist validation"
  assert f"{manifest['temperature']:.4f}" == match.group(1)
  # The same images, rescaled by the export's temperature, never predicted otherwise.
  images = setup.digit_images
  served = tf.saved_model.load(setup.calibrated_export).signatures["serving_nhw"](
      images=tf.constant(images))["probabilities"].numpy()
  plain = setup.predictor.predict(images)
  np.testing.assert_allclose(served, metrics.apply_temperature(plain, manifest["temperature"]),
                             atol=1e-5)


@pytest.mark.slow
def test_calibrating_on_a_split_the_models_trained_on_is_refused(setup):
  _assert_one_line_error(_result(setup, "calibrate_trained"),
                         "--calibrate_split=validation: the models trained on validation")
  assert not os.path.exists(setup.refused_export)


@pytest.mark.slow
def test_tta_export_serves_what_tta_predicted(setup):
  """--tta with --export_ensemble: the export averages over the 5 shifts itself, giving the
  probabilities that predict --tta wrote; without a dataset to say whether mirror images
  belong among the views, the export is refused and nothing is written."""
  result = tfx.check(_result(setup, "tta_export"))
  assert (f"ensemble of 2 models exported to {setup.tta_export}, averaging over 5 "
          "test-time views") in result.stdout
  with open(os.path.join(setup.tta_export, "manifest.json")) as f:
    assert len(json.load(f)["tta_views"]) == 5
  rows = _read_csv(os.path.join(setup.out["tta_export"], "pred.csv"))[1:]
  images = pipeline.read_examples(
      records.split_files(setup.records_dir, "mnist", "test")).image.numpy()
  served = tf.saved_model.load(setup.tta_export).signatures["serving_default"](
      images=tf.constant(images))["probabilities"].numpy()
  np.testing.assert_allclose(served.max(-1), [float(r[-1]) for r in rows], atol=2e-6)
  np.testing.assert_array_equal(served.argmax(-1), [int(r[2]) for r in rows])
  np.testing.assert_allclose(served, setup.ensemble.predict(images, tta=True), atol=1e-5)
  refused = _result(setup, "tta_export_unknown_dataset")
  _assert_one_line_error(refused, "--tta with --export_ensemble", "mirror images")
  assert not os.path.exists(setup.refused_tta_export)


@pytest.mark.slow
def test_two_model_dirs_make_an_ensemble(setup):
  """--model_dir twice (one a glob) averages the models; --export_ensemble saves the average."""
  result = tfx.check(_result(setup, "ensemble"))
  assert "from 2 model(s)" in result.stderr
  assert f"ensemble of 2 models exported to {setup.ensemble_export}" in result.stdout
  pixels, _ = photos.load_images(setup.photo_paths)
  probabilities = setup.ensemble.predict(pixels)
  printed = [float(line.split(",")[-1]) for line in result.stdout.strip().splitlines()[2:]]
  np.testing.assert_allclose(printed, probabilities.max(-1), atol=2e-6)
  # Neither model alone gives these probabilities.
  for member in (setup.predictor, setup.member):
    assert np.abs(member.predict(pixels).max(-1) - printed).max() > 1e-3
  with open(os.path.join(setup.ensemble_export, "manifest.json")) as f:
    manifest = json.load(f)
  # The member without a manifest leaves the dataset and records to the other.
  assert manifest == {"dataset": "mnist", "records_dir": setup.records_dir,
                      "train_splits": ["train"], "training_noise": 0.0,
                      "members": [os.path.join(setup.run_dir, "export"),
                                  os.path.join(setup.member_dir, "export")]}
  loaded = tf.saved_model.load(setup.ensemble_export)
  served = loaded.signatures["serving_nhw"](images=tf.constant(setup.digit_images))
  np.testing.assert_allclose(served["probabilities"].numpy(),
                             setup.ensemble.predict(setup.digit_images), atol=1e-5)
  with open(os.path.join(setup.ensemble_export, "assets", export.CLASS_NAMES_FILE)) as f:
    assert f.read().splitlines() == setup.predictor.class_names


@pytest.mark.slow
def test_weights_weigh_the_ensemble(setup):
  """--weights=3,1: each row and the printed accuracy come from 3/4 of one model plus 1/4 of
  the other, and the summary says so."""
  result = tfx.check(_result(setup, "weighted"))
  examples = pipeline.read_examples(records.split_files(setup.records_dir, "mnist", "test"))
  images, labels = examples.image.numpy(), examples.label.numpy()
  expected = 0.75 * setup.predictor.predict(images) + 0.25 * setup.member.predict(images)
  rows = _read_csv(os.path.join(setup.out["weighted"], "pred.csv"))[1:]
  assert [int(r[2]) for r in rows] == expected.argmax(-1).tolist()
  np.testing.assert_allclose([float(r[3]) for r in rows], expected.max(-1), atol=2e-6)
  assert np.abs(setup.ensemble.predict(images).max(-1) - expected.max(-1)).max() > 1e-3
  loss = metrics.log_loss(labels, expected)
  assert (f"from 2 model(s) weighted 0.75, 0.25; accuracy "
          f"{np.mean(expected.argmax(-1) == labels):.4%}, log loss {loss:.4f}") in result.stdout


@pytest.mark.slow
def test_one_weight_for_two_models(setup):
  """A weight count that is not the folder count: one-line error, no output written."""
  _assert_one_line_error(_result(setup, "bad_weights"), "1 weights for 2 model(s)")
  assert os.listdir(setup.out["bad_weights"]) == []


@pytest.mark.slow
def test_csv_with_wrong_columns(setup):
  """783 pixel columns: one-line error naming the file, no output written."""
  _assert_one_line_error(_result(setup, "bad_csv"), setup.bad_csv)
  assert os.listdir(setup.out["bad_csv"]) == []


@pytest.mark.slow
def test_undecodable_image(setup):
  """A file that is no image: one-line error naming it, no output written."""
  _assert_one_line_error(_result(setup, "bad_image"), setup.broken_png)
  assert os.listdir(setup.out["bad_image"]) == []


@pytest.mark.slow
def test_model_dir_without_export_or_checkpoints(setup):
  """A run folder with nothing to load: one-line error naming it, no output written."""
  _assert_one_line_error(_result(setup, "no_model"), setup.empty_run)
  assert os.listdir(setup.out["no_model"]) == []
