"""Tests of tfmnist.metrics against values worked out by hand."""

import json
import math
import warnings

import numpy as np
import pytest

from tfmnist import metrics

# Eight examples of three classes. Rows 2 and 7 are wrong (predicted 1 and 0);
# row 1 sits on a bin edge (0.5) and row 5 on the last edge (1.0).
LABELS = np.array([0, 0, 0, 1, 1, 2, 2, 2])
PROBABILITIES = np.array([
    [0.9, 0.05, 0.05],
    [0.5, 0.3, 0.2],
    [0.2, 0.7, 0.1],
    [0.1, 0.8, 0.1],
    [0.3, 0.6, 0.1],
    [0.0, 0.0, 1.0],
    [0.2, 0.2, 0.6],
    [0.4, 0.35, 0.25],
])
NAMES = ["zero", "one", "two"]


def test_confusion_matrix_counts_true_rows_and_predicted_columns():
  predictions = PROBABILITIES.argmax(axis=1)
  matrix = metrics.confusion_matrix(LABELS, predictions, 3)
  np.testing.assert_array_equal(matrix, [[2, 1, 0],
                                         [0, 2, 0],
                                         [1, 0, 2]])
  assert matrix.dtype == np.int64


def test_confusion_matrix_of_nothing_is_zeros():
  np.testing.assert_array_equal(metrics.confusion_matrix([], [], 2), np.zeros((2, 2)))


@pytest.mark.parametrize("labels, predictions, message", [
    ([0, 3], [0, 1], r"labels must be in \[0, 3\), got \[3\]"),
    ([0, -1, 5, 5], [0, 1, 1, 1], r"labels must be in \[0, 3\), got \[-1, 5\]"),
    ([0, 1], [0, 7], r"predictions must be in \[0, 3\), got \[7\]"),
    ([0, 1, 2], [0, 1], "3 labels but 2 predictions"),
    ([0.0, 1.5], [0, 1], "labels must be integers, got dtype float64: \\[0.0, 1.5\\]"),
])
def test_confusion_matrix_rejects(labels, predictions, message):
  with pytest.raises(ValueError, match=message):
    metrics.confusion_matrix(labels, predictions, 3)


def test_classification_metrics_by_hand():
  result = metrics.classification_metrics(LABELS, PROBABILITIES, NAMES, num_bins=4)

  assert result["count"] == 8
  assert result["accuracy"] == 6 / 8
  assert result["error_count"] == 2
  true_probability = [0.9, 0.5, 0.2, 0.8, 0.6, 1.0, 0.6, 0.25]
  assert result["loss"] == pytest.approx(-sum(map(math.log, true_probability)) / 8)
  # Bins of width 0.25: (0.25, 0.5] holds rows 1 and 7, (0.5, 0.75] rows 2, 4
  # and 6, (0.75, 1] rows 0, 3 and 5.
  #   |1/2 - 0.45| * 2 + |2/3 - 1.9/3| * 3 + |1 - 0.9| * 3 = 0.1 + 0.1 + 0.3
  assert result["expected_calibration_error"] == pytest.approx(0.5 / 8)
  assert result["confusion_matrix"] == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]
  # zero: 2 of 3 predicted, 2 of 3 found; one: 2 of 3 predicted, both found;
  # two: both predicted right, 2 of 3 found.
  expected = [(0, "zero", 3, 2 / 3, 2 / 3, 2 / 3),
              (1, "one", 2, 2 / 3, 1.0, 4 / 5),
              (2, "two", 3, 1.0, 2 / 3, 4 / 5)]
  for row, (c, name, support, precision, recall, f1) in zip(result["per_class"], expected):
    assert row == {"class": c, "name": name, "support": support,
                   "precision": pytest.approx(precision), "recall": pytest.approx(recall),
                   "f1": pytest.approx(f1)}
  assert result["macro_f1"] == pytest.approx((2 / 3 + 4 / 5 + 4 / 5) / 3)


def test_classification_metrics_is_json_serialisable():
  result = metrics.classification_metrics(np.array(LABELS, np.int32),
                                          PROBABILITIES.astype(np.float32), NAMES)
  assert json.loads(json.dumps(result)) == result
  assert set(result) == {"count", "accuracy", "error_count", "loss",
                         "expected_calibration_error", "per_class", "macro_f1",
                         "confusion_matrix"}


