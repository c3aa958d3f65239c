"""Tests of tfmnist.inference: predictors of exports and checkpoints, test-time
augmentation and ensembles.

The run they read is train_fixtures.shared_run, shared with the report, predict
and evaluate tests.
"""

import json
import os
import re
import shutil
import types

import numpy as np
import pytest
import tensorflow as tf

import train_fixtures as tfx
from tfmnist import metrics, progress
from tfmnist.data import records
from tfmnist.serving import inference
from tfmnist.training import export
from tfmnist.errors import DataError

DIGITS = [str(i) for i in range(10)]
LETTERS = [chr(ord("a") + i) for i in range(10)]


def _load(model_dir, checkpoint=""):
  """inference.load(...), or the exception it raised."""
  try:
    return inference.load(model_dir, checkpoint)
  except Exception as e:  # pylint: disable=broad-except
    return e


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The shared run, its export's predictions, and checkpoint loads running in the background."""
  records_dir, run_dir = tfx.shared_run(tmp_path_factory)
  root = tmp_path_factory.mktemp("inference")
  no_export = tfx.copy_tree(run_dir, root / "no_export")
  shutil.rmtree(os.path.join(no_export, "export"))
  bad_checkpoint = os.path.join(run_dir, "checkpoints", "ckpt-999")
  loads = {"latest": _load(no_export), "best": _load(run_dir, "best"),
           "bad": _load(run_dir, bad_checkpoint)}
  images = tfx.synthetic_split(tfx.NUM_TEST, seed=11)[0]
  predictor = inference.ExportedModel(os.path.join(run_dir, "export"))
  yield types.SimpleNamespace(
      records_dir=records_dir, run_dir=run_dir, root=root, no_export=no_export,
      bad_checkpoint=bad_checkpoint, loads=loads, images=images, predictor=predictor,
      probabilities=predictor.predict(images),
      keras_run=tfx.restore_run(run_dir, records_dir, epochs=2)[0],
      other=inference.ExportedModel(tfx.random_export(root / "other" / "export")))


# ----------------------------------------------------------------------------
# Predictor
# ----------------------------------------------------------------------------


def test_predictor_matches_the_trained_keras_model(trained):
  """The export's probabilities are the softmax of the run's model at its last checkpoint."""
  latest = tf.train.latest_checkpoint(os.path.join(trained.run_dir, "checkpoints"))
  expected = tfx.keras_probabilities(trained.keras_run, latest, trained.images)
  np.testing.assert_allclose(trained.probabilities, expected, atol=1e-5)
  assert trained.probabilities.dtype == np.float32
  assert trained.predictor.class_names == records.read_info(
      trained.records_dir, "mnist")["class_names"]
  assert trained.predictor.num_classes == 10
  labels = tfx.synthetic_split(tfx.NUM_TEST, seed=11)[1]
  assert (trained.probabilities.argmax(-1) == labels).mean() > 0.5  # It learned something.


def test_predictor_shapes_and_batches(trained):
  """[N, 28, 28] and [N, 28, 28, 1] agree, any batch size gives the same result."""
  with_channel = trained.predictor.predict(trained.images[..., None], batch_size=7)
  np.testing.assert_allclose(with_channel, trained.probabilities, atol=1e-6)
  assert with_channel.shape == (tfx.NUM_TEST, 10)


def test_predict_with_progress_gives_the_same_probabilities_and_counts_every_image(trained):
  bar = progress.Progress(tfx.NUM_TEST, "images", enabled=False)
  models = (trained.predictor, inference.Ensemble([trained.predictor, trained.other]))
  for model in models:
    for tta in (False, True):
      bar.done = 0
      batch_size = tfx.NUM_TEST // 3 + 1  # The last batch is shorter.
      got = model.predict_with_progress(trained.images, batch_size, tta, bar=bar)
      np.testing.assert_array_equal(got, model.predict(trained.images, batch_size, tta))
      assert bar.done == tfx.NUM_TEST


@pytest.mark.parametrize("bad", [np.zeros((2, 28, 28), np.float32),
                                 np.zeros((2, 32, 32), np.uint8),
                                 np.zeros((28, 28), np.uint8)])
def test_predictor_rejects_bad_images(trained, bad):
  """Floats, other sizes and a single unbatched image raise ValueError."""
  with pytest.raises(ValueError, match="images must be"):
    trained.predictor.predict(bad)


