"""Tests of evaluation.calibration: a temperature fitted on a split no member learned from."""

import numpy as np
import pytest

import train_fixtures as tfx
from tfmnist import metrics
from tfmnist.data import pipeline
from tfmnist.errors import DataError
from tfmnist.evaluation import calibration
from tfmnist.serving import inference


@pytest.fixture(scope="module")
def ensemble(tmp_path_factory):
  records_dir, run_dir = tfx.shared_run(tmp_path_factory)
  member = inference.load(run_dir)
  return inference.Ensemble([member], inference.ensemble_settings([run_dir]))


def test_calibrate_fits_the_temperature_on_the_held_out_split(ensemble):
  settings = ensemble.settings
  _, images, labels = pipeline.read_labelled(settings.records_dir, settings.dataset,
                                             "validation")
  plain = ensemble.average(images)
  count, before, after = calibration.calibrate(ensemble, "validation")
  assert count == len(labels) == 120
  assert ensemble.temperature == pytest.approx(metrics.fit_temperature(labels, plain))
  assert ensemble.calibrated_on == "mnist validation"
  assert before == pytest.approx(metrics.log_loss(labels, plain))
  assert after <= before
  np.testing.assert_array_equal(ensemble.predict(images).argmax(-1), plain.argmax(-1))


def test_calibrate_with_tta_fits_on_the_averages_over_the_views(ensemble):
  """With tta, the temperature is the one for the probabilities that predict(tta=True)
  scales, not for the plain ones."""
  settings = ensemble.settings
  _, images, labels = pipeline.read_labelled(settings.records_dir, settings.dataset,
                                             "validation")
  tta = inference.Ensemble(ensemble.members, settings)
  averaged = tta.average(images, tta=True)
  count, before, _ = calibration.calibrate(tta, "validation", tta=True)
  assert count == len(labels)
  assert tta.temperature == pytest.approx(metrics.fit_temperature(labels, averaged))
  assert tta.temperature != pytest.approx(
      metrics.fit_temperature(labels, tta.average(images)), abs=1e-3)
  assert before == pytest.approx(metrics.log_loss(labels, averaged))
  assert tta.calibrated_on == "mnist validation with test-time augmentation"
  np.testing.assert_allclose(tta.predict(images, tta=True),
                             metrics.apply_temperature(averaged, tta.temperature), atol=1e-6)


def test_calibrate_refuses_a_split_the_models_trained_on(ensemble):
  with pytest.raises(DataError, match="the models trained on train"):
    calibration.calibrate(ensemble, "train")


def test_calibrate_needs_to_know_the_dataset(ensemble):
  unnamed = inference.Ensemble(ensemble.members)
  with pytest.raises(DataError, match="name no one dataset"):
    calibration.calibrate(unnamed, "validation")