def test_perfect_predictions_have_ece_of_one_minus_mean_confidence():
  probabilities = np.array([[0.8, 0.1, 0.1], [0.05, 0.9, 0.05], [0.0, 0.0, 1.0],
                            [0.7, 0.2, 0.1]])
  result = metrics.classification_metrics([0, 1, 2, 0], probabilities, NAMES)
  assert result["accuracy"] == 1.0 and result["error_count"] == 0
  assert result["expected_calibration_error"] == pytest.approx(1 - (0.8 + 0.9 + 1.0 + 0.7) / 4)
  assert result["macro_f1"] == 1.0


def test_one_hot_predictions_are_calibrated_with_zero_loss():
  labels = np.array([2, 0, 1, 1])
  result = metrics.classification_metrics(labels, np.eye(3)[labels], NAMES)
  assert result["loss"] == 0.0
  assert result["expected_calibration_error"] == 0.0


def test_the_log_of_a_zero_probability_is_clipped():
  result = metrics.classification_metrics([0], [[0.0, 1.0, 0.0]], NAMES)
  assert result["loss"] == pytest.approx(-math.log(1e-7))
  assert result["expected_calibration_error"] == 1.0  # Sure and wrong.


def test_an_absent_class_scores_zero_without_warnings_and_leaves_the_macro_f1():
  # Class "two" is neither a label nor a prediction: its F1 is 0/0.
  probabilities = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.0], [0.6, 0.4, 0.0]])
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    result = metrics.classification_metrics([0, 1, 1], probabilities, NAMES)
  two = result["per_class"][2]
  assert (two["support"], two["precision"], two["recall"], two["f1"]) == (0, 0.0, 0.0, 0.0)
  # zero: P 1/2, R 1, F1 2/3; one: P 1, R 1/2, F1 2/3; "two" is left out.
  assert result["macro_f1"] == pytest.approx(2 / 3)
  assert not any(math.isnan(v) for row in result["per_class"] for v in row.values()
                 if isinstance(v, float))