def test_predictor_of_a_folder_that_is_not_an_export(tmp_path):
  """A folder without a SavedModel is a DataError naming it."""
  (tmp_path / "saved_model.pb").write_bytes(b"not a protobuf")
  with pytest.raises(DataError, match=re.escape(str(tmp_path))):
    inference.ExportedModel(str(tmp_path))


# ----------------------------------------------------------------------------
# Shifts and test-time augmentation
# ----------------------------------------------------------------------------


def _bordered_images(count=3, border=4, seed=0):
  """uint8 [count, 28, 28, 1] random content with a black border of `border` pixels."""
  rng = np.random.default_rng(seed)
  images = np.zeros((count, 28, 28, 1), np.uint8)
  size = 28 - 2 * border
  images[:, border:-border, border:-border] = rng.integers(1, 256, (count, size, size, 1))
  return images


@pytest.mark.parametrize("dx, dy", [(1, 0), (-1, 0), (0, 1), (0, -1), (3, -2), (-4, 4)])
def test_shift_view_is_np_roll_inside_a_black_border(dx, dy):
  """dx moves content right (columns), dy down (rows), like np.roll when nothing falls off."""
  images = _bordered_images()
  expected = np.roll(images, (dy, dx), axis=(1, 2))
  np.testing.assert_array_equal(inference.shift_view(images, dx, dy), expected)


def test_shift_view_fills_with_zeros():
  """What moves in from the edge is black; the rest is the moved image."""
  images = np.full((2, 28, 28, 1), 200, np.uint8)
  moved = inference.shift_view(images, 2, -3)
  assert moved.shape == images.shape and moved.dtype == np.uint8
  assert np.all(moved[:, :, :2] == 0)  # Two columns on the left.
  assert np.all(moved[:, -3:] == 0)  # Three rows at the bottom.
  assert np.all(moved[:, :-3, 2:] == 200)
  assert np.all(images == 200)  # The input is left alone.
  np.testing.assert_array_equal(inference.shift_view(images, 0, 0), images)


@pytest.mark.parametrize("dx, dy", [(28, 0), (0, -28), (30, 0), (-40, 3)])
def test_shift_view_beyond_the_image_is_all_black(dx, dy):
  """Content moved by the image size or more leaves a black image."""
  images = np.full((2, 28, 28, 1), 200, np.uint8)
  moved = inference.shift_view(images, dx, dy)
  assert moved.shape == images.shape
  assert not moved.any()


def test_tta_is_the_mean_over_the_shifted_images(trained):
  """predict(tta=True) = the mean of the predictions of every TTA shift, by hand."""
  assert inference.TTA_SHIFTS[0] == (0, 0)
  assert sorted(map(tuple, inference.TTA_SHIFTS)) == sorted(
      [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)])
  images = trained.images[:20, ..., None]
  by_hand = np.mean([trained.predictor.predict(inference.shift_view(images, dx, dy))
                     for dx, dy in inference.TTA_SHIFTS], axis=0)
  tta = trained.predictor.predict(images, batch_size=8, tta=True)
  np.testing.assert_allclose(tta, by_hand, atol=1e-6)
  np.testing.assert_allclose(tta.sum(-1), 1.0, atol=1e-5)
  assert np.abs(tta - trained.probabilities[:20]).max() > 1e-4  # The shifts did something.


def test_tta_with_mirror_adds_the_mirror_image_of_every_shift(trained):
  """mirror=True: the mean over the 5 shifts and their left-right mirror images."""
  assert inference.tta_views(False, mirror=True) == ((0, 0, False),)
  assert len(inference.tta_views(True)) == 5
  views = inference.tta_views(True, mirror=True)
  assert sorted(views) == sorted([(dx, dy, m) for dx, dy in inference.TTA_SHIFTS
                                  for m in (False, True)])
  images = trained.images[:20, ..., None]
  shifted = [inference.shift_view(images, dx, dy) for dx, dy in inference.TTA_SHIFTS]
  by_hand = np.mean([trained.predictor.predict(s) for s in shifted] +
                    [trained.predictor.predict(s[:, :, ::-1].copy()) for s in shifted], axis=0)
  mirrored = trained.predictor.predict(images, batch_size=8, tta=True, mirror=True)
  np.testing.assert_allclose(mirrored, by_hand, atol=1e-6)
  plain_tta = trained.predictor.predict(images, batch_size=8, tta=True)
  assert np.abs(mirrored - plain_tta).max() > 1e-4  # The mirror images did something.
  # Without tta, mirror changes nothing.
  np.testing.assert_array_equal(trained.predictor.predict(images, mirror=True),
                                trained.predictor.predict(images))


# ----------------------------------------------------------------------------
# Ensembles
# ----------------------------------------------------------------------------


def test_ensemble_averages_its_members(trained):
  """Probabilities are the mean of the members'; one member is the member itself."""
  ensemble = inference.Ensemble([trained.predictor, trained.other])
  expected = (trained.probabilities + trained.other.predict(trained.images)) / 2
  assert np.abs(trained.probabilities - expected).max() > 1e-3  # The members differ.
  np.testing.assert_allclose(ensemble.predict(trained.images), expected, atol=1e-6)
  assert ensemble.class_names == trained.predictor.class_names
  assert ensemble.num_classes == 10
  single = inference.Ensemble([trained.predictor])
  np.testing.assert_allclose(single.predict(trained.images), trained.probabilities, atol=1e-7)
  with pytest.raises(ValueError):
    inference.Ensemble([])


def test_weighted_ensemble_and_its_export(trained, tmp_path):
  """Weights scale to shares of the average; nested ensembles pass theirs down; the export
  serves the same weighted average and its manifest records the shares."""
  other = trained.other.predict(trained.images)
  ensemble = inference.Ensemble([trained.predictor, trained.other],
                                inference.ensemble_settings([trained.run_dir]), weights=[3, 1])
  assert ensemble.weights == [0.75, 0.25]
  expected = 0.75 * trained.probabilities + 0.25 * other
  probabilities = ensemble.predict(trained.images)
  np.testing.assert_allclose(probabilities, expected, atol=1e-6)
  assert np.abs(probabilities - (trained.probabilities + other) / 2).max() > 1e-3
  nested = inference.Ensemble([ensemble, trained.predictor], weights=[2, 2])
  assert nested.weights == [0.375, 0.125, 0.5]
  np.testing.assert_allclose(nested.predict(trained.images),
                             0.875 * trained.probabilities + 0.125 * other, atol=1e-6)
  destination = str(tmp_path / "weighted")
  ensemble.export(destination)
  served = tf.saved_model.load(destination).signatures["serving_nhw"](
      images=tf.constant(trained.images))
  np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
  with open(os.path.join(destination, "manifest.json")) as f:
    assert json.load(f)["weights"] == [0.75, 0.25]
  # Equal weights are the plain mean, and the manifest does not list them.
  equal = inference.Ensemble([trained.predictor, trained.other],
                             inference.ensemble_settings([trained.run_dir]), weights=[5, 5])
  np.testing.assert_allclose(equal.predict(trained.images),
                             (trained.probabilities + other) / 2, atol=1e-6)
  equal.export(str(tmp_path / "equal"))
  with open(tmp_path / "equal" / "manifest.json") as f:
    assert "weights" not in json.load(f)


@pytest.mark.parametrize("weights, message", [
    ([1], "1 weights for 2 model"),
    ([1, 2, 3], "3 weights for 2 model"),
    ([1, 0], "positive and finite"),
    ([1, -1], "positive and finite"),
    ([1, float("nan")], "positive and finite"),
    ([1, float("inf")], "positive and finite"),
    (["1", "heavy"], "must be numbers"),
])
def test_bad_weights_are_refused(trained, weights, message):
  with pytest.raises(ValueError, match=message):
    inference.Ensemble([trained.predictor, trained.other], weights=weights)


def test_ensemble_of_different_class_names_is_a_data_error(trained, tmp_path):
  """Members must predict the same classes; the error names the odd member."""
  letters = inference.ExportedModel(tfx.random_export(tmp_path / "letters", LETTERS))
  with pytest.raises(DataError, match="differ") as error:
    inference.Ensemble([trained.predictor, letters])
  assert letters.source in str(error.value)