def test_a_predicted_class_with_no_examples_counts_in_the_macro_f1():
  # "two" has no examples but is predicted once: precision 0, a real mistake.
  probabilities = np.array([[0.9, 0.1, 0.0], [0.1, 0.2, 0.7]])
  result = metrics.classification_metrics([0, 1], probabilities, NAMES)
  one, two = result["per_class"][1], result["per_class"][2]
  assert (one["precision"], one["recall"], one["f1"]) == (0.0, 0.0, 0.0)
  assert (two["support"], two["precision"], two["f1"]) == (0, 0.0, 0.0)
  assert result["macro_f1"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("labels, probabilities, message", [
    ([0, 1], np.full((2, 4), 0.25), "probabilities have 4 columns but there are 3 class names"),
    ([0, 1], [0.5, 0.5], r"probabilities must be \[N, classes\], got shape \(2,\)"),
    ([0, 1, 2], np.full((2, 3), 1 / 3), "3 labels but 2 rows of probabilities"),
    ([0, 3], np.full((2, 3), 1 / 3), r"labels must be in \[0, 3\), got \[3\]"),
    ([0], [[2.0, -1.0, 0.0]], r"must be in \[0, 1\], got min -1 and max 2 \(logits"),
    ([0, 0], [[0.5, 0.5, 0.0], [0.5, 0.2, 0.2]], r"sum to 1; rows \[1\] sum to \[0.9\]"),
    ([0], [[np.nan, 0.5, 0.5]], r"not all finite: rows \[0\]"),
    ([], np.zeros((0, 3)), r"no examples: probabilities have shape \(0, 3\)"),
])
def test_classification_metrics_rejects(labels, probabilities, message):
  with pytest.raises(ValueError, match=message):
    metrics.classification_metrics(labels, probabilities, NAMES)


def test_reliability_bins_by_hand():
  bins = metrics.reliability_bins(LABELS, PROBABILITIES, num_bins=4)
  np.testing.assert_array_equal(bins["edges"], [0.0, 0.25, 0.5, 0.75, 1.0])
  np.testing.assert_array_equal(bins["count"], [0, 2, 3, 3])
  assert bins["count"].dtype == np.int64
  np.testing.assert_allclose(bins["confidence"], [0.0, 0.45, 1.9 / 3, 0.9])
  np.testing.assert_allclose(bins["accuracy"], [0.0, 0.5, 2 / 3, 1.0])
  assert metrics.expected_calibration_error(bins) == pytest.approx(0.5 / 8)


def test_reliability_bins_default_to_fifteen_without_nan():
  bins = metrics.reliability_bins([0, 1], [[0.99, 0.01], [0.02, 0.98]])
  assert len(bins["edges"]) == 16 and len(bins["count"]) == 15
  assert bins["count"].sum() == 2 and bins["count"][-1] == 2
  assert not np.isnan(bins["confidence"]).any() and not np.isnan(bins["accuracy"]).any()


def test_reliability_bins_rejects_no_bins():
  with pytest.raises(ValueError, match="num_bins must be at least 1, got 0"):
    metrics.reliability_bins(LABELS, PROBABILITIES, num_bins=0)


def test_top_mistakes_are_the_most_confident_wrong_predictions_first():
  labels = np.array([0, 1, 1, 0, 2, 2])
  probabilities = np.array([
      [0.1, 0.9, 0.0],  # wrong, 0.9
      [0.2, 0.8, 0.0],  # right
      [0.6, 0.4, 0.0],  # wrong, 0.6
      [0.0, 0.05, 0.95],  # wrong, 0.95
      [0.6, 0.0, 0.4],  # wrong, 0.6 (ties with row 2: data order kept)
      [0.0, 0.0, 1.0],  # right
  ])
  mistakes = metrics.top_mistakes(labels, probabilities, 3)
  np.testing.assert_array_equal(mistakes, [3, 0, 2])
  assert mistakes.dtype == np.int64
  np.testing.assert_array_equal(metrics.top_mistakes(labels, probabilities, 10), [3, 0, 2, 4])
  assert len(metrics.top_mistakes(labels, probabilities, 0)) == 0
  assert len(metrics.top_mistakes([1, 2], probabilities[[1, 5]], 5)) == 0
  with pytest.raises(ValueError, match="n must be >= 0, got -1"):
    metrics.top_mistakes(labels, probabilities, -1)


def _sampled(count, seed=0):
  """Labels drawn from softmax(logits): probabilities calibrated by construction."""
  rng = np.random.default_rng(seed)
  logits = rng.normal(0.0, 3.0, (count, 10))
  probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
  probabilities /= probabilities.sum(axis=1, keepdims=True)
  labels = (probabilities.cumsum(axis=1) < rng.random((count, 1))).sum(axis=1)
  return np.minimum(labels, 9), probabilities


@pytest.mark.parametrize("true_temperature", [0.4, 1.0, 2.0])
def test_fit_temperature_undoes_a_known_miscalibration(true_temperature):
  labels, calibrated = _sampled(20000)
  # Dividing calibrated log-probabilities by 1/T makes a model whose right
  # temperature is T: overconfident for T > 1, underconfident for T < 1.
  skewed = metrics.apply_temperature(calibrated, 1.0 / true_temperature)
  fitted = metrics.fit_temperature(labels, skewed)
  assert fitted == pytest.approx(true_temperature, rel=0.05)
  rescaled = metrics.apply_temperature(skewed, fitted)
  assert metrics.log_loss(labels, rescaled) <= metrics.log_loss(labels, skewed)


def test_apply_temperature_keeps_every_prediction_and_sums_to_one():
  for temperature in (0.3, 1.0, 4.0):
    scaled = metrics.apply_temperature(PROBABILITIES, temperature)
    np.testing.assert_array_equal(scaled.argmax(axis=1), PROBABILITIES.argmax(axis=1))
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0, atol=1e-6)
  np.testing.assert_allclose(metrics.apply_temperature(PROBABILITIES, 1.0), PROBABILITIES,
                             atol=1e-7)
  # T = 2 is the square root of each probability, renormalised.
  root = np.sqrt(PROBABILITIES[0])
  np.testing.assert_allclose(metrics.apply_temperature(PROBABILITIES, 2.0)[0], root / root.sum(),
                             atol=1e-6)


def test_log_loss_is_the_metrics_loss():
  assert metrics.log_loss(LABELS, PROBABILITIES) == \
      metrics.classification_metrics(LABELS, PROBABILITIES, NAMES)["loss"]