def test_ensemble_export_serves_the_average(trained, tmp_path):
  """Ensemble.export: plain tf.saved_model.load serves the ensemble's average, same signature."""
  ensemble = inference.Ensemble([trained.predictor, trained.other])
  destination = str(tmp_path / "ensemble")
  assert ensemble.export(destination) == destination
  assert sorted(os.listdir(tmp_path)) == ["ensemble"]  # No temporary folders left.
  loaded = tf.saved_model.load(destination)
  for name in ("serving_default", "serving_nhw"):
    member = trained.predictor.loaded.signatures[name]
    assert loaded.signatures[name].structured_input_signature == \
        member.structured_input_signature
    assert loaded.signatures[name].structured_outputs == member.structured_outputs
  outputs = loaded.signatures["serving_default"](images=tf.constant(trained.images[..., None]))
  np.testing.assert_allclose(outputs["probabilities"].numpy(),
                             ensemble.predict(trained.images), atol=1e-5)
  np.testing.assert_array_equal(outputs["classes"].numpy(),
                                outputs["probabilities"].numpy().argmax(-1))
  with open(os.path.join(destination, "assets", export.CLASS_NAMES_FILE)) as f:
    assert f.read().splitlines() == trained.predictor.class_names


def _moved_by_hand(images, dx, dy, mirrored):
  """images moved dx right and dy down (zeros fill), then mirrored: numpy slicing."""
  moved = np.zeros_like(images)
  height, width = images.shape[1:3]
  moved[:, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
      images[:, max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)]
  return moved[:, :, ::-1] if mirrored else moved


def test_export_view_is_shift_view_in_the_graph():
  """export.view, the graph's shift and mirror, moves pixels exactly as shift_view does,
  and as slicing by hand does."""
  images = np.random.default_rng(3).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
  for dx, dy, mirrored in inference.tta_views(True, mirror=True) + ((2, -3, False),):
    expected = inference.shift_view(images, dx, dy, mirrored)
    np.testing.assert_array_equal(expected, _moved_by_hand(images, dx, dy, mirrored))
    np.testing.assert_array_equal(
        export.view(tf.constant(images), dx, dy, mirrored).numpy(), expected)
    np.testing.assert_array_equal(  # Float pixels too: what LiteRT's graph takes.
        export.view(tf.constant(images, tf.float32), dx, dy, mirrored).numpy(), expected)
  assert not np.array_equal(inference.shift_view(images, 1, 0), images)


def test_ensemble_export_with_views_serves_its_tta(trained, tmp_path):
  """Exported with tta_views, an ensemble serves predict(tta=True) from every signature
  and the float function, lists the views in its manifest, and refuses a second --tta."""
  ensemble = inference.Ensemble([trained.predictor, trained.other],
                                inference.ensemble_settings([trained.run_dir]), weights=[3, 1])
  expected = ensemble.predict(trained.images, tta=True)
  assert np.abs(expected - ensemble.predict(trained.images)).max() > 1e-4
  destination = str(tmp_path / "tta")
  ensemble.export(destination, inference.tta_views(True))
  loaded = tf.saved_model.load(destination)
  served = loaded.signatures["serving_nhw"](images=tf.constant(trained.images))
  np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)
  pixels = tf.constant(trained.images[..., None], tf.float32)
  np.testing.assert_allclose(loaded.probabilities_of_pixels(pixels).numpy(), expected,
                             atol=1e-5)
  with open(os.path.join(destination, "manifest.json")) as f:
    assert json.load(f)["tta_views"] == [list(v) for v in inference.tta_views(True)]
  exported = inference.ExportedModel(destination)
  np.testing.assert_allclose(exported.predict(trained.images), expected, atol=1e-5)
  with pytest.raises(ValueError, match="already averages over 5 test-time views"):
    exported.predict(trained.images, tta=True)
  with pytest.raises(ValueError, match="already averages over 5 test-time views"):
    inference.Ensemble([exported]).export(str(tmp_path / "twice"), inference.tta_views(True))
  assert not os.path.exists(tmp_path / "twice")
  # Without settings the manifest still lists the views, so that loaders know them.
  inference.Ensemble([trained.predictor]).export(str(tmp_path / "bare"), inference.tta_views(True))
  assert len(inference.ExportedModel(str(tmp_path / "bare")).built_in_views) == 5
  # One view is the image alone: no views in the manifest.
  ensemble.export(str(tmp_path / "plain"), inference.tta_views(False))
  with open(tmp_path / "plain" / "manifest.json") as f:
    assert "tta_views" not in json.load(f)


def test_ensemble_of_exports_with_views_keeps_listing_them(trained, tmp_path):
  """Averaged again without --tta, exports that carry views pass them on in the
  manifest (a loader refuses a second set), and a mix with a model that reads
  the image alone is refused, since the average would read the images unevenly."""
  inference.Ensemble([trained.predictor]).export(str(tmp_path / "a"), inference.tta_views(True))
  inference.Ensemble([trained.other]).export(str(tmp_path / "b"), inference.tta_views(True))
  first, second = (inference.ExportedModel(str(tmp_path / n)) for n in "ab")
  both = inference.Ensemble([first, second])
  assert both.built_in_views == first.built_in_views
  both.export(str(tmp_path / "both"))
  again = inference.ExportedModel(str(tmp_path / "both"))
  assert again.built_in_views == [list(v) for v in inference.tta_views(True)]
  expected = inference.Ensemble([trained.predictor, trained.other]).predict(trained.images,
                                                                            tta=True)
  np.testing.assert_allclose(again.predict(trained.images), expected, atol=1e-5)
  with pytest.raises(ValueError, match="already averages over 5 test-time views"):
    again.predict(trained.images, tta=True)
  assert inference.Ensemble([trained.predictor, trained.other]).built_in_views is None
  with pytest.raises(DataError, match=r"different test-time views \(.*: 5 test-time views, "
                                      r".*: no test-time views\)"):
    inference.Ensemble([first, trained.other])


def test_calibrated_ensemble_rescales_and_exports_its_temperature(trained, tmp_path):
  """An ensemble's temperature goes into its predictions and its export."""
  images, labels = tfx.synthetic_split(tfx.NUM_TEST, seed=11)
  settings = inference.ensemble_settings([trained.run_dir])
  ensemble = inference.Ensemble([trained.predictor, trained.other], settings)
  plain = ensemble.predict(images)
  np.testing.assert_array_equal(ensemble.average(images), plain)
  ensemble.temperature = metrics.fit_temperature(labels, plain)
  ensemble.calibrated_on = "mnist held-out"
  assert ensemble.temperature != 1.0
  calibrated = ensemble.predict(images)
  np.testing.assert_allclose(calibrated, metrics.apply_temperature(plain, ensemble.temperature),
                             atol=1e-6)
  np.testing.assert_array_equal(calibrated.argmax(-1), plain.argmax(-1))
  destination = str(tmp_path / "calibrated")
  ensemble.export(destination)
  served = tf.saved_model.load(destination).signatures["serving_nhw"](
      images=tf.constant(images))
  np.testing.assert_allclose(served["probabilities"].numpy(), calibrated, atol=1e-5)
  with open(os.path.join(destination, "manifest.json")) as f:
    manifest = json.load(f)
  assert manifest["temperature"] == ensemble.temperature
  assert manifest["calibrated_on"] == "mnist held-out"


# ----------------------------------------------------------------------------
# load
# ----------------------------------------------------------------------------


def test_load_uses_the_export(trained):
  """A run folder with export/ and an export folder itself both load the export."""
  export_dir = os.path.join(trained.run_dir, "export")
  for folder in (trained.run_dir, export_dir):
    predictor = inference.load(folder)
    assert predictor.source == export_dir
    np.testing.assert_array_equal(predictor.predict(trained.images), trained.probabilities)


def test_load_of_a_folder_without_export_or_checkpoints(tmp_path):
  """An empty run folder, or a missing one, is a DataError naming the folder."""
  empty = tmp_path / "empty_run"
  empty.mkdir()
  with pytest.raises(DataError, match=re.escape(str(empty))):
    inference.load(str(empty))
  missing = str(tmp_path / "missing_run")
  with pytest.raises(DataError, match=re.escape(missing)):
    inference.load(missing)


def test_load_without_export_uses_the_latest_checkpoint(trained):
  """Without export/, the latest checkpoint is exported by the command: same predictions."""
  predictor = trained.loads["latest"]
  assert isinstance(predictor, inference.Predictor), predictor
  assert trained.no_export in predictor.source and "latest" in predictor.source
  np.testing.assert_allclose(predictor.predict(trained.images), trained.probabilities,
                             atol=1e-6)
  assert predictor.class_names == trained.predictor.class_names
  assert not os.path.exists(os.path.join(trained.no_export, "export"))  # The run is unchanged.


def test_load_best_checkpoint(trained):
  """checkpoint="best" gives the model of the checkpoint in best/."""
  predictor = trained.loads["best"]
  assert isinstance(predictor, inference.Predictor), predictor
  assert "best" in predictor.source
  best = tf.train.latest_checkpoint(os.path.join(trained.run_dir, "best"))
  expected = tfx.keras_probabilities(trained.keras_run, best, trained.images)
  probabilities = predictor.predict(trained.images)
  np.testing.assert_allclose(probabilities, expected, atol=1e-5)
  latest = tf.train.latest_checkpoint(os.path.join(trained.run_dir, "checkpoints"))
  if os.path.basename(best).split("-")[-1] != os.path.basename(latest).split("-")[-1]:
    assert np.abs(probabilities - trained.probabilities).max() > 1e-6  # Not the export.


def test_load_of_a_bad_checkpoint_path(trained):
  """A checkpoint path that does not exist is a DataError naming the path."""
  error = trained.loads["bad"]
  assert isinstance(error, DataError), error
  assert trained.bad_checkpoint in str(error)
  assert "\n" not in str(error)


def test_load_of_checkpoints_without_config(trained, tmp_path):
  """Checkpoints without the run's config.json cannot be rebuilt in process: the error
  names the folder and the command that exports them from flags.txt."""
  run_dir = tmp_path / "run"
  shutil.copytree(os.path.join(trained.run_dir, "checkpoints"), run_dir / "checkpoints")
  with pytest.raises(DataError, match="no config.json") as error:
    inference.load(str(run_dir))
  assert str(run_dir) in str(error.value) and "--export_checkpoint=latest" in str(error.value)


# ----------------------------------------------------------------------------
# expand_model_dirs
# ----------------------------------------------------------------------------


def test_expand_model_dirs(tmp_path):
  """Globs expand to folders only, sorted; pattern order and first occurrence are kept."""
  for name in ("run_b", "run_a2", "run_a1", "other"):
    (tmp_path / name).mkdir()
  (tmp_path / "run_a3.txt").write_text("a file, not a run")
  path = lambda name: str(tmp_path / name)  # pylint: disable=unnecessary-lambda-assignment
  assert inference.expand_model_dirs([path("run_b"), path("run_a*")]) == [
      path("run_b"), path("run_a1"), path("run_a2")]
  assert inference.expand_model_dirs([path("run_a2"), path("run_*"), path("oth?r")]) == [
      path("run_a2"), path("run_a1"), path("run_b"), path("other")]
  # A plain path is kept as given (load reports it when it is not a run).
  assert inference.expand_model_dirs([path("not_there")]) == [path("not_there")]


def test_expand_model_dirs_without_a_match(tmp_path):
  """A glob that matches no folder (only a file, or nothing) is a DataError naming it."""
  (tmp_path / "run_1.txt").write_text("a file")
  for pattern in (str(tmp_path / "run_*"), str(tmp_path / "nothing*")):
    with pytest.raises(DataError, match="no run folder matches") as error:
      inference.expand_model_dirs([str(tmp_path), pattern])
    assert pattern in str(error.value)


def test_ensemble_settings_keep_what_the_members_agree_on(tmp_path):
  def run(name, dataset, splits=None, records_dir=""):
    folder = tmp_path / name
    folder.mkdir()
    manifest = {"dataset": dataset}
    if splits is not None:
      manifest["train_splits"] = splits
    if records_dir:
      manifest["records_dir"] = records_dir
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return str(folder)

  refit = run("refit", "mnist", ["train", "validation"], "/data/records")
  older = run("older", "mnist", None, "/data/records")  # Before manifests named the splits.
  bare = str(tmp_path / "bare")  # An export folder alone says nothing.
  os.mkdir(bare)
  assert inference.ensemble_settings([refit, older, bare]) == inference.RunSettings(
      "mnist", "/data/records", ("train", "validation"))
  fashion = run("fashion", "fashion_mnist", ["train"], "/other")
  assert inference.ensemble_settings([refit, fashion]) == inference.RunSettings(
      "", "", ("train", "validation"))
  assert inference.run_settings(bare) == inference.RunSettings("", "", ("train",))
